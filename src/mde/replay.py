"""Backtests on the cache: `mde replay` as a library call.

    result = run_replay(engine, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-12-31",
                        params={"fast": 10}, costs="zerodha", segment="futures")
    result.metrics["net_pnl"]; result.trades; result.write_trades("trades.csv")

The data must be in the cache: a range the coverage ledger does not cover is an error
naming the `mde fetch` to run (unless allow_gaps). The strategy sees every cached candle
closed before now, warm-up before `start` included; `on_candle` runs for candles of
`start`..`end` only. Fills follow broker.FILL_MODEL. The run's broker, strategy and summary
(`ReplayResult`) are built by `mde.runs`, as a paper session's are.
"""

from __future__ import annotations

import os
import shlex
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from .calendar import parse_date
from .clock import IST, as_us
from .errors import InputError, MdeError, NotCached, StrategyError
from .protocols import ReplayEngine
from .runs import (
    DEFAULT_CASH,
    ReplayResult,
    Run,
    build_broker,
    build_strategy,
    summarize,
    unpriced,
)
from .strategy import SeriesData, Strategy, StrategyRunner, build, load_strategy, merge_events
from .symbols import Instrument, validate_symbol
from .timeframes import Timeframe, parse

SORTABLE = (
    "net_pnl",
    "return_pct",
    "cagr_pct",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate_pct",
    "profit_factor",
    "expectancy",
    "trades",
)


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time(0, 0), IST)


def _sessions(engine: Any, start: date, end: date, until: datetime) -> list[tuple[date, datetime, datetime]]:
    """(day, first open, last close cut at `until`) of each session day in [start, end] before `until`."""
    out = []
    d = start
    while d <= end:
        sessions = engine.calendar.sessions(d)
        if sessions:
            open_ = _day_start(d) + timedelta(minutes=sessions[0][0])
            if open_ >= until:
                break
            out.append((d, open_, min(_day_start(d) + timedelta(minutes=sessions[-1][1]), until)))
        d += timedelta(days=1)
    return out


@dataclass(frozen=True)
class Gaps:
    """Sessions of a replay range the cache lacks, by what can be done about them."""

    missing: list[date]  # a fetch can fill them
    outside: list[date]  # outside what the source has (the sample's span): no fetch can
    empty: list[date]  # the source answered them with no candle (Manifest.empty): not gaps
    sessions: int  # session days in the range


def find_gaps(
    engine: Any,
    inst: Instrument,
    tf: Timeframe,
    start: date,
    end: date,
    until: datetime,
    span: tuple[datetime, datetime] | None = None,
) -> Gaps:
    """Classify the sessions in [start, end] (up to `until`) that the series' coverage ledger lacks."""
    manifest = engine.store.manifest(inst, tf)
    if manifest is not None and manifest.coverage:
        ranges = manifest.coverage
    elif manifest is not None and manifest.first_ts is not None and manifest.last_ts is not None:
        # no ledger (a series saved with save_cache, or from before the ledger): the span of the data
        ranges = [(manifest.first_ts, engine.calendar.close_time(manifest.last_ts, tf))]
    elif engine.store.exists(inst, tf):  # no manifest (moved aside): the ledger rebuilt from the files
        ranges = engine.store.rebuilt_manifest(inst, tf, "unknown")[0].coverage
    else:
        ranges = []
    empties = manifest.empty if manifest is not None else []
    days = _sessions(engine, start, end, until)
    missing, outside, empty = [], [], []
    for d, open_, close in days:
        if any(a <= open_ and b >= close for a, b in ranges):
            continue
        if any(a <= open_ and b >= close for a, b in empties):
            empty.append(d)
        elif span is not None and (close <= span[0] or open_ >= span[1]):
            outside.append(d)
        else:
            missing.append(d)
    return Gaps(missing, outside, empty, len(days))


def missing_sessions(
    engine: Any, inst: Instrument, tf: Timeframe, start: date, end: date, until: datetime
) -> list[date]:
    """Sessions in [start, end] (up to `until`) that the series' coverage ledger lacks (sessions
    the source answered with no candle are not lacking)."""
    gaps = find_gaps(engine, inst, tf, start, end, until)
    return gaps.missing + gaps.outside


