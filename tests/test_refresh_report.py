"""`MarketDataEngine.refresh_many`: the rules of `mde refresh` as one library call (symbol and
timeframe defaults from [refresh], comma splitting, "no symbols", the exit status of the worst
failure) returning a RefreshReport that the CLI only renders."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_mde
from mde.config import RefreshSettings, Settings, load
from mde.engine import MarketDataEngine, RefreshReport, RefreshResult
from mde.errors import ConfigError, InputError
from mde.timeframes import parse


def cached_rows(eng: MarketDataEngine, symbol: str, timeframe: str) -> int:
    return eng.store.read(eng.resolve(symbol), parse(timeframe)).height


def with_refresh(settings: Settings, **kw: object) -> MarketDataEngine:
    return MarketDataEngine(settings.with_overrides(refresh=RefreshSettings(**kw)))  # type: ignore[arg-type]


def test_symbols_and_timeframes_default_to_the_refresh_section(settings: Settings) -> None:
    eng = with_refresh(settings, symbols=("SBIN", "INFY"), timeframes=("60m", "1d"), count=20)
    report = eng.refresh_many()
    assert isinstance(report, RefreshReport)
    assert [(r.symbol, r.timeframe) for r in report.results] == [
        ("SBIN", "60m"),
        ("SBIN", "1d"),
        ("INFY", "60m"),
        ("INFY", "1d"),
    ]
    assert report.ok == 4 and report.failed == 0 and report.exit_code == 0 and report.worst_error is None
    assert all(r.report is not None and r.report.rows == 20 for r in report.results)
    assert cached_rows(eng, "INFY", "1d") == 20
    # given symbols replace the configured ones; given timeframes replace [refresh] timeframes
    again = eng.refresh_many(["NIFTY"], "15m", count=5)
    assert [(r.symbol, r.timeframe) for r in again] == [("NIFTY", "15m")]


def test_multi_tf_gives_a_symbol_its_own_timeframes_unless_timeframes_are_given(settings: Settings) -> None:
    eng = MarketDataEngine(
        settings.with_overrides(
            refresh=RefreshSettings(
                symbols=("NIFTY", "SBIN"), timeframes=("1d",), count=5, multi_tf={"NIFTY": ("15m", "60m")}
            )
        )
    )
    assert [(r.symbol, r.timeframe) for r in eng.refresh_many()] == [("NIFTY", "15m"), ("NIFTY", "60m"), ("SBIN", "1d")]
    assert [(r.symbol, r.timeframe) for r in eng.refresh_many(timeframes=["1d"])] == [("NIFTY", "1d"), ("SBIN", "1d")]


@pytest.mark.parametrize(
    "symbols", ["NIFTY,BANKNIFTY", ["NIFTY,BANKNIFTY"], [" NIFTY ", "BANKNIFTY,"], ["NIFTY", ",", "BANKNIFTY"]]
)
def test_symbols_are_split_on_commas_and_stripped(settings: Settings, symbols: object) -> None:
    eng = MarketDataEngine(settings)
    report = eng.refresh_many(symbols, ["1d"], count=3)  # type: ignore[arg-type]
    assert [r.symbol for r in report] == ["NIFTY", "BANKNIFTY"]
    assert report.exit_code == 0
    assert eng.refresh_symbols(symbols) == ["NIFTY", "BANKNIFTY"]  # type: ignore[arg-type]


@pytest.mark.parametrize("symbols", [None, [], ["", " , "], ""])
def test_no_symbols_anywhere_is_a_config_error_before_anything_is_written(
    settings: Settings, cache_dir: Path, symbols: object
) -> None:
    eng = MarketDataEngine(settings)
    with pytest.raises(
        ConfigError, match=r"no symbols to refresh: give --symbols NIFTY BANKNIFTY or set \[refresh\] symbols"
    ) as err:
        eng.refresh_many(symbols)  # type: ignore[arg-type]
    assert err.value.exit_code == 2
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.parquet"))


@pytest.mark.parametrize("count", [0, -5, "many", 10**9])
def test_a_bad_count_fails_the_whole_run_before_any_series(settings: Settings, cache_dir: Path, count: object) -> None:
    eng = MarketDataEngine(settings)
    seen: list[RefreshResult] = []
    with pytest.raises(InputError, match="count must be"):
        eng.refresh_many(["NIFTY"], ["5m"], count, on_result=seen.append)  # type: ignore[arg-type]
    assert seen == [] and (not cache_dir.exists() or not any(cache_dir.rglob("*.parquet")))


def test_a_mistyped_timeframe_fails_the_whole_run_before_any_series(settings: Settings, cache_dir: Path) -> None:
    with pytest.raises(InputError):
        MarketDataEngine(settings).refresh_many(["NIFTY", "SBIN"], ["5m", "7q"], count=5)
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.parquet"))


def test_a_mixed_run_refreshes_the_good_series_and_exits_with_the_worst_failure(settings: Settings) -> None:
    eng = MarketDataEngine(settings)
    plans: list[list[tuple[str, str]]] = []
    seen: list[RefreshResult] = []
    report = eng.refresh_many("NIFTY,NOSUCHSYMBOL,BANKNIFTY", ["15m"], 25, on_result=seen.append, on_plan=plans.append)
    assert plans == [[("NIFTY", "15m"), ("NOSUCHSYMBOL", "15m"), ("BANKNIFTY", "15m")]]
    assert seen == report.results and len(report) == 3
    good, bad, other = report
    assert good.error is None and other.error is None and isinstance(bad.error, InputError)
    assert "unknown symbol 'NOSUCHSYMBOL'" in bad.error.message
    assert report.ok == 2 and report.failed == 1 and report.errors == [bad.error]
    assert report.exit_code == 2 == bad.error.exit_code and report.worst_error is bad.error
    assert cached_rows(eng, "NIFTY", "15m") == 25 and cached_rows(eng, "BANKNIFTY", "15m") == 25
    summary = report.summary
    assert (summary["ok"], summary["failed"], summary["added"]) == (2, 1, 50)
    assert [s["exit_code"] for s in summary["series"]] == [0, 2, 0]
    assert summary["series"][1]["error"] == bad.error.message


def test_the_cli_json_is_the_library_report(tmp_path: Path) -> None:
    """`mde refresh --json` prints the report's summary: the same run through the library on a
    second cache gives the same figures (the time taken aside)."""
    cli_cache, lib_cache = tmp_path / "cli", tmp_path / "lib"
    res = run_mde(
        "--cache-dir",
        str(cli_cache),
        "refresh",
        "--source",
        "sample",
        "-s",
        "NIFTY,NOSUCH",
        "SBIN",
        "-t",
        "1d",
        "--count",
        "7",
        "--json",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    printed = json.loads(res.stdout)
    report = MarketDataEngine(load(cache_dir=lib_cache, source="sample", environ={})).refresh_many(
        ["NIFTY,NOSUCH", "SBIN"], ["1d"], 7
    )
    assert report.exit_code == res.returncode
    for figures in (printed, report.summary):
        figures.pop("seconds")
    assert printed == json.loads(json.dumps(report.summary))
    assert res.stderr.count("error: ") == 1 and "NOSUCH 1d: unknown symbol 'NOSUCH'" in res.stderr


def test_on_a_terminal_each_series_gets_a_progress_row(tmp_path: Path) -> None:
    """The CLI's progress rows are drawn from refresh_many's callbacks (stdout a real pty)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    env.update(COLUMNS="120", TERM="xterm")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mde",
                "--cache-dir",
                str(tmp_path / "cache"),
                "refresh",
                "--source",
                "sample",
                "-s",
                "NIFTY",
                "NOSUCH",
                "-t",
                "1d",
                "--count",
                "4",
            ],
            stdout=secondary,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
        )
        os.close(secondary)
        chunks = []
        while True:  # read while it writes: a full pty buffer would block it
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the writer side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        returncode = proc.wait(timeout=60)
    finally:
        os.close(primary)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert returncode == 2
    assert "NIFTY 1d" in out and "NOSUCH 1d" in out and "failed" in out
    assert "refresh: 1 ok, 1 failed; 4 candles added" in out
