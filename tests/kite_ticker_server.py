"""A local Kite ticker (WebSocket) server for tests, and a harness for the real client.

Tests drive Zerodha's own ``kiteconnect.KiteTicker`` (autobahn over Twisted) against this
server through its ``root`` argument, ``KiteTicker(api_key, access_token,
root=server.url)``; the client is never mocked. The server speaks what
``/work/shared/kite-api.md`` §8 describes and what the client's ``ticker.py`` (5.x) parses:

* the opening handshake on ``root?api_key=...&access_token=...`` (the client also sends
  ``X-Kite-Version: 3``); a wrong key or token, or ``server.reject = True``, is an HTTP 403 on
  the upgrade, which the client reports as ``on_error``/``on_close`` with code 1006 and then
  retries by its own mechanism;
* text frames from the client: ``{"a": "subscribe", "v": [tokens]}`` (tokens start in quote
  mode), ``{"a": "unsubscribe", "v": [...]}``, ``{"a": "mode", "v": [mode, [tokens]]}``;
  every one is recorded (``server.messages``) with the connection it came on;
* binary frames: a 2-byte packet count, then per packet a 2-byte length and the packet, all
  big-endian, fields unsigned int32. Packet sizes: LTP 8, index quote 28, index full 32
  (+ exchange timestamp), quote 44, full 184 (+ last trade time, OI, OI day high/low,
  exchange timestamp, 5 + 5 depth entries of quantity, price, orders as 2 bytes and 2 bytes
  of padding). Each token gets the packet of the mode it is subscribed in on that connection;
  tokens not subscribed get nothing (as on Kite);
* prices on the wire in the segment's units: the client divides by 100 (paise) except CDS
  (1e7) and BCD/NCO (1e4); the segment is ``token & 0xff`` (9 = indices, not tradable);
* 1-byte heartbeats (``on_message`` only: ``on_ticks`` fires for payloads over 4 bytes);
* text frames to the client: order updates ``{"type": "order", "data": {...}}`` and errors
  ``{"type": "error", "data": "..."}`` (``on_error`` with code 0).

Faults and control, all from the test thread: a script of ticks replayed in order, either
at once (``play``) or paced by a fake exchange clock (``advance(until)``, with a heartbeat for
each fake second without ticks); frames split as the test asks (``send``); ``reject`` at the
handshake; ``kick(message)`` mid-session (an error text, then a close; later handshakes are
rejected, as for a token that expired); ``drop()`` (the TCP connection cut without a close
frame: the client reconnects and resubscribes by itself); ``restart()`` on the same port;
and a record of handshakes, messages and the current subscriptions/modes per connection.
``wait_for(predicate)`` blocks on a condition variable (no sleeps); its timeout only guards
against a hang and fails the test.

Why no WebSocket library on the server side: the piece of RFC 6455 a ticker needs (the
upgrade, unfragmented frames, ping/pong, close) is ~120 lines of stdlib, it keeps the
faults exact (a 403 on the upgrade, a cut without a close frame) and it adds no dependency
to uv.lock (``websockets`` is not in it; ``wsproto``/``tornado`` are there only as other
packages' dependencies). The client side is the real autobahn/Twisted stack.

The Twisted reactor cannot be restarted within one process. ``ReactorThread`` therefore
runs the one reactor of the pytest process in a daemon thread for the whole test session
(started lazily by the ``ticker_reactor`` fixture in conftest.py, stopped at session end);
every ``LiveTicker`` creates its own ``KiteTicker`` and calls ``connect()`` *on the reactor
thread* (``blockingCallFromThread``): with the reactor already running, ``connect`` only
registers the connection, so any number of clients, one after the other or at once, share
it. Their callbacks run on the reactor thread and put what they get in lists guarded by a
condition variable that the test thread waits on. A test must never call
``KiteTicker.stop()`` (it stops the shared reactor); ``LiveTicker.close()`` stops retries and
closes the socket instead. A program that owns its reactor (``mde stream``) is tested as a
subprocess: ``test_ticker_server.py::test_client_in_its_own_process`` shows the pattern.

Timestamps: the client turns the exchange's epoch seconds into *naive local* datetimes with
``datetime.fromtimestamp``; ``.timestamp()`` on such a value gives the epoch back exactly on
any host time zone (``fold`` included), which is what ``mde.ticks`` does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DIVISORS",
    "KiteTickerServer",
    "LiveTicker",
    "ReactorThread",
    "ScriptTick",
    "divisor",
    "encode_frame",
    "encode_packet",
    "expected_tick",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: segment (token & 0xff) -> price divisor, as the client's `_parse_binary`
DIVISORS = {3: 10_000_000.0, 6: 10_000.0, 12: 10_000.0}
INDICES = 9
MODES = ("ltp", "quote", "full")


def divisor(token: int) -> float:
    return DIVISORS.get(token & 0xFF, 100.0)


def is_index(token: int) -> bool:
    return token & 0xFF == INDICES


@dataclass(frozen=True)
class ScriptTick:
    """One tick as the exchange would send it; prices in wire units (paise for NSE/NFO)."""

    token: int
    ts: int  # exchange timestamp, epoch seconds
    price: int
    volume: int | None = None  # the day's cumulative volume (None for an index)
    last_qty: int = 0
    avg_price: int = 0
    buy_qty: int = 0
    sell_qty: int = 0
    day_open: int = 0
    day_high: int = 0
    day_low: int = 0
    prev_close: int = 0
    oi: int = 0
    oi_high: int = 0
    oi_low: int = 0
    last_trade_ts: int | None = None  # defaults to ts
    depth: tuple[tuple[int, int, int], ...] = ()  # 10 x (quantity, price, orders); empty: derived

    def depth_levels(self) -> tuple[tuple[int, int, int], ...]:
        if self.depth:
            return self.depth
        step = max(1, self.price // 20_000)
        buy = tuple((10 * (i + 1), max(0, self.price - step * (i + 1)), i + 1) for i in range(5))
        sell = tuple((11 * (i + 1), self.price + step * (i + 1), i + 2) for i in range(5))
        return buy + sell


def encode_packet(tick: ScriptTick, mode: str) -> bytes:
    """The packet Kite sends for `tick` in `mode` (index tokens get the 28/32-byte layout)."""
    if mode == "ltp":
        return struct.pack(">II", tick.token, tick.price)
    if is_index(tick.token):
        # token, ltp, high, low, open, close, change (ignored by the client: it computes it)
        body = struct.pack(
            ">7I", tick.token, tick.price, tick.day_high, tick.day_low, tick.day_open, tick.prev_close, 0
        )
        return body if mode == "quote" else body + struct.pack(">I", tick.ts)
    body = struct.pack(
        ">11I",
        tick.token,
        tick.price,
        tick.last_qty,
        tick.avg_price,
        tick.volume or 0,
        tick.buy_qty,
        tick.sell_qty,
        tick.day_open,
        tick.day_high,
        tick.day_low,
        tick.prev_close,
    )
    if mode == "quote":
        return body
    last_trade = tick.ts if tick.last_trade_ts is None else tick.last_trade_ts
    body += struct.pack(">5I", last_trade, tick.oi, tick.oi_high, tick.oi_low, tick.ts)
    for qty, price, orders in tick.depth_levels():
        body += struct.pack(">IIHxx", qty, price, orders)
    return body


def encode_frame(packets: Sequence[bytes]) -> bytes:
    return struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


def expected_tick(tick: ScriptTick, mode: str) -> dict[str, Any]:
    """What the client should make of `tick` in `mode`, written from the protocol notes
    (kite-api.md §8), not from the client's code, so a test compares two readings."""
    d = divisor(tick.token)
    out: dict[str, Any] = {
        "tradable": not is_index(tick.token),
        "mode": mode,
        "instrument_token": tick.token,
        "last_price": tick.price / d,
    }
    if mode == "ltp":
        return out
    ohlc = {"open": tick.day_open / d, "high": tick.day_high / d, "low": tick.day_low / d, "close": tick.prev_close / d}
    out["ohlc"] = ohlc
    out["change"] = 0 if tick.prev_close == 0 else (tick.price / d - ohlc["close"]) * 100 / ohlc["close"]
    if is_index(tick.token):
        if mode == "full":
            out["exchange_timestamp"] = datetime.fromtimestamp(tick.ts)
        return out
    out.update(
        last_traded_quantity=tick.last_qty,
        average_traded_price=tick.avg_price / d,
        volume_traded=tick.volume or 0,
        total_buy_quantity=tick.buy_qty,
        total_sell_quantity=tick.sell_qty,
    )
    if mode == "full":
        levels = tick.depth_levels()
        out.update(
            last_trade_time=datetime.fromtimestamp(tick.ts if tick.last_trade_ts is None else tick.last_trade_ts),
            oi=tick.oi,
            oi_day_high=tick.oi_high,
            oi_day_low=tick.oi_low,
            exchange_timestamp=datetime.fromtimestamp(tick.ts),
            depth={
                "buy": [{"quantity": q, "price": p / d, "orders": o} for q, p, o in levels[:5]],
                "sell": [{"quantity": q, "price": p / d, "orders": o} for q, p, o in levels[5:]],
            },
        )
    return out


