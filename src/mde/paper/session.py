"""A paper session on the sample source: a bundled real day played as if it were live.

The simulated clock visits each candle close of the day. At each tick the cache is brought
up to that instant (the sample source serves only candles closed by then), the new candles
go through the same `StrategyRunner` and `SimBroker` as `mde replay`, and every candle's
fills are journaled with its progress mark in one commit (TradeState). A restart with the
same session name re-runs the journaled candles without journaling them again (the sample
is deterministic, and the re-run's fills are checked against the journal), then goes on:
nothing is lost, nothing is processed twice.

The live session (`paper/live.py`) shares everything here but its clock and its fills.
"""

from __future__ import annotations

import logging
import time as time_mod
from concurrent.futures import ThreadPoolExecutor
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ..broker import Fill, Rejection
from ..calendar import parse_date
from ..clock import IST, as_us, us_to_datetime
from ..config import Settings
from ..errors import CacheError, InputError, MdeError, StrategyError
from ..resample import with_close
from ..strategy import SeriesData, StrategyRunner, merge_events
from ..symbols import per_instrument, unsafe_name
from ..timeframes import Timeframe, parse
from .risk import HALTED, RiskEngine, RiskLimits
from .state import TradeState, owner_alive, session_path

log = logging.getLogger("mde.paper")

Log = Callable[[str], None]
KILL_SWITCH = "kill switch"
PROGRESS_EVERY_S = 60.0  # without a terminal: a progress line at least this often (wall time)


def _played(minutes: float) -> str:
    hours, mins = divmod(int(minutes), 60)
    return f"{hours} h {mins:02d} min" if hours else f"{mins} min"


class Progress:
    """Without a terminal, a session between fills would print nothing for minutes: a line at
    least every `every` seconds of wall time says it is alive, with the session clock, time
    played, candles, fills, equity and P&L (net of the charges so far)."""

    def __init__(self, say: Log, book: Book, started_us: int, every: float = PROGRESS_EVERY_S,
                 wall: Callable[[], float] = time_mod.monotonic) -> None:
        self.say, self.book, self.started_us, self.every, self.wall = say, book, started_us, every, wall
        self.last = wall()

    def line(self, now_us: int) -> str:
        book = self.book
        broker = book.broker
        equity = book.runner.equity()
        played = max(0, now_us - self.started_us) / 60e6
        return (f"{us_to_datetime(now_us):%Y-%m-%d %H:%M:%S} progress: {_played(played)} played, "
                f"{book.processed} candles, {len(broker.fills)} fills, equity {equity:,.2f}, "
                f"P&L {equity - book.cash:+,.2f} (after {broker.charges_paid:,.2f} charges)")

    def maybe(self, now_us: int) -> None:
        """The line, if the last one is `every` seconds old."""
        if self.wall() - self.last >= self.every:
            self.last = self.wall()
            self.say(self.line(now_us))

    def sleep(self, seconds: float, now_us: int) -> None:
        """Wait `seconds` of wall time (a sample session's pace), a progress line when one is due."""
        end = self.wall() + seconds
        while (left := end - self.wall()) > 0:
            time_mod.sleep(min(left, max(self.last + self.every - self.wall(), 0.05)))
            self.maybe(now_us)


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
    # RiskLimits refuses 0, negative and non-finite values (0 is not "unlimited": leave the flag out)
    return RiskLimits(
        max_loss_per_day=merged.get("max_loss_per_day"),
        max_position_qty=merged.get("max_position_qty"),
        max_position_notional=merged.get("max_position_notional"),
        max_orders_per_minute=merged.get("max_orders_per_minute"),
    )


def sessions_dir(settings: Settings) -> Path:
    return settings.cache_dir / "_paper"


