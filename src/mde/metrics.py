"""Performance metrics of a run, annualised by NSE trading time, not by 365 days or 252 x 24h.

A year is the calendar's sessions per year times the candles per regular session (375 at
1m, 75 at 5m, 7 at 60m, 1 at 1d). Returns are per candle close of the run's timeline.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from .calendar import Calendar
from .columns import to_series
from .timeframes import Timeframe


@dataclass(frozen=True)
class Basis:
    sessions_per_year: float
    bars_per_session: int
    years_used: tuple[int, ...]

    @property
    def bars_per_year(self) -> float:
        return self.sessions_per_year * self.bars_per_session

    def describe(self, timeframe: Timeframe) -> str:
        years = ", ".join(str(y) for y in self.years_used)
        return (
            f"annualised by NSE trading time: {self.sessions_per_year:g} sessions/year (calendar {years}) "
            f"x {self.bars_per_session} {timeframe} candles/session = {self.bars_per_year:g} candles/year"
        )


def basis_for(cal: Calendar, timeframe: Timeframe, start: date, end: date) -> Basis:
    """Sessions per year from the NSE calendar over the years the run touches."""
    years = tuple(range(start.year, end.year + 1))
    counts = []
    for year in years:
        d, n = date(year, 1, 1), 0
        while d.year == year:
            n += cal.is_trading_day(d)
            d += timedelta(days=1)
        counts.append(n)
    sessions = sum(counts) / len(counts)
    regular_day = next(
        d
        for d in (date(2024, 1, 1) + timedelta(days=k) for k in range(14))
        if d.weekday() < 5 and d not in cal.holidays and d not in cal.special
    )
    return Basis(round(sessions, 2), cal.candles_per_day(regular_day, timeframe), years)


def _float(x: object) -> float | None:
    """A Float64 column's aggregate (mean, std): a float, or None for no value."""
    return x if isinstance(x, float) else None


def _round(x: float | None, digits: int = 2) -> float | None:
    if x is None or math.isnan(x) or math.isinf(x):
        return None
    return round(x, digits)


def equity_frame(
    times_us: Sequence[int], values: Sequence[float], initial: float, *, final: bool = False
) -> pl.DataFrame:
    """One point per close time (the last, when several symbols close together), with drawdown.

    `final`: the run is over and its typed arrays will not grow again, so the frame can use
    their memory instead of a copy (a million points: 16 MB less at the peak)."""
    df = pl.DataFrame([_column("ts", "q", times_us, final), _column("equity", "d", values, final)])
    if df.height > 1 and (df["ts"].diff() == 0).any():
        df = df.group_by("ts", maintain_order=True).last()
    peak = pl.max_horizontal(pl.col("equity").cum_max(), pl.lit(initial))
    return df.with_columns(
        (pl.col("equity") - peak).alias("drawdown"),
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Kolkata"),
    )


def _column(name: str, code: str, values: Sequence[float] | Sequence[int], final: bool) -> pl.Series:
    if isinstance(values, array) and values.typecode == code:
        return to_series(name, values, copy=not final)  # a million points in a millisecond
    return pl.Series(name, values, dtype=pl.Float64 if code == "d" else pl.Int64)


def compute(
    equity: pl.DataFrame,
    trades: pl.DataFrame,
    initial: float,
    basis: Basis,
    exposure: float,
    buy_and_hold_pct: float | None,
) -> dict[str, object]:
    """The report's metrics, in display order. Money in rupees, ratios plain, `_pct` in percent."""
    values = equity["equity"]
    bars = values.len()
    final = float(values[-1]) if bars else initial
    net = final - initial
    values = values.cast(pl.Float64)
    rets = values / values.shift(1, fill_value=initial) - 1.0  # the first against the starting cash
    mean = _float(rets.mean()) if bars else None
    std = _float(rets.std(ddof=1)) if bars > 1 else None
    losing = rets.filter(rets < 0.0)  # downside deviation: the losing candles' squares over all candles
    downside = math.sqrt(float((losing * losing).sum()) / bars) if bars else 0.0
    del rets, losing
    scale = math.sqrt(basis.bars_per_year)
    sharpe = mean / std * scale if mean is not None and std else None
    sortino = mean / downside * scale if mean is not None and downside else None
    years = bars / basis.bars_per_year if basis.bars_per_year else 0.0
    try:
        cagr = ((final / initial) ** (1 / years) - 1) * 100 if years > 0 and final > 0 else None
    except OverflowError:  # a few days compounded to a year: no meaningful figure
        cagr = None

    dd_value = float(equity["drawdown"].min()) if bars else 0.0  # type: ignore[arg-type]  # polars: an aggregate is any value
    dd_pct = (
        float(equity.select((pl.col("drawdown") / (pl.col("equity") - pl.col("drawdown"))).min()).item()) * 100
        if bars
        else 0.0
    )
    dd_bars, dd_start, dd_end = _longest_drawdown(equity["drawdown"])
    ts = equity["ts"]

    n = trades.height
    pnl = trades["net_pnl"] if n else pl.Series([], dtype=pl.Float64)
    wins = float(pnl.filter(pnl > 0).sum()) if n else 0.0
    losses = float(-pnl.filter(pnl < 0).sum()) if n else 0.0
    holding = (trades["exit_ts"] - trades["entry_ts"]).mean() if n else None
    return {
        "net_pnl": _round(net),
        "gross_pnl": _round(float(trades["gross_pnl"].sum()) if n else 0.0),
        "charges": _round(float(trades["charges"].sum()) if n else 0.0),
        "return_pct": _round(net / initial * 100 if initial else None),
        "cagr_pct": _round(cagr),
        "max_drawdown": _round(dd_value),
        "max_drawdown_pct": _round(dd_pct),
        "max_drawdown_bars": dd_bars,
        "max_drawdown_from": ts[dd_start].isoformat() if dd_bars and dd_start is not None else None,
        "max_drawdown_to": (ts[dd_end].isoformat() if dd_end is not None else "not recovered") if dd_bars else None,
        "sharpe": _round(sharpe),
        "sortino": _round(sortino),
        "trades": n,
        "win_rate_pct": _round(pnl.filter(pnl > 0).len() / n * 100) if n else None,
        "profit_factor": _round(wins / losses) if losses else None,
        "expectancy": _round(float(pnl.mean())) if n else None,  # type: ignore[arg-type]  # polars: an aggregate is any value
        "avg_holding": str(holding) if holding is not None else None,
        "exposure_pct": _round(exposure * 100),
        "buy_and_hold_pct": _round(buy_and_hold_pct),
        "bars": bars,
        "years": _round(years, 4),
    }


def _longest_drawdown(drawdown: pl.Series) -> tuple[int, int | None, int | None]:
    """Longest stretch under a previous peak: (candles under water, peak index, recovery index or None).

    Run-length encoding of "below the running peak" (drawdown < 0; the starting cash counts as
    a peak): the longest run of True is the answer. The peak is the candle before it (index 0
    when the run starts at once, under the starting cash), the recovery the candle after it.
    """
    n = drawdown.len()
    if not n:
        return 0, None, None
    runs = (drawdown < 0).rle().struct.unnest()
    runs = runs.with_columns(start=pl.col("len").cum_sum() - pl.col("len")).filter(pl.col("value"))
    if runs.is_empty():
        return 0, None, None
    best = runs.sort(["len", "start"], descending=[True, False]).row(0, named=True)
    length, start = int(best["len"]), int(best["start"])
    end = start + length
    return length, max(start - 1, 0), end if end < n else None
