"""The HTTP API and the dashboard of `mde serve`: FastAPI on top of MarketDataEngine.

    from mde.api import create_app
    app = create_app(settings)                     # then: uvicorn.run(app, host=..., port=...)

The token rule is the app's own, whoever serves it: the token is `settings.serve.token`
(MDE_API_TOKEN) unless `token=` is given, and an app for a non-loopback `[serve] host` without
one is a ConfigError before anything listens.

An outer module, like the CLI: only `mde serve` (and whoever builds the app) imports it,
so FastAPI and uvicorn never slow down the other commands. Every read goes through one
MarketDataEngine; validation is the engine's (the same messages as the CLI's `error: ...`).

Errors are JSON `{"error": "<one line>"}`: InputError 422, NotCached 404, SourceError 503,
CacheError and anything else 500 (an unexpected exception is logged here, never sent).
With a token, every /api/* request needs `Authorization: Bearer <token>`; `/`, the static
files, /healthz and the OpenAPI schema hold no data and stay open.
"""

from __future__ import annotations

import errno
import hmac
import logging
import re
import socket
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .config import Settings, is_loopback
from .engine import MarketDataEngine, check_limit, window_body
from .errors import CacheError, InputError, MdeError, NotCached, SourceError
from .jsonout import dumps
from .store import NotInMemory

log = logging.getLogger("mde.api")
# MdeError classes -> HTTP status, most specific first (NotCached is an InputError)
STATUS_OF: tuple[tuple[type[MdeError], int], ...] = (
    (NotCached, 404),
    (InputError, 422),
    (SourceError, 503),
    (CacheError, 500),
    (MdeError, 500),
)
__version__ = version("mde")
WEB = Path(__file__).resolve().parent / "web"
NO_STORE = (b"cache-control", b"no-store")
IMMUTABLE = (b"cache-control", b"public, max-age=86400, immutable")
REVALIDATE = (b"cache-control", b"no-cache")
SAFE_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"))
# The dashboard runs only mde's own scripts (no inline script, no CDN); Lightweight Charts adds
# one <style> element, hence 'unsafe-inline' for styles only.
PAGE_HEADERS = (
    *SAFE_HEADERS,
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
)


# -- response models: for the OpenAPI schema only (bodies are built without them, for speed) --
class CandleOut(BaseModel):
    ts: str
    open: float
    high: float
    low: float
    close: float
    volume: int | None


class WindowOut(BaseModel):
    symbol: str
    timeframe: str
    count: int
    candles: list[CandleOut]


class ErrorOut(BaseModel):
    error: str


WINDOW_PARAMETERS = [
    {
        "name": "symbol",
        "in": "query",
        "required": True,
        "schema": {"type": "string"},
        "description": "NIFTY, BANKNIFTY, INFY, NSE:INFY ...",
    },
    {
        "name": "timeframe",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "default": "5m"},
        "description": "1m 3m 5m 10m 15m 30m 60m 1d (also 1h, 5minute, day)",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "default": 50, "minimum": 1, "maximum": 1000},
        "description": "how many candles",
    },
    {
        "name": "as_of",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "format": "date-time"},
        "description": "only candles complete at this ISO 8601 time (default: now)",
    },
]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong API token"},
    404: {"model": ErrorOut, "description": "nothing cached for this series / no such session"},
    422: {"model": ErrorOut, "description": "bad symbol, timeframe, limit or as_of"},
    500: {"model": ErrorOut, "description": "unreadable cache file or internal error"},
    503: {"model": ErrorOut, "description": "the market-data source failed"},
}


BUILT_FROM = "X-Mde-Built-From"  # on a window built from a smaller cached timeframe: that timeframe
BUILT_FROM_DOC: dict[str, Any] = {
    "headers": {
        BUILT_FROM: {
            "description": "present when the timeframe is not cached and was built from this smaller cached one (e.g. 5m); "
            "NSE's official daily close can differ from a built daily candle's",
            "schema": {"type": "string"},
        }
    }
}
# `2024-06-14T10:15:00+05:30` sent unencoded: the query decodes `+` to a space
_SPACE_FOR_PLUS = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?) (\d{2}:\d{2})")


