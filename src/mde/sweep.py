"""`mde sweep`: run a strategy over a grid of parameter combinations, optionally walk-forward,
and say how much of the best result is luck (PBO, deflated Sharpe).

    result = run_sweep(engine, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-03-31",
                       ["fast=5:20:5", "slow=30,60"], sort_by="sharpe")
    result.rows       # one dict per combination x symbol (x fold x window), best first
    result.stats      # symbol -> PBO and DSR of the best combination (or why there are none)

Every row is one `run_replay` of one symbol with one combination over one window, so its
metrics equal those of `mde replay` with the same parameters, exactly. A combination the
strategy refuses (its `validate()`, e.g. sma_cross's fast >= slow) is skipped and counted.

Walk-forward (`train=6M,test=1M[,anchored]`, folds from `grid.walk_forward`): every
combination runs on every fold's train and test window (each window a replay of its own
dates: the warm-up comes from the cache before the window, nothing after the window's last
session is read). Per fold and symbol the best train row by `sort_by` is chosen, and its test
row (a replay that could not see later candles) is the fold's out-of-sample result; those
are chained into one out-of-sample equity curve per symbol.

PBO and DSR take per-session returns (the last equity of each session against the previous
one; a session without a position is 0): over the whole range without walk-forward, over
the tiled test windows with it (each combination kept fixed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from .calendar import parse_date
from .errors import InputError, MdeError, StrategyError
from .grid import Combo, Fold, WalkForward, parse_grid, parse_walk_forward, walk_forward
from .jsonout import dumps
from .overfit import (
    DSR_HOW_TO_READ,
    PBO_HOW_TO_READ,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe,
)
from .replay import SORTABLE, run_replay
from .runs import DEFAULT_CASH
from .strategy import Strategy, build, coerce_param, load_strategy
from .timeframes import parse as parse_tf

FULL, TRAIN, TEST = "full", "train", "test"


@dataclass(frozen=True)
class Task:
    """One replay of a sweep: a combination on one symbol over one window."""

    index: int  # the combination's position among the combinations run
    params: Combo
    symbol: str
    start: date
    end: date
    fold: int | None = None
    window: str = FULL


@dataclass
class SweepResult:
    strategy: str
    symbols: list[str]
    timeframe: str
    start: date
    end: date
    sort_by: str
    param_names: list[str]
    grid_size: int  # combinations of the grid
    combinations: list[Combo]  # those run (the sample, minus the skipped)
    skipped: list[dict[str, Any]]  # {"params", "reason"} of combinations the strategy refused
    rows: list[dict[str, Any]]  # best first; failed rows (the strategy raised) last
    stats: dict[str, dict[str, Any]]  # symbol -> {"pbo": ..., "dsr": ..., "best": params}
    walk: WalkForward | None = None
    folds: list[Fold] = field(default_factory=list)
    chosen: list[dict[str, Any]] = field(default_factory=list)  # per fold x symbol: params, IS and OOS figures
    oos: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> stitched curve and its metrics
    insample: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> the same figures of the train windows
    samples: int | None = None
    seed: int = 0
    cash: float = DEFAULT_CASH

    def ok_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "error" not in r]

    def failed_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "error" in r]

    def summary(self) -> dict[str, Any]:
        """What `--json` prints (one object): rows without their per-session series."""
        return {
            "strategy": self.strategy,
            "symbols": self.symbols,
            "timeframe": self.timeframe,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "sort": self.sort_by,
            "grid": {
                "combinations": self.grid_size,
                "samples": self.samples,
                "seed": self.seed,
                "run": len(self.combinations),
                "skipped": len(self.skipped),
                "skipped_combinations": self.skipped,
            },
            "rows": [public_row(r) for r in self.rows],
            "failed": len(self.failed_rows()),
            "statistics": {s: {k: v for k, v in st.items()} for s, st in self.stats.items()},
            "how_to_read": {"pbo": PBO_HOW_TO_READ, "dsr": DSR_HOW_TO_READ},
            "walk_forward": None
            if self.walk is None
            else {
                "train": str(self.walk.train),
                "test": str(self.walk.test),
                "anchored": self.walk.anchored,
                "folds": [
                    {
                        "fold": k,
                        "train": [f.train_start.isoformat(), f.train_end.isoformat()],
                        "test": [f.test_start.isoformat(), f.test_end.isoformat()],
                    }
                    for k, f in enumerate(self.folds)
                ],
                "chosen": self.chosen,
                "out_of_sample": {s: {k: v for k, v in o.items() if k != "curve"} for s, o in self.oos.items()},
                "in_sample": self.insample,
            },
        }

    def frame(self) -> pl.DataFrame:
        """The rows as a table (what `--out` writes): parameters, symbol, fold, window, every
        metric, rejections and the data fingerprint; failed rows carry their error."""
        records = [flat_row(r, self.param_names) for r in self.rows]
        if not records:
            return pl.DataFrame()
        frame = pl.DataFrame(records, infer_schema_length=None)
        return frame.with_columns(pl.col("error").cast(pl.Utf8), pl.col("rejections_by_reason").cast(pl.Utf8))

    def write_parquet(self, path: Any) -> None:
        from pathlib import Path

        from .atomic import atomic_write

        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target, "wb", shared=True) as fh:
                self.frame().write_parquet(fh)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}; choose another path") from None

    def write_report(self, path: Any) -> None:
        from .sweep_report import write_sweep_report

        write_sweep_report(path, self)


# -- rows ----------------------------------------------------------------------------------------

_INTERNAL = ("days", "returns", "equity_days")


def public_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _INTERNAL and not k.startswith("_")}


def flat_row(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    params = row.get("params", {})
    for name in names:
        value = params.get(name)
        out[f"param_{name}"] = None if value is None else str(value) if not isinstance(value, (int, float)) else value
    out.update(
        {
            "symbol": row.get("symbol"),
            "fold": row.get("fold"),
            "window": row.get("window"),
            "from": row.get("from"),
            "to": row.get("to"),
        }
    )
    for key, value in (row.get("metrics") or {}).items():
        out[key] = value
    out["rejections"] = row.get("rejections_total")
    out["rejections_by_reason"] = dumps(row["rejections"]) if row.get("rejections") is not None else None
    fp = (row.get("data") or [{}])[0]
    out.update(
        {
            "data_rows": fp.get("rows"),
            "data_first_ts": fp.get("first_ts"),
            "data_last_ts": fp.get("last_ts"),
            "data_read_from": fp.get("read_from"),
            "data_sha256": fp.get("sha256"),
            "error": row.get("error"),
        }
    )
    return out


def session_returns(equity: pl.DataFrame, cash: float) -> tuple[list[str], list[float]]:
    """(session dates, returns): each session's last equity against the previous session's
    (the first against the starting cash)."""
    if equity.is_empty():
        return [], []
    daily = (
        equity.group_by(pl.col("ts").dt.date().alias("day"), maintain_order=True)
        .agg(pl.col("equity").last())
        .sort("day")
    )
    values = daily["equity"].cast(pl.Float64).to_list()
    rets, prev = [], cash
    for v in values:
        rets.append(v / prev - 1.0 if prev else 0.0)
        prev = v
    return [d.isoformat() for d in daily["day"].to_list()], rets


def _run_task(settings: Any, strategy: str, task: Task, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    from .engine import MarketDataEngine

    base = {
        "index": task.index,
        "params": task.params,
        "symbol": task.symbol,
        "fold": task.fold,
        "window": task.window,
        "from": task.start.isoformat(),
        "to": task.end.isoformat(),
    }
    try:
        result = run_replay(
            _engine(settings, MarketDataEngine),
            strategy,
            [task.symbol],
            start=task.start,
            end=task.end,
            params=task.params,
            **kwargs,
        )
    except StrategyError as exc:
        return {**base, "error": str(exc), "exit_code": exc.exit_code, "_traceback": exc.traceback}
    except MdeError as exc:
        return {**base, "error": str(exc), "exit_code": exc.exit_code, "_kind": type(exc).__name__}
    days, rets = session_returns(result.equity, result.cash)
    return {
        **base,
        "params": result.params,
        "metrics": result.metrics,
        "rejections_total": len(result.rejections),
        "rejections": result.rejections_by_reason(),
        "data": result.fingerprint,
        "warnings": result.warnings,
        "days": days,
        "returns": rets,
    }


_ENGINES: dict[int, Any] = {}


def _engine(settings: Any, factory: Callable[[Any], Any]) -> Any:
    """One engine per settings object in a process (a worker runs many tasks of one sweep)."""
    key = id(settings)
    eng = _ENGINES.get(key)
    if eng is None or eng.settings is not settings:
        _ENGINES.clear()
        eng = _ENGINES[key] = factory(settings)
    return eng


def _run_chunk(settings: Any, strategy: str, tasks: Sequence[Task], kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [_run_task(settings, strategy, t, kwargs) for t in tasks]


def run_tasks(
    settings: Any, strategy: str, tasks: Sequence[Task], kwargs: Mapping[str, Any], workers: int | None
) -> list[dict[str, Any]]:
    """Every task's row, in the tasks' order: in this process with one worker, else on a
    local process pool (spawned: polars' thread pool does not survive fork), in chunks so each
    worker reuses its engine."""
    n = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    if n == 1:
        return _run_chunk(settings, strategy, tasks, kwargs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, math.ceil(len(tasks) / (n * 4)))
    chunks = [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        parts = pool.map(_run_chunk, [settings] * len(chunks), [strategy] * len(chunks), chunks, [kwargs] * len(chunks))
        return [row for part in parts for row in part]


# -- the grid ------------------------------------------------------------------------------------


def combinations(
    cls: type[Strategy], pairs: Sequence[str], samples: int | None = None, seed: int = 0
) -> tuple[int, list[Combo], list[dict[str, Any]]]:
    """(grid size, combinations the strategy accepts, skipped ones with the strategy's reason).

    An unknown parameter name or a value of the wrong type is an InputError (the whole sweep
    is wrong); a combination its `validate()` refuses is skipped."""
    spec = cls.parameters()
    kinds = {name: kind for name, (kind, _) in spec.items()}
    grid = parse_grid(pairs, kinds)
    unknown = [n for n in grid.names if n not in spec]
    if unknown:
        takes = ", ".join(spec) or "no parameters"
        raise InputError(f"{cls.label()} has no parameter {', '.join(unknown)}; it takes {takes}")
    combos = grid.sample(samples, seed) if samples is not None else grid.combos()
    ok: list[Combo] = []
    skipped: list[dict[str, Any]] = []
    for combo in combos:
        typed = {k: coerce_param(k, v, kinds[k]) for k, v in combo.items()}  # a wrong type: InputError
        try:
            build(cls, dict(typed))
        except StrategyError:
            raise
        except InputError as exc:
            skipped.append({"params": typed, "reason": str(exc)})
            continue
        ok.append(typed)
    return len(grid), ok, skipped


def sort_key(sort_by: str) -> Callable[[Mapping[str, Any]], tuple[bool, float]]:
    """Best first; drawdowns are negative, so the largest (closest to 0) is the best there too.
    A missing figure sorts last."""

    def key(row: Mapping[str, Any]) -> tuple[bool, float]:
        value = (row.get("metrics") or {}).get(sort_by)
        return (value is None, -(value or 0.0))

    return key


# -- statistics ----------------------------------------------------------------------------------


def _blocks(t: int) -> int | None:
    """The most CSCV blocks (even, <= 16) that leave at least 2 sessions in each."""
    for s in range(16, 1, -2):
        if t // s >= 2:
            return s
    return None


def overfitting(series: Mapping[int, tuple[list[str], list[float]]], best: int) -> dict[str, Any]:
    """PBO over the combinations' per-session returns and the DSR of combination `best`.
    `series`: combination index -> (session dates, returns); sessions missing from one
    combination's series (none, normally: the same candles) count as 0."""
    out: dict[str, Any] = {
        "pbo": None,
        "dsr": None,
        "pbo_how_to_read": PBO_HOW_TO_READ,
        "dsr_how_to_read": DSR_HOW_TO_READ,
    }
    if not series:
        out["note"] = "no combination ran"
        return out
    days = sorted({d for ds, _ in series.values() for d in ds})
    keys = sorted(series)
    matrix: dict[int, list[float]] = {}
    for k in keys:
        by_day = dict(zip(*series[k], strict=True))
        matrix[k] = [by_day.get(d, 0.0) for d in days]
    notes = []
    s = _blocks(len(days))
    if len(keys) < 2:
        notes.append("PBO compares combinations: only one ran")
    elif s is None:
        notes.append(f"PBO needs at least 4 sessions, the sweep has {len(days)}")
    else:
        try:
            pbo = probability_of_backtest_overfitting(
                [[matrix[k][t] for k in keys] for t in range(len(days))], n_blocks=s
            )
            out["pbo"] = {
                "value": pbo.pbo,
                "splits": pbo.n_splits,
                "blocks": pbo.n_blocks,
                "sessions": pbo.rows_used,
                "combinations": pbo.n_combinations,
                "prob_oos_loss": pbo.prob_oos_loss,
                "degradation_slope": None if math.isnan(pbo.slope) else pbo.slope,
                "reading": pbo.how_to_read(),
            }
        except InputError as exc:
            notes.append(f"PBO: {exc}")
    trial = [sharpe(matrix[k]) for k in keys]
    finite = [x for x in trial if math.isfinite(x)]
    try:
        if len(keys) >= 2 and len(finite) >= 2:
            dsr = deflated_sharpe_ratio(matrix[best], trial_sharpes=finite, n_trials=len(keys))
        else:
            dsr = deflated_sharpe_ratio(matrix[best], n_trials=1, sr_variance=0.0)
        out["dsr"] = {
            "value": dsr.dsr,
            "psr": dsr.psr,
            "sharpe_per_session": dsr.sharpe,
            "luck_sharpe": dsr.sharpe0,
            "trials": dsr.n_trials,
            "sessions": dsr.n,
            "skewness": dsr.skewness,
            "kurtosis": dsr.kurtosis,
            "reading": dsr.how_to_read(),
        }
    except InputError as exc:
        notes.append(f"DSR: {exc}")
    if notes:
        out["note"] = "; ".join(notes)
    return out


def curve_metrics(days: Sequence[str], rets: Sequence[float], cash: float, sessions_per_year: float) -> dict[str, Any]:
    """Figures of a per-session return series chained from `cash`: what a stitched
    out-of-sample curve (and the train windows, for comparison) is summarised by."""
    equity, value, peak, dd, dd_pct = [], cash, cash, 0.0, 0.0
    for r in rets:
        value *= 1.0 + r
        equity.append(value)
        peak = max(peak, value)
        dd = min(dd, value - peak)
        dd_pct = min(dd_pct, (value - peak) / peak * 100 if peak else 0.0)
    sr = sharpe(list(rets)) if len(rets) >= 2 else math.nan
    years = len(rets) / sessions_per_year if sessions_per_year else 0.0
    final = equity[-1] if equity else cash
    cagr = ((final / cash) ** (1 / years) - 1) * 100 if years > 0 and final > 0 and cash > 0 else None
    return {
        "sessions": len(rets),
        "net_pnl": round(final - cash, 2),
        "return_pct": round((final / cash - 1) * 100, 2) if cash else None,
        "cagr_pct": None if cagr is None or not math.isfinite(cagr) else round(cagr, 2),
        "sharpe": round(sr * math.sqrt(sessions_per_year), 2) if math.isfinite(sr) else None,
        "max_drawdown": round(dd, 2),
        "max_drawdown_pct": round(dd_pct, 2),
        "curve": {"days": list(days), "equity": equity},
    }


# -- the sweep -----------------------------------------------------------------------------------


def run_sweep(
    engine: Any,
    strategy: str,
    symbols: Sequence[str],
    timeframe: str,
    start: date | str,
    end: date | str,
    pairs: Sequence[str],
    *,
    samples: int | None = None,
    seed: int = 0,
    sort_by: str = "sharpe",
    walk: str | WalkForward | None = None,
    workers: int | None = None,
    costs: str = "zerodha",
    segment: str | None = None,
    cash: float = DEFAULT_CASH,
    slippage_ticks: int = 0,
    allow_gaps: bool = False,
    square_off: str | None = None,
) -> SweepResult:
    if sort_by not in SORTABLE:
        raise InputError(f"cannot sort by {sort_by!r}; use one of {', '.join(SORTABLE)}")
    if not symbols:
        raise InputError("a sweep needs a symbol: --symbol NIFTY (several: --symbol NIFTY BANKNIFTY)")
    if len(set(symbols)) != len(symbols):
        raise InputError("a symbol is given twice; give each once")
    if cash <= 0:
        raise InputError("--cash must be positive")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if samples is not None and (isinstance(samples, bool) or samples < 1):
        raise InputError(f"--samples must be a whole number >= 1, got {samples!r}")
    tf = parse_tf(timeframe)
    lo, hi = parse_date(start, "--from date"), parse_date(end, "--to date")
    if lo > hi:
        raise InputError(f"--from {lo} is after --to {hi}")
    cls = load_strategy(strategy)
    wf = parse_walk_forward(walk) if isinstance(walk, str) else walk
    folds = walk_forward(wf, lo, hi, engine.calendar) if wf is not None else []
    grid_size, combos, skipped = combinations(cls, pairs, samples, seed)
    if not combos:
        raise InputError(
            f"the strategy refuses all {len(skipped)} combinations ({skipped[0]['reason'] if skipped else 'none'}); "
            "change the --param values"
        )

    tasks: list[Task] = []
    for i, combo in enumerate(combos):
        for sym in symbols:
            if wf is None:
                tasks.append(Task(i, combo, sym, lo, hi))
            else:
                for k, f in enumerate(folds):
                    tasks.append(Task(i, combo, sym, f.train_start, f.train_end, k, TRAIN))
                    tasks.append(Task(i, combo, sym, f.test_start, f.test_end, k, TEST))
    settings = engine.settings
    if settings.now is None:  # every worker must see the same clock
        settings = settings.with_overrides(now=engine.now())
    kwargs = dict(
        timeframe=tf.name,
        costs=costs,
        segment=segment,
        cash=cash,
        slippage_ticks=slippage_ticks,
        allow_gaps=allow_gaps,
        square_off=square_off,
    )
    rows = run_tasks(settings, strategy, tasks, kwargs, workers)
    _log_tracebacks(rows)
    _raise_if_all_failed(rows)

    from .metrics import basis_for

    per_year = basis_for(engine.calendar, tf, lo, hi).sessions_per_year
    key = sort_key(sort_by)
    result = SweepResult(
        strategy=cls.label(),
        symbols=list(symbols),
        timeframe=tf.name,
        start=lo,
        end=hi,
        sort_by=sort_by,
        param_names=list(cls.parameters()),
        grid_size=grid_size,
        combinations=combos,
        skipped=skipped,
        rows=[],
        stats={},
        walk=wf,
        folds=folds,
        samples=samples,
        seed=seed,
        cash=cash,
    )
    ok = [r for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    for sym in symbols:
        mine = [r for r in ok if r["symbol"] == sym]
        if wf is None:
            series = {r["index"]: (r["days"], r["returns"]) for r in mine}
            ranked = sorted(mine, key=key)
            best = ranked[0]["index"] if ranked else -1
        else:
            series, best = _walk_forward(result, mine, sym, key, cash, per_year)
        stats = overfitting(series, best)
        stats["best"] = combos[best] if best >= 0 else None
        result.stats[sym] = stats
    result.rows = sorted(ok, key=lambda r: (r.get("window") != TEST if wf else False, *key(r))) + failed
    if wf is not None:
        result.rows = sorted(ok, key=lambda r: (r["fold"], r["window"] != TRAIN, r["symbol"], *key(r))) + failed
    return result


def _walk_forward(
    result: SweepResult,
    rows: list[dict[str, Any]],
    sym: str,
    key: Callable[[Mapping[str, Any]], Any],
    cash: float,
    per_year: float,
) -> tuple[dict[int, tuple[list[str], list[float]]], int]:
    """Choose per fold, stitch the chosen test rows; the per-combination test series (for PBO)."""
    oos_days: list[str] = []
    oos_rets: list[float] = []
    is_days: list[str] = []
    is_rets: list[float] = []
    series: dict[int, tuple[list[str], list[float]]] = {}
    trades = 0
    for k, fold in enumerate(result.folds):
        train = sorted((r for r in rows if r["fold"] == k and r["window"] == TRAIN), key=key)
        test = {r["index"]: r for r in rows if r["fold"] == k and r["window"] == TEST}
        for idx, r in sorted(test.items()):
            days, rets = series.setdefault(idx, ([], []))
            days.extend(r["days"])
            rets.extend(r["returns"])
        if not train:
            continue
        pick = train[0]
        out = test.get(pick["index"])
        is_days.extend(pick["days"])
        is_rets.extend(pick["returns"])
        entry: dict[str, Any] = {
            "fold": k,
            "symbol": sym,
            "params": pick["params"],
            "train": [fold.train_start.isoformat(), fold.train_end.isoformat()],
            "test": [fold.test_start.isoformat(), fold.test_end.isoformat()],
            "in_sample": {
                m: pick["metrics"].get(m) for m in (result.sort_by, "net_pnl", "return_pct", "sharpe", "trades")
            },
            "out_of_sample": None
            if out is None
            else {m: out["metrics"].get(m) for m in (result.sort_by, "net_pnl", "return_pct", "sharpe", "trades")},
        }
        result.chosen.append(entry)
        if out is not None:
            oos_days.extend(out["days"])
            oos_rets.extend(out["returns"])
            trades += int(out["metrics"].get("trades") or 0)
    oos = curve_metrics(oos_days, oos_rets, cash, per_year)
    oos["trades"] = trades
    result.oos[sym] = oos
    ins = curve_metrics(is_days, is_rets, cash, per_year)
    ins.pop("curve")
    result.insample[sym] = ins
    # the best fixed combination over the tiled test windows, for DSR
    full = {idx: curve_metrics(d, r, cash, per_year) for idx, (d, r) in series.items()}
    ranked = sorted(
        full, key=lambda i: ((full[i].get(result.sort_by) is None), -(full[i].get(result.sort_by) or 0.0), i)
    )
    best = ranked[0] if ranked else -1
    if result.sort_by not in full.get(best, {}):  # a metric the curve does not have: rank by its Sharpe
        ranked = sorted(full, key=lambda i: ((full[i]["sharpe"] is None), -(full[i]["sharpe"] or 0.0), i))
        best = ranked[0] if ranked else -1
    return series, best


def _log_tracebacks(rows: Iterable[dict[str, Any]]) -> None:
    import logging

    for row in rows:
        text = row.pop("_traceback", None)
        if text:
            combo = " ".join(f"{k}={v}" for k, v in row["params"].items())
            logging.getLogger("mde.strategy").debug("the strategy's traceback (%s):\n%s", combo, text.rstrip())


def _raise_if_all_failed(rows: Sequence[dict[str, Any]]) -> None:
    """A replay failed for a reason that is not the strategy's (no candles of a symbol, a gap
    in the cache): the sweep is that error, with its advice (it is the same for every
    combination of that symbol; a sweep with a symbol silently missing would mislead)."""
    for row in rows:
        if "error" in row and row.get("exit_code") != StrategyError.exit_code:
            raise _error_of(row)


def _error_of(row: Mapping[str, Any]) -> MdeError:
    from . import errors

    cls = getattr(errors, str(row.get("_kind")), None)
    if isinstance(cls, type) and issubclass(cls, MdeError):
        return cls(row["error"])
    return MdeError(row["error"])


def sweep_failure(result: SweepResult) -> StrategyError | None:
    """The error a sweep ends with when the strategy raised in some of its rows."""
    raised = [r for r in result.rows if r.get("exit_code") == StrategyError.exit_code]
    if not raised:
        return None
    first = raised[0]
    combo = " ".join(f"{k}={v}" for k, v in first["params"].items())
    message = first["error"].replace("(run with -v for the traceback)", "").rstrip()
    return StrategyError(
        f"{message} with {combo} on {first['symbol']} ({len(raised)} of {len(result.rows)} replays "
        "failed; run with -v for the tracebacks)"
    )
