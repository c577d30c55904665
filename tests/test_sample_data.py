"""The sample data bundled in the package: built reproducibly from data/nse, cleaned like
`mde import`, answered by the sample source, and usable from the installed package alone."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from datetime import date, datetime, time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mde
from conftest import NSE_DATA, REPO
from mde.calendar import nse
from mde.candles import COLUMNS
from mde.clock import IST
from mde.errors import InputError
from mde.importer import read_candles
from mde.sources.sample import SampleSource, sample_root
from mde.timeframes import parse

BUNDLE = Path(mde.__file__).resolve().parent / "sample_data"


def _build_module():
    spec = importlib.util.spec_from_file_location("build_sample", REPO / "data" / "build_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample_data")
    index = _build_module().build(out, source_dir=NSE_DATA, quiet=True)
    return out, index


# -- the committed bundle is what build_sample.py makes ----------------------------------------


def test_committed_bundle_equals_a_fresh_build(rebuilt: tuple[Path, dict]) -> None:
    out, index = rebuilt
    built_files = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    committed_files = sorted(p.relative_to(BUNDLE) for p in BUNDLE.rglob("*.parquet"))
    assert built_files == committed_files
    assert len(built_files) == 12
    for rel in built_files:
        built = pl.read_parquet(out / rel)
        committed = pl.read_parquet(BUNDLE / rel)
        assert_frame_equal(built, committed, check_exact=True)
        assert dict(committed.schema) == COLUMNS, rel
    assert json.loads((BUNDLE / "index.json").read_text(encoding="utf-8")) == index
    assert json.loads((out / "index.json").read_text(encoding="utf-8")) == index


def test_index_describes_the_files(rebuilt: tuple[Path, dict]) -> None:
    _, index = rebuilt
    assert index["end"] == "2024-12-31T15:30:00+05:30"  # close of NIFTY's last 5m candle
    for entry in index["series"]:
        exchange, symbol = entry["instrument"].split(":", 1)
        df = pl.read_parquet(BUNDLE / exchange / symbol.replace(" ", "_") / f"{entry['timeframe']}.parquet")
        assert entry["rows"] == df.height
        assert entry["first"] == df["ts"][0].isoformat()
        assert entry["last"] == df["ts"][-1].isoformat()
        assert df["ts"].is_sorted() and df["ts"].is_unique().all()


def test_bundle_is_clean(rebuilt: tuple[Path, dict]) -> None:
    """Intraday bars only inside sessions, daily bars one per day at 00:00."""
    from mde.resample import drop_outside_sessions

    _, index = rebuilt
    for entry in index["series"]:
        tf = parse(entry["timeframe"])
        exchange, symbol = entry["instrument"].split(":", 1)
        df = pl.read_parquet(BUNDLE / exchange / symbol.replace(" ", "_") / f"{tf}.parquet")
        if tf.is_daily:
            assert df["ts"].dt.time().unique().to_list() == [time(0, 0)], entry["instrument"]
        else:
            assert drop_outside_sessions(df, tf, nse())[1] == 0, entry["instrument"]


# -- cleaning: the vendor's flat bars after 15:30 -----------------------------------------------


def test_vendor_q1_flat_bars_after_1530_on_2024_01_20_are_dropped_and_counted(rebuilt: tuple[Path, dict]) -> None:
    path = NSE_DATA / "NIFTY50_1m_2024Q1.csv"
    raw = pl.read_csv(path, schema_overrides={"ts": pl.String})
    junk = raw.filter(pl.col("ts").str.starts_with("2024-01-20") & (pl.col("ts").str.slice(11, 5) >= "15:30"))
    assert junk.height == 167
    assert junk["ts"][0].startswith("2024-01-20T15:30") and junk["ts"][-1].startswith("2024-01-20T18:16")
    flat = (pl.col("open") == pl.col("high")) & (pl.col("high") == pl.col("low")) & (pl.col("low") == pl.col("close"))
    assert junk.filter(~flat)["ts"].to_list() == ["2024-01-20T15:33:00+05:30"]  # the one step 21585.70 -> 21571.80
    assert sorted(set(junk["close"])) == [21571.8, 21585.7]

    imported = read_candles(path, parse("1m"))
    assert imported.rows_read == raw.height == 22_397
    assert imported.dropped_outside_session == 167
    assert imported.candles.height == 22_397 - 167
    saturday = imported.candles.filter(pl.col("ts").dt.date() == date(2024, 1, 20))
    assert saturday.height == 375
    assert saturday["ts"][-1] == datetime(2024, 1, 20, 15, 29, tzinfo=IST)
    # Q2 has nothing to drop; the index reports the total for the series
    assert read_candles(NSE_DATA / "NIFTY50_1m_2024Q2.csv", parse("1m")).dropped_outside_session == 0
    _, index = rebuilt
    (entry,) = [s for s in index["series"] if (s["instrument"], s["timeframe"]) == ("NSE:NIFTY 50", "1m")]
    assert entry["dropped_outside_session"] == 167
    assert entry["rows"] == 22_397 - 167 + 21_855
    assert all(s["dropped_outside_session"] == 0 for s in index["series"] if s is not entry)


def test_engine_import_reports_the_dropped_bars(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = engine.import_file(NSE_DATA / "NIFTY50_1m_2024Q1.csv", "NIFTY", "1m")
    assert (report.rows_read, report.dropped_outside_session, report.dropped_incomplete) == (22_397, 167, 0)
    assert report.added == report.rows == 22_397 - 167


# -- the sample source ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "tf", "first_day", "last_day"),
    [
        ("NIFTY", "5m", date(2024, 1, 1), date(2024, 12, 31)),
        ("BANKNIFTY", "5m", date(2024, 1, 1), date(2024, 12, 31)),
        ("NIFTY", "1d", date(1990, 7, 3), date(2025, 12, 19)),
        ("BANKNIFTY", "1d", date(2000, 1, 1), date(2025, 12, 19)),
        ("RELIANCE", "60m", date(2024, 12, 5), date(2026, 1, 9)),
        ("INFY", "60m", date(2024, 12, 5), date(2026, 1, 9)),
        ("SBIN", "60m", date(2024, 12, 5), date(2026, 1, 9)),
        ("RELIANCE", "1d", date(2020, 7, 14), date(2026, 1, 9)),
        ("INFY", "1d", date(2020, 7, 14), date(2026, 1, 9)),
        ("NSE:SBIN", "1d", date(2020, 7, 14), date(2026, 1, 9)),
    ],
)
def test_sample_source_answers_the_bundled_series(symbol: str, tf: str, first_day: date, last_day: date) -> None:
    src = SampleSource()
    inst = src.resolve(symbol)
    df = src.historical(inst, parse(tf), datetime(1990, 1, 1, tzinfo=IST), datetime(2030, 1, 1, tzinfo=IST))
    assert df["ts"][0].date() == first_day and df["ts"][-1].date() == last_day
    assert dict(df.schema) == COLUMNS
    # a range is answered inclusively, start <= ts <= end
    lo = datetime.combine(last_day, time(0, 0), IST)
    part = src.historical(inst, parse(tf), lo, datetime.combine(last_day, time(23, 59), IST))
    assert part.height >= 1 and (part["ts"] >= lo).all()
    if parse(tf).minutes == 60:
        assert part["ts"].dt.strftime("%H:%M").to_list() == [
            "09:15",
            "10:15",
            "11:15",
            "12:15",
            "13:15",
            "14:15",
            "15:15",
        ]


def test_sample_source_builds_larger_timeframes_and_refuses_smaller_ones() -> None:
    src = SampleSource()
    nifty = src.resolve("NIFTY")
    day = src.historical(
        nifty, parse("15m"), datetime(2024, 6, 14, tzinfo=IST), datetime(2024, 6, 14, 23, 59, tzinfo=IST)
    )
    assert day.height == 25 and day["ts"][0] == datetime(2024, 6, 14, 9, 15, tzinfo=IST)
    rel = src.resolve("RELIANCE")
    with pytest.raises(InputError, match=r"no 5m candles for NSE:RELIANCE \(it has 1d, 60m\)"):
        src.historical(rel, parse("5m"), datetime(2024, 12, 6, tzinfo=IST), datetime(2024, 12, 7, tzinfo=IST))
    # outside the data: an error naming what the sample has (issue 14: a source says what it has)
    with pytest.raises(InputError, match=r"it has them from 2024-12-05 09:15 to 2026-01-09 15:30 only"):
        src.historical(rel, parse("60m"), datetime(2023, 1, 1, tzinfo=IST), datetime(2023, 2, 1, tzinfo=IST))


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("RELIANC", "RELIANCE"), ("NIFTYY", "NIFTY"), ("SBI", "SBIN"), ("BANKNIFT", "BANKNIFTY")]
)
def test_unknown_symbol_suggests_close_matches(typo: str, suggestion: str) -> None:
    with pytest.raises(InputError) as info:
        SampleSource().resolve(typo)
    message = str(info.value)
    assert f"unknown symbol {typo!r} in the sample data; did you mean" in message
    assert suggestion in message.split("did you mean", 1)[1].split("?")[0]
    assert "NSE:RELIANCE" in message  # and it lists what the sample has


def test_unknown_symbol_without_close_matches() -> None:
    with pytest.raises(InputError, match=r"unknown symbol 'ZZZZQ' in the sample data \(the sample has NSE:INFY"):
        SampleSource().resolve("ZZZZQ")


def test_sample_clock_is_the_end_of_data() -> None:
    assert SampleSource().clock() == datetime(2024, 12, 31, 15, 30, tzinfo=IST)


# -- the bundle lives in the package ----------------------------------------------------------


def test_bundle_is_found_through_importlib_resources_not_data() -> None:
    root = sample_root().resolve()
    assert root == BUNDLE
    assert (REPO / "data").resolve() not in root.parents
    assert SampleSource().root == sample_root()


def test_bundle_works_from_a_copy_of_the_package_alone(tmp_path: Path) -> None:
    """Copy src/mde somewhere else and use it with no repo around: the sample must still answer."""
    site = tmp_path / "site"
    shutil.copytree(Path(mde.__file__).resolve().parent, site / "mde", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        """
        import json, mde
        from pathlib import Path
        from mde.config import load
        from mde.engine import MarketDataEngine
        from mde.sources.sample import sample_root
        eng = MarketDataEngine(load(cache_dir=Path("cache"), source="sample", environ={}))
        added = eng.refresh("NIFTY", "5m", count=10).added
        print(json.dumps({"mde": mde.__file__, "root": str(sample_root()), "added": added,
                          "now": eng.now().isoformat(),
                          "reliance": eng.fetch_historical("RELIANCE", "60m", "2024-12-10", "2024-12-10").height}))
        """
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["mde"]).is_relative_to(site)
    assert Path(out["root"]) == site / "mde" / "sample_data"
    assert out["added"] == 10
    assert out["now"] == "2024-12-31T15:30:00+05:30"
    assert out["reliance"] == 7
