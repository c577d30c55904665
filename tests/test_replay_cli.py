"""`mde replay` end to end, through the real entry point, as a user or a script runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import run_mde
from mde.config import load
from mde.engine import MarketDataEngine


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("replay-cache")
    eng = MarketDataEngine(load(cache_dir=folder, source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-01-01", "2024-03-31")
    return folder


def mde(cache: Path, *args: str):  # noqa: ANN201
    return run_mde(*args, env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"})


BASE = ("replay", "--strategy", "sma_cross", "--symbol", "NIFTY", "--from", "2024-01-01", "--to", "2024-03-31")


def test_replay_prints_metrics_costs_basis_and_fill_model(cache: Path) -> None:
    res = mde(cache, *BASE, "--segment", "futures")
    assert res.returncode == 0, res.stderr
    for text in (
        "net P&L",
        "Sharpe",
        "max drawdown",
        "buy and hold",
        "zerodha: futures",
        "sessions/year",
        "OPEN of candle t+1",
    ):
        assert text in res.stdout


def test_replay_json_trades_and_report_agree(cache: Path, tmp_path: Path) -> None:
    trades, report = tmp_path / "trades.csv", tmp_path / "report.html"
    res = mde(
        cache, *BASE, "--costs", "none", "--param", "fast=5", "--trades", str(trades), "--report", str(report), "--json"
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # stdout is the JSON object and nothing else
    assert summary["params"] == {"fast": 5, "slow": 30, "qty": 0, "lots": 1}
    assert summary["costs"]["model"] == "none"
    assert "OPEN of candle t+1" in summary["fill_model"]
    fp = summary["data"][0]
    assert fp["symbol"] == "NIFTY" and fp["rows"] > 4000 and len(fp["sha256"]) == 64
    assert summary["mde_version"]
    with trades.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:10] == [
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
    ]
    assert len(rows) - 1 == summary["metrics"]["trades"] > 0
    assert rows[1][3].endswith("+05:30")
    assert sum(float(r[9]) for r in rows[1:]) == pytest.approx(summary["metrics"]["net_pnl"], abs=0.05)
    html = report.read_text()
    assert html.count("<svg") >= 3 and fp["sha256"] in html


def test_same_cache_same_result_and_a_changed_cache_changes_the_fingerprint(cache: Path, tmp_path: Path) -> None:
    first = json.loads(mde(cache, *BASE, "--costs", "none", "--json").stdout)
    again = json.loads(mde(cache, *BASE, "--costs", "none", "--json").stdout)
    assert first["metrics"] == again["metrics"] and first["data"] == again["data"]


def test_index_without_a_segment_is_a_clear_error(cache: Path) -> None:
    res = mde(cache, *BASE)
    assert res.returncode == 2
    assert "index" in res.stderr and "--segment futures" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--param", "speed=3"), "has no parameter speed"),
        (("--param", "fast=x"), "is not int"),
        (("--param", "fast=40"), "must be smaller"),
        (("--timeframe", "7m"), "unknown timeframe"),
        (("--square-off", "25:99"), "not a time of day HH:MM"),
    ],
)
def test_bad_input_exits_2_with_one_line(cache: Path, extra: tuple[str, ...], message: str) -> None:
    res = mde(cache, *BASE, "--costs", "none", *extra)
    assert res.returncode == 2, res.stdout
    assert message in res.stderr and res.stderr.count("\n") == 1


def test_uncached_range_names_the_fetch_and_allow_gaps_runs_anyway(cache: Path) -> None:
    args = (
        "replay",
        "--strategy",
        "sma_cross",
        "--symbol",
        "NIFTY",
        "--from",
        "2024-03-01",
        "--to",
        "2024-04-30",
        "--costs",
        "none",
    )
    res = mde(cache, *args)
    assert res.returncode == 2
    assert "mde fetch NIFTY --timeframe 5m --from 2024-04-01 --to 2024-04-30" in res.stderr
    res = mde(cache, *args, "--allow-gaps")
    assert res.returncode == 0 and "skipped" in res.stdout


def test_sweep_runs_every_combination_sorted_by_the_chosen_metric(cache: Path) -> None:
    res = mde(
        cache,
        *BASE,
        "--costs",
        "none",
        "-p",
        "fast=5,10",
        "-p",
        "slow=20,30",
        "--sort",
        "sharpe",
        "--json",
        "--workers",
        "2",
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert sorted((r["params"]["fast"], r["params"]["slow"]) for r in rows) == [(5, 20), (5, 30), (10, 20), (10, 30)]
    sharpes = [r["metrics"]["sharpe"] for r in rows]
    assert sharpes == sorted(sharpes, reverse=True)
    single = json.loads(mde(cache, *BASE, "--costs", "none", "-p", "fast=10", "-p", "slow=20", "--json").stdout)
    assert (
        next(r for r in rows if r["params"] == {"fast": 10, "slow": 20, "qty": 0, "lots": 1})["metrics"]
        == single["metrics"]
    )


def test_unwritable_trades_path_is_a_one_line_error(cache: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = mde(cache, *BASE, "--costs", "none", "--trades", str(blocker / "t.csv"))
    assert res.returncode == 2 and "cannot write" in res.stderr and "Traceback" not in res.stderr


def test_strategies_lists_builtins_and_a_user_file_with_parameters(cache: Path, tmp_path: Path) -> None:
    res = mde(cache, "strategies")
    assert res.returncode == 0
    for text in ("sma_cross", "fast: int = 10", "orb", "range_minutes: int = 15", "(intraday)"):
        assert text in res.stdout
    mine = tmp_path / "mine.py"
    mine.write_text('from mde import Strategy\nclass Mine(Strategy):\n    """Does little."""\n    lookback: int = 7\n')
    items = json.loads(mde(cache, "strategies", f"{mine}:Mine", "--format", "json").stdout)
    assert items == [
        {
            "strategy": f"{mine}:Mine",
            "summary": "Does little.",
            "intraday": False,
            "params": {"lookback": {"type": "int", "default": 7}},
        }
    ]
    res = mde(cache, "strategies", "nope")
    assert res.returncode == 2 and "unknown strategy" in res.stderr
