"""PaperEngine: one paper session, whatever drives its clock and its fills.

A session is the same loop everywhere; only its environment differs, and it is passed in:

- a `Clock` (`clocks.py`): the instants the engine looks at the market. A sample day is
  simulated (`SampleClock`: each candle close, or a fixed step, as fast as asked); a live
  session runs on the wall clock (`WallClock`: every `--tick`); the live stream of issue 17
  brings a tick-driven clock.
- a `FillPolicy` (`fills.py`): where fills come from. A sample day fills at the next
  candle's open, as replay does (`CandleFills`); live, at the next last traded price after
  the decision (`PriceFills` over one batched `/quote/ltp`); the stream, at the next tick.

At each instant `loop_once()`: the kill switch; the cache update of every series whose
candle closed (any exception is journaled as `stale` and the session goes on with the
cached data); the new candles, oldest close first, through the same `StrategyRunner` and
`SimBroker` as `mde replay`, behind the RiskEngine, each candle's events journaled with its
progress mark in one commit; then the fill policy (prices, fills, the day's loss limit).

A restart with the same session name goes on where the journal ends: a replayable clock
(a sample day) re-runs its instants from the start without journaling again (the re-run's
fills are checked against the journal); real time walks the journal instead (each
journaled candle through the strategies again, each fill made at a price booked again by
its order id), then catches up on what closed while the session was down. Nothing is
lost, nothing is processed twice. A strategy that raises stops the session with one line
naming the strategy, the symbol and the candle (StrategyError, exit 7), journaled; the
same --session resumes it.
"""

from __future__ import annotations

import logging
import time as time_mod
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from ..calendar import parse_date
from ..clock import IST, as_us, from_ist_minutes, to_ist_minutes, us_to_datetime
from ..config import Settings
from ..errors import AuthError, CacheError, ConfigError, InputError, MdeError, StrategyError
from ..resample import with_close
from ..strategy import SeriesData, Strategy, merge_events
from ..timeframes import Timeframe
from .book import Book, SessionResult, snapshot
from .clocks import Clock, SampleClock, WallClock, wall_clock
from .fills import CandleFills, FillPolicy, PriceFills
from .journal import (
    KILL_SWITCH,
    Log,
    event_line,
    fill_payload,
    journal_error,
    open_journal,
)
from .risk import HALTED, RiskLimits
from .rules import default_name, limits_from, sessions_dir, symbol_timeframes
from .state import Event, TradeState, session_path

log = logging.getLogger("mde.paper")

PROGRESS_EVERY_S = 60.0  # without a terminal: a progress line at least this often (wall time)
UPDATE_WORKERS = 4
RETRY_STALE_S = 5.0  # a failed cache update is tried again after this (session time), not at every instant
LIVE_FILLS = "live fills: the next last traded price after each decision (plus slippage), not the next open"


def _played(minutes: float) -> str:
    hours, mins = divmod(int(minutes), 60)
    return f"{hours} h {mins:02d} min" if hours else f"{mins} min"


class Progress:
    """Without a terminal, a session between fills would print nothing for minutes: a line at
    least every `every` seconds of wall time says it is alive, with the session clock, time
    played, candles, fills, equity and P&L (net of the charges so far)."""

    def __init__(
        self,
        say: Log,
        book: Book,
        started_us: int,
        every: float = PROGRESS_EVERY_S,
        wall: Callable[[], float] = time_mod.monotonic,
    ) -> None:
        self.say, self.book, self.started_us, self.every, self.wall = say, book, started_us, every, wall
        self.last = wall()

    def line(self, now_us: int) -> str:
        book = self.book
        broker = book.broker
        equity = book.runner.equity()
        played = max(0, now_us - self.started_us) / 60e6
        return (
            f"{us_to_datetime(now_us):%Y-%m-%d %H:%M:%S} progress: {_played(played)} played, "
            f"{book.processed} candles, {len(broker.fills)} fills, equity {equity:,.2f}, "
            f"P&L {equity - book.cash:+,.2f} (after {broker.charges_paid:,.2f} charges)"
        )

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


