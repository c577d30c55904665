"""A paper session on the sample source: a bundled real day played as if it were live.

The simulated clock visits each candle close of the day. At each tick the cache is brought
up to that instant (the sample source serves only candles closed by then), the new candles
go through the same `StrategyRunner` and `SimBroker` as `mde replay`, and every candle's
fills are journaled with its progress mark in one commit (TradeState). A restart with the
same session name re-runs the journaled candles without journaling them again (the sample
is deterministic, and the re-run's fills are checked against the journal), then goes on:
nothing is lost, nothing is processed twice.

Not yet here (issue 6): the live Kite clock and LTP fills, the RiskEngine, the dashboard.
"""

from __future__ import annotations

import time as time_mod
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ..broker import Fill
from ..calendar import IST, parse_date
from ..config import Settings
from ..errors import CacheError, InputError, MdeError
from ..strategy import SeriesData, StrategyRunner, as_us, merge_events
from ..timeframes import parse
from .risk import HALTED, RiskEngine, RiskLimits
from .state import TradeState, session_path

Log = Callable[[str], None]
KILL_SWITCH = "kill switch"


@dataclass
class SessionResult:
    name: str
    trades: pl.DataFrame
    candles: int  # processed in this run (re-runs of a resume included)
    resumed_from: int  # candles already journaled when this run started
    cash: float
    summary: Any  # replay.ReplayResult: the same summary, trades file and report as `mde replay`
    status: str  # finished | halted | interrupted


def limits_from(settings: Settings, **flags: float | int | None) -> RiskLimits:
    """`[risk]` in mde.toml, overridden by the flags that were given."""
    merged = {**settings.risk, **{k: v for k, v in flags.items() if v is not None}}
    return RiskLimits(
        max_loss_per_day=merged.get("max_loss_per_day"),
        max_position_qty=int(merged["max_position_qty"]) if merged.get("max_position_qty") else None,
        max_position_notional=merged.get("max_position_notional"),
        max_orders_per_minute=int(merged["max_orders_per_minute"]) if merged.get("max_orders_per_minute") else None,
    )


def sessions_dir(settings: Settings) -> Path:
    return settings.cache_dir / "_paper"


def _engine_at(settings: Settings, now: datetime) -> Any:
    from ..engine import MarketDataEngine

    return MarketDataEngine(settings.with_overrides(now=now, source="sample"))


