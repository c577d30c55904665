"""Paper sessions say what they are doing: a progress line without a terminal, and a P&L that
is labelled the same way everywhere (gross_pnl, charges, net_pnl) in `--status`, its JSON and
the API. Also the HTML report's labels and durations."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import run_mde
from mde.config import Settings, load
from mde.engine import MarketDataEngine
from mde.paper.session import run_sample_session, session_status

DAY = "2024-06-14"
PARAMS = {"fast": 3, "slow": 8}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("paper-small") / "cache"
    MarketDataEngine(load(cache_dir=folder, source="sample", environ={})).download(
        "NIFTY", "5m", "2024-05-01", "2024-06-30"
    )
    return folder


def settings_for(cache: Path) -> Settings:
    return load(cache_dir=cache, source="sample", environ={})


def env_for(cache: Path) -> dict[str, str]:
    return {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"}


PROGRESS = re.compile(
    r"^2024-06-14 (\d\d:\d\d:\d\d) progress: (?:(\d+) h )?(\d+) min played, (\d+) candles, (\d+) fills, "
    r"equity ([\d,.]+), P&L ([+-][\d,.]+) \(after ([\d,.]+) charges\)$"
)


def num(text: str) -> float:
    return float(text.replace(",", ""))


def test_progress_lines_tell_the_session_is_alive_and_agree_with_the_live_panel(cache: Path) -> None:
    lines: list[str] = []
    snaps: list[dict] = []
    result = run_sample_session(
        settings_for(cache),
        "sma_cross",
        ["NIFTY"],
        "5m",
        DAY,
        name="progress-1",
        params=PARAMS,
        segment="futures",
        log=lines.append,
        on_tick=snaps.append,
        progress_every=0,
    )
    assert lines[0].startswith(f"session progress-1: playing {DAY} 5m NIFTY as fast as possible")
    progress = [m for line in lines if (m := PROGRESS.match(line))]
    assert len(progress) == len(snaps) == result.candles == 75  # one per tick here (every 0 s)
    for m, snap in zip(progress, snaps, strict=True):
        assert m.group(1) == f"{snap['clock']:%H:%M:%S}"
        played = int(m.group(2) or 0) * 60 + int(m.group(3))
        assert played == (snap["clock"] - snap["clock"].replace(hour=9, minute=15, second=0)) // timedelta(minutes=1)
        assert num(m.group(6)) == round(snap["equity"], 2)
        assert num(m.group(7)) == round(snap["equity"] - 1_000_000.0, 2)
        assert num(m.group(8)) == round(snap["charges"], 2)
    first, last = progress[0], progress[-1]
    assert (first.group(4), last.group(4)) == ("1", "75")
    assert int(last.group(5)) == len([line for line in lines if " fill " in line]) > 0
    assert last.group(1) == "15:30:00" and (last.group(2), last.group(3)) == ("6", "15")


def test_without_a_terminal_the_cli_says_at_once_that_the_session_runs(cache: Path) -> None:
    done = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        DAY,
        "--segment",
        "futures",
        "-p",
        "fast=3",
        "-p",
        "slow=8",
        "--session",
        "cli-progress",
        env=env_for(cache),
        cwd=cache.parent,
    )
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert first == (f"session cli-progress: playing {DAY} 5m NIFTY as fast as possible; a progress line every 60 s")


def test_status_json_table_and_api_label_gross_charges_and_net(cache: Path) -> None:
    run = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "sample",
        "--date",
        DAY,
        "--segment",
        "futures",
        "-p",
        "fast=3",
        "-p",
        "slow=8",
        "--session",
        "pnl-1",
        "--json",
        env=env_for(cache),
        cwd=cache.parent,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)["metrics"]
    done = run_mde("paper", "--status", "--session", "pnl-1", "--json", env=env_for(cache), cwd=cache.parent)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)[0]
    assert status["status"] == "finished" and status["positions"] == {}
    # the run's own summary, whose net P&L the CLI prints at the end
    assert status["net_pnl"] == pytest.approx(summary["net_pnl"], abs=0.011)
    assert status["gross_pnl"] == pytest.approx(summary["gross_pnl"], abs=0.011)
    assert status["charges"] == pytest.approx(summary["charges"], abs=0.011)
    assert status["net_pnl"] == round(status["gross_pnl"] - status["charges"], 2) and status["charges"] > 0
    assert "pnl" not in status  # no unlabelled number
    assert all(re.fullmatch(r"2024-06-14T\d\d:\d\d:00\+05:30", f["ts"]) for f in status["recent_fills"])
    assert len(status["recent_fills"]) == min(5, status["fills"])

    table = run_mde("paper", "--status", "--session", "pnl-1", env=env_for(cache), cwd=cache.parent)
    assert table.returncode == 0, table.stderr
    flat = " ".join(table.stdout.split())
    for head in ("gross P&L", "charges", "net P&L"):
        assert head in flat
    assert f"{status['gross_pnl']:,.2f}" in flat and f"{status['net_pnl']:,.2f}" in flat

    from fastapi.testclient import TestClient

    from mde.api import create_app

    with TestClient(create_app(settings_for(cache)), base_url="http://127.0.0.1") as client:
        one = client.get("/api/paper/sessions/pnl-1").json()
    assert {k: one[k] for k in ("gross_pnl", "charges", "net_pnl", "recent_fills", "fills")} == {
        k: status[k] for k in ("gross_pnl", "charges", "net_pnl", "recent_fills", "fills")
    }


def test_a_stopped_session_is_marked_at_its_own_clock_not_at_the_end_of_the_sample(cache: Path) -> None:
    """Open positions of a sample session are marked at the last candle it processed (June),
    not at the sample clock's 'now' (December): the numbers equal what the live panel showed."""
    seen: list[dict] = []

    def stop_with_a_position_open(snap: dict) -> None:
        seen.append(snap)
        if snap["symbols"][0]["position"] and snap["charges"] > 0:
            raise KeyboardInterrupt

    st = settings_for(cache)
    result = run_sample_session(
        st,
        "sma_cross",
        ["NIFTY"],
        "5m",
        DAY,
        name="stopped-1",
        params=PARAMS,
        segment="futures",
        on_tick=stop_with_a_position_open,
    )
    assert result.status == "interrupted"
    snap = seen[-1]
    (status,) = session_status(st, "stopped-1")
    assert status["status"] == "stopped" and status["positions"] == {"NIFTY": snap["symbols"][0]["position"]}
    assert status["marks"] == {"NIFTY": snap["symbols"][0]["last_close"]}
    assert status["charges"] == round(snap["charges"], 2)
    assert status["gross_pnl"] == round(snap["equity"] - 1_000_000.0 + snap["charges"], 2)
    assert status["net_pnl"] == round(status["gross_pnl"] - status["charges"], 2)
