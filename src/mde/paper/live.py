"""A live paper session on Kite: the real clock, one batched LTP request per tick, fills at
the next last traded price after a decision.

Each tick: the kill switch; the cache update of every series whose candle closed since the
last tick (a historical request only then, through the Kite source's shared rate limiter);
the new candles through the strategies (decisions, risk checks), each journaled with its
progress mark; the intraday square-off; one LTP request for the whole universe; the pending
orders filled at those prices, journaled before they are shown; the day's loss limit on
the marks. Paper mode has no order-placing client: the only Kite calls are historical
candles, LTP and the instruments list.

A restart with the same session name walks the journal: each journaled candle goes through
the strategies again (restoring their state and re-creating the same orders), and each
journaled LTP fill is booked again by its order id, since prices cannot be asked again.
Candles that closed while the session was down are processed at the first tick after it.
"""

from __future__ import annotations

import time as time_mod
from concurrent.futures import ThreadPoolExecutor
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..clock import IST, as_us, from_ist_minutes, to_ist_minutes, us_to_datetime
from ..config import Settings
from ..errors import AuthError, CacheError, ConfigError, InputError, MdeError, StrategyError
from ..strategy import merge_events
from ..timeframes import parse
from .risk import HALTED, RiskLimits
from .session import (
    KILL_SWITCH, PROGRESS_EVERY_S, UPDATE_WORKERS, Book, Log, Progress, SessionResult, _end_at, _names, default_name, fill_line, fill_payload,
    journal_error, limits_from, reject_event, open_journal, session_path, sessions_dir, snapshot, update_caches,
)
from .state import TradeState

Clock = Callable[[], datetime]
RETRY_STALE_S = 5.0  # a failed cache update is tried again after this, not at every tick


def wall_clock(settings: Settings) -> Clock:
    """The session clock: now in IST; with MDE_NOW set, a clock that starts there and runs."""
    if settings.now is None:
        return lambda: datetime.now(IST)
    start, t0 = settings.now.astimezone(IST), time_mod.monotonic()
    return lambda: start + timedelta(seconds=time_mod.monotonic() - t0)


