"""Backtests on the cache: `mde replay` as a library call.

    result = run_replay(engine, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-12-31",
                        params={"fast": 10}, costs="zerodha", segment="futures")
    result.metrics["net_pnl"]; result.trades; result.write_trades("trades.csv")

The data must be in the cache: a range the coverage ledger does not cover is an error
naming the `mde fetch` to run (unless allow_gaps). The strategy sees every cached candle
closed before now, warm-up before `start` included; `on_candle` runs for candles of
`start`..`end` only. Fills follow broker.FILL_MODEL.
"""

from __future__ import annotations

import functools
import hashlib
from array import array
import itertools
import os
import shlex
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from .atomic import atomic_write
from .broker import FILL_MODEL, SimBroker
from .calendar import parse_date
from .clock import IST, as_us, us_to_datetime
from .costs import CostModel, cost_model, segment_for
from .margins import Contract, contract_for, load_margins
from .errors import InputError, MdeError, NotCached, StrategyError
from .jsonout import dumps
from .metrics import basis_for, compute, equity_frame
from .protocols import ReplayEngine
from .strategy import Note, SeriesData, Strategy, StrategyRunner, build, load_strategy, merge_events, parse_params
from .symbols import Instrument
from .timeframes import Timeframe, parse

DEFAULT_CASH = 1_000_000.0
DEFAULT_TICK = 0.05
TRADE_CSV_COLUMNS = (
    "symbol", "side", "qty", "entry_ts", "entry_price", "exit_ts", "exit_price", "gross_pnl", "charges", "net_pnl",
    "exit_reason", "strategy",
)
SORTABLE = ("net_pnl", "return_pct", "cagr_pct", "sharpe", "sortino", "max_drawdown", "win_rate_pct", "profit_factor",
            "expectancy", "trades")