def run_sample_session(
    settings: Settings,
    strategy: str,
    symbols: Sequence[str],
    timeframe: str,
    day: date | str,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    speed: float = 0.0,
    until: str | None = None,
    costs: str = "zerodha",
    segment: str | None = None,
    cash: float = 1_000_000.0,
    slippage_ticks: int = 0,
    risk: RiskLimits | None = None,
    log: Log | None = None,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
) -> SessionResult:
    """Play `day` of the bundled sample as a live session named `name` (resumable)."""
    from ..replay import build_broker, build_strategy, summarize

    tf = parse(timeframe)
    the_day = parse_date(day, "--date")
    names = [s.strip().upper() for s in symbols]
    if not names:
        raise InputError("no symbol to trade; pass --symbols NIFTY ...")
    if speed < 0:
        raise InputError("--speed must be 0 (as fast as possible) or more")
    name = name or f"{strategy.replace(':', '_').replace('/', '_').replace('.', '_')[-40:]}-{the_day}"
    say = log or (lambda _m: None)
    midnight = datetime.combine(the_day, datetime.min.time(), IST)
    end_of_day = midnight + timedelta(days=1) - timedelta(microseconds=1)
    if until is not None:
        try:
            hh, mm = (int(x) for x in until.split(":"))
            end_of_day = midnight + timedelta(hours=hh, minutes=mm)
        except ValueError:
            raise InputError(f"--until {until!r} is not HH:MM") from None

    engine = _engine_at(settings, end_of_day)
    schedule = sorted({us for sym in names for us in _day_closes(engine, sym, tf, midnight, end_of_day)})
    if not schedule:
        raise InputError(f"the sample has no {tf} candles of {', '.join(names)} on {the_day}; pick a trading day of 2024")

    with TradeState(session_path(sessions_dir(settings), name)) as state:
        state.own()
        meta = {"strategy": strategy, "params": repr(sorted((params or {}).items())), "symbols": ",".join(names),
                "risk": (risk if risk is not None else limits_from(settings)).describe(),
                "timeframe": tf.name, "day": the_day.isoformat(), "cash": repr(float(cash)), "costs": costs,
                "segment": segment or "", "slippage": str(slippage_ticks)}
        known = state.meta()
        if "strategy" in known:
            changed = [k for k, v in meta.items() if known.get(k) != v]
            if changed:
                raise InputError(f"session {name} was started with other {', '.join(changed)}; use another --session name")
            if known.get("status") in ("finished", "halted"):
                raise InputError(f"session {name} has {known['status']}; use another --session name")
        else:
            state.set_meta({**meta, "status": "running"})

        done = state.progress()
        journaled = [e.payload for e in state.events("fill")]
        resumed_from = len(done)
        buffer: list[Fill] = []
        broker, models, ticks = build_broker(engine, names, costs=costs, segment=segment, cash=cash,
                                    slippage_ticks=slippage_ticks, on_fill=buffer.append)
        strat = build_strategy(strategy, params)
        runner = StrategyRunner([strat], engine, symbols=names, timeframe=tf, broker=broker, as_of=end_of_day)
        limits = risk if risk is not None else limits_from(settings)
        guard = RiskEngine(limits)

        def check(sid: str, sym: str, side: int, qty: int, now_us: int) -> str | None:
            pos = broker.position(sid, sym)
            data = runner.series(sym)
            k = data.visible(now_us)
            return guard.check(pos.qty if pos else 0, side, qty, data.close[k - 1] if k else 0.0, now_us)

        runner.risk_check = check
        runner.start(as_us(midnight))
        processed = 0
        cursor = {f"{sym}:{tf}": as_us(midnight) for sym in names}  # last candle processed in this run
        last_tick: float | None = None
        # The kill switch: a halt applied before (journaled) is re-applied at the same tick on a resume.
        applied = [e.ts_us for e in state.events("risk") if e.payload.get("reason") == KILL_SWITCH]
        halt_at = applied[0] if applied else None
        halting = False
        interrupted = False
        try:
            for close_us in schedule:
                if speed > 0 and last_tick is not None:
                    time_mod.sleep((close_us - last_tick) / 1e6 / speed)
                last_tick = close_us
                if not halting and (close_us == halt_at or (halt_at is None and state.meta().get("halt_requested"))):
                    halting = True
                    guard.set_state(HALTED, KILL_SWITCH)
                    runner.now_us = close_us
                    runner.flatten_all(KILL_SWITCH)
                    if halt_at is None:
                        state.record("risk", close_us, {"state": HALTED, "reason": KILL_SWITCH})
                    say(f"{datetime.fromtimestamp(close_us / 1e6, IST):%H:%M} HALTED by the kill switch: flattening, then stopping")
                elif halting and not broker.net:
                    break  # flat after the kill switch: the session ends here
                now = datetime.fromtimestamp(close_us / 1e6, IST)
                engine.pin_clock(now)
                datas, starts, ends = [], [], []
                for sym in names:
                    try:
                        engine.update_cache(sym, tf)  # the tick's cache update, as live
                    except MdeError as exc:  # never fatal: the tick goes on with the data it has
                        state.record("stale", close_us, {"error": str(exc)}, sym)
                        say(f"{now:%H:%M} {sym}: cache update failed ({exc}); going on with the cached data")
                    data = SeriesData(sym, tf, engine.history(sym, tf, as_of=now))
                    runner._series[(sym, tf.name)] = data
                    first = max(data.visible(cursor[f"{sym}:{tf}"]), _first_of_day(data, midnight))
                    datas.append(data)
                    starts.append(first)
                    ends.append(len(data))
                for data, lo, hi in merge_events(datas, starts, ends):
                    for i in range(lo, hi):
                        buffer.clear()
                        rejected_before = len(broker.rejected)
                        runner.process_span(data, i, i + 1)
                        risk_events = [("reject", data.close_us[i], {"order": o.id, "side": o.side, "qty": o.qty, "reason": why}, o.symbol)
                                       for o, why in broker.rejected[rejected_before:]]
                        if guard.on_day_pnl(runner.equity() - cash):
                            runner.flatten_all("risk halt")
                            risk_events.append(("risk", data.close_us[i], {"state": guard.state, "reason": guard.reason}, None))
                        processed += 1
                        series_key = f"{data.symbol}:{tf}"
                        cursor[series_key] = data.close_us[i]
                        if data.close_us[i] <= done.get(series_key, -1):
                            continue  # already journaled before the restart
                        events = [("fill", f.ts_us, _fill_payload(f), f.symbol) for f in buffer] + risk_events
                        state.processed(series_key, data.close_us[i], events)
                        for f in buffer:
                            say(_fill_line(f))
                        for kind, _, payload, sym in risk_events:
                            say(f"{kind} {sym or ''} {payload.get('reason', '')} {payload.get('state', '')}".replace("  ", " "))
                if on_tick is not None:
                    on_tick(snapshot(name, now, runner, guard, datas, state_rejects=broker.rejected))
        except KeyboardInterrupt:  # Ctrl-C: stop here; the journal has every finished candle, so it resumes
            interrupted = True
            say("interrupted: the session stops here and resumes from this point with the same --session")
        # every fill journaled before the restart must have come back the same in the re-run
        n = min(len(journaled), len(broker.fills))
        if [_fill_payload(f) for f in broker.fills[:n]] != journaled[:n]:
            raise CacheError(f"session {name}: the cache no longer gives the journaled fills; start a new --session")
        if not interrupted:
            buffer.clear()
            runner.finish(KILL_SWITCH if halting else "end of session")
            state.processed("_end", runner.now_us, [("fill", f.ts_us, _fill_payload(f), f.symbol) for f in buffer])
            state.set_meta({"status": "halted" if halting else "finished"})
        series = [runner.series(sym) for sym in names]
        summary = summarize(
            engine, strat, runner, runner.equity_us, runner.equity_values, runner.exposed_count, processed, models, ticks,
            series, [_first_of_day(d, midnight) for d in series], [len(d) for d in series], the_day, the_day, cash,
            segment, slippage_ticks, None, {}, [f"stopped by Ctrl-C at {datetime.fromtimestamp(runner.now_us / 1e6, IST):%H:%M}; "
                                                 "positions are still open and the session resumes"] if interrupted else [],
        )
        return SessionResult(name, broker.trades_frame(), processed, resumed_from, broker.cash, summary,
                             "interrupted" if interrupted else "halted" if halting else "finished")


