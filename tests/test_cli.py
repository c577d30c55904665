"""The `mde` command: output formats, exit codes, stdout/stderr split, quiet cron runs."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import REPO, run_mde
from mde.cli import app
from mde.config import load
from mde.engine import MarketDataEngine

SAMPLE_ENV = {"MDE_SOURCE": "sample"}


@pytest.fixture
def cli(cache_dir: Path):
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, ["--cache-dir", str(cache_dir), *args], env={**SAMPLE_ENV, **(env or {})})

    return invoke


@pytest.fixture
def refreshed(cli) -> None:
    result = cli("refresh", "--symbols", "NIFTY", "BANKNIFTY")
    assert result.exit_code == 0, result.stderr


def engine_for(cache_dir: Path) -> MarketDataEngine:
    return MarketDataEngine(load(cache_dir=cache_dir, source="sample", environ={}))


def test_refresh_prints_one_summary_line_when_not_on_a_terminal_and_fills_the_cache(cli, cache_dir: Path) -> None:
    result = cli("refresh", "--symbols", "NIFTY", "BANKNIFTY")
    assert result.exit_code == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "refresh: 2 ok, 0 failed; 2000 candles added; 2 requests, 0 rate-limited (429)"
    )
    assert cli("-q", "refresh", "--symbols", "NIFTY").stdout == ""
    eng = engine_for(cache_dir)
    assert eng.load_cache("NIFTY", "5m").height == 1000
    assert eng.load_cache("BANKNIFTY", "5m").height == 1000


def test_refresh_twice_adds_nothing_the_second_time(cli, refreshed) -> None:
    result = cli("-v", "refresh", "--symbols", "NIFTY,BANKNIFTY")
    assert result.exit_code == 0
    assert "0 candles added; 0 requests" in result.stdout
    assert "NSE:NIFTY 50 5m: up to date, 1000 cached" in result.stdout
    assert "NSE:NIFTY BANK 5m: up to date, 1000 cached" in result.stdout


def test_refresh_uses_the_config_symbols_and_count(cli, tmp_path: Path, cache_dir: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text('[refresh]\nsymbols = ["SBIN"]\ntimeframes = ["60m", "1d"]\ncount = 20\n')
    result = cli("--config", str(conf), "refresh")
    assert result.exit_code == 0, result.stderr
    eng = engine_for(cache_dir)
    assert eng.load_cache("SBIN", "60m").height == 20
    assert eng.load_cache("SBIN", "1d").height == 20


def test_refresh_with_one_bad_symbol_still_refreshes_the_others_and_fails(cli, cache_dir: Path) -> None:
    result = cli("refresh", "--symbols", "NIFTY", "NOSUCHSYM", "BANKNIFTY")
    assert result.exit_code == 2
    assert "NOSUCHSYM" in result.stderr and "unknown symbol" in result.stderr
    assert engine_for(cache_dir).load_cache("BANKNIFTY", "5m").height == 1000


def test_refresh_json_summary(cli) -> None:
    result = cli("refresh", "--symbols", "NIFTY", "NOPE", "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] == 1 and doc["failed"] == 1 and doc["added"] == 1000 and doc["requests"] == 1
    bad = next(s for s in doc["series"] if s["symbol"] == "NOPE")
    assert bad["exit_code"] == 2 and "unknown symbol" in bad["error"]


def test_refresh_uses_per_symbol_timeframes_from_multi_tf(cli, tmp_path: Path, cache_dir: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text('[refresh]\ntimeframes = ["5m"]\ncount = 30\n[refresh.multi_tf]\nNIFTY = ["15m", "1d"]\n')
    result = cli("--config", str(conf), "refresh", "--symbols", "NIFTY", "BANKNIFTY")
    assert result.exit_code == 0, result.stderr
    items = {(i["instrument"], i["timeframe"]) for i in json.loads(cli("ls", "-f", "json").stdout)}
    assert items == {("NSE:NIFTY 50", "15m"), ("NSE:NIFTY 50", "1d"), ("NSE:NIFTY BANK", "5m")}


def test_refresh_without_symbols_says_how_to_give_them(cli) -> None:
    result = cli("refresh")
    assert result.exit_code == 2
    assert "--symbols" in result.stderr


def test_window_table_has_a_footer_with_the_last_candle_and_freshness(cli, refreshed) -> None:
    result = cli("window", "NIFTY", "--limit", "3")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "2024-12-31 15:25" in out and "23,668.80" in out
    assert "last candle 2024-12-31 15:25 IST, closed 2024-12-31 15:30" in out
    assert "up to date" in out


def test_window_footer_says_stale_when_the_clock_has_moved_on(cli, refreshed) -> None:
    result = cli("window", "NIFTY", "--limit", "3", env={"MDE_NOW": "2025-01-01T10:00:00+05:30"})
    assert result.exit_code == 0
    assert "STALE" in result.stdout and "would reach 2025-01-01 10:00" in " ".join(result.stdout.split())


def test_window_json_is_exactly_the_api_shape_and_matches_the_library(cli, refreshed, cache_dir: Path) -> None:
    result = cli(
        "window", "NIFTY", "--timeframe", "15m", "--limit", "4", "--format", "json", "--as-of", "2024-12-31T11:00"
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["symbol", "timeframe", "count", "candles"]
    assert doc["symbol"] == "NIFTY" and doc["timeframe"] == "15m" and doc["count"] == 4
    assert [list(c) for c in doc["candles"]] == [["ts", "open", "high", "low", "close", "volume"]] * 4
    assert [c["ts"] for c in doc["candles"]] == [
        "2024-12-31T10:00:00+05:30",
        "2024-12-31T10:15:00+05:30",
        "2024-12-31T10:30:00+05:30",
        "2024-12-31T10:45:00+05:30",
    ]
    lib = engine_for(cache_dir).get_window("NIFTY", "15m", limit=4, as_of="2024-12-31T11:00")
    assert [c["close"] for c in doc["candles"]] == lib["close"].to_list()


def test_window_csv_parses_back_to_the_same_candles(cli, refreshed, cache_dir: Path) -> None:
    result = cli("window", "BANKNIFTY", "-n", "10", "-f", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 10 and list(rows[0]) == ["ts", "open", "high", "low", "close", "volume"]
    lib = engine_for(cache_dir).get_window("BANKNIFTY", "5m", limit=10)
    assert [float(r["open"]) for r in rows] == lib["open"].to_list()
    assert rows[-1]["ts"] == "2024-12-31T15:25:00+05:30"


@pytest.mark.parametrize(
    "args, message",
    [
        (["window", "NIFTY", "-t", "7m"], "unknown timeframe '7m'; use one of 1m, 3m, 5m, 10m, 15m, 30m, 60m, 1d"),
        (["window", "NIFTY", "-n", "0"], "limit must be between 1 and 1000, got 0"),
        (["window", "NIFTY", "-n", "1001"], "limit must be between 1 and 1000, got 1001"),
        (["window", "NIFTY", "--as-of", "noon"], "bad as_of 'noon'"),
        (["window", "../../etc/passwd"], "invalid symbol"),
        (
            ["window", "INFY"],
            "no cached 5m candles for INFY, and the sample has none to fetch (it has 60m, 1d for INFY)",
        ),
        (["fetch", "NIFTY", "--from", "2024-13-01"], "bad start date '2024-13-01'; use YYYY-MM-DD"),
        (["fetch", "NIFTY", "--from", "2024-06-10", "--to", "2024-06-01"], "is after end"),
        (["fetch", "NOPE", "--from", "2024-06-10"], "unknown symbol 'NOPE'"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(cli, refreshed, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bad_input_leaves_the_cache_byte_identical(cli, refreshed, cache_dir: Path) -> None:
    before = {p: p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()}
    for args in (
        ["fetch", "NIFTY", "-t", "5m", "--from", "2024-13-01"],
        ["window", "NIFTY", "-n", "5000"],
        ["fetch", "NIFTY", "-t", "2h", "--from", "2024-06-01"],
    ):
        assert cli(*args).exit_code == 2
    assert {p: p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()} == before


def test_fetch_stores_exactly_the_range_and_reports_it(cli, cache_dir: Path) -> None:
    result = cli("fetch", "NIFTY", "-t", "1m", "--from", "2024-06-10", "--to", "2024-06-11")
    assert result.exit_code == 0, result.stderr
    assert "750 candles" in result.stdout and "750 new" in result.stdout
    df = engine_for(cache_dir).load_cache("NIFTY", "1m")
    assert df.height == 750
    assert str(df["ts"][0]).startswith("2024-06-10 09:15") and str(df["ts"][-1]).startswith("2024-06-11 15:29")


def test_ls_lists_series_with_source_rows_and_coverage(cli, refreshed) -> None:
    result = cli("ls", "--format", "json")
    assert result.exit_code == 0
    items = json.loads(result.stdout)
    assert {(i["instrument"], i["timeframe"]) for i in items} == {("NSE:NIFTY 50", "5m"), ("NSE:NIFTY BANK", "5m")}
    nifty = next(i for i in items if i["instrument"] == "NSE:NIFTY 50")
    assert nifty["source"] == "sample" and nifty["rows"] == 1000 and nifty["bytes"] > 0
    assert nifty["last_ts"] == "2024-12-31T15:25:00+05:30" and nifty["coverage"]
    table = cli("ls").stdout
    assert "NSE:NIFTY 50 5m" in table and "sample" in table and "1,000" in table


def test_import_of_the_old_json_cache_and_a_csv(cli, tmp_path: Path, cache_dir: Path) -> None:
    old = tmp_path / "artifacts" / "market_data" / "NIFTY_5m.json"
    old.parent.mkdir(parents=True)
    src = pl.read_csv(REPO / "data" / "nse" / "NIFTY50_5m_2024.csv").head(150)
    old.write_text(json.dumps(src.to_dicts()))
    result = cli("import", str(old), "--symbol", "NIFTY", "--timeframe", "5m", "--origin", "kite")
    assert result.exit_code == 0, result.stderr
    assert "read 150 rows" in result.stdout and "150 new" in result.stdout
    eng = engine_for(cache_dir)
    assert eng.load_cache("NIFTY", "5m")["close"].to_list() == src["close"].to_list()
    assert (
        eng.store.manifest(eng.resolve("NIFTY"), __import__("mde.timeframes").timeframes.parse("5m")).source == "kite"
    )

    q1 = REPO / "data" / "nse" / "NIFTY50_1m_2024Q1.csv"
    result = cli("import", str(q1), "--symbol", "NIFTY", "-t", "1m")
    assert result.exit_code == 0, result.stderr
    assert "dropped 167 outside NSE sessions" in result.stdout


def test_import_of_a_broken_file_is_a_clear_error(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,price\nx,y\n")
    result = cli("import", str(bad), "--symbol", "NIFTY", "-t", "5m")
    assert result.exit_code == 2 and "error:" in result.stderr and "ts" in result.stderr


def test_prune_dry_run_changes_nothing_and_prune_drops(cli, cache_dir: Path) -> None:
    assert cli("fetch", "NIFTY", "-t", "1m", "--from", "2024-04-29", "--to", "2024-05-03").exit_code == 0
    files = sorted(p.name for p in cache_dir.rglob("*.parquet"))
    assert files == ["2024-04.parquet", "2024-05.parquet"]
    dry = cli("prune", "--before", "2024-05-01", "--dry-run")
    assert dry.exit_code == 0 and "would drop 750 candles from 2024-04" in dry.stdout
    assert sorted(p.name for p in cache_dir.rglob("*.parquet")) == files
    real = cli("prune", "--before", "2024-05-01")
    assert real.exit_code == 0 and "dropped 750 candles" in real.stdout
    assert sorted(p.name for p in cache_dir.rglob("*.parquet")) == ["2024-05.parquet"]


def test_config_errors_exit_2_and_name_the_file(cli, tmp_path: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text('[cache]\ndri = "x"\n')
    result = cli("--config", str(conf), "ls")
    assert result.exit_code == 2
    assert "unknown key 'dri' in [cache]" in result.stderr and str(conf) in result.stderr


def test_version_and_help_list_every_command() -> None:
    runner = CliRunner()
    assert re.match(r"mde \d+\.\d+", runner.invoke(app, ["--version"]).stdout)
    out = runner.invoke(app, ["--help"]).stdout
    for command in ("window", "fetch", "refresh", "ls", "import", "prune"):
        assert command in out
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "Example" in sub.stdout


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for command in ("window", "fetch", "refresh", "ls", "import", "prune"):
        assert f"mde {command}" in readme


def test_the_real_entry_point_maps_errors_to_exit_codes(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    ok = run_mde("--cache-dir", str(cache), "refresh", "--symbols", "NIFTY", env=SAMPLE_ENV)
    assert (
        ok.returncode == 0 and ok.stdout.startswith("refresh: 1 ok, 0 failed; 1000 candles added") and ok.stderr == ""
    )
    out = run_mde("--cache-dir", str(cache), "window", "NIFTY", "-n", "2", "-f", "json", env=SAMPLE_ENV)
    assert out.returncode == 0 and json.loads(out.stdout)["count"] == 2
    bad = run_mde("--cache-dir", str(cache), "window", "NIFTY", "-t", "2h", env=SAMPLE_ENV)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown timeframe") and "Traceback" not in bad.stderr


def test_a_multi_tf_entry_applies_to_every_name_of_its_instrument(tmp_path: Path) -> None:
    from mde.config import load
    from mde.engine import MarketDataEngine

    conf = tmp_path / "m.toml"
    conf.write_text('[refresh]\ntimeframes = ["5m"]\n[refresh.multi_tf]\n"NSE:NIFTY BANK" = ["1m"]\n')
    eng = MarketDataEngine(load(conf, cache_dir=tmp_path / "c", source="sample", environ={}))
    plan = eng.refresh_plan(["BANKNIFTY", "NIFTY", "bad/symbol"])
    assert plan == [("BANKNIFTY", "1m"), ("NIFTY", "5m"), ("bad/symbol", "5m")]