def run_live_session(
    settings: Settings,
    strategy: str,
    symbols: Sequence[str],
    timeframe: str,
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
    """Paper-trade today's session live (resumable under the same `name`)."""
    from ..engine import MarketDataEngine

    tf = parse(timeframe)
    names = _names(symbols)
    if tick <= 0:
        raise InputError("--tick must be more than 0 seconds")
    engine = engine or MarketDataEngine(settings)
    source = engine.source
    if not hasattr(source, "ltp"):
        raise InputError("a live paper session needs --source kite; to try one without an account, play a bundled day "
                         "with --source sample --date 2024-06-14")
    clock = clock or wall_clock(settings)
    say = log or (lambda _m: None)
    cal = engine.calendar
    now = clock()
    today = now.date()
    if not cal.is_trading_day(today):
        raise InputError(f"{today} is not an NSE trading day; play a bundled day with --source sample --date 2024-06-14")
    midnight = datetime.combine(today, datetime.min.time(), IST)
    end = _end_at(midnight, until, from_ist_minutes(to_ist_minutes(midnight) + cal.day_close(today)))
    if now >= end:
        raise InputError(f"today's session is over ({end:%H:%M} IST); start a live session during market hours")
    name = name or default_name(strategy, today)
    limits = risk if risk is not None else limits_from(settings)
    engine.pin_clock(now)
    keys = {sym: engine.resolve(sym).key for sym in names}  # LTP keys, e.g. NSE:NIFTY 50

    # strategy, parameters, symbols and costs are checked before a journal exists: a typo
    # must not leave a session behind that holds its name
    book = Book(engine, strategy, params, names, tf, costs=costs, segment=segment, cash=cash,
                slippage_ticks=slippage_ticks, limits=limits, as_of=now, fill_on_candles=False)
    with TradeState(session_path(sessions_dir(settings), name)) as state:
        open_journal(state, name, {
            "mode": "live", "strategy": strategy, "params": repr(sorted((params or {}).items())),
            "symbols": ",".join(names), "risk": limits.describe(), "timeframe": tf.name, "day": today.isoformat(),
            "cash": repr(float(cash)), "costs": costs, "segment": segment or "", "slippage": str(slippage_ticks)})
        meta = state.meta()
        if "started_us" not in meta:
            state.set_meta({"started_us": str(as_us(now))})
            meta["started_us"] = str(as_us(now))
        started_us = int(meta["started_us"])
        journal = state.events()
        resumed_from = sum(1 for e in journal if e.kind == "candle")
        runner, broker = book.runner, book.broker
        seen: dict[str, int] = {}
        retry_at: dict[str, int] = {}
        for sym in names:  # the cache up to now (a new series is back-filled), then the series in memory
            try:
                engine.update_cache(sym, tf)
            except (ConfigError, AuthError):
                raise  # no key or no valid token: nothing to go on with, a human must act
            except MdeError as exc:
                state.record("stale", as_us(now), {"error": str(exc)}, sym)
                say(f"{now:%H:%M:%S} {sym}: cache update failed ({exc}); going on with the cached data")
                retry_at[sym] = as_us(now) + int(RETRY_STALE_S * 1e6)
            book.load(sym, now, started_us)
            closed = cal.latest_close(now, tf)
            seen[sym] = as_us(closed) if closed is not None and sym not in retry_at else 0
        try:
            runner.start(started_us)
            for note in runner.notes:  # on_start's lines (it runs again on a resume: shown, not journaled)
                say(note.line())
            halting = _walk(book, journal, name)
        except StrategyError as exc:
            journal_error(state, runner, exc)
            raise
        marks: dict[str, float] = {}
        last_error: dict[str, str] = {}
        interrupted = False
        pool = ThreadPoolExecutor(UPDATE_WORKERS, thread_name_prefix="mde-update") if len(names) > 1 else None
        progress = Progress(say, book, started_us, progress_every)
        say(f"session {name}: live on {today} {tf} {', '.join(names)}, a tick every {tick:g} s until {end:%H:%M}; "
            f"a progress line every {progress_every:g} s")
        t0 = clock()
        k = 0
        try:
            while True:
                now = clock()
                if now >= end:
                    break
                now_us = as_us(now)
                engine.pin_clock(now)
                runner.as_of = now
                if not halting and state.meta().get("halt_requested"):
                    halting = True
                    book.halt(now_us)
                    state.record("risk", now_us, {"state": HALTED, "reason": KILL_SWITCH})
                    say(f"{now:%H:%M:%S} HALTED by the kill switch: flattening, then stopping")
                elif halting and not broker.net and not any(broker.pending.values()):
                    break  # flat after the kill switch: the session ends here
                _candles(book, state, now, seen, retry_at, last_error, say, pool, first=k == 0)
                if runner.square_off_due(now_us):
                    state.record("squareoff", now_us, {})
                    say(f"{now:%H:%M:%S} intraday square-off")
                _prices(book, state, source, keys, now_us, marks, last_error, say)
                progress.maybe(now_us)
                if on_tick is not None:
                    on_tick(snapshot(name, now, runner, book.guard, [book.series[s] for s in names],
                                     state_rejects=broker.rejected, marks=marks))
                k += 1
                sleep(max(0.0, (t0 + timedelta(seconds=k * tick) - clock()).total_seconds()))  # on the tick grid
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: the session stops here and resumes from this point with the same --session")
        except StrategyError as exc:  # the strategy raised: journaled, the session stops resumably
            journal_error(state, runner, exc)
            raise
        finally:
            if pool is not None:
                pool.shutdown()
        if not interrupted:
            runner.set_marks(marks)  # what is still open closes at its last traded price
            book.finish(state, halting, say, via="close")
        warnings = ["live fills: the next last traded price after each decision (plus slippage), not the next open"]
        if interrupted:
            warnings.append(f"stopped by Ctrl-C at {us_to_datetime(runner.now_us):%H:%M:%S}; "
                            "positions are still open and the session resumes")
        return book.result(name, resumed_from, "interrupted" if interrupted else "halted" if halting else "finished",
                           today, today, started_us, warnings)


def _walk(book: Book, journal: Sequence[Any], name: str) -> bool:
    """Bring a resumed session back to where its journal ends; True if it was halted by the kill switch."""
    runner, broker = book.runner, book.broker
    halting = False
    for e in journal:
        if e.kind == "candle":
            data = book.series.get(e.symbol)
            i = bisect_left(data.close_us, e.ts_us) if data is not None else -1
            if data is None or i >= len(data) or data.close_us[i] != e.ts_us:
                raise CacheError(f"session {name}: the cache no longer has the journaled {e.symbol} candle; start a new --session")
            book.step(data, i)
        elif e.kind == "fill" and e.payload.get("via") == "ltp":
            runner.now_us = max(runner.now_us, e.ts_us)
            try:
                broker.fill_order(e.payload["order"], e.symbol, e.payload["price"], e.ts_us)
            except KeyError:
                raise CacheError(f"session {name}: journaled order {e.payload['order']} did not come back on resume; "
                                 "start a new --session") from None
        elif e.kind == "reject" and e.payload.get("via") == "ltp":  # refused at an LTP fill: refuse it again
            order = next((o for o in broker.pending.get(e.symbol, ()) if o.id == e.payload["order"]), None)
            if order is not None:
                broker.reject(order, e.payload["reason"], e.payload.get("code", ""), e.ts_us)
        elif e.kind == "squareoff":
            runner.square_off_due(e.ts_us)
        elif e.kind == "risk" and e.payload.get("state") == HALTED:
            book.halt(e.ts_us, e.payload.get("reason", KILL_SWITCH))
            halting = halting or e.payload.get("reason") == KILL_SWITCH
    return halting


def _candles(book: Book, state: TradeState, now: datetime, seen: dict[str, int], retry_at: dict[str, int],
             last_error: dict[str, str], say: Log, pool: ThreadPoolExecutor | None, first: bool = False) -> None:
    """Update the cache of each series whose candle closed, and run the new candles, oldest close first.

    The first tick also runs what closed while a resumed session was down."""
    engine, tf = book.engine, book.tf
    now_us = as_us(now)
    closed = engine.calendar.latest_close(now, tf)
    closed_us = as_us(closed) if closed is not None else 0
    due = [sym for sym in book.names if closed_us > seen[sym] and now_us >= retry_at.get(sym, 0)]
    # nothing closed since the last update: no request
    failed, spans = update_caches(engine, due, tf, pool, then=lambda sym: book.catch_up(sym, now))
    for sym in due:
        exc = failed.get(sym)
        if exc is None:
            seen[sym] = closed_us
            retry_at.pop(sym, None)
            last_error.pop(sym, None)
            continue
        retry_at[sym] = now_us + int(RETRY_STALE_S * 1e6)  # never fatal: the tick goes on with the data it has
        if last_error.get(sym) != str(exc):
            last_error[sym] = str(exc)
            state.record("stale", now_us, {"error": str(exc)}, sym)
            say(f"{now:%H:%M:%S} {sym}: cache update failed ({exc}); going on with the cached data")
    if first:  # what closed while a resumed session was down
        spans += [book.catch_up(sym, now) for sym in book.names if sym not in due]
    spans = [s for s in spans if s[2] > s[1]]
    if not spans:
        return
    book.runner.forget_other_series()
    for data, lo, hi in merge_events(*zip(*spans)):
        for i in range(lo, hi):
            close_us = data.close_us[i]
            events = [("candle", close_us, {"ts_us": data.ts_us[i]}, data.symbol)] + book.step(data, i)
            state.processed(book.key(data.symbol), close_us, events)
            for kind, _, payload, sym in events[1:]:
                if kind == "order":
                    say(f"{now:%H:%M:%S} order {payload['order']} {'BUY' if payload['side'] > 0 else 'SELL'} "
                        f"{payload['qty']} {sym} ({payload['reason']})")
                elif kind == "fill":
                    say(fill_line(sym, payload))
                elif kind == "reject":
                    say(f"{now:%H:%M:%S} reject {sym} order {payload['order']}: {payload['reason']}")
                elif kind == "note":
                    say(payload["line"])


def _prices(book: Book, state: TradeState, source: Any, keys: Mapping[str, str], now_us: int,
            marks: dict[str, float], last_error: dict[str, str], say: Log) -> None:
    """One LTP request for the universe; fill what the prices trigger; check the day's loss."""
    broker = book.broker
    try:
        prices = source.ltp(list(keys.values()))
    except MdeError as exc:
        if last_error.get("_ltp") != str(exc):
            last_error["_ltp"] = str(exc)
            state.record("stale", now_us, {"error": str(exc)}, None)
            say(f"{us_to_datetime(now_us):%H:%M:%S} LTP request failed ({exc}); no fills this tick")
        return
    last_error.pop("_ltp", None)
    book.buffer.clear()
    rejected_before = len(broker.rejections)
    book.runner.now_us = max(book.runner.now_us, now_us)
    for sym, key in keys.items():
        price = prices.get(key)
        if price is None or price <= 0:
            continue
        marks[sym] = price
        if broker.pending.get(sym):
            broker.on_price(sym, now_us, price)
    events = [("fill", f.ts_us, fill_payload(f, "ltp"), f.symbol) for f in book.buffer]
    events += [reject_event(r, "ltp") for r in broker.rejections[rejected_before:]]  # refused at fill (buying power)
    equity = broker.cash + sum(q * (marks.get(s) or book.runner.mark(s)) for s, q in broker.net.items())
    events += book.risk_after(equity, now_us)
    state.journal(events)  # committed before anything is shown or acted on
    for kind, _, payload, sym in events:
        if kind == "fill":
            say(fill_line(sym, payload))
        elif kind == "reject":
            say(f"{us_to_datetime(now_us):%H:%M:%S} reject {sym} order {payload['order']}: {payload['reason']}")
        else:
            say(f"risk {payload['state']}: {payload['reason']}")


