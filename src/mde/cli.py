"""The `mde` command: parse arguments, call the library, render. Nothing else.

Each command parses its options, calls one library function (`MarketDataEngine.refresh_many`,
`run_replay`, ...) and renders what it returns with `mde.render`; the rules (defaults, checks,
exit codes) live in the library, so a Python user gets the same. The error handling is here:
an MdeError becomes `error: <message>` and its exit code, anything else exit 70 (`run_guarded`).

Heavy modules (polars, rich tables, kiteconnect) are imported inside the commands so that
`mde --help` and `mde window` start fast.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Sequence
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from .config import Settings
    from .engine import MarketDataEngine
    from .errors import MdeError

# Exit status of an unexpected exception (a bug in mde): EX_SOFTWARE of sysexits.h.
INTERNAL_ERROR = 70


class _Group(TyperGroup):
    """mde's command group: every way out of it is one `error: ...` line and a documented exit code.

    Typer's documented route to own the error handling is `standalone_mode=False` (exceptions are
    raised instead of printed); the group does that in its `main`, so `mde`, `python -m mde` and
    typer's CliRunner all take the same path.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        prog_name = prog_name or "mde"  # also under `python -m mde`: the name the README and the errors use

        def call() -> Any:
            return super(_Group, self).main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )

        if not standalone_mode:
            return call()
        sys.exit(run_guarded(call))


class _Command(TyperCommand):
    """A command that also takes -v/-q after its name (`mde window NIFTY -q`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for decls, attr, text in (
            (["--verbose", "-v"], "verbose", "Log what mde does to stderr (as mde -v)."),
            (["--quiet", "-q"], "quiet", "Print nothing but errors (as mde -q)."),
        ):
            self.params.append(
                TyperOption(
                    param_decls=decls,
                    is_flag=True,
                    default=False,
                    expose_value=False,
                    help=text,
                    callback=functools.partial(_flag, attr),
                )
            )

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:  # the parser's errors carry no context: name the command
            if hasattr(exc, "ctx") and exc.ctx is None:
                exc.ctx = ctx
            raise


def _flag(attr: str, ctx: Any, param: Any, value: bool) -> None:
    if value:
        setattr(STATE, attr, True)
        _set_logging()


app = typer.Typer(
    name="mde",
    cls=_Group,
    help="Market Data Engine: a Parquet candle cache for NSE/NFO via Zerodha Kite Connect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print a token
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


# -- choices ------------------------------------------------------------------------------
class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ListFormat(StrEnum):
    table = "table"
    json = "json"


class SourceKind(StrEnum):
    sample = "sample"
    kite = "kite"


class CostKind(StrEnum):
    zerodha = "zerodha"
    none = "none"


class Segment(StrEnum):
    futures = "futures"
    options = "options"
    intraday = "intraday"
    delivery = "delivery"


def _value(choice: Enum | None) -> Any:
    """The plain value of a choice (None stays None): what the library takes."""
    return None if choice is None else choice.value


class _State:
    config: Path | None = None
    cache_dir: Path | None = None
    verbose: bool = False
    quiet: bool = False


STATE = _State()
log = logging.getLogger("mde")


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Any:
    from rich.console import Console

    # Piped output is not wrapped at rich's default 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _error_line(message: str) -> None:
    """`error: <message>` on stderr; the message is plain text (brackets and all)."""
    from rich.markup import escape

    _stderr().print(f"[bold red]error:[/] {escape(message)}", markup=True)


def _fail(message: str, code: int) -> typer.Exit:
    _error_line(message)
    return typer.Exit(code)


def _say(line: str, err: bool = False) -> None:
    """A line of output, unless -q (which prints nothing but errors)."""
    if not STATE.quiet:
        typer.echo(line, err=err)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The one place where our errors become `error: <message>` and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import MdeError

        try:
            return fn(*args, **kwargs)
        except MdeError as exc:
            raise _fail(exc.message, exc.exit_code) from None
        except KeyboardInterrupt:
            raise _fail("interrupted; the cache is unchanged", 130) from None

    return wrapper


_VALID = re.compile(r"is not a valid (int|integer|float)\b")


def usage_message(exc: Any) -> str:
    """One line for a typer/click usage error: `--limit: 'abc' is not an integer; see mde window --help`."""
    ctx = getattr(exc, "ctx", None)
    param = getattr(exc, "param", None)
    if type(exc).__name__ != "MissingParameter" and param is not None and getattr(exc, "message", None):
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        name = longs[0] if longs and getattr(param, "param_type_name", "") == "option" else (param.name or "").upper()
        text = f"{name}: {exc.message}"
    else:
        text = exc.format_message()
    text = " ".join(str(text).split()).rstrip(".")
    text = _VALID.sub(lambda m: "is not an integer" if m.group(1).startswith("int") else "is not a number", text)
    text = text.replace("Missing option", "missing option").replace("Missing argument", "missing argument")
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    path = getattr(ctx, "command_path", None) or "mde"
    return f"{text}; see {path} --help"


def _redact(text: str) -> str:
    """Blank the secrets mde may hold (tokens, the API secret) out of a message."""
    import os

    for name in ("KITE_ACCESS_TOKEN", "KITE_API_SECRET", "MDE_API_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def run_guarded(call: Callable[[], Any]) -> int:
    """Run the CLI; turn whatever comes out into one `error:` line and an exit code.

    Usage errors (a bad flag or value) are exit 2; mde's own errors were already printed by
    `handle_errors`; anything else is a bug: `error: internal error: <Type>: <message>`, exit 70,
    with the traceback only under -v.
    """
    STATE.config = STATE.cache_dir = None
    STATE.verbose = STATE.quiet = False
    try:
        rv = call()
    except typer.TyperException as exc:  # click's ClickException and its usage errors
        if type(exc).__name__ == "NoArgsIsHelpError":
            return 2  # `mde` alone: typer printed the help
        _error_line(
            usage_message(exc)
            if isinstance(getattr(exc, "exit_code", None), int) and exc.exit_code == 2
            else " ".join(exc.format_message().split())
        )
        return int(getattr(exc, "exit_code", 1))
    except typer.Abort:
        _error_line("aborted")
        return 1
    except Exception as exc:
        from .errors import MdeError

        if isinstance(exc, MdeError):  # raised outside a command (a parameter callback)
            _error_line(exc.message)
            return exc.exit_code
        if STATE.verbose:
            import traceback

            sys.stderr.write(_redact("".join(traceback.format_exception(exc))))
        message = " ".join(str(exc).split())
        _error_line(_redact(f"internal error: {type(exc).__name__}: {message} (run with -v for the traceback)"))
        return INTERNAL_ERROR
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def settings(source: SourceKind | None = None) -> Settings:
    from .config import load

    return load(STATE.config, cache_dir=STATE.cache_dir, source=_value(source))


def engine(source: SourceKind | None = None) -> MarketDataEngine:
    from .engine import MarketDataEngine

    return MarketDataEngine(settings(source))


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mde {version('mde')}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[
        Path | None, typer.Option("--config", help="Config file (default: $MDE_CONFIG, else ./mde.toml).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Cache folder (overrides MDE_CACHE_DIR and mde.toml).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what mde does to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Market Data Engine: fetch, cache and read NSE candles.

    Example:  mde refresh --symbols NIFTY BANKNIFTY && mde window NIFTY
    """
    STATE.config, STATE.cache_dir, STATE.verbose, STATE.quiet = config, cache_dir, verbose, quiet
    _set_logging()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (a test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _set_logging() -> None:
    level = logging.DEBUG if STATE.verbose else logging.ERROR if STATE.quiet else logging.WARNING
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)