def default_timeframe(settings: Settings, symbols: Sequence[str]) -> str:
    """The series a session trades when no --timeframe is given: the first timeframe of
    `[refresh.multi_tf]` for its symbols, else the first of `[refresh] timeframes`.

    Symbols and multi_tf keys are compared as instruments, so `NIFTY` finds a `"NSE:NIFTY 50"`
    entry (the seed's logical_alias). One session trades one timeframe: symbols that disagree
    need --timeframe.
    """
    multi_tf = settings.refresh.multi_tf
    firsts = {s: tfs[0] for s in symbols if (tfs := per_instrument(multi_tf, s, settings.aliases))}
    if len(set(firsts.values())) > 1:
        listed = ", ".join(f"{s} {tf}" for s, tf in firsts.items())
        raise InputError(f"[refresh.multi_tf] gives these symbols different timeframes ({listed}); "
                         "one session trades one timeframe: pass --timeframe")
    if firsts:
        return next(iter(firsts.values()))
    return settings.refresh.timeframes[0] if settings.refresh.timeframes else "5m"


def default_name(strategy: str, day: date) -> str:
    """`sma_cross-2024-06-14` for a built-in, `ClassName-2024-06-14` for path/to/file.py:ClassName."""
    from ..strategy import BUILTIN_STRATEGIES

    base = strategy if strategy in BUILTIN_STRATEGIES else strategy.rpartition(":")[2] or strategy
    return f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in base)[-40:]}-{day}"


def journal_error(state: TradeState, runner: StrategyRunner, exc: StrategyError) -> None:
    """A strategy raised: journal it (with the candle) and leave the session resumable. Its
    status stays `running`, which `--status` shows as `stopped` once the process is gone; the
    failed candle was not marked processed, so a rerun with the same --session tries it again."""
    candle = runner.candle
    payload: dict[str, Any] = {"error": exc.message}
    if candle is not None:
        payload["candle_ts_us"] = candle[2]
    state.record("error", runner.now_us, payload, candle[0] if candle is not None else None)


def _engine_at(settings: Settings, now: datetime) -> Any:
    from ..engine import MarketDataEngine

    return MarketDataEngine(settings.with_overrides(now=now, source="sample"))


def _end_at(midnight: datetime, until: str | None, default: datetime) -> datetime:
    if until is None:
        return default
    try:
        fields = until.split(":")
        if len(fields) not in (2, 3) or not all(f.isascii() and f.isdigit() and len(f) <= 2 for f in fields):
            raise ValueError
        parts = [int(x) for x in fields]
        if parts[0] > 23 or any(p > 59 for p in parts[1:]):
            raise ValueError
        return midnight + timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2] if len(parts) == 3 else 0)
    except ValueError:
        raise InputError(f"--until {until!r} is not a time of day HH:MM (or HH:MM:SS), 00:00 to 23:59") from None


def _names(symbols: Sequence[str]) -> list[str]:
    names = [s.strip().upper() for s in symbols]
    if not names:
        raise InputError("no symbol to trade; pass --symbols NIFTY ...")
    return names


def open_journal(state: TradeState, name: str, meta: Mapping[str, str], *, replayable: bool = False) -> str | None:
    """Take the session (one process at a time) and check that a resume runs what was started.

    Returns the status of a session that has already ended ("finished", "halted"), else None.
    A `replayable` session (a sample day: the same candles come back) may be run again to re-make
    its summary, trades and report from the journal; any other ended session is an error."""
    state.own()
    known = state.meta()
    if "strategy" in known:
        changed = [k for k, v in meta.items() if known.get(k) != v]
        if changed:
            raise InputError(f"session {name} was started with other {', '.join(changed)}; use another --session name")
        if known.get("status") in ("finished", "halted"):
            if replayable:
                return known["status"]
            raise InputError(f"session {name} has {known['status']}; use another --session name "
                             f"(its fills and P&L: mde paper --status --session {name} --json)")
    else:
        state.set_meta({**meta, "status": "running"})
    return None


UPDATE_WORKERS = 4