def update_caches(
    engine: Any,
    symbols: Sequence[str],
    timeframes: Mapping[str, Timeframe],
    pool: ThreadPoolExecutor | None,
    then: Callable[[str], Any] | None = None,
) -> tuple[dict[str, Exception], list[Any]]:
    """Bring several series up to the engine's now at once, each series' errors kept apart
    (any exception, not only mde's: one series' failure never stops the others), then call
    `then(symbol)` for each (reading the new candles) in the same worker.

    Each series has its own files and lock, so their Parquet writes, fsyncs, reads and (live)
    HTTP round trips overlap; on Kite the shared rate limiter still paces the requests.
    """

    def one(sym: str) -> tuple[Exception | None, Any]:
        try:
            engine.update_cache(sym, timeframes[sym])
            err = None
        except Exception as exc:  # journaled as `stale` by the caller; the session goes on with the cached data
            if not isinstance(exc, MdeError):
                log.debug("%s %s: cache update raised", sym, timeframes[sym], exc_info=exc)
            err = exc
        return err, then(sym) if then is not None else None

    results = list(pool.map(one, symbols)) if pool is not None and len(symbols) > 1 else [one(s) for s in symbols]
    return {sym: err for sym, (err, _) in zip(symbols, results, strict=True) if err is not None}, [
        out for _, out in results
    ]


