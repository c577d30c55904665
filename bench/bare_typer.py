"""The floor for `mde --help`: a bare typer app with mde's commands and options.

The signatures are copied from src/mde/cli.py (callback and commands, same enums, same
help texts) with empty bodies and no mde import, so the difference between
`python -m mde --help` and `python bench/bare_typer.py --help` is what mde itself adds
to start-up. Keep it in step with cli.py when commands or options change: bench/cache.py
compares the two command trees and prints a warning when they differ.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperOption


class _Command(TyperCommand):
    """As in cli.py: every command takes -v/-q after its name too."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        for decls, text in (
            (["--verbose", "-v"], "Log what mde does to stderr (as mde -v)."),
            (["--quiet", "-q"], "Print nothing but errors (as mde -q)."),
        ):
            self.params.append(
                TyperOption(param_decls=decls, is_flag=True, default=False, expose_value=False, help=text)
            )


app = typer.Typer(
    name="mde",
    help="Market Data Engine: a Parquet candle cache for NSE/NFO via Zerodha Kite Connect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


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


def _version(value: bool) -> None:
    if value:
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


@app.command()
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


@app.command()
def fetch(
    symbol: Annotated[str, typer.Argument(help="NIFTY, BANKNIFTY, INFY, NSE:INFY ...")],
    timeframe: TimeframeOpt = "5m",
    start: Annotated[str, typer.Option("--from", help="First session, YYYY-MM-DD (inclusive).")] = ...,  # type: ignore[assignment]
    end: Annotated[str | None, typer.Option("--to", help="Last session, YYYY-MM-DD (inclusive; default: now).")] = None,
    source: SourceOpt = None,
) -> None:
    """Download candles for a date range into the cache (never deletes cached candles).

    Example:  mde fetch NIFTY --timeframe 5m --from 2024-06-01 --to 2024-06-30
    """


@app.command()
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


@app.command("ls")
def list_series(
    fmt: Annotated[
        ListFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")
    ] = ListFormat.table,
) -> None:
    """List the cached series: source, rows, first/last candle, covered ranges, size on disk.

    Example:  mde ls --format json
    """


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A CSV (ts,open,high,low,close,volume) or the old JSON cache file.")],
    symbol: Annotated[str, typer.Option("--symbol", help="The symbol these candles belong to.")] = ...,  # type: ignore[assignment]
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Their timeframe.")] = ...,  # type: ignore[assignment]
    origin: Annotated[
        str,
        typer.Option("--origin", help="Source label in the manifest (kite to continue with `mde refresh` on Kite)."),
    ] = "import",
) -> None:
    """Load candles from a CSV or the previous version's JSON cache into the Parquet cache.

    Example:  mde import artifacts/market_data/NIFTY_5m.json --symbol NIFTY --timeframe 5m --origin kite
    """


@app.command()
def prune(
    before: Annotated[str, typer.Option("--before", help="Drop candles before this date (YYYY-MM-DD).")] = ...,  # type: ignore[assignment]
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", "-t", help="Only this timeframe.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go; change nothing.")] = False,
) -> None:
    """Drop old candles from the cache (whole partitions; a straddling one is rewritten).

    Example:  mde prune --before 2023-01-01 --timeframe 1m --dry-run
    """


@app.command()
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


@app.command()
def instruments(
    search: Annotated[str | None, typer.Option("--search", help="Case-insensitive text in the symbol or name.")] = None,
    refresh_dump: Annotated[
        bool, typer.Option("--refresh", help="Download Kite's instruments list now (else at most once a day).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to show.")] = 50,
    fmt: Annotated[
        ListFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")
    ] = ListFormat.table,
) -> None:
    """Show Kite's instruments list (downloaded at most once a day and cached as Parquet).

    Example:  mde instruments --search "nifty bank"
    """


class CostKind(StrEnum):
    zerodha = "zerodha"
    none = "none"


class Segment(StrEnum):
    futures = "futures"
    options = "options"
    intraday = "intraday"
    delivery = "delivery"


@app.command()
def replay(
    more_symbols: MoreSymbols = None,
    strategy: Annotated[str, typer.Option("--strategy", help="sma_cross, orb, or path/to/file.py:ClassName.")] = ...,  # type: ignore[assignment]
    symbols: SymbolsOpt = None,
    timeframe: TimeframeOpt = "5m",
    start: Annotated[str, typer.Option("--from", help="First session, YYYY-MM-DD (inclusive).")] = ...,  # type: ignore[assignment]
    end: Annotated[str, typer.Option("--to", help="Last session, YYYY-MM-DD (inclusive).")] = ...,  # type: ignore[assignment]
    params: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; NAME=V1,V2 sweeps every combination.")
    ] = None,
    costs: Annotated[
        CostKind, typer.Option("--costs", case_sensitive=False, help="zerodha (dated Indian charges) or none.")
    ] = CostKind.zerodha,
    segment: Annotated[
        Segment | None,
        typer.Option("--segment", case_sensitive=False, help="Charge as this segment (needed for index candles)."),
    ] = None,
    cash: Annotated[float, typer.Option("--cash", help="Starting cash in rupees.")] = 1_000_000.0,
    slippage: Annotated[int, typer.Option("--slippage", help="Ticks against each market/stop fill.")] = 0,
    square_off: Annotated[
        str | None, typer.Option("--square-off", help="HH:MM IST for intraday strategies (default 15:20).")
    ] = None,
    trades: Annotated[Path | None, typer.Option("--trades", help="Write the closed trades as CSV.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
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


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to bind (default: \\[serve] host, 127.0.0.1). Anything but loopback needs a token."
        ),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: \\[serve] port, 8000).")] = None,
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


@app.command()
def strategies(
    spec: Annotated[
        str | None, typer.Argument(help="A strategy (default: the built-ins), e.g. orb or path/to/file.py:Class.")
    ] = None,
    fmt: Annotated[
        ListFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")
    ] = ListFormat.table,
) -> None:
    """List strategies and their parameters (set them with `mde replay --param NAME=VALUE`).

    Example:  mde strategies orb
    """


@app.command()
def paper(
    more_symbols: MoreSymbols = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="sma_cross, orb, or path/to/file.py:ClassName.")
    ] = None,
    symbols: SymbolsOpt = None,
    timeframe: Annotated[
        str | None,
        typer.Option(
            "--timeframe", "-t", help="Default: \\[refresh] multi_tf of the symbols, else \\[refresh] timeframes\\[0]."
        ),
    ] = None,
    params: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE.")] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Session name (default: STRATEGY-DATE); the same name resumes it.")
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


for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


if __name__ == "__main__":
    app()
