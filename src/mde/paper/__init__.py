"""Paper trading: a strategy traded on live candles with simulated fills, journaled so that a
crash loses nothing. It shares replay's strategies, broker, costs and summary.

- `run_session(settings, strategy, symbols, ...)`: what `mde paper` runs (live on Kite with
  `--source kite`, else a bundled day as if live); returns a `SessionResult` (`.net_pnl`,
  `.summary`: the same summary, trades and report as `mde replay`).
- `PaperEngine`: one session loop (`loop_once`) with its environment plugged in: a `Clock`
  (`SampleClock`, `WallClock`; issue 17 adds a tick-driven one) and a `FillPolicy`
  (`CandleFills`: next open; `PriceFills`: next last traded price).
- `session_status`, `request_halt` (the kill switch), `symbol_timeframes`: what `--status`,
  `--halt` and the timeframe rules use; `TradeState`: the SQLite journal; `RiskEngine`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "CandleFills",
    "Clock",
    "FillPolicy",
    "PaperEngine",
    "PriceFills",
    "RiskEngine",
    "RiskLimits",
    "SampleClock",
    "SessionResult",
    "TradeState",
    "WallClock",
    "limits_from",
    "request_halt",
    "run_session",
    "session_status",
    "symbol_timeframes",
]

# Imported on first use, so that `mde.paper.state` (the journal, read by `--status` and the
# HTTP API) does not load the engine, polars and the strategies.
_WHERE = {
    **{n: "clocks" for n in ("Clock", "SampleClock", "WallClock")},
    **{n: "engine" for n in ("PaperEngine", "run_session")},
    "SessionResult": "book",
    **{n: "fills" for n in ("CandleFills", "FillPolicy", "PriceFills")},
    **{n: "risk" for n in ("RiskEngine", "RiskLimits")},
    **{n: "rules" for n in ("limits_from", "symbol_timeframes")},
    **{n: "session" for n in ("request_halt", "session_status")},
    "TradeState": "state",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .book import SessionResult
    from .clocks import Clock, SampleClock, WallClock
    from .engine import PaperEngine, run_session
    from .fills import CandleFills, FillPolicy, PriceFills
    from .risk import RiskEngine, RiskLimits
    from .rules import limits_from, symbol_timeframes
    from .session import request_halt, session_status
    from .state import TradeState