def update_caches(engine: Any, symbols: Sequence[str], tf: Timeframe, pool: ThreadPoolExecutor | None,
                  then: Callable[[str], Any] | None = None) -> tuple[dict[str, MdeError], list[Any]]:
    """Bring several series up to the engine's now at once, each series' errors kept apart,
    then call `then(symbol)` for each (reading the new candles) in the same worker.

    Each series has its own files and lock, so their Parquet writes, fsyncs, reads and (live)
    HTTP round trips overlap; on Kite the shared rate limiter still paces the requests.
    """
    def one(sym: str) -> tuple[MdeError | None, Any]:
        try:
            engine.update_cache(sym, tf)
            err = None
        except MdeError as exc:
            err = exc
        return err, then(sym) if then is not None else None

    results = list(pool.map(one, symbols)) if pool is not None and len(symbols) > 1 else [one(s) for s in symbols]
    return {sym: err for sym, (err, _) in zip(symbols, results) if err is not None}, [out for _, out in results]


class Book:
    """The trading side of a paper session, whatever drives its clock: the strategy through
    the same StrategyRunner and SimBroker as replay, the RiskEngine in front of every order,
    and the traded series in memory, extended as their candles close."""

    def __init__(
        self, engine: Any, strategy: str, params: Mapping[str, Any] | None, names: Sequence[str], tf: Timeframe, *,
        costs: str, segment: str | None, cash: float, slippage_ticks: int, limits: RiskLimits, as_of: datetime,
        fill_on_candles: bool,
    ) -> None:
        from ..replay import build_broker, build_strategy

        self.engine, self.names, self.tf, self.cash = engine, list(names), tf, cash
        self.segment, self.slippage_ticks = segment, slippage_ticks
        self.buffer: list[Fill] = []  # the fills of the step being processed
        self.broker, self.models, self.ticks = build_broker(engine, names, costs=costs, segment=segment, cash=cash,
                                                            slippage_ticks=slippage_ticks, on_fill=self.buffer.append)
        self.strat = build_strategy(strategy, params)
        self.runner = StrategyRunner([self.strat], engine, symbols=names, timeframe=tf, broker=self.broker, as_of=as_of)
        self.runner.fill_on_candles = fill_on_candles
        self.runner.on_note = lambda note: None  # kept in runner.notes; journaled and shown by step()
        self.guard = RiskEngine(limits)
        self.runner.risk_check = self._check
        self.series: dict[str, SeriesData] = {}
        self.cursor: dict[str, int] = {}  # symbol -> close of the last candle processed in this run
        self.processed = 0

    def _check(self, sid: str, sym: str, side: int, qty: int, now_us: int) -> str | None:
        pos = self.broker.position(sid, sym)
        data = self.series[sym]
        k = data.visible(now_us)
        return self.guard.check(pos.qty if pos else 0, side, qty, data.close[k - 1] if k else 0.0, now_us)

    def key(self, sym: str) -> str:
        return f"{sym}:{self.tf}"

    def load(self, sym: str, now: datetime, cursor_us: int) -> SeriesData:
        """Read a series as of `now` (warm-up history included); candles after `cursor_us` are new."""
        history = self._priced(sym, self.engine.history(sym, self.tf, as_of=now))
        data = SeriesData(sym, self.tf, history, self.engine.built_from(sym, self.tf))
        self.series[sym] = data
        self.runner.add_series(data)
        self.cursor[sym] = cursor_us
        return data

    def _priced(self, sym: str, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` without candles that have no valid price (a source's NaN/inf/0 candle, kept
        in the cache and counted): the strategy never sees one, fills never use one, as a
        missing candle; each left out is said once (a warning on stderr, not with -q)."""
        from ..replay import unpriced
        from ..validate import unpriced as rule

        bad = unpriced(frame)
        if not bad:
            return frame
        log.warning("%s %s: %s, left out (as a missing candle)", sym, self.tf, bad)
        return frame.filter(~rule())

    def catch_up(self, sym: str, now: datetime) -> tuple[SeriesData, int, int]:
        """Append the candles that closed by `now` since the series was read: only the newest
        partition is read (a full re-read only after a long gap). Returns the new span."""
        data = self.series[sym]
        if not len(data):
            data = self.load(sym, now, self.cursor[sym])
        else:
            last = data.ts_us[-1]
            n = 8
            while True:
                tail = self.engine.get_window(sym, self.tf, limit=n, as_of=now)
                fresh = tail.filter(pl.col("ts").dt.epoch("us") > last)
                if fresh.height < tail.height:
                    data.extend(with_close(self._priced(sym, fresh), self.tf, self.engine.calendar))
                    break
                if n >= 1000:  # more than 1000 candles behind: read the series again
                    data = self.load(sym, now, self.cursor[sym])
                    break
                n = min(n * 8, 1000)
        return data, data.visible(self.cursor[sym]), data.visible(as_us(now))

    def step(self, data: SeriesData, i: int) -> list[tuple[str, int, dict[str, Any], str | None]]:
        """Candle i through the strategies (decisions, risk checks, candle fills); its journal events."""
        broker = self.broker
        self.buffer.clear()
        rejected_before, first_id = len(broker.rejections), broker.next_order_id
        notes_before = len(self.runner.notes)
        self.runner.process_span(data, i, i + 1)
        self.processed += 1
        self.cursor[data.symbol] = data.close_us[i]
        at = data.close_us[i]
        events: list[tuple[str, int, dict[str, Any], str | None]] = [
            ("order", at, {"order": o.id, "side": o.side, "qty": o.qty, "kind": o.kind, "price": o.price,
                           "reason": o.reason}, o.symbol)
            for orders in broker.pending.values() for o in orders if o.id >= first_id
        ]
        events += [("fill", f.ts_us, fill_payload(f), f.symbol) for f in self.buffer]
        events += [reject_event(r) for r in broker.rejections[rejected_before:]]
        events += [("note", at, note_payload(n), n.symbol) for n in self.runner.notes[notes_before:] if n.kind == "log"]
        return events

    def risk_after(self, equity: float, ts_us: int) -> list[tuple[str, int, dict[str, Any], str | None]]:
        """The day's loss limit, checked on the latest marks: halt and flatten when reached."""
        if self.guard.on_day_pnl(equity - self.cash):
            self.runner.now_us = max(self.runner.now_us, ts_us)
            self.runner.flatten_all("risk halt")
            return [("risk", ts_us, {"state": self.guard.state, "reason": self.guard.reason}, None)]
        return []

    def finish(self, state: TradeState, halting: bool, say: Log, via: str | None = None) -> None:
        """The end of a session, whatever drives it: what is still open closes (the runner's
        marks), the strategy's on_stop runs, and the closing fills and log lines are journaled
        with the session's final status in one commit each. A strategy that raises is journaled."""
        runner = self.runner
        self.buffer.clear()
        notes_before = len(runner.notes)
        try:
            runner.finish(KILL_SWITCH if halting else "end of session")
        except StrategyError as exc:
            journal_error(state, runner, exc)
            raise
        notes = [("note", runner.now_us, note_payload(n), n.symbol) for n in runner.notes[notes_before:] if n.kind == "log"]
        for _, _, payload, _ in notes:
            say(payload["line"])
        state.processed("_end", runner.now_us, [("fill", f.ts_us, fill_payload(f, via), f.symbol) for f in self.buffer] + notes)
        state.set_meta({"status": "halted" if halting else "finished"})

    def halt(self, ts_us: int, reason: str = KILL_SWITCH) -> None:
        self.guard.set_state(HALTED, reason)
        self.runner.now_us = max(self.runner.now_us, ts_us)
        self.runner.flatten_all(reason)

    def result(self, name: str, resumed_from: int, status: str, lo: date, hi: date, since_us: int,
               warnings: list[str]) -> SessionResult:
        from ..runs import Run, summarize
        from ..strategy import RunOutcome

        runner = self.runner
        series = [self.series[sym] for sym in self.names]
        spans = [(d, bisect_left(d.ts_us, since_us), len(d)) for d in series]
        run = Run(self.engine, self.strat, runner, self.models, self.ticks, spans, lo, hi, self.cash, self.segment,
                  self.slippage_ticks, None, warnings)
        outcome = RunOutcome(self.broker, runner.equity_us, runner.equity_values, runner.exposed_count, self.processed,
                             runner.notes)
        summary = summarize(run, outcome)
        return SessionResult(name, self.broker.trades_frame(), self.processed, resumed_from, self.broker.cash, summary, status)


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
    progress_every: float = PROGRESS_EVERY_S,
) -> SessionResult:
    """Play `day` of the bundled sample as a live session named `name` (resumable).

    The simulated clock ticks at each candle close, or every `tick` seconds when given (as a
    live session does); `speed` is how much faster than real time it runs (0: no waiting).
    With `log`, a progress line goes to it at least every `progress_every` seconds of wall time.
    """
    tf = parse(timeframe)
    the_day = parse_date(day, "--date")
    names = _names(symbols)
    if speed < 0:
        raise InputError("--speed must be 0 (as fast as possible) or more")
    if tick is not None and tick <= 0:
        raise InputError("--tick must be more than 0 seconds")
    name = name or default_name(strategy, the_day)
    say = log or (lambda _m: None)
    midnight = datetime.combine(the_day, datetime.min.time(), IST)
    end_of_day = _end_at(midnight, until, midnight + timedelta(days=1) - timedelta(microseconds=1))

    if engine is None:
        engine = _engine_at(settings, end_of_day)
    else:  # a caller's engine (another sample root, a benchmark): on the session's clock
        engine.pin_clock(end_of_day)
    for sym in names:
        engine.check_symbol(sym)  # a typo: `unknown symbol 'NIFTI'; did you mean NIFTY?`, as every command says
    schedule = sorted({us for sym in names for us in _day_closes(engine, sym, tf, midnight, end_of_day)})
    if not schedule:
        if until is not None and engine.calendar.sessions(the_day):
            first_close = min((us for sym in names for us in _day_closes(engine, sym, tf, midnight, midnight + timedelta(days=1))),
                              default=None)
            if first_close is not None:  # a trading day, but --until ends it before its first candle closes
                raise InputError(f"--until {until} ends the session before its first {tf} candle closes "
                                 f"({us_to_datetime(first_close):%H:%M}); give a later --until")
        raise InputError(f"the sample has no {tf} candles of {', '.join(names)} on {the_day}; pick a trading day of 2024")
    if tick is not None:  # a clock that ticks like a live one: from the first open, every `tick` seconds
        step = round(tick * 1e6)
        first = schedule[0] - round(tf.length.total_seconds() * 1e6)
        schedule = list(range(first + step, schedule[-1] + step, step))
    limits = risk if risk is not None else limits_from(settings)

    # strategy, parameters, symbols and costs are checked before a journal exists: a typo
    # must not leave a session behind that holds its name
    book = Book(engine, strategy, params, names, tf, costs=costs, segment=segment, cash=cash,
                slippage_ticks=slippage_ticks, limits=limits, as_of=end_of_day, fill_on_candles=True)
    with TradeState(session_path(sessions_dir(settings), name)) as state:
        ended = open_journal(state, name, {
            "strategy": strategy, "params": repr(sorted((params or {}).items())), "symbols": ",".join(names),
            "risk": limits.describe(), "timeframe": tf.name, "day": the_day.isoformat(), "cash": repr(float(cash)),
            "costs": costs, "segment": segment or "", "slippage": str(slippage_ticks)}, replayable=True)
        done = state.progress()
        journaled = [e.payload for e in state.events("fill")]
        resumed_from = len(done)
        resume_until = max(done.values(), default=0)
        runner, broker = book.runner, book.broker
        engine.pin_clock(midnight)
        seen = {}
        for sym in names:
            try:
                engine.update_cache(sym, tf)  # warm-up up to the day (a new series gets [refresh] count candles)
            except MdeError as exc:
                state.record("stale", as_us(midnight), {"error": str(exc)}, sym)
                say(f"{sym}: cache update failed ({exc}); going on with the cached data")
            book.load(sym, midnight, as_us(midnight))
            seen[sym] = as_us(midnight)
        try:
            runner.start(as_us(midnight))
        except StrategyError as exc:
            journal_error(state, runner, exc)
            raise
        for note in runner.notes:  # on_start's lines (it runs again on a resume: shown, not journaled)
            say(note.line())
        first_open = schedule[0] - round(tf.length.total_seconds() * 1e6) if tick is None else schedule[0] - round(tick * 1e6)
        progress = Progress(say, book, first_open, progress_every)
        pace = f"at {speed:g}x real time" if speed > 0 else "as fast as possible"
        say(f"session {name}: playing {the_day} {tf} {', '.join(names)} {pace}"
            f"{f', resuming after {resumed_from} series marks' if resumed_from else ''}; "
            f"a progress line every {progress_every:g} s")
        last_tick: float | None = None
        # The kill switch: a halt applied before (journaled) is re-applied at the same tick on a resume.
        applied = [e.ts_us for e in state.events("risk") if e.payload.get("reason") == KILL_SWITCH]
        halt_at = applied[0] if applied else None
        halting = interrupted = False
        pool = ThreadPoolExecutor(UPDATE_WORKERS, thread_name_prefix="mde-update") if len(names) > 1 else None
        try:
            for tick_us in schedule:
                if speed > 0 and last_tick is not None and tick_us > resume_until:  # a resume re-runs at once
                    progress.sleep((tick_us - last_tick) / 1e6 / speed, last_tick)
                last_tick = tick_us
                if not halting and (tick_us == halt_at or (halt_at is None and state.meta().get("halt_requested"))):
                    halting = True
                    book.halt(tick_us)
                    if halt_at is None:
                        state.record("risk", tick_us, {"state": HALTED, "reason": KILL_SWITCH})
                    say(f"{us_to_datetime(tick_us):%H:%M} HALTED by the kill switch: flattening, then stopping")
                elif halting and not broker.net:
                    break  # flat after the kill switch: the session ends here
                now = us_to_datetime(tick_us)
                closed = engine.calendar.latest_close(now, tf)
                closed_us = as_us(closed) if closed is not None else 0
                due = [sym for sym in names if closed_us > seen[sym]]  # a candle closed since the last tick
                if not due:
                    continue  # nothing closed: no cache work at all
                engine.pin_clock(now)
                # the tick's cache updates, as live, and the new candles read into memory
                failed, spans = update_caches(engine, due, tf, pool, then=lambda sym: book.catch_up(sym, now))
                for sym, exc in failed.items():  # never fatal: the tick goes on with the data it has
                    state.record("stale", tick_us, {"error": str(exc)}, sym)
                    say(f"{now:%H:%M} {sym}: cache update failed ({exc}); going on with the cached data")
                for sym in due:
                    seen[sym] = closed_us
                for data, lo, hi in merge_events(*zip(*spans)):
                    for i in range(lo, hi):
                        events = book.step(data, i)
                        events += book.risk_after(runner.equity(), data.close_us[i])
                        series_key = book.key(data.symbol)
                        if data.close_us[i] <= done.get(series_key, -1):
                            continue  # already journaled before the restart
                        state.processed(series_key, data.close_us[i], events)
                        for kind, _, payload, sym in events:
                            if kind == "fill":
                                say(fill_line(sym, payload))
                            elif kind == "note":
                                say(payload["line"])
                            elif kind in ("reject", "risk"):
                                say(f"{kind} {sym or ''} {payload.get('reason', '')} {payload.get('state', '')}".replace("  ", " "))
                progress.maybe(tick_us)
                if on_tick is not None:
                    on_tick(snapshot(name, now, runner, book.guard, [book.series[s] for s in names],
                                     state_rejects=broker.rejected))
        except KeyboardInterrupt:  # Ctrl-C: stop here; the journal has every finished candle, so it resumes
            interrupted = True
            say("interrupted: the session stops here and resumes from this point with the same --session")
        except StrategyError as exc:  # the strategy raised: journaled, the session stops resumably
            journal_error(state, runner, exc)
            raise
        finally:
            if pool is not None:
                pool.shutdown()
        # every fill journaled before the restart must have come back the same in the re-run
        n = min(len(journaled), len(broker.fills))
        if [fill_payload(f) for f in broker.fills[:n]] != journaled[:n]:
            raise CacheError(f"session {name}: the cache no longer gives the journaled fills; start a new --session")
        if ended and not interrupted:  # a re-emit: the end's fills come back too; nothing is journaled
            runner.finish(KILL_SWITCH if halting else "end of session")
            if [fill_payload(f) for f in broker.fills] != journaled:
                raise CacheError(f"session {name}: the cache no longer gives the journaled fills, so its summary "
                                 "cannot be re-made; `mde paper --status --json` still shows what the journal holds")
            warnings = [f"session {name} had already {ended}: this summary is re-made from its journal "
                        "(the same candles, the same fills; nothing new was journaled)"]
            return book.result(name, resumed_from, ended, the_day, the_day, as_us(midnight), warnings)
        if not interrupted:
            book.finish(state, halting, say)
        warnings = [f"stopped by Ctrl-C at {us_to_datetime(runner.now_us):%H:%M}; "
                    "positions are still open and the session resumes"] if interrupted else []
        return book.result(name, resumed_from, "interrupted" if interrupted else "halted" if halting else "finished",
                           the_day, the_day, as_us(midnight), warnings)


def _day_closes(engine: Any, symbol: str, tf: Timeframe, midnight: datetime, end: datetime) -> list[int]:
    """When the day's candles close, from the sample itself: the cache need not hold the day."""
    day = engine.source.historical(engine.resolve(symbol), tf, midnight, end)
    day = with_close(day, tf, engine.calendar).filter(pl.col("closes_at") <= end)
    return day["closes_at"].dt.epoch("us").to_list()


def reject_event(r: Rejection, via: str | None = None) -> tuple[str, int, dict[str, Any], str | None]:
    """A refused order as a journal event: its reason (buying power, lot size, ...) and the detail."""
    o = r.order
    payload = {"order": o.id, "side": o.side, "qty": o.qty, "reason": r.why, "code": r.code}
    return ("reject", r.ts_us, payload | {"via": via} if via else payload, o.symbol)


def note_payload(note: Any) -> dict[str, Any]:
    """A ctx.log line as journaled: `line` is what is shown (`2024-06-14 10:15 NAME NIFTY: message`)."""
    return {"strategy": note.strategy, "message": note.message, "line": note.line()}


def fill_payload(f: Fill, via: str | None = None) -> dict[str, Any]:
    out = {"order": f.order_id, "side": f.side, "qty": f.qty, "price": f.price, "ts_us": f.ts_us, "reason": f.reason}
    return out | {"via": via} if via else out


def fill_line(symbol: str | None, f: Mapping[str, Any]) -> str:
    when = us_to_datetime(f["ts_us"]).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when} fill {'BUY' if f['side'] > 0 else 'SELL'} {f['qty']} {symbol} @ {f['price']:.2f} ({f['reason']})"


def session_status(settings: Settings, name: str | None = None, *, all_fills: bool = False,
                   engine: Any = None) -> list[dict[str, Any]]:
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
    out = []
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
            out.append({"session": unsafe_name(path.stem), "status": "unreadable", "error": exc.message,
                        "strategy": None, "symbols": [], "timeframe": None, "day": None, "fills": 0,
                        "positions": {}, "last_candle": {}, "recent_fills": [],
                        "gross_pnl": None, "charges": None, "net_pnl": None,
                        **({"all_fills": []} if all_fills else {})})
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
        out.append({
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
        })
    return out


def session_pnl(engine: Any, meta: Mapping[str, str], fills: Sequence[Mapping[str, Any]],
                progress: Mapping[str, int]) -> dict[str, Any]:
    """A journal's P&L, labelled: `gross_pnl` (the fills' cash flow plus open positions at
    `marks`), `charges` (of the closed round trips, by the session's own cost model, the same
    SimBroker booking as the run), `net_pnl` = gross_pnl - charges: what the run's summary calls
    net P&L once every position is closed.

    An open position is marked at the close of the last candle the session processed of its
    series (the session's own clock; a sample day is not marked at the sample's end of data),
    else at the latest close now. A number that cannot be known is None, never a guess.
    """
    from ..broker import Fill

    tf = meta.get("timeframe") or "5m"
    cashflow, net = 0.0, {}
    for f in fills:
        cashflow -= f["side"] * f["qty"] * f["price"]
        net[f["symbol"]] = net.get(f["symbol"], 0) + f["side"] * f["qty"]
    marks: dict[str, float | None] = {}
    for symbol, qty in net.items():
        if not qty:
            continue
        last_us = progress.get(f"{symbol}:{tf}")
        as_of = us_to_datetime(last_us) if last_us else None
        try:
            last = engine.get_window(symbol, tf, 1, as_of=as_of)
            marks[symbol] = float(last["close"][-1]) if last.height else None
        except MdeError:
            marks[symbol] = None
    gross = None if any(m is None for m in marks.values()) else cashflow + sum(net[s] * m for s, m in marks.items())  # type: ignore[operator]
    charges: float | None = 0.0
    if fills and meta.get("costs", "zerodha") != "none":
        try:
            from ..replay import build_broker

            symbols = list(dict.fromkeys(str(f["symbol"]) for f in fills))
            broker, _, _ = build_broker(engine, symbols, costs=meta.get("costs", "zerodha"),
                                        segment=meta.get("segment") or None, cash=0.0, slippage_ticks=0)
            for f in fills:
                broker.apply(Fill(int(f["order"]), "paper", str(f["symbol"]), int(f["side"]), int(f["qty"]),
                                  float(f["price"]), int(f["ts_us"]), str(f.get("reason", ""))))
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


def snapshot(name: str, now: datetime, runner: StrategyRunner, guard: RiskEngine, series: Sequence[SeriesData],
             state_rejects: Sequence[Any] = (), marks: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What the dashboard shows after a tick: clock, per symbol the last candle and its age,
    position and P&L, charges, the risk state and the latest fills and rejections."""
    broker = runner.broker
    assert broker is not None
    now_us = as_us(now)
    rows = []
    for data in series:
        k = data.visible(now_us)
        last_close = data.close[k - 1] if k else None
        mark = (marks or {}).get(data.symbol, last_close)  # live: the last traded price
        qty = broker.net.get(data.symbol, 0)
        avg = 0.0
        for (sid, sym), pos in broker.positions.items():
            if sym == data.symbol and pos.qty:
                avg = pos.avg_price
        rows.append({
            "symbol": data.symbol,
            "last_ts": us_to_datetime(data.ts_us[k - 1]) if k else None,
            "last_close": last_close,
            "age_s": (now_us - data.close_us[k - 1]) / 1e6 if k else None,
            "position": qty,
            "avg_price": avg,
            "ltp": (marks or {}).get(data.symbol),
            "unrealised": (mark - avg) * qty if qty and mark is not None else 0.0,
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
        "fills": [fill_line(f.symbol, fill_payload(f)) for f in broker.fills[-5:]],
        "rejections": [f"order {o.id} {o.symbol}: {why}" for o, why in list(state_rejects)[-5:]],
        "log": [n.line() for n in runner.notes[-5:] if n.kind == "log"],  # the strategy's latest ctx.log lines
    }
