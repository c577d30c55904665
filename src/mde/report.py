"""One self-contained HTML page for a replay (backtest) result.

Only the standard library and polars: no JavaScript, no network resources, no plotting
library. Pictures are inline SVG; long series are reduced before drawing so the page stays
small (a year of 1-minute candles gives a page of a few hundred KB):

* equity and drawdown lines keep the min and the max of each of ~750 buckets of bars,
  so a one-bar spike survives;
* candles are merged into at most ~600 buckets (first open, max high, min low, last close)
  and trade markers sit on the bucket holding the trade time;
* the trade table shows the first and last 1,000 trades of a longer list.

`result` is duck-typed (see `render_report`); this module imports nothing of the replay.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from .atomic import atomic_write

IST_NAME = "Asia/Kolkata"

MAX_LINE_POINTS = 1_500  # per polyline (min and max of MAX_LINE_POINTS // 2 buckets)
MAX_CANDLES = 600  # candle bodies per chart
MAX_MARKERS = 2_000  # trade markers per chart
TRADES_HEAD = 1_000  # a longer trade list shows this many first ...
TRADES_TAIL = 1_000  # ... and this many last

LABELS: dict[str, str] = {
    "net_pnl": "Net P&L (₹)",
    "return_pct": "Return (%)",
    "cagr_pct": "CAGR (%)",
    "max_drawdown": "Max drawdown (₹)",
    "max_drawdown_pct": "Max drawdown (%)",
    "max_drawdown_duration": "Longest drawdown",
    "max_drawdown_bars": "Max drawdown (candles under water)",
    "max_drawdown_from": "Max drawdown from (peak)",
    "max_drawdown_to": "Max drawdown to (recovery)",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "win_rate_pct": "Win rate (%)",
    "profit_factor": "Profit factor",
    "expectancy": "Expectancy per trade (₹)",
    "avg_holding": "Average holding time",
    "exposure_pct": "Exposure (%)",
    "trades": "Trades",
    "gross_pnl": "Gross P&L (₹)",
    "charges": "Charges (₹)",
    "buy_and_hold_pct": "Buy and hold (%)",
    "bars": "Candles",
    "years": "Years of trading time",
}
DURATIONS = {"avg_holding", "max_drawdown_duration"}  # shown as `12 h 20 min`, `3 d 4 h`
WHEN = {"max_drawdown_from", "max_drawdown_to"}  # instants, shown in IST to the minute


def metric_label(key: str) -> str:
    """A metric's label for people: LABELS, else the key in words (`win_streak` -> `Win streak`)."""
    if key in LABELS:
        return LABELS[key]
    words = key.replace("_pct", " (%)").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


TRADE_COLUMNS = (
    "symbol",
    "side",
    "qty",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "gross_pnl",
    "charges",
    "net_pnl",
    "exit_reason",
)

# Geometry of the SVG pictures (user units; the SVGs scale to the page width).
WIDTH = 1000
PAD_L, PAD_R, PAD_T, PAD_B = 78, 14, 12, 26

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1c2330;
       margin: 0 auto; padding: 16px 24px 40px; max-width: 1200px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #dde2ea; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 9px; border-bottom: 1px solid #eceff4; text-align: left; vertical-align: top; }