def symbol_list(*groups: list[str] | None) -> list[str]:
    """The symbols of --symbol/--symbols/-s (repeated, several values, or comma-separated) and positionals."""
    return [s.strip() for group in groups for item in (group or []) for s in item.split(",") if s.strip()]


def _report_bad(errors: list[MdeError], worst: Callable[[list[MdeError]], MdeError | None] | None = None) -> None:
    """After a listing: one `error:` line per item that could not be read, then the worst
    one's exit code (the others were listed)."""
    from .errors import worst as most_severe

    for err in errors:
        _error_line(err.message)
    bad = (worst or most_severe)(errors)
    if bad is not None:
        raise typer.Exit(bad.exit_code)


# -- options more than one command takes, defined once -------------------------------------
# `replay` and `paper` share the run options (strategy, symbols, parameters, costs, cash,
# slippage, output files); `-s`/positional symbols, --timeframe and --source are everywhere.
SymbolsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--symbols",
        "--symbol",
        "-s",
        show_default=False,
        help="Symbols: --symbols NIFTY BANKNIFTY, -s NIFTY -s BANKNIFTY or NIFTY,BANKNIFTY.",
    ),
]
MoreSymbols = Annotated[
    list[str] | None, typer.Argument(help="More symbols (so that --symbols NIFTY BANKNIFTY works).", show_default=False)
]
TimeframeOpt = Annotated[
    str, typer.Option("--timeframe", "-t", help="1m 3m 5m 10m 15m 30m 60m 1d (also 1h, 5minute, day).")
]
SourceOpt = Annotated[
    SourceKind | None,
    typer.Option("--source", case_sensitive=False, help="Where candles come from (default: \\[source] kind)."),
]
ListFormatOpt = Annotated[ListFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")]
FromOpt = Annotated[str, typer.Option("--from", help="First session, YYYY-MM-DD (inclusive).")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="sma_cross, orb, or path/to/file.py:ClassName.")]
ParamsOpt = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; NAME=V1,V2 sweeps every combination.")
]
CostsOpt = Annotated[
    CostKind, typer.Option("--costs", case_sensitive=False, help="zerodha (dated Indian charges) or none.")
]
SegmentOpt = Annotated[
    Segment | None,
    typer.Option("--segment", case_sensitive=False, help="Charge as this segment (needed for index candles)."),
]
CashOpt = Annotated[float, typer.Option("--cash", help="Starting cash in rupees.")]
SlippageOpt = Annotated[int, typer.Option("--slippage", help="Ticks against each market/stop fill.")]
TradesOpt = Annotated[Path | None, typer.Option("--trades", help="Write the closed trades as CSV.")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")]


@app.command()
@handle_errors
def window(
    symbol: Annotated[str, typer.Argument(help="NIFTY, BANKNIFTY, INFY, NSE:INFY ...")],
    timeframe: TimeframeOpt = "5m",
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many candles (1..1000).")] = 50,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Only candles complete at this ISO time (default: now).")
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", case_sensitive=False, help="table, json (the HTTP API's shape) or csv.")
    ] = Format.table,
    source: SourceOpt = None,
) -> None:
    """Show the latest complete candles from the cache.

    Example:  mde window NIFTY --timeframe 15m --limit 20 --format json
    """
    from .engine import window_body
    from .render import window_csv, window_table
    from .symbols import validate_symbol

    eng = engine(source)
    win = eng.read_window(symbol, timeframe, limit=limit, as_of=as_of)
    name = validate_symbol(symbol)  # the name every other path shows: NIFTY for " nifty"
    if fmt is Format.table:
        window_table(win.candles, name, eng.status(symbol, timeframe, as_of=as_of), _stdout(), note=win.note(name))
        return
    if fmt is Format.json:
        typer.echo(window_body(symbol, timeframe, win.candles).decode())  # the API's bytes, valid JSON always
    else:
        sys.stdout.write(window_csv(win.candles))
    note = win.note(name)
    if note:  # stdout stays exactly the data; the note goes beside it
        _say(f"note: {note}", err=True)


