"""Zerodha Kite Connect as a candle source, through Zerodha's own client.

This is the only module that imports kiteconnect (lazily: it pulls in twisted, ~260 ms)
and the only place that catches its exceptions and `requests` errors. They are mapped
onto our error tree in `_mapped()`, chained with `from`:

    TokenException, 403           -> AuthError (token died ~06:00 IST: run `mde login`); no retry
    PermissionException           -> AuthError (the API key lacks this permission); no retry
    InputException                -> InputError with Kite's message; no retry
    NetworkException code 429     -> back off and retry, then RateLimited
    5xx, DataException (HTML page), timeouts, dropped connections
                                  -> retry with backoff and jitter, then SourceUnavailable

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
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from ..calendar import IST
from ..errors import AuthError, ConfigError, InputError, RateLimited, SourceError, SourceUnavailable
from ..store import empty_candles, normalize
from ..symbols import Instrument
from ..timeframes import Timeframe
from . import SourceStats

if TYPE_CHECKING:
    from ..config import Settings

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
# Requests per second per endpoint class (per api_key).
RATE_LIMITS = {"historical": 3, "quote": 1, "other": 10}


class RateLimiter:
    """At most `rate` request starts in any `window` seconds; thread-safe, blocking."""

    def __init__(self, rate: int, window: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.window, self.clock = rate, window, clock
        # A start is stamped here, but the request reaches Kite later by a varying delay (GIL
        # held by another worker decoding a response, connection set-up, network). Keep
        # starts a bit more than a window apart so Kite's own window never sees rate + 1.
        self.span = window * 1.1 + 0.002
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                while self._starts and now - self._starts[0] >= self.span:
                    self._starts.popleft()
                if len(self._starts) < self.rate:
                    self._starts.append(now)
                    return
                wait = self.span - (now - self._starts[0])
            time.sleep(wait)

    def penalise(self, seconds: float) -> None:
        """After a 429, hold every caller back for a while (the server's window is fuller than ours)."""
        with self._lock:
            until = self.clock() + seconds - self.span
            self._starts.clear()
            self._starts.extend([until] * self.rate)


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
    timeout: float = 7.0  # per request (kiteconnect's default)

    def delay(self, attempt: int) -> float:
        d = min(self.max_delay, self.base_delay * (2 ** attempt))
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
        self.retry = retry or RetryPolicy()
        self._limiters = limiters
        self.max_workers = max_workers
        self.stats = SourceStats()
        self._client: Any = None
        self._catalog: Any = None
        self._secrets = [s for s in (settings.kite.access_token, settings.kite.api_secret) if s]

    # -- the client -----------------------------------------------------------------------
    @property
    def api_key(self) -> str:
        key = self.settings.kite.api_key
        if not key:
            raise ConfigError("no Kite API key: set KITE_API_KEY or [kite] api_key in mde.toml")
        return key

    def access_token(self) -> str:
        from ..auth import access_token

        token = access_token(self.settings, self.settings.clock())
        if not token:
            raise AuthError("no valid Kite access token (they expire daily at ~06:00 IST): run `mde login`, or set KITE_ACCESS_TOKEN")
        if token not in self._secrets:
            self._secrets.append(token)
        return token

    @property
    def client(self) -> Any:
        if self._client is None:
            client_class = _fast_client_class()
            self._client = client_class(self.api_key, access_token=self.access_token(), root=self.settings.kite.root, timeout=self.retry.timeout)
        return self._client

    def limiter(self, kind: str) -> RateLimiter:
        if self._limiters is not None:
            return self._limiters[kind]
        return shared_limiter(self.api_key, kind)

    def clock(self) -> datetime | None:
        return None

    # -- error mapping and retries ----------------------------------------------------------
    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Translate kiteconnect and requests exceptions into ours, once, here."""
        import requests
        from kiteconnect import exceptions as kex

        try:
            yield
        except kex.TokenException as exc:
            raise AuthError(
                f"Kite rejected the access token while {what} (tokens expire daily at ~06:00 IST): run `mde login`"
            ) from exc
        except kex.PermissionException as exc:
            raise AuthError(f"Kite refused {what}: {self._redact(str(exc))} (does this API key have the historical-data add-on?)") from exc
        except kex.InputException as exc:
            raise InputError(f"Kite rejected {what}: {self._redact(str(exc))}") from exc
        except kex.NetworkException as exc:
            if getattr(exc, "code", None) == 429:
                raise _Retry429("Kite: too many requests") from exc
            raise _RetryOther(f"Kite network error ({getattr(exc, 'code', '?')})") from exc
        except kex.DataException as exc:
            code = getattr(exc, "code", 502)
            raise _RetryOther(f"Kite answered with something that is not JSON (HTTP {code}, likely an error page)") from exc
        except kex.GeneralException as exc:
            code = getattr(exc, "code", 500) or 500
            if code >= 500:
                raise _RetryOther(f"Kite server error {code}") from exc
            if code == 403:
                raise AuthError(f"Kite refused {what} (HTTP 403): run `mde login`") from exc
            raise SourceError(f"Kite error {code} while {what}: {self._redact(str(exc))}") from exc
        except kex.KiteException as exc:
            raise SourceError(f"Kite error while {what}: {self._redact(str(exc))}") from exc
        except requests.Timeout as exc:
            raise _RetryOther(f"Kite did not answer within {self.retry.timeout:.0f}s") from exc
        except requests.ConnectionError as exc:
            raise _RetryOther("cannot connect to Kite (network down?)") from exc
        except requests.RequestException as exc:
            raise _RetryOther(f"HTTP error talking to Kite ({type(exc).__name__})") from exc
        except KeyError as exc:  # kiteconnect crashes on a response without Content-Type
            raise _RetryOther("Kite answered without a Content-Type") from exc

    def call(self, kind: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the client through the rate limiter, retrying what is worth retrying."""
        attempts = attempts_429 = 0
        while True:
            self.limiter(kind).acquire()
            self.stats.add(requests=1, historical_requests=1 if kind == "historical" else 0)
            try:
                with self._mapped(what):
                    return fn(*args, **kwargs)
            except _Retry429 as exc:
                self.stats.add(rate_limited=1)
                attempts_429 += 1
                if attempts_429 >= self.retry.attempts_429:
                    raise RateLimited(
                        f"Kite kept answering 'too many requests' while {what} after {attempts_429} tries; "
                        "another program may be using this API key. Try again in a minute"
                    ) from exc.__cause__
                delay = self.retry.delay_429 * attempts_429
                self.limiter(kind).penalise(delay)  # every thread waits, not just this one
                log.info("429 from Kite while %s; backing off %.1fs", what, delay)
            except _RetryOther as exc:
                attempts += 1
                if attempts >= self.retry.attempts:
                    raise SourceUnavailable(f"{exc.message} while {what}; gave up after {attempts} tries. Try again later") from exc.__cause__
                delay = self.retry.delay(attempts - 1)
                log.info("%s while %s; retry %d in %.1fs", exc.message, what, attempts, delay)
                self.stats.add(retries=1)
                time.sleep(delay)

    # -- symbols ------------------------------------------------------------------------
    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            from ..instruments import InstrumentCatalog

            folder = self.settings.cache_dir / "_meta"
            self._catalog = InstrumentCatalog(folder, self.download_instruments, self.settings.clock)
        return self._catalog

    def download_instruments(self) -> list[dict]:
        return self.call("other", "downloading the instruments list", self.client.instruments)

    def resolve(self, symbol: str) -> Instrument:
        return self.catalog.resolve(symbol, self.settings.aliases)

    # -- candles ------------------------------------------------------------------------
    def historical(self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime) -> pl.DataFrame:
        if instrument.token is None:
            instrument = self.resolve(instrument.key)
        interval = timeframe.kite_interval
        with_oi = instrument.exchange in ("NFO", "BFO", "MCX", "CDS")
        chunks = chunk_ranges(start, end, interval)
        what = f"fetching {instrument} {timeframe}"

        def one(chunk: tuple[datetime, datetime]) -> pl.DataFrame:
            lo, hi = chunk
            rows = self.call(
                "historical", f"{what} {lo:%Y-%m-%d}..{hi:%Y-%m-%d}", self.client.historical_data,
                instrument.token, _wall(lo), _wall(hi), interval, False, with_oi,
            )
            return _to_frame(rows)

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


class _RetryOther(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Retry429(_RetryOther):
    pass


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
        import dateutil.parser

        return dateutil.parser.parse(text)


@functools.cache
def _fast_client_class() -> type:
    """kiteconnect's KiteConnect with a faster `_format_historical` (built on first use, so that
    importing this module does not import kiteconnect).

    Everything else (requests, sessions, the exceptions it raises) is the client's own. The override mirrors kiteconnect 5.x's `_format_historical` field for field
    (including `oi`, present only in 7-value candles); tests/test_kite_source.py compares the
    two on the local server's responses.
    """
    from kiteconnect import KiteConnect

    class FastKiteConnect(KiteConnect):  # type: ignore[misc]
        def _format_historical(self, data: dict) -> list[dict]:
            records = []
            for d in data["candles"]:
                record = {
                    "date": parse_candle_ts(d[0]),
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


def _to_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return empty_candles()
    data: dict[str, Any] = {
        "ts": pl.Series([r["date"] for r in rows]).cast(pl.Datetime("us", "Asia/Kolkata")),
        "open": [r["open"] for r in rows],
        "high": [r["high"] for r in rows],
        "low": [r["low"] for r in rows],
        "close": [r["close"] for r in rows],
        "volume": [r.get("volume") for r in rows],
    }
    if "oi" in rows[0]:
        data["oi"] = [r.get("oi") for r in rows]
    return pl.DataFrame(data)


def today_ist(now: datetime) -> date:
    return now.astimezone(IST).date()


def login_client(settings: Settings) -> Any:
    """A client without an access token, for the login exchange (`mde login`)."""
    from kiteconnect import KiteConnect

    from ..auth import require_api_key

    return KiteConnect(require_api_key(settings), root=settings.kite.root)