@dataclass
class ReplayResult:
    strategy: str
    params: dict[str, Any]
    symbols: list[str]
    timeframe: str
    start: date
    end: date
    cash: float
    costs: str
    segment: str | None
    cost_basis: str
    version: str
    fill_model: str
    basis: str
    generated_at: datetime
    metrics: dict[str, Any]
    trades: pl.DataFrame
    equity: pl.DataFrame
    candles: dict[str, pl.DataFrame]
    fingerprint: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    events: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)  # orders the broker refused, oldest first
    lots: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> margin segment, lot size, its source
    margin_basis: str = ""

    def rejections_by_reason(self) -> dict[str, int]:
        """How many orders were rejected, per reason (buying power, lot size, bracket side, ...)."""
        out: dict[str, int] = {}
        for r in self.rejections:
            out[r["reason"]] = out.get(r["reason"], 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))
    log: list[Note] = field(default_factory=list)  # the strategy's ctx.log lines and its rejected orders

    def summary(self) -> dict[str, Any]:
        """Everything `--json` prints: enough to reproduce the run and notice a changed cache."""
        return {
            "strategy": self.strategy,
            "params": self.params,
            "symbols": self.symbols,
            "timeframe": self.timeframe,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "cash": self.cash,
            "costs": {"model": self.costs, "segment": self.segment, "basis": self.cost_basis},
            "margins": self.margin_basis,
            "lots": self.lots,
            "rejections": {"total": len(self.rejections), "by_reason": self.rejections_by_reason(),
                           "orders": self.rejections},
            "metrics": self.metrics,
            "annualisation": self.basis,
            "fill_model": self.fill_model,
            "data": self.fingerprint,
            "mde_version": self.version,
            "candles_processed": self.events,
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        return dumps(self.summary(), indent=1, default=str)

    def trades_csv(self) -> str:
        df = self.trades.select(TRADE_CSV_COLUMNS)
        return df.write_csv(datetime_format="%Y-%m-%dT%H:%M:%S%:z")

    def write_trades(self, path: str | Path) -> None:
        target = Path(path)
        with _writable(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target, "w", shared=True) as fh:
                fh.write(self.trades_csv())

    def write_report(self, path: str | Path) -> None:
        from .report import write_report

        with _writable(Path(path)):
            write_report(path, self)


@contextmanager
def _writable(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}; choose another path") from None


@functools.cache
def mde_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mde")
    except PackageNotFoundError:
        return "unknown"


def fingerprint(data: SeriesData, source_tf: Timeframe) -> dict[str, Any]:
    """rows, first/last and a content hash of the candles a run read (stable across machines)."""
    h = hashlib.sha256()
    frame = data.frame
    for column in (data.ts_us, data.open, data.high, data.low, data.close):
        h.update(column)  # typed arrays: their bytes, no copy
    volume = data.volume
    h.update(volume if isinstance(volume, (array, memoryview)) else array("q", [-1 if v is None else v for v in volume]))
    first = frame["ts"][0] if frame.height else None
    last = frame["ts"][-1] if frame.height else None
    return {
        "symbol": data.symbol,
        "timeframe": data.timeframe.name,
        "read_from": source_tf.name,
        "rows": frame.height,
        "first_ts": first.isoformat() if first else None,
        "last_ts": last.isoformat() if last else None,
        "sha256": h.hexdigest(),
    }


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


def find_gaps(engine: Any, inst: Instrument, tf: Timeframe, start: date, end: date, until: datetime,
              span: tuple[datetime, datetime] | None = None) -> Gaps:
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


def missing_sessions(engine: Any, inst: Instrument, tf: Timeframe, start: date, end: date, until: datetime) -> list[date]:
    """Sessions in [start, end] (up to `until`) that the series' coverage ledger lacks (sessions
    the source answered with no candle are not lacking)."""
    gaps = find_gaps(engine, inst, tf, start, end, until)
    return gaps.missing + gaps.outside


def _span_text(span: tuple[datetime, datetime]) -> str:
    return f"{span[0]:%Y-%m-%d} to {span[1]:%Y-%m-%d}"


def _nothing_to_fetch(name: str, tf: Timeframe, lo: date, hi: date, gaps: Gaps, span: tuple[datetime, datetime] | None) -> str:
    """No candle of the range is cached and no fetch would bring one: say why, advise nothing."""
    if span is not None and gaps.outside:
        return (f"the sample has no {tf} candles of {name} between {lo} and {hi}: it has them from "
                f"{_span_text(span)} only; replay dates inside that span")
    if gaps.empty:
        return (f"the source answered no {tf} candles of {name} between {lo} and {hi} (recorded as empty by "
                f"mde fetch: not listed yet, or no trading); replay other dates")
    return f"the source has no {tf} candles of {name} between {lo} and {hi}; replay other dates"


def short_last_session(engine: Any, name: str, tf: Timeframe, ts_us: Sequence[int], start: date, end: date, until: datetime) -> str | None:
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


def unpriced(frame: pl.DataFrame) -> str:
    """"" if every candle has a valid price, else how many do not and the first one.
    (A source's implausible candles are kept in the cache, counted; a NaN close must not reach
    a fill, an equity curve or a comparison in a strategy, where it would be silently wrong.)"""
    from .validate import PRICES, unpriced as rule

    if frame.is_empty():
        return ""
    bad = frame.filter(rule())
    if bad.is_empty():
        return ""
    row = bad.row(0, named=True)
    what = ", ".join(f"{c} {row[c]}" for c in PRICES if row[c] is None or not (row[c] == row[c] and 0 < row[c] < float("inf")))
    return (f"{bad.height} candle(s) without a valid price (first: {row['ts'].astimezone(IST):%Y-%m-%d %H:%M} "
            f"{what})")


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


def _tick_for(engine: Any, inst: Instrument) -> float:
    """The instrument's tick from the instruments dump if it is on disk, else NSE's 0.05."""
    try:
        from .instruments import InstrumentCatalog

        def offline() -> list[dict]:
            raise MdeError("offline")

        info = InstrumentCatalog(engine.settings.cache_dir / "_meta", offline, engine.now).instrument_info(inst)
    except (MdeError, OSError):
        return DEFAULT_TICK
    tick = (info or {}).get("tick_size")
    return float(tick) if tick else DEFAULT_TICK


def build_broker(
    engine: Any, symbols: Sequence[str], *, costs: str, segment: str | None, cash: float, slippage_ticks: int,
    on_fill: Any = None, start: date | None = None,
) -> tuple[SimBroker, dict[str, CostModel], dict[str, float]]:
    """The simulated broker of a run: a cost model, a tick size and a contract (margin segment,
    lot size) per symbol. Replay and paper both build theirs here, so the same symbols are
    charged, margined and filled the same way. `start` (default: today by the engine's clock)
    picks the index future whose lot an index run "as futures" takes."""
    models: dict[str, CostModel] = {}
    ticks: dict[str, float] = {}
    contracts: dict[str, Contract] = {}
    day = start or engine.now().date()
    for name in symbols:
        inst = engine.resolve(name)
        own = segment_for(inst.exchange, None, inst.tradingsymbol)
        models[name] = cost_model(costs, segment, own, name, engine.settings.costs_file)
        ticks[name] = _tick_for(engine, inst)
        # margined as the --segment given, else the instrument's own; an index without one as cash (delivery)
        contracts[name] = contract_for(engine.settings.cache_dir, inst.exchange, inst.tradingsymbol,
                                       segment or own or "delivery", day, label=name)
    margins = load_margins(getattr(engine.settings, "margins_file", None))
    broker = SimBroker(cash, models.__getitem__, ticks.__getitem__, slippage_ticks, on_fill=on_fill,
                       contracts=contracts, margins=margins)
    return broker, models, ticks


def build_strategy(spec: str | type[Strategy] | Strategy, params: Mapping[str, Any] | None = None) -> Strategy:
    if isinstance(spec, Strategy):
        if params:
            raise InputError("give parameters to the strategy's constructor, not to run_replay, when passing an instance")
        return spec
    cls = load_strategy(spec) if isinstance(spec, str) else spec
    return build(cls, dict(params or {}))


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
        name = raw.strip().upper()
        if name in names:
            raise InputError(f"{name} is given twice")
        src_tf = engine.cached_timeframe(name, tf)
        if src_tf is None:
            engine.check_symbol(raw)  # an unknown symbol: InputError with close matches
        manifest = engine.store.manifest(inst, src_tf or tf)
        span = engine.source_span(inst, src_tf or tf, manifest.source if manifest is not None else None)
        gaps = find_gaps(engine, inst, src_tf or tf, lo, hi, until, span)
        if src_tf is None and span is None and (manifest.source if manifest is not None else engine.source_name) == "sample":
            raise InputError(f"no cached {tf} candles for {name}, and the sample has none to fetch, nor a smaller "
                             f"timeframe to build them from{engine._sample_has(name)}")
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
            raise InputError(f"{name} {tf}: {bad}; a fill or P&L on such a candle would be a wrong number, so mde "
                             "does not replay it: pick dates without it, or prune it (the source sent it so)")
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

    broker, models, ticks = build_broker(engine, names, costs=costs, segment=segment, cash=cash, slippage_ticks=slippage_ticks,
                                         start=lo)
    runner = StrategyRunner([strat], engine, symbols=names, timeframe=tf, broker=broker, as_of=until, square_off=square_off)
    if on_log is not None:
        runner.on_note = lambda note: on_log(note.line())
    for data in series:
        runner.add_series(data)
    outcome = runner.run(merge_events(series, starts, ends), as_us(_day_start(lo)))

    return summarize(
        engine, strat, runner, outcome.equity_us, outcome.equity, outcome.exposed, outcome.events, models, ticks,
        series, starts, ends, lo, hi, cash, segment, slippage_ticks, square_off, read_from, warnings,
    )


def summarize(
    engine: Any, strat: Strategy, runner: StrategyRunner, equity_us: Sequence[int], equity_values: Sequence[float],
    exposed: int, events: int, models: Mapping[str, CostModel], ticks: Mapping[str, float],
    series: Sequence[SeriesData], starts: Sequence[int], ends: Sequence[int], lo: date, hi: date, cash: float,
    segment: str | None, slippage_ticks: int, square_off: str | None, read_from: Mapping[str, Timeframe],
    warnings: list[str],
) -> ReplayResult:
    """Trades, equity, metrics, fingerprint and the fill model of a finished run: one shape for
    `mde replay` and the end of a `mde paper` session, so both print the same summary."""
    assert runner.broker is not None
    names = list(runner.symbols)
    tf = runner.timeframe
    trades = runner.broker.trades_frame()
    equity = equity_frame(equity_us, equity_values, cash, final=True)  # the run is over: its arrays stay as they are
    basis = basis_for(engine.calendar, tf, lo, hi)
    exposure = exposed / events if events else 0.0
    holds = [data.close[i1 - 1] / data.open[i0] - 1 for data, i0, i1 in zip(series, starts, ends) if i1 > i0]
    buy_hold = sum(holds) / len(holds) * 100 if holds else None
    metrics = compute(equity, trades, cash, basis, exposure, buy_hold)
    model: CostModel = models[names[0]]
    cost_desc = "; ".join(f"{n}: {models[n].describe()}" for n in names) if len(names) > 1 else model.describe()
    tick_desc = ", ".join(sorted({f"{t:g}" for t in ticks.values()}))
    sq = square_off or strat.square_off
    broker = runner.broker
    lots = {n: {"segment": broker.contract(n).segment, "lot_size": broker.contract(n).lot_size,
                "source": broker.contract(n).lot_note or None} for n in names}
    lot_desc = "; ".join(broker.contract(n).lot_note for n in names if broker.contract(n).lot_note) \
        or "every symbol here trades in ones."
    warnings = [*warnings, *(broker.contract(n).lot_warning for n in names if broker.contract(n).lot_warning)]
    rejections = [
        {"ts": us_to_datetime(r.ts_us).isoformat(), "symbol": r.order.symbol, "side": "buy" if r.order.side > 0 else "sell",
         "qty": r.order.qty, "kind": r.order.kind, "price": r.order.price, "stop_loss": r.order.stop_loss,
         "target": r.order.target, "strategy": r.order.strategy, "reason": r.code, "detail": r.why}
        for r in broker.rejections
    ]
    return ReplayResult(
        strategy=strat.label(),
        params=strat.params,
        symbols=names,
        timeframe=tf.name,
        start=lo,
        end=hi,
        cash=float(cash),
        costs=model.name,
        segment=segment if segment else (model.segment if model.table is not None else None),
        cost_basis=cost_desc,
        version=mde_version(),
        fill_model=FILL_MODEL.format(slippage=slippage_ticks, tick=tick_desc, square_off=sq,
                                     margins=broker.margins.describe(), lots=lot_desc),
        basis=basis.describe(tf),
        generated_at=datetime.now(IST).replace(microsecond=0),
        metrics=metrics,
        trades=trades,
        equity=equity.select("ts", "equity", "drawdown"),
        candles={d.symbol: d.frame.slice(i0, i1 - i0) for d, i0, i1 in zip(series, starts, ends)},
        fingerprint=[fingerprint(d, d.built_from or d.timeframe) for d in runner._series.values()],  # each series' own base
        warnings=warnings,
        events=events,
        rejections=rejections,
        lots=lots,
        margin_basis=broker.margins.describe(),
        log=list(runner.notes),
    )


# -- sweeps ----------------------------------------------------------------------------
def param_grid(pairs: Sequence[str]) -> list[dict[str, str]]:
    """`--param fast=5,10 --param slow=30,50` -> the 4 combinations, in a stable order."""
    parsed = parse_params(pairs)
    keys = list(parsed)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(parsed[k] for k in keys))]


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
    engine: Any, strategy: str, grid: list[dict[str, str]], *, sort_by: str = "net_pnl", workers: int | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run every parameter combination on all cores; rows sorted by `sort_by` (best first)."""
    if sort_by not in SORTABLE:
        raise InputError(f"cannot sort by {sort_by!r}; use one of {', '.join(SORTABLE)}")
    cls = load_strategy(strategy)
    for combo in grid:  # a bad name or type fails now, before any process starts
        unknown = set(combo) - set(cls.parameters())
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
            rows = list(pool.map(_sweep_one, [settings] * len(grid), [strategy] * len(grid), grid, [kwargs] * len(grid)))
    for row in rows:
        text = row.pop("_traceback", None)
        if text:
            import logging

            logging.getLogger("mde.strategy").debug("the strategy's traceback (%s):\n%s", _combo(row["params"]), text.rstrip())
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
    return StrategyError(f"{message} with {_combo(first['params'])} ({len(raised)} of {len(rows)} combinations "
                         "failed; run with -v for the tracebacks)")
