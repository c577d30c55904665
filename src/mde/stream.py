"""Live candles from Kite's WebSocket ticker into the cache: the library behind `mde stream`.

`run_stream` connects Zerodha's own ``kiteconnect.KiteTicker`` (``root`` = ``[kite] ws_root``,
``MDE_KITE_WS_ROOT``), subscribes every instrument in ``full`` mode, builds candles of every
requested timeframe with `mde.ticks.CandleBuilder` from the ticks' exchange timestamps, and
writes each candle once it is final (close + ``[stream] grace``) through the one store
(`CandleStore.write`: atomic, locked, manifest), with origin ``ticks`` recorded in the
manifest (`Manifest.ticks`). Streamed candles are *not* recorded in the coverage ledger:
only an answer of the historical API is (so a later `mde refresh` or a reconciliation fetches
the day and replaces them).

Threads: KiteTicker runs the Twisted reactor in a daemon thread (``connect(threaded=True)``);
its callbacks only put events on a queue. Everything else (the builder, the cache, the
historical API) runs on the caller's thread, which also receives SIGINT/SIGTERM. Stopping
is ``stop_retry()`` + ``close()`` on the reactor thread, never ``stop()``.

Clock: the wall clock (IST); with a pinned clock (``MDE_NOW``) the stream runs on *market
time* instead: it starts at the pinned instant and moves with the newest exchange timestamp
seen, so a test (or a replay) drives it as fast as it sends ticks.

Faults:

* a candle whose stretch had a disconnect in it comes out of the builder *tainted*: it is
  fetched from the historical API once complete (one request per series per gap, through
  the source's rate limiter), never written from half its ticks;
* a tick older than the last written candle of its series is counted (``late``) and ignored;
* a token rejected at the handshake (HTTP 403), at connect or on a reconnect after Kite
  dropped the session, ends the stream with `AuthError` (exit 3, `mde login`) once every
  complete candle is written; reconnects are KiteTicker's own and are reported;
* after a restart (kill -9), the candles of today between the last written one and the new
  start are fetched from the historical API, so the series goes on without a hole.

Reconciliation (`reconcile`): each series' candles of a day are compared with Kite's
historical candles and replaced by them in one atomic write (``replace``), so the cache
then equals what `mde fetch` writes; the report says how many candles differed and by how much.
"""

from __future__ import annotations

import logging
import queue
import re
import signal
import threading
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from .clock import IST
from .errors import AuthError, InputError, SourceError, SourceUnavailable
from .symbols import Instrument
from .ticks import CandleBuilder, Tainted
from .timeframes import Timeframe, parse

if TYPE_CHECKING:
    from .engine import MarketDataEngine

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_PER_CONNECTION",
    "ReconcileReport",
    "SeriesDiff",
    "StreamClock",
    "StreamSummary",
    "check_limits",
    "parse_until",
    "reconcile",
    "run_stream",
    "stop_on_signals",
]

log = logging.getLogger("mde.stream")

MAX_PER_CONNECTION = 3000  # Kite: instruments per WebSocket connection
MAX_CONNECTIONS = 3  # Kite: connections per api_key
PRICE_TICK = 0.05  # NSE's tick, the unit of the reconciliation's price differences
TAINT_RETRY_S = 5.0  # wall seconds between tries of a gap Kite has no candles for yet
TAINT_TRIES = 12


# -- the clock -------------------------------------------------------------------------------


class StreamClock:
    """The wall clock in IST, or market time: the pinned start moved on by exchange timestamps."""

    def __init__(self, pinned: datetime | None = None) -> None:
        self.pinned = pinned
        self._epoch = pinned.timestamp() if pinned is not None else 0.0

    @property
    def market_time(self) -> bool:
        return self.pinned is not None

    def saw(self, epoch: float) -> None:
        if epoch > self._epoch:
            self._epoch = epoch

    def now(self) -> datetime:
        if self.pinned is None:
            return datetime.now(IST)
        return datetime.fromtimestamp(self._epoch, IST)


