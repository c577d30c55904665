"""What a paper session's journal says (`mde paper --status`, the HTTP API, the P&L) and the
kill switch (`mde paper --halt`), plus `run_sample_session`: a bundled day played as if
live, the same as `mde.paper.run_session(settings, ..., day=...)` with `--source sample`.

The session itself is `engine.PaperEngine` (one loop for a sample day and a live one, with
the clock and the fills plugged in); its rules (default name, each symbol's timeframe, risk
limits) are in `rules.py`. Both are re-exported here, their old home.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from ..clock import us_to_datetime
from ..config import Settings
from ..errors import CacheError, InputError, MdeError
from ..symbols import unsafe_name
from .book import (
    SessionResult,
)
from .engine import (
    PROGRESS_EVERY_S,
    PaperEngine,
)
from .journal import (
    Log,
)
from .risk import RiskLimits
from .rules import (
    meta_timeframes,
    sessions_dir,
)
from .state import TradeState, owner_alive, session_path


def session_status(
    settings: Settings, name: str | None = None, *, all_fills: bool = False, engine: Any = None
) -> list[dict[str, Any]]:
    """What the journal says of one session (or of all): parameters, state, progress, position,
    fills (`recent_fills` with `ts`), and its P&L (`session_pnl`: gross_pnl, charges, net_pnl).

    Read-only: it opens the journal beside a running session (WAL lets both work at once),
    and on a read-only cache. With `all_fills`, each entry also carries every fill
    (`all_fills`), for a P&L. A journal that cannot be read is listed with `status`
    "unreadable" and its one-line `error` (asked for by name, it is a CacheError).
    """
    from ..store import check_cache_root

    check_cache_root(settings.cache_dir)
    folder = sessions_dir(settings)
    if name is not None:
        paths = [session_path(folder, name)]
        if not paths[0].is_file():
            raise InputError(f"no paper session named {name!r} in {folder}")
    else:
        paths = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            with TradeState(path, readonly=True) as state:
                meta = state.meta()
                status = meta.get("status", "unknown")
                fills = [e.payload | {"symbol": e.symbol} for e in state.events("fill")]
                progress = state.progress()
                errors = state.events("error")
        except CacheError as exc:
            if name is not None:
                raise  # the one session asked for: its one line
            # one bad journal must not hide the others: listed with its error, named by the caller
            out.append(
                {
                    "session": unsafe_name(path.stem),
                    "status": "unreadable",
                    "error": exc.message,
                    "strategy": None,
                    "symbols": [],
                    "timeframe": None,
                    "day": None,
                    "fills": 0,
                    "positions": {},
                    "last_candle": {},
                    "recent_fills": [],
                    "gross_pnl": None,
                    "charges": None,
                    "net_pnl": None,
                    **({"all_fills": []} if all_fills else {}),
                }
            )
            continue
        net: dict[str, int] = {}
        for f in fills:
            net[f["symbol"]] = net.get(f["symbol"], 0) + f["side"] * f["qty"]
        if engine is None:
            from ..engine import MarketDataEngine

            engine = MarketDataEngine(settings)
        # a journal marked running (or killed before its first line: no status yet) that no
        # process owns has stopped; the same --session resumes it
        shown = status if status not in ("running", "unknown") or owner_alive(path) else "stopped"
        out.append(
            {
                "session": unsafe_name(path.stem),  # the file name is escaped (safe_name)
                "status": shown,
                # why a stopped session stopped, if its strategy raised (it resumes with the same --session)
                **({"error": errors[-1].payload.get("error")} if shown == "stopped" and errors else {}),
                "strategy": meta.get("strategy"),
                "symbols": meta.get("symbols", "").split(","),
                "timeframe": meta.get("timeframe"),
                "day": meta.get("day"),
                "fills": len(fills),
                "positions": {s: q for s, q in net.items() if q},
                "last_candle": {k: us_to_datetime(v).isoformat() for k, v in progress.items() if k != "_end"},
                **session_pnl(engine, meta, fills, progress),
                "recent_fills": [f | {"ts": us_to_datetime(f["ts_us"]).isoformat()} for f in fills[-5:]],
                **({"all_fills": fills} if all_fills else {}),
            }
        )
    return out


def session_pnl(
    engine: Any, meta: Mapping[str, str], fills: Sequence[Mapping[str, Any]], progress: Mapping[str, int]
) -> dict[str, Any]:
    """A journal's P&L, labelled: `gross_pnl` (the fills' cash flow plus open positions at
    `marks`), `charges` (of the closed round trips, by the session's own cost model, the same
    SimBroker booking as the run), `net_pnl` = gross_pnl - charges: what the run's summary calls
    net P&L once every position is closed.

    An open position is marked at the close of the last candle the session processed of its
    series (the session's own clock; a sample day is not marked at the sample's end of data),
    else at the latest close now. A number that cannot be known is None, never a guess.
    """
    from ..broker import Fill

    tfs = meta_timeframes(meta)
    cashflow, net = 0.0, dict[str, int]()
    for f in fills:
        cashflow -= f["side"] * f["qty"] * f["price"]
        net[f["symbol"]] = net.get(f["symbol"], 0) + f["side"] * f["qty"]
    marks: dict[str, float | None] = {}
    for symbol, qty in net.items():
        if not qty:
            continue
        tf = tfs.get(symbol) or (meta.get("timeframe") or "5m").split(",")[0]
        last_us = progress.get(f"{symbol}:{tf}")
        as_of = us_to_datetime(last_us) if last_us else None
        try:
            last = engine.get_window(symbol, tf, 1, as_of=as_of)
            marks[symbol] = float(last["close"][-1]) if last.height else None
        except MdeError:
            marks[symbol] = None
    known = {s: m for s, m in marks.items() if m is not None}
    gross = None if len(known) < len(marks) else cashflow + sum(net[s] * m for s, m in known.items())
    charges: float | None = 0.0
    if fills and meta.get("costs", "zerodha") != "none":
        try:
            from ..runs import build_broker

            symbols = list(dict.fromkeys(str(f["symbol"]) for f in fills))
            broker, _, _ = build_broker(
                engine,
                symbols,
                costs=meta.get("costs", "zerodha"),
                segment=meta.get("segment") or None,
                cash=0.0,
                slippage_ticks=0,
            )
            for f in fills:
                broker.apply(
                    Fill(
                        int(f["order"]),
                        "paper",
                        str(f["symbol"]),
                        int(f["side"]),
                        int(f["qty"]),
                        float(f["price"]),
                        int(f["ts_us"]),
                        str(f.get("reason", "")),
                    )
                )
            charges = broker.charges_paid
        except MdeError:
            charges = None  # no cost model for it (e.g. an index without a segment in an old journal)
    return {
        "marks": marks,
        "gross_pnl": None if gross is None else round(gross, 2),
        "charges": None if charges is None else round(charges, 2),
        "net_pnl": None if gross is None or charges is None else round(gross - charges, 2),
    }


def request_halt(settings: Settings, name: str) -> str:
    """The kill switch: the running session sees it at its next tick, flattens and stops.

    Works from another process while the session runs; a session that is not running is
    marked halted at once (it cannot be resumed).
    """
    path = session_path(sessions_dir(settings), name)
    if not path.is_file():
        raise InputError(f"no paper session named {name!r} in {sessions_dir(settings)}")
    with TradeState(path) as state:
        status = state.meta().get("status")
        if status in ("finished", "halted"):
            raise InputError(f"session {name} has already {status}")
        state.set_meta({"halt_requested": "1"})
        try:
            state.own()  # nobody runs it: nothing to flatten live, mark it halted now
        except MdeError:
            return f"session {name}: halt requested; it flattens and stops at its next tick"
        state.set_meta({"status": "halted"})
        return f"session {name} is not running; marked halted"


def run_sample_session(
    settings: Settings,
    strategy: str,
    symbols: Sequence[str],
    timeframe: str | Mapping[str, str] | None,
    day: date | str,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    speed: float = 0.0,
    tick: float | None = None,
    until: str | None = None,
    costs: str = "zerodha",
    segment: str | None = None,
    cash: float = 1_000_000.0,
    slippage_ticks: int = 0,
    risk: RiskLimits | None = None,
    log: Log | None = None,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    engine: Any = None,
    progress_every: float | None = None,
) -> SessionResult:
    """Play `day` of the bundled sample as a live session named `name` (resumable):
    `PaperEngine.sample(...).run()`.

    The simulated clock ticks at each candle close, or every `tick` seconds when given (as a
    live session does); `speed` is how much faster than real time it runs (0: no waiting).
    With `log`, a progress line goes to it at least every `progress_every` seconds of wall time.
    """
    return PaperEngine.sample(
        settings,
        strategy,
        symbols,
        day,
        timeframe,
        speed=speed,
        tick=tick,
        until=until,
        engine=engine,
        name=name,
        params=params,
        costs=costs,
        segment=segment,
        cash=cash,
        slippage_ticks=slippage_ticks,
        risk=risk,
        log=log,
        on_tick=on_tick,
        progress_every=PROGRESS_EVERY_S if progress_every is None else progress_every,
    ).run()
