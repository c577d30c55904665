"""Zerodha Kite Connect as a candle source, through Zerodha's own client.

The client is imported lazily (it pulls in twisted, ~260 ms). Everything it raises goes
through the one map in `errors.py` (`kite_error`), chained with `from`; `call()` retries what
that map calls retryable (429s with a growing back-off that holds every thread, outages and
timeouts with backoff and jitter) and then gives up with RateLimited or SourceUnavailable.

Historical requests are split into chunks within Kite's per-interval limits and sent
through one rate limiter per process and endpoint class (historical: 3 per second), so a
steady run never sees a 429. Messages never contain the access token or API secret.

The client is kiteconnect's own `KiteConnect`, subclassed only to read candle timestamps
with `datetime.fromisoformat` instead of `dateutil.parser.parse` (same instants and
offsets, ~150x faster; see `_fast_client_class`). With dateutil, parsing one 60-day 1m
chunk took ~1 s of pure Python under the GIL, and a back-fill was bound by it rather than
by Kite's rate.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from ...candles import empty_candles, normalize
from ...clock import IST
from ...errors import AuthError, MdeError, RateLimited, SourceUnavailable
from ...symbols import Instrument
from ...timeframes import Timeframe
from .. import SourceStats
from .errors import Answer, Malformed, kite_error, retryable

if TYPE_CHECKING:
    from ...config import Settings
    from .instruments import InstrumentCatalog

log = logging.getLogger("mde.kite")
T = TypeVar("T")

# Kite's maximum range per historical request, in calendar days counted inclusively.
MAX_DAYS: dict[str, int] = {
    "minute": 60,
    "3minute": 100,
    "5minute": 100,
    "10minute": 100,
    "15minute": 200,
    "30minute": 200,
    "60minute": 400,
    "day": 2000,
}
DEFAULT_DEADLINE = 30.0  # seconds for one request, connection to last byte ([kite] deadline)
# Requests per second per endpoint class (per api_key).
RATE_LIMITS = {"historical": 3, "quote": 1, "other": 10}


class _Slot:
    """One request's hold on a limiter, from just before it is sent until its answer's
    headers arrived or it failed (`end`, None while in flight)."""

    __slots__ = ("end",)

    def __init__(self) -> None:
        self.end: float | None = None


class RateLimiter:
    """At most `rate` requests in any `window` seconds as the server counts them; thread-safe.

    Kite counts a request when it arrives, which is some time after we decide to send it
    (the GIL, connection set-up, the network) and before its answer reaches us. So a request
    holds its slot from just before it is sent until its answer's headers arrive (or it
    fails), and the slot frees `window + margin` seconds after that. Then any `rate + 1`
    requests arrive more than `window` apart, however their sends were delayed: strictly
    safe for a sliding window (and a fixed one). `clock` and `sleep` are injectable so that
    tests can drive it (and a server) on a simulated clock.
    """

    def __init__(
        self,
        rate: int,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 0.02,
    ) -> None:
        self.rate, self.window, self.clock, self.sleep = rate, window, clock, sleep
        self.span = window + margin
        self._slots: list[_Slot] = []
        self._hold_until = float("-inf")
        self._cond = threading.Condition()

    def try_acquire(self) -> tuple[_Slot | None, float | None]:
        """Take a slot if one is free now: (slot, 0.0). Else (None, seconds until one may be),
        or (None, None) while every slot is in flight (one frees when its answer is in)."""
        with self._cond:
            now = self.clock()
            self._slots = [s for s in self._slots if s.end is None or now - s.end < self.span]
            if self._hold_until > now:
                return None, self._hold_until - now
            if len(self._slots) < self.rate:
                slot = _Slot()
                self._slots.append(slot)
                return slot, 0.0
            ends = [s.end for s in self._slots if s.end is not None]
            return None, (min(ends) + self.span - now if ends else None)

    def acquire(self) -> _Slot:
        """Wait for a free slot and take it; hand it back with `release` once answered."""
        with self._cond:
            while True:
                slot, wait = self.try_acquire()
                if slot is not None:
                    return slot
                if wait is None:
                    self._cond.wait(0.5)  # every slot is in flight: woken when one is answered
                else:
                    self._cond.release()
                    try:
                        self.sleep(max(wait, 0.001))  # at least 1 ms: float rounding must not spin
                    finally:
                        self._cond.acquire()

    def release(self, slot: _Slot) -> None:
        """The request was answered (headers in) or failed; the first call counts."""
        with self._cond:
            if slot.end is None:
                slot.end = self.clock()
                self._cond.notify_all()

    def penalise(self, seconds: float) -> None:
        """After a 429, hold every caller back for a while (the server's window is fuller than ours)."""
        with self._cond:
            self._hold_until = max(self._hold_until, self.clock() + seconds)


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(api_key: str, kind: str) -> RateLimiter:
    """One limiter per api_key and endpoint class for the whole process (all symbols, timeframes)."""
    with _LIMITERS_LOCK:
        key = (api_key, kind)
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(RATE_LIMITS[kind])
        return _LIMITERS[key]


@dataclass
class RetryPolicy:
    attempts: int = 5  # tries in all, for 5xx/timeouts/dropped connections
    attempts_429: int = 6  # tries in all while Kite answers 429
    base_delay: float = 0.5  # seconds; doubles each try, plus jitter
    delay_429: float = 1.0  # Kite's window is one second: wait 1 s, 2 s, 3 s ...
    max_delay: float = 8.0
    timeout: float = 7.0  # per socket read (kiteconnect's default)
    deadline: float = DEFAULT_DEADLINE  # per request, all of it: a server that trickles its answer is cut off

    def delay(self, attempt: int) -> float:
        d = min(self.max_delay, self.base_delay * 2.0**attempt)
        return d / 2 + random.uniform(0, d / 2)


def chunk_ranges(start: datetime, end: datetime, interval: str) -> list[tuple[datetime, datetime]]:
    """Split [start, end] into contiguous requests within Kite's limit for `interval`.

    Each chunk spans at most MAX_DAYS calendar days counted inclusively; chunks after the
    first start at 00:00 and all but the last end at 23:59:59, so none overlap or leave a gap.
    """
    max_days = MAX_DAYS[interval]
    out = []
    lo = start
    while lo <= end:
        last_day = lo.date() + timedelta(days=max_days - 1)
        hi = min(end, datetime.combine(last_day, datetime.max.time().replace(microsecond=0), IST))
        out.append((lo, hi))
        lo = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), IST)
    return out