def parse_until(text: str | None, now: datetime) -> datetime | None:
    """`--until`: HH:MM[:SS] on today's date (IST), or an ISO 8601 instant."""
    if text is None:
        return None
    raw = text.strip()
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", raw):
        try:
            clock = time.fromisoformat(raw if len(raw.split(":")[0]) == 2 else "0" + raw)
        except ValueError:
            raise InputError(f"bad --until {text!r}; use HH:MM like 15:30 (IST) or an ISO 8601 instant") from None
        return datetime.combine(now.astimezone(IST).date(), clock, IST)
    from .calendar import parse_instant

    return parse_instant(raw, "--until")


# -- plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Streamed:
    symbol: str
    instrument: Instrument
    token: int


def check_limits(count: int) -> None:
    """More instruments than Kite's 3 connections x 3000 is a one-line error before connecting."""
    cap = MAX_PER_CONNECTION * MAX_CONNECTIONS
    if count > cap:
        raise InputError(
            f"{count} instruments is more than Kite streams to one API key ({MAX_CONNECTIONS} connections x "
            f"{MAX_PER_CONNECTION} instruments = {cap}); stream fewer symbols or split them across API keys"
        )


def _plan(engine: MarketDataEngine, symbols: Sequence[str], timeframes: Sequence[Timeframe]) -> list[Streamed]:
    if not symbols:
        raise InputError("no symbols to stream; give some like --symbols NIFTY BANKNIFTY INFY")
    check_limits(len(set(symbols)))
    source = engine.source
    out: dict[int, Streamed] = {}
    for symbol in symbols:
        inst = source.resolve(symbol)
        if inst.token is None:
            raise InputError(f"{symbol}: Kite's instruments list has no token for {inst}; it cannot be streamed")
        out.setdefault(int(inst.token), Streamed(symbol, inst, int(inst.token)))
    check_limits(len(out))
    for s in out.values():
        for tf in timeframes:
            manifest = engine.store.manifest(s.instrument, tf)
            if manifest is not None and manifest.source != source.name:
                raise InputError(
                    f"{s.instrument} {tf} in the cache came from '{manifest.source}', not '{source.name}'; "
                    "stream into another cache dir (MDE_CACHE_DIR)"
                )
    return list(out.values())


# -- the ticker --------------------------------------------------------------------------------


class _Tickers:
    """One KiteTicker per 3000 instruments; callbacks put (kind, connection, ...) on `events`."""

    def __init__(self, api_key: str, access_token: str, root: str, tokens: list[int]) -> None:
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.groups = [tokens[i : i + MAX_PER_CONNECTION] for i in range(0, len(tokens), MAX_PER_CONNECTION)]
        self.api_key, self.access_token, self.root = api_key, access_token, root
        self.kts: list[Any] = []

    def start(self) -> None:
        from kiteconnect import KiteTicker
        from twisted.internet import reactor

        for n, group in enumerate(self.groups):
            kt = KiteTicker(self.api_key, self.access_token, root=self.root, reconnect_max_delay=5)
            self._wire(kt, n, group)
            self.kts.append(kt)
            if n == 0:
                kt.connect(threaded=True)
            else:
                reactor.callFromThread(kt.connect)

    def _wire(self, kt: Any, n: int, tokens: list[int]) -> None:
        put = self.events.put

        def on_connect(ws: Any, response: Any) -> None:
            ws.subscribe(tokens)
            ws.set_mode(ws.MODE_FULL, tokens)
            put(("connect", n))

        kt.on_connect = on_connect
        kt.on_ticks = lambda ws, ticks: put(("ticks", n, ticks))
        kt.on_close = lambda ws, code, reason: put(("close", n, code, str(reason)))
        kt.on_error = lambda ws, code, reason: put(("error", n, code, str(reason)))
        kt.on_reconnect = lambda ws, attempts: put(("reconnect", n, attempts))
        kt.on_noreconnect = lambda ws: put(("noreconnect", n))

    def close(self) -> None:
        if not self.kts:
            return
        from twisted.internet import reactor

        for kt in self.kts:
            reactor.callFromThread(kt.close)  # stop_retry + close frame