def _span_text(span: tuple[datetime, datetime]) -> str:
    return f"{span[0]:%Y-%m-%d} to {span[1]:%Y-%m-%d}"


def _nothing_to_fetch(
    name: str, tf: Timeframe, lo: date, hi: date, gaps: Gaps, span: tuple[datetime, datetime] | None
) -> str:
    """No candle of the range is cached and no fetch would bring one: say why, advise nothing."""
    if span is not None and gaps.outside:
        return (
            f"the sample has no {tf} candles of {name} between {lo} and {hi}: it has them from "
            f"{_span_text(span)} only; replay dates inside that span"
        )
    if gaps.empty:
        return (
            f"the source answered no {tf} candles of {name} between {lo} and {hi} (recorded as empty by "
            f"mde fetch: not listed yet, or no trading); replay other dates"
        )
    return f"the source has no {tf} candles of {name} between {lo} and {hi}; replay other dates"


def short_last_session(
    engine: Any, name: str, tf: Timeframe, ts_us: Sequence[int], start: date, end: date, until: datetime
) -> str | None:
    """A warning if the last session of [start, end] that has begun by `until` holds fewer
    candles than the calendar says closed by then: a source that lagged the clock when the
    cache was filled (Kite can be minutes behind), or a cache filled by an older mde."""
    if tf.is_daily:
        return None
    cal = engine.calendar
    day = min(end, until.astimezone(IST).date())
    while day >= start:
        sessions = cal.sessions(day)
        if sessions and _day_start(day) + timedelta(minutes=sessions[0][0]) < until:
            break
        day -= timedelta(days=1)
    else:
        return None
    midnight = _day_start(day)
    anchor, step = sessions[0][0], tf.minutes
    expected = 0
    for open_, close in sessions:  # grid buckets each session touches, as the calendar counts them
        k = anchor + (open_ - anchor) // step * step
        while k < close:
            if midnight + timedelta(minutes=min(k + step, close)) <= until:
                expected += 1
            k += step
    have = bisect_left(ts_us, as_us(midnight + timedelta(days=1))) - bisect_left(ts_us, as_us(midnight))
    if have >= expected:
        return None
    return (
        f"{name}: the last session in range ({day}) has {have} of its {expected} {tf} candles; the source may not "
        f"have sent the rest when it was cached: run `mde fetch {shlex.quote(name)} --timeframe {tf} --from {day} --to {day}`"
    )


def _gap_message(symbol: str, tf: Timeframe, gaps: list[date]) -> str:
    span = f"{gaps[0]}" if len(gaps) == 1 else f"{gaps[0]}..{gaps[-1]}"
    return (
        f"the cache lacks {len(gaps)} session(s) of {symbol} {tf} in the replay range ({span}); run "
        f"`mde fetch {symbol} --timeframe {tf} --from {gaps[0]} --to {gaps[-1]}`, or pass --allow-gaps"
    )


def _outside_message(symbol: str, tf: Timeframe, days: list[date], span: tuple[datetime, datetime]) -> str:
    where = f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]}"
    return (
        f"{len(days)} session(s) of {symbol} {tf} in the replay range ({where}) are outside what the sample has "
        f"({_span_text(span)}); narrow --from/--to to that span, or pass --allow-gaps"
    )


