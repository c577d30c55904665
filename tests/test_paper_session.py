"""Sample paper sessions: parity with replay, kill -9 and resume, one process per session."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import run_mde
from mde.config import Settings, load
from mde.engine import MarketDataEngine
from mde.errors import InputError
from mde.paper.session import run_sample_session, session_status
from mde.replay import run_replay

COLS = ["symbol", "side", "qty", "entry_ts", "entry_price", "exit_ts", "exit_price", "charges"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("paper-cache")
    eng = MarketDataEngine(load(cache_dir=folder, source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-01-01", "2024-06-30")
    return folder


def settings_for(cache: Path) -> Settings:
    return load(cache_dir=cache, source="sample", environ={})


@pytest.mark.parametrize("day", ["2024-06-14", "2024-01-20"])  # a regular day and a Saturday special session
def test_a_sample_session_makes_the_same_trades_as_replay_of_that_day(cache: Path, day: str) -> None:
    st = settings_for(cache)
    params = {"fast": 3, "slow": 8}
    paper = run_sample_session(
        st, "sma_cross", ["NIFTY"], "5m", day, name=f"parity-{day}", params=params, segment="futures"
    )
    replay = run_replay(MarketDataEngine(st), "sma_cross", ["NIFTY"], "5m", day, day, params=params, segment="futures")
    assert replay.trades.height >= 2
    assert paper.trades.select(COLS).equals(replay.trades.select(COLS))
    assert paper.candles == replay.events
    # the same summary as replay: metrics, equity curve, fill model
    for key in (
        "net_pnl",
        "gross_pnl",
        "charges",
        "trades",
        "max_drawdown",
        "sharpe",
        "exposure_pct",
        "buy_and_hold_pct",
    ):
        assert paper.summary.metrics[key] == replay.metrics[key], key
    assert paper.summary.equity.equals(replay.equity) and paper.summary.fill_model == replay.fill_model
    assert paper.status == "finished"


def test_a_sample_day_plays_in_full_when_the_cache_already_holds_later_candles(tmp_path: Path) -> None:
    """The README's order: `mde refresh` (late December cached), then a paper session on a June day."""
    folder = tmp_path / "cache"
    st = load(cache_dir=folder, source="sample", environ={})
    MarketDataEngine(st).refresh("NIFTY", "5m")
    params = {"fast": 3, "slow": 8}
    paper = run_sample_session(st, "sma_cross", ["NIFTY"], "5m", "2024-06-14", params=params, segment="futures")
    assert paper.candles == 75 and paper.status == "finished"
    replay = run_replay(
        MarketDataEngine(st), "sma_cross", ["NIFTY"], "5m", "2024-06-14", "2024-06-14", params=params, segment="futures"
    )
    assert paper.trades.select(COLS).equals(replay.trades.select(COLS)) and replay.trades.height >= 2


CHILD = """
import sys
from mde.config import load
from mde.paper.session import run_sample_session
st = load(cache_dir=sys.argv[1], source="sample", environ={})
print("go", flush=True)
run_sample_session(st, "sma_cross", ["NIFTY"], "5m", "2024-06-14", name=sys.argv[2], params={"fast": 3, "slow": 8},
                   segment="futures", speed=float(sys.argv[3]))
print("done", flush=True)
"""


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(cache: Path) -> None:
    st = settings_for(cache)
    whole = run_sample_session(
        st, "sma_cross", ["NIFTY"], "5m", "2024-06-14", name="whole", params={"fast": 3, "slow": 8}, segment="futures"
    )
    rng = random.Random(3)
    killed = 0
    for _ in range(3):
        # 75 candles of 5 minutes at 6000x: 3.75 s a day; a resume re-runs the journaled part at once
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(cache), "killed", "6000"], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.2, 1.0))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            killed += 1
            child.wait()
            # its journal says running, but no process runs it ("finished" only if the kill came just after
            # the end); a kill before the journal got its first line leaves none to list
            status = [s for s in session_status(st) if s["session"] == "killed"]  # by name, a missing one is an error
            assert [s["status"] for s in status] in ([], ["stopped"], ["finished"]), status
        child.wait()
    assert killed >= 2
    final = subprocess.run(
        [sys.executable, "-c", CHILD, str(cache), "killed", "0"], capture_output=True, text=True, timeout=120
    )
    assert final.returncode == 0, final.stderr  # a finished session re-makes its summary: 0 too
    from mde.paper.state import TradeState, session_path

    with TradeState(session_path(cache / "_paper", "killed")) as state:
        fills = [e.payload for e in state.events("fill")]
        assert state.meta()["status"] == "finished"
    with TradeState(session_path(cache / "_paper", "whole")) as state:
        assert [e.payload for e in state.events("fill")] == fills  # each fill journaled once, none lost
    assert len(fills) == 2 * whole.trades.height