# -- the summary -------------------------------------------------------------------------------


@dataclass
class SeriesDiff:
    symbol: str
    timeframe: str
    cached: int  # candles of the day in the cache before
    kite: int  # Kite's complete candles of the day
    differed: int  # same ts, another OHLC or volume
    missing: int  # Kite has it, the cache did not
    extra: int  # the cache had it, Kite does not
    max_price_ticks: float  # the largest |price difference| in NSE ticks (0.05)
    max_volume_pct: float  # the largest |volume difference| in % of Kite's

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReconcileReport:
    day: date
    series: list[SeriesDiff] = field(default_factory=list)

    @property
    def differed(self) -> int:
        return sum(s.differed + s.missing + s.extra for s in self.series)

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "differed": self.differed, "series": [s.to_dict() for s in self.series]}

    def line(self) -> str:
        worst_p = max((s.max_price_ticks for s in self.series), default=0.0)
        worst_v = max((s.max_volume_pct for s in self.series), default=0.0)
        n = sum(s.kite for s in self.series)
        return (
            f"reconciled {len(self.series)} series of {self.day}: {self.differed} of {n} candles differed from Kite's "
            f"historical (max {worst_p:g} ticks, volume {worst_v:.2f}%); the cache now holds Kite's"
        )


@dataclass
class StreamSummary:
    symbols: list[str]
    timeframes: list[str]
    started: datetime
    stopped: datetime | None = None
    reason: str = ""  # until, signal, auth, noreconnect
    ticks: int = 0
    used: int = 0
    late: int = 0
    untimed: int = 0
    outside: int = 0
    written: int = 0  # candles written from ticks
    fetched: int = 0  # tainted candles written from the historical API
    gaps: int = 0  # tainted ranges
    unfilled: int = 0  # tainted ranges Kite had no candles for (after retries)
    connects: int = 0
    disconnects: int = 0
    reconnects: int = 0  # connections made again after a loss
    retries: int = 0  # KiteTicker's on_reconnect: failed attempts retried
    reconciled: ReconcileReport | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("reconciled", "started", "stopped")}
        out["started"] = self.started.isoformat()
        out["stopped"] = self.stopped.isoformat() if self.stopped else None
        out["reconciled"] = self.reconciled.to_dict() if self.reconciled else None
        return out

    def line(self) -> str:
        return (
            f"stream stopped ({self.reason}): {self.ticks} ticks, {self.written} candles from ticks, "
            f"{self.fetched} from the historical API ({self.gaps} gaps), {self.late} late ticks ignored, "
            f"{self.reconnects} reconnects"
        )


