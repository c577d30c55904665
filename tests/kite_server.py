"""A local, Kite Connect v3 compatible HTTP server for tests.

Tests drive the *real* ``kiteconnect.KiteConnect`` client against this server
(``KiteConnect(api_key, access_token=..., root=server.url)``) instead of mocking the
client, so the wire format, the client's Content-Type handling and its exception mapping
are all exercised for real.  The server reproduces what a market-data client sees
(see ``/work/shared/kite-api.md``):

* the JSON envelope ``{"status": ..., "data": ...}`` / ``{"status": "error", "message",
  "error_type", "data": null}`` with Kite's HTTP codes;
* historical candles with Kite's timestamp format (``2024-11-14T09:15:00+0530``),
  inclusive ``from``/``to``, per-interval range limits, minute aggregation aligned to the
  09:15 session open and partial buckets cut by ``to``;
* a "live" clock (``server.now``) so the running candle comes back partial;
* the instruments CSV dump, quotes, the login token exchange and the auth header;
* per-class sliding-window rate limits (429 ``NetworkException``);
* fault injection (JSON errors, HTML proxy pages, dropped sockets, slow responses);
* a request log, so tests can assert what was (not) called and how requests were spaced.

Only the standard library is used.  Example::

    with KiteServer() as server:
        server.load_csv(256265, "5minute", "/work/shared/data/nse/NIFTY50_5m_2024.csv")
        kite = KiteConnect(server.api_key, access_token=server.access_token, root=server.url)
        kite.historical_data(256265, "2024-06-03 09:15:00", "2024-06-03 15:29:00", "5minute")
"""

from __future__ import annotations

import bisect
import csv
import gzip
import hashlib
import io
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "IST",
    "INTERVAL_MINUTES",
    "MAX_DAYS",
    "DEFAULT_INSTRUMENTS_CSV",
    "SHARED_DATA",
    "KiteServer",
    "RequestRecord",
]

IST = timezone(timedelta(hours=5, minutes=30), "IST")

SHARED_DATA = Path("/work/shared/data")
DEFAULT_INSTRUMENTS_CSV = SHARED_DATA / "instruments.csv"

#: Kite's historical intervals and their length in minutes ("day" is a calendar day).
INTERVAL_MINUTES: dict[str, int] = {
    "minute": 1,
    "3minute": 3,
    "5minute": 5,
    "10minute": 10,
    "15minute": 15,
    "30minute": 30,
    "60minute": 60,
    "day": 1440,
}

#: Max calendar days per historical request, counted inclusively (kite-api.md §5).
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

#: Intraday buckets are aligned to the regular session open.
SESSION_OPEN = dtime(9, 15)

#: Requests per rate window, per endpoint class (kite-api.md §3).
DEFAULT_RATE_LIMITS: dict[str, int] = {"historical": 3, "quote": 1, "other": 10}

INSTRUMENTS_HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange\n"
)

TOKEN_ERROR_MESSAGE = "Incorrect `api_key` or `access_token`."

_HTML_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

# A candle row as stored: (open, high, low, close, volume, oi).
Row = tuple[float, float, float, float, int, int]


# --------------------------------------------------------------------------------------
# small value types


@dataclass
class RequestRecord:
    """One request as the server saw it; ``status`` is None when the socket was dropped.

    ``query`` holds the first value of each query parameter (handy for ``from``/``to``);
    ``query_all`` keeps repeated parameters such as quote's ``i``.
    """

    method: str
    path: str
    query: dict[str, str]
    query_all: dict[str, list[str]]
    time: float  # time.monotonic() when the request arrived
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    """A pending injected fault; consumed by the next ``remaining`` matching requests."""

    kind: str  # "fail" | "html" | "drop" | "delay" | "raw" | "trickle"
    remaining: int
    path_prefix: str | None
    status: int = 500
    error_type: str = "GeneralException"
    message: str = ""
    seconds: float = 0.0
    body: bytes = b""
    content_type: str = "application/json"

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and (self.path_prefix is None or path.startswith(self.path_prefix))


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str
    gzip_ok: bool = False
    trickle: float = 0.0  # > 0: send the body one byte per this many seconds


class _Drop:
    """Sentinel response: close the socket without answering."""