def failure_text(exc: Exception) -> str:
    """The one line journaled (as `stale`) and shown for a failed cache update: mde's own
    message, else the exception's type and message (a bug or an environment fault)."""
    if isinstance(exc, MdeError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _names(symbols: Sequence[str]) -> list[str]:
    names = [s.strip().upper() for s in symbols]
    if not names:
        raise InputError("no symbol to trade; pass --symbols NIFTY ...")
    return names


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


def describe_series(names: Sequence[str], timeframes: Mapping[str, Timeframe]) -> str:
    """`5m NIFTY, BANKNIFTY` when the symbols share a timeframe, else `NIFTY 1m, BANKNIFTY 15m`."""
    tfs = {timeframes[s].name for s in names}
    if len(tfs) == 1:
        return f"{tfs.pop()} {', '.join(names)}"
    return ", ".join(f"{s} {timeframes[s]}" for s in names)


def _day_closes(engine: Any, symbol: str, tf: Timeframe, midnight: datetime, end: datetime) -> list[int]:
    """When the day's candles close, from the sample itself: the cache need not hold the day."""
    day = engine.source.historical(engine.resolve(symbol), tf, midnight, end)
    day = with_close(day, tf, engine.calendar).filter(pl.col("closes_at") <= end)
    return [int(x) for x in day["closes_at"].dt.epoch("us").to_list()]


class PaperEngine:
    """One paper session: a strategy, its symbols (each on its own timeframe), a journal, and
    the environment it runs in, a `Clock` and a `FillPolicy`.

    Build it with `PaperEngine.from_settings(...)` (the sample/live choice and the rules of
    `mde paper`), `PaperEngine.sample(...)` or `PaperEngine.live(...)`, or directly with your
    own clock and fill policy; `run()` plays the session and returns a `SessionResult`.
    Strategy, parameters, symbols and costs are checked when it is built, before a journal
    exists: a typo leaves no session behind that holds its name.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Any,
        strategy: str | type[Strategy] | Strategy,
        symbols: Sequence[str],
        timeframes: Mapping[str, Timeframe],
        clock: Clock,
        fills: FillPolicy,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        costs: str = "zerodha",
        segment: str | None = None,
        cash: float = 1_000_000.0,
        slippage_ticks: int = 0,
        risk: RiskLimits | None = None,
        log: Log | None = None,
        on_tick: Callable[[dict[str, Any]], None] | None = None,
        progress_every: float = PROGRESS_EVERY_S,
    ) -> None:
        self.settings, self.engine, self.clock, self.fills = settings, engine, clock, fills
        self.names = _names(symbols)
        self.timeframes = {s: timeframes[s] for s in self.names}
        label = (
            strategy
            if isinstance(strategy, str)
            else (strategy if isinstance(strategy, type) else type(strategy)).__name__
        )
        self.name = name or default_name(label, clock.day)
        self.limits = risk if risk is not None else limits_from(settings)
        self.say: Log = log or (lambda _m: None)
        self.on_tick, self.progress_every = on_tick, progress_every
        self.book = Book(
            engine,
            strategy,
            params,
            self.names,
            self.timeframes,
            costs=costs,
            segment=segment,
            cash=cash,
            slippage_ticks=slippage_ticks,
            limits=self.limits,
            as_of=clock.start,
            fill_on_candles=fills.fills_on_candles,
        )
        tfs = [self.timeframes[s].name for s in self.names]
        self.meta = {
            **({} if clock.replayable else {"mode": "live"}),
            "strategy": label,
            "params": repr(sorted((params or {}).items())),
            "symbols": ",".join(self.names),
            "risk": self.limits.describe(),
            "timeframe": tfs[0] if len(set(tfs)) == 1 else ",".join(tfs),
            "day": clock.day.isoformat(),
            "cash": repr(float(cash)),
            "costs": costs,
            "segment": segment or "",
            "slippage": str(slippage_ticks),
        }
        # the session's state while it runs
        self.state: TradeState | None = None
        self.now_us = as_us(clock.start)
        self.halting = False
        self.halt_at: int | None = None  # a replayable re-run: the instant the journaled kill switch came
        self.done: dict[str, int] = {}  # a replayable re-run: series -> last journaled close
        self.seen: dict[str, int] = {}  # series -> the close its cache was last brought up to
        self.retry_at: dict[str, int] = {}  # series -> not before this instant after a failed update
        self.last_error: dict[
            str, str
        ] = {}  # series -> the failure journaled last (journaled again only when it changes)
        self.pool: ThreadPoolExecutor | None = None
        self.progress = Progress(self.say, self.book, as_us(clock.opens), progress_every)
        self._first = True

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        strategy: str | type[Strategy] | Strategy,
        symbols: Sequence[str],
        timeframe: str | Mapping[str, str] | None = None,
        *,
        day: date | str | None = None,
        speed: float = 0.0,
        tick: float | None = None,
        **kw: Any,
    ) -> PaperEngine:
        """The session `mde paper` runs: with `--source kite` live today (`live()`), else a
        bundled day as if live (`sample()`, which needs `day`). `timeframe`: one for every
        symbol, a mapping symbol -> timeframe, or None for each symbol's own (`symbol_timeframes`)."""
        if settings.source == "kite":
            if day is not None:
                raise InputError(
                    "--date plays a bundled day: use it with --source sample (a kite session runs today, live)"
                )
            return cls.live(settings, strategy, symbols, timeframe, tick=tick or 1.0, **kw)
        if day is None:
            raise InputError(
                "a sample session plays a bundled day: add --date YYYY-MM-DD (e.g. 2024-06-14), or use --source kite"
            )
        return cls.sample(settings, strategy, symbols, day, timeframe, speed=speed, tick=tick, **kw)

    @classmethod
    def sample(
        cls,
        settings: Settings,
        strategy: str | type[Strategy] | Strategy,
        symbols: Sequence[str],
        day: date | str,
        timeframe: str | Mapping[str, str] | None = None,
        *,
        speed: float = 0.0,
        tick: float | None = None,
        until: str | None = None,
        engine: Any = None,
        **kw: Any,
    ) -> PaperEngine:
        """Play `day` of the bundled sample as a live session: a simulated clock at each candle
        close (or every `tick` seconds, as a live session ticks), `speed` x real time (0: no
        waiting), fills at the next candle's open."""
        the_day = parse_date(day, "--date")
        names = _names(symbols)
        tfs = symbol_timeframes(settings, names, timeframe)
        if speed < 0:
            raise InputError("--speed must be 0 (as fast as possible) or more")
        if tick is not None and tick <= 0:
            raise InputError("--tick must be more than 0 seconds")
        midnight = datetime.combine(the_day, datetime.min.time(), IST)
        end_of_day = _end_at(midnight, until, midnight + timedelta(days=1) - timedelta(microseconds=1))
        if engine is None:
            from ..engine import MarketDataEngine

            engine = MarketDataEngine(settings.with_overrides(now=end_of_day, source="sample"))
        else:  # a caller's engine (another sample root, a benchmark): on the session's clock
            engine.pin_clock(end_of_day)
        for sym in names:
            engine.check_symbol(sym)  # a typo: `unknown symbol 'NIFTI'; did you mean NIFTY?`, as every command says
        closes = {sym: _day_closes(engine, sym, tfs[sym], midnight, end_of_day) for sym in names}
        schedule = sorted({us for sym in names for us in closes[sym]})
        one_tf = len({tfs[s] for s in names}) == 1
        if not schedule:
            if until is not None and engine.calendar.sessions(the_day):
                whole_day = midnight + timedelta(days=1)
                first = min(
                    (us for sym in names for us in _day_closes(engine, sym, tfs[sym], midnight, whole_day)),
                    default=None,
                )
                if first is not None:  # a trading day, but --until ends it before its first candle closes
                    what = f"{tfs[names[0]]} candle" if one_tf else "candle"
                    raise InputError(
                        f"--until {until} ends the session before its first {what} closes "
                        f"({us_to_datetime(first):%H:%M}); give a later --until"
                    )
            what = (
                f"{tfs[names[0]]} candles of {', '.join(names)}"
                if one_tf
                else f"candles of {describe_series(names, tfs)}"
            )
            raise InputError(f"the sample has no {what} on {the_day}; pick a trading day of 2024")
        first_open = min(c[0] - _us(tfs[s].length) for s, c in closes.items() if c)
        if tick is not None:  # a clock that ticks like a live one: from the first open, every `tick` seconds
            step = round(tick * 1e6)
            schedule = list(range(first_open + step, schedule[-1] + step, step))
        clock = SampleClock(
            the_day, schedule, start=midnight, opens=us_to_datetime(first_open), end=end_of_day, speed=speed
        )
        return cls(settings, engine, strategy, names, tfs, clock, CandleFills(), **kw)

    @classmethod
    def live(
        cls,
        settings: Settings,
        strategy: str | type[Strategy] | Strategy,
        symbols: Sequence[str],
        timeframe: str | Mapping[str, str] | None = None,
        *,
        tick: float = 1.0,
        until: str | None = None,
        engine: Any = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time_mod.sleep,
        **kw: Any,
    ) -> PaperEngine:
        """Paper-trade today's session live on Kite: the wall clock (`clock`, default now or a
        running `MDE_NOW`) every `tick` seconds until `until` or the close; fills at the next
        last traded price (one batched LTP request per tick). Paper mode has no order-placing
        client: the only Kite calls are historical candles, LTP and the instruments list."""
        names = _names(symbols)
        tfs = symbol_timeframes(settings, names, timeframe)
        if tick <= 0:
            raise InputError("--tick must be more than 0 seconds")
        if engine is None:
            from ..engine import MarketDataEngine

            engine = MarketDataEngine(settings)
        source = engine.source
        if not hasattr(source, "ltp"):
            raise InputError(
                "a live paper session needs --source kite; to try one without an account, play a bundled "
                "day with --source sample --date 2024-06-14"
            )
        now_fn = clock or wall_clock(settings.now)
        cal = engine.calendar
        now = now_fn()
        today = now.date()
        if not cal.is_trading_day(today):
            raise InputError(
                f"{today} is not an NSE trading day; play a bundled day with --source sample --date 2024-06-14"
            )
        midnight = datetime.combine(today, datetime.min.time(), IST)
        end = _end_at(midnight, until, from_ist_minutes(to_ist_minutes(midnight) + cal.day_close(today)))
        if now >= end:
            raise InputError(f"today's session is over ({end:%H:%M} IST); start a live session during market hours")
        engine.pin_clock(now)
        keys = {sym: engine.resolve(sym).key for sym in names}  # LTP keys, e.g. NSE:NIFTY 50
        fills = PriceFills(source.ltp, keys, via="ltp", what="LTP request", warning=LIVE_FILLS)
        return cls(settings, engine, strategy, names, tfs, WallClock(now_fn, end, tick, sleep, start=now), fills, **kw)

    # -- running ----------------------------------------------------------------------------
    def run(self) -> SessionResult:
        """Play the session to its end (or Ctrl-C, or the kill switch) and return its summary.
        Resumable under the same name; see the module's docstring."""
        with TradeState(session_path(sessions_dir(self.settings), self.name)) as state:
            ended = open_journal(state, self.name, self.meta, replayable=self.clock.replayable)
            self.state = state
            try:
                return self._run(state, ended)
            finally:
                self.state = None

    def _run(self, state: TradeState, ended: str | None) -> SessionResult:
        clock, book, say = self.clock, self.book, self.say
        runner, broker = book.runner, book.broker
        since_us = as_us(clock.start)
        if not clock.replayable:  # the session started in an earlier run: its candles count from there
            meta = state.meta()
            if "started_us" not in meta:
                state.set_meta({"started_us": str(since_us)})
            since_us = int(meta.get("started_us", since_us))
            self.progress.started_us = since_us
        self._warm_up(state, since_us)
        journaled: list[dict[str, Any]] = []
        try:
            runner.start(since_us)
            for note in runner.notes:  # on_start's lines (it runs again on a resume: shown, not journaled)
                say(note.line())
            if clock.replayable:  # a re-run: the journaled candles come back; not journaled again
                self.done = state.progress()
                journaled = [e.payload for e in state.events("fill")]
                resumed_from = len(self.done)
                clock.resume(max(self.done.values(), default=0))
                applied = [e.ts_us for e in state.events("risk") if e.payload.get("reason") == KILL_SWITCH]
                self.halt_at = applied[0] if applied else None
            else:  # real time: walk the journal back to where it ends
                journal = state.events()
                resumed_from = sum(1 for e in journal if e.kind == "candle")
                self.halting = self._walk(journal)
        except StrategyError as exc:
            journal_error(state, runner, exc)
            raise
        resuming = f", resuming after {resumed_from} series marks" if resumed_from and clock.replayable else ""
        say(
            f"session {self.name}: {clock.describe(describe_series(self.names, self.timeframes))}{resuming}; "
            f"a progress line every {self.progress_every:g} s"
        )
        interrupted = False
        self.pool = ThreadPoolExecutor(UPDATE_WORKERS, thread_name_prefix="mde-update") if len(self.names) > 1 else None
        try:
            while (now := clock.next(self._wait)) is not None:
                if not self.loop_once(now):
                    break
        except KeyboardInterrupt:  # Ctrl-C: stop here; the journal has every finished candle, so it resumes
            interrupted = True
            say("interrupted: the session stops here and resumes from this point with the same --session")
        except StrategyError as exc:  # the strategy raised: journaled, the session stops resumably
            journal_error(state, runner, exc)
            raise
        finally:
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None
        day = clock.day
        if clock.replayable:  # every fill journaled before the restart must have come back the same in the re-run
            n = min(len(journaled), len(broker.fills))
            if [fill_payload(f) for f in broker.fills[:n]] != journaled[:n]:
                raise CacheError(
                    f"session {self.name}: the cache no longer gives the journaled fills; start a new --session"
                )
            if ended and not interrupted:  # a re-emit: the end's fills come back too; nothing is journaled
                runner.finish(KILL_SWITCH if self.halting else "end of session")
                if [fill_payload(f) for f in broker.fills] != journaled:
                    raise CacheError(
                        f"session {self.name}: the cache no longer gives the journaled fills, so its "
                        "summary cannot be re-made; `mde paper --status --json` still shows what the "
                        "journal holds"
                    )
                warnings = [
                    f"session {self.name} had already {ended}: this summary is re-made from its journal "
                    "(the same candles, the same fills; nothing new was journaled)"
                ]
                return book.result(self.name, resumed_from, ended, day, day, since_us, warnings)
        if not interrupted:
            runner.set_marks(self.fills.marks)  # live: what is still open closes at its last traded price
            book.finish(state, self.halting, say, via=self.fills.finish_via)
        warnings = [self.fills.warning] if self.fills.warning else []
        if interrupted:
            warnings.append(
                f"stopped by Ctrl-C at {us_to_datetime(runner.now_us):%H:%M:%S}; "
                "positions are still open and the session resumes"
            )
        status = "interrupted" if interrupted else "halted" if self.halting else "finished"
        return book.result(self.name, resumed_from, status, day, day, since_us, warnings)

    def _wait(self, seconds: float) -> None:
        self.progress.sleep(seconds, self.now_us)

    def _warm_up(self, state: TradeState, since_us: int) -> None:
        """The cache of every series up to the clock's start (a new series is back-filled), then
        the series in memory. No key or no valid token stops here: a human must act."""
        engine, book, start = self.engine, self.book, self.clock.start
        start_us = as_us(start)
        engine.pin_clock(start)
        for sym in self.names:
            tf = self.timeframes[sym]
            try:
                engine.update_cache(sym, tf)
                closed = engine.calendar.latest_close(start, tf)
                self.seen[sym] = as_us(closed) if closed is not None else 0
            except (ConfigError, AuthError):
                raise
            except Exception as exc:  # the session goes on with the cached data; retried at the first instant
                self._stale(state, sym, exc, start_us)
                self.seen[sym] = 0
            book.load(sym, start, since_us)

    def _stale(self, state: TradeState, sym: str, exc: Exception, now_us: int) -> None:
        """A failed cache update: retried after RETRY_STALE_S; journaled (and shown) when its error is new."""
        if not isinstance(exc, MdeError):
            log.debug("%s: cache update raised", sym, exc_info=exc)
        self.retry_at[sym] = now_us + int(RETRY_STALE_S * 1e6)
        text = failure_text(exc)
        if self.last_error.get(sym) != text:
            self.last_error[sym] = text
            state.record("stale", now_us, {"error": text}, sym)
            self.say(
                f"{us_to_datetime(now_us):%H:%M:%S} {sym}: cache update failed ({text}); going on with the cached data"
            )

    def _walk(self, journal: Sequence[Event]) -> bool:
        """Bring a resumed session back to where its journal ends; True if it was halted by the kill switch."""
        book = self.book
        runner, broker, via = book.runner, book.broker, self.fills.via
        halting = False
        for e in journal:
            if e.kind == "candle":
                data = book.series.get(e.symbol or "")
                i = bisect_left(data.close_us, e.ts_us) if data is not None else -1
                if data is None or i >= len(data) or data.close_us[i] != e.ts_us:
                    raise CacheError(
                        f"session {self.name}: the cache no longer has the journaled {e.symbol} candle; "
                        "start a new --session"
                    )
                book.step(data, i)
            elif e.kind == "fill" and via is not None and e.payload.get("via") == via:
                runner.now_us = max(runner.now_us, e.ts_us)
                try:
                    broker.fill_order(e.payload["order"], e.symbol or "", e.payload["price"], e.ts_us)
                except KeyError:
                    raise CacheError(
                        f"session {self.name}: journaled order {e.payload['order']} did not come back "
                        "on resume; start a new --session"
                    ) from None
            elif e.kind == "reject" and via is not None and e.payload.get("via") == via:  # refused at a fill: again
                order = next((o for o in broker.pending.get(e.symbol or "", ()) if o.id == e.payload["order"]), None)
                if order is not None:
                    broker.reject(order, e.payload["reason"], e.payload.get("code", ""), e.ts_us)
            elif e.kind == "squareoff":
                runner.square_off_due(e.ts_us)
            elif e.kind == "risk" and e.payload.get("state") == HALTED:
                if e.payload.get("reason", KILL_SWITCH) == KILL_SWITCH:
                    book.halt(e.ts_us)
                    halting = True
                else:  # the day's loss limit: as risk_after did it
                    book.guard.set_state(HALTED, e.payload["reason"])
                    book.flatten(e.ts_us, "risk halt")
        return halting

    def loop_once(self, now: datetime) -> bool:
        """One look at the market at `now` (the clock's next instant; `run()` calls it):

        1. the kill switch (`mde paper --halt` from another process): no new orders, flatten,
           and stop once flat;
        2. the cache of every series whose candle closed since the last update (any exception
           is journaled as `stale`; the series is retried a few seconds later);
        3. the new candles, oldest close first, through the strategies, the risk checks and
           candle fills, each journaled with its progress mark in one commit;
        4. the fill policy (prices, fills, the day's loss limit), journaled;
        5. the progress line and the dashboard, if anything was looked at.

        Returns False when the session is over (flat after the kill switch)."""
        state = self.state
        assert state is not None, "loop_once runs inside run()"
        book = self.book
        broker = book.broker
        now_us = as_us(now)
        self.now_us = now_us
        if not self.halting and (
            now_us == self.halt_at or (self.halt_at is None and state.meta().get("halt_requested"))
        ):
            self.halting = True
            book.halt(now_us)
            if self.halt_at is None:
                state.record("risk", now_us, {"state": HALTED, "reason": KILL_SWITCH})
            self.say(f"{now:%H:%M:%S} HALTED by the kill switch: flattening, then stopping")
        elif self.halting and not broker.net and not any(broker.pending.values()):
            return False  # flat after the kill switch: the session ends here
        book.runner.as_of = now
        looked = self._candles(state, now)
        looked = self.fills.on_loop(book, state, now_us, self.say) or looked
        if looked:
            self.progress.maybe(now_us)
            if self.on_tick is not None:
                self.on_tick(
                    snapshot(
                        self.name,
                        now,
                        book.runner,
                        book.guard,
                        [book.series[s] for s in self.names],
                        state_rejects=broker.rejected,
                        marks=self.fills.marks,
                    )
                )
        return True

    def _candles(self, state: TradeState, now: datetime) -> bool:
        """Update the cache of each series whose candle closed, and run the new candles, oldest
        close first. The first instant of a real-time session also runs what closed while it
        was down. True if a candle was due."""
        engine, book = self.engine, self.book
        now_us = as_us(now)
        closed: dict[Timeframe, int] = {}
        for tf in set(self.timeframes.values()):
            close = engine.calendar.latest_close(now, tf)
            closed[tf] = as_us(close) if close is not None else 0
        due = [
            sym
            for sym in self.names
            if closed[self.timeframes[sym]] > self.seen[sym] and now_us >= self.retry_at.get(sym, 0)
        ]
        first, self._first = self._first and not self.clock.replayable, False
        if not due and not first:
            return False  # nothing closed: no cache work at all
        spans: list[tuple[SeriesData, int, int]] = []
        if due:
            engine.pin_clock(now)
            failed, spans = update_caches(
                engine, due, self.timeframes, self.pool, then=lambda sym: book.catch_up(sym, now)
            )
            for sym in due:
                exc = failed.get(sym)
                if exc is None:
                    self.seen[sym] = closed[self.timeframes[sym]]
                    self.retry_at.pop(sym, None)
                    self.last_error.pop(sym, None)
                else:  # never fatal: the loop goes on with the data it has
                    self._stale(state, sym, exc, now_us)
        if first:  # what closed while a resumed session was down
            spans += [book.catch_up(sym, now) for sym in self.names if sym not in due]
        spans = [s for s in spans if s[2] > s[1]]
        if spans:
            book.runner.forget_other_series()
            for data, lo, hi in merge_events(*zip(*spans, strict=True)):
                for i in range(lo, hi):
                    self._candle(state, data, i, now_us)
        return bool(due)

    def _candle(self, state: TradeState, data: SeriesData, i: int, now_us: int) -> None:
        """Candle i of a series through the strategies, journaled with its progress mark in one commit."""
        book, fills = self.book, self.fills
        close_us = data.close_us[i]
        events = book.step(data, i)
        events += fills.after_candle(book, close_us)
        key = book.key(data.symbol)
        if close_us <= self.done.get(key, -1):
            return  # a re-run: journaled before the restart
        if not self.clock.replayable:  # a walk-resume needs the list of processed candles
            events.insert(0, ("candle", close_us, {"ts_us": data.ts_us[i]}, data.symbol))
        state.processed(key, close_us, events)
        for event in events:
            line = event_line(event, now_us, orders=not fills.fills_on_candles)
            if line is not None:
                self.say(line)


def _us(length: timedelta) -> int:
    return round(length.total_seconds() * 1e6)


def run_session(
    settings: Settings,
    strategy: str | type[Strategy] | Strategy,
    symbols: Sequence[str],
    timeframe: str | Mapping[str, str] | None = None,
    **kw: Any,
) -> SessionResult:
    """Run the paper session `mde paper` runs: live on Kite with `--source kite`, else the
    bundled day `day=` as if live; resumable under the same `name=`. Keyword arguments are
    `PaperEngine.from_settings`'s (day, speed, tick, until, name, params, costs, segment,
    cash, slippage_ticks, risk, log, on_tick, engine, progress_every)."""
    return PaperEngine.from_settings(settings, strategy, symbols, timeframe, **kw).run()