@app.command()
@handle_errors
def fetch(
    symbol: Annotated[str, typer.Argument(help="NIFTY, BANKNIFTY, INFY, NSE:INFY ...")],
    timeframe: TimeframeOpt = "5m",
    start: FromOpt = ...,  # type: ignore[assignment]
    end: Annotated[str | None, typer.Option("--to", help="Last session, YYYY-MM-DD (inclusive; default: now).")] = None,
    source: SourceOpt = None,
) -> None:
    """Download candles for a date range into the cache (never deletes cached candles).

    A range without an NSE session, or outside what the sample has, is an error and records
    nothing; a source's answer of no candles at all is recorded as empty, not as covered.

    Example:  mde fetch NIFTY --timeframe 5m --from 2024-06-01 --to 2024-06-30
    """
    from .render import fetch_line

    _say(fetch_line(engine(source).download(symbol, timeframe, start, end)))


@app.command()
@handle_errors
def refresh(
    symbols: Annotated[
        list[str] | None,
        typer.Argument(help="Symbols (also --symbols; default: \\[refresh] symbols).", show_default=False),
    ] = None,
    symbols_opt: SymbolsOpt = None,
    timeframes: Annotated[
        list[str] | None, typer.Option("--timeframe", "-t", help="Timeframe(s) (default: \\[refresh] timeframes, 5m).")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count", help="Make sure at least N complete candles are cached (back-fills; new series default 1000)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    source: SourceOpt = None,
) -> None:
    """Bring cached series up to now, fetching the least it can. Cron-safe: one summary line
    (none with -q), and a non-zero exit code (the worst failure's) if any series failed.

    Example (cron, every 5 minutes in the session):  mde refresh --symbols NIFTY BANKNIFTY
    """
    from contextlib import nullcontext

    from .engine import check_count
    from .jsonout import dumps
    from .render import RefreshProgress, refresh_line, summary_line

    if count is not None:
        check_count(count)  # a bad --count is named before the config is read
    eng = engine(source)
    on_tty = sys.stdout.isatty() and not STATE.quiet and not as_json
    with RefreshProgress(_stdout()) if on_tty else nullcontext() as progress:
        report = eng.refresh_many(
            [*(symbols_opt or []), *(symbols or [])],
            timeframes,
            count,
            on_result=progress.result if progress else None,
            on_plan=progress.plan if progress else None,
        )
    for res in report.results:
        if res.error is not None:
            _error_line(f"{res.symbol} {res.timeframe}: {res.error.message}")
        elif STATE.verbose and res.report is not None:
            typer.echo(refresh_line(res))
    if as_json:
        typer.echo(dumps(report.summary, indent=1))
    else:
        _say(summary_line(report.summary))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command("ls")
@handle_errors
def list_series(fmt: ListFormatOpt = ListFormat.table) -> None:
    """List the cached series: source, rows, first/last candle, covered ranges, size on disk,
    and a note for each series holding implausible candles from its source.

    Example:  mde ls --format json
    """
    from .render import inventory_json, inventory_table

    items = engine().inventory()
    if fmt is ListFormat.json:
        typer.echo(inventory_json(items))
    else:
        inventory_table(items, _stdout())
    _report_bad([it.error for it in items if it.error is not None])


@app.command("import")
@handle_errors
def import_(
    path: Annotated[Path, typer.Argument(help="A CSV (ts,open,high,low,close,volume) or the old JSON cache file.")],
    symbol: Annotated[str, typer.Option("--symbol", help="The symbol these candles belong to.")] = ...,  # type: ignore[assignment]
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Their timeframe.")] = ...,  # type: ignore[assignment]
    origin: Annotated[
        str,
        typer.Option("--origin", help="Source label in the manifest (kite to continue with `mde refresh` on Kite)."),
    ] = "import",
    drop_invalid: Annotated[
        bool,
        typer.Option("--drop-invalid", help="Drop implausible rows (counted by reason) instead of refusing the file."),
    ] = False,
) -> None:
    """Load candles from a CSV or the previous version's JSON cache into the Parquet cache.

    Every row is checked; a file with an implausible row is refused whole (exit 2, the first
    bad rows by line number) unless --drop-invalid.

    Example:  mde import artifacts/market_data/NIFTY_5m.json --symbol NIFTY --timeframe 5m --origin kite
    """
    from .render import import_line

    _say(import_line(engine().import_file(path, symbol, timeframe, origin=origin, drop_invalid=drop_invalid)))


@app.command()
@handle_errors
def prune(
    before: Annotated[str, typer.Option("--before", help="Drop candles before this date (YYYY-MM-DD).")] = ...,  # type: ignore[assignment]
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", "-t", help="Only this timeframe.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; change nothing.")] = False,
) -> None:
    """Drop old candles from the cache (whole partitions; a straddling one is rewritten).

    Example:  mde prune --before 2023-01-01 --timeframe 1m --dry-run
    """
    from .render import prune_lines

    for line in prune_lines(engine().prune(before, symbol=symbol, timeframe=timeframe, dry_run=dry_run), dry_run):
        _say(line)


@app.command()
@handle_errors
def login(
    request_token: Annotated[
        str | None, typer.Argument(help="The request_token, or the whole redirect URL (else read from stdin).")
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Say whether a token is stored and when it expires (never the token).")
    ] = False,
) -> None:
    """Log in to Kite once a day: open the printed URL, log in, paste the redirect URL back.

    The access token is stored with mode 0600 in your config folder and expires at the
    next 06:00 IST; KITE_ACCESS_TOKEN overrides it.

    Example:  mde login 'https://127.0.0.1/?action=login&status=success&request_token=abc123'
    """
    from .sources.kite import auth

    conf = settings()
    if status:
        typer.echo(auth.status_text(conf))
        return
    from .sources.kite import login_client

    auth.require_api_secret(conf)
    client = login_client(conf)
    if request_token is None:
        _stderr().print(f"Open this URL, log in, and paste the URL Kite redirects you to:\n{auth.login_url(client)}")
        request_token = sys.stdin.readline().strip()
    info = auth.complete_login(conf, client, request_token)
    _say(
        f"logged in as {info.user_id}; token saved to {auth.token_path(conf)}, expires {info.expires_at:%Y-%m-%d %H:%M} IST"
    )


@app.command()
@handle_errors
def instruments(
    search: Annotated[str | None, typer.Option("--search", help="Case-insensitive text in the symbol or name.")] = None,
    refresh_dump: Annotated[
        bool, typer.Option("--refresh", help="Download Kite's instruments list now (else at most once a day).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to show.")] = 50,
    fmt: Annotated[
        ListFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")
    ] = ListFormat.table,
    source: SourceOpt = None,
) -> None:
    """Show Kite's instruments list (downloaded at most once a day and cached as Parquet; on the
    sample source, the list shipped with mde, offline).

    Example:  mde instruments --search "nifty bank"
    """
    from .instruments import list_instruments
    from .render import instruments_json, instruments_table

    listing = list_instruments(settings(source), search, limit=limit, refresh=refresh_dump)
    if fmt is ListFormat.json:
        typer.echo(instruments_json(listing.rows))
        if listing.note and not STATE.quiet:
            typer.echo(f"note: {listing.note}", err=True)
    else:
        instruments_table(listing.rows, listing.total, listing.fetched_at, _stdout(), note=listing.note)


@app.command()
@handle_errors
def replay(
    more_symbols: MoreSymbols = None,
    strategy: StrategyOpt = ...,  # type: ignore[assignment]
    symbols: SymbolsOpt = None,
    timeframe: TimeframeOpt = "5m",
    start: FromOpt = ...,  # type: ignore[assignment]
    end: Annotated[str, typer.Option("--to", help="Last session, YYYY-MM-DD (inclusive).")] = ...,  # type: ignore[assignment]
    params: ParamsOpt = None,
    costs: CostsOpt = CostKind.zerodha,
    segment: SegmentOpt = None,
    cash: CashOpt = 1_000_000.0,
    slippage: SlippageOpt = 0,
    square_off: Annotated[
        str | None, typer.Option("--square-off", help="HH:MM IST for intraday strategies (default 15:20).")
    ] = None,
    trades: TradesOpt = None,
    report: ReportOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object, nothing else.")
    ] = False,
    allow_gaps: Annotated[
        bool, typer.Option("--allow-gaps", help="Replay even if the cache lacks sessions of the range.")
    ] = False,
    sort: Annotated[str, typer.Option("--sort", help="Sweep: the metric to sort rows by.")] = "net_pnl",
    workers: Annotated[int | None, typer.Option("--workers", help="Sweep: processes (default: all cores).")] = None,
    source: SourceOpt = None,
) -> None:
    """Backtest a strategy on cached candles: next-open fills, Indian costs, honest metrics.

    Example:  mde replay --strategy sma_cross --symbol NIFTY --from 2024-01-01 --to 2024-12-31 --segment futures
    """
    from .errors import InputError
    from .replay import param_grid, run_replay

    assert strategy is not None  # typer refuses the command without --strategy
    names = symbol_list(symbols, more_symbols)
    if not names:
        raise InputError("replay needs a symbol: --symbol NIFTY (several: --symbol NIFTY BANKNIFTY)")
    eng = engine(source)
    from .strategy import load_strategy

    kinds = {name: kind for name, (kind, _) in load_strategy(strategy).parameters().items()}
    grid = param_grid(params or [], kinds)
    run: dict[str, Any] = dict(
        symbols=names,
        timeframe=timeframe,
        start=start,
        end=end,
        costs=costs.value,
        segment=_value(segment),
        cash=cash,
        slippage_ticks=slippage,
        allow_gaps=allow_gaps,
        square_off=square_off,
    )
    if len(grid) > 1:
        if trades or report:
            raise InputError(
                "--trades and --report need one parameter set; run the best row of the sweep again without lists"
            )
        _sweep(eng, strategy, grid, sort, workers, as_json, run)
        return
    # the strategy's ctx.log lines on stderr as they come (stdout stays the table or the JSON)
    on_log = None if STATE.quiet else (lambda line: typer.echo(line, err=True))
    result = run_replay(eng, strategy, params=grid[0] if grid else None, on_log=on_log, **run)
    if trades:
        result.write_trades(trades)
    if report:
        result.write_report(report)
    if as_json:
        typer.echo(result.to_json())
        for warning in result.warnings:  # stdout holds the JSON alone
            _say(f"warning: {warning}", err=True)
        return
    from .render import replay_table

    replay_table(result, _stdout())
    for path, what in ((trades, "trades"), (report, "report")):
        if path:
            _say(f"{what} written to {path}", err=True)