class _ApiError(Exception):
    """Raised inside handlers; becomes a Kite error envelope."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


class _Series:
    """The candles of one (token, interval), keyed by naive IST start time, kept sortable."""

    def __init__(self) -> None:
        self._rows: dict[datetime, Row] = {}
        self._keys: list[datetime] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, ts: datetime, row: Row) -> None:
        if ts not in self._rows:
            self._keys = None
        self._rows[ts] = row

    def keys(self) -> list[datetime]:
        if self._keys is None:
            self._keys = sorted(self._rows)
        return self._keys

    def range(self, lo: datetime, hi: datetime) -> list[tuple[datetime, Row]]:
        """Candles whose start is in [lo, hi], both ends inclusive."""
        keys = self.keys()
        i, j = bisect.bisect_left(keys, lo), bisect.bisect_right(keys, hi)
        return [(k, self._rows[k]) for k in keys[i:j]]

    def last_at_or_before(self, t: datetime | None) -> tuple[datetime, Row] | None:
        keys = self.keys()
        j = len(keys) if t is None else bisect.bisect_right(keys, t)
        return (keys[j - 1], self._rows[keys[j - 1]]) if j else None

    def any_in_open_interval(self, lo: datetime, hi: datetime) -> bool:
        """True if some candle starts strictly after ``lo`` and strictly before ``hi``."""
        keys = self.keys()
        i = bisect.bisect_right(keys, lo)
        return i < len(keys) and keys[i] < hi


# --------------------------------------------------------------------------------------
# helpers


def _to_ist_naive(value: datetime | date | str) -> datetime:
    """Normalise a candle timestamp to naive IST wall clock; naive input is refused
    because silently guessing a zone is exactly the bug the tests should catch."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    elif not isinstance(value, datetime) and isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"candle timestamp must be tz-aware, got {value!r}")
    return value.astimezone(IST).replace(tzinfo=None)


def _fmt_kite_ts(ts: datetime) -> str:
    """Kite's candle timestamp: ISO with an offset that has no colon."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + "+0530"


def _parse_kite_date(value: str | None, name: str) -> datetime:
    """Parse ``from``/``to`` the way Kite accepts them: IST wall clock, no offset."""
    if value is None or value == "":
        raise _ApiError(400, "InputException", f"missing `{name}` date")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            pass
    raise _ApiError(400, "InputException", f"invalid `{name}` date")


def _header(headers: dict[str, str], name: str) -> str:
    """Case-insensitive header lookup (HTTP header names are case-insensitive)."""
    name = name.lower()
    return next((v for k, v in headers.items() if k.lower() == name), "")


def _num(text: str, cast: Callable[[Any], Any], default: Any = 0) -> Any:
    text = (text or "").strip()
    return cast(float(text)) if text else default


def _aggregate(rows: Sequence[tuple[datetime, Row]]) -> Row:
    """OHLCV of consecutive candles: first open, max high, min low, last close, summed
    volume, last open interest."""
    o = rows[0][1][0]
    h = max(r[1][1] for r in rows)
    low = min(r[1][2] for r in rows)
    c = rows[-1][1][3]
    v = sum(r[1][4] for r in rows)
    return (o, h, low, c, v, rows[-1][1][5])


def _bucket_start(ts: datetime, minutes: int) -> datetime:
    """Start of the ``minutes`` bucket holding ``ts``, on a grid anchored at 09:15 that day."""
    anchor = datetime.combine(ts.date(), SESSION_OPEN)
    offset = int((ts - anchor).total_seconds() // 60)
    return anchor + timedelta(minutes=(offset // minutes) * minutes)


def _group_minutes(rows: Sequence[tuple[datetime, Row]], minutes: int) -> list[tuple[datetime, Row]]:
    """Kite-style grouping of minute candles into ``minutes`` buckets; a bucket cut short
    by the request window (or by the live clock) simply has fewer minutes."""
    out: list[tuple[datetime, Row]] = []
    current: list[tuple[datetime, Row]] = []
    current_start: datetime | None = None
    for ts, row in rows:
        start = _bucket_start(ts, minutes)
        if start != current_start and current:
            out.append((current_start, _aggregate(current)))  # type: ignore[arg-type]
            current = []
        current_start = start
        current.append((ts, row))
    if current:
        out.append((current_start, _aggregate(current)))  # type: ignore[arg-type]
    return out


def _interval_end(start: datetime, interval: str) -> datetime:
    if interval == "day":
        return datetime.combine(start.date() + timedelta(days=1), dtime())
    return start + timedelta(minutes=INTERVAL_MINUTES[interval])


# --------------------------------------------------------------------------------------
# HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], kite: KiteServer):
        self.kite = kite
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: D401
        """Clients that time out or hang up mid-response are expected here; stay quiet."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, OSError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its proxy
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms stalls
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr noise
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        resp = self.server.kite._handle(method, self.path, dict(self.headers.items()), body)
        if isinstance(resp, _Drop):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = resp.body
        encoding = None
        if resp.gzip_ok and len(payload) > 1024 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            payload, encoding = gzip.compress(payload, compresslevel=1), "gzip"
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(payload)))
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.end_headers()
            if resp.trickle > 0:
                self.wfile.flush()
                stopping = self.server.kite._stopping
                for i in range(len(payload)):
                    if stopping.wait(resp.trickle):
                        break
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
                self.close_connection = True
            else:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. after a delay fault)