def run_replay(
    engine: ReplayEngine,
    strategy: str | type[Strategy] | Strategy,
    symbols: Sequence[str],
    timeframe: str | Timeframe,
    start: date | str,
    end: date | str,
    *,
    params: Mapping[str, Any] | None = None,
    costs: str = "zerodha",
    segment: str | None = None,
    cash: float = DEFAULT_CASH,
    slippage_ticks: int = 0,
    allow_gaps: bool = False,
    square_off: str | None = None,
    on_log: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Run one strategy over cached candles of `symbols` from `start` to `end` (dates inclusive).

    `on_log` gets each line the strategy logs (`ctx.log`, its rejected orders) as it is made,
    `2024-06-14 10:15 NAME NIFTY: message`; all of them are in the result's `log` too.
    A strategy that raises is a StrategyError naming its file:line and the candle."""
    tf = parse(timeframe)
    lo, hi = parse_date(start, "--from date"), parse_date(end, "--to date")
    if lo > hi:
        raise InputError(f"--from {lo} is after --to {hi}")
    if not symbols:
        raise InputError("no symbol to replay; pass --symbol NIFTY (repeat it for more)")
    if cash <= 0:
        raise InputError("--cash must be positive")
    strat = build_strategy(strategy, params)
    now = engine.now()
    until = min(now, _day_start(hi + timedelta(days=1)))
    if _day_start(lo) >= now:
        raise InputError(f"--from {lo} is in the future (now is {now:%Y-%m-%d %H:%M} IST)")

    if not _sessions(engine, lo, hi, until):
        raise InputError(f"no NSE session between {lo} and {hi}; pick dates with a trading day")

    names: list[str] = []
    series, starts, ends, warnings, read_from = [], [], [], [], {}
    for raw in symbols:
        inst = engine.resolve(raw)
        name = validate_symbol(raw)
        if name in names:
            raise InputError(f"{name} is given twice")
        src_tf = engine.cached_timeframe(name, tf)
        if src_tf is None:
            engine.check_symbol(raw)  # an unknown symbol: InputError with close matches
        manifest = engine.store.manifest(inst, src_tf or tf)
        span = engine.source_span(inst, src_tf or tf, manifest.source if manifest is not None else None)
        gaps = find_gaps(engine, inst, src_tf or tf, lo, hi, until, span)
        if (
            src_tf is None
            and span is None
            and (manifest.source if manifest is not None else engine.source_name) == "sample"
        ):
            raise InputError(
                f"no cached {tf} candles for {name}, and the sample has none to fetch, nor a smaller "
                f"timeframe to build them from{engine._sample_has(name)}"
            )
        if src_tf is None:
            if not gaps.missing:
                raise InputError(_nothing_to_fetch(name, tf, lo, hi, gaps, span))
            raise NotCached(
                f"no cached {tf} candles for {name} (nor a smaller timeframe to build them from); run "
                f"`mde fetch {name} --timeframe {tf} --from {gaps.missing[0]} --to {gaps.missing[-1]}` first"
            )
        if gaps.missing and not allow_gaps:
            raise NotCached(_gap_message(name, src_tf, gaps.missing))
        if gaps.outside and not allow_gaps and span is not None:
            raise InputError(_outside_message(name, src_tf, gaps.outside, span))
        skipped = len(gaps.missing) + len(gaps.outside)
        if skipped:
            warnings.append(f"{name}: {skipped} session(s) missing from the cache were skipped (--allow-gaps)")
        history = engine.history(name, tf, as_of=until)
        data = SeriesData(name, tf, history, src_tf if src_tf != tf else None)
        short = short_last_session(engine, name, tf, data.ts_us, lo, hi, until)
        if short:
            warnings.append(short)
        i0 = bisect_left(data.ts_us, as_us(_day_start(lo)))
        i1 = bisect_right(data.ts_us, as_us(_day_start(hi + timedelta(days=1))) - 1)
        if i1 <= i0:
            if gaps.missing:
                raise NotCached(
                    f"no cached {tf} candles of {name} between {lo} and {hi}; run `mde fetch {name} --timeframe {src_tf} "
                    f"--from {gaps.missing[0]} --to {gaps.missing[-1]}` first"
                )
            raise InputError(_nothing_to_fetch(name, tf, lo, hi, gaps, span))
        bad = unpriced(data.frame.slice(i0, i1 - i0))
        if bad:
            raise InputError(
                f"{name} {tf}: {bad}; a fill or P&L on such a candle would be a wrong number, so mde "
                "does not replay it: pick dates without it, or prune it (the source sent it so)"
            )
        warm = unpriced(data.frame.slice(0, i0))
        if warm:  # left out of the warm-up, as a missing candle would be, and said
            from .validate import unpriced as rule

            kept = history.filter(~rule())
            data = SeriesData(name, tf, kept, data.built_from)
            i0 = bisect_left(data.ts_us, as_us(_day_start(lo)))
            i1 = bisect_right(data.ts_us, as_us(_day_start(hi + timedelta(days=1))) - 1)
            warnings.append(f"{name} {tf} warm-up history before {lo}: {warm}, left out (as a missing candle)")
        names.append(name)
        series.append(data)
        starts.append(i0)
        ends.append(i1)
        read_from[name] = src_tf

    broker, models, ticks = build_broker(
        engine, names, costs=costs, segment=segment, cash=cash, slippage_ticks=slippage_ticks, start=lo
    )
    runner = StrategyRunner(
        [strat], engine, symbols=names, timeframe=tf, broker=broker, as_of=until, square_off=square_off
    )
    if on_log is not None:
        runner.on_note = lambda note: on_log(note.line())
    for data in series:
        runner.add_series(data)
    outcome = runner.run(merge_events(series, starts, ends), as_us(_day_start(lo)))

    spans = list(zip(series, starts, ends, strict=True))
    run = Run(engine, strat, runner, models, ticks, spans, lo, hi, cash, segment, slippage_ticks, square_off, warnings)
    return summarize(run, outcome)


# -- sweeps ----------------------------------------------------------------------------
def param_grid(pairs: Sequence[str], kinds: Mapping[str, type] | None = None) -> list[dict[str, Any]]:
    """`--param fast=5,10 --param slow=30,50` -> the 4 combinations, in a stable order (the
    first parameter varies slowest). Ranges (`fast=5:50:5`) work too; a parameter given twice
    or a value listed twice is an InputError (it would run the same combinations twice).
    `kinds`: the strategy's parameter types (`Strategy.parameters()`), see `grid.parse_grid`."""
    from .grid import parse_grid

    return parse_grid(pairs, kinds).combos()


def _sweep_one(settings: Any, strategy: str, params: dict[str, str], kwargs: dict[str, Any]) -> dict[str, Any]:
    from .engine import MarketDataEngine

    try:
        result = run_replay(MarketDataEngine(settings), strategy, params=params, **kwargs)
    except StrategyError as exc:  # the traceback comes back to be logged (-v) in the main process
        return {"params": params, "error": str(exc), "exit_code": exc.exit_code, "_traceback": exc.traceback}
    except MdeError as exc:
        return {"params": params, "error": str(exc)}
    return {"params": result.params, "metrics": result.metrics, "rejections": result.rejections_by_reason()}


def sweep(
    engine: Any,
    strategy: str,
    grid: list[dict[str, str]],
    *,
    sort_by: str = "net_pnl",
    workers: int | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run every parameter combination on all cores; rows sorted by `sort_by` (best first)."""
    if sort_by not in SORTABLE:
        raise InputError(f"cannot sort by {sort_by!r}; use one of {', '.join(SORTABLE)}")
    cls = load_strategy(strategy)
    for combo in grid:  # an unknown parameter name fails the sweep now, before any process starts;
        unknown = set(combo) - set(cls.parameters())  # a bad value fails its own row (the others still run)
        if unknown:
            build(cls, combo)
    settings = engine.settings
    if settings.now is None:  # every worker must see the same clock
        settings = settings.with_overrides(now=engine.now())
    workers = max(1, min(workers or os.cpu_count() or 1, len(grid)))
    if workers == 1 or len(grid) == 1:
        rows = [_sweep_one(settings, strategy, combo, kwargs) for combo in grid]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # polars' thread pool does not survive fork
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            rows = list(
                pool.map(_sweep_one, [settings] * len(grid), [strategy] * len(grid), grid, [kwargs] * len(grid))
            )
    for row in rows:
        text = row.pop("_traceback", None)
        if text:
            import logging

            logging.getLogger("mde.strategy").debug(
                "the strategy's traceback (%s):\n%s", _combo(row["params"]), text.rstrip()
            )
    ok = [r for r in rows if "metrics" in r]
    failed = [r for r in rows if "error" in r]
    # best first; drawdowns are negative, so the largest (closest to 0) is the best there too
    ok.sort(key=lambda r: (r["metrics"].get(sort_by) is None, -(r["metrics"].get(sort_by) or 0)))
    return ok + failed


def _combo(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def sweep_failure(rows: Sequence[Mapping[str, Any]]) -> StrategyError | None:
    """The error a sweep ends with when the strategy raised in some of its combinations (its
    rows say so, the others' results are shown): the first one, naming its parameters."""
    raised = [r for r in rows if r.get("exit_code") == StrategyError.exit_code]
    if not raised:
        return None
    first = raised[0]
    message = first["error"].replace("(run with -v for the traceback)", "").rstrip()
    return StrategyError(
        f"{message} with {_combo(first['params'])} ({len(raised)} of {len(rows)} combinations "
        "failed; run with -v for the tracebacks)"
    )