def _sweep(
    eng: MarketDataEngine,
    strategy: str,
    grid: list[dict[str, str]],
    sort: str,
    workers: int | None,
    as_json: bool,
    run: dict[str, Any],
) -> None:
    """`mde replay` with lists of parameter values: one row per combination, then the error of
    the combinations whose strategy raised (if any)."""
    from .render import sweep_json, sweep_table
    from .replay import sweep, sweep_failure

    rows = sweep(eng, strategy, grid, sort_by=sort, workers=workers, **run)
    if as_json:
        typer.echo(sweep_json(rows))
    else:
        sweep_table(rows, sort, _stdout())
    failure = sweep_failure(rows)
    if failure is not None:
        raise failure


@app.command("sweep")
@handle_errors
def sweep_cmd(
    more_symbols: MoreSymbols = None,
    strategy: StrategyOpt = ...,  # type: ignore[assignment]
    symbols: SymbolsOpt = None,
    timeframe: TimeframeOpt = "5m",
    start: FromOpt = ...,  # type: ignore[assignment]
    end: Annotated[str, typer.Option("--to", help="Last session, YYYY-MM-DD (inclusive).")] = ...,  # type: ignore[assignment]
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="NAME=V1,V2 (a list), NAME=START:STOP:STEP (inclusive range), or both: fast=2,5:50:5."
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", help="Run N combinations drawn at random from the grid (seeded).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of --samples (the same seed, the same sample everywhere).")
    ] = 0,
    sort: Annotated[
        str, typer.Option("--sort", help="The metric that ranks combinations (and picks each walk-forward fold's).")
    ] = "sharpe",
    top: Annotated[int, typer.Option("--top", help="Rows shown in the table.")] = 10,
    walk: Annotated[
        str | None, typer.Option("--walk-forward", help="train=6M,test=1M[,anchored]: units D (trading days), W, M, Y.")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Local processes (default: all cores).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write every row as Parquet.")] = None,
    report: ReportOpt = None,
    costs: CostsOpt = CostKind.zerodha,
    segment: SegmentOpt = None,
    cash: CashOpt = 1_000_000.0,
    slippage: SlippageOpt = 0,
    square_off: Annotated[
        str | None, typer.Option("--square-off", help="HH:MM IST for intraday strategies (default 15:20).")
    ] = None,
    allow_gaps: Annotated[
        bool, typer.Option("--allow-gaps", help="Run even if the cache lacks sessions of the range.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as one JSON object, nothing else.")] = False,
    source: SourceOpt = None,
) -> None:
    """Search a strategy's parameters: every combination (or a sample) x symbol, optionally
    walk-forward, with the probability of backtest overfitting and the deflated Sharpe ratio.

    Example:  mde sweep --strategy sma_cross -s NIFTY --from 2024-01-01 --to 2024-06-28 -p fast=5:20:5 -p slow=30:90:30 --walk-forward train=2M,test=1M
    """
    from .errors import InputError
    from .sweep import run_sweep, sweep_failure

    assert strategy is not None  # typer refuses the command without --strategy
    names = symbol_list(symbols, more_symbols)
    if not names:
        raise InputError("sweep needs a symbol: --symbol NIFTY (several: --symbol NIFTY BANKNIFTY)")
    if top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    result = run_sweep(
        engine(source),
        strategy,
        names,
        timeframe,
        start,
        end,
        params or [],
        samples=samples,
        seed=seed,
        sort_by=sort,
        walk=walk,
        workers=workers,
        costs=costs.value,
        segment=_value(segment),
        cash=cash,
        slippage_ticks=slippage,
        allow_gaps=allow_gaps,
        square_off=square_off,
    )
    if out:
        result.write_parquet(out)
    if report:
        result.write_report(report)
    if as_json:
        from .render import sweep_result_json

        typer.echo(sweep_result_json(result))
    else:
        from .render import sweep_result_table

        sweep_result_table(result, top, _stdout())
        for path, what in ((out, "rows"), (report, "report")):
            if path:
                _say(f"{what} written to {path}", err=True)
    failure = sweep_failure(result)
    if failure is not None:
        raise failure