th { background: #f4f6f9; font-weight: 600; }
td.n { text-align: right; white-space: nowrap; }
table.kv th { background: none; color: #5a6476; font-weight: 500; white-space: nowrap; }
table.trades { font-size: 12.5px; } table.trades td { white-space: nowrap; }
tr.gap td { text-align: center; color: #5a6476; background: #fafbfc; font-style: italic; }
.pos { color: #137333; } .neg { color: #b3261e; }
.note { color: #5a6476; font-size: 13px; margin: 4px 0; }
pre { background: #f6f8fa; border: 1px solid #e3e7ed; padding: 10px 12px; white-space: pre-wrap; font-size: 13px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.scroll { overflow-x: auto; }
svg.chart { display: block; width: 100%; height: auto; margin: 4px 0; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #5a6476; }
svg.chart .grid { stroke: #e6e9ef; stroke-width: 1; }
svg.chart .frame { fill: none; stroke: #c9cfd8; stroke-width: 1; }
svg.chart .eq { fill: none; stroke: #1f5fbf; stroke-width: 1.4; stroke-linejoin: round; }
svg.chart .cash { stroke: #7a8494; stroke-width: 1; stroke-dasharray: 5 4; }
svg.chart .dd { fill: #d93025; fill-opacity: .35; stroke: #b3261e; stroke-width: 1; }
svg.chart .wick { stroke: #6b7280; stroke-width: 1; fill: none; }
svg.chart .body.up { fill: #1e9e50; } svg.chart .body.dn { fill: #d93025; }
svg.chart .mk.le { fill: #0b8a3a; stroke: #fff; stroke-width: .6; }
svg.chart .mk.se { fill: #c5221f; stroke: #fff; stroke-width: .6; }
svg.chart .mk.x { stroke: #000; stroke-width: 1.5; fill: none; }
svg.chart .empty { font-size: 14px; fill: #8a93a3; }
.legend span { margin-right: 14px; font-size: 12.5px; color: #5a6476; }
.legend b { font-weight: 700; }
"""


# ---------------------------------------------------------------- public API


def render_report(result: Any) -> str:
    """The report page for `result` as HTML text.

    `result` needs: strategy, params, symbols, timeframe, start, end, cash, costs, segment,
    version, fill_model, basis, generated_at, metrics, trades, equity, candles, fingerprint.
    """
    trades = _trades_frame(getattr(result, "trades", None))
    equity = getattr(result, "equity", None)
    candles: dict[str, pl.DataFrame] = getattr(result, "candles", None) or {}
    symbols = list(getattr(result, "symbols", None) or candles.keys())
    for sym in candles:
        if sym not in symbols:
            symbols.append(sym)
    strategy = str(getattr(result, "strategy", ""))
    cash = _float_or_none(getattr(result, "cash", None))

    parts = [
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>Replay: {_e(strategy)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        _header(result, symbols),
        _metrics_section(getattr(result, "metrics", None) or {}, getattr(result, "basis", "")),
        _equity_section(equity, cash),
        _candles_section(symbols, candles, trades),
        _trades_section(trades),
        _log_section(getattr(result, "log", None) or []),
        _method_section(result),
        _fingerprint_section(getattr(result, "fingerprint", None) or []),
        f'<footer class="note">Generated by mde {_e(getattr(result, "version", ""))} at '
        f"{_e(_fmt_when(getattr(result, 'generated_at', None)))}. "
        "Self-contained page: no scripts, no network resources.</footer>\n",
        "</body>\n</html>\n",
    ]
    return "".join(parts)


def write_report(path: str | Path, result: Any) -> None:
    """Write the report page to `path` in one step (a crash leaves the old file or the new one)."""
    path = Path(path)
    data = render_report(result).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", shared=True) as fh:
        fh.write(data)


# ---------------------------------------------------------------- formatting


def _agg(value: Any) -> float:
    """A numeric column's min or max as a float (polars types an aggregate as any Python value)."""
    return float(value)


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _float_or_none(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_value(v: object) -> str:
    """A metric value as text: floats to 2 decimals, None as an en dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, timedelta):
        return _fmt_timedelta(v)
    if isinstance(v, datetime):
        return _fmt_when(v)
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def _fmt_timedelta(td: timedelta) -> str:
    """A duration as people write it: `45 s`, `20 min`, `12 h 20 min`, `3 d 4 h` (rounded to
    the last unit shown)."""
    secs = int(round(td.total_seconds()))
    sign, secs = ("-", -secs) if secs < 0 else ("", secs)
    if secs < 60:
        return f"{sign}{secs} s"
    mins = (secs + 30) // 60  # half up
    if mins < 60:
        return f"{sign}{mins} min"
    if mins < 24 * 60:
        h, m = divmod(mins, 60)
        return f"{sign}{h} h {m} min" if m else f"{sign}{h} h"
    hours = (secs + 1800) // 3600
    d, h = divmod(hours, 24)
    return f"{sign}{d} d {h} h" if h else f"{sign}{d} d"


_TIMEDELTA_TEXT = re.compile(r"^(?:(-?\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def parse_duration(value: object) -> timedelta | None:
    """A timedelta, or its str() (`12:20:27.731092`, `3 days, 4:00:00`, as a JSON summary holds it)."""
    if isinstance(value, timedelta):
        return value
    m = _TIMEDELTA_TEXT.match(str(value).strip()) if isinstance(value, str) else None
    if not m:
        return None
    days, h, mi, sec = m.groups()
    return timedelta(days=int(days or 0), hours=int(h), minutes=int(mi), seconds=float(sec))


def fmt_metric(key: str, v: object) -> str:
    """A metric's value as the report shows it: durations in words, instants in IST."""
    if key in DURATIONS and (td := parse_duration(v)) is not None:
        return _fmt_timedelta(td)
    if key in WHEN:
        if v is None:
            return "not recovered" if key == "max_drawdown_to" else "–"
        when = v if isinstance(v, datetime) else None
        if isinstance(v, str):
            try:
                when = datetime.fromisoformat(v)
            except ValueError:
                when = None
        if when is not None:
            if when.tzinfo is not None:
                from zoneinfo import ZoneInfo

                when = when.astimezone(ZoneInfo(IST_NAME))
            return f"{when:%Y-%m-%d %H:%M} IST"
    return fmt_value(v)


def _fmt_when(x: object) -> str:
    if isinstance(x, datetime):
        return x.isoformat(timespec="seconds")
    if isinstance(x, date):
        return x.isoformat()
    return "" if x is None else str(x)


SIGNED = {"net_pnl", "gross_pnl", "return_pct", "cagr_pct", "expectancy", "buy_and_hold_pct"}  # green/red by sign


def _num_class(v: object) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v != 0:
        return "n pos" if v > 0 else "n neg"
    return "n"


def _f(x: float) -> str:
    """An SVG coordinate with one decimal."""
    return f"{x:.1f}"


# ---------------------------------------------------------------- page sections


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>\n'


def costs_line(costs: object, segment: object) -> str:
    name = str(costs or "none")
    if name.lower() == "none":
        return "costs: none — gross only"
    return f"costs: {name} (segment {segment})" if segment else f"costs: {name}"


def _header(result: Any, symbols: Sequence[str]) -> str:
    params = getattr(result, "params", None) or {}
    if params:
        ptext = ", ".join(f"<code>{_e(k)}={_e(_param(v))}</code>" for k, v in params.items())
    else:
        ptext = "(none)"
    start, end = getattr(result, "start", None), getattr(result, "end", None)
    cash = _float_or_none(getattr(result, "cash", None))
    rows = [
        ("Strategy", f"<b>{_e(getattr(result, 'strategy', ''))}</b>"),
        ("Parameters", ptext),
        ("Symbols", _e(", ".join(map(str, symbols))) or "(none)"),
        ("Timeframe", _e(getattr(result, "timeframe", ""))),
        ("Range", f"{_e(_fmt_when(start))} → {_e(_fmt_when(end))}"),
        ("Starting cash (₹)", _e(fmt_value(cash))),
        ("Costs", _e(costs_line(getattr(result, "costs", None), getattr(result, "segment", None)))),
        ("mde version", _e(getattr(result, "version", ""))),
        ("Generated at", _e(_fmt_when(getattr(result, "generated_at", None)))),
    ]
    title = _e(getattr(result, "strategy", ""))
    return f"<header>\n<h1>Replay report: {title}</h1>\n{_kv_table(rows)}</header>\n"


def _param(v: object) -> str:
    """A parameter exactly as given (not rounded: a 0.005 stop must not read 0.01)."""
    return repr(v) if isinstance(v, str) else str(v)


def _metrics_section(metrics: dict[str, object], basis: object) -> str:
    if metrics:
        rows = "".join(
            f'<tr><th>{_e(metric_label(k))}</th><td class="{_num_class(v) if k in SIGNED else "n"}">{_e(fmt_metric(k, v))}</td></tr>'
            for k, v in metrics.items()
        )
        table = f'<table class="kv" id="metrics-table">{rows}</table>\n'
    else:
        table = '<p class="note">No metrics.</p>\n'
    basis_p = f'<p class="note">Annualisation basis: {_e(basis)}</p>\n' if basis else ""
    return f'<section id="metrics">\n<h2>Metrics</h2>\n{table}{basis_p}</section>\n'


def _method_section(result: Any) -> str:
    fill = getattr(result, "fill_model", "") or ""
    basis = getattr(result, "basis", "") or ""
    return (
        '<section id="method">\n<h2>Fill model and costs</h2>\n'
        f'<pre id="fill-model">{_e(fill)}</pre>\n'
        f'<p id="costs">{_e(costs_line(getattr(result, "costs", None), getattr(result, "segment", None)))}</p>\n'
        f'<p id="basis">Annualisation basis: {_e(basis) or "–"}</p>\n{_rejections_line(result)}</section>\n'
    )


def _rejections_line(result: Any) -> str:
    """Orders the broker refused, counted by reason (buying power, lot size, bracket side, ...)."""
    rejected = getattr(result, "rejections", None) or []
    if not rejected:
        return '<p id="rejections">Rejected orders: 0</p>\n'
    counts = ", ".join(f"{reason}: {n:,}" for reason, n in result.rejections_by_reason().items())
    return f'<p id="rejections">Rejected orders: {len(rejected):,} ({_e(counts)}); the JSON summary lists them.</p>\n'


def _fingerprint_section(fingerprint: Sequence[dict[str, Any]]) -> str:
    head = "<h2>Data fingerprint</h2>\n"
    if not fingerprint:
        return f'<section id="fingerprint">\n{head}<p class="note">No series recorded.</p>\n</section>\n'
    cols = ("symbol", "timeframe", "rows", "first_ts", "last_ts", "sha256")
    names = ("Symbol", "Timeframe", "Rows", "First candle", "Last candle", "SHA-256")
    th = "".join(f"<th>{n}</th>" for n in names)
    body = []
    for fp in fingerprint:
        cells = []
        for c in cols:
            v = fp.get(c)
            text = _fmt_when(v) if isinstance(v, (datetime, date)) else fmt_value(v)
            cls = ' class="n"' if c == "rows" else ' class="mono"' if c == "sha256" else ""
            cells.append(f"<td{cls}>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<div class="scroll"><table id="fingerprint-table"><tr>{th}</tr>{"".join(body)}</table></div>\n'
    note = '<p class="note">SHA-256 of the candles each series contributed; the same data gives the same digest.</p>\n'
    return f'<section id="fingerprint">\n{head}{table}{note}</section>\n'


# ---------------------------------------------------------------- trades


def _trades_frame(trades: object) -> pl.DataFrame:
    if not isinstance(trades, pl.DataFrame) or trades.height == 0:
        return pl.DataFrame()
    missing = [c for c in TRADE_COLUMNS if c not in trades.columns]
    if missing:
        raise ValueError(f"trades frame lacks columns: {', '.join(missing)}")
    return trades


def _ist_iso(col: str, dtype: pl.DataType, fmt: str = "%Y-%m-%dT%H:%M:%S%:z") -> pl.Expr:
    """A datetime column as text in IST, ISO by default (a naive column is taken to be IST)."""
    e = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        e = e.dt.replace_time_zone(IST_NAME) if dtype.time_zone is None else e.dt.convert_time_zone(IST_NAME)
        return e.dt.strftime(fmt)
    return e.cast(pl.String)


def _trades_section(trades: pl.DataFrame) -> str:
    head = "<h2>Trades</h2>\n"
    n = trades.height
    if n == 0:
        return f'<section id="trades">\n{head}<p class="note">No trades.</p>\n</section>\n'
    if n > TRADES_HEAD + TRADES_TAIL:
        shown = [(0, trades.head(TRADES_HEAD)), (n - TRADES_TAIL, trades.tail(TRADES_TAIL))]
        note = (
            f'<p class="note" id="trades-note">{n:,} trades: showing the first {TRADES_HEAD:,} '
            f"and the last {TRADES_TAIL:,}.</p>\n"
        )
    else:
        shown = [(0, trades)]
        note = f'<p class="note" id="trades-note">{n:,} trades.</p>\n'
    reasons = trades.group_by("exit_reason").len().sort(["len", "exit_reason"], descending=[True, False])
    reason_text = ", ".join(f"{_e(r)}: {c:,}" for r, c in reasons.iter_rows())
    note += f'<p class="note">Exits by reason: {reason_text}.</p>\n'

    names = (
        "#",
        "Symbol",
        "Side",
        "Qty",
        "Entry time",
        "Entry",
        "Exit time",
        "Exit",
        "Gross P&amp;L",
        "Charges",
        "Net P&amp;L",
        "Exit reason",
    )
    th = "<tr>" + "".join(f"<th>{x}</th>" for x in names) + "</tr>"
    rows = [th]
    for offset, part in shown:
        if offset:
            rows.append(
                f'<tr class="gap"><td colspan="{len(names)}">… {offset - TRADES_HEAD:,} trades not shown …</td></tr>'
            )
        rows.extend(_trade_rows(part, offset))
    table = f'<div class="scroll"><table class="trades" id="trades-table">{"".join(rows)}</table></div>\n'
    return f'<section id="trades">\n{head}{note}{table}</section>\n'


LOG_LINES = 1000  # the report shows the strategy's first lines, and how many more there were


def _log_section(notes: Sequence[Any]) -> str:
    """The strategy's ctx.log lines (and its rejected orders), the first LOG_LINES of them."""
    if not notes:
        return ""
    head = "<h2>Strategy log</h2>\n"
    n = len(notes)
    lines = "\n".join(_e(note.line() if hasattr(note, "line") else note) for note in notes[:LOG_LINES])
    rest = (
        f'<p class="note" id="log-note">{n:,} lines: showing the first {LOG_LINES:,}; '
        f"{n - LOG_LINES:,} more not shown.</p>\n"
        if n > LOG_LINES
        else f'<p class="note" id="log-note">{n:,} lines.</p>\n'
    )
    return f'<section id="log">\n{head}{rest}<div class="scroll"><pre id="log-lines">{lines}</pre></div>\n</section>\n'


def _trade_rows(part: pl.DataFrame, offset: int) -> list[str]:
    schema = part.schema
    view = part.select(
        pl.col("symbol").cast(pl.String),
        pl.col("side").cast(pl.String),
        "qty",
        _ist_iso("entry_ts", schema["entry_ts"]),
        "entry_price",
        _ist_iso("exit_ts", schema["exit_ts"]),
        "exit_price",
        "gross_pnl",
        "charges",
        "net_pnl",
        pl.col("exit_reason").cast(pl.String),
    )
    out = []
    for i, (sym, side, qty, ets, ep, xts, xp, gross, chg, net, why) in enumerate(view.iter_rows(), offset + 1):
        out.append(
            f'<tr><td class="n">{i}</td><td>{_e(sym)}</td><td>{_e(side)}</td><td class="n">{_e(fmt_value(qty))}</td>'
            f'<td>{_e(ets)}</td><td class="n">{_e(fmt_value(ep))}</td>'
            f'<td>{_e(xts)}</td><td class="n">{_e(fmt_value(xp))}</td>'
            f'<td class="{_num_class(gross)}">{_e(fmt_value(gross))}</td><td class="n">{_e(fmt_value(chg))}</td>'
            f'<td class="{_num_class(net)}">{_e(fmt_value(net))}</td><td>{_e(why)}</td></tr>'
        )
    return out


# ---------------------------------------------------------------- scales and axes


def minmax_indices(values: pl.Series, max_points: int = MAX_LINE_POINTS) -> pl.Series:
    """Row numbers to draw for a line of `values`: all of them when few, else the first and last
    row plus the min and the max of each of `max_points // 2` equal buckets (so spikes survive)."""
    n = len(values)
    if n <= max_points:
        return pl.Series("i", range(n), dtype=pl.Int64)
    buckets = max(1, (max_points - 2) // 2)
    size = -(-n // buckets)
    picked = (
        pl.DataFrame({"v": values})
        .with_row_index("i")
        .group_by(pl.col("i") // size)
        .agg(pl.col("i").get(pl.col("v").arg_min()).alias("lo"), pl.col("i").get(pl.col("v").arg_max()).alias("hi"))
    )
    ends = pl.Series([0, n - 1], dtype=pl.Int64)
    return pl.concat([picked["lo"].cast(pl.Int64), picked["hi"].cast(pl.Int64), ends]).unique().sort()


class _Scale:
    """Maps data values to SVG pixels; a zero span is widened so nothing divides by zero."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, pad: float = 0.0) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = 0.0, 1.0
        if hi < lo:
            lo, hi = hi, lo
        span = hi - lo
        if span <= 0:
            span = max(abs(hi) * 0.01, 1.0)
            lo, hi = lo - span / 2, hi + span / 2
        else:
            lo, hi = lo - span * pad, hi + span * pad
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def expr(self, e: pl.Expr) -> pl.Expr:
        return self.p0 + (e - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], float]:
    """About `n` round values covering [lo, hi], and their step."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return [lo], 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = mag * 10
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * mag) <= n:
            step = m * mag
            break
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9 and k < 50:
        ticks.append(first + k * step)
        k += 1
    return ticks, step


def _tick_label(v: float, step: float) -> str:
    decimals = next((d for d in range(5) if abs(round(step, d) - step) <= step * 1e-6), 4)
    v = 0.0 if abs(v) < step * 1e-6 else v
    return f"{v:,.{decimals}f}"


def _y_axis(scale: _Scale, x0: float, x1: float) -> list[str]:
    ticks, step = nice_ticks(scale.lo, scale.hi)
    out = []
    for t in ticks:
        y = scale(t)
        out.append(f'<line class="grid" x1="{_f(x0)}" y1="{_f(y)}" x2="{_f(x1)}" y2="{_f(y)}"/>')
        out.append(f'<text x="{_f(x0 - 5)}" y="{_f(y + 4)}" text-anchor="end">{_e(_tick_label(t, step))}</text>')
    return out


def _x_labels(stamps: pl.Series, xs: Sequence[float], y: float) -> list[str]:
    """Date labels (or times, when everything lies in one day) under the plot at pixel `xs`."""
    if len(stamps) == 0:
        return []
    s = stamps
    if isinstance(s.dtype, pl.Datetime):
        s = s.dt.replace_time_zone(IST_NAME) if s.dtype.time_zone is None else s.dt.convert_time_zone(IST_NAME)
        days = s.dt.date()
        fmt = "%H:%M" if days.n_unique() == 1 else "%Y-%m-%d"
        texts = s.dt.strftime(fmt).to_list()
    else:
        texts = s.cast(pl.String).to_list()
    out = []
    last = None
    for text, x in zip(texts, xs, strict=True):  # one label per position
        if text == last:
            continue
        last = text
        # Labels near an edge are anchored inward so they are not cut off.
        anchor = "start" if x - PAD_L < 40 else "end" if WIDTH - PAD_R - x < 40 else "middle"
        out.append(f'<line class="grid" x1="{_f(x)}" y1="{PAD_T}" x2="{_f(x)}" y2="{_f(y - 16)}"/>')
        out.append(f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}">{_e(text)}</text>')
    return out


def _label_positions(n: int, k: int = 6) -> list[int]:
    if n <= 0:
        return []
    if n == 1:
        return [0]
    k = min(k, n)
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _svg_open(kind: str, height: int, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{_e(kind)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11" '
        f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>'
    )


def _empty_svg(kind: str, height: int, label: str, message: str) -> str:
    return (
        _svg_open(kind, height, label)
        + f'<rect class="frame" x="{PAD_L}" y="{PAD_T}" width="{WIDTH - PAD_L - PAD_R}" height="{height - PAD_T - PAD_B}"/>'
        + f'<text class="empty" x="{WIDTH // 2}" y="{height // 2}" text-anchor="middle">{_e(message)}</text></svg>\n'
    )


# ---------------------------------------------------------------- equity and drawdown


def _equity_section(equity: object, cash: float | None) -> str:
    head = '<section id="equity">\n<h2>Equity and drawdown</h2>\n'
    eq = _clean_equity(equity)
    n = eq.height
    if n == 0:
        return (
            head
            + _empty_svg("equity", 300, "Equity curve", "no equity data")
            + _empty_svg("drawdown", 140, "Drawdown", "no equity data")
            + "</section>\n"
        )
    x0, x1 = PAD_L, WIDTH - PAD_R

    def x_of(idx: pl.Series) -> list[float]:
        if n == 1:
            return [(x0 + x1) / 2] * len(idx)
        return (x0 + idx.cast(pl.Float64) * ((x1 - x0) / (n - 1))).to_list()

    label_idx = pl.Series(_label_positions(n), dtype=pl.Int64)
    label_xs = x_of(label_idx)
    label_ts = eq["ts"].gather(label_idx)

    # Equity line.
    h = 300
    ys0, ys1 = h - PAD_B, PAD_T
    idx = minmax_indices(eq["equity"])
    vals = eq["equity"].gather(idx)
    lo, hi = _agg(vals.min()), _agg(vals.max())
    if cash is not None:
        lo, hi = min(lo, cash), max(hi, cash)
    ys = _Scale(lo, hi, ys0, ys1, pad=0.04)
    pts = " ".join(f"{_f(x)},{_f(ys(v))}" for x, v in zip(x_of(idx), vals.to_list(), strict=True))
    parts = [_svg_open("equity", h, "Equity curve"), *_y_axis(ys, x0, x1), *_x_labels(label_ts, label_xs, h - 8)]
    if cash is not None:
        yc = ys(cash)
        parts.append(
            f'<line class="cash" x1="{x0}" y1="{_f(yc)}" x2="{x1}" y2="{_f(yc)}"><title>starting cash {_e(fmt_value(cash))}</title></line>'
        )
    parts.append(f'<polyline class="eq" points="{pts}"/>')
    parts.append(f'<rect class="frame" x="{x0}" y="{PAD_T}" width="{x1 - x0}" height="{ys0 - PAD_T}"/></svg>\n')
    last = float(eq["equity"][-1])
    legend = (
        '<p class="legend"><span><b style="color:#1f5fbf">—</b> equity (₹)</span>'
        + ('<span><b style="color:#7a8494">- -</b> starting cash</span>' if cash is not None else "")
        + f"<span>{n:,} bars; {len(idx):,} points drawn; final equity {_e(fmt_value(last))}</span></p>\n"
    )

    # Drawdown area.
    h2 = 140
    ds0, ds1 = h2 - PAD_B, PAD_T
    didx = minmax_indices(eq["drawdown"])
    dvals = eq["drawdown"].gather(didx)
    dmin = min(_agg(dvals.min()), 0.0)
    dmax = max(_agg(dvals.max()), 0.0)
    if dmin == dmax:
        dmin = -1.0
    dscale = _Scale(dmin, dmax, ds0, ds1)
    y_zero = dscale(0.0)
    dxs = x_of(didx)
    dpts = [f"{_f(dxs[0])},{_f(y_zero)}"]
    dpts += [f"{_f(x)},{_f(dscale(v))}" for x, v in zip(dxs, dvals.to_list(), strict=True)]
    dpts.append(f"{_f(dxs[-1])},{_f(y_zero)}")
    dd_parts = [
        _svg_open("drawdown", h2, "Drawdown"),
        *_y_axis(dscale, x0, x1),
        *_x_labels(label_ts, label_xs, h2 - 8),
        f'<polygon class="dd" points="{" ".join(dpts)}"/>',
        f'<rect class="frame" x="{x0}" y="{PAD_T}" width="{x1 - x0}" height="{ds0 - PAD_T}"/></svg>\n',
    ]
    dd_legend = (
        f'<p class="legend"><span><b style="color:#d93025">▆</b> drawdown from the running peak (₹); '
        f"deepest {_e(fmt_value(_agg(eq['drawdown'].min())))}</span>"
        f"<span>x axis: bar number, labelled with the bar date (market closures take no room)</span></p>\n"
    )
    return head + "".join(parts) + legend + "".join(dd_parts) + dd_legend + "</section>\n"


def _clean_equity(equity: object) -> pl.DataFrame:
    if not isinstance(equity, pl.DataFrame) or equity.height == 0 or "equity" not in equity.columns:
        return pl.DataFrame(
            {"ts": [], "equity": [], "drawdown": []},
            schema={"ts": pl.Datetime("us", IST_NAME), "equity": pl.Float64, "drawdown": pl.Float64},
        )
    cols = [
        pl.col("ts") if "ts" in equity.columns else pl.lit(None, pl.Datetime("us", IST_NAME)).alias("ts"),
        pl.col("equity").cast(pl.Float64),
    ]
    if "drawdown" in equity.columns:
        cols.append(pl.col("drawdown").cast(pl.Float64))
    else:
        cols.append((pl.col("equity").cast(pl.Float64) - pl.col("equity").cast(pl.Float64).cum_max()).alias("drawdown"))
    return equity.select(cols).filter(pl.col("equity").is_finite() & pl.col("drawdown").is_finite())


# ---------------------------------------------------------------- candles and trade markers


def bucket_candles(df: pl.DataFrame, max_bodies: int = MAX_CANDLES) -> tuple[pl.DataFrame, int]:
    """Consecutive candles merged into at most `max_bodies` buckets, and the bucket size.

    Columns: ts (first candle), ts_last, open (first), high (max), low (min), close (last)."""
    n = df.height
    size = max(1, -(-n // max_bodies))
    out = (
        df.select("ts", "open", "high", "low", "close")
        .with_row_index("i")
        .group_by((pl.col("i") // size).alias("b"), maintain_order=True)
        .agg(
            pl.col("ts").first(),
            pl.col("ts").last().alias("ts_last"),
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
        )
        .sort("b")
        .drop("b")
    )
    return out, size


def _epoch_us(s: pl.Series) -> pl.Series:
    if isinstance(s.dtype, pl.Datetime) and s.dtype.time_zone is None:
        s = s.dt.replace_time_zone(IST_NAME)
    return s.dt.epoch("us")


def _markers(sym: str, trades: pl.DataFrame, candle_ts: pl.Series, size: int, n_buckets: int) -> pl.DataFrame:
    """One row per entry and per exit of `sym`: kind (le/se/x), bucket, price, title text."""
    empty = pl.DataFrame(schema={"kind": pl.String, "b": pl.Int64, "price": pl.Float64, "title": pl.String})
    if trades.height == 0 or len(candle_ts) == 0:
        return empty
    t = trades.filter(pl.col("symbol").cast(pl.String) == sym)
    if t.height == 0:
        return empty
    grid = _epoch_us(candle_ts)
    last_us = grid[-1]
    frames = []
    for ts_col, price_col, what in (("entry_ts", "entry_price", "entry"), ("exit_ts", "exit_price", "exit")):
        ts_us = _epoch_us(t[ts_col])
        pos = grid.search_sorted(ts_us, side="right").cast(pl.Int64) - 1
        if what == "entry":
            kind = (
                pl.when(pl.col("side").cast(pl.String).str.to_lowercase() == "short")
                .then(pl.lit("se"))
                .otherwise(pl.lit("le"))
            )
        else:
            kind = pl.lit("x")
        frames.append(
            t.select(
                kind.alias("kind"),
                pl.lit(pos).alias("pos"),
                pl.lit(ts_us).alias("us"),
                pl.col(price_col).cast(pl.Float64).alias("price"),
                pl.format(
                    "{} {} {} @ {}",
                    pl.col("side"),
                    pl.lit(what),
                    _ist_iso(ts_col, t.schema[ts_col]),
                    pl.col(price_col).round(2),
                ).alias("title"),
            )
        )
    m = pl.concat(frames)
    # Drop markers outside the charted range (a day past the last candle is still "in").
    m = m.filter((pl.col("pos") >= 0) & (pl.col("us") <= last_us + 86_400_000_000) & pl.col("price").is_finite())
    return m.select("kind", (pl.col("pos") // size).clip(0, n_buckets - 1).alias("b"), "price", "title")


def _candles_section(symbols: Sequence[str], candles: dict[str, pl.DataFrame], trades: pl.DataFrame) -> str:
    out = [
        '<section id="charts">\n<h2>Prices and trades</h2>\n',
        '<p class="legend"><span><b style="color:#0b8a3a">▲</b> long entry</span>'
        '<span><b style="color:#c5221f">▼</b> short entry</span><span><b>×</b> exit</span>'
        "<span>hover a candle or marker for its details</span></p>\n",
    ]
    if not symbols:
        out.append('<p class="note">No symbols.</p>\n')
    for sym in symbols:
        out.append(f"<h3>{_e(sym)}</h3>\n")
        out.append(_candle_chart(sym, candles.get(sym), trades))
    out.append("</section>\n")
    return "".join(out)


def _candle_chart(sym: str, df: pl.DataFrame | None, trades: pl.DataFrame) -> str:
    h = 360
    label = f"{sym} candles with trades"
    if not isinstance(df, pl.DataFrame) or df.height == 0:
        return _empty_svg("candles", h, label, f"no candles for {sym}")
    df = df.filter(pl.all_horizontal(pl.col("open", "high", "low", "close").is_not_null())).sort("ts")
    if df.height == 0:
        return _empty_svg("candles", h, label, f"no candles for {sym}")
    bars, size = bucket_candles(df)
    m = bars.height
    x0, x1 = PAD_L, WIDTH - PAD_R
    y0, y1 = h - PAD_B, PAD_T
    slot = (x1 - x0) / m
    marks = _markers(sym, trades, df["ts"], size, m)

    lo = _agg(bars["low"].min())
    hi = _agg(bars["high"].max())
    if marks.height:
        lo = min(lo, _agg(marks["price"].min()))
        hi = max(hi, _agg(marks["price"].max()))
    ys = _Scale(lo, hi, y0, y1, pad=0.04)

    bw = min(max(slot * 0.7, 0.6), 14.0)
    geo = bars.with_columns(
        (x0 + (pl.int_range(pl.len()).cast(pl.Float64) + 0.5) * slot).alias("xc"),
        ys.expr(pl.col("high")).alias("yh"),
        ys.expr(pl.col("low")).alias("yl"),
        ys.expr(pl.max_horizontal("open", "close")).alias("ytop"),
        ys.expr(pl.min_horizontal("open", "close")).alias("ybot"),
        (pl.col("close") >= pl.col("open")).alias("up"),
        _ist_iso("ts", bars.schema["ts"], "%Y-%m-%d %H:%M").alias("t0"),
        _ist_iso("ts_last", bars.schema["ts_last"], "%Y-%m-%d %H:%M").alias("t1"),
    )
    wicks = []
    bodies = []
    for xc, yh, yl, ytop, ybot, up, t0, t1, o, hh, ll, c in geo.select(
        "xc", "yh", "yl", "ytop", "ybot", "up", "t0", "t1", "open", "high", "low", "close"
    ).iter_rows():
        wicks.append(f"M{_f(xc)} {_f(yh)}V{_f(yl)}")
        when = f"{t0} → {t1}" if t1 != t0 else f"{t0}"
        title = f"{when}  O {o:,.2f} H {hh:,.2f} L {ll:,.2f} C {c:,.2f}"
        bodies.append(
            f'<rect class="body {"up" if up else "dn"}" x="{_f(xc - bw / 2)}" y="{_f(ytop)}" width="{_f(bw)}" '
            f'height="{_f(max(ybot - ytop, 0.8))}"><title>{_e(title)}</title></rect>'
        )

    label_idx = _label_positions(m)
    parts = [
        _svg_open("candles", h, label),
        *_y_axis(ys, x0, x1),
        *_x_labels(bars["ts"].gather(label_idx), [x0 + (i + 0.5) * slot for i in label_idx], h - 8),
        f'<path class="wick" d="{"".join(wicks)}"/>',
        f'<g class="bodies">{"".join(bodies)}</g>',
    ]
    marker_note = ""
    if marks.height:
        drawn, total = _marker_svg(marks, ys, x0, slot)
        parts.append(f'<g class="markers">{"".join(drawn)}</g>')
        if len(drawn) < total:
            marker_note = (
                f"; {len(drawn):,} of {total:,} trade markers drawn (overlapping and surplus ones merged or left out)"
            )
    parts.append(f'<rect class="frame" x="{x0}" y="{PAD_T}" width="{x1 - x0}" height="{y0 - PAD_T}"/></svg>\n')
    agg = f"each body merges {size:,} consecutive candles" if size > 1 else "one body per candle"
    note = f'<p class="note">{df.height:,} candles drawn as {m:,} bodies ({agg}){marker_note}.</p>\n'
    return "".join(parts) + note


def _marker_svg(marks: pl.DataFrame, ys: _Scale, x0: float, slot: float) -> tuple[list[str], int]:
    """SVG shapes for the markers (merging those on the same pixel), and how many there were."""
    total = marks.height
    pix = (
        marks.with_columns(
            (x0 + (pl.col("b").cast(pl.Float64) + 0.5) * slot).round(1).alias("x"),
            ys.expr(pl.col("price")).round(0).alias("yp"),
            ys.expr(pl.col("price")).alias("y"),
        )
        .group_by("kind", "x", "yp", maintain_order=True)
        .agg(pl.col("y").first(), pl.col("title").first(), pl.len().alias("k"))
    )
    if pix.height > MAX_MARKERS:
        keep = pl.Series(sorted({round(i * (pix.height - 1) / (MAX_MARKERS - 1)) for i in range(MAX_MARKERS)}))
        pix = pix.select(pl.all().gather(keep))
    out = []
    for kind, x, _yp, y, title, k in pix.iter_rows():
        tip = title if k == 1 else f"{title} (+{k - 1} more here)"
        if kind == "le":
            d = f"M{_f(x)} {_f(y - 4)}l4 7h-8z"
        elif kind == "se":
            d = f"M{_f(x)} {_f(y + 4)}l4 -7h-8z"
        else:
            d = f"M{_f(x - 3)} {_f(y - 3)}l6 6m0 -6l-6 6"
        out.append(f'<path class="mk {kind}" d="{d}"><title>{_e(tip)}</title></path>')
    return out, total
