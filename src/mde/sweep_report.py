"""The `mde sweep --report` page: one self-contained HTML file (inline SVG and CSS, no script,
no network), drawn like the replay report (`mde.report`): a heatmap of the sort metric over two
parameters, its distribution across combinations, the equity curves of the top 5, the
walk-forward folds and the stitched out-of-sample curve, PBO and DSR with how to read them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import InputError
from .overfit import DSR_HOW_TO_READ, PBO_HOW_TO_READ
from .report import (
    CSS,
    PAD_B,
    PAD_L,
    PAD_R,
    PAD_T,
    WIDTH,
    _e,
    _empty_svg,
    _f,
    _kv_table,
    _Scale,
    _svg_open,
    _y_axis,
    fmt_value,
)

COLORS = ("#1c2330", "#1f5fbf", "#d93025", "#188038", "#e37400", "#8430ce")
EXTRA_CSS = """
table.heat td { text-align: right; padding: 4px 8px; font-variant-numeric: tabular-nums; }
table.heat th { padding: 4px 8px; }
p.read { color: #4a5568; }
"""


def _rows(result: Any) -> list[dict[str, Any]]:
    """The rows ranked by the sort metric: whole-range rows, or the train rows of walk-forward."""
    return [r for r in result.ok_rows() if r.get("window") in ("full", "train")]


def _axes(result: Any) -> list[str]:
    return [n for n in result.param_names if len({str(c.get(n)) for c in result.combinations}) > 1]


def _color(value: float | None, lo: float, hi: float) -> str:
    """Red (worst) through white to green (best)."""
    if value is None:
        return "#eeeeee"
    t = 0.5 if hi == lo else (value - lo) / (hi - lo)
    if t < 0.5:
        k = t * 2
        r, g, b = 217 + (255 - 217) * k, 48 + (255 - 48) * k, 37 + (255 - 37) * k
    else:
        k = (t - 0.5) * 2
        r, g, b = 255 - (255 - 24) * k, 255 - (255 - 128) * k, 255 - (255 - 56) * k
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def _heatmap(result: Any, symbol: str) -> str:
    axes = _axes(result)
    key = result.sort_by
    rows = [r for r in _rows(result) if r["symbol"] == symbol]
    if len(axes) < 2:
        return f'<p class="note">{_e(symbol)}: a heatmap needs two parameters with several values; the table below ranks them.</p>\n'
    a, b = axes[0], axes[1]
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        v = r["metrics"].get(key)
        if v is not None:
            cells.setdefault((str(r["params"][a]), str(r["params"][b])), []).append(float(v))
    xs = sorted({str(c[a]) for c in result.combinations}, key=_num)
    ys = sorted({str(c[b]) for c in result.combinations}, key=_num)
    # several values per cell (other parameters, folds): the best of them
    best = {k: max(v) for k, v in cells.items()}
    lo, hi = (min(best.values()), max(best.values())) if best else (0.0, 0.0)
    head = "".join(f"<th>{_e(x)}</th>" for x in xs)
    body = []
    for y in ys:
        tds = "".join(
            f'<td style="background:{_color(best.get((x, y)), lo, hi)}">{_e(fmt_value(best[(x, y)]) if (x, y) in best else "·")}</td>'
            for x in xs
        )
        body.append(f"<tr><th>{_e(b)}={_e(y)}</th>{tds}</tr>")
    more = (f" (the best over {', '.join(axes[2:])})" if len(axes) > 2 else "") + (
        " (the best over the folds' train windows)" if result.walk is not None else ""
    )
    return (
        f"<h3>{_e(symbol)}: {_e(key)} by {_e(a)} (columns) and {_e(b)} (rows){_e(more)}</h3>\n"
        f'<table class="heat"><tr><th></th>{head}</tr>{"".join(body)}</table>\n'
        '<p class="note">· a combination not run (refused by the strategy or not sampled); green the best, red the worst.</p>\n'
    )


def _num(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _histogram(result: Any) -> str:
    key = result.sort_by
    values = [float(v) for r in _rows(result) if (v := r["metrics"].get(key)) is not None]
    label = f"Distribution of {key} across combinations"
    if not values:
        return _empty_svg("distribution", 220, label, f"no {key} values")
    lo, hi = min(values), max(values)
    n_bins = max(1, min(30, len(values)))
    width = (hi - lo) / n_bins or 1.0
    counts = [0] * n_bins
    for v in values:
        counts[min(n_bins - 1, int((v - lo) / width))] += 1
    h = 220
    x0, x1 = PAD_L, WIDTH - PAD_R
    ys = _Scale(0.0, float(max(counts)), h - PAD_B, PAD_T)
    slot = (x1 - x0) / n_bins
    parts = [_svg_open("distribution", h, label), *_y_axis(ys, x0, x1)]
    for i, c in enumerate(counts):
        y = ys(float(c))
        parts.append(
            f'<rect x="{_f(x0 + i * slot + 1)}" y="{_f(y)}" width="{_f(max(slot - 2, 1))}" height="{_f(h - PAD_B - y)}" '
            f'fill="#1f5fbf"><title>{_e(fmt_value(lo + i * width))} to {_e(fmt_value(lo + (i + 1) * width))}: {c}</title></rect>'
        )
    parts.append(f'<text x="{x0}" y="{h - 8}">{_e(fmt_value(lo))}</text>')
    parts.append(f'<text x="{x1}" y="{h - 8}" text-anchor="end">{_e(fmt_value(hi))}</text>')
    parts.append(f'<rect class="frame" x="{x0}" y="{PAD_T}" width="{x1 - x0}" height="{h - PAD_B - PAD_T}"/></svg>\n')
    return "".join(parts) + f'<p class="legend"><span>{len(values)} rows; x: {_e(key)}, y: how many rows</span></p>\n'


def _curves(label: str, kind: str, curves: Sequence[tuple[str, Sequence[float]]], cash: float) -> str:
    """Lines of equity per session, all from `cash`."""
    curves = [(name, list(eq)) for name, eq in curves if eq]
    if not curves:
        return _empty_svg(kind, 280, label, "no sessions")
    h = 280
    x0, x1 = PAD_L, WIDTH - PAD_R
    n = max(len(eq) for _, eq in curves)
    lo = min(cash, *(min(eq) for _, eq in curves))
    hi = max(cash, *(max(eq) for _, eq in curves))
    ys = _Scale(lo, hi, h - PAD_B, PAD_T, pad=0.04)
    parts = [_svg_open(kind, h, label), *_y_axis(ys, x0, x1)]
    legend = []
    for k, (name, eq) in enumerate(curves):
        step = (x1 - x0) / max(n, 1)
        pts = " ".join(f"{_f(x0 + (i + 1) * step)},{_f(ys(v))}" for i, v in enumerate(eq))
        pts = f"{_f(x0)},{_f(ys(cash))} " + pts
        color = COLORS[k % len(COLORS)]
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"><title>{_e(name)}</title></polyline>'
        )
        legend.append(f'<span><b style="color:{color}">—</b> {_e(name)} (final {_e(fmt_value(eq[-1]))})</span>')
    parts.append(f'<rect class="frame" x="{x0}" y="{PAD_T}" width="{x1 - x0}" height="{h - PAD_B - PAD_T}"/></svg>\n')
    return "".join(parts) + f'<p class="legend">{"".join(legend)}<span>x: sessions ({n})</span></p>\n'


def _chain(rets: Sequence[float], cash: float) -> list[float]:
    out, v = [], cash
    for r in rets:
        v *= 1.0 + r
        out.append(v)
    return out


def _top_curves(result: Any, symbol: str) -> str:
    axes = _axes(result) or result.param_names[:2]

    def name(params: dict[str, Any]) -> str:
        return " ".join(f"{k}={params.get(k)}" for k in axes)

    cash = float(getattr(result, "cash", 0.0) or 1_000_000.0)
    if result.walk is None:
        rows = [r for r in result.rows if r.get("window") == "full" and r["symbol"] == symbol and "error" not in r][:5]
        curves = [(name(r["params"]), _chain(r["returns"], cash)) for r in rows]
        title = f"{symbol}: equity of the top 5 by {result.sort_by}"
    else:
        series: dict[int, tuple[dict[str, Any], list[float]]] = {}
        for r in sorted(
            (r for r in result.ok_rows() if r["symbol"] == symbol and r["window"] == "test"), key=lambda r: r["fold"]
        ):
            series.setdefault(r["index"], (r["params"], []))[1].extend(r["returns"])
        ranked = sorted(series.values(), key=lambda pr: -_chain(pr[1], cash)[-1] if pr[1] else 0.0)[:5]
        curves = [(name(p), _chain(rets, cash)) for p, rets in ranked]
        oos = result.oos.get(symbol)
        if oos:
            curves.insert(0, ("walk-forward (stitched out of sample)", oos["curve"]["equity"]))
        title = f"{symbol}: the stitched out-of-sample curve and the 5 best fixed combinations over the test windows"
    return f"<h3>{_e(title)}</h3>\n" + _curves(title, "equity", curves, cash)


def _stats(result: Any) -> str:
    out = []
    for sym, st in result.stats.items():
        pbo, dsr = st.get("pbo"), st.get("dsr")
        best = " ".join(f"{k}={v}" for k, v in (st.get("best") or {}).items())
        rows = [
            ("best combination", _e(best)),
            (
                "PBO",
                _e(
                    "-"
                    if pbo is None
                    else f"{pbo['value']:.3f} ({pbo['splits']:,} splits of {pbo['blocks']} blocks, "
                    f"{pbo['sessions']} sessions, {pbo['combinations']} combinations)"
                ),
            ),
            (
                "DSR",
                _e(
                    "-"
                    if dsr is None
                    else f"{dsr['value']:.3f} (PSR against 0: {dsr['psr']:.3f}; {dsr['trials']} trials, "
                    f"{dsr['sessions']} sessions)"
                ),
            ),
        ]
        if st.get("note"):
            rows.append(("note", _e(st["note"])))
        out.append(f"<h3>{_e(sym)}</h3>\n" + _kv_table(rows))
        for text in (pbo and pbo["reading"], dsr and dsr["reading"]):
            if text:
                out.append(f'<p class="read">{_e(text)}</p>\n')
    out.append(
        f'<p class="note">How to read: {_e(PBO_HOW_TO_READ)}.<br>{_e(DSR_HOW_TO_READ)}.<br>'
        "Both take per-session returns (a session without a position is 0): over the whole range, or with "
        "walk-forward over the tiled test windows.</p>\n"
    )
    return '<section id="statistics">\n<h2>How much of the best result is luck</h2>\n' + "".join(out) + "</section>\n"


def _walk(result: Any) -> str:
    if result.walk is None:
        return ""
    key = result.sort_by
    axes = _axes(result) or result.param_names[:2]
    head = "".join(
        f"<th>{_e(c)}</th>"
        for c in ("fold", "symbol", "train", "test", "chosen", f"train {key}", f"test {key}", "test net P&L")
    )
    body = []
    for c in result.chosen:
        oos = c["out_of_sample"] or {}
        cells = [
            str(c["fold"]),
            c["symbol"],
            f"{c['train'][0]} to {c['train'][1]}",
            f"{c['test'][0]} to {c['test'][1]}",
            " ".join(f"{k}={c['params'].get(k)}" for k in axes),
            fmt_value(c["in_sample"].get(key)),
            fmt_value(oos.get(key)),
            fmt_value(oos.get("net_pnl")),
        ]
        body.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
    side = []
    for sym in result.symbols:
        for label, figs in (
            ("out of sample (stitched)", result.oos.get(sym)),
            ("in sample (train windows)", result.insample.get(sym)),
        ):
            if figs:
                side.append(
                    "<tr>"
                    + "".join(
                        f"<td>{_e(x)}</td>"
                        for x in (
                            sym,
                            label,
                            figs["sessions"],
                            fmt_value(figs["net_pnl"]),
                            fmt_value(figs["return_pct"]),
                            fmt_value(figs["sharpe"]),
                            fmt_value(figs["max_drawdown_pct"]),
                        )
                    )
                    + "</tr>"
                )
    side_head = "".join(
        f"<th>{_e(c)}</th>" for c in ("symbol", "", "sessions", "net P&L", "return %", "Sharpe", "max drawdown %")
    )
    anchored = ", anchored" if result.walk.anchored else ", rolling"
    return (
        f'<section id="walk-forward">\n<h2>Walk-forward: train {_e(result.walk.train)}, test {_e(result.walk.test)}{anchored}</h2>\n'
        f"<table><tr>{head}</tr>{''.join(body)}</table>\n"
        f"<table><tr>{side_head}</tr>{''.join(side)}</table>\n"
        '<p class="note">Each test window is a replay of its own dates (warm-up from the cache before it, nothing '
        "after it is read); the chosen combinations' test curves are chained from the starting cash.</p>\n</section>\n"
    )


def _top_table(result: Any, n: int = 20) -> str:
    key = result.sort_by
    axes = _axes(result) or result.param_names[:2]
    cols = ["net_pnl", "return_pct", "sharpe", "max_drawdown_pct", "win_rate_pct", "trades"]
    if key not in cols:
        cols.insert(0, key)
    rows = sorted(_rows(result), key=lambda r: (r["metrics"].get(key) is None, -(r["metrics"].get(key) or 0.0)))[:n]
    head = "".join(f"<th>{_e(c)}</th>" for c in [*axes, "symbol", "fold", *cols, "rejected", "data sha256"])
    body = []
    for r in rows:
        cells = [
            *(str(r["params"].get(k)) for k in axes),
            r["symbol"],
            "" if r["fold"] is None else str(r["fold"]),
            *(fmt_value(r["metrics"].get(c)) for c in cols),
            str(r.get("rejections_total", 0)),
            (r.get("data") or [{}])[0].get("sha256", "")[:16],
        ]
        body.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
    return (
        f'<section id="rows">\n<h2>Top {len(rows)} rows by {_e(key)}</h2>\n<table><tr>{head}</tr>{"".join(body)}</table>\n'
        "</section>\n"
    )


def render_sweep_report(result: Any) -> str:
    grid = (
        f"{result.grid_size:,} combinations in the grid, {len(result.combinations):,} run, {len(result.skipped):,} skipped "
        f"(refused by the strategy){f', a sample of {result.samples} (seed {result.seed})' if result.samples else ''}"
    )
    header = (
        f"<header><h1>Sweep: {_e(result.strategy)} on {_e(', '.join(result.symbols))} {_e(result.timeframe)}</h1>\n"
        + _kv_table(
            [
                ("range", _e(f"{result.start} to {result.end}")),
                ("grid", _e(grid)),
                ("ranked by", _e(result.sort_by)),
                ("failed replays", _e(str(len(result.failed_rows())))),
            ]
        )
        + "</header>\n"
    )
    heat = "".join(_heatmap(result, s) for s in result.symbols)
    curves = "".join(_top_curves(result, s) for s in result.symbols)
    parts = [
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>Sweep: {_e(result.strategy)}</title>\n<style>{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n",
        header,
        _stats(result),
        f'<section id="heatmap">\n<h2>The objective over the parameters</h2>\n{heat}</section>\n',
        f'<section id="distribution">\n<h2>Distribution of {_e(result.sort_by)}</h2>\n{_histogram(result)}</section>\n',
        f'<section id="equity">\n<h2>Equity curves</h2>\n{curves}</section>\n',
        _walk(result),
        _top_table(result),
        '<footer class="note">Generated by mde. Self-contained page: no scripts, no network resources.</footer>\n',
        "</body>\n</html>\n",
    ]
    return "".join(parts)


def write_sweep_report(path: str | Path, result: Any) -> None:
    target = Path(path)
    data = render_sweep_report(result).encode("utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "wb", shared=True) as fh:
            fh.write(data)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}; choose another path") from None