def _wall(ts: datetime) -> str:
    """Kite wants IST wall-clock strings; a tz-aware datetime would be sent without conversion."""
    return ts.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


class KiteSource:
    name = "kite"

    def __init__(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        limiters: dict[str, RateLimiter] | None = None,
        max_workers: int = 3,
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy(deadline=getattr(settings.kite, "deadline", DEFAULT_DEADLINE))
        self._limiters = limiters
        self.max_workers = max_workers
        self.stats = SourceStats()
        self._client: Any = None
        self._catalog: InstrumentCatalog | None = None
        self._secrets = [s for s in (settings.kite.access_token, settings.kite.api_secret) if s]

    # -- the client -----------------------------------------------------------------------
    @property
    def api_key(self) -> str:
        from .auth import require_api_key

        return require_api_key(self.settings)

    def access_token(self) -> str:
        from .auth import access_token

        token = access_token(self.settings, self.settings.clock())
        if not token:
            raise AuthError(
                "no valid Kite access token (they expire daily at ~06:00 IST): run `mde login`, or set KITE_ACCESS_TOKEN"
            )
        if token not in self._secrets:
            self._secrets.append(token)
        return token

    @property
    def client(self) -> Any:
        if self._client is None:
            client_class = _fast_client_class()
            client = client_class(
                self.api_key, access_token=self.access_token(), root=self.settings.kite.root, timeout=self.retry.timeout
            )
            adapter = _tracking_adapter()()
            client.reqsession.mount("https://", adapter)
            client.reqsession.mount("http://", adapter)
            client.reqsession.hooks["response"].append(_on_response)
            self._client = client
        return self._client

    def limiter(self, kind: str) -> RateLimiter:
        if self._limiters is not None:
            return self._limiters[kind]
        return shared_limiter(self.api_key, kind)

    def clock(self) -> datetime | None:
        return None

    # -- errors and retries -------------------------------------------------------------------
    @contextmanager
    def _mapped(self, what: str, call: _Call | None = None) -> Iterator[None]:
        """Failures of the client as mde's errors, through the one map in `errors.py`."""
        try:
            yield
        except MdeError:
            raise
        except Exception as exc:
            answer = Answer(
                status=call.status if call else None,
                content_type=call.content_type if call else None,
                cut_at_deadline=self.retry.deadline if call and call.expired else None,
                timeout=self.retry.timeout,
            )
            error = kite_error(exc, what, self._secrets, answer=answer)
            if error is None:
                raise
            raise error from error.__cause__

    def call(self, kind: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the client through the rate limiter, retrying what is worth retrying."""
        attempts = attempts_429 = 0
        while True:
            limiter = self.limiter(kind)
            slot = limiter.acquire()
            self.stats.add(requests=1, historical_requests=1 if kind == "historical" else 0)
            call = _Call(limiter, slot)
            try:
                with self._mapped(what, call):
                    return self._timed(call, fn, *args, **kwargs)
            except MdeError as exc:
                if not retryable(exc):
                    raise
                if isinstance(exc, RateLimited):
                    self.stats.add(rate_limited=1)
                    attempts_429 += 1
                    if attempts_429 >= self.retry.attempts_429:
                        raise RateLimited(
                            f"Kite kept answering 'too many requests' while {what} after {attempts_429} tries; "
                            "another program may be using this API key. Try again in a minute"
                        ) from exc.__cause__
                    delay = self.retry.delay_429 * attempts_429
                    limiter.penalise(delay)  # every thread waits, not just this one
                    log.info("429 from Kite while %s; backing off %.1fs", what, delay)
                else:
                    attempts += 1
                    if attempts >= self.retry.attempts:
                        raise SourceUnavailable(
                            f"{exc.message}; gave up after {attempts} tries. Try again later"
                        ) from exc.__cause__
                    delay = self.retry.delay(attempts - 1)
                    log.info("%s; retry %d in %.1fs", exc.message, attempts, delay)
                    self.stats.add(retries=1)
                    time.sleep(delay)
            finally:
                limiter.release(slot)

    def _timed(self, call: _Call, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client call under the request deadline: a watchdog shuts the connection's
        socket down when the deadline passes, which ends any read in progress at once."""
        _ACTIVE.call = call
        watchdog = threading.Timer(self.retry.deadline, call.expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            return fn(*args, **kwargs)
        finally:
            with call._lock:
                call.done = True
            watchdog.cancel()
            _ACTIVE.call = None
            call.limiter.release(call.slot)  # answered or failed: not after a retry's back-off

    # -- symbols ------------------------------------------------------------------------
    @property
    def catalog(self) -> InstrumentCatalog:
        """Kite's instruments list for this cache (`<cache>/_meta`), downloaded at most once a day."""
        if self._catalog is None:
            from .instruments import InstrumentCatalog

            folder = self.settings.cache_dir / "_meta"
            self._catalog = InstrumentCatalog(folder, self.download_instruments, self.settings.clock)
        return self._catalog

    def download_instruments(self) -> list[dict[str, Any]]:
        return self.call("other", "downloading the instruments list", self.client.instruments)

    def resolve(self, symbol: str) -> Instrument:
        """The instrument Kite will be asked for. Resolving records its token in the cache's
        `_meta`, so a command that cannot ask Kite (no key) fails before that, leaving no trace."""
        self.api_key  # noqa: B018 - raises ConfigError (NO_API_KEY) without a key
        return self.catalog.resolve(symbol, self.settings.aliases)

    # -- candles ------------------------------------------------------------------------
    def historical_chunks(
        self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Iterator[tuple[datetime, datetime, pl.DataFrame]]:
        """[start, end] as Kite's chunks, newest first, each (lo, hi, candles) as soon as it and
        the newer ones have arrived; up to `max_workers` requests stay in flight meanwhile, so a
        caller that writes each chunk before taking the next costs no speed. Closing the
        iterator early abandons the chunks not yet asked for."""
        if instrument.token is None:
            instrument = self.resolve(instrument.key)
        interval = timeframe.kite_interval
        chunks = chunk_ranges(start, end, interval)[::-1]
        one = self._chunk_fetcher(instrument, timeframe)
        if len(chunks) == 1:
            yield chunks[0][0], chunks[0][1], normalize(one(chunks[0]))
            return
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(chunks)))
        pending: deque[tuple[tuple[datetime, datetime], Any]] = deque()
        queue = iter(chunks)
        try:
            for chunk in itertools.islice(queue, self.max_workers):
                pending.append((chunk, pool.submit(one, chunk)))
            while pending:
                chunk, future = pending.popleft()
                frame = future.result()
                following = next(queue, None)
                if following is not None:
                    pending.append((following, pool.submit(one, following)))
                yield chunk[0], chunk[1], normalize(frame)
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True)

    def _chunk_fetcher(
        self, instrument: Instrument, timeframe: Timeframe
    ) -> Callable[[tuple[datetime, datetime]], pl.DataFrame]:
        interval = timeframe.kite_interval
        with_oi = instrument.exchange in ("NFO", "BFO", "MCX", "CDS")
        what = f"fetching {instrument} {timeframe}"

        def one(chunk: tuple[datetime, datetime]) -> pl.DataFrame:
            lo, hi = chunk
            rows = self.call(
                "historical",
                f"{what} {lo:%Y-%m-%d}..{hi:%Y-%m-%d}",
                self.client.historical_data,
                instrument.token,
                _wall(lo),
                _wall(hi),
                interval,
                False,
                with_oi,
            )
            return _to_frame(rows)

        return one

    def historical(self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime) -> pl.DataFrame:
        if instrument.token is None:
            instrument = self.resolve(instrument.key)
        chunks = chunk_ranges(start, end, timeframe.kite_interval)
        one = self._chunk_fetcher(instrument, timeframe)

        if len(chunks) == 1:
            frames = [one(chunks[0])]
        else:
            # Workers keep up to `max_workers` requests in flight, so Kite's (and the network's)
            # latency overlaps; the shared limiter alone caps request starts at Kite's rate.
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(chunks))) as pool:
                frames = list(pool.map(one, chunks))
        frames = [f for f in frames if not f.is_empty()]
        if not frames:
            return empty_candles()
        return normalize(pl.concat(frames, how="diagonal_relaxed"))

    # -- quotes (paper trading) ---------------------------------------------------------------
    def ltp(self, keys: list[str]) -> dict[str, float]:
        """Last traded prices for up to 1000 `EXCH:SYMBOL` keys in one request."""
        out: dict[str, float] = {}
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            data = self.call("quote", f"reading LTP of {len(batch)} instruments", self.client.ltp, batch)
            out.update({k: float(v["last_price"]) for k, v in data.items()})
        return out


