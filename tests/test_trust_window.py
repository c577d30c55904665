"""Windows that say what they are and JSON that always parses (issues 14 and 15).

- A timeframe built from a smaller cached one says so everywhere a window is read: the
  library (`read_window`, `built_from`), `mde window` (table footer, stderr note), the HTTP
  API (`X-Mde-Built-From`) and the strategy API (`ctx.built_from`); the source's own series
  wins whenever it is cached.
- Every JSON mde writes parses strictly (no NaN/Infinity), whatever the cache holds.
- The API answers HEAD like GET, and mends an unencoded `+` in `as_of`.
"""

from __future__ import annotations

import ast
import json
import math
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from conftest import run_mde
from mde.config import load
from mde.engine import MarketDataEngine, built_note, window_body, window_payload
from mde.jsonout import dumps, finite, frame_rows
from mde.strategy import Strategy, StrategyRunner
from mde.timeframes import parse
from test_api import WINDOW, Server, base_env

PKG = Path(__file__).resolve().parents[1] / "src" / "mde"


def _no_constant(name: str) -> Any:
    raise AssertionError(f"invalid JSON: {name}")


def strict(text: str | bytes) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity, as JSON.parse does."""
    return json.loads(text, parse_constant=_no_constant)


def sample_env(cache: Path, **extra: str) -> dict[str, str]:
    return {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample", **extra}


def mde(cache: Path, *args: str, **env: str) -> Any:
    return run_mde(*args, env=sample_env(cache, **env), cwd=cache.parent)


def engine_for(cache: Path, now: str | None = None) -> MarketDataEngine:
    environ = {"MDE_NOW": now} if now else {}
    return MarketDataEngine(load(cache_dir=cache, source="sample", environ=environ))


@pytest.fixture(scope="module")
def nifty_5m_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIFTY 5m only: its newest 1000 candles up to the sample's clock (2024-12-31 15:30)."""
    cache = tmp_path_factory.mktemp("built") / "cache"
    done = mde(cache, "refresh", "--symbols", "NIFTY", "--timeframe", "5m")
    assert done.returncode == 0, done.stderr
    return cache


