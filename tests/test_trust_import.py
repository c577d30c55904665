"""The cache holds only plausible candles (issue 14, section 2).

`mde import` and `save_cache` check every row (validate.check); a file with one implausible
row is refused whole with the first bad rows by line number and nothing is written (exit 2),
`--drop-invalid` drops them and counts them by reason. Candles a source answers that fail the
same checks are kept, counted per series in the manifest, and shown by fetch/refresh and `mde ls`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import NSE_DATA, run_mde
from mde.calendar import nse
from mde.clock import IST
from mde.engine import MarketDataEngine
from mde.errors import InputError
from mde.importer import read_candles
from mde.sources.sample import sample_root
from mde.timeframes import parse
from mde.validate import InvalidCandles, check, counts

HEADER = "ts,open,high,low,close,volume"
GOOD = [
    "2024-06-14T09:15:00+05:30,100,101,99,100.5,10",
    "2024-06-14T09:20:00+05:30,100.5,102,100,101,0",
    "2024-06-14T09:25:00+05:30,101,101.5,100.5,101,",
    "2024-06-14T09:30:00+05:30,101,103,100.9,102.5,7",
]


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# -- one bad row of each kind: refused whole, named by line, nothing written -----------------

BAD_ROWS = {
    "nan price": ("2024-06-14T09:35:00+05:30,nan,101,99,100,5", "open nan is not a finite number", "bad price"),
    "empty price": ("2024-06-14T09:35:00+05:30,,101,99,100,5", "open is empty", "bad price"),
    "text price": ("2024-06-14T09:35:00+05:30,100,abc,99,100,5", "high 'abc' is not a number", "bad price"),
    "inf price": ("2024-06-14T09:35:00+05:30,100,inf,99,100,5", "high inf is not a finite number", "bad price"),
    "negative price": ("2024-06-14T09:35:00+05:30,100,101,-99,100,5", "low -99.0 is not positive", "bad price"),
    "high below low": ("2024-06-14T09:35:00+05:30,100,99,101,100,5", "high 99.0 < low 101.0", "high/low inconsistent"),
    "close above high": ("2024-06-14T09:35:00+05:30,100,101,99,102,5", "outside low..high", "high/low inconsistent"),
    "negative volume": (
        "2024-06-14T09:35:00+05:30,100,101,99,100,-5",
        "volume '-5' is not a whole number >= 0",
        "bad volume",
    ),
    "inf volume": (
        "2024-06-14T09:35:00+05:30,100,101,99,100,inf",
        "volume 'inf' is not a whole number >= 0",
        "bad volume",
    ),
    "huge volume": (
        "2024-06-14T09:35:00+05:30,100,101,99,100,1e20",
        "volume '1e20' is too large for a count",
        "bad volume",
    ),
    "fractional volume": ("2024-06-14T09:35:00+05:30,100,101,99,100,1.5", "volume '1.5'", "bad volume"),
    "off grid": (
        "2024-06-14T09:17:00+05:30,100,101,99,100,5",
        "09:17 is not on the 5m grid (the candle would start at 09:15)",
        "off the timeframe grid",
    ),
    "seconds": ("2024-06-14T09:35:30+05:30,100,101,99,100,5", "is not on the 5m grid", "off the timeframe grid"),
    "duplicate": (
        "2024-06-14T09:20:00+05:30,100,101,99,100,5",
        "2024-06-14 09:20 is given more than once",
        "duplicate ts",
    ),
    "bad ts": ("14/06/2024 09:35,100,101,99,100,5", "timestamp '14/06/2024 09:35' is not ISO 8601", "bad timestamp"),
    "short row": ("2024-06-14T09:35:00+05:30,100,101,99,100", "short row: 5 of 6 fields", "malformed row"),
    "long row": ("2024-06-14T09:35:00+05:30,100,101,99,100,5,7", "long row: 7 fields", "malformed row"),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_a_csv_with_one_bad_row_is_refused_whole_naming_its_line(
    cli, tmp_path: Path, cache_dir: Path, kind: str
) -> None:
    row, reason, label = BAD_ROWS[kind]
    path = write_csv(tmp_path / "in.csv", [*GOOD[:2], row, *GOOD[2:]])  # the bad row is line 4
    result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    lines = [int(n) for n in re.findall(r"\bline (\d+):", err)]
    if kind == "duplicate":
        assert lines == [3, 4], err  # copies that disagree: neither is trusted
    else:
        assert lines == [4], err
    assert reason in err and label in err and "nothing was imported" in err and "--drop-invalid" in err
    assert snapshot(cache_dir) == {}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_drop_invalid_imports_the_rest_and_counts_by_reason(cli, tmp_path: Path, cache_dir: Path, kind: str) -> None:
    row, _, label = BAD_ROWS[kind]
    path = write_csv(tmp_path / "in.csv", [*GOOD[:2], row, *GOOD[2:]])
    result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m", "--drop-invalid")
    assert result.exit_code == 0, result.output
    dropped = 2 if kind == "duplicate" else 1
    assert f"dropped {dropped} invalid ({dropped} {label})" in result.stdout
    df = pl.concat([pl.read_parquet(p) for p in sorted(cache_dir.rglob("*.parquet"))])
    assert df.height == 4 - (1 if kind == "duplicate" else 0)
    assert all(math.isfinite(x) and x > 0 for c in ("open", "high", "low", "close") for x in df[c])


def test_json_with_text_or_missing_fields_gets_the_same_report_never_a_polars_error(
    cli, tmp_path: Path, cache_dir: Path
) -> None:
    items = [
        {"ts": "2024-06-14T09:15:00+05:30", "open": 100, "high": 101, "low": 99, "close": 100, "volume": 1},
        {"ts": "2024-06-14T09:20:00+05:30", "open": "abc", "high": 101, "low": 99, "close": 100, "volume": 1},
        {"ts": "2024-06-14T09:25:00+05:30", "open": 100, "high": 101, "low": 99, "close": 100},
        {"ts": "2024-06-14T09:30:00+05:30", "open": 100, "high": 101, "low": 99, "close": 100, "volume": float("inf")},
        {"ts": "2024-06-14T09:35:00+05:30", "open": 100, "high": 101, "low": 99, "close": 100, "volume": None},
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(items))  # json writes inf as Infinity, which Python's json reads back
    result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    err = result.stderr
    assert "3 of 5 rows" in err
    assert "item 2: open 'abc' is not a number" in err
    assert "item 3: no 'volume' field (write null if there is none)" in err
    assert "item 4: volume 'inf' is not a whole number >= 0" in err
    assert snapshot(cache_dir) == {}
    ok = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m", "--drop-invalid")
    assert ok.exit_code == 0 and "2 new" in ok.stdout  # a null volume is fine: the source has none


def test_a_csv_without_a_volume_column_means_no_volumes(cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [",".join(r.split(",")[:5]) for r in GOOD], header="ts,open,high,low,close")
    result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
    assert result.exit_code == 0, result.output


def test_outside_session_rows_stay_a_counted_drop_but_all_outside_is_refused(
    cli, tmp_path: Path, cache_dir: Path
) -> None:
    after_close = "2024-06-14T15:30:00+05:30,100,101,99,100,5"
    path = write_csv(tmp_path / "in.csv", [*GOOD, after_close])
    result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
    assert result.exit_code == 0
    assert (
        "dropped 1 outside NSE sessions (first: line 6: 2024-06-14 15:30 is outside every NSE session)" in result.stdout
    )
    # naive UTC times (03:45 = 09:15 IST) would all fall before the open: refused, with the likely cause
    utc = write_csv(tmp_path / "utc.csv", [f"2024-06-14T03:{45 + 5 * i}:00,100,101,99,100,5" for i in range(3)])
    before = snapshot(cache_dir)
    bad = cli("import", str(utc), "--symbol", "NIFTY", "-t", "5m")
    assert bad.exit_code == 2 and "every row starts outside the NSE sessions" in bad.stderr and "+00:00" in bad.stderr
    assert snapshot(cache_dir) == before


def test_a_short_row_is_named_not_a_timestamp_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(f"{HEADER}\n2024-06-14T09:15:00+05:30,100,101,99\n")
    result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
    assert result.exit_code == 2
    assert "line 2: short row: 4 of 6 fields" in result.stderr and "cannot parse timestamps" not in result.stderr


def test_non_utf8_and_empty_files_are_one_line_errors(cli, tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + b"\n\xe9\n")
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER + "\n")
    for path, words in ((latin, "is not UTF-8"), (empty, "has no candles")):
        result = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
        assert result.exit_code == 2 and words in result.stderr and result.stderr.count("\n") == 1


def test_import_through_the_real_entry_point_has_no_traceback(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [*GOOD, "2024-06-14T09:35:00+05:30,100,101,99,100,inf"])
    done = run_mde(
        "--cache-dir",
        str(tmp_path / "c"),
        "import",
        str(path),
        "--symbol",
        "NIFTY",
        "-t",
        "5m",
        env={"MDE_SOURCE": "sample"},
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "c").exists()


def test_the_bundled_csvs_import_as_before() -> None:
    """Same rows as the bundle (built by the old importer): the check refuses none of them."""
    for name, folder, tf in (
        ("NIFTY50_5m_2024.csv", "NIFTY_50", "5m"),
        ("BANKNIFTY_1d_2000-2025.csv", "NIFTY_BANK", "1d"),
        ("INFY_60m_2024-12_2026-01.csv", "INFY", "60m"),
    ):
        got = read_candles(NSE_DATA / name, parse(tf)).candles
        assert got.equals(pl.read_parquet(sample_root() / "NSE" / folder / f"{tf}.parquet").select(got.columns))
    q1 = read_candles(NSE_DATA / "NIFTY50_1m_2024Q1.csv", parse("1m"))
    assert q1.dropped_outside_session == 167 and q1.dropped_invalid == {}


# -- save_cache -----------------------------------------------------------------------------


def test_save_cache_refuses_implausible_candles_and_writes_nothing(engine: MarketDataEngine, cache_dir: Path) -> None:
    from factories import make_candles

    good = make_candles(date(2024, 6, 14), step=5)
    bad = good.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("close")).alias("close")
    )
    with pytest.raises(InvalidCandles, match=r"row 3: close nan is not a finite number"):
        engine.save_cache("NIFTY", "5m", bad)
    dup = pl.concat([good, good.slice(5, 1).with_columns(pl.col("close") + 0.05, pl.col("high") + 0.05)])
    with pytest.raises(InvalidCandles, match="duplicate ts"):
        engine.save_cache("NIFTY", "5m", dup)
    off = good.with_columns(pl.col("ts") + pl.duration(minutes=2))
    with pytest.raises(InputError, match="off the timeframe grid"):
        engine.save_cache("NIFTY", "5m", off)
    assert snapshot(cache_dir) == {}
    assert engine.save_cache("NIFTY", "5m", good).added == good.height


# -- the property: every bundled candle passes, and any single mutation is caught ------------


def _bundled() -> list[tuple[str, pl.DataFrame]]:
    out = []
    for path in sorted(sample_root().glob("NSE/*/*.parquet")):
        out.append((path.stem, pl.read_parquet(path)))
    return out


BUNDLED = _bundled()


def test_every_row_of_every_bundled_series_is_plausible() -> None:
    for tf, df in BUNDLED:
        assert counts(check(df, parse(tf), nse())) == {}, tf


def _mutate(row: dict, how: str, tf: str) -> dict:
    row = dict(row)
    h, low = row["high"], row["low"]
    if how == "nan":
        row["close"] = float("nan")
    elif how == "inf":
        row["high"] = float("inf")
    elif how == "empty":
        row["open"] = None
    elif how == "negative":
        row["low"] = -abs(low)
    elif how == "zero":
        row["open"] = 0.0
    elif how == "high_below_low":
        row["high"], row["low"] = low - 1.0, h + 1.0
    elif how == "close_above_high":
        row["close"] = h + 1.0
    elif how == "open_below_low":
        row["open"] = low - 1.0
    elif how == "negative_volume":
        row["volume"] = -1
    elif how == "fractional_volume":
        row["volume"] = 1.5
    elif how == "infinite_volume":
        row["volume"] = float("inf")
    elif how == "off_grid":
        row["ts"] = (
            row["ts"].replace(minute=(row["ts"].minute + 2) % 60) if tf != "1m" else row["ts"].replace(second=30)
        )
    return row


MUTATIONS = [
    "nan",
    "inf",
    "empty",
    "negative",
    "zero",
    "high_below_low",
    "close_above_high",
    "open_below_low",
    "negative_volume",
    "fractional_volume",
    "infinite_volume",
    "off_grid",
    "duplicate",
]


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series=st.integers(0, len(BUNDLED) - 1), where=st.floats(0, 1, exclude_max=True), how=st.sampled_from(MUTATIONS))
def test_any_single_mutation_of_a_bundled_row_is_rejected(series: int, where: float, how: str) -> None:
    tf_name, df = BUNDLED[series]
    tf = parse(tf_name)
    i = int(where * min(df.height, 500))
    window = df.slice(0, min(df.height, 500))
    if how == "off_grid" and tf.is_daily:
        how = "duplicate"  # a daily candle may carry any time of its day
    if how == "duplicate":
        other = dict(window.row(i, named=True))
        other["close"] = other["high"] if other["close"] != other["high"] else other["low"]
        if other["close"] == window.row(i, named=True)["close"]:
            other["volume"] = (other["volume"] or 0) + 1
        mutated = pl.concat([window, pl.DataFrame([other], schema=window.schema)])
        problems = check(mutated, tf, nse()).get_column("problem")
        assert problems[i] == "duplicate" and problems[-1] == "duplicate"
        assert problems.drop_nulls().len() == 2
        return
    rows = window.to_dicts()
    rows[i] = _mutate(rows[i], how, tf_name)
    mutated = pl.DataFrame(rows, schema={**window.schema, "volume": pl.Float64})  # room for 1.5 and inf
    problems = check(mutated, tf, nse()).get_column("problem")
    assert problems[i] is not None, (tf_name, i, how, rows[i])
    assert problems.drop_nulls().len() == 1


# -- a source's implausible candles: kept, counted, shown -------------------------------------


def test_source_candles_that_fail_the_checks_are_kept_counted_and_shown(tmp_path: Path) -> None:
    try:
        from kite_server import KiteServer
    except ImportError:  # pragma: no cover
        from tests.kite_server import KiteServer
    from mde.config import load
    from mde.sources.kite import KiteSource, RetryPolicy

    rows = []
    for k in range(6):
        t = datetime(2024, 6, 14, 9, 15 + 5 * k, tzinfo=IST)
        rows.append((t, 100.0, 101.0, 99.0, 100.5, 10))
    rows[2] = (rows[2][0], 100.0, 98.0, 99.0, 100.5, 10)  # high < low: the source's truth, kept
    with KiteServer(instruments_csv=NSE_DATA.parent / "instruments.csv") as srv:
        srv.add_candles(256265, "5minute", rows)
        env = {
            "KITE_API_KEY": srv.api_key,
            "KITE_ACCESS_TOKEN": srv.access_token,
            "MDE_KITE_ROOT": srv.url,
            "MDE_NOW": "2024-06-14T15:31:00+05:30",
            "MDE_SOURCE": "kite",
            "MDE_CACHE_DIR": str(tmp_path / "cache"),
            "MDE_TOKEN_FILE": str(tmp_path / "tok.json"),
        }
        srv.now = datetime.fromisoformat("2024-06-14T15:31:00+05:30")
        done = run_mde("fetch", "NIFTY", "-t", "5m", "--from", "2024-06-14", "--to", "2024-06-14", env=env)
        assert done.returncode == 0, done.stderr
        assert (
            "6 candles" in done.stdout
            and "1 implausible (1 high/low inconsistent), kept as the source's" in done.stdout
        )
        ls = run_mde("ls", env=env)
        assert "implausible: 1 (1 high/low inconsistent)" in ls.stdout
        js = json.loads(run_mde("ls", "--format", "json", env=env).stdout)
        assert js[0]["implausible"] == 1 and js[0]["rows"] == 6
        # a refresh re-reads the last session: the summary says what it received
        later = {**env, "MDE_NOW": "2024-06-18T10:00:00+05:30"}  # (the 17th is a holiday)
        srv.now = datetime.fromisoformat(later["MDE_NOW"])
        refreshed = run_mde("refresh", "--symbols", "NIFTY", "-t", "5m", env=later)
        assert refreshed.returncode == 0, refreshed.stderr
        assert "1 implausible candles kept as the source's (see mde ls)" in refreshed.stdout
        summary = json.loads(run_mde("refresh", "--symbols", "NIFTY", "-t", "5m", "--json", env=later).stdout)
        assert "implausible" in summary and summary["series"][0]["implausible"] in (0, 1)
        settings = load(
            environ={k: env[k] for k in ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "MDE_KITE_ROOT", "MDE_NOW")},
            cache_dir=tmp_path / "cache",
            source="kite",
        )
        eng = MarketDataEngine(
            settings, KiteSource(settings, retry=RetryPolicy(base_delay=0.01, delay_429=0.05, timeout=3.0))
        )
        assert eng.load_cache("NIFTY", "5m").height == 6  # kept
        assert [i.implausible for i in eng.inventory()] == [{"ohlc": 1}]


def test_the_per_partition_count_follows_every_write(tmp_path: Path) -> None:
    """A partition's implausible count is exact after any sequence of writes: a bad candle
    counted, clean candles added beside it (only the new ones checked), the bad one replaced."""
    from mde.store import CandleStore
    from mde.symbols import Instrument

    store, inst, tf = CandleStore(tmp_path / "cache"), Instrument("NSE", "NIFTY 50"), parse("5m")
    now = datetime(2024, 6, 20, 16, 0, tzinfo=IST)

    def candle(minute: int, high: float) -> pl.DataFrame:
        ts = datetime(2024, 6, 14, 9, 15, tzinfo=IST) + __import__("datetime").timedelta(minutes=minute)
        return pl.DataFrame(
            {"ts": [ts], "open": [100.0], "high": [high], "low": [99.0], "close": [100.0], "volume": [1]},
            schema_overrides={"ts": pl.Datetime("us", "Asia/Kolkata")},
        )

    def total() -> dict:
        return store.manifest(inst, tf).implausible  # type: ignore[union-attr]

    assert store.write(inst, tf, candle(0, 101.0), source="kite", now=now).implausible == {}
    assert total() == {}
    assert store.write(inst, tf, candle(5, 98.0), source="kite", now=now).implausible == {"ohlc": 1}
    assert total() == {"ohlc": 1}
    store.write(inst, tf, candle(10, 101.0), source="kite", now=now)
    assert total() == {"ohlc": 1}
    store.write(inst, tf, candle(5, 101.0), source="kite", now=now)  # the source corrected it
    assert total() == {}
    store.write(inst, tf, candle(3, 101.0), source="kite", now=now)  # 09:18: off the grid, kept, counted
    assert total() == {"grid": 1}


FIELD = st.one_of(
    st.sampled_from(
        [
            "",
            "abc",
            "inf",
            "-inf",
            "nan",
            "NaN",
            "1e309",
            "-0",
            "0",
            "1.5",
            "100",
            "99.95",
            '"100"',
            " 7 ",
            "Infinity",
            "2024-06-14T09:15:00+05:30",
            "2024-06-14 09:20",
            "2024-06-14T09:17:00Z",
            "2024-06-14",
            "2024-13-40T99:99",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)
JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)


@hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from(
        [HEADER, "ts,open,high,low,close", "date,open,high,low,close,volume,oi", "TS, Open ,high,low,close,volume"]
    ),
    rows=st.lists(st.lists(FIELD, min_size=0, max_size=8), max_size=6),
    tf=st.sampled_from(["1m", "5m", "60m", "1d"]),
)
def test_any_csv_is_read_or_refused_with_an_input_error_never_anything_else(
    tmp_path: Path, header: str, rows: list[list[str]], tf: str
) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    try:
        got = read_candles(path, parse(tf))
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    df = got.candles
    assert df["ts"].is_sorted() and df["ts"].n_unique() == df.height
    assert counts(check(df, parse(tf), nse())) == {}


@hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(
        st.one_of(
            st.dictionaries(
                st.sampled_from(["ts", "date", "open", "high", "low", "close", "volume", "oi", "x"]),
                JSON_VALUE,
                max_size=8,
            ),
            st.lists(JSON_VALUE, max_size=8),
            JSON_VALUE,
        ),
        max_size=5,
    ),
    tf=st.sampled_from(["5m", "1d"]),
)
def test_any_json_is_read_or_refused_with_an_input_error_never_anything_else(
    tmp_path: Path, items: list, tf: str
) -> None:
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    try:
        got = read_candles(path, parse(tf))
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert counts(check(got.candles, parse(tf), nse())) == {}


def test_an_exact_copy_of_a_row_is_flagged_once_and_drop_invalid_keeps_the_original(
    cli, tmp_path: Path, cache_dir: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", [*GOOD[:2], GOOD[1], *GOOD[2:]])  # line 4 repeats line 3
    refused = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m")
    assert refused.exit_code == 2 and re.findall(r"\bline (\d+):", refused.stderr) == ["4"]
    kept = cli("import", str(path), "--symbol", "NIFTY", "-t", "5m", "--drop-invalid")
    assert kept.exit_code == 0 and "dropped 1 invalid (1 duplicate ts)" in kept.stdout and "4 new" in kept.stdout