def _journal_rows(path: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return (
            db.execute("SELECT * FROM events ORDER BY seq").fetchall()
            + db.execute("SELECT * FROM progress ORDER BY series").fetchall()
        )


def test_second_process_on_a_running_session_is_refused_and_finished_sessions_stay_finished(cache: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nfrom mde.paper.state import TradeState\ns=TradeState(sys.argv[1]); s.own(); print('owned', flush=True); time.sleep(60)",
            str(cache / "_paper" / "busy.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "owned"
        res = run_mde(
            "paper",
            "--strategy",
            "sma_cross",
            "-s",
            "NIFTY",
            "--date",
            "2024-06-14",
            "--segment",
            "futures",
            "--session",
            "busy",
            env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"},
        )
        assert res.returncode == 2 and "running in another process" in res.stderr
    finally:
        child.kill()
        child.wait()
    st = settings_for(cache)
    once = run_sample_session(st, "sma_cross", ["NIFTY"], "5m", "2024-06-13", name="once", segment="futures")
    journal = cache / "_paper" / "once.sqlite"
    before = _journal_rows(journal)
    # run again: the summary and trades come back from the journal, and nothing is journaled twice
    again = run_sample_session(st, "sma_cross", ["NIFTY"], "5m", "2024-06-13", name="once", segment="futures")
    assert again.status == "finished" and again.trades.equals(once.trades) and again.cash == once.cash
    assert any("re-made from its journal" in w for w in again.summary.warnings)
    assert _journal_rows(journal) == before
    with pytest.raises(InputError, match="other"):
        run_sample_session(st, "sma_cross", ["NIFTY"], "5m", "2024-06-14", name="once", segment="futures")


@pytest.mark.parametrize(
    "mistake", [["-p", "fast=abc"], ["--strategy", "nope"], ["-s", "NOPE"], ["--costs", "zerodha"]]
)
def test_a_mistake_in_the_arguments_leaves_no_session_behind(tmp_path: Path, mistake: list[str]) -> None:
    """A bad parameter, strategy or symbol, or an index without --segment: one line, and the
    session name stays free (no journal that a corrected run would have to resume)."""
    env = {"MDE_CACHE_DIR": str(tmp_path / "cache"), "MDE_SOURCE": "sample"}
    base = [
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        "2024-06-13",
        "--speed",
        "0",
        "--until",
        "10:00",
    ]
    bad = run_mde(*base, *mistake, *([] if mistake[0] == "--costs" else ["--segment", "futures"]), env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
    assert not list((tmp_path / "cache" / "_paper").glob("*.sqlite"))
    fixed = run_mde(*base, "--segment", "futures", env=env)  # the same default session name is still free
    assert fixed.returncode == 0, fixed.stderr


def test_a_sample_session_without_a_date_says_what_to_add(cache: Path) -> None:
    res = run_mde(
        "paper", "--strategy", "sma_cross", "-s", "NIFTY", env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"}
    )
    assert res.returncode == 2 and "add --date YYYY-MM-DD" in res.stderr and "--source kite" in res.stderr


def test_status_reports_the_journal_of_one_or_all_sessions(cache: Path) -> None:
    import json

    st = settings_for(cache)
    run_sample_session(
        st,
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-12",
        name="seen_by_status",
        params={"fast": 3, "slow": 8},
        segment="futures",
        until="12:00",
    )
    env = {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"}
    one = json.loads(run_mde("paper", "--status", "--session", "seen_by_status", "--json", env=env).stdout)
    assert one[0]["session"] == "seen_by_status"  # the name as given, not its escaped file name
    assert one[0]["status"] == "finished" and one[0]["day"] == "2024-06-12"
    assert one[0]["last_candle"] == {"NIFTY:5m": "2024-06-12T12:00:00+05:30"}  # --until stops the clock
    assert one[0]["fills"] % 2 == 0 and one[0]["positions"] == {}
    listing = run_mde("paper", "--status", env=env)
    assert listing.returncode == 0 and "seen_by_status" in listing.stdout
    missing = run_mde("paper", "--status", "--session", "nope", env=env)
    assert missing.returncode == 2 and "no paper session named 'nope'" in missing.stderr


def test_each_tick_gives_the_dashboard_a_snapshot_it_can_draw(cache: Path) -> None:
    from rich.console import Console

    from mde.render import paper_dashboard

    snaps: list[dict] = []
    run_sample_session(
        settings_for(cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-11",
        name="dash",
        params={"fast": 3, "slow": 8},
        segment="futures",
        on_tick=snaps.append,
    )
    assert len(snaps) == 75  # one per candle close of the day
    assert [s["clock"].strftime("%H:%M") for s in snaps[:2]] == ["09:20", "09:25"]
    holding = next(s for s in snaps if s["symbols"][0]["position"])
    row = holding["symbols"][0]
    assert row["avg_price"] > 0 and row["age_s"] == 0
    assert (holding["clock"] - row["last_ts"]).total_seconds() == 300  # the 5m candle that just closed
    console = Console(record=True, width=120)
    console.print(paper_dashboard(holding))
    text = console.export_text()
    assert "NIFTY" in text and "ACTIVE" in text and f"{row['position']:+d}" in text and "last fills" in text


def test_paper_slippage_flag_moves_fills_as_replay_slippage_does(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "trades.csv"
    res = run_mde(
        "--cache-dir",
        str(cache),
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        "2024-06-14",
        "-p",
        "fast=3",
        "-p",
        "slow=8",
        "--segment",
        "futures",
        "--slippage",
        "2",
        "--session",
        "slip",
        "--json",
        "--trades",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    replay = run_replay(
        MarketDataEngine(settings_for(cache)),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-14",
        "2024-06-14",
        params={"fast": 3, "slow": 8},
        segment="futures",
        slippage_ticks=2,
    )
    no_slip = run_replay(
        MarketDataEngine(settings_for(cache)),
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-14",
        "2024-06-14",
        params={"fast": 3, "slow": 8},
        segment="futures",
    )
    paper = pl.read_csv(out)
    assert paper["entry_price"].to_list() == replay.trades["entry_price"].to_list()
    # each entry 2 ticks (0.10) worse than without slippage
    assert [round(a - b, 2) for a, b in zip(paper["entry_price"], no_slip.trades["entry_price"], strict=True)] == [
        0.1
    ] * paper.height


def test_a_strategy_sees_that_a_series_it_reads_is_stale(cache: Path) -> None:
    """BANKNIFTY is not cached past 2024-06-13 here, so on 2024-06-14 a NIFTY strategy sees it stale."""
    from mde.strategy import Strategy

    seen: list[tuple[str, bool, bool]] = []

    class Watch(Strategy):
        def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
            seen.append((candle.symbol, ctx.stale("NIFTY"), ctx.stale("BANKNIFTY")))

    st = settings_for(cache)
    eng = MarketDataEngine(st)
    eng.download("BANKNIFTY", "5m", "2024-06-01", "2024-06-13")
    run_replay(eng, Watch, ["NIFTY", "BANKNIFTY"], "5m", "2024-06-13", "2024-06-14", allow_gaps=True, costs="none")
    assert ("NIFTY", False, False) in seen  # 2024-06-13: both have every candle
    assert ("NIFTY", False, True) in seen  # 2024-06-14: BANKNIFTY's candles never came
    assert all(s != "BANKNIFTY" or not b for s, _, b in seen)


def test_the_default_timeframe_comes_from_multi_tf_through_aliases(tmp_path: Path) -> None:
    from mde.paper.rules import default_timeframe

    conf = tmp_path / "mde.toml"
    conf.write_text(
        '[refresh]\ntimeframes = ["15m"]\n[refresh.multi_tf]\n"NSE:NIFTY 50" = ["1m", "5m"]\nINFY = ["5m"]\n'
        '[aliases]\nMYNIFTY = "NSE:NIFTY 50"\n'
    )
    st = load(conf, cache_dir=tmp_path / "c", environ={})
    assert default_timeframe(st, ["NIFTY"]) == "1m"  # the built-in alias finds the instrument's entry
    assert default_timeframe(st, ["mynifty"]) == "1m"  # so does a user alias
    assert default_timeframe(st, ["RELIANCE"]) == "15m"  # no entry: [refresh] timeframes[0]
    assert default_timeframe(st, ["NIFTY", "RELIANCE"]) == "1m"
    with pytest.raises(InputError, match="NIFTY 1m, INFY 5m.*pass --timeframe"):
        default_timeframe(st, ["NIFTY", "INFY"])