# -- the library ------------------------------------------------------------------------------
def test_a_daily_window_built_from_5m_says_so_and_the_source_daily_candle_wins_once_cached(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert mde(cache, "refresh", "--symbols", "NIFTY", "-t", "5m").returncode == 0
    built = engine_for(cache).read_window("NIFTY", "1d", limit=3)
    assert built.built_from == parse("5m") and built.timeframe == parse("1d")
    assert built.candles.equals(engine_for(cache).get_window("NIFTY", "1d", limit=3))
    closes = dict(zip(built.candles["ts"].dt.date().cast(str), built.candles["close"], strict=True))
    assert closes["2024-12-30"] == 23658.65  # the last 5m close of the day: the last traded price
    assert "built from 5m candles" in (built.note("NIFTY") or "")

    assert mde(cache, "refresh", "--symbols", "NIFTY", "-t", "1d").returncode == 0
    own = engine_for(cache).read_window("NIFTY", "1d", limit=3)
    assert own.built_from is None and own.note("NIFTY") is None
    closes = dict(zip(own.candles["ts"].dt.date().cast(str), own.candles["close"], strict=True))
    assert closes["2024-12-30"] == 23644.90  # Kite's daily candle: NSE's official close


def test_own_and_built_timeframes_of_one_cache(nifty_5m_cache: Path) -> None:
    eng = engine_for(nifty_5m_cache)
    assert eng.read_window("NIFTY", "5m", 10).built_from is None
    assert eng.read_window("NIFTY", "15m", 10).built_from == parse("5m")
    assert eng.built_from("NIFTY", "5m") is None
    assert eng.built_from("NIFTY", "15m") == parse("5m") == eng.built_from("NIFTY", "1d")


def test_the_base_named_is_the_one_the_window_was_built_from(tmp_path: Path) -> None:
    """5m holds one session (25 15m candles), 1m two weeks: a 50-candle 15m window is built
    from 1m, and the window says 1m, not the coarser 5m it tried first."""
    cache = tmp_path / "cache"
    now = "2024-06-14T15:30"
    assert (
        mde(cache, "fetch", "NIFTY", "-t", "1m", "--from", "2024-06-03", "--to", "2024-06-14", MDE_NOW=now).returncode
        == 0
    )
    assert (
        mde(cache, "fetch", "NIFTY", "-t", "5m", "--from", "2024-06-14", "--to", "2024-06-14", MDE_NOW=now).returncode
        == 0
    )
    eng = engine_for(cache, now)
    few = eng.read_window("NIFTY", "15m", limit=20)
    assert few.built_from == parse("5m") and few.candles.height == 20
    many = eng.read_window("NIFTY", "15m", limit=50)
    assert many.built_from == parse("1m") and many.candles.height == 50


def test_a_window_never_mixes_the_source_series_with_built_candles(tmp_path: Path) -> None:
    """1d cached for January only, 5m for December: the 1d window is January's own candles
    (stale, as the footer says), never December's built from 5m appended to them."""
    cache = tmp_path / "cache"
    assert mde(cache, "fetch", "NIFTY", "-t", "1d", "--from", "2024-01-01", "--to", "2024-01-31").returncode == 0
    assert mde(cache, "refresh", "--symbols", "NIFTY", "-t", "5m").returncode == 0
    eng = engine_for(cache)
    win = eng.read_window("NIFTY", "1d", limit=50)
    assert win.built_from is None
    assert win.candles["ts"].dt.month().unique().to_list() == [1]
    assert eng.status("NIFTY", "1d").stale


def test_the_notes_advice_run_as_printed_makes_the_note_go_away(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert mde(cache, "refresh", "--symbols", "NIFTY", "-t", "5m").returncode == 0
    for tf in ("1d", "15m"):
        note = engine_for(cache).read_window("NIFTY", tf, limit=5).note("NIFTY")
        assert note is not None
        command = shlex.split(note.split("`")[1])
        assert command[:2] == ["mde", "refresh"]
        done = mde(cache, *command[1:])
        assert done.returncode == 0, done.stderr
        assert engine_for(cache).read_window("NIFTY", tf, limit=5).built_from is None


def test_the_note_quotes_a_symbol_with_a_space() -> None:
    note = built_note("nse:nifty 50", parse("1d"), parse("5m"))
    assert note is not None and "--symbols 'NSE:NIFTY 50' --timeframe 1d" in note
    assert built_note("NIFTY", parse("1d"), None) is None


# -- mde window ----------------------------------------------------------------------------------
def test_the_table_footer_says_built_and_the_data_formats_keep_their_shape(nifty_5m_cache: Path) -> None:
    table = mde(nifty_5m_cache, "window", "NIFTY", "-t", "1d", "-n", "3")
    assert table.returncode == 0 and table.stderr == ""
    flat = " ".join(table.stdout.split())
    assert "built from 5m candles: NSE's official daily close can differ" in flat
    assert "mde refresh --symbols NIFTY --timeframe 1d" in flat

    as_json = mde(nifty_5m_cache, "window", "NIFTY", "-t", "1d", "-n", "3", "-f", "json")
    assert as_json.returncode == 0
    doc = strict(as_json.stdout)
    assert list(doc) == ["symbol", "timeframe", "count", "candles"] and doc["count"] == 3
    assert as_json.stderr.startswith("note: built from 5m candles") and as_json.stderr.count("\n") == 1

    as_csv = mde(nifty_5m_cache, "window", "NIFTY", "-t", "15m", "-n", "3", "-f", "csv")
    assert as_csv.returncode == 0 and as_csv.stdout.splitlines()[0] == "ts,open,high,low,close,volume"
    assert as_csv.stderr.startswith("note: built from 5m candles, not the source's own 15m")

    quiet = mde(nifty_5m_cache, "-q", "window", "NIFTY", "-t", "1d", "-n", "3", "-f", "json")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == as_json.stdout


def test_the_source_own_series_has_no_note(nifty_5m_cache: Path) -> None:
    table = mde(nifty_5m_cache, "window", "NIFTY", "-n", "3")
    assert table.returncode == 0 and "built from" not in table.stdout
    as_json = mde(nifty_5m_cache, "window", "NIFTY", "-n", "3", "-f", "json")
    assert as_json.returncode == 0 and as_json.stderr == ""


# -- the strategy API ---------------------------------------------------------------------------
class _Idle(Strategy):
    def on_candle(self, ctx, candle) -> None:  # type: ignore[no-untyped-def]
        pass


def test_ctx_built_from_names_the_base_of_each_series(nifty_5m_cache: Path) -> None:
    eng = engine_for(nifty_5m_cache)
    runner = StrategyRunner(_Idle(), eng, symbols=["NIFTY"], timeframe="5m", as_of=eng.now())
    ctx = runner.contexts[0]
    runner.now_us = runner.series("NIFTY").close_us[-1]
    assert ctx.built_from() is None and ctx.built_from("NIFTY", "5m") is None
    assert ctx.built_from(timeframe="15m") == "5m" and ctx.built_from("NIFTY", "1d") == "5m"
    window = ctx.window(timeframe="1d", n=3)  # still a plain polars frame, equal to the engine's window
    assert isinstance(window, pl.DataFrame)
    assert window.equals(eng.get_window("NIFTY", "1d", limit=3, as_of=ctx.now))


def test_replay_on_a_built_timeframe_hands_the_strategy_its_base(nifty_5m_cache: Path, tmp_path: Path) -> None:
    mine = tmp_path / "probe.py"
    mine.write_text(
        "from mde import Strategy\n"
        "class Probe(Strategy):\n"
        "    def on_candle(self, ctx, candle):\n"
        "        if ctx.built_from() == '5m' and ctx.built_from(timeframe='5m') is None and ctx.position() == 0:\n"
        "            ctx.buy(lots=1)\n"
    )
    done = mde(
        nifty_5m_cache,
        "replay",
        "--strategy",
        f"{mine}:Probe",
        "-s",
        "NIFTY",
        "-t",
        "15m",
        "--from",
        "2024-12-30",
        "--to",
        "2024-12-31",
        "--segment",
        "futures",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = strict(done.stdout)
    assert summary["metrics"]["trades"] == 1  # the strategy saw built_from() == "5m" on the run's 15m series
    assert summary["data"][0]["read_from"] == "5m"


def test_replay_names_each_series_base_and_notes_the_built_ones(tmp_path: Path) -> None:
    """5m and 1d cached, a 15m run whose strategy also reads 1d windows: the data fingerprint
    says 15m was read from 5m and 1d from 1d (the source's own), and the table notes the 15m."""
    cache = tmp_path / "cache"
    assert mde(cache, "refresh", "--symbols", "NIFTY", "-t", "5m", "-t", "1d").returncode == 0
    mine = tmp_path / "daily.py"
    mine.write_text(
        "from mde import Strategy\n"
        "class Daily(Strategy):\n"
        "    def on_candle(self, ctx, candle):\n"
        "        assert ctx.built_from() == '5m' and ctx.built_from(timeframe='1d') is None\n"
        "        if ctx.position() == 0 and ctx.window(timeframe='1d', n=2).height == 2:\n"
        "            ctx.buy(lots=1)\n"
    )
    args = (
        "replay",
        "--strategy",
        f"{mine}:Daily",
        "-s",
        "NIFTY",
        "-t",
        "15m",
        "--from",
        "2024-12-30",
        "--to",
        "2024-12-31",
        "--segment",
        "futures",
    )
    done = mde(cache, *args, "--json")
    assert done.returncode == 0, done.stderr
    summary = strict(done.stdout)
    assert {(d["timeframe"], d["read_from"]) for d in summary["data"]} == {("15m", "5m"), ("1d", "1d")}
    assert summary["metrics"]["trades"] == 1
    table = mde(cache, *args)
    assert table.returncode == 0, table.stderr
    flat = " ".join(table.stdout.split())
    assert "note: NIFTY 15m built from 5m candles, not the source's own 15m" in flat
    assert "NIFTY 1d built" not in flat


# -- the HTTP API --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-trust")
    cache = root / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", env=base_env(cache), cwd=root)
    assert done.returncode == 0, done.stderr
    return cache


@pytest.fixture(scope="module")
def client(api_cache: Path) -> Iterator[httpx.Client]:
    srv = Server(api_cache)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            yield c
    finally:
        srv.stop()


def test_a_built_window_carries_x_mde_built_from(client: httpx.Client) -> None:
    built = client.get(WINDOW, params={"symbol": "NIFTY", "timeframe": "1d", "limit": 3})
    assert built.status_code == 200 and built.headers["x-mde-built-from"] == "5m"
    assert list(built.json()) == ["symbol", "timeframe", "count", "candles"]
    assert client.get(WINDOW, params={"symbol": "NIFTY", "timeframe": "15m"}).headers["x-mde-built-from"] == "5m"
    own = client.get(WINDOW, params={"symbol": "NIFTY", "timeframe": "5m"})
    assert own.status_code == 200 and "x-mde-built-from" not in own.headers
    documented = client.get("/openapi.json").json()["paths"][WINDOW]["get"]["responses"]["200"]
    assert "X-Mde-Built-From" in documented["headers"] and "application/json" in documented["content"]


def test_the_api_window_and_the_cli_json_are_the_same_bytes(client: httpx.Client, api_cache: Path) -> None:
    res = client.get(WINDOW, params={"symbol": "NIFTY", "timeframe": "1d", "limit": 5})
    out = run_mde("window", "NIFTY", "-t", "1d", "-n", "5", "-f", "json", env=base_env(api_cache), cwd=api_cache.parent)
    assert out.returncode == 0
    assert out.stdout == res.text + "\n"


@pytest.mark.parametrize(
    "path",
    [
        f"{WINDOW}?symbol=NIFTY&timeframe=1d&limit=3",
        f"{WINDOW}?symbol=NIFTY",
        "/api/series",
        "/api/clock",
        "/api/paper/sessions",
        "/healthz",
        "/",
        "/openapi.json",
    ],
)
def test_head_answers_like_get_without_a_body(client: httpx.Client, path: str) -> None:
    got = client.get(path)
    head = client.head(path)
    assert got.status_code == 200 and head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "cache-control", "x-mde-built-from"):
        assert head.headers.get(name) == got.headers.get(name), name
    assert int(head.headers["content-length"]) == len(got.content)


def test_head_on_errors_keeps_the_status_without_a_body(client: httpx.Client) -> None:
    missing = client.head("/api/nothing")
    assert missing.status_code == 404 and missing.content == b""
    bad = client.head(WINDOW, params={"symbol": "NIFTY", "limit": "0"})
    assert bad.status_code == 422 and bad.content == b""
    assert client.post(WINDOW, params={"symbol": "NIFTY"}).status_code == 405


@pytest.mark.parametrize(
    "raw, encoded",
    [
        ("2024-06-14T10:15:00+05:30", "2024-06-14T10:15:00+05:30"),
        ("2024-06-14T10:15+05:30", "2024-06-14T10:15:00+05:30"),
        ("2024-06-14T04:45:00+00:00", "2024-06-14T10:15:00+05:30"),
        ("2024-06-14 10:15:00.5+05:30", "2024-06-14T10:15:00.5+05:30"),
    ],
)
def test_an_unencoded_plus_in_as_of_is_read_as_the_offset(client: httpx.Client, raw: str, encoded: str) -> None:
    # written into the URL as is: the server's query parser turns `+` into a space
    sent = client.get(f"{WINDOW}?symbol=NIFTY&limit=3&as_of={raw}")
    proper = client.get(WINDOW, params={"symbol": "NIFTY", "limit": 3, "as_of": encoded})
    assert proper.status_code == 200 and sent.status_code == 200, sent.text
    assert sent.json() == proper.json()
    assert sent.json()["candles"][-1]["ts"] == "2024-06-14T10:10:00+05:30"


@pytest.mark.parametrize("as_of", ["2024-06-14T10:15:00 5:30", "2024-06-14T10:15:00  05:30", "10:15:00 05:30"])
def test_only_that_exact_shape_is_mended(client: httpx.Client, as_of: str) -> None:
    res = client.get(WINDOW, params={"symbol": "NIFTY", "as_of": as_of})
    assert res.status_code == 422 and list(res.json()) == ["error"]


def test_unplussed_as_of_in_the_library_of_the_api() -> None:
    from mde.api import unplussed_as_of

    assert unplussed_as_of(None) is None
    assert unplussed_as_of("2024-06-14T10:15:00 05:30") == "2024-06-14T10:15:00+05:30"
    assert unplussed_as_of("2024-06-14 10:15 05:30") == "2024-06-14 10:15+05:30"
    for kept in ("2024-06-14T10:15:00-05:30", "2024-06-14 10:15", "2024-06-14", "now 05:30", " 2024-06-14T10:15 05:30"):
        assert unplussed_as_of(kept) == kept


# -- one JSON writer, valid JSON always --------------------------------------------------------
def _poison(cache: Path) -> dict[str, float]:
    """Rewrite the newest NIFTY 5m partition with polars, with NaN, inf and -inf prices in its
    last candles (what a source could send; import validation would refuse them)."""
    path = sorted(cache.glob("NSE/NIFTY_50/5m/*.parquet"))[-1]
    df = pl.read_parquet(path)
    n = df.height
    row = pl.int_range(pl.len())
    df = df.with_columns(
        pl.when(row == n - 2).then(float("nan")).otherwise(pl.col("close")).alias("close"),
        pl.when(row == n - 3).then(float("inf")).otherwise(pl.col("high")).alias("high"),
        pl.when(row == n - 4).then(float("-inf")).otherwise(pl.col("low")).alias("low"),
        pl.when(row == n - 5).then(float("nan")).otherwise(pl.col("open")).alias("open"),
    )
    df.write_parquet(path)
    return {"close": n - 2, "high": n - 3, "low": n - 4, "open": n - 5}


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nan")
    cache = root / "cache"
    done = run_mde("refresh", "--symbols", "NIFTY", env=base_env(cache), cwd=root)
    assert done.returncode == 0, done.stderr
    _poison(cache)
    return cache


@pytest.mark.parametrize("tf", ["5m", "15m", "1d"])
def test_mde_window_json_is_valid_json_for_nan_and_infinite_prices(poisoned: Path, tf: str) -> None:
    out = run_mde("window", "NIFTY", "-t", tf, "-n", "10", "-f", "json", env=base_env(poisoned), cwd=poisoned.parent)
    assert out.returncode == 0, out.stderr
    doc = strict(out.stdout)
    prices = [c[k] for c in doc["candles"] for k in ("open", "high", "low", "close")]
    if tf == "5m":  # the four poisoned candles are among the last 10, each with one null
        assert [[k for k in ("open", "high", "low", "close") if c[k] is None] for c in doc["candles"][-5:]] == [
            ["open"],
            ["low"],
            ["high"],
            ["close"],
            [],
        ]
    assert all(p is None or math.isfinite(p) for p in prices)


def test_the_api_serves_the_same_valid_json_for_such_rows(poisoned: Path) -> None:
    srv = Server(poisoned)
    try:
        res = httpx.get(srv.url + WINDOW, params={"symbol": "NIFTY", "limit": 10}, timeout=10)
    finally:
        srv.stop()
    assert res.status_code == 200
    strict(res.content)
    out = run_mde("window", "NIFTY", "-n", "10", "-f", "json", env=base_env(poisoned), cwd=poisoned.parent)
    assert out.stdout == res.text + "\n"


def test_window_payload_and_body_agree_on_non_finite_prices() -> None:
    df = pl.DataFrame(
        {
            "ts": pl.Series(["2024-06-14T09:15:00", "2024-06-14T09:20:00", "2024-06-14T09:25:00"])
            .str.to_datetime()
            .dt.replace_time_zone("Asia/Kolkata"),
            "open": [1.0, float("nan"), 3.0],
            "high": [float("inf"), 2.5, 3.5],
            "low": [0.5, float("-inf"), 2.5],
            "close": [1.5, 2.0, float("nan")],
            "volume": [10, None, 30],
        }
    )
    body = strict(window_body("NIFTY", "5m", df))
    assert body == window_payload("NIFTY", "5m", df)
    assert (
        body["candles"][0]["high"] is None
        and body["candles"][1]["open"] is None
        and body["candles"][2]["close"] is None
    )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """b (parsed JSON) is a (Python data) with non-finite floats as None and tuples as lists."""
    if isinstance(a, float):
        return b is None if not math.isfinite(a) else b == a
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(value=_json_values, indent=st.sampled_from([None, 1]))
def test_dumps_always_writes_strict_json_with_null_for_non_finite_floats(value: Any, indent: int | None) -> None:
    text = dumps(value, indent=indent)
    assert _same(value, strict(text))
    assert strict(text) == strict(dumps(finite(value)))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(), min_size=0, max_size=20))