# -- the session -------------------------------------------------------------------------------


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (the stream then writes what is complete and returns)."""
    handler = lambda signum, frame: stop.set()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet_client_logs() -> None:
    """kiteconnect logs every close at ERROR (and autobahn's reasons carry the URL with the
    token): mde reports connection events itself, so its loggers stay out of stderr."""
    for name in ("kiteconnect", "kiteconnect.ticker"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _rejected(reason: str) -> bool:
    return bool(re.search(r"\b403\b", reason)) or "forbidden" in reason.lower()


class _Session:
    def __init__(
        self,
        engine: MarketDataEngine,
        series: list[Streamed],
        tfs: list[Timeframe],
        clock: StreamClock,
        grace: float,
        say: Callable[[str], None],
        connections: int = 1,
    ) -> None:
        self.connections = connections
        self.engine, self.series, self.tfs, self.clock, self.say = engine, series, tfs, clock, say
        self.by_token = {s.token: s for s in series}
        self.builder = CandleBuilder(self.by_token, tfs, now=clock.now(), grace=grace, index_volume=0)
        self.pending: list[tuple[Tainted, int, float]] = []  # (range, tries, next try at monotonic)
        self.summary = StreamSummary([s.symbol for s in series], [tf.name for tf in tfs], clock.now())
        self.up: set[int] = set()
        self.auth_failed = False
        self.gave_up = False

    # candles -------------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Today's candles between the last written one and this start (a restart): from Kite."""
        start = self.builder.watermark
        for s in self.series:
            for tf in self.tfs:
                manifest = self.engine.store.manifest(s.instrument, tf)
                if manifest is None or manifest.last_ts is None:
                    continue
                last_close = self.engine.calendar.close_time(manifest.last_ts, tf)
                if last_close.astimezone(IST).date() == start.astimezone(IST).date() and last_close < start:
                    self.pending.append((Tainted(s.token, tf, last_close, start), 0, 0.0))

    def write(self, emitted_candles: dict[tuple[int, str], pl.DataFrame]) -> None:
        now = self.clock.now()
        name = self.engine.source.name
        for (token, tf_name), frame in emitted_candles.items():
            s = self.by_token[token]
            self.engine.store.write(s.instrument, parse(tf_name), frame, source=name, now=now, origin="ticks")
            self.summary.written += frame.height

    def poll(self) -> None:
        emitted = self.builder.poll(self.clock.now())
        if emitted.candles:
            self.write(emitted.candles)
        for gap in emitted.tainted:
            self.summary.gaps += 1
            self.pending.append((gap, 0, 0.0))

    def fetch_tainted(self, force: bool = False) -> None:
        """One historical request per series per gap; Kite may lag: retried a few times."""
        keep: list[tuple[Tainted, int, float]] = []
        name = self.engine.source.name
        for gap, tries, due in self.pending:
            if not force and due > _time.monotonic():
                keep.append((gap, tries, due))
                continue
            s = self.by_token[gap.token]
            last = gap.end - timedelta(seconds=1)
            try:
                frame = self.engine.source.historical(s.instrument, gap.timeframe, gap.start, last)
            except AuthError:
                raise
            except SourceError as exc:  # Kite busy or down: the gap waits, the stream goes on
                if force or tries + 1 >= TAINT_TRIES:
                    self.summary.unfilled += 1
                    self.say(
                        f"{s.symbol} {gap.timeframe}: could not fetch {gap.start:%H:%M}-{gap.end:%H:%M} "
                        f"({exc.message}); run `mde refresh` later to fill it"
                    )
                else:
                    keep.append((gap, tries + 1, _time.monotonic() + TAINT_RETRY_S))
                continue
            if not frame.is_empty():
                frame = frame.filter((pl.col("ts") >= gap.start) & (pl.col("ts") < gap.end))
                # only complete candles (Kite serves the running one partial)
                cal, tf_gap, end = self.engine.calendar, gap.timeframe, gap.end
                frame = frame.filter(
                    pl.Series([cal.close_time(ts, tf_gap) <= end for ts in frame["ts"].to_list()], dtype=pl.Boolean)
                )
            if frame.is_empty() and tries + 1 < TAINT_TRIES and not force:
                keep.append((gap, tries + 1, _time.monotonic() + TAINT_RETRY_S))
                continue
            if frame.is_empty():
                self.summary.unfilled += 1
                self.say(
                    f"{s.symbol} {gap.timeframe}: Kite has no candles for {gap.start:%H:%M}-{gap.end:%H:%M} yet; "
                    "run `mde refresh` later to fill it"
                )
                continue
            self.engine.store.write(s.instrument, gap.timeframe, frame, source=name, now=self.clock.now())
            self.summary.fetched += frame.height
        self.pending = keep

    # events --------------------------------------------------------------------------------
    def on_event(self, event: tuple[Any, ...]) -> None:
        kind, n = event[0], event[1]
        if kind == "ticks":
            ticks = event[2]
            self.builder.add(ticks)
            stamps = [t["exchange_timestamp"] for t in ticks if t.get("exchange_timestamp") is not None]
            if stamps and self.clock.market_time:
                self.clock.saw(max(stamps).timestamp())
        elif kind == "connect":
            self.summary.connects += 1
            if self.summary.connects > self.connections:
                self.summary.reconnects += 1
            self.up.add(n)
            if len(self.up) == self.connections:
                self.builder.connected(self.clock.now())
            self.say(
                f"{self._stamp()} connected ({self.summary.connects}); subscribed {len(self.by_token)} instruments in full mode"
            )
        elif kind in ("close", "error"):
            reason = str(event[3])
            if _rejected(reason):
                self.auth_failed = True
            if kind == "close" and n in self.up:
                self.up.discard(n)
                self.summary.disconnects += 1
                self.builder.disconnected(self.clock.now())
                self.say(f"{self._stamp()} disconnected (code {event[2]}); KiteTicker reconnects by itself")
        elif kind == "reconnect":
            self.summary.retries += 1
            self.say(f"{self._stamp()} reconnecting (attempt {event[2]})")
        elif kind == "noreconnect":
            self.gave_up = True
            self.say(f"{self._stamp()} KiteTicker gave up reconnecting")

    def _stamp(self) -> str:
        return f"{self.clock.now():%H:%M:%S}"

    def minute_line(self) -> str:
        st = self.builder.stats
        state = "connected" if self.builder.is_connected else "disconnected"
        return (
            f"{self._stamp()} {state}: {st.received} ticks, {self.summary.written} candles written, "
            f"{self.summary.fetched} fetched, {st.late} late, {len(self.pending)} gaps pending"
        )

    def finish(self) -> None:
        st = self.builder.stats
        sm = self.summary
        sm.ticks, sm.used, sm.late, sm.untimed, sm.outside = st.received, st.used, st.late, st.untimed, st.outside
        sm.stopped = self.clock.now()