class _Call:
    """One request in flight: its limiter slot, what its answer looked like, its deadline."""

    def __init__(self, limiter: RateLimiter, slot: _Slot) -> None:
        self.limiter, self.slot = limiter, slot
        self.status: int | None = None
        self.content_type: str | None = None
        self.conn: Any = None  # the urllib3 connection carrying it
        self.expired = self.done = False
        self._lock = threading.Lock()

    def answered(self, status: int, content_type: str | None) -> None:
        self.status, self.content_type = status, content_type
        self.limiter.release(self.slot)  # Kite has counted it by now

    def expire(self) -> None:
        """The deadline passed: cut the connection (a read blocked on it returns at once)."""
        with self._lock:
            if self.done:
                return
            self.expired = True
            sock = getattr(self.conn, "sock", None)
        if sock is None:  # still connecting: the connect timeout bounds that; look again shortly
            retry = threading.Timer(0.05, self.expire)
            retry.daemon = True
            retry.start()
            return
        import socket

        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_ACTIVE = threading.local()  # .call: the _Call this thread is making


def _on_response(response: Any, *args: Any, **kwargs: Any) -> None:
    """requests' response hook: runs once the headers are in, before the body is read."""
    call = getattr(_ACTIVE, "call", None)
    if call is not None:
        call.answered(response.status_code, response.headers.get("content-type"))