def unplussed_as_of(value: str | None) -> str | None:
    """`as_of` with the `+` of its UTC offset restored when a client left it unencoded
    (`as_of=2024-06-14T10:15:00+05:30` arrives as `2024-06-14T10:15:00 05:30`). Only that exact
    shape is mended: anything else reaches the engine as sent and is judged there."""
    if value is None:
        return None
    match = _SPACE_FOR_PLUS.fullmatch(value)
    return f"{match[1]}+{match[2]}" if match else value


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body, separators=(",", ":")).encode(), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class _Guard:
    """Pure ASGI middleware (no per-request task like BaseHTTPMiddleware): the token check on
    /api/*, and Cache-Control on every response (no-store for data, long for versioned assets)."""

    def __init__(self, app: Any, token: str | None, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())

    def host_allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """DNS rebinding: a page of attacker.example that resolves to 127.0.0.1 reaches us with
        its own name in Host. Without a token only loopback names are served; with one, the
        `[serve] allowed_hosts` names (when given) and loopback."""
        raw = next((v for k, v in headers if k == b"host"), None)
        if raw is None:
            return True  # HTTP/1.0 without Host: no browser sends that
        host = raw.decode("latin-1").strip().lower()
        name = (
            host[1:].partition("]")[0]
            if host.startswith("[")
            else host.rpartition(":")[0]
            if host.count(":") == 1
            else host
        )
        if is_loopback(name):
            return True
        if self.token is None:
            return False
        return not self.allowed_hosts or name in self.allowed_hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/static/vendor/"):
            header = IMMUTABLE
        elif path.startswith("/static/") or path == "/":
            header = REVALIDATE
        else:
            header = NO_STORE
        if not self.host_allowed(scope["headers"]):
            response = _error(
                421,
                "this server answers only for its own host names (Host header refused); "
                "use http://127.0.0.1:PORT/ or add the name to [serve] allowed_hosts (with a token)",
            )
            await response(scope, receive, send)
            return
        if self.token is not None and path.startswith("/api/"):
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            scheme, _, credentials = given.partition(b" ")
            # both sides compared in constant time, whatever the scheme said
            if not (hmac.compare_digest(credentials.strip(), self.token) & (scheme.lower() == b"bearer")):
                response = _error(401, "missing or wrong API token: send `Authorization: Bearer <token>`")
                response.headers["www-authenticate"] = "Bearer"
                response.headers["cache-control"] = "no-store"
                await response(scope, receive, send)
                return

        # HEAD is answered as GET without the body (same status and headers, Content-Length
        # included); the static files answer HEAD themselves.
        head = scope["method"] == "HEAD" and not path.startswith("/static/")
        if head:
            scope = {**scope, "method": "GET"}

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                message["headers"] = [*headers, header, *(PAGE_HEADERS if path == "/" else SAFE_HEADERS)]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_with_header)


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's own checks (a missing parameter, a limit that is not a number) as one line."""
    err = exc.errors()[0]
    loc = err.get("loc", ())
    name = str(loc[-1]) if loc else "request"
    if err.get("type") == "missing":
        return f"missing query parameter {name!r}" if loc and loc[0] == "query" else f"missing {name!r}"
    if name == "limit":
        try:
            check_limit(err.get("input"))  # the engine's own message for a limit that is not a number
        except InputError as limit_error:
            return limit_error.message
    return f"invalid {name} {err.get('input')!r}: {err.get('msg', 'invalid value')}"


def _session_view(session: dict[str, Any]) -> dict[str, Any]:
    """A journal's status as `mde paper --status --json` gives it (P&L included: gross_pnl,
    charges, net_pnl; recent_fills with ts), without the full list of fills."""
    return {k: v for k, v in session.items() if k != "all_fills"}