@app.command()
@handle_errors
def paper(
    more_symbols: MoreSymbols = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="sma_cross, orb, or path/to/file.py:ClassName.")
    ] = None,
    symbols: SymbolsOpt = None,
    timeframe: Annotated[
        str | None,
        typer.Option(
            "--timeframe",
            "-t",
            help="For every symbol. Default: each symbol's first in \\[refresh.multi_tf], else \\[refresh] timeframes\\[0].",
        ),
    ] = None,
    params: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE.")] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            help="Session name (default: the built-in strategy's name or the class name, then the date, e.g. RsiReversion-2024-06-14); the same name resumes it.",
        ),
    ] = None,
    source: SourceOpt = None,
    day: Annotated[
        str | None, typer.Option("--date", help="With --source sample: the bundled day to play, YYYY-MM-DD.")
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", help="Sample clock: 60 = 60x real time, 0 = as fast as possible.")
    ] = 0.0,
    tick: Annotated[
        str | None,
        typer.Option("--tick", help="Clock step: 1s (live default), 500ms, 1m; sample default: each candle close."),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Stop at HH:MM IST (default: the session's end).")
    ] = None,
    costs: Annotated[
        CostKind, typer.Option("--costs", case_sensitive=False, help="zerodha or none.")
    ] = CostKind.zerodha,
    segment: Annotated[
        Segment | None,
        typer.Option("--segment", case_sensitive=False, help="Charge as this segment (needed for index candles)."),
    ] = None,
    cash: Annotated[float, typer.Option("--cash", help="Starting cash in rupees.")] = 1_000_000.0,
    slippage: Annotated[
        int, typer.Option("--slippage", help="Ticks against each market/stop fill (live: against the LTP).")
    ] = 0,
    trades: Annotated[Path | None, typer.Option("--trades", help="Write the closed trades as CSV.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the same HTML report as mde replay.")] = None,
    max_loss: Annotated[
        float | None, typer.Option("--max-loss", help="Risk: halt and flatten when the day's loss reaches this (Rs).")
    ] = None,
    max_qty: Annotated[
        int | None, typer.Option("--max-qty", help="Risk: largest position per symbol (quantity).")
    ] = None,
    max_notional: Annotated[
        float | None, typer.Option("--max-notional", help="Risk: largest position per symbol (Rs).")
    ] = None,
    max_orders: Annotated[int | None, typer.Option("--max-orders-per-minute", help="Risk: orders per minute.")] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show what the journal says of --session (or of all sessions).")
    ] = False,
    halt: Annotated[
        bool, typer.Option("--halt", help="Kill switch for --session: no new entries, flatten, stop.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (or --status) as JSON.")] = False,
) -> None:
    """Paper-trade a strategy live on Kite, or on a bundled day as if live (--source sample --date).

    Example:  mde paper --strategy sma_cross -s NIFTY --source sample --date 2024-06-14 --segment futures
    """
    from .errors import InputError
    from .paper.rules import limits_from
    from .paper.session import request_halt, session_status
    from .strategy import parse_params
    from .timeframes import parse_duration

    conf = settings(source)
    if halt:
        if not session:
            raise InputError("--halt needs --session NAME (see `mde paper --status`)")
        typer.echo(request_halt(conf, session))
        return
    if status:
        from .errors import CacheError, worst
        from .render import paper_status_json, paper_status_table

        items = session_status(conf, session)
        typer.echo(paper_status_json(items)) if as_json else paper_status_table(items, _stdout())
        _report_bad([CacheError(it["error"]) for it in items if it.get("error")], worst)
        return
    universe = symbol_list(symbols, more_symbols)
    if not strategy or not universe:
        raise InputError("a paper session needs --strategy and --symbols (or --status to look at one)")
    step = parse_duration(tick, "--tick") if tick is not None else None
    grid = parse_params(params or [])
    if any(len(v) > 1 for v in grid.values()):
        raise InputError("a paper session takes one value per --param")
    from .paper import PaperEngine

    panel = None
    if sys.stdout.isatty() and not STATE.quiet and not as_json:
        from rich.live import Live

        from .render import paper_dashboard

        panel = Live(console=_stdout(), refresh_per_second=4, transient=False)
    # the library holds the rules (--date with --source sample only, the timeframe of each symbol) and
    # checks everything before a journal exists; a terminal gets the live panel, else one line per event
    paper_session = PaperEngine.from_settings(
        conf,
        strategy,
        universe,
        timeframe,
        day=day,
        speed=speed,
        tick=step,
        name=session,
        params={k: v[0] for k, v in grid.items()},
        until=until,
        costs=costs.value,
        segment=segment.value if segment else None,
        cash=cash,
        slippage_ticks=slippage,
        risk=limits_from(
            conf,
            max_loss_per_day=max_loss,
            max_position_qty=max_qty,
            max_position_notional=max_notional,
            max_orders_per_minute=max_orders,
        ),
        log=None if STATE.quiet or panel is not None else (lambda line: typer.echo(line, err=True)),
        on_tick=(lambda snap: panel.update(paper_dashboard(snap))) if panel is not None else None,
    )
    if panel is not None:
        panel.start()
    try:
        result = paper_session.run()
    finally:
        if panel is not None:
            panel.stop()
    if trades:
        result.summary.write_trades(trades)
    if report:
        result.summary.write_report(report)
    if as_json:
        typer.echo(result.summary.to_json())
        return
    from .render import replay_table

    replay_table(result.summary, _stdout())
    resumed = f", resumed after {result.resumed_from} series marks" if result.resumed_from else ""
    typer.echo(
        f"session {result.name} {result.status}: {result.candles} candles{resumed}; {result.trades.height} trades, "
        f"net P&L {result.net_pnl:,.2f}, cash {result.cash:,.2f}"
    )


