"""A live paper session on Kite: the real clock, one batched LTP request per tick, fills at
the next last traded price after a decision.

It is `engine.PaperEngine` on a `clocks.WallClock` with `fills.PriceFills` over Kite's
`/quote/ltp`. Each tick: the kill switch; the cache update of every series whose candle
closed since the last tick (a historical request only then, through the Kite source's shared
rate limiter); the new candles through the strategies (decisions, risk checks), each
journaled with its progress mark; the intraday square-off; one LTP request for the whole
universe; the pending orders filled at those prices, journaled before they are shown; the
day's loss limit on the marks. Paper mode has no order-placing client: the only Kite calls
are historical candles, LTP and the instruments list.

A restart with the same session name walks the journal: each journaled candle goes through
the strategies again (restoring their state and re-creating the same orders), and each
journaled LTP fill is booked again by its order id, since prices cannot be asked again.
Candles that closed while the session was down are processed at the first tick after it.
"""

from __future__ import annotations

import time as time_mod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..config import Settings
from .book import SessionResult
from .clocks import wall_clock as _wall_clock
from .engine import PROGRESS_EVERY_S, RETRY_STALE_S, PaperEngine
from .journal import Log
from .risk import RiskLimits

Clock = Callable[[], datetime]
__all__ = ["RETRY_STALE_S", "run_live_session", "wall_clock"]


def wall_clock(settings: Settings) -> Clock:
    """The session clock: now in IST; with MDE_NOW set, a clock that starts there and runs."""
    return _wall_clock(settings.now)


def run_live_session(
    settings: Settings,
    strategy: str,
    symbols: Sequence[str],
    timeframe: str | Mapping[str, str] | None,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tick: float = 1.0,
    until: str | None = None,
    costs: str = "zerodha",
    segment: str | None = None,
    cash: float = 1_000_000.0,
    slippage_ticks: int = 0,
    risk: RiskLimits | None = None,
    log: Log | None = None,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    engine: Any = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time_mod.sleep,
    progress_every: float = PROGRESS_EVERY_S,
) -> SessionResult:
    """Paper-trade today's session live (resumable under the same `name`): `PaperEngine.live(...).run()`."""
    return PaperEngine.live(
        settings,
        strategy,
        symbols,
        timeframe,
        tick=tick,
        until=until,
        engine=engine,
        clock=clock,
        sleep=sleep,
        name=name,
        params=params,
        costs=costs,
        segment=segment,
        cash=cash,
        slippage_ticks=slippage_ticks,
        risk=risk,
        log=log,
        on_tick=on_tick,
        progress_every=progress_every,
    ).run()
