"""RiskEngine: limits, states and what a paper session does with them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import run_mde
from mde.config import load
from mde.engine import MarketDataEngine
from mde.errors import ConfigError
from mde.paper.risk import ACTIVE, HALTED, REDUCING, RiskEngine, RiskLimits
from mde.paper.rules import limits_from
from mde.paper.session import run_sample_session
from mde.paper.state import TradeState, session_path

MIN = 60_000_000


def test_position_quantity_and_notional_limits_refuse_growth_but_allow_exits() -> None:
    risk = RiskEngine(RiskLimits(max_position_qty=2, max_position_notional=50_000.0))
    assert risk.check(0, 1, 2, 100.0, 0) is None
    assert "exceed the limit of 2" in (risk.check(2, 1, 1, 100.0, 1) or "")
    assert risk.check(2, -1, 2, 100.0, 2) is None  # an exit always fits
    assert "notional" in (risk.check(0, 1, 1, 60_000.0, 3) or "")
    assert "exceed" in (risk.check(1, -1, 4, 100.0, 4) or "")  # a reversal past the limit is growth


def test_orders_per_minute_are_counted_over_a_sliding_minute() -> None:
    risk = RiskEngine(RiskLimits(max_orders_per_minute=2))
    assert risk.check(0, 1, 1, 1.0, 0) is None and risk.check(1, -1, 1, 1.0, 10 * 1_000_000) is None
    assert "orders in a minute" in (risk.check(0, 1, 1, 1.0, 30 * 1_000_000) or "")
    assert risk.check(0, 1, 1, 1.0, MIN + 1) is None  # the first one has left the window


def test_states_reducing_allows_only_exits_and_halted_is_final() -> None:
    risk = RiskEngine(RiskLimits(max_loss_per_day=1000.0))
    assert risk.state == ACTIVE and not risk.on_day_pnl(-999.0)
    risk.set_state(REDUCING, "manual")
    assert "only exits" in (risk.check(0, 1, 1, 1.0, 0) or "") and risk.check(3, -1, 1, 1.0, 0) is None
    assert risk.on_day_pnl(-1000.0) and risk.state == HALTED
    assert "HALTED" in (risk.check(3, -1, 1, 1.0, 0) or "")
    assert not risk.set_state(ACTIVE, "try to resume") and risk.state == HALTED


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("risk-cache")
    MarketDataEngine(load(cache_dir=folder, source="sample", environ={})).download(
        "NIFTY", "5m", "2024-05-01", "2024-06-30"
    )
    return folder


def test_session_rejections_are_journaled_with_their_reason(cache: Path) -> None:
    st = load(cache_dir=cache, source="sample", environ={})
    res = run_sample_session(
        st,
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-14",
        name="capped",
        params={"fast": 3, "slow": 8, "lots": 2},
        segment="futures",
        risk=RiskLimits(max_position_qty=1),
    )
    assert res.trades.height == 0
    with TradeState(session_path(cache / "_paper", "capped")) as state:
        rejects = state.events("reject")
        assert rejects and all("exceed the limit of 1" in e.payload["reason"] for e in rejects)
        assert state.events("fill") == []


def test_max_loss_per_day_halts_flattens_and_stops_new_entries(cache: Path) -> None:
    st = load(cache_dir=cache, source="sample", environ={})
    # 2024-06-10: the first trade already loses more than Rs 5,000 (75 NIFTY futures)
    free = run_sample_session(
        st,
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-10",
        name="free",
        params={"fast": 3, "slow": 8, "qty": 75},
        segment="futures",
    )
    assert free.trades.height >= 3
    halted = run_sample_session(
        st,
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-10",
        name="halted",
        params={"fast": 3, "slow": 8, "qty": 75},
        segment="futures",
        risk=RiskLimits(max_loss_per_day=3000.0),
    )
    with TradeState(session_path(cache / "_paper", "halted")) as state:
        risk_events = state.events("risk")
        assert [e.payload["state"] for e in risk_events] == ["HALTED"]
        halted_at = risk_events[0].ts_us
        later_entries = [
            e for e in state.events("fill") if e.ts_us > halted_at + 5 * MIN and e.payload["reason"] == "signal"
        ]
        assert later_entries == []  # nothing new after the halt (the flatten fills at the next open)
    assert halted.trades.height == 1 < free.trades.height
    assert halted.trades["exit_reason"].to_list() == ["risk halt"]


def test_risk_limits_come_from_mde_toml_and_flags_override(tmp_path: Path, cache: Path) -> None:
    toml = tmp_path / "mde.toml"
    toml.write_text(
        f'[cache]\ndir = "{cache}"\n[source]\nkind = "sample"\n[risk]\nmax_position_qty = 5\nmax_loss_per_day = 2000\n'
    )
    st = load(toml, environ={})
    assert limits_from(st) == RiskLimits(max_loss_per_day=2000.0, max_position_qty=5)
    assert limits_from(st, max_position_qty=1).max_position_qty == 1
    toml.write_text('[risk]\nmax_position_qty = "many"\n')
    with pytest.raises(ConfigError, match="max_position_qty"):
        load(toml, environ={})
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
        "flagged",
        "-p",
        "lots=2",
        "--max-qty",
        "1",
        env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"},
    )
    assert res.returncode == 0 and "0 trades" in res.stdout and "exceed the limit of 1" in res.stderr
    status = json.loads(
        run_mde(
            "paper",
            "--status",
            "--session",
            "flagged",
            "--json",
            env={"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"},
        ).stdout
    )
    assert status[0]["fills"] == 0


def test_kill_switch_from_another_process_flattens_and_stops_the_session(cache: Path) -> None:
    """`mde paper --halt` (a real second process) while the session holds a position. The session runs
    in this process at full speed and asks for the halt from its own tick once it holds a position, so
    the halt lands at a known point, not after a race between a paced session and a poll loop."""
    env = {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample"}
    st = load(cache_dir=cache, source="sample", environ={})
    halts: list[subprocess.CompletedProcess[str]] = []

    def on_tick(snap: dict[str, Any]) -> None:
        if not halts and any(row["position"] for row in snap["symbols"]):
            halts.append(run_mde("paper", "--halt", "--session", "killswitch", env=env))

    said: list[str] = []
    result = run_sample_session(
        st,
        "sma_cross",
        ["NIFTY"],
        "5m",
        "2024-06-10",
        name="killswitch",
        params={"fast": 3, "slow": 8},
        segment="futures",
        until="12:00",
        log=said.append,
        on_tick=on_tick,
    )
    (halt,) = halts
    assert halt.returncode == 0 and "halt requested" in halt.stdout, halt.stderr
    assert result.status == "halted"
    assert any("HALTED by the kill switch" in line for line in said)
    path = session_path(cache / "_paper", "killswitch")
    with TradeState(path) as state:
        assert state.meta()["status"] == "halted"
        (halt_event,) = [e for e in state.events("risk") if e.payload["reason"] == "kill switch"]
        fills = state.events("fill")
        assert len(fills) % 2 == 0  # flat
        assert fills[-1].payload["reason"] == "kill switch"
        assert all(f.payload["reason"] != "signal" for f in fills if f.ts_us > halt_event.ts_us)
        from datetime import datetime

        from mde.clock import IST
        from mde.strategy import as_us

        last = max(v for k, v in state.progress().items() if k != "_end")
        assert last < as_us(datetime(2024, 6, 10, 12, 0, tzinfo=IST))  # it stopped before its --until
    again = run_mde("paper", "--halt", "--session", "killswitch", env=env)
    assert again.returncode == 2 and "already halted" in again.stderr