def test_frame_rows_writes_null_for_non_finite_floats(values: list[float]) -> None:
    rows = strict(frame_rows(pl.DataFrame({"x": values}, schema={"x": pl.Float64})))
    assert [r["x"] for r in rows] == [v if math.isfinite(v) else None for v in values]


def test_every_json_printer_writes_null_for_nan(tmp_path: Path) -> None:
    """The writers behind `ls`, `strategies`, `paper --status --json`, sweeps and the API's
    error/paper bodies, given NaN and infinities (a session's mark from a NaN close)."""
    from mde import render
    from mde.api import _json

    bad = {"pnl": float("nan"), "marks": {"NIFTY": float("inf")}, "fills": [(1, float("-inf"))]}
    for text in (
        render.paper_status_json([bad]),
        render.sweep_json([bad]),
        render.strategies_json([bad]),
        _json([bad]).body,
    ):
        assert strict(text) == [{"pnl": None, "marks": {"NIFTY": None}, "fills": [[1, None]]}]
    instruments = pl.DataFrame({"tradingsymbol": ["X"], "strike": [float("nan")], "tick_size": [float("inf")]})
    assert strict(render.instruments_json(instruments)) == [{"tradingsymbol": "X", "strike": None, "tick_size": None}]


# JSON written for mde's own use, never printed or served: the manifest, the token file, the
# paper journal's payloads and the instruments meta files (read back by Python's json), and the
# importer's quoting of a bad value inside an error message.
INTERNAL_JSON = {
    "jsonout.py",
    "store.py",
    "sources/kite/auth.py",
    "paper/state.py",
    "instruments.py",
    "sources/kite/instruments.py",
    "importer.py",
}


def test_no_module_writes_user_facing_json_around_the_one_writer() -> None:
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in INTERNAL_JSON:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func = node.func
                if func.attr in ("dumps", "dump") and isinstance(func.value, ast.Name) and func.value.id == "json":
                    offenders.append(f"{rel}:{node.lineno} json.{func.attr}")
                if func.attr == "write_json":
                    offenders.append(f"{rel}:{node.lineno} write_json")
    assert offenders == [], "use mde.jsonout.dumps / frame_rows: " + ", ".join(offenders)
