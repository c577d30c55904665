"""Presentation: turning library results into tables, JSON and CSV. No logic lives here
that a Python user of mde would miss; a window's JSON is `engine.window_body` (the API's bytes),
and every other JSON goes through `jsonout.dumps` (null for NaN and infinities).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .jsonout import dumps

if TYPE_CHECKING:
    from collections.abc import Sequence

    import polars as pl
    from rich.console import Console

    from .config import Settings
    from .engine import FetchReport, ImportReport, SeriesInfo, SeriesStatus


def fmt_ts(ts: datetime | None, with_seconds: bool = False) -> str:
    if ts is None:
        return "-"
    return ts.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _price(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def window_csv(df: pl.DataFrame) -> str:
    import polars as pl

    out = df.select(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%:z"), "open", "high", "low", "close", "volume")
    return out.write_csv()


def status_line(status: SeriesStatus) -> str:
    if status.last_ts is None:
        return f"no {status.timeframe} candle complete at {fmt_ts(status.as_of)} IST"
    base = f"last candle {fmt_ts(status.last_ts)} IST, closed {fmt_ts(status.last_close)}"
    if status.stale:
        return f"{base} · STALE: a complete series would reach {fmt_ts(status.expected_close)} (as of {fmt_ts(status.as_of)})"
    return f"{base} · up to date as of {fmt_ts(status.as_of)}"


def window_table(
    df: pl.DataFrame, symbol: str, status: SeriesStatus, console: Console, note: str | None = None
) -> None:
    """The window as a table; the footer is the status line, then `note` (a built window's)."""
    from rich.table import Table
    from rich.text import Text

    tf = status.timeframe
    caption = Text(status_line(status), style="yellow" if status.stale else "dim")
    if note:
        caption.append("\n" + note, style="dim")
    table = Table(
        title=f"{symbol} ({status.instrument}) {tf} · {df.height} candle{'s' if df.height != 1 else ''}",
        caption=caption,
    )
    table.add_column("ts (IST)", no_wrap=True)
    for name in ("open", "high", "low", "close"):
        table.add_column(name, justify="right")
    table.add_column("volume", justify="right")
    fmt = "%Y-%m-%d" if tf.is_daily else "%Y-%m-%d %H:%M"
    rows = [
        (ts.strftime(fmt), _price(o), _price(h), _price(low), _price(c), "-" if v is None else f"{v:,}")
        for ts, o, h, low, c, v in df.select("ts", "open", "high", "low", "close", "volume").iter_rows()
    ]
    if rows:
        # One row of multi-line cells prints exactly what one row per candle prints (the table
        # draws no lines between rows, and no cell can wrap: ts is no_wrap, the others have no
        # spaces), but rich's cost is per cell: 6 cells instead of 6 x limit, 3-4x faster.
        # tests/test_store.py checks the equivalence at many widths.
        table.add_row(*(Text("\n".join(column)) for column in zip(*rows, strict=True)))
    console.print(table)


def implausible_note(counts: dict[str, int]) -> str:
    """`; 3 implausible (...), kept as the source's` for summaries, or nothing."""
    if not counts:
        return ""
    from .validate import counts_text

    return f"; {sum(counts.values())} implausible ({counts_text(counts)}), kept as the source's"


def inventory_table(items: list[SeriesInfo], console: Console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"{len(items)} cached series", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("series", no_wrap=True)
    table.add_column("source")
    table.add_column("rows", justify="right")
    table.add_column("first (IST)", no_wrap=True)
    table.add_column("last (IST)", no_wrap=True)
    table.add_column("covered", min_width=22)
    table.add_column("size", justify="right", no_wrap=True)
    flagged = [it for it in items if it.implausible]
    for it in items:
        if it.error is not None:  # named on stderr too; the row says the series is there
            table.add_row(
                f"{it.instrument.key} {it.timeframe.name}",
                "?",
                "?",
                "-",
                "-",
                "unreadable (see error)",
                fmt_bytes(it.bytes),
            )
            continue
        day = "%Y-%m-%d"
        covered = ", ".join(f"{a:{day}}..{b:{day}}" for a, b in it.coverage[-2:])
        if len(it.coverage) > 2:
            covered = f"+{len(it.coverage) - 2} more, " + covered
        table.add_row(
            f"{it.instrument.key} {it.timeframe.name}",
            it.source,
            f"{it.rows:,}",
            fmt_ts(it.first_ts),
            fmt_ts(it.last_ts),
            covered or "-",
            fmt_bytes(it.bytes),
        )
    console.print(table)
    from .validate import counts_text

    for it in flagged:  # a note, not a column: nearly every series has none
        console.print(
            f"{it.instrument.key} {it.timeframe.name}: implausible: {sum(it.implausible.values())} "
            f"({counts_text(it.implausible)}); kept as the source's",
            markup=False,
        )


def inventory_rows(items: list[SeriesInfo]) -> list[dict[str, Any]]:
    """The inventory as plain data: `mde ls --format json` and `/api/series`."""

    def iso(ts: datetime | None) -> str | None:
        return None if ts is None else ts.isoformat()

    return [
        {
            "instrument": it.instrument.key,
            "timeframe": it.timeframe.name,
            "source": it.source,
            "rows": it.rows,
            "first_ts": iso(it.first_ts),
            "last_ts": iso(it.last_ts),
            "updated_at": iso(it.updated_at),
            "coverage": [[iso(a), iso(b)] for a, b in it.coverage],
            "bytes": it.bytes,
            "partitions": it.partitions,
            "implausible": sum(it.implausible.values()),
            "empty": [[iso(a), iso(b)] for a, b in it.empty],
            **({"error": it.error.message} if it.error is not None else {}),
        }
        for it in items
    ]


def inventory_json(items: list[SeriesInfo]) -> str:
    return dumps(inventory_rows(items), indent=1)


def fetch_line(report: FetchReport) -> str:
    """`mde fetch`'s one line: what the source sent for the range, and what the cache holds now."""
    lo, hi = report.requested or (None, None)
    if report.empty:
        return (
            f"{report.instrument} {report.timeframe}: the source has no candles for {fmt_ts(lo)} → {fmt_ts(hi)} "
            f"(not listed yet, or no trading); recorded as empty, {report.rows} cached"
        )
    return (
        f"{report.instrument} {report.timeframe}: {report.received} candles for {fmt_ts(lo)} → {fmt_ts(hi)}, "
        f"{report.added} new, {report.rows} cached{implausible_note(report.implausible)}"
    )


def import_line(rep: ImportReport) -> str:
    """`mde import`'s one line: rows read, dropped (by why) and merged."""
    from .validate import counts_text

    invalid = (
        f", dropped {sum(rep.dropped_invalid.values())} invalid ({counts_text(rep.dropped_invalid)})"
        if rep.dropped_invalid
        else ""
    )
    example = f" (first: {rep.first_outside})" if rep.first_outside else ""
    return (
        f"{rep.instrument} {rep.timeframe}: read {rep.rows_read} rows{invalid}, dropped {rep.dropped_outside_session} "
        f"outside NSE sessions{example} and {rep.dropped_incomplete} incomplete, {rep.added} new, {rep.replaced} "
        f"replaced, {rep.rows} cached"
    )


def prune_lines(results: Sequence[tuple[Any, Any, Sequence[str], int]], dry_run: bool) -> list[str]:
    """`mde prune`'s lines: one per series that lost candles (or would, with --dry-run)."""
    verb = "would drop" if dry_run else "dropped"
    lines = [f"{inst} {tf}: {verb} {dropped} candles from {', '.join(parts)}" for inst, tf, parts, dropped in results]
    return lines or ["nothing to prune"]


def serve_line(settings: Settings, port: int | None = None) -> str:
    """What `mde serve` says once it listens: the URL to open (with the port it bound, which
    `--port 0` leaves to the system), the cache, whether a token is needed."""
    host, port = settings.serve.host, settings.serve.port if port is None else port
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    token = ", token required" if settings.serve.token else ""
    return f"mde serve: {where} (cache {settings.cache_dir}{token}); Ctrl-C stops"


def refresh_line(res: Any) -> str:
    r = res.report
    if r.requested is None:
        what = "up to date"
    elif r.empty:
        what = "the source has no candles (recorded as empty)"
    else:
        what = f"{r.added} new"
        if r.redownloaded:
            what += " (the source re-adjusted past candles: series downloaded again)"
        if r.backfilled:
            what += f", {r.backfilled} older back-filled"
    return f"{r.instrument} {r.timeframe}: {what}, {r.rows} cached{implausible_note(r.implausible)}"


def summary_line(summary: dict[str, Any]) -> str:
    line = (
        f"refresh: {summary['ok']} ok, {summary['failed']} failed; {summary['added']} candles added; "
        f"{summary['requests']} requests, {summary['rate_limited']} rate-limited (429), {summary['retries']} retries; "
        f"{summary['seconds']:.1f}s"
    )
    if summary["redownloaded"]:
        line += f"; re-downloaded after a source adjustment: {', '.join(summary['redownloaded'])}"
    if summary.get("implausible"):
        line += f"; {summary['implausible']} implausible candles kept as the source's (see mde ls)"
    return line


class RefreshProgress:
    """On a terminal: one progress row per series, ticked off as each finishes. Its `plan` and
    `result` are the `on_plan`/`on_result` callbacks of `MarketDataEngine.refresh_many`."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
        )
        self.progress = Progress(*columns, console=console, transient=False)
        self.tasks: list[Any] = []
        self.done = 0

    def __enter__(self) -> RefreshProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def plan(self, plan: list[tuple[str, str]]) -> None:
        self.tasks = [self.progress.add_task(f"{symbol} {tf}", total=1, note="", start=False) for symbol, tf in plan]
        if self.tasks:
            self.progress.start_task(self.tasks[0])

    def result(self, res: Any) -> None:
        note = "[red]failed[/]" if res.error else refresh_line(res).split(": ", 1)[1]
        self.progress.update(self.tasks[self.done], completed=1, note=note)
        self.done += 1
        if self.done < len(self.tasks):
            self.progress.start_task(self.tasks[self.done])


_INSTRUMENT_COLUMNS = (
    "instrument_token",
    "exchange",
    "tradingsymbol",
    "name",
    "instrument_type",
    "segment",
    "expiry",
    "strike",
    "lot_size",
    "tick_size",
)


def instruments_table(
    rows: pl.DataFrame, total: int, fetched_at: datetime | None, console: Console, note: str | None = None
) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{rows.height} of {total:,} instruments",
        caption=note or f"Kite dump fetched {fmt_ts(fetched_at)} IST",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    cols = [c for c in _INSTRUMENT_COLUMNS if c in rows.columns]
    for name in cols:
        table.add_column(
            name, justify="right" if name in ("instrument_token", "strike", "lot_size", "tick_size") else "left"
        )
    for row in rows.select(cols).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def instruments_json(rows: pl.DataFrame) -> str:
    cols = [c for c in _INSTRUMENT_COLUMNS if c in rows.columns]
    return dumps(rows.select(cols).to_dicts(), default=str, indent=1)


# -- replay ------------------------------------------------------------------------------
_METRIC_LABELS = {
    "net_pnl": "net P&L (Rs)",
    "gross_pnl": "gross P&L (Rs)",
    "charges": "charges (Rs)",
    "return_pct": "return %",
    "cagr_pct": "CAGR %",
    "max_drawdown": "max drawdown (Rs)",
    "max_drawdown_pct": "max drawdown %",
    "max_drawdown_bars": "max drawdown, candles under water",
    "max_drawdown_from": "  from (peak)",
    "max_drawdown_to": "  to (recovery)",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "trades": "trades",
    "win_rate_pct": "win rate %",
    "profit_factor": "profit factor",
    "expectancy": "expectancy per trade (Rs)",
    "avg_holding": "average holding time",
    "exposure_pct": "exposure %",
    "buy_and_hold_pct": "buy and hold %",
    "bars": "candles",
    "years": "years of trading time",
}


def _metric(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def replay_notes(result: Any) -> list[str]:
    """One line per series of the run that was built from a smaller cached timeframe (no
    advice: a refresh caches only the newest candles, which need not cover the run's range)."""
    from .engine import built_note
    from .timeframes import parse

    notes = []
    for d in result.fingerprint:
        if d["read_from"] != d["timeframe"]:
            note = built_note(d["symbol"], parse(d["timeframe"]), parse(d["read_from"]), advice=False)
            notes.append(f"{d['symbol']} {d['timeframe']} {note}")
    return notes


def replay_table(result: Any, console: Console) -> None:
    from rich.table import Table

    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    table = Table(
        title=f"{result.strategy}({params}) on {', '.join(result.symbols)} {result.timeframe} · {result.start} → {result.end}",
        show_header=False,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    from .report import DURATIONS, fmt_metric

    for key, value in result.metrics.items():
        table.add_row(_METRIC_LABELS.get(key, key), fmt_metric(key, value) if key in DURATIONS else _metric(value))
    rejected = getattr(result, "rejections", None) or []
    table.add_row("rejected orders (--json lists them)" if rejected else "rejected orders", _metric(len(rejected)))
    for reason, n in result.rejections_by_reason().items() if rejected else ():
        table.add_row(f"  {reason}", _metric(n))
    console.print(table)
    console.print(f"costs: {result.cost_basis}\n{result.basis}\n{result.fill_model}", style="dim", markup=False)
    for note in replay_notes(result):
        console.print(f"note: {note}", style="dim", markup=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def sweep_table(rows: list[dict[str, Any]], sort_by: str, console: Console) -> None:
    from rich.table import Table

    keys = list(rows[0]["params"]) if rows else []
    cols = ["net_pnl", "return_pct", "sharpe", "max_drawdown_pct", "win_rate_pct", "trades"]
    if sort_by not in cols:
        cols.insert(0, sort_by)
    table = Table(title=f"sweep: {len(rows)} combinations, sorted by {sort_by}")
    for k in keys:
        table.add_column(k, justify="right")
    for c in cols:
        table.add_column(_METRIC_LABELS.get(c, c), justify="right", style="bold" if c == sort_by else None)
    table.add_column("rejected", justify="right")
    for row in rows:
        if "error" in row:
            table.add_row(*[str(row["params"].get(k, "")) for k in keys], f"[red]{row['error']}[/]", *[""] * len(cols))
        else:
            rejected = _metric(sum((row.get("rejections") or {}).values()))
            table.add_row(
                *[str(row["params"].get(k, "")) for k in keys],
                *[_metric(row["metrics"].get(c)) for c in cols],
                rejected,
            )
    console.print(table)


def sweep_json(rows: list[dict[str, Any]]) -> str:
    return dumps(rows, indent=1, default=str)


def strategies_table(items: list[dict[str, Any]], console: Console) -> None:
    from rich.table import Table

    table = Table(title="strategies (mde replay --strategy NAME --param KEY=VALUE)")
    for col in ("strategy", "parameters (default)", "what it does"):
        table.add_column(col)
    for item in items:
        params = "\n".join(f"{k}: {p['type']} = {p['default']}" for k, p in item["params"].items()) or "-"
        kind = " (intraday)" if item["intraday"] else ""
        table.add_row(item["strategy"], params, item["summary"] + kind)
    console.print(table)


def strategies_json(items: list[dict[str, Any]]) -> str:
    return dumps(items, indent=1, default=str)


def paper_status_table(items: list[dict[str, Any]], console: Console) -> None:
    from rich.table import Table

    table = Table(
        title=f"paper sessions ({len(items)})",
        caption="gross P&L: fills plus open positions at the last processed close; net = gross - charges",
    )
    for col in (
        "session",
        "status",
        "strategy",
        "symbols",
        "day",
        "fills",
        "open positions",
        "last candle",
        "gross P&L",
        "charges",
        "net P&L",
    ):
        table.add_column(col, justify="right" if col in ("fills", "gross P&L", "charges", "net P&L") else "left")
    for it in items:
        if it.get("status") == "unreadable":  # a journal that cannot be read: named on stderr too
            table.add_row(it["session"], it["status"], *["-"] * 9)
            continue
        positions = ", ".join(f"{s} {q:+d}" for s, q in it["positions"].items()) or "flat"
        last = max(it["last_candle"].values(), default="-")
        money = ["-" if it.get(k) is None else f"{it[k]:,.2f}" for k in ("gross_pnl", "charges", "net_pnl")]
        table.add_row(
            it["session"],
            it["status"],
            str(it["strategy"]),
            ",".join(it["symbols"]),
            str(it["day"]),
            str(it["fills"]),
            positions,
            last,
            *money,
        )
    console.print(table)
    for it in items:  # why a stopped session stopped (its strategy raised); the same --session resumes it
        if it.get("error") and it.get("status") != "unreadable":
            console.print(f"{it['session']} stopped: {it['error']}", markup=False)


def paper_status_json(items: list[dict[str, Any]]) -> str:
    return dumps(items, indent=1, default=str)


def paper_dashboard(snap: dict[str, Any]) -> Any:
    """The live panel of `mde paper` on a terminal (rich Live re-renders it each tick)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    state_style = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "bold red"}.get(snap["risk"], "")
    head = Text.assemble(
        (f"{snap['session']}  ", "bold"),
        (f"{snap['clock']:%Y-%m-%d %H:%M} IST  ", ""),
        (snap["risk"], state_style),
        (f"  {snap['risk_reason']}" if snap["risk_reason"] else "", "dim"),
    )
    table = Table(expand=False)
    for col, justify in (
        ("symbol", "left"),
        ("last candle", "left"),
        ("age", "right"),
        ("close", "right"),
        ("position", "right"),
        ("avg price", "right"),
        ("unrealised", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in snap["symbols"]:
        age = "-" if r["age_s"] is None else f"{r['age_s'] / 60:.0f}m"
        table.add_row(
            r["symbol"],
            fmt_ts(r["last_ts"]),
            age,
            _price(r["last_close"]),
            f"{r['position']:+d}",
            _price(r["avg_price"]) if r["position"] else "-",
            _price(r["unrealised"]),
        )
    money = Text(
        f"realised {snap['realised']:,.2f}   charges {snap['charges']:,.2f}   cash {snap['cash']:,.2f}   "
        f"equity {snap['equity']:,.2f}"
    )
    parts: list[Any] = [head, table, money]
    if snap["fills"]:
        parts.append(Text("last fills:\n  " + "\n  ".join(snap["fills"]), style="dim"))
    if snap["rejections"]:
        parts.append(Text("rejected:\n  " + "\n  ".join(snap["rejections"]), style="yellow"))
    if snap.get("log"):
        parts.append(Text("strategy log:\n  " + "\n  ".join(snap["log"]), style="dim"))
    return Group(*parts)


def sweep_result_table(result: Any, top: int, console: Console) -> None:
    """`mde sweep`: the top rows by the sort metric, the skipped count, PBO and DSR per symbol
    with how to read them, and with walk-forward the folds' choices and the out-of-sample curve
    beside the in-sample figures."""
    from rich.table import Table

    sort_by = result.sort_by
    grid = [
        n
        for n in result.param_names
        if any(n in c for c in result.combinations) and len({str(c[n]) for c in result.combinations}) > 1
    ]
    names = grid or result.param_names[:2]
    cols = ["net_pnl", "return_pct", "sharpe", "max_drawdown_pct", "win_rate_pct", "trades"]
    if sort_by not in cols:
        cols.insert(0, sort_by)
    rows = [r for r in result.ok_rows() if r.get("window") != "test"]
    walk = result.walk is not None
    title = (
        f"{result.strategy} on {', '.join(result.symbols)} {result.timeframe} · {result.start} → {result.end}: "
        f"{len(result.combinations)} combinations run, {len(result.skipped)} skipped (refused by the strategy); "
        f"top {min(top, len(rows))} of {len(rows)} {'train rows' if walk else 'rows'} by {sort_by}"
    )
    table = Table(title=title)
    for k in names:
        table.add_column(k, justify="right")
    table.add_column("symbol")
    if walk:
        table.add_column("fold", justify="right")
    for c in cols:
        table.add_column(_METRIC_LABELS.get(c, c), justify="right", style="bold" if c == sort_by else None)
    table.add_column("rejected", justify="right")
    for row in sorted(rows, key=lambda r: ((r["metrics"].get(sort_by) is None), -(r["metrics"].get(sort_by) or 0.0)))[
        :top
    ]:
        cells = [str(row["params"].get(k, "")) for k in names] + [row["symbol"]]
        if walk:
            cells.append(str(row["fold"]))
        cells += [_metric(row["metrics"].get(c)) for c in cols] + [_metric(row.get("rejections_total"))]
        table.add_row(*cells)
    console.print(table)
    if walk:
        folds = Table(
            title=f"walk-forward {result.walk.train}/{result.walk.test}{' anchored' if result.walk.anchored else ''}: "
            f"the best train combination of each fold on its test window"
        )
        for col in ("fold", "symbol", "train", "test", "chosen", f"train {sort_by}", f"test {sort_by}", "test net P&L"):
            folds.add_column(col, justify="right" if col not in ("symbol", "chosen") else "left")
        for c in result.chosen:
            oos = c["out_of_sample"] or {}
            folds.add_row(
                str(c["fold"]),
                c["symbol"],
                f"{c['train'][0]} → {c['train'][1]}",
                f"{c['test'][0]} → {c['test'][1]}",
                " ".join(f"{k}={c['params'][k]}" for k in names),
                _metric(c["in_sample"].get(sort_by)),
                _metric(oos.get(sort_by)),
                _metric(oos.get("net_pnl")),
            )
        console.print(folds)
        side = Table(
            title="stitched out-of-sample curve beside the in-sample (train windows) figures, chained from --cash"
        )
        side.add_column("symbol")
        for col in ("", "sessions", "net P&L", "return %", "Sharpe", "max drawdown %"):
            side.add_column(col, justify="right")
        for sym in result.symbols:
            for label, figs in (("out of sample", result.oos.get(sym)), ("in sample", result.insample.get(sym))):
                if figs:
                    side.add_row(
                        sym,
                        label,
                        _metric(figs["sessions"]),
                        _metric(figs["net_pnl"]),
                        _metric(figs["return_pct"]),
                        _metric(figs["sharpe"]),
                        _metric(figs["max_drawdown_pct"]),
                    )
        console.print(side)
    for sym, st in result.stats.items():
        best = " ".join(f"{k}={(st.get('best') or {}).get(k)}" for k in names)
        pbo, dsr = st.get("pbo"), st.get("dsr")
        pbo_text = "-" if pbo is None else f"{pbo['value']:.2f}"
        dsr_text = "-" if dsr is None else f"{dsr['value']:.2f}"
        console.print(f"{sym} best {best}: PBO {pbo_text}, DSR {dsr_text}", markup=False)
        for text in (pbo and pbo["reading"], dsr and dsr["reading"], st.get("note")):
            if text:
                console.print(f"  {text}", style="dim", markup=False)
    from .overfit import DSR_HOW_TO_READ, PBO_HOW_TO_READ

    for text in (PBO_HOW_TO_READ, DSR_HOW_TO_READ):
        console.print(f"how to read: {text}", style="dim", markup=False)
    for row in result.failed_rows():
        combo = " ".join(f"{k}={row['params'].get(k)}" for k in names)
        console.print(f"failed {combo} {row['symbol']}: {row['error']}", style="red", markup=False, highlight=False)


def sweep_result_json(result: Any) -> str:
    return dumps(result.summary(), indent=1, default=str)