@functools.cache
def _tracking_adapter() -> Any:
    """A requests adapter whose connections tell the current _Call which socket they use, so
    its watchdog can cut exactly that request off at the deadline."""
    import requests.adapters
    from urllib3 import connection, connectionpool

    def track(conn: Any) -> None:
        call = getattr(_ACTIVE, "call", None)
        if call is not None:
            call.conn = conn

    class Conn(connection.HTTPConnection):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            track(self)
            return super().request(*args, **kwargs)

    class SConn(connection.HTTPSConnection):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            track(self)
            return super().request(*args, **kwargs)

    class Pool(connectionpool.HTTPConnectionPool):
        ConnectionCls = Conn

    class SPool(connectionpool.HTTPSConnectionPool):
        ConnectionCls = SConn

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SPool}

    return Adapter


def parse_candle_ts(text: str) -> datetime:
    """One candle timestamp of Kite's ("2024-11-14T09:15:00+0530") as kiteconnect reads it.

    `datetime.fromisoformat` (Python 3.11+ accepts "+0530") gives the same wall time and UTC
    offset as `dateutil.parser.parse`, which kiteconnect uses, in ~0.4 us instead of ~60 us;
    only the tzinfo class differs (`timezone` vs dateutil's `tzoffset`, both fixed offsets).
    Anything it cannot read goes to dateutil, so such input fails or parses as it always did.
    """
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        import dateutil.parser  # type: ignore[import-untyped]  # kiteconnect's dependency, no stubs

        parsed: datetime = dateutil.parser.parse(text)
        return parsed