# --------------------------------------------------------------------------------------
# the server


_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    # (method, path regex, handler name, rate class)
    (
        "GET",
        re.compile(r"^/instruments/historical/(?P<token>[^/]+)/(?P<interval>[^/]+)$"),
        "_r_historical",
        "historical",
    ),
    ("GET", re.compile(r"^/instruments$"), "_r_instruments", "other"),
    ("GET", re.compile(r"^/instruments/(?P<exchange>[^/]+)$"), "_r_instruments", "other"),
    ("GET", re.compile(r"^/user/profile$"), "_r_profile", "other"),
    ("GET", re.compile(r"^/quote$"), "_r_quote", "quote"),
    ("GET", re.compile(r"^/quote/ltp$"), "_r_ltp", "quote"),
    ("GET", re.compile(r"^/quote/ohlc$"), "_r_ohlc", "quote"),
    ("POST", re.compile(r"^/session/token$"), "_r_session_create", "other"),
    ("DELETE", re.compile(r"^/session/token$"), "_r_session_delete", "other"),
]
_NO_AUTH = {"_r_session_create", "_r_session_delete"}


class KiteServer:
    """A Kite Connect compatible server on 127.0.0.1 for the real client to talk to.

    State that tests tweak (the clock, faults, tokens, rate limits, the request log) is
    per-test and cleared by :meth:`reset`; candle data and instruments survive it, so one
    server can be shared by a whole module.
    """

    def __init__(
        self,
        api_key: str = "test_api_key",
        access_token: str | None = None,
        api_secret: str = "test_api_secret",
        instruments_csv: str | Path | None = DEFAULT_INSTRUMENTS_CSV,
        user_id: str = "AB1234",
    ) -> None:
        self.api_key = api_key
        self.access_token = access_token or secrets.token_hex(16)
        self.api_secret = api_secret
        self.user_id = user_id
        self.instruments_csv = Path(instruments_csv) if instruments_csv else None

        self.enforce_rate_limits = True
        self.rate_limits: dict[str, int] = dict(DEFAULT_RATE_LIMITS)
        self.rate_window: float = 1.0  # seconds; tests may shrink it to avoid sleeping
        self.requests: list[RequestRecord] = []
        # the clock of the rate windows and of RequestRecord.time; a test may share a simulated one
        self.clock: Callable[[], float] = time.monotonic
        # called with each request as it arrives, before it is counted (e.g. to advance a simulated clock)
        self.on_arrival: Callable[[RequestRecord], None] | None = None
        # a lagging source: historical candles starting after this instant are not there yet
        self.data_until: datetime | None = None
        # bumped by reset(): a request that arrived before it (e.g. one still sleeping in a delay
        # fault after its client gave up) belongs to a finished test and touches nothing of the next
        self._generation = 0

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

        self._series: dict[tuple[int, str], _Series] = {}
        self._valid_tokens: set[str] = {self.access_token}
        self._request_tokens: set[str] = set()
        self._faults: list[_Fault] = []
        self._hits: dict[str, deque[float]] = {}
        self._ltp: dict[str, float] = {}
        self._now: datetime | None = None

        self._instr_raw: bytes | None = None
        self._instr_rows: list[dict[str, str]] | None = None
        self._instr_by_key: dict[str, int] = {}
        self._instr_tokens: set[int] = set()
        self._extra_instruments: dict[str, int] = {}

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("KiteServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KiteServer:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", 0), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="kite-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes any handler sleeping in a delay fault."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Clear per-test state: faults, the request log, rate windows, the clock, LTP
        overrides and request tokens; re-enable rate limits with Kite's defaults and make
        the constructor's access_token the only valid one.  Candles stay loaded."""
        with self._lock:
            self._generation += 1
            self._faults.clear()
            self.requests.clear()
            self._hits.clear()
            self._ltp.clear()
            self._request_tokens.clear()
            self._now = None
            self.enforce_rate_limits = True
            self.rate_limits = dict(DEFAULT_RATE_LIMITS)
            self.rate_window = 1.0
            self._valid_tokens = {self.access_token}
            self.clock = time.monotonic
            self.on_arrival = None
            self.data_until = None

    def make_client(self, **kwargs: Any) -> Any:
        """A real ``KiteConnect`` pointed at this server (imported lazily)."""
        from kiteconnect import KiteConnect

        kwargs.setdefault("access_token", self.access_token)
        return KiteConnect(self.api_key, root=self.url, **kwargs)

    # ---------------------------------------------------------------- clock

    @property
    def now(self) -> datetime | None:
        """The server's "live" clock.  While set, candles starting after it are hidden and
        the candle in progress at it is served partial.  None means "after all data"."""
        return self._now

    @now.setter
    def now(self, value: datetime | None) -> None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError("server.now must be tz-aware (or None)")
        self._now = value

    def _now_ist(self) -> datetime | None:
        return None if self._now is None else self._now.astimezone(IST).replace(tzinfo=None)

    # ---------------------------------------------------------------- data setup

    def add_candles(self, instrument_token: int, interval: str, rows: Iterable[Sequence[Any]]) -> int:
        """Store candles ``(ts, o, h, l, c, volume[, oi])``; ``ts`` is a tz-aware datetime
        or an ISO string with offset (a bare ``date`` means IST midnight).  A repeated ``ts``
        overwrites.  Returns how many rows were added."""
        if interval not in INTERVAL_MINUTES:
            raise ValueError(f"unknown interval {interval!r}")
        n = 0
        with self._lock:
            series = self._series.setdefault((int(instrument_token), interval), _Series())
            for r in rows:
                ts = _to_ist_naive(r[0])
                vol = 0 if r[5] in (None, "") else int(float(r[5]))
                oi = int(float(r[6])) if len(r) > 6 and r[6] not in (None, "") else 0
                series.put(ts, (float(r[1]), float(r[2]), float(r[3]), float(r[4]), vol, oi))
                n += 1
        return n

    def load_csv(self, instrument_token: int, interval: str, path: str | Path) -> int:
        """Load a shared-data CSV (``ts,open,high,low,close,volume[,oi]``; empty volume
        means 0, as Kite reports for indices)."""
        rows = []
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            has_oi = len(header) > 6 and header[6].strip().lower() == "oi"
            for rec in reader:
                if not rec:
                    continue
                row = [rec[0], rec[1], rec[2], rec[3], rec[4], _num(rec[5], int)]
                if has_oi:
                    row.append(_num(rec[6], int))
                rows.append(row)
        return self.add_candles(instrument_token, interval, rows)

    def clear_candles(self, instrument_token: int | None = None) -> None:
        """Forget candles (of one token, or all)."""
        with self._lock:
            for key in [k for k in self._series if instrument_token is None or k[0] == instrument_token]:
                del self._series[key]

    def add_instrument(self, key: str, instrument_token: int) -> None:
        """Make ``EXCH:SYMBOL`` resolvable for quotes without touching the CSV dump."""
        with self._lock:
            self._extra_instruments[key] = int(instrument_token)

    def set_ltp(self, key: str, price: float) -> None:
        """Pin the last price served for ``EXCH:SYMBOL`` (or a bare token string)."""
        with self._lock:
            self._ltp[key] = float(price)

    # ---------------------------------------------------------------- auth setup

    def add_request_token(self, request_token: str) -> None:
        """Register a request_token as if the user had just logged in; single use."""
        with self._lock:
            self._request_tokens.add(request_token)

    def add_access_token(self, access_token: str) -> None:
        with self._lock:
            self._valid_tokens.add(access_token)

    def expire_tokens(self) -> None:
        """Invalidate every access token, like the 06:00 IST daily expiry."""
        with self._lock:
            self._valid_tokens.clear()

    @property
    def valid_tokens(self) -> frozenset[str]:
        return frozenset(self._valid_tokens)

    # ---------------------------------------------------------------- faults

    def fail_next(
        self,
        status: int,
        error_type: str,
        message: str,
        times: int = 1,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with a Kite JSON error."""
        self._add_fault(_Fault("fail", times, path_prefix, status=status, error_type=error_type, message=message))

    def html_error_next(self, status: int = 502, times: int = 1, path_prefix: str | None = None) -> None:
        """Answer with an nginx-style HTML page, as an edge proxy does (client: DataException)."""
        self._add_fault(_Fault("html", times, path_prefix, status=status))

    def drop_connection_next(self, times: int = 1, path_prefix: str | None = None) -> None:
        """Close the socket without any response (client: requests.ConnectionError)."""
        self._add_fault(_Fault("drop", times, path_prefix))

    def delay_next(self, seconds: float, times: int = 1, path_prefix: str | None = None) -> None:
        """Sleep before handling the request normally, to trigger client timeouts."""
        self._add_fault(_Fault("delay", times, path_prefix, seconds=seconds))

    def raw_next(
        self,
        body: bytes | str | Any,
        status: int = 200,
        content_type: str = "application/json",
        times: int = 1,
        path_prefix: str | None = None,
    ) -> None:
        """Answer with exactly this body (bytes/str as is, anything else as JSON), e.g. a
        malformed "success" envelope."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body, separators=(",", ":"))
        data = body.encode() if isinstance(body, str) else body
        self._add_fault(_Fault("raw", times, path_prefix, status=status, body=data, content_type=content_type))

    def trickle_next(self, seconds_per_byte: float, times: int = 1, path_prefix: str | None = None) -> None:
        """Answer normally (200 and headers at once) but send the body one byte every
        ``seconds_per_byte``: a read timeout never fires, only a total deadline helps."""
        self._add_fault(_Fault("trickle", times, path_prefix, seconds=seconds_per_byte))

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str, delay: bool) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if (f.kind == "delay") == delay and f.matches(path):
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._faults.remove(f)
                    return f
        return None

    # ---------------------------------------------------------------- request log helpers

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RequestRecord]:
        """Logged requests whose path starts with ``path_prefix``."""
        with self._lock:
            return [
                r for r in self.requests if r.path.startswith(path_prefix) and (method is None or r.method == method)
            ]

    # ---------------------------------------------------------------- request handling

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response | _Drop:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query_all = parse_qs(parts.query, keep_blank_values=True)
        form: dict[str, str] = {}
        if body and "form" in _header(headers, "Content-Type"):
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        rec = RequestRecord(
            method=method,
            path=path,
            query={k: v[0] for k, v in query_all.items()},
            query_all=query_all,
            time=self.clock(),
            headers=headers,
            form=form,
        )
        if self.on_arrival is not None:
            self.on_arrival(rec)
            rec.time = self.clock()
        with self._lock:
            self.requests.append(rec)
            generation = self._generation

        resp = self._respond(rec, generation)
        rec.status = None if isinstance(resp, _Drop) else resp.status
        return resp

    def _respond(self, rec: RequestRecord, generation: int) -> _Response | _Drop:
        delay = self._take_fault(rec.path, delay=True)
        if delay is not None:
            self._stopping.wait(delay.seconds)
            if generation != self._generation:  # reset while it slept: its client is gone, and the
                return _Drop()  # next test's faults and rate windows are not its own
        fault = self._take_fault(rec.path, delay=False)
        trickle = 0.0
        if fault is not None and fault.kind == "trickle":
            trickle = fault.seconds
        elif fault is not None:
            if fault.kind == "drop":
                return _Drop()
            if fault.kind == "html":
                return self._html(fault.status)
            if fault.kind == "raw":
                return _Response(fault.status, fault.body, fault.content_type)
            return self._error(fault.status, fault.error_type, fault.message)

        for method, pattern, handler, rate_class in _ROUTES:  # noqa: B007 (the matched route's, used below)
            m = pattern.match(rec.path)
            if m and method == rec.method:
                break
        else:
            return self._error(404, "GeneralException", "Route not found")

        try:
            if handler not in _NO_AUTH:
                self._check_auth(rec)
            self._check_rate(rate_class)
            data = getattr(self, handler)(rec, **m.groupdict())
        except _ApiError as e:
            return self._error(e.status, e.error_type, e.message)
        except Exception as e:  # a bug in this server should still look like Kite
            return self._error(500, "GeneralException", f"internal error: {e!r}")
        if isinstance(data, _Response):
            return data
        resp = self._json(200, {"status": "success", "data": data})
        resp.trickle = trickle
        return resp

    def _check_auth(self, rec: RequestRecord) -> None:
        auth = _header(rec.headers, "Authorization")
        ok = False
        if auth.startswith("token ") and ":" in auth:
            key, _, tok = auth[len("token ") :].partition(":")
            with self._lock:
                ok = key == self.api_key and tok in self._valid_tokens
        if not ok:
            raise _ApiError(403, "TokenException", TOKEN_ERROR_MESSAGE)

    def _check_rate(self, rate_class: str) -> None:
        """Sliding-window limiter; only accepted requests count towards the window."""
        if not self.enforce_rate_limits:
            return
        limit = self.rate_limits.get(rate_class)
        if limit is None:
            return
        with self._lock:
            hits = self._hits.setdefault(rate_class, deque())
            t = self.clock()
            while hits and t - hits[0] >= self.rate_window:
                hits.popleft()
            if len(hits) >= limit:
                raise _ApiError(429, "NetworkException", "Too many requests")
            hits.append(t)

    @staticmethod
    def _json(status: int, obj: Any) -> _Response:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return _Response(status, body, "application/json")

    def _error(self, status: int, error_type: str, message: str) -> _Response:
        return self._json(status, {"status": "error", "message": message, "error_type": error_type, "data": None})

    @staticmethod
    def _html(status: int) -> _Response:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        return _Response(status, _HTML_PAGE.format(code=status, reason=reason).encode(), "text/html")

    # ---------------------------------------------------------------- instruments

    def _load_instruments(self) -> None:
        if self._instr_rows is not None:
            return
        with self._lock:
            if self._instr_rows is not None:
                return
            raw = INSTRUMENTS_HEADER.encode()
            rows: list[dict[str, str]] = []
            if self.instruments_csv is not None and self.instruments_csv.exists():
                raw = self.instruments_csv.read_bytes()
                rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
            for row in rows:
                tok = int(row["instrument_token"])
                self._instr_tokens.add(tok)
                self._instr_by_key.setdefault(f"{row['exchange']}:{row['tradingsymbol']}", tok)
            self._instr_raw = raw
            self._instr_rows = rows

    def _r_instruments(self, rec: RequestRecord, exchange: str | None = None) -> _Response:
        self._load_instruments()
        raw = self._instr_raw or b""
        if exchange is None:
            body = raw
        else:
            text = raw.decode("utf-8")
            lines = text.splitlines(keepends=True)
            header = lines[0] if lines else ""
            out = io.StringIO()
            out.write(header)
            # The exchange is the last column; match on it without re-serialising rows.
            suffix = "," + exchange
            for line in lines[1:]:
                if line.rstrip("\r\n").endswith(suffix):
                    out.write(line)
            body = out.getvalue().encode("utf-8")
        return _Response(200, body, "text/csv", gzip_ok=True)

    def _resolve(self, key: str) -> int | None:
        self._load_instruments()
        if key in self._extra_instruments:
            return self._extra_instruments[key]
        if key.isdigit():
            return int(key)
        return self._instr_by_key.get(key)

    def _known_token(self, token: int) -> bool:
        self._load_instruments()
        with self._lock:
            return (
                token in self._instr_tokens
                or token in self._extra_instruments.values()
                or any(k[0] == token for k in self._series)
            )

    # ---------------------------------------------------------------- historical

    def _r_historical(self, rec: RequestRecord, token: str, interval: str) -> dict[str, Any]:
        if interval not in INTERVAL_MINUTES:
            raise _ApiError(400, "InputException", "invalid interval")
        if not token.isdigit() or not self._known_token(int(token)):
            raise _ApiError(400, "InputException", "invalid token")
        frm = _parse_kite_date(rec.query.get("from"), "from")
        to = _parse_kite_date(rec.query.get("to"), "to")
        if frm > to:
            raise _ApiError(400, "InputException", "invalid date range: `from` is after `to`")
        limit = MAX_DAYS[interval]
        if (to.date() - frm.date()).days + 1 > limit:
            raise _ApiError(400, "InputException", f"interval exceeds max limit: {limit} days")
        with_oi = rec.query.get("oi") in ("1", "true")
        candles = []
        for ts, (o, h, low, c, v, oi) in self.candles(int(token), interval, frm, to):
            candle: list[Any] = [_fmt_kite_ts(ts), o, h, low, c, v]
            if with_oi:
                candle.append(oi)
            candles.append(candle)
        return {"candles": candles}

    def candles(self, instrument_token: int, interval: str, frm: datetime, to: datetime) -> list[tuple[datetime, Row]]:
        """What the historical route serves for [frm, to] (naive IST), honouring ``now``.

        Stored candles for the interval win; otherwise intraday intervals are built from
        minute candles.  Public so tests can compute expectations the same way.
        """
        now = self._now_ist()
        if self.data_until is not None:  # a lagging source serves what it has, as if its clock were there
            until = self.data_until.astimezone(IST).replace(tzinfo=None)
            now = until if now is None else min(now, until)
        hi = to if now is None else min(to, now)
        with self._lock:
            series = self._series.get((instrument_token, interval))
            minute = self._series.get((instrument_token, "minute"))
            if series is not None:
                rows = series.range(frm, hi)
                if now is not None and rows and minute is not None and interval != "minute":
                    rows = self._cut_running(rows, interval, minute, now)
                return rows
            if minute is not None and interval not in ("minute", "day"):
                return _group_minutes(minute.range(frm, hi), INTERVAL_MINUTES[interval])
            return []

    @staticmethod
    def _cut_running(
        rows: list[tuple[datetime, Row]], interval: str, minute: _Series, now: datetime
    ) -> list[tuple[datetime, Row]]:
        """Replace the stored candle running at ``now`` by one built from minutes up to now,
        but only if minute data shows the period continues after now."""
        start, _ = rows[-1]
        end = _interval_end(start, interval)
        if end <= now or not minute.any_in_open_interval(now, end):
            return rows
        part = [r for r in minute.range(start, now) if r[0] < end]
        return rows[:-1] + ([(start, _aggregate(part))] if part else [])

    # ---------------------------------------------------------------- quotes

    def _latest_series(self, token: int, now: datetime | None) -> tuple[str, _Series, datetime, Row] | None:
        """The series with the most recent candle at ``now`` (finest interval on ties); the
        running candle is cut at ``now`` like the historical route does, so a day candle
        never leaks the rest of its day."""
        best = None
        minute = self._series.get((token, "minute"))
        for (tok, interval), series in self._series.items():
            if tok != token:
                continue
            keys = series.keys()
            j = len(keys) if now is None else bisect.bisect_right(keys, now)
            tail = series.range(keys[max(j - 2, 0)], keys[j - 1]) if j else []  # last two: the cut may drop one
            if now is not None and tail and minute is not None and interval != "minute":
                tail = self._cut_running(tail, interval, minute, now)
            if not tail:
                continue
            ts, row = tail[-1]
            rank = (ts, -INTERVAL_MINUTES[interval])
            if best is None or rank > best[0]:
                best = (rank, (interval, series, ts, row))
        return None if best is None else best[1]

    def _snapshot(self, key: str) -> dict[str, Any] | None:
        """Price state of one instrument at ``now`` (last price, today's OHLC, previous
        close) from the freshest candles available; None means "leave it out"."""
        token = self._resolve(key)
        override = self._ltp.get(key)
        if token is None and override is None:
            return None
        if token is not None and not self._known_token(token) and override is None:
            return None
        snap: dict[str, Any] = {
            "instrument_token": token or 0,
            "last_price": 0.0,
            "open": 0.0,
            "high": 0.0,
            "low": 0.0,
            "close": 0.0,
            "volume": 0,
            "oi": 0,
            "last_ts": None,
        }
        now = self._now_ist()
        with self._lock:
            latest = self._latest_series(token, now) if token is not None else None
            if latest is not None:
                interval, series, last_ts, last_row = latest
                day0 = datetime.combine(last_ts.date(), dtime())
                today = series.range(day0, last_ts)[:-1] + [(last_ts, last_row)]
                agg = _aggregate(today)
                snap.update(
                    last_price=last_row[3],
                    open=agg[0],
                    high=agg[1],
                    low=agg[2],
                    volume=agg[4],
                    oi=last_row[5],
                    last_ts=last_ts,
                )
                day_series = self._series.get((token, "day"))  # type: ignore[arg-type]
                prev = (day_series or series).last_at_or_before(day0 - timedelta(microseconds=1))
                snap["close"] = prev[1][3] if prev is not None else agg[0]
        if override is not None:
            snap["last_price"] = override
            if snap["last_ts"] is None:
                snap.update(open=override, high=override, low=override, close=override)
        return snap

    def _quote_keys(self, rec: RequestRecord, max_n: int) -> list[str]:
        keys = rec.query_all.get("i", [])
        if len(keys) > max_n:
            raise _ApiError(400, "InputException", f"Too many tokens requested. Max permitted is {max_n}.")
        return keys

    def _r_ltp(self, rec: RequestRecord) -> dict[str, Any]:
        out = {}
        for key in self._quote_keys(rec, 1000):
            s = self._snapshot(key)
            if s is not None:
                out[key] = {"instrument_token": s["instrument_token"], "last_price": s["last_price"]}
        return out

    def _r_ohlc(self, rec: RequestRecord) -> dict[str, Any]:
        out = {}
        for key in self._quote_keys(rec, 1000):
            s = self._snapshot(key)
            if s is not None:
                out[key] = {
                    "instrument_token": s["instrument_token"],
                    "last_price": s["last_price"],
                    "ohlc": {k: s[k] for k in ("open", "high", "low", "close")},
                }
        return out

    def _r_quote(self, rec: RequestRecord) -> dict[str, Any]:
        out = {}
        wall = self._now.astimezone(IST) if self._now is not None else datetime.now(IST)
        for key in self._quote_keys(rec, 500):
            s = self._snapshot(key)
            if s is None:
                continue
            last_ts = s["last_ts"] or wall.replace(tzinfo=None)
            lp = s["last_price"]
            out[key] = {
                "instrument_token": s["instrument_token"],
                "timestamp": wall.strftime("%Y-%m-%d %H:%M:%S"),
                "last_trade_time": last_ts.strftime("%Y-%m-%d %H:%M:%S"),
                "last_price": lp,
                "last_quantity": 0,
                "buy_quantity": 0,
                "sell_quantity": 0,
                "volume": s["volume"],
                "average_price": lp,
                "oi": s["oi"],
                "oi_day_high": 0,
                "oi_day_low": 0,
                "net_change": round(lp - s["close"], 2) if s["close"] else 0,
                "lower_circuit_limit": round(lp * 0.8, 2),
                "upper_circuit_limit": round(lp * 1.2, 2),
                "ohlc": {k: s[k] for k in ("open", "high", "low", "close")},
                "depth": {
                    "buy": [{"price": 0, "quantity": 0, "orders": 0} for _ in range(5)],
                    "sell": [{"price": 0, "quantity": 0, "orders": 0} for _ in range(5)],
                },
            }
        return out

    # ---------------------------------------------------------------- user / session

    def _profile(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_type": "individual",
            "email": "test@example.com",
            "user_name": "Test User",
            "user_shortname": "Test",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE", "BFO", "CDS", "BCD", "MCX", "MF"],
            "products": ["CNC", "NRML", "MIS", "BO", "CO"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "meta": {"demat_consent": "physical"},
        }

    def _r_profile(self, rec: RequestRecord) -> dict[str, Any]:
        return self._profile()

    def _r_session_create(self, rec: RequestRecord) -> dict[str, Any]:
        f = rec.form
        for name in ("api_key", "request_token", "checksum"):
            if not f.get(name):
                raise _ApiError(400, "InputException", f"Missing `{name}`")
        if f["api_key"] != self.api_key:
            raise _ApiError(403, "TokenException", "Invalid `api_key`.")
        expected = hashlib.sha256((self.api_key + f["request_token"] + self.api_secret).encode()).hexdigest()
        if not secrets.compare_digest(expected, f["checksum"]):
            raise _ApiError(403, "TokenException", "Invalid `checksum`.")
        with self._lock:
            if f["request_token"] not in self._request_tokens:
                raise _ApiError(403, "TokenException", "Token is invalid or has expired.")
            self._request_tokens.discard(f["request_token"])
            access_token = secrets.token_hex(16)
            self._valid_tokens.add(access_token)
        wall = self._now.astimezone(IST) if self._now is not None else datetime.now(IST)
        return {
            **self._profile(),
            "api_key": self.api_key,
            "access_token": access_token,
            "public_token": secrets.token_hex(16),
            "refresh_token": "",
            "enctoken": secrets.token_urlsafe(24),
            "silo": "",
            "login_time": wall.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def _r_session_delete(self, rec: RequestRecord) -> bool:
        if rec.query.get("api_key") != self.api_key:
            raise _ApiError(403, "TokenException", TOKEN_ERROR_MESSAGE)
        with self._lock:
            self._valid_tokens.discard(rec.query.get("access_token", ""))
        return True