# -- RFC 6455, the server side ------------------------------------------------------------


class _Closed(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Closed
        buf += chunk
    return bytes(buf)


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


@dataclass(frozen=True)
class Handshake:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    accepted: bool


class Connection:
    """One accepted client. Sends are serialised; `modes` is its subscription (token -> mode)."""

    def __init__(self, server: KiteTickerServer, sock: socket.socket, number: int) -> None:
        self.server = server
        self.sock = sock
        self.number = number
        self.modes: dict[int, str] = {}
        self.open = True
        self._send_lock = threading.Lock()

    def _send(self, data: bytes) -> bool:
        with self._send_lock:
            if not self.open:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def send_binary(self, payload: bytes) -> bool:
        return self._send(_frame(0x2, payload))

    def send_text(self, text: str) -> bool:
        return self._send(_frame(0x1, text.encode()))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """A clean close: the close frame, then the socket."""
        self._send(_frame(0x8, struct.pack(">H", code) + reason.encode()))
        self._shut()

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (a network failure)."""
        self._shut()

    def _shut(self) -> None:
        with self._send_lock:
            if not self.open:
                return
            self.open = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        self.server._changed()


class KiteTickerServer:
    """A Kite ticker on ws://127.0.0.1:<port> (port 0: any free one; kept across restarts)."""

    def __init__(self, api_key: str = "test_api_key", access_token: str = "test_access_token", port: int = 0) -> None:
        self.api_key = api_key
        self.access_token = access_token
        self.port = port
        self.reject = False  # every handshake gets a 403 while set
        self.handshakes: list[Handshake] = []
        self.messages: list[tuple[int, dict[str, Any]]] = []  # (connection number, message)
        self.connections: list[Connection] = []
        self.cond = threading.Condition()
        self._script: list[ScriptTick] = []
        self._cursor = 0
        self._clock: int | None = None
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> KiteTickerServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(sock,), name="kite-ticker-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection (as a server crash would)."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        for conn in self.live():
            conn.drop()
        for t in self._threads:
            t.join(5)
        self._threads = []

    def restart(self) -> None:
        """Stop, then listen again on the same port (subscriptions are per connection: gone)."""
        self.stop()
        self.start()

    def __enter__(self) -> KiteTickerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the test sees ------------------------------------------------------------------
    def live(self) -> list[Connection]:
        with self.cond:
            return [c for c in self.connections if c.open]

    def subscriptions(self) -> dict[int, str]:
        """Token -> mode on the newest open connection (empty when none is open)."""
        conns = self.live()
        return dict(conns[-1].modes) if conns else {}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"server: timed out waiting for {what}")

    def wait_subscribed(self, tokens: Iterable[int], mode: str = "full", timeout: float = 15.0) -> None:
        want = set(tokens)

        def ready() -> bool:
            conns = [c for c in self.connections if c.open]
            return bool(conns) and all(conns[-1].modes.get(t) == mode for t in want)

        self.wait_for(ready, timeout, f"{sorted(want)} subscribed in {mode} mode")

    def _changed(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- sending -----------------------------------------------------------------------------
    def send(self, ticks: Sequence[ScriptTick], split: Sequence[int] | None = None) -> int:
        """Send `ticks` in order to every open connection, each in its subscribed mode, in
        frames of `split` packets (one frame for all when None). Returns packets sent."""
        sent = 0
        for conn in self.live():
            with self.cond:
                modes = dict(conn.modes)
            packets = [encode_packet(t, modes[t.token]) for t in ticks if t.token in modes]
            sizes = list(split) if split else [len(packets)]
            i = 0
            for size in sizes:
                if i >= len(packets):
                    break
                chunk = packets[i : i + size]
                if chunk and conn.send_binary(encode_frame(chunk)):
                    sent += len(chunk)
                i += size
            if i < len(packets) and conn.send_binary(encode_frame(packets[i:])):
                sent += len(packets) - i
        return sent

    def heartbeat(self) -> None:
        for conn in self.live():
            conn.send_binary(b"\x00")

    def send_text(self, obj: dict[str, Any]) -> None:
        for conn in self.live():
            conn.send_text(json.dumps(obj))

    def order_update(self, data: dict[str, Any]) -> None:
        self.send_text({"type": "order", "data": data})

    def error(self, message: str) -> None:
        self.send_text({"type": "error", "data": message})

    def kick(self, message: str = "Token expired", code: int = 1000) -> None:
        """Reject the token mid-session: an error text, a close, and 403 from now on."""
        self.reject = True
        for conn in self.live():
            conn.send_text(json.dumps({"type": "error", "data": message}))
            conn.close(code, message)

    def drop(self) -> None:
        """Cut every connection without a close frame; the listener stays up."""
        for conn in self.live():
            conn.drop()

    # -- the script and its fake clock -------------------------------------------------------
    def load(self, ticks: Iterable[ScriptTick]) -> None:
        """The market to replay: ticks in exchange-time order (stable for equal times)."""
        self._script = sorted(ticks, key=lambda t: t.ts)
        self._cursor = 0
        self._clock = self._script[0].ts - 1 if self._script else None

    @property
    def clock(self) -> int | None:
        """The fake exchange clock (epoch seconds): every scripted tick up to it is sent."""
        return self._clock

    @property
    def remaining(self) -> int:
        return len(self._script) - self._cursor

    def advance(self, until: int, heartbeats: bool = True) -> int:
        """Move the fake exchange clock to `until` (epoch seconds): each second's ticks go out
        as one frame, as Kite batches them; a second with none gets a heartbeat when
        `heartbeats`. Ticks due while nobody is connected are gone, as on the exchange."""
        sent = 0
        clock = self._clock if self._clock is not None else until
        while clock < until:
            clock += 1
            batch = []
            while self._cursor < len(self._script) and self._script[self._cursor].ts <= clock:
                batch.append(self._script[self._cursor])
                self._cursor += 1
            if batch:
                sent += self.send(batch)
            elif heartbeats:
                self.heartbeat()
            if self._cursor >= len(self._script) and not heartbeats:
                break
        self._clock = max(clock, until) if self._clock is not None else until
        return sent

    def play(self, per_frame: int = 50) -> int:
        """Send the rest of the script at once, `per_frame` packets a frame."""
        batch = self._script[self._cursor :]
        self._cursor = len(self._script)
        if batch:
            self._clock = batch[-1].ts
        return self.send(batch, [per_frame] * (len(batch) // per_frame + 1))

    # -- the socket side ---------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(sock,), name="kite-ticker-conn", daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self._handshake(sock)
        except (_Closed, OSError, ValueError):
            sock.close()
            return
        if conn is None:
            return
        try:
            self._read_loop(conn)
        except (_Closed, OSError):
            pass
        finally:
            conn.drop()

    def _handshake(self, sock: socket.socket) -> Connection | None:
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(4096)
            if not chunk:
                raise _Closed
            raw += chunk
            if len(raw) > 65536:
                raise ValueError("request too long")
        head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        _method, target, _version = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        ok = (
            not self.reject
            and query.get("api_key") == self.api_key
            and query.get("access_token") == self.access_token
            and "sec-websocket-key" in headers
        )
        with self.cond:
            self.handshakes.append(Handshake(parts.path, query, headers, ok))
            self.cond.notify_all()
        if not ok:
            body = b'{"status": "error", "message": "Invalid access_token or api_key", "error_type": "TokenException"}'
            sock.sendall(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            sock.close()
            return None
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        with self.cond:
            conn = Connection(self, sock, len(self.connections))
            self.connections.append(conn)
            self.cond.notify_all()
        return conn

    def _read_loop(self, conn: Connection) -> None:
        sock = conn.sock
        message = b""
        msg_opcode = 0
        while True:
            b0, b1 = _recv_exact(sock, 2)
            fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", _recv_exact(sock, 2))[0]
            elif n == 127:
                n = struct.unpack(">Q", _recv_exact(sock, 8))[0]
            mask = _recv_exact(sock, 4) if masked else b"\x00\x00\x00\x00"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(_recv_exact(sock, n)))
            if opcode == 0x8:  # close: answer it, then hang up
                conn.close(struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1000)
                return
            if opcode == 0x9:
                conn._send(_frame(0xA, data))
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                message, msg_opcode = data, opcode
            elif opcode == 0x0:
                message += data
            if not fin:
                continue
            # autobahn sends the client's JSON as a *binary* frame (sendMessage(bytes)); take both
            if msg_opcode in (0x1, 0x2):
                self._on_client_message(conn, message)

    def _on_client_message(self, conn: Connection, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        action, value = msg.get("a"), msg.get("v")
        with self.cond:
            if action == "subscribe" and isinstance(value, list):
                for token in value:
                    conn.modes.setdefault(int(token), "quote")
            elif action == "unsubscribe" and isinstance(value, list):
                for token in value:
                    conn.modes.pop(int(token), None)
            elif action == "mode" and isinstance(value, list) and len(value) == 2 and value[0] in MODES:
                for token in value[1]:
                    if int(token) in conn.modes:
                        conn.modes[int(token)] = value[0]
            self.messages.append((conn.number, msg))
            self.cond.notify_all()


# -- the real client, on the one reactor of the test process -------------------------------


class ReactorThread:
    """The process's Twisted reactor, running in a daemon thread (started at most once)."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    @classmethod
    def ensure(cls) -> None:
        from twisted.internet import reactor

        with cls._lock:
            if cls._thread is not None:
                return
            running = threading.Event()
            reactor.callWhenRunning(running.set)  # type: ignore[attr-defined]
            cls._thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},  # type: ignore[attr-defined]
                name="twisted-reactor",
                daemon=True,
            )
            cls._thread.start()
            if not running.wait(10):
                raise RuntimeError("the Twisted reactor did not start")

    @classmethod
    def call(cls, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` on the reactor thread and return its result (exceptions re-raised)."""
        from twisted.internet import reactor
        from twisted.internet.threads import blockingCallFromThread

        cls.ensure()
        return blockingCallFromThread(reactor, fn, *args)

    @classmethod
    def shutdown(cls) -> None:
        from twisted.internet import reactor

        with cls._lock:
            if cls._thread is None:
                return
            reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
            cls._thread.join(10)


@dataclass
class LiveTicker:
    """A real ``KiteTicker`` against `server`: on every connect it subscribes `tokens` and sets
    `mode` (what ``mde stream`` does), and it records what the callbacks see."""

    server: KiteTickerServer
    tokens: list[int]
    mode: str = "full"
    access_token: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[bytes, bool]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    on_ticks: Callable[[list[dict[str, Any]]], None] | None = None

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        self.kt: Any = None

    def _record(self, *event: Any) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def start(self) -> LiveTicker:
        from kiteconnect import KiteTicker

        kt = KiteTicker(
            self.server.api_key, self.access_token or self.server.access_token, root=self.server.url, **self.kwargs
        )

        def on_connect(ws: Any, response: Any) -> None:
            self._record("connect")
            ws.subscribe(self.tokens)
            ws.set_mode(self.mode, self.tokens)

        def on_ticks(ws: Any, ticks: list[dict[str, Any]]) -> None:
            if self.on_ticks is not None:
                self.on_ticks(ticks)
            with self.cond:
                self.ticks.extend(ticks)
                self.cond.notify_all()

        def on_message(ws: Any, payload: bytes, is_binary: bool) -> None:
            with self.cond:
                self.messages.append((payload, is_binary))
                self.cond.notify_all()

        def on_order_update(ws: Any, data: dict[str, Any]) -> None:
            with self.cond:
                self.orders.append(data)
                self.cond.notify_all()

        kt.on_connect = on_connect
        kt.on_ticks = on_ticks
        kt.on_message = on_message
        kt.on_order_update = on_order_update
        kt.on_close = lambda ws, code, reason: self._record("close", code, reason)
        kt.on_error = lambda ws, code, reason: self._record("error", code, reason)
        kt.on_reconnect = lambda ws, n: self._record("reconnect", n)
        kt.on_noreconnect = lambda ws: self._record("noreconnect")
        self.kt = kt
        ReactorThread.call(kt.connect)
        return self

    def count(self, kind: str) -> int:
        with self.cond:
            return sum(1 for e in self.events if e[0] == kind)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"client: timed out waiting for {what}; events {self.events}")

    def wait_ticks(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        self.wait_for(lambda: len(self.ticks) >= n, timeout, f"{n} ticks (have {len(self.ticks)})")
        with self.cond:
            return list(self.ticks)

    def wait_event(self, kind: str, count: int = 1, timeout: float = 15.0) -> None:
        self.wait_for(lambda: sum(1 for e in self.events if e[0] == kind) >= count, timeout, f"{count} x {kind}")

    def is_connected(self) -> bool:
        return bool(ReactorThread.call(self.kt.is_connected))

    def close(self) -> None:
        """Stop retrying and close the socket (never ``stop()``: the reactor is shared)."""
        if self.kt is not None and getattr(self.kt, "factory", None) is not None:
            ReactorThread.call(self.kt.close)

    def __enter__(self) -> LiveTicker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
