"""The HTTP API and the dashboard of `mde serve`: FastAPI on top of MarketDataEngine.

    from mde.api import create_app
    app = create_app(settings)                     # then: uvicorn.run(app, host=..., port=...)

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
import json
import logging
import socket
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel

from .calendar import IST
from .config import Settings
from .engine import MarketDataEngine, check_limit, window_body
from .errors import CacheError, InputError, MdeError, NotCached, SourceError
from .store import NotInMemory

log = logging.getLogger("mde.api")
# MdeError classes -> HTTP status, most specific first (NotCached is an InputError)
STATUS_OF: tuple[tuple[type[MdeError], int], ...] = (
    (NotCached, 404), (InputError, 422), (SourceError, 503), (CacheError, 500), (MdeError, 500),
)
__version__ = version("mde")
WEB = Path(__file__).resolve().parent / "web"
NO_STORE = (b"cache-control", b"no-store")
IMMUTABLE = (b"cache-control", b"public, max-age=86400, immutable")
REVALIDATE = (b"cache-control", b"no-cache")


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
    {"name": "symbol", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "NIFTY, BANKNIFTY, INFY, NSE:INFY ..."},
    {"name": "timeframe", "in": "query", "required": False, "schema": {"type": "string", "default": "5m"},
     "description": "1m 3m 5m 10m 15m 30m 60m 1d (also 1h, 5minute, day)"},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "default": 50, "minimum": 1, "maximum": 1000}, "description": "how many candles"},
    {"name": "as_of", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"},
     "description": "only candles complete at this ISO 8601 time (default: now)"},
]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong API token"},
    404: {"model": ErrorOut, "description": "nothing cached for this series / no such session"},
    422: {"model": ErrorOut, "description": "bad symbol, timeframe, limit or as_of"},
    500: {"model": ErrorOut, "description": "unreadable cache file or internal error"},
    503: {"model": ErrorOut, "description": "the market-data source failed"},
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class _Guard:
    """Pure ASGI middleware (no per-request task like BaseHTTPMiddleware): the token check on
    /api/*, and Cache-Control on every response (no-store for data, long for versioned assets)."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

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

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                message["headers"] = [*headers, header]
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


def _session_view(engine: MarketDataEngine, session: dict[str, Any]) -> dict[str, Any]:
    """A journal's status with its P&L: cash flow of the fills plus open positions at the last close."""
    if session.get("error"):  # an unreadable journal: listed, named, and no figures at all
        return {k: v for k, v in session.items() if k != "all_fills"} | {"marks": {}, "pnl": None}
    cash = 0.0
    for fill in session["all_fills"]:
        cash -= fill["side"] * fill["qty"] * fill["price"]
    marks: dict[str, float | None] = {}
    for symbol, qty in session["positions"].items():
        try:
            last = engine.get_window(symbol, session["timeframe"] or "5m", 1)
            marks[symbol] = float(last["close"][-1]) if last.height else None
        except MdeError:
            marks[symbol] = None
    open_value = sum(q * (marks[s] or 0.0) for s, q in session["positions"].items())
    out = {k: v for k, v in session.items() if k != "all_fills"}
    out["marks"] = marks
    out["pnl"] = round(cash + open_value, 2)  # gross, before charges
    out["recent_fills"] = [
        f | {"ts": datetime.fromtimestamp(f["ts_us"] / 1e6, IST).isoformat()} for f in session["recent_fills"]
    ]
    return out


def create_app(
    settings: Settings,
    token: str | None = None,
    *,
    cors_origins: tuple[str, ...] | list[str] | None = None,
    engine: MarketDataEngine | None = None,
) -> FastAPI:
    """The app: one MarketDataEngine for every request (its clock is the settings' MDE_NOW or
    real time; each request's default as_of is "now"). `token` set: /api/* needs it.
    `cors_origins` (default `[serve] cors_origins`): without any, no CORS headers at all."""
    eng = engine if engine is not None else MarketDataEngine(settings)
    origins = list(settings.serve.cors_origins if cors_origins is None else cors_origins)
    app = FastAPI(
        title="mde: the Market Data Engine",
        version=__version__,
        description="Read-only candles from the mde cache (NSE via Zerodha Kite), its inventory and paper sessions. "
        "Errors are `{\"error\": message}`.",
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
        "/api/market_data/window", response_model=WindowOut, responses=ERRORS, tags=["market data"],
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
        args = (symbol, timeframe, query.get("limit", "50"), query.get("as_of"))
        # A window whose files are in the store's memo is answered here on the event loop
        # (~100 us, no thread hand-offs); one that needs the disk goes to a worker thread.
        try:
            with eng.store.memory_only():
                candles = eng.get_window(*args)
        except NotInMemory:
            candles = await run_in_threadpool(eng.get_window, *args)
        return Response(window_body(symbol, timeframe, candles), media_type="application/json")

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
        return _json([_session_view(eng, s) for s in _sessions(settings, None)])

    @app.get("/api/paper/sessions/{name}", responses=ERRORS, tags=["paper"])
    def paper_session(name: str) -> Response:
        """One paper session, read from its journal (read-only, beside a running session too)."""
        return _json(_session_view(eng, _sessions(settings, name)[0]))

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
            CORSMiddleware, allow_origins=origins, allow_methods=["GET"], allow_headers=["Authorization"]
        )
    app.add_middleware(_Guard, token=token)
    return app


def _sessions(settings: Settings, name: str | None) -> list[dict[str, Any]]:
    """session_status, with every fill kept for the P&L; an unknown name is a 404."""
    from .paper.session import session_status, sessions_dir
    from .paper.state import session_path

    if name is not None:
        path = session_path(sessions_dir(settings), name)  # validates the name: no way out of _paper/
        if not path.is_file():
            raise NotCached(f"no paper session named {name!r}")  # no server path in a client message
    return session_status(settings, name, all_fills=True)



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
            raise InputError(f"port {port} on {host} is already in use (another mde serve?); stop that or pass --port N") from None
        if exc.errno == errno.EACCES:
            raise InputError(f"no permission to listen on port {port}; use a port above 1023, e.g. --port 8000") from None
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass --host with an address of this machine") from None
    sock.set_inheritable(True)
    return sock


def run(app: FastAPI, sock: socket.socket, *, verbose: bool = False) -> None:
    """Serve `app` on a socket from `listen` until Ctrl-C (uvicorn, its pure-Python h11 server)."""
    import uvicorn

    config = uvicorn.Config(app, access_log=verbose, log_level="info" if verbose else "warning", server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