@functools.cache
def _fast_client_class() -> type:
    """kiteconnect's KiteConnect with a faster `_format_historical` (built on first use, so that
    importing this module does not import kiteconnect).

    Everything else (requests, sessions, the exceptions it raises) is the client's own. The
    override mirrors kiteconnect 5.x's `_format_historical` field for field
    (including `oi`, present only in 7-value candles); tests/test_kite_source.py compares the
    two on the local server's responses.
    """
    from kiteconnect import KiteConnect

    class FastKiteConnect(KiteConnect):  # type: ignore[misc]
        def _format_historical(self, data: dict[str, Any]) -> list[dict[str, Any]]:
            records = []
            candles = data.get("candles") if isinstance(data, dict) else None
            if not isinstance(candles, list):
                raise Malformed(f"its 'candles' is {_shape(candles)}, not a list")
            for i, d in enumerate(candles, 1):
                if not isinstance(d, list) or len(d) not in (6, 7):
                    raise Malformed(f"candle {i} is {_shape(d)}, not [time, open, high, low, close, volume(, oi)]")
                try:
                    when = parse_candle_ts(d[0]) if isinstance(d[0], str) else None
                except (ValueError, TypeError, OverflowError):
                    when = None
                if when is None or when.utcoffset() is None:
                    raise Malformed(f"candle {i} has the time {str(d[0])[:40]!r}")
                for value in d[1:]:
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise Malformed(f"candle {i} ({d[0]}) has {str(value)[:40]!r} where a number belongs")
                record = {
                    "date": when,
                    "open": d[1],
                    "high": d[2],
                    "low": d[3],
                    "close": d[4],
                    "volume": d[5],
                }
                if len(d) == 7:
                    record["oi"] = d[6]
                records.append(record)
            return records

    return FastKiteConnect


def _shape(value: Any) -> str:
    """A few words on what a malformed value is (never the whole of it)."""
    if isinstance(value, str):
        return repr(value[:20])
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "missing" if value is None else f"a {type(value).__name__}"


def _to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Kite's records as the cache's frame. Prices may be JSON ints or floats, mixed in one
    answer (both are valid): each column is built as Float64 from Python floats."""
    if not rows:
        return empty_candles()

    def floats(name: str) -> pl.Series:
        return pl.Series(name, [None if r.get(name) is None else float(r[name]) for r in rows], dtype=pl.Float64)

    data: dict[str, Any] = {
        "ts": pl.Series([r["date"] for r in rows]).cast(pl.Datetime("us", "Asia/Kolkata")),
        "open": floats("open"),
        "high": floats("high"),
        "low": floats("low"),
        "close": floats("close"),
        "volume": floats("volume"),
    }
    if "oi" in rows[0]:
        data["oi"] = floats("oi")
    return pl.DataFrame(data)
