"""`mde sweep` on the bundled sample: the grid's wiring, rows equal to single replays, walk-forward
without look-ahead, PBO/DSR, the Parquet and JSON outputs, and bad input in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from conftest import run_mde
from mde.config import load
from mde.engine import MarketDataEngine
from mde.grid import parse_grid
from mde.replay import run_replay
from mde.sweep import run_sweep


def _engine(folder: Path) -> MarketDataEngine:
    return MarketDataEngine(load(cache_dir=folder, source="sample", environ={}))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIFTY and BANKNIFTY 5m, 2024 Q1 and Q2."""
    folder = tmp_path_factory.mktemp("sweep-cache")
    eng = _engine(folder)
    for sym in ("NIFTY", "BANKNIFTY"):
        eng.download(sym, "5m", "2024-01-01", "2024-06-28")
    return folder


@pytest.fixture(scope="module")
def short_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIFTY 5m up to 2024-02-29 only: nothing after the first walk-forward test window."""
    folder = tmp_path_factory.mktemp("sweep-short")
    _engine(folder).download("NIFTY", "5m", "2024-01-01", "2024-02-29")
    return folder


def mde(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_mde(*args, env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"})


RUN: dict[str, Any] = dict(costs="none", segment=None)


def test_rows_equal_single_replays_and_refused_combinations_are_skipped(cache: Path) -> None:
    eng = _engine(cache)
    res = run_sweep(
        eng,
        "sma_cross",
        ["NIFTY", "BANKNIFTY"],
        "5m",
        "2024-01-01",
        "2024-03-28",
        ["fast=5,10", "slow=10:20:10"],
        workers=1,
        **RUN,
    )
    # fast=10 slow=10 is refused by sma_cross (fast must be smaller): skipped and counted, not run
    assert res.grid_size == 4
    assert [s["params"]["fast"] for s in res.skipped] == [10] and "smaller than slow" in res.skipped[0]["reason"]
    assert res.combinations == [{"fast": 5, "slow": 10}, {"fast": 5, "slow": 20}, {"fast": 10, "slow": 20}]
    assert len(res.rows) == 6 and not res.failed_rows()
    for row in res.rows:
        single = run_replay(
            eng,
            "sma_cross",
            [row["symbol"]],
            "5m",
            "2024-01-01",
            "2024-03-28",
            params={k: row["params"][k] for k in ("fast", "slow")},
            **RUN,
        )
        assert row["metrics"] == single.metrics  # exactly: the same replay
        assert row["data"] == single.fingerprint
        assert row["rejections"] == single.rejections_by_reason()
        assert row["rejections_total"] == len(single.rejections)
    sharpes = [r["metrics"]["sharpe"] for r in res.rows]
    assert sharpes == sorted(sharpes, reverse=True)  # best first by the default --sort sharpe


def test_a_process_pool_gives_the_same_rows(cache: Path) -> None:
    eng = _engine(cache)
    args = (eng, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-02-29", ["fast=3:9:3", "slow=20,40"])
    local = run_sweep(*args, workers=1, **RUN)
    pool = run_sweep(*args, workers=2, **RUN)
    assert [(r["params"], r["metrics"], r["returns"]) for r in pool.rows] == [
        (r["params"], r["metrics"], r["returns"]) for r in local.rows
    ]


def test_samples_are_the_grids_seeded_sample(cache: Path) -> None:
    eng = _engine(cache)
    pairs = ["fast=2:20:2", "slow=30:60:10"]
    res = run_sweep(
        eng, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-01-31", pairs, samples=5, seed=7, workers=1, **RUN
    )
    expected = parse_grid(pairs).sample(5, 7)
    assert res.grid_size == 40 and res.samples == 5
    assert res.combinations == expected and not res.skipped
    assert sorted((r["params"]["fast"], r["params"]["slow"]) for r in res.rows) == sorted(
        (c["fast"], c["slow"]) for c in expected
    )
    other = run_sweep(
        eng, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-01-31", pairs, samples=5, seed=8, workers=1, **RUN
    )
    assert other.combinations == parse_grid(pairs).sample(5, 8) != expected


def test_pbo_and_dsr_of_the_best_combination_are_probabilities(cache: Path) -> None:
    res = run_sweep(
        _engine(cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-01-01",
        "2024-06-28",
        ["fast=5:20:5", "slow=30,60"],
        workers=1,
        **RUN,
    )
    st = res.stats["NIFTY"]
    assert 0.0 <= st["pbo"]["value"] <= 1.0 and st["pbo"]["combinations"] == 8
    assert 0.0 <= st["dsr"]["value"] <= 1.0 and st["dsr"]["trials"] == 8
    assert st["best"] == {k: res.rows[0]["params"][k] for k in ("fast", "slow")}
    assert st["pbo"]["reading"].startswith("PBO ") and st["dsr"]["reading"].startswith("DSR ")
    # the same sessions for every combination, 0 on a session without a position
    days = {tuple(r["days"]) for r in res.rows}
    assert len(days) == 1 and len(next(iter(days))) == st["dsr"]["sessions"]


def test_walk_forward_test_windows_do_not_see_later_candles(cache: Path, short_cache: Path) -> None:
    """Fold 0 (train January, test February) on a cache holding candles up to June and on one
    that ends with February: the same train and test rows, the same choice, the same
    out-of-sample result; so nothing after a test window reaches it (nor its choice)."""
    pairs = ["fast=5,10,20", "slow=30,60"]
    wide = run_sweep(
        _engine(cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-01-01",
        "2024-03-28",
        pairs,
        walk="train=1M,test=1M",
        workers=1,
        **RUN,
    )
    short = run_sweep(
        _engine(short_cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-01-01",
        "2024-02-29",
        pairs,
        walk="train=1M,test=1M",
        workers=1,
        **RUN,
    )
    assert len(wide.folds) == 2 and len(short.folds) == 1 and wide.folds[0] == short.folds[0]

    def fold0(res: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (r["window"], r["index"], r["metrics"]["net_pnl"], json.dumps(r["metrics"]), r["returns"])
            for r in res.rows
            if r["fold"] == 0
        )

    assert fold0(wide) == fold0(short)
    assert wide.chosen[0] == short.chosen[0]
    # the stitched curve starts with fold 0's chosen test row
    chosen = wide.chosen[0]["params"]
    test_row = next(r for r in wide.rows if r["fold"] == 0 and r["window"] == "test" and r["params"] == chosen)
    n = len(test_row["returns"])
    assert wide.oos["NIFTY"]["curve"]["days"][:n] == test_row["days"]
    assert wide.oos["NIFTY"]["sessions"] == sum(
        len(r["returns"])
        for c in wide.chosen
        for r in wide.rows
        if r["fold"] == c["fold"] and r["window"] == "test" and r["params"] == c["params"]
    )
    # and the test row equals a plain replay of the February window with the chosen parameters
    single = run_replay(
        _engine(short_cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-02-01",
        "2024-02-29",
        params={k: chosen[k] for k in ("fast", "slow")},
        **RUN,
    )
    assert test_row["metrics"] == single.metrics


def test_cli_json_out_parquet_and_table(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows" / "sweep.parquet"
    res = mde(
        cache,
        "sweep",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-04-30",
        "-p",
        "fast=5,10",
        "-p",
        "slow=10,30",
        "--walk-forward",
        "train=2M,test=1M",
        "--costs",
        "none",
        "--workers",
        "2",
        "--json",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # one object, nothing else on stdout
    assert doc["grid"] == {
        "combinations": 4,
        "samples": None,
        "seed": 0,
        "run": 3,
        "skipped": 1,
        "skipped_combinations": doc["grid"]["skipped_combinations"],
    }
    assert doc["sort"] == "sharpe" and doc["failed"] == 0
    assert len(doc["rows"]) == 3 * 2 * 2  # combinations x folds x (train, test)
    row = doc["rows"][0]
    assert {"params", "symbol", "fold", "window", "metrics", "rejections", "data"} <= set(row)
    assert "returns" not in row and len(row["data"][0]["sha256"]) == 64
    st = doc["statistics"]["NIFTY"]
    assert 0 <= st["pbo"]["value"] <= 1 and 0 <= st["dsr"]["value"] <= 1
    assert doc["how_to_read"]["pbo"].startswith("PBO") and doc["how_to_read"]["dsr"].startswith("DSR")
    wf = doc["walk_forward"]
    assert len(wf["folds"]) == 2 and len(wf["chosen"]) == 2
    assert set(wf["out_of_sample"]["NIFTY"]) >= {"sessions", "net_pnl", "sharpe", "max_drawdown_pct", "trades"}
    frame = pl.read_parquet(out)
    assert frame.height == 12
    assert {
        "param_fast",
        "param_slow",
        "symbol",
        "fold",
        "window",
        "sharpe",
        "net_pnl",
        "trades",
        "rejections",
        "data_sha256",
    } <= set(frame.columns)
    by_key = {
        (r["params"]["fast"], r["params"]["slow"], r["fold"], r["window"]): r["metrics"]["net_pnl"] for r in doc["rows"]
    }
    for rec in frame.iter_rows(named=True):
        assert by_key[(rec["param_fast"], rec["param_slow"], rec["fold"], rec["window"])] == rec["net_pnl"]

    table = mde(
        cache,
        "sweep",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-02-29",
        "-p",
        "fast=5,10",
        "-p",
        "slow=10,30",
        "--costs",
        "none",
        "--workers",
        "1",
        "--top",
        "2",
    )
    assert table.returncode == 0, table.stderr
    for text in ("3 combinations run, 1 skipped", "PBO", "DSR", "how to read"):
        assert text in table.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-p", "fast=5:50"], "range"),
        (["-p", "fast=5", "-p", "fast=10"], "given twice"),
        (["-p", "fast=5,5"], "twice"),
        (["-p", "fast=abc"], "fast"),
        (["-p", "speed=1,2"], "no parameter speed"),
        (["-p", "fast=40,50", "-p", "slow=10"], "refuses all 2"),
        (["-p", "fast=5,10", "--sort", "bogus"], "cannot sort by"),
        (["-p", "fast=5,10", "--samples", "0"], "--samples"),
        (["-p", "fast=5,10", "--walk-forward", "train=6X"], "--walk-forward"),
        (["-p", "fast=5,10", "--walk-forward", "train=6M,test=1M"], "too short"),
        (["-p", "fast=5,10", "--top", "0"], "--top"),
        (["-p", "fast=5,10", "--workers", "0"], "--workers"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Any, args: list[str], says: str) -> None:
    res = cli("sweep", "--strategy", "sma_cross", "-s", "NIFTY", "--from", "2024-01-01", "--to", "2024-02-29", *args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], res.output
    assert "Traceback" not in res.output


def test_replay_sweeps_keep_working_and_refuse_repeats(cache: Path) -> None:
    base = (
        "replay",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
        "--costs",
        "none",
        "--workers",
        "1",
        "--json",
    )
    res = mde(cache, *base, "-p", "fast=5:10:5", "-p", "slow=20")
    assert res.returncode == 0, res.stderr
    assert [r["params"]["fast"] for r in json.loads(res.stdout)] in ([5, 10], [10, 5])
    twice = mde(cache, *base, "-p", "fast=5", "-p", "fast=10")
    assert twice.returncode == 2 and twice.stderr.strip().startswith("error: --param fast is given twice")


def test_report_is_self_contained_with_heatmap_distribution_curves_and_statistics(cache: Path, tmp_path: Path) -> None:
    res = run_sweep(
        _engine(cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-01-01",
        "2024-04-30",
        ["fast=5,10,20", "slow=10,30,60"],
        walk="train=2M,test=1M",
        workers=1,
        **RUN,
    )
    path = tmp_path / "sweep.html"
    res.write_report(path)
    html = path.read_text()
    for section in ('id="statistics"', 'id="heatmap"', 'id="distribution"', 'id="equity"', 'id="walk-forward"'):
        assert section in html
    assert 'class="heat"' in html and html.count("<svg") == 2 and html.count("<polyline") == 6  # stitched + top 5
    assert "PBO " in html and "DSR " in html and "How to read" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert f"{res.stats['NIFTY']['pbo']['value']:.3f}" in html


def test_a_symbol_without_candles_fails_the_sweep_with_the_replays_advice(cache: Path) -> None:
    res = mde(
        cache,
        "sweep",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "BANKNIFTY",
        "-t",
        "15m",
        "--from",
        "2024-08-01",
        "--to",
        "2024-08-30",
        "-p",
        "fast=5,10",
        "--workers",
        "1",
    )
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 400), st.floats(1e3, 1e7)), min_size=1, max_size=60))
def test_session_returns_chain_back_to_each_sessions_last_equity(points: list[tuple[int, int, float]]) -> None:
    """Per-session returns chained from the cash give each session's last equity (PBO, DSR and
    the stitched curve read them), and a session without a change is exactly 0."""
    from datetime import datetime, timedelta

    from mde.clock import IST
    from mde.sweep import session_returns

    base = datetime(2024, 1, 1, 9, 15, tzinfo=IST)
    stamps = sorted({(d, m): v for d, m, v in points}.items())
    frame = pl.DataFrame(
        {"ts": [base + timedelta(days=d, minutes=m) for (d, m), _ in stamps], "equity": [v for _, v in stamps]}
    )
    cash = 1_000_000.0
    days, rets = session_returns(frame, cash)
    last = {}
    for (d, _), v in stamps:
        last[(base + timedelta(days=d)).date().isoformat()] = v
    assert days == sorted(last)
    value = cash
    for day, r in zip(days, rets, strict=True):
        before = value
        value *= 1.0 + r
        assert value == pytest.approx(last[day], rel=1e-12)
        if last[day] == before:
            assert r == 0.0
        value = last[day]