def _day_closes(engine: Any, symbol: str, tf: Any, midnight: datetime, end: datetime) -> list[int]:
    hist = engine.history(symbol, tf, as_of=end)
    day = hist.filter(pl.col("ts") >= midnight)
    return day["closes_at"].dt.epoch("us").to_list()


def _first_of_day(data: SeriesData, midnight: datetime) -> int:
    return bisect_left(data.ts_us, as_us(midnight))


def _fill_payload(f: Fill) -> dict[str, Any]:
    return {"order": f.order_id, "side": f.side, "qty": f.qty, "price": f.price, "ts_us": f.ts_us, "reason": f.reason}


def _fill_line(f: Fill) -> str:
    when = datetime.fromtimestamp(f.ts_us / 1e6, IST).strftime("%Y-%m-%d %H:%M")
    return f"{when} fill {'BUY' if f.side > 0 else 'SELL'} {f.qty} {f.symbol} @ {f.price:.2f} ({f.reason})"


def session_status(settings: Settings, name: str | None = None) -> list[dict[str, Any]]:
    """What the journal says of one session (or of all): parameters, state, progress, position, fills.

    Read-only: it opens the journal beside a running session (WAL lets both work at once).
    """
    folder = sessions_dir(settings)
    if name is not None:
        paths = [session_path(folder, name)]
        if not paths[0].is_file():
            raise InputError(f"no paper session named {name!r} in {folder}")
    else:
        paths = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    out = []
    for path in paths:
        with TradeState(path) as state:
            meta = state.meta()
            fills = [e.payload | {"symbol": e.symbol} for e in state.events("fill")]
            progress = state.progress()
        net: dict[str, int] = {}
        for f in fills:
            net[f["symbol"]] = net.get(f["symbol"], 0) + f["side"] * f["qty"]
        out.append({
            "session": path.stem,
            "status": meta.get("status", "unknown"),
            "strategy": meta.get("strategy"),
            "symbols": meta.get("symbols", "").split(","),
            "timeframe": meta.get("timeframe"),
            "day": meta.get("day"),
            "fills": len(fills),
            "positions": {s: q for s, q in net.items() if q},
            "last_candle": {k: datetime.fromtimestamp(v / 1e6, IST).isoformat() for k, v in progress.items() if k != "_end"},
            "recent_fills": fills[-5:],
        })
    return out


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


def snapshot(name: str, now: datetime, runner: StrategyRunner, guard: RiskEngine, series: Sequence[SeriesData],
             state_rejects: Sequence[Any] = ()) -> dict[str, Any]:
    """What the dashboard shows after a tick: clock, per symbol the last candle and its age,
    position and P&L, charges, the risk state and the latest fills and rejections."""
    broker = runner.broker
    assert broker is not None
    now_us = as_us(now)
    rows = []
    for data in series:
        k = data.visible(now_us)
        last_close = data.close[k - 1] if k else None
        qty = broker.net.get(data.symbol, 0)
        avg = 0.0
        for (sid, sym), pos in broker.positions.items():
            if sym == data.symbol and pos.qty:
                avg = pos.avg_price
        rows.append({
            "symbol": data.symbol,
            "last_ts": datetime.fromtimestamp(data.ts_us[k - 1] / 1e6, IST) if k else None,
            "last_close": last_close,
            "age_s": (now_us - data.close_us[k - 1]) / 1e6 if k else None,
            "position": qty,
            "avg_price": avg,
            "unrealised": (last_close - avg) * qty if qty and last_close is not None else 0.0,
        })
    realised = sum(t.gross for t in broker.trades)
    return {
        "session": name,
        "clock": now,
        "risk": guard.state,
        "risk_reason": guard.reason,
        "symbols": rows,
        "realised": realised,
        "charges": broker.charges_paid,
        "cash": broker.cash,
        "equity": runner.equity(),
        "fills": [_fill_line(f) for f in broker.fills[-5:]],
        "rejections": [f"order {o.id} {o.symbol}: {why}" for o, why in list(state_rejects)[-5:]],
    }