def run_stream(
    engine: MarketDataEngine,
    symbols: Sequence[str],
    timeframes: Iterable[str],
    *,
    until: str | datetime | None = None,
    reconcile_after: bool = True,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = lambda line: None,
    every: float = 60.0,
) -> StreamSummary:
    """Stream `symbols` until `until` (then reconcile the day), `stop` is set, or the token dies.

    `say` gets the event lines and one status line per `every` seconds of the stream's clock."""
    tfs = sorted({parse(t) for t in timeframes}, key=lambda t: t.minutes)
    if not tfs:
        raise InputError("no timeframe to build; give one like --timeframe 1m")
    settings = engine.settings
    clock = StreamClock(settings.now)
    end = until if isinstance(until, datetime) else parse_until(until, clock.now())
    if end is not None and end <= clock.now():
        raise InputError(f"--until {end:%Y-%m-%d %H:%M} IST has already passed (now is {clock.now():%Y-%m-%d %H:%M})")
    series = _plan(engine, list(symbols), tfs)  # resolves through Kite's instruments list: the token is checked
    source = engine.source
    api_key = getattr(source, "api_key")  # noqa: B009 - a KiteSource
    access = source.access_token()  # type: ignore[attr-defined]
    stop = stop or threading.Event()
    _quiet_client_logs()
    tickers = _Tickers(api_key, access, settings.kite.ws_root, [s.token for s in series])
    session = _Session(engine, series, tfs, clock, settings.stream_grace, say, len(tickers.groups))
    session.catch_up()
    reason = ""
    tickers.start()
    next_line = clock.now().timestamp() // every * every + every
    try:
        while True:
            try:
                event = tickers.events.get(timeout=0.1)
                session.on_event(event)
                while True:  # drain what is there before polling
                    session.on_event(tickers.events.get_nowait())
            except queue.Empty:
                pass
            session.poll()
            if session.pending and not session.auth_failed:
                session.fetch_tainted()
            now = clock.now()
            if now.timestamp() >= next_line:
                next_line = now.timestamp() // every * every + every
                say(session.minute_line())
            if session.auth_failed:
                reason = "auth"
                break
            if session.gave_up:
                reason = "noreconnect"
                break
            if stop.is_set():
                reason = "signal"
                break
            if end is not None and now >= end + timedelta(seconds=settings.stream_grace):
                reason = "until"
                break
    finally:
        tickers.close()
    session.poll()  # every candle complete by now
    if reason != "auth" and session.pending:
        session.fetch_tainted(force=True)
    session.summary.reason = reason
    session.finish()
    if reason == "auth":
        raise AuthError(
            "Kite's ticker rejected the access token (tokens expire daily at ~06:00 IST): run `mde login`; "
            f"the {session.summary.written} candles built so far are in the cache"
        )
    if reason == "noreconnect":
        raise SourceUnavailable(
            "lost the connection to Kite's ticker and KiteTicker gave up reconnecting; "
            "the candles built so far are in the cache. Run `mde stream` again"
        )
    if reason == "until" and reconcile_after and session.summary.written:
        day = (end or clock.now()).astimezone(IST).date()
        session.summary.reconciled = reconcile(
            engine, [s.symbol for s in series], [tf.name for tf in tfs], day, now=clock.now()
        )
    return session.summary


