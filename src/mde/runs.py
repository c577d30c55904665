"""What a backtest (`mde replay`) and a paper session (`mde paper`) share: the simulated broker
and the strategy of a run, and its summary (`ReplayResult`: metrics, trades, equity, the data
fingerprint), so both charge, fill and report a run the same way.

    broker, models, ticks = build_broker(engine, ["NIFTY"], costs="zerodha", segment="futures",
                                         cash=1_000_000.0, slippage_ticks=0)
    strat = build_strategy("sma_cross", {"fast": 10})
    ...  # a StrategyRunner drives `strat` over candles with `broker`
    result = summarize(Run(engine, strat, runner, models, ticks, spans, lo, hi, cash), outcome)
"""

from __future__ import annotations

import functools
import hashlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl

from .atomic import atomic_write
from .broker import FILL_MODEL, SimBroker
from .clock import IST, us_to_datetime
from .costs import CostModel, cost_model, segment_for
from .errors import InputError, MdeError
from .jsonout import dumps
from .margins import Contract, contract_for, load_margins
from .metrics import basis_for, compute, equity_frame
from .strategy import Note, RunOutcome, SeriesData, Strategy, StrategyRunner, build, load_strategy
from .symbols import Instrument
from .timeframes import Timeframe

DEFAULT_CASH = 1_000_000.0
DEFAULT_TICK = 0.05
TRADE_CSV_COLUMNS = (
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
    "strategy",
)


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
            "rejections": {
                "total": len(self.rejections),
                "by_reason": self.rejections_by_reason(),
                "orders": self.rejections,
            },
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
        h.update(cast(memoryview, column))  # SeriesData's columns are memoryviews or typed arrays: their bytes, no copy
    volume = data.volume
    h.update(
        volume if isinstance(volume, (array, memoryview)) else array("q", [-1 if v is None else v for v in volume])
    )
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


def unpriced(frame: pl.DataFrame) -> str:
    """ "" if every candle has a valid price, else how many do not and the first one.
    (A source's implausible candles are kept in the cache, counted; a NaN close must not reach
    a fill, an equity curve or a comparison in a strategy, where it would be silently wrong.)"""
    from .validate import PRICES, unpriced as rule

    if frame.is_empty():
        return ""
    bad = frame.filter(rule())
    if bad.is_empty():
        return ""
    row = bad.row(0, named=True)
    what = ", ".join(
        f"{c} {row[c]}" for c in PRICES if row[c] is None or not (row[c] == row[c] and 0 < row[c] < float("inf"))
    )
    return f"{bad.height} candle(s) without a valid price (first: {row['ts'].astimezone(IST):%Y-%m-%d %H:%M} {what})"


def _tick_for(engine: Any, inst: Instrument) -> float:
    """The instrument's tick from the instruments dump if it is on disk, else NSE's 0.05."""
    try:
        from .sources.kite.instruments import InstrumentCatalog

        def offline() -> list[dict[str, Any]]:
            raise MdeError("offline")

        info = InstrumentCatalog(engine.settings.cache_dir / "_meta", offline, engine.now).instrument_info(inst)
    except (MdeError, OSError):
        return DEFAULT_TICK
    tick = (info or {}).get("tick_size")
    return float(tick) if tick else DEFAULT_TICK