@app.command()
@handle_errors
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to bind (default: \\[serve] host, 127.0.0.1). Anything but loopback needs a token."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port (default: \\[serve] port, 8000; 0: any free port, named in the first line)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="API token required as `Authorization: Bearer ...` (default: $MDE_API_TOKEN).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the HTTP API and the dashboard (read-only) until Ctrl-C.

    Example:  mde serve --port 8000   then open http://127.0.0.1:8000/
    """
    from .api import create_app, listen, run
    from .config import load
    from .render import serve_line

    conf = load(STATE.config, cache_dir=STATE.cache_dir, host=host, port=port, api_token=token)
    app_ = create_app(conf)  # the app's own token rule (a ConfigError, exit 2) before anything listens
    sock = listen(conf.serve.host, conf.serve.port)
    bound = sock.getsockname()[1]  # --port 0: the free port the system picked
    if not STATE.quiet:
        _stderr().print(serve_line(conf, bound), markup=False)
    run(app_, sock, verbose=STATE.verbose)


@app.command()
@handle_errors
def strategies(
    spec: Annotated[
        str | None, typer.Argument(help="A strategy (default: the built-ins), e.g. orb or path/to/file.py:Class.")
    ] = None,
    fmt: ListFormatOpt = ListFormat.table,
) -> None:
    """List strategies and their parameters (set them with `mde replay --param NAME=VALUE`).

    Example:  mde strategies orb
    """
    from .render import strategies_json, strategies_table
    from .strategy import BUILTIN_STRATEGIES, describe

    items = [describe(spec)] if spec else [describe(name) for name in BUILTIN_STRATEGIES]
    if fmt is ListFormat.json:
        typer.echo(strategies_json(items))
    else:
        strategies_table(items, _stdout())


@app.command()
@handle_errors
def stream(
    symbols: MoreSymbols = None,
    symbols_opt: SymbolsOpt = None,
    timeframes: Annotated[
        list[str] | None, typer.Option("--timeframe", "-t", help="Timeframe(s) to build (default 1m).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Stop at HH:MM IST (or an ISO instant), then reconcile the day.")
    ] = None,
    reconcile_day: Annotated[
        str | None,
        typer.Option(
            "--reconcile",
            help="Do not stream: replace the candles of this day (YYYY-MM-DD) with Kite's historical ones.",
        ),
    ] = None,
    no_reconcile: Annotated[bool, typer.Option("--no-reconcile", help="Do not reconcile after --until.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary at the end.")] = False,
) -> None:
    """Build live candles from Kite's WebSocket ticker into the cache (origin `ticks`).

    Candles are built from the ticks' exchange timestamps on the 09:15 grid and written once
    complete (plus \\[stream] grace); a candle with a disconnect inside it is fetched from the
    historical API instead. Ctrl-C or SIGTERM writes every complete candle and exits 0; a
    rejected token is exit 3. After --until the day is reconciled with Kite's historical
    candles, so the cache ends equal to what `mde fetch` writes.

    Example:  mde stream --symbols NIFTY BANKNIFTY INFY -t 1m -t 5m --until 15:30
    """
    import threading

    from .jsonout import dumps
    from .stream import reconcile, run_stream, stop_on_signals

    names = symbol_list(symbols_opt, symbols)
    tfs = timeframes or ["1m"]
    eng = engine(SourceKind.kite)
    if reconcile_day is not None:
        report = reconcile(eng, names, tfs, reconcile_day)
        if as_json:
            typer.echo(dumps(report.to_dict(), indent=1))
        else:
            _say(report.line())
        return
    say = (lambda line: None) if as_json else _say
    stop = threading.Event()
    with stop_on_signals(stop):
        summary = run_stream(eng, names, tfs, until=until, reconcile_after=not no_reconcile, stop=stop, say=say)
    if as_json:
        typer.echo(dumps(summary.to_dict(), indent=1))
        return
    _say(summary.line())
    if summary.reconciled is not None:
        _say(summary.reconciled.line())


# Every command takes -v/-q after its name too.
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def main() -> None:
    """The `mde` entry point; the group's `main` turns every outcome into an exit code."""
    app()


if __name__ == "__main__":
    main()