# -- reconciliation ----------------------------------------------------------------------------


def reconcile(
    engine: MarketDataEngine,
    symbols: Sequence[str],
    timeframes: Iterable[str],
    day: date | str,
    *,
    now: datetime | None = None,
) -> ReconcileReport:
    """Replace each series' candles of `day` with Kite's historical ones (one atomic write per
    series), as `mde fetch --from DAY --to DAY` would have written them, and say what differed."""
    from .engine import _as_instant

    if isinstance(day, str):
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            raise InputError(f"bad --reconcile date {day!r}; use YYYY-MM-DD") from None
    now = now or engine.now()
    lo = _as_instant(day, "date")
    hi = _as_instant(day, "date", end_of_day=True)
    assert lo is not None and hi is not None
    if lo > now:
        raise InputError(f"{day} is in the future (now is {now:%Y-%m-%d %H:%M} IST); nothing to reconcile")
    hi = min(hi, now)
    if not engine.has_session(lo, hi):
        raise InputError(f"{day} has no NSE session; nothing to reconcile")
    report = ReconcileReport(day)
    source = engine.source
    for symbol in dict.fromkeys(symbols):
        inst = source.resolve(symbol)
        for tf in sorted({parse(t) for t in timeframes}, key=lambda t: t.minutes):
            raw = source.historical(inst, tf, lo, hi)
            fresh = engine._complete(raw, tf, now)
            cached = engine.store.read(inst, tf).filter(pl.col("ts").is_between(lo, hi))
            report.series.append(_diff(symbol, tf, cached, fresh))
            covered = engine._vouched(tf, lo, hi, fresh, now)
            engine.store.write(inst, tf, fresh, source=source.name, covered=covered, now=now, replace=(lo, hi))
    return report


def _diff(symbol: str, tf: Timeframe, cached: pl.DataFrame, kite: pl.DataFrame) -> SeriesDiff:
    cols = ["open", "high", "low", "close"]
    joined = cached.join(kite, on="ts", how="full", suffix="_k", coalesce=True)
    both = joined.filter(pl.col("open").is_not_null() & pl.col("open_k").is_not_null())
    price = both.select(pl.max_horizontal([(pl.col(c) - pl.col(f"{c}_k")).abs() for c in cols]).alias("d"))["d"]
    vol_a = both["volume"].fill_null(0).cast(pl.Float64)
    vol_b = both["volume_k"].fill_null(0).cast(pl.Float64)
    vol_pct = (
        ((vol_a - vol_b).abs() / vol_b.clip(lower_bound=1.0) * 100.0)
        if both.height
        else pl.Series([], dtype=pl.Float64)
    )
    differs = (price > 1e-9) | (vol_a != vol_b) if both.height else pl.Series([], dtype=pl.Boolean)
    return SeriesDiff(
        symbol=symbol,
        timeframe=tf.name,
        cached=cached.height,
        kite=kite.height,
        differed=int(differs.sum()) if both.height else 0,
        missing=joined.filter(pl.col("open").is_null()).height,
        extra=joined.filter(pl.col("open_k").is_null()).height,
        max_price_ticks=round(float(price.max() or 0.0) / PRICE_TICK, 2) if both.height else 0.0,  # type: ignore[arg-type]
        max_volume_pct=round(float(vol_pct.max() or 0.0), 4) if both.height else 0.0,  # type: ignore[arg-type]
    )
