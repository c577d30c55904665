"""The replay report: one self-contained HTML file, small and readable, with inline SVG."""

from __future__ import annotations

import hashlib
import math
import random
import re
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from mde.report import LABELS, minmax_indices, render_report, write_report

IST = "Asia/Kolkata"
BARS_PER_DAY = 375  # 09:15 .. 15:29
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source", "track", "embed", "param"}
SVG_LEAVES = {"line", "rect", "path", "polyline", "polygon", "circle", "text", "title", "g", "svg"}


# ---------------------------------------------------------------- builders


def trading_days(n: int, start: date = date(2024, 1, 1)) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def _noise(n: int, seed: int, scale: float) -> pl.Expr:
    """Deterministic uniform noise in [-scale, scale], vectorised (hash of the row number)."""
    return (pl.int_range(n).hash(seed) % 20_001).cast(pl.Float64) / 10_000.0 * scale - scale


def random_walk(n_days: int, seed: int, start_price: float = 1000.0) -> pl.DataFrame:
    """`n_days` x 375 one-minute candles on 09:15-15:30 IST, a seeded random walk."""
    n = n_days * BARS_PER_DAY
    opens = pl.Series([datetime(d.year, d.month, d.day, 9, 15) for d in trading_days(n_days)])
    return (
        pl.select(
            pl.int_range(n).alias("i"),
            _noise(n, seed, 0.7).alias("step"),
            _noise(n, seed + 1, 0.3).abs().alias("up"),
            _noise(n, seed + 2, 0.3).abs().alias("dn"),
        )
        .with_columns(close=start_price + pl.col("step").cum_sum())
        .with_columns(open=pl.col("close").shift(1).fill_null(start_price))
        .select(
            (pl.lit(opens).gather(pl.col("i") // BARS_PER_DAY) + pl.duration(minutes=pl.col("i") % BARS_PER_DAY))
            .dt.replace_time_zone(IST)
            .alias("ts"),
            "open",
            (pl.max_horizontal("open", "close") + pl.col("up")).alias("high"),
            (pl.min_horizontal("open", "close") - pl.col("dn")).alias("low"),
            "close",
            (pl.col("i") % 1000 + 1).cast(pl.Int64).alias("volume"),
        )
    )


def make_trades(candles: dict[str, pl.DataFrame], n: int, seed: int) -> pl.DataFrame:
    """`n` trades spread over the symbols, each held 1-49 bars, at candle closes."""
    rng = random.Random(seed)
    reasons = ["signal", "stop", "target", "square-off", "end of replay"]
    symbols = sorted(candles)
    parts = []
    for k, sym in enumerate(symbols):
        c = candles[sym]
        m = len(range(k, n, len(symbols)))
        a = [rng.randrange(0, c.height - 50) for _ in range(m)]
        b = [x + rng.randrange(1, 50) for x in a]
        parts.append(
            pl.DataFrame(
                {
                    "symbol": [sym] * m,
                    "side": [rng.choice(["long", "short"]) for _ in range(m)],
                    "qty": pl.Series([rng.choice([25, 50, 75]) for _ in range(m)], dtype=pl.Int64),
                    "entry_ts": c["ts"].gather(a),
                    "entry_price": c["close"].gather(a),
                    "exit_ts": c["ts"].gather(b),
                    "exit_price": c["close"].gather(b),
                    "exit_reason": [rng.choice(reasons) for _ in range(m)],
                },
                schema_overrides={"symbol": pl.String, "side": pl.String, "exit_reason": pl.String},
            )
        )
    sign = pl.when(pl.col("side") == "long").then(1.0).otherwise(-1.0)
    return (
        pl.concat(parts)
        .with_columns(
            gross_pnl=(pl.col("exit_price") - pl.col("entry_price")) * pl.col("qty") * sign,
            charges=20.0 + 0.0003 * pl.col("qty") * (pl.col("entry_price") + pl.col("exit_price")),
        )
        .with_columns(net_pnl=pl.col("gross_pnl") - pl.col("charges"))
        .select(
            "symbol",
            "side",
            "qty",
            "entry_ts",
            "entry_price",
            "exit_ts",
            "exit_price",
            "gross_pnl",
            "charges",
            "net_pnl",
            "exit_reason",
        )
        .sort("entry_ts")
    )


def make_equity(ts: pl.Series, cash: float, seed: int, spike_at: int | None = None) -> pl.DataFrame:
    n = len(ts)
    eq = pl.DataFrame({"ts": ts}).with_columns(equity=cash + (_noise(n, seed, 300.0) + 2.0).cum_sum())
    if spike_at is not None:  # one bar far above everything else: the picture must keep it
        eq = eq.with_columns(
            pl.when(pl.int_range(pl.len()) == spike_at)
            .then(pl.col("equity").max() + 1_000_000.0)
            .otherwise("equity")
            .alias("equity")
        )
    return eq.with_columns(drawdown=pl.col("equity") - pl.col("equity").cum_max())


FILL_MODEL = "Signals act at the next bar's open.\nStops fill at the stop price, or the open if it gaps through.\nTargets fill at the target price."
BASIS = "252 trading days × 375 one-minute bars; risk-free rate 0"


def make_result(
    candles: dict[str, pl.DataFrame], trades: pl.DataFrame, equity: pl.DataFrame, **over: object
) -> SimpleNamespace:
    fingerprint = [
        {
            "symbol": sym,
            "timeframe": "1m",
            "rows": df.height,
            "first_ts": df["ts"][0] if df.height else None,
            "last_ts": df["ts"][-1] if df.height else None,
            "sha256": hashlib.sha256(f"{sym}:{df.height}".encode()).hexdigest(),
        }
        for sym, df in candles.items()
    ]
    base = dict(
        strategy="sma_cross",
        params={"fast": 10, "slow": 30, "stop_pct": 1.5},
        symbols=list(candles),
        timeframe="1m",
        start=date(2024, 1, 1),
        end=date(2024, 12, 31),
        cash=1_000_000.0,
        costs="zerodha",
        segment="futures",
        version="0.1.0",
        fill_model=FILL_MODEL,
        basis=BASIS,
        generated_at=datetime(2025, 1, 2, 10, 30, 5),
        metrics={
            "net_pnl": 12345.678,
            "return_pct": 1.2345678,
            "cagr_pct": 1.23,
            "max_drawdown": -5432.1,
            "max_drawdown_pct": -0.54,
            "max_drawdown_duration": "12d 03:10",
            "sharpe": 0.871,
            "sortino": None,
            "win_rate_pct": 51.5,
            "profit_factor": float("inf"),
            "expectancy": 61.73,
            "avg_holding": timedelta(minutes=25),
            "exposure_pct": 12.0,
            "trades": trades.height,
            "gross_pnl": 20000.0,
            "charges": 7654.32,
            "buy_and_hold_pct": 3.3,
            "custom_thing": 7,
        },
        trades=trades,
        equity=equity,
        candles=candles,
        fingerprint=fingerprint,
    )
    base.update(over)
    return SimpleNamespace(**base)


# ---------------------------------------------------------------- a strict reader of the page


class Page(HTMLParser):
    """Reads the page and records what the tests look at; fails on badly nested tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs: list[dict[str, object]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def _visit(self, tag: str, attrs: list[tuple[str, str | None]], closes: bool) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in a.items())
        if tag == "svg":
            self.svgs.append(
                {"chart": a.get("data-chart"), "bodies": [], "polylines": [], "markers": [], "polygons": [], "nums": []}
            )
        if self.svgs and "svg" in self.stack + ([] if closes else ["svg"]):
            svg = self.svgs[-1]
            for k in ("x", "y", "width", "height", "x1", "x2", "y1", "y2"):
                if k in a:
                    svg["nums"].append(a[k])  # type: ignore[union-attr]
            if tag == "rect" and a.get("class", "").startswith("body"):
                svg["bodies"].append(a)  # type: ignore[union-attr]
            elif tag == "polyline":
                svg["polylines"].append(a["points"])  # type: ignore[union-attr]
            elif tag == "polygon":
                svg["polygons"].append(a["points"])  # type: ignore[union-attr]
            elif tag == "path" and a.get("class", "").startswith("mk "):
                svg["markers"].append(a)  # type: ignore[union-attr]
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        if not closes and tag not in VOID:
            self.stack.append(tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._visit(tag, attrs, closes=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in SVG_LEAVES and tag not in VOID:
            self.errors.append(f"self-closing <{tag}/>")
        self._visit(tag, attrs, closes=True)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def charts(self, kind: str) -> list[dict[str, object]]:
        return [s for s in self.svgs if s["chart"] == kind]


def points(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in text.split())]


# ---------------------------------------------------------------- the big case


@pytest.fixture(scope="module")
def year() -> SimpleNamespace:
    candles = {"NIFTY24DECFUT": random_walk(250, seed=1, start_price=21000.0), "RELIANCE": random_walk(250, seed=2)}
    trades = make_trades(candles, 200, seed=3)
    equity = make_equity(candles["NIFTY24DECFUT"]["ts"], 1_000_000.0, seed=4, spike_at=40_001)
    return make_result(candles, trades, equity)


@pytest.fixture(scope="module")
def year_page(year: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Page]:
    path = tmp_path_factory.mktemp("report") / "out" / "replay.html"
    write_report(path, year)
    text = path.read_text(encoding="utf-8")
    return path, text, Page(text)


def test_a_year_of_minutes_gives_one_small_well_formed_file(
    year: SimpleNamespace, year_page: tuple[Path, str, Page]
) -> None:
    path, text, page = year_page
    assert year.candles["NIFTY24DECFUT"].height == 93_750
    assert path.is_file()
    assert page.errors == []
    assert path.stat().st_size < 2_000_000
    assert [p.name for p in path.parent.iterdir()] == ["replay.html"]  # no temp file left behind
    assert len(page.svgs) >= 3
    assert [s["chart"] for s in page.svgs] == ["equity", "drawdown", "candles", "candles"]


def test_nothing_is_fetched_from_the_network(year_page: tuple[Path, str, Page]) -> None:
    _, text, page = year_page
    assert "http://" not in text and "https://" not in text
    assert not [(t, k, v) for t, k, v in page.attrs if k in ("src", "href", "xlink:href", "action") and v]
    assert "script" not in page.tags and "link" not in page.tags and "@import" not in text


def test_candles_are_merged_into_at_most_600_bodies_per_symbol(
    year: SimpleNamespace, year_page: tuple[Path, str, Page]
) -> None:
    _, _, page = year_page
    charts = page.charts("candles")
    assert len(charts) == len(year.symbols) == 2
    for chart in charts:
        bodies = chart["bodies"]
        assert 500 <= len(bodies) <= 600  # merged, but not down to a handful
        xs = [float(b["x"]) for b in bodies]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        for b in bodies:
            assert float(b["height"]) > 0 and 0 < float(b["y"]) < 360


def test_equity_line_is_downsampled_but_keeps_the_spike(
    year: SimpleNamespace, year_page: tuple[Path, str, Page]
) -> None:
    _, _, page = year_page
    (eq,) = page.charts("equity")
    (line,) = eq["polylines"]
    pts = points(line)  # type: ignore[arg-type]
    assert 100 < len(pts) <= 2_000
    xs = [x for x, _ in pts]
    assert xs == sorted(xs)
    # The one-bar spike is the highest point of the picture (smallest y) and sits where bar 40,001 is.
    top_x, top_y = min(pts, key=lambda p: p[1])
    others = sorted(y for _, y in pts)[1:]
    assert top_y < 30 and min(others) > 200  # far above the rest of the line, as 1,000,000 should be
    n = year.equity.height
    expected_x = 78 + 40_001 * (1000 - 14 - 78) / (n - 1)
    assert abs(top_x - expected_x) < 0.2
    # Drawdown: an area under zero, also downsampled.
    (dd,) = page.charts("drawdown")
    (area,) = dd["polygons"]
    dpts = points(area)  # type: ignore[arg-type]
    assert 100 < len(dpts) <= 2_002
    assert dpts[0][1] == dpts[-1][1] == min(y for _, y in dpts)  # closed along the zero line at the top


def test_minmax_downsampling_keeps_each_buckets_extremes() -> None:
    values = pl.Series([float(i % 7) for i in range(100_000)])
    values[12_345] = -50.0
    values[99_998] = 80.0
    idx = minmax_indices(values, 1_500)
    assert len(idx) <= 1_500
    assert idx[0] == 0 and idx[-1] == 99_999
    assert 12_345 in idx.to_list() and 99_998 in idx.to_list()
    assert idx.is_sorted() and idx.n_unique() == len(idx)
    assert minmax_indices(pl.Series([1.0, 2.0, 3.0])).to_list() == [0, 1, 2]


def test_every_trade_is_a_row_and_markers_are_drawn(year: SimpleNamespace, year_page: tuple[Path, str, Page]) -> None:
    _, text, page = year_page
    rows = page.tables["trades-table"]
    assert rows[0][0] == "#"
    body = rows[1:]
    assert len(body) == year.trades.height == 200
    first = year.trades.row(0, named=True)
    assert body[0][:4] == ["1", first["symbol"], first["side"], str(first["qty"])]
    assert body[0][4] == first["entry_ts"].isoformat()  # ISO with +05:30
    assert body[0][4].endswith("+05:30")
    assert body[0][11] == first["exit_reason"]
    assert [r[0] for r in body] == [str(i) for i in range(1, 201)]
    n_markers = sum(len(c["markers"]) for c in page.charts("candles"))  # type: ignore[arg-type]
    assert 200 < n_markers <= 400  # an entry and an exit per trade, a few merged where they overlap


def test_header_fill_model_costs_basis_and_fingerprint(
    year: SimpleNamespace, year_page: tuple[Path, str, Page]
) -> None:
    _, text, page = year_page
    for fp in year.fingerprint:
        assert fp["sha256"] in text
    fp_rows = page.tables["fingerprint-table"][1:]
    assert [r[0] for r in fp_rows] == ["NIFTY24DECFUT", "RELIANCE"]
    assert fp_rows[0][2] == "93,750" and fp_rows[0][3] == "2024-01-01T09:15:00+05:30"
    assert '<pre id="fill-model">' + FILL_MODEL.replace("'", "&#x27;") + "</pre>" in text
    assert "costs: zerodha (segment futures)" in text
    assert BASIS in text
    assert "2025-01-02T10:30:05" in text and "0.1.0" in text and "sma_cross" in text


def test_metrics_have_labels_and_two_decimals(year_page: tuple[Path, str, Page]) -> None:
    _, _, page = year_page
    metrics = dict((r[0], r[1]) for r in page.tables["metrics-table"])
    assert metrics[LABELS["net_pnl"]] == "12,345.68"
    assert metrics[LABELS["return_pct"]] == "1.23"
    assert metrics[LABELS["sortino"]] == "–"
    assert metrics[LABELS["profit_factor"]] == "∞"
    assert metrics[LABELS["trades"]] == "200"
    assert metrics["Custom thing"] == "7"  # no label: the key in words
    assert len(metrics) == 18


# ---------------------------------------------------------------- edge cases


def test_markers_sit_on_the_bucket_holding_the_trade() -> None:
    candles = {"X": random_walk(4, seed=9)}  # 1,500 candles -> buckets of 3 -> 500 bodies
    c = candles["X"]
    trades = pl.DataFrame(
        {
            "symbol": ["X"],
            "side": ["short"],
            "qty": [1],
            "entry_ts": [c["ts"][301] + timedelta(seconds=30)],
            "entry_price": [c["close"][301]],
            "exit_ts": [c["ts"][1499]],
            "exit_price": [c["close"][1499]],
            "gross_pnl": [1.0],
            "charges": [0.0],
            "net_pnl": [1.0],
            "exit_reason": ["end of replay"],
        }
    )
    page = Page(render_report(make_result(candles, trades, make_equity(c["ts"], 1e6, seed=1))))
    (chart,) = page.charts("candles")
    bodies = chart["bodies"]
    assert len(bodies) == 500  # type: ignore[arg-type]
    centre = [float(b["x"]) + float(b["width"]) / 2 for b in bodies]  # type: ignore[union-attr]
    marks = {m["class"]: m["d"] for m in chart["markers"]}  # type: ignore[union-attr]
    assert set(marks) == {"mk se", "mk x"}
    x_entry = float(re.match(r"M([\d.]+) ", marks["mk se"]).group(1))  # type: ignore[union-attr]
    x_exit = float(re.match(r"M([\d.]+) ", marks["mk x"]).group(1)) + 3  # type: ignore[union-attr]
    assert abs(x_entry - centre[100]) < 0.15  # candle 301 is in bucket 100
    assert abs(x_exit - centre[499]) < 0.15


def test_an_empty_result_renders(tmp_path: Path) -> None:
    ts = pl.Series("ts", [datetime(2024, 1, 1, 9, 15)]).dt.replace_time_zone(IST)
    tiny = {
        "X": pl.DataFrame({"ts": ts, "open": [100.0], "high": [100.0], "low": [100.0], "close": [100.0], "volume": [0]})
    }
    no_trades = make_trades(tiny, 0, seed=0)
    flat = pl.DataFrame(
        {"ts": pl.concat([ts, ts + timedelta(minutes=1)]), "equity": [1e6, 1e6], "drawdown": [0.0, 0.0]}
    )
    empty_eq = flat.clear()
    for equity in (flat, empty_eq):
        result = make_result(
            {**tiny, "Y": tiny["X"].clear()},
            no_trades,
            equity,
            metrics={"net_pnl": 0.0, "sharpe": None},
            costs="none",
            segment=None,
        )
        path = tmp_path / "empty.html"
        write_report(str(path), result)
        text = path.read_text(encoding="utf-8")
        page = Page(text)
        assert page.errors == []
        assert len(page.svgs) == 4
        assert "No trades." in text and "costs: none — gross only" in text
        nums = [float(v) for s in page.svgs for v in s["nums"]]  # type: ignore[union-attr]
        assert nums and all(math.isfinite(v) for v in nums)  # no NaN or inf from a zero span
        assert "nan" not in " ".join(p for s in page.svgs for p in s["polylines"]).lower()  # type: ignore[union-attr]
        assert len(page.charts("candles")[0]["bodies"]) == 1  # type: ignore[arg-type]
        assert page.charts("candles")[1]["bodies"] == []
        if equity.height:
            assert len(points(page.charts("equity")[0]["polylines"][0])) == 2  # type: ignore[index]
        else:
            assert page.charts("equity")[0]["polylines"] == [] and "no equity data" in text


def test_special_characters_are_escaped() -> None:
    candles = {"A&B<1>": random_walk(1, seed=5)}
    evil = '<script>alert("x")</script> & co'
    result = make_result(
        candles,
        make_trades(candles, 3, seed=1),
        make_equity(candles["A&B<1>"]["ts"], 1e5, seed=2),
        strategy=evil,
        params={"<b>key</b>": "</td><img src=x>", "q": 'it\'s "quoted"'},
        fill_model="fills <at> open & close",
        basis="x < y",
    )
    text = render_report(result)
    page = Page(text)
    assert page.errors == []
    plain = Page(render_report(make_result(candles, result.trades, result.equity)))
    assert "script" not in page.tags and "img" not in page.tags
    assert page.tags.count("b") == plain.tags.count("b")  # the <b> in a parameter name stayed text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    assert "&lt;b&gt;key&lt;/b&gt;" in text and "&lt;/td&gt;&lt;img src=x&gt;" in text
    assert "fills &lt;at&gt; open &amp; close" in text and "A&amp;B&lt;1&gt;" in text
    assert not [(t, k, v) for t, k, v in page.attrs if k == "src"]
    assert [r[1] for r in page.tables["trades-table"][1:]] == ["A&B<1>"] * 3  # the text reads back as given


def test_a_long_trade_list_shows_its_first_and_last_thousand() -> None:
    candles = {"X": random_walk(8, seed=6)}
    trades = make_trades(candles, 2_500, seed=7)
    text = render_report(make_result(candles, trades, make_equity(candles["X"]["ts"], 1e6, seed=8)))
    start = text.index('<section id="trades">')
    page = Page(text[start : text.index("</section>", start) + len("</section>")])  # parsing 1 MB is slow
    assert page.errors == []
    rows = page.tables["trades-table"][1:]
    assert len(rows) == 2_001
    numbers = [r[0] for r in rows]
    assert numbers[:2] == ["1", "2"] and numbers[999] == "1000"
    assert "500 trades not shown" in numbers[1000]
    assert numbers[1001] == "1501" and numbers[-1] == "2500"
    assert "2,500 trades: showing the first 1,000 and the last 1,000" in text
    n_markers = len(re.findall(r'<path class="mk ', text))
    assert 1_000 < n_markers <= 2_000  # 5,000 entries and exits, merged and capped