def create_app(
    settings: Settings,
    token: str | None = None,
    *,
    cors_origins: tuple[str, ...] | list[str] | None = None,
    engine: MarketDataEngine | None = None,
) -> FastAPI:
    """The app: one MarketDataEngine for every request (its clock is the settings' MDE_NOW or
    real time; each request's default as_of is "now"). `token` (default `settings.serve.token`,
    i.e. MDE_API_TOKEN) set: /api/* needs it as `Authorization: Bearer <token>`. The token rule
    of `ServeSettings.check` applies: a non-loopback `settings.serve.host` without a token is a
    ConfigError. `cors_origins` (default `[serve] cors_origins`): without any, no CORS headers at all."""
    if token is None:
        token = settings.serve.token
    replace(settings.serve, token=token).check()  # the token rule, for any ASGI server too
    eng = engine if engine is not None else MarketDataEngine(settings)
    origins = list(settings.serve.cors_origins if cors_origins is None else cors_origins)
    app = FastAPI(
        title="mde: the Market Data Engine",
        version=__version__,
        description="Read-only candles from the mde cache (NSE via Zerodha Kite), its inventory and paper sessions. "
        'Errors are `{"error": message}`.',
        docs_url="/docs",
        redoc_url=None,
    )

    # -- errors: the CLI's message, a status per class (most specific first), never a traceback
    @app.exception_handler(MdeError)
    async def _mde(request: Request, exc: MdeError) -> Response:
        status = next(code for cls, code in STATUS_OF if isinstance(exc, cls))
        if status >= 500:
            log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc.message)
        return _error(status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return _error(422, _validation_message(exc))

    @app.exception_handler(404)
    async def _no_route(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such endpoint: {request.url.path}")

    @app.exception_handler(405)
    async def _no_method(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed here: the API is read-only")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s", request.url.path)
        return _error(500, "internal error")

    # -- the API ----------------------------------------------------------------------------
    @app.get(
        "/api/market_data/window",
        response_model=WindowOut,
        responses={**ERRORS, 200: BUILT_FROM_DOC},
        tags=["market data"],
        openapi_extra={"parameters": WINDOW_PARAMETERS},
    )
    async def market_data_window(request: Request) -> Response:
        """The last `limit` candles complete at `as_of` (default now), oldest first: exactly
        `mde window SYMBOL --format json`."""
        # The query is read by hand (documented in WINDOW_PARAMETERS): FastAPI's per-parameter
        # validation cost ~100 us a request, more than the read itself (bench/api.py); the
        # engine validates every value and says what is wrong in the CLI's words.
        query = request.query_params
        symbol = query.get("symbol")
        if symbol is None:
            raise InputError("missing query parameter 'symbol'")
        timeframe = query.get("timeframe", "5m")
        args = (symbol, timeframe, query.get("limit", "50"), unplussed_as_of(query.get("as_of")))
        # A window whose files are in the store's memo is answered here on the event loop
        # (~100 us, no thread hand-offs); one that needs the disk goes to a worker thread.
        try:
            with eng.store.memory_only():
                win = eng.read_window(*args)
        except NotInMemory:
            win = await run_in_threadpool(eng.read_window, *args)
        response = Response(window_body(symbol, timeframe, win.candles), media_type="application/json")
        if win.built_from is not None:
            response.headers[BUILT_FROM] = win.built_from.name
        return response

    @app.get("/api/series", responses=ERRORS, tags=["market data"])
    def series() -> Response:
        """What is cached (`mde ls --format json`)."""
        from .render import inventory_rows

        return _json(inventory_rows(eng.inventory()))

    @app.get("/api/clock", tags=["market data"])
    def clock() -> Response:
        """The server's clock (IST; MDE_NOW if pinned) and whether an NSE session is open now."""
        now = eng.now()
        minute = now.hour * 60 + now.minute
        market_open = any(a <= minute < b for a, b in eng.calendar.sessions(now.date()))
        return _json({"now": now.isoformat(), "market_open": market_open, "pinned": settings.now is not None})

    @app.get("/api/paper/sessions", responses=ERRORS, tags=["paper"])
    def paper_sessions() -> Response:
        """Every paper session in the cache's journal folder: status, positions, P&L, recent fills."""
        return _json([_session_view(s) for s in _sessions(settings, None, eng)])

    @app.get("/api/paper/sessions/{name}", responses=ERRORS, tags=["paper"])
    def paper_session(name: str) -> Response:
        """One paper session, read from its journal (read-only, beside a running session too)."""
        return _json(_session_view(_sessions(settings, name, eng)[0]))

    @app.get("/healthz", tags=["meta"])
    def healthz() -> Response:
        return _json({"status": "ok", "version": __version__})

    # -- the page ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB, check_dir=True), name="static")

    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD"],
            allow_headers=["Authorization"],
            expose_headers=[BUILT_FROM],
        )
    app.add_middleware(_Guard, token=token, allowed_hosts=settings.serve.allowed_hosts)
    return app


def _sessions(settings: Settings, name: str | None, engine: MarketDataEngine) -> list[dict[str, Any]]:
    """session_status (with its P&L, read through the server's engine); an unknown name is a 404."""
    from .paper.rules import sessions_dir
    from .paper.session import session_status
    from .paper.state import session_path

    if name is not None:
        path = session_path(sessions_dir(settings), name)  # validates the name: no way out of _paper/
        if not path.is_file():
            raise NotCached(f"no paper session named {name!r}")  # no server path in a client message
    return session_status(settings, name, engine=engine)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything is announced: a taken port or a foreign
    address is one clear line (InputError, exit 2), not a uvicorn log after a "serving" line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on {host} is already in use (another mde serve?); stop that or pass --port N"
            ) from None
        if exc.errno == errno.EACCES:
            raise InputError(
                f"no permission to listen on port {port}; use a port above 1023, e.g. --port 8000"
            ) from None
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass --host with an address of this machine"
        ) from None
    sock.set_inheritable(True)
    return sock


def run(app: FastAPI, sock: socket.socket, *, verbose: bool = False) -> None:
    """Serve `app` on a socket from `listen` until Ctrl-C (uvicorn, its pure-Python h11 server)."""
    import uvicorn

    config = uvicorn.Config(app, access_log=verbose, log_level="info" if verbose else "warning", server_header=False)
    for name in ("uvicorn.access", "uvicorn.error", "mde"):  # after Config: it (re)configures logging
        logging.getLogger(name).addFilter(RedactSecrets())
    uvicorn.Server(config).run(sockets=[sock])


class RedactSecrets(logging.Filter):
    """A client that puts `?token=...` in a URL gets it written by the access log: every line
    mde or uvicorn logs has such query values replaced by `***`."""

    PATTERN = re.compile(
        r"((?:^|[?&;])(?:token|access_token|api_key|api_secret|request_token)=)[^&;\s\"']*", re.IGNORECASE
    )

    def filter(self, record: logging.LogRecord) -> bool:
        # Each argument on its own: uvicorn's access formatter unpacks record.args by position.
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True