def build_broker(
    engine: Any,
    symbols: Sequence[str],
    *,
    costs: str,
    segment: str | None,
    cash: float,
    slippage_ticks: int,
    on_fill: Any = None,
    start: date | None = None,
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
        contracts[name] = contract_for(
            engine.settings.cache_dir, inst.exchange, inst.tradingsymbol, segment or own or "delivery", day, label=name
        )
    margins = load_margins(getattr(engine.settings, "margins_file", None))
    broker = SimBroker(
        cash,
        models.__getitem__,
        ticks.__getitem__,
        slippage_ticks,
        on_fill=on_fill,
        contracts=contracts,
        margins=margins,
    )
    return broker, models, ticks


def build_strategy(spec: str | type[Strategy] | Strategy, params: Mapping[str, Any] | None = None) -> Strategy:
    if isinstance(spec, Strategy):
        if params:
            raise InputError(
                "give parameters to the strategy's constructor, not to run_replay, when passing an instance"
            )
        return spec
    cls = load_strategy(spec) if isinstance(spec, str) else spec
    return build(cls, dict(params or {}))


@dataclass(frozen=True)
class Run:
    """A run as `summarize` needs it besides its outcome: what was traded, how, over which dates.

    `spans` holds each traded series with the indices [first, end) of the candles the run
    traded (the candles before `first` were warm-up): the buy-and-hold figure and the report's
    candles come from them."""

    engine: Any
    strategy: Strategy
    runner: StrategyRunner
    models: Mapping[str, CostModel]  # build_broker's cost model per symbol
    ticks: Mapping[str, float]  # build_broker's tick size per symbol
    spans: Sequence[tuple[SeriesData, int, int]]
    start: date
    end: date
    cash: float
    segment: str | None = None
    slippage_ticks: int = 0
    square_off: str | None = None  # None: the strategy's own
    warnings: Sequence[str] = ()


def summarize(run: Run, outcome: RunOutcome) -> ReplayResult:
    """Trades, equity, metrics, fingerprint and the fill model of a finished run: one shape for
    `mde replay` and the end of a `mde paper` session, so both print the same summary."""
    runner, strat, broker = run.runner, run.strategy, outcome.broker
    names = list(runner.symbols)
    tf = runner.timeframe
    trades = broker.trades_frame()
    # the run is over: its arrays stay as they are
    equity = equity_frame(outcome.equity_us, outcome.equity, run.cash, final=True)
    basis = basis_for(run.engine.calendar, tf, run.start, run.end)
    exposure = outcome.exposed / outcome.events if outcome.events else 0.0
    holds = [data.close[i1 - 1] / data.open[i0] - 1 for data, i0, i1 in run.spans if i1 > i0]
    buy_hold = sum(holds) / len(holds) * 100 if holds else None
    metrics = compute(equity, trades, run.cash, basis, exposure, buy_hold)
    models = run.models
    model: CostModel = models[names[0]]
    cost_desc = "; ".join(f"{n}: {models[n].describe()}" for n in names) if len(names) > 1 else model.describe()
    tick_desc = ", ".join(sorted({f"{t:g}" for t in run.ticks.values()}))
    contracts = {n: broker.contract(n) for n in names}
    lots = {
        n: {"segment": c.segment, "lot_size": c.lot_size, "source": c.lot_note or None} for n, c in contracts.items()
    }
    lot_desc = "; ".join(c.lot_note for c in contracts.values() if c.lot_note) or "every symbol here trades in ones."
    warnings = [*run.warnings, *(c.lot_warning for c in contracts.values() if c.lot_warning)]
    rejections = [
        {
            "ts": us_to_datetime(r.ts_us).isoformat(),
            "symbol": r.order.symbol,
            "side": "buy" if r.order.side > 0 else "sell",
            "qty": r.order.qty,
            "kind": r.order.kind,
            "price": r.order.price,
            "stop_loss": r.order.stop_loss,
            "target": r.order.target,
            "strategy": r.order.strategy,
            "reason": r.code,
            "detail": r.why,
        }
        for r in broker.rejections
    ]
    return ReplayResult(
        strategy=strat.label(),
        params=strat.params,
        symbols=names,
        timeframe=tf.name,
        start=run.start,
        end=run.end,
        cash=float(run.cash),
        costs=model.name,
        segment=run.segment if run.segment else (model.segment if model.table is not None else None),
        cost_basis=cost_desc,
        version=mde_version(),
        fill_model=FILL_MODEL.format(
            slippage=run.slippage_ticks,
            tick=tick_desc,
            square_off=run.square_off or strat.square_off,
            margins=broker.margins.describe(),
            lots=lot_desc,
        ),
        basis=basis.describe(tf),
        generated_at=datetime.now(IST).replace(microsecond=0),
        metrics=metrics,
        trades=trades,
        equity=equity.select("ts", "equity", "drawdown"),
        candles={d.symbol: d.frame.slice(i0, i1 - i0) for d, i0, i1 in run.spans},
        fingerprint=[
            fingerprint(d, d.built_from or d.timeframe) for d in runner._series.values()
        ],  # each series' own base
        warnings=warnings,
        events=outcome.events,
        rejections=rejections,
        lots=lots,
        margin_basis=broker.margins.describe(),
        log=list(outcome.notes),
    )
