"""Strategies and the runner that drives them, the same code for `mde replay` and `mde paper`.

A strategy subclasses `Strategy`, declares its parameters as annotated class attributes
with defaults, and reacts to closed candles:

    class MyStrategy(Strategy):
        fast: int = 10
        def on_candle(self, ctx, candle):
            if ctx.position() == 0 and candle.close > max(ctx.closes(n=20)[:-1]):
                ctx.buy(1)

Through `ctx` it reads windows of any symbol and timeframe, causal indicators computed once
with polars (`ctx.indicator`), its position, cash and equity, and places orders. It never
sees a candle before that candle's close: every read is bounded by `ctx.now`, the close
time of the candle being processed, under the same
resampling rule as `MarketDataEngine.get_window`. Nothing in a strategy knows whether a
backtest or a paper session runs it; the fills follow broker.FILL_MODEL in both.
"""

from __future__ import annotations

import gc
from array import array
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, get_type_hints

import polars as pl

from .broker import Order, SimBroker
from .clock import IST_OFFSET_MIN, US_PER_MIN, as_us, ist_day, us_to_datetime
from .columns import CODES, grow, view
from .errors import InputError, MdeError, StrategyError
from .timeframes import Timeframe, parse

log = logging.getLogger("mde.strategy")

BUILTIN_STRATEGIES = {
    "sma_cross": "mde.strategies:SmaCross",
    "orb": "mde.strategies:OpeningRangeBreakout",
}
_PARAM_TYPES = (int, float, bool, str)
PREFIX_CHECK = 4096  # candles of the prefixes an indicator is checked on (look-ahead)


# -- strategies ------------------------------------------------------------------------
class Strategy:
    """Base class. Parameters are the annotated class attributes of a subclass."""

    name: ClassVar[str] = ""
    intraday: ClassVar[bool] = False  # squared off each session (see `square_off`)
    square_off: ClassVar[str] = "15:20"

    def __init__(self, **params: Any) -> None:
        spec = self.parameters()
        unknown = sorted(set(params) - set(spec))
        if unknown:
            takes = ", ".join(spec) or "no parameters"
            raise InputError(f"{self.label()} has no parameter {', '.join(unknown)}; it takes {takes}")
        for key, (kind, default) in spec.items():
            setattr(self, key, coerce_param(key, params[key], kind) if key in params else default)
        self.validate()

    @classmethod
    def label(cls) -> str:
        return cls.name or cls.__name__

    @classmethod
    def parameters(cls) -> dict[str, tuple[type, Any]]:
        """name -> (type, default), in declaration order."""
        out: dict[str, tuple[type, Any]] = {}
        hints = get_type_hints(cls)
        for klass in reversed(cls.__mro__):
            if klass in (Strategy, object):
                continue
            for key in klass.__dict__.get("__annotations__", {}):
                kind = hints.get(key)
                if key.startswith("_") or kind not in _PARAM_TYPES:
                    continue
                out[key] = (kind, getattr(cls, key, None))
        return out

    @property
    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.parameters()}

    def validate(self) -> None:
        """Raise InputError for a parameter combination that makes no sense."""

    def on_start(self, ctx: Context) -> None:
        """Called once before the first candle; windows already hold the warm-up history."""

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        """Called at the close of every candle of every symbol the strategy runs on (only where
        its indicator says, after `ctx.wake_on`)."""

    def on_stop(self, ctx: Context) -> None:
        """Called once after the last candle."""


def coerce_param(key: str, value: Any, kind: type) -> Any:
    """Convert a parameter (often text from the command line) to its declared type."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise InputError(f"parameter {key}={value!r} is not {kind.__name__ if kind is not bool else 'true/false'}") from None


def parse_params(pairs: Sequence[str]) -> dict[str, list[str]]:
    """`["fast=5,10", "slow=30"]` -> {"fast": ["5", "10"], "slow": ["30"]} (lists make a sweep)."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {pair!r} is not NAME=VALUE (or NAME=V1,V2 for a sweep)")
        values = [v.strip() for v in value.split(",")]
        if any(v == "" for v in values):
            raise InputError(f"--param {pair!r} has an empty value")
        out[key] = values
    return out


def strategy_error(exc: BaseException, cls: type[Strategy], when: str) -> StrategyError:
    """`strategy NAME raised TYPE: message at file.py:LINE <when> (run with -v for the traceback)`:
    the line is the innermost one of the strategy's source files (its class and its bases) in
    the traceback. The full traceback is logged at debug level (-v) and kept as `.traceback`."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    files = {getattr(sys.modules.get(k.__module__), "__file__", None) for k in cls.__mro__ if k not in (Strategy, object)}
    at = next(((f.f_code.co_filename, line) for f, line in reversed(frames) if f.f_code.co_filename in files), None)
    if at is None:  # not in the strategy's files (a helper it called): the outermost frame outside this module
        outside = [(f.f_code.co_filename, line) for f, line in frames if f.f_code.co_filename != __file__]
        at = outside[0] if outside else ("?", 0)
    rel = os.path.relpath(at[0]) if os.path.isabs(at[0]) else at[0]
    path = rel if not rel.startswith("..") else at[0]
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    err = StrategyError(f"strategy {cls.label()} raised {what} at {path}:{at[1]} {when} (run with -v for the traceback)")
    err.traceback = "".join(traceback.format_exception(exc))
    log.debug("the strategy's traceback:\n%s", err.traceback.rstrip())
    return err


def build(cls: type[Strategy], params: dict[str, Any]) -> Strategy:
    """`cls(**params)`, with an exception of the strategy's own code (its validate(), its
    __init__) turned into a one-line StrategyError."""
    try:
        return cls(**params)
    except MdeError:
        raise
    except Exception as exc:
        raise strategy_error(exc, cls, "when created") from exc


def load_strategy(spec: str) -> type[Strategy]:
    """A built-in name (`sma_cross`, `orb`), `path/to/file.py:ClassName` or `package.module:ClassName`."""
    target = BUILTIN_STRATEGIES.get(spec, spec)
    module_name, sep, class_name = target.rpartition(":")
    if not sep or not module_name or not class_name:
        raise InputError(f"unknown strategy {spec!r}; use {', '.join(BUILTIN_STRATEGIES)} or path/to/file.py:ClassName")
    try:
        if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise InputError(f"strategy file {path} does not exist")
            mod_id = f"mde_user_strategy_{abs(hash(str(path.resolve())))}"
            loader_spec = importlib.util.spec_from_file_location(mod_id, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_id] = module  # dataclasses and pickling (sweeps) need it registered
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except MdeError:
        raise
    except Exception as exc:  # the user's file failed to import: say where, keep the cause
        raise InputError(f"cannot load strategy {spec!r}: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise InputError(f"{module_name} has no Strategy subclass named {class_name!r}")
    return cls


def describe(spec: str) -> dict[str, Any]:
    """Name, one-line summary and parameters (type, default) of a strategy, for `mde strategies`."""
    cls = load_strategy(spec)
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "strategy": spec,
        "summary": doc[0] if doc else "",
        "intraday": cls.intraday,
        "params": {k: {"type": t.__name__, "default": d} for k, (t, d) in cls.parameters().items()},
    }


# -- what a strategy sees --------------------------------------------------------------
class Candle(NamedTuple):
    """A closed candle. Times are epoch microseconds; `ts`/`closes_at` build datetimes on demand
    (a tuple and no datetime per candle keeps a million-candle replay fast)."""

    symbol: str
    timeframe: str
    ts_us: int
    open: float
    high: float
    low: float
    close: float
    volume: int | None
    close_us: int
    index: int  # position in the series, warm-up history included

    @property
    def ts(self) -> datetime:
        return us_to_datetime(self.ts_us)

    @property
    def closes_at(self) -> datetime:
        return us_to_datetime(self.close_us)

    @property
    def minute(self) -> int:
        """Minutes after midnight IST of the candle's start (09:15 -> 555)."""
        return (self.ts_us // US_PER_MIN + IST_OFFSET_MIN) % 1440

    @property
    def day(self) -> date:
        return self.ts.date()

    def __repr__(self) -> str:
        return (f"Candle({self.symbol} {self.timeframe} {self.ts:%Y-%m-%d %H:%M} "
                f"o={self.open} h={self.high} l={self.low} c={self.close} v={self.volume})")


_candle_of = partial(tuple.__new__, Candle)  # a Candle from a tuple of its fields, in C


class SeriesData:
    """One series held in memory for a run: a frame for windows, plain lists for the hot loop."""

    def __init__(self, symbol: str, timeframe: Timeframe, frame: pl.DataFrame, built_from: Timeframe | None = None) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.built_from = built_from  # the smaller timeframe the candles were resampled from; None: the source's own
        frame = frame.rechunk()  # one buffer per column: the loop's columns are views of the frame's own memory
        self.frame = frame.drop("closes_at") if "closes_at" in frame.columns else frame
        # 8 bytes a value and no copy (a million candles as Python objects would take ~40 MB a
        # column); iterating them is as fast as a list. `extend` turns them into typed arrays.
        self.ts_us: Sequence[int] = view("q", frame["ts"])
        self.close_us: Sequence[int] = view("q", frame["closes_at"])
        self.open: Sequence[float] = view("d", frame["open"])
        self.high: Sequence[float] = view("d", frame["high"])
        self.low: Sequence[float] = view("d", frame["low"])
        self.close: Sequence[float] = view("d", frame["close"])
        volume = frame["volume"]
        self.volume: Sequence[int | None] = view("q", volume) if not volume.null_count() else volume.to_list()

    def __len__(self) -> int:
        return len(self.ts_us)

    def visible(self, now_us: int) -> int:
        """How many candles have closed by `now_us`."""
        return bisect_right(self.close_us, now_us)

    def extend(self, frame: pl.DataFrame) -> None:
        """Append candles newer than the last one (with `closes_at`): a live session adds the
        candles that closed since its last tick instead of re-reading the whole series."""
        if frame.is_empty():
            return
        self.frame = pl.concat([self.frame, frame.drop("closes_at")], how="vertical_relaxed")
        for name in ("ts_us", "close_us", "open", "high", "low", "close", "volume"):
            column = getattr(self, name)
            if isinstance(column, memoryview):  # a view of the frame read at start: copied once, to grow
                setattr(self, name, grow(column))
        self.ts_us.extend(frame["ts"].dt.epoch("us").to_list())
        self.close_us.extend(frame["closes_at"].dt.epoch("us").to_list())
        for name in ("open", "high", "low", "close"):
            getattr(self, name).extend(frame[name].cast(pl.Float64).to_list())
        volume = frame["volume"].to_list()
        if isinstance(self.volume, array) and None in volume:
            self.volume = list(self.volume)
        self.volume.extend(volume)  # type: ignore[attr-defined]

    def candle(self, i: int) -> Candle:
        return _candle_of((self.symbol, self.timeframe.name, self.ts_us[i], self.open[i], self.high[i], self.low[i],
                           self.close[i], self.volume[i], self.close_us[i], i))


class Indicator:
    """Values of a causal indicator, one per candle of a series, read only up to now.

    Computed over the whole series at once (polars), checked for look-ahead on prefixes, and
    computed again when a live session adds candles (the values already read must not change).
    """

    __slots__ = ("name", "_runner", "_symbol", "_timeframe", "_compute", "_data", "_values", "_offset", "_all", "_marks")

    def __init__(self, runner: StrategyRunner, symbol: str, timeframe: str | None,
                 compute: Callable[[pl.DataFrame], pl.Series], name: str) -> None:
        self.name = name or "indicator"
        self._runner = runner
        self._symbol = symbol
        self._timeframe = timeframe
        self._compute = compute
        self._data: SeriesData | None = None
        self._values: Sequence[Any] = ()
        self._offset = 0  # leading nulls (warm-up) are not stored
        self._all = pl.Series()  # every value, for the check when the series grows
        self._marks: dict[bool, Sequence[int]] = {}
        self._refresh()

    @property
    def value(self) -> Any:
        """The value at the latest candle closed by now (None during the warm-up)."""
        runner = self._runner
        if runner.current is self._data:  # the candle being processed: no search
            j = runner.candle[9] - self._offset
        else:
            j = self._visible() - 1 - self._offset
        if j < 0:
            return None
        try:
            return self._values[j]
        except IndexError:  # candles were added (a live session): compute again
            self._refresh()
            return self.value

    def last(self, n: int) -> list[Any]:
        """The values of the last `n` candles closed by now, oldest first (None in the warm-up)."""
        k = self._visible()
        if k > self._all.len():
            self._refresh()
        lo = max(0, k - _count(n))
        first, end = max(lo, self._offset) - self._offset, k - self._offset  # in the stored values
        return [None] * max(0, min(k, self._offset) - lo) + (list(self._values[first:end]) if end > first else [])

    def _visible(self) -> int:
        runner = self._runner
        data = runner.series(self._symbol, self._timeframe)
        if data is not self._data:
            self._refresh()
        return data.visible(runner.now_us)

    def _refresh(self) -> None:
        data = self._runner.series(self._symbol, self._timeframe)
        frame = data.frame
        values = self._evaluate(frame)
        n = frame.height
        if self._data is data and self._all.len():  # more candles than last time: the old ones' values must stay
            if not values.head(self._all.len()).equals(self._all, check_names=False, null_equal=True):
                raise self._looks_ahead()
        else:  # a prefix must give the values of the whole: two short ones catch the usual leaks cheaply
            for k in sorted({min(n - 1, PREFIX_CHECK), min(n - 1, PREFIX_CHECK) // 2} - {0}):
                if not values.head(k).equals(self._evaluate(frame.head(k)), check_names=False, null_equal=True):
                    raise self._looks_ahead()
        self._offset = int(values.is_not_null().arg_max() or 0) if values.null_count() < n else n
        rest = values.slice(self._offset)
        code = CODES.get(rest.dtype)
        self._values = view(code, rest) if code is not None and not rest.null_count() else rest.to_list()
        self._data, self._all, self._marks = data, values, {}

    def marks(self, changes: bool = False) -> Sequence[int]:
        """Candle indices (of the whole series) where the value is true (not null, not zero), or,
        with `changes`, where it differs from the previous candle's (null included)."""
        if len(self._data or ()) > self._all.len():
            self._refresh()
        got = self._marks.get(changes)
        if got is None:
            values = self._all
            hit = values.ne_missing(values.shift(1)) if changes else values.fill_null(0).cast(pl.Boolean)
            got = self._marks[changes] = view("q", hit.arg_true().cast(pl.Int64))
        return got

    def _evaluate(self, frame: pl.DataFrame) -> pl.Series:
        try:
            out = self._compute(frame)
            if isinstance(out, pl.Expr):
                out = frame.select(out).to_series()
        except MdeError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"indicator {self.name} failed: {type(exc).__name__}: {first}") from exc
        if not isinstance(out, pl.Series) or out.len() != frame.height:
            raise InputError(f"indicator {self.name} must return a polars Series with one value per candle "
                             f"({frame.height}), not {type(out).__name__}")
        return out

    def _looks_ahead(self) -> InputError:
        return InputError(f"indicator {self.name} looks ahead: its values for earlier candles change when later "
                          "candles are added; compute each value from its candle and earlier ones only")


class PerSymbolIndicator:
    """`ctx.indicator(fn)` without `symbol=` in a run of several symbols: one `Indicator` per
    symbol of the run, read for the symbol of the candle being processed (`ctx.symbol`, the
    symbol `ctx.closes()` reads). `ind["BANKNIFTY"]` is the one of a given symbol."""

    __slots__ = ("name", "by_symbol", "_ctx", "_timeframe")

    def __init__(self, ctx: Context, by_symbol: dict[str, Indicator], timeframe: str | None, name: str) -> None:
        self.name = name or "indicator"
        self.by_symbol = by_symbol
        self._ctx = ctx
        self._timeframe = timeframe

    @property
    def value(self) -> Any:
        """The value of the current symbol's indicator at the latest candle closed by now."""
        return self.by_symbol[self._ctx.symbol].value

    def last(self, n: int) -> list[Any]:
        """The current symbol's last `n` values (closed by now), oldest first."""
        return self.by_symbol[self._ctx.symbol].last(n)

    def __getitem__(self, symbol: str) -> Indicator:
        return self.by_symbol[symbol]


class Context:
    """A strategy's view of the market and its account at `now` (the close being processed)."""

    __slots__ = ("_runner", "_strategy", "_sid", "symbol")

    def __init__(self, runner: StrategyRunner, strategy: Strategy, sid: str) -> None:
        self._runner = runner
        self._strategy = strategy
        self._sid = sid
        self.symbol: str = runner.symbols[0] if runner.symbols else ""  # the candle's symbol in on_candle

    # -- time and universe
    @property
    def now(self) -> datetime:
        return us_to_datetime(self._runner.now_us)

    @property
    def now_us(self) -> int:
        return self._runner.now_us

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._runner.symbols

    @property
    def timeframe(self) -> str:
        return self._runner.timeframe.name

    # -- market data (never past `now`)
    def window(self, symbol: str | None = None, timeframe: str | None = None, n: int = 50) -> pl.DataFrame:
        """The last `n` candles closed by now, oldest first (same columns as get_window).
        `built_from(symbol, timeframe)` says whether they are the source's own candles."""
        series = self._runner.series(symbol or self.symbol, timeframe)
        k = series.visible(self._runner.now_us)
        n = _count(n)
        return series.frame.slice(max(0, k - n), min(n, k))

    def built_from(self, symbol: str | None = None, timeframe: str | None = None) -> str | None:
        """The smaller timeframe this series' candles were built from ("5m" for a 1d series
        resampled from cached 5m candles), or None when they are the source's own. A built
        daily close is the last trade; NSE's official close (the source's 1d candle) can differ."""
        built = self._runner.series(symbol or self.symbol, timeframe).built_from
        return None if built is None else built.name

    def closes(self, symbol: str | None = None, timeframe: str | None = None, n: int = 50) -> list[float]:
        """The last `n` closes (closed by now), oldest first: a cheap list for indicators."""
        series = self._runner.series(symbol or self.symbol, timeframe)
        k = series.visible(self._runner.now_us)
        return series.close[max(0, k - _count(n)):k].tolist()

    def last(self, symbol: str | None = None, timeframe: str | None = None) -> Candle | None:
        series = self._runner.series(symbol or self.symbol, timeframe)
        k = series.visible(self._runner.now_us)
        return series.candle(k - 1) if k else None

    def stale(self, symbol: str | None = None, timeframe: str | None = None) -> bool:
        """True when the series lacks a candle the calendar says has closed by now.

        Live, a failed cache update leaves a series behind while the others go on; a strategy
        that trades one symbol on another's signal can check this first.
        """
        from .calendar import nse

        series = self._runner.series(symbol or self.symbol, timeframe)
        due = nse().latest_close(self.now, series.timeframe)
        if due is None:
            return False
        k = series.visible(self._runner.now_us)
        return k == 0 or series.close_us[k - 1] < as_us(due)

    def indicator(self, compute: Callable[[pl.DataFrame], pl.Series], symbol: str | None = None,
                  timeframe: str | None = None, *, name: str = "") -> Indicator | PerSymbolIndicator:
        """A causal indicator of a series, computed once with polars instead of once per candle.

        `compute(frame)` gets the series' candles (ts, open, high, low, close, volume, oldest
        first) and returns one value per candle, each from that candle and earlier ones only
        (rolling means, cumulative sums, `shift(k)` with k > 0, ewm ...). Read it with `.value`
        (the latest candle closed by now) or `.last(n)`. mde checks the promise: the values for
        a prefix of the series must equal the whole computation's, else InputError.

        Without `symbol`, in a run of several symbols, it is one indicator per symbol whose
        `.value`/`.last(n)` follow the symbol of the candle being processed (as `ctx.closes()`);
        `symbol=` binds it to that symbol's series.
        """
        name = name or getattr(compute, "__name__", "")
        symbols = self._runner.symbols
        if symbol is None and len(symbols) > 1:
            return PerSymbolIndicator(self, {s: Indicator(self._runner, s, timeframe, compute, name) for s in symbols},
                                      timeframe, name)
        return Indicator(self._runner, symbol or self.symbol, timeframe, compute, name)

    def wake_on(self, indicator: Indicator | PerSymbolIndicator, *, changes: bool = False) -> None:
        """Call this strategy's on_candle only at the candles where `indicator` is true (not null,
        not zero), or with `changes=True` where its value changes. A promise that on_candle does
        nothing on the other candles, so skipping them changes nothing but the time: fills,
        stops, the equity curve and square-offs go on at every candle. Ignored (every candle is
        delivered) when several strategies share a run or for intraday strategies. A per-symbol
        indicator (made without `symbol=`) wakes each symbol on its own values."""
        if indicator._timeframe not in (None, self.timeframe) and parse(indicator._timeframe) != self._runner.timeframe:
            raise InputError(f"wake_on needs an indicator of the run's timeframe ({self.timeframe})")
        if isinstance(indicator, PerSymbolIndicator):
            for symbol, each in indicator.by_symbol.items():
                self._runner.wake[symbol] = (each, changes)
        else:
            self._runner.wake[indicator._symbol] = (indicator, changes)

    # -- account
    def position(self, symbol: str | None = None) -> int:
        pos = self._runner.broker.position(self._sid, symbol or self.symbol)
        return pos.qty if pos is not None else 0

    def avg_price(self, symbol: str | None = None) -> float:
        pos = self._runner.broker.position(self._sid, symbol or self.symbol)
        return pos.avg_price if pos is not None else 0.0

    @property
    def cash(self) -> float:
        return self._runner.broker.cash

    @property
    def equity(self) -> float:
        return self._runner.equity()

    def open_orders(self, symbol: str | None = None, *, every: bool = False) -> list[Order]:
        """This strategy's live orders of `symbol` (default: the current candle's, as position()
        does, so a multi-symbol run never couples its symbols by accident); `every=True`: all."""
        live = self._runner.broker.pending
        symbols = list(live) if every else [symbol or self.symbol]
        return [o for s in symbols for o in live.get(s, ()) if o.strategy == self._sid]

    # -- orders: they fill from the next candle of their symbol (broker.FILL_MODEL)
    def buy(self, qty: int | None = None, symbol: str | None = None, *, lots: int | None = None,
            limit: float | None = None, stop: float | None = None, stop_loss: float | None = None,
            target: float | None = None, tag: str = "") -> Order | None:
        """Buy `qty` units, or `lots` lots (qty = lots x the contract's lot size; 1 for a stock).
        Returns the order, or None when it was rejected (see `rejections`)."""
        sym = symbol or self.symbol
        return self._runner.place(self._sid, sym, 1, self._runner.quantity(sym, qty, lots), limit, stop, stop_loss,
                                  target, tag)

    def sell(self, qty: int | None = None, symbol: str | None = None, *, lots: int | None = None,
             limit: float | None = None, stop: float | None = None, stop_loss: float | None = None,
             target: float | None = None, tag: str = "") -> Order | None:
        """Sell `qty` units, or `lots` lots (see `buy`)."""
        sym = symbol or self.symbol
        return self._runner.place(self._sid, sym, -1, self._runner.quantity(sym, qty, lots), limit, stop, stop_loss,
                                  target, tag)

    def lot_size(self, symbol: str | None = None) -> int:
        """The lot size of a symbol's contract (1 for a stock or an index traded as cash)."""
        return self._runner.broker.contract(symbol or self.symbol).lot_size

    def close(self, symbol: str | None = None, tag: str = "") -> Order | None:
        """Exit the whole position with a market order (and cancel its stop-loss/target)."""
        sym = symbol or self.symbol
        qty = self.position(sym)
        if qty == 0:
            return None
        self._runner.broker.cancel_where(sym, self._sid)
        return self._runner.place(self._sid, sym, -1 if qty > 0 else 1, abs(qty), None, None, None, None, tag, exit_=True)

    def cancel(self, order: Order) -> None:
        self._runner.broker.cancel(order)

    def cancel_all(self, symbol: str | None = None, *, every: bool = False) -> None:
        """Cancel this strategy's live orders of `symbol` (default: the current candle's); `every=True`: all."""
        for order in self.open_orders(symbol, every=every):
            self._runner.broker.cancel(order)

    def log(self, message: str) -> None:
        self._runner.note(self._sid, message)


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"window size must be a positive whole number, not {n!r}")
    return n


# -- the runner ------------------------------------------------------------------------
class Note(NamedTuple):
    """One line a strategy logged (`ctx.log`), or a rejection of one of its orders."""

    ts_us: int  # in on_candle the candle's start, else now
    strategy: str
    message: str
    symbol: str | None = None  # the candle's symbol in on_candle
    kind: str = "log"  # log (ctx.log) | reject (an order refused before the broker: paper journals it as such)

    def line(self) -> str:
        """`2024-06-14 10:15 sma_cross NIFTY: message` (no symbol outside on_candle)."""
        where = f" {self.symbol}" if self.symbol else ""
        return f"{us_to_datetime(self.ts_us):%Y-%m-%d %H:%M} {self.strategy}{where}: {self.message}"


@dataclass
class RunOutcome:
    """What a run produced, before metrics: the broker's books and one equity point per close."""

    broker: SimBroker
    equity_us: Sequence[int]
    equity: Sequence[float]
    exposed: int  # candles that closed with a position open
    events: int
    notes: list[Note]


def _minute(text: str) -> int:
    """Minutes after midnight of an `HH:MM` time of day; `12:99` or `-0:30` are refused, never
    carried into another hour (12:99 is not 13:39)."""
    hh, sep, mm = str(text).strip().partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and int(hh) < 24 and int(mm) < 60):
        raise InputError(f"square-off time {text!r} is not a time of day HH:MM (00:00 to 23:59)")
    return int(hh) * 60 + int(mm)


class StrategyRunner:
    """Drives strategies over the closed candles of one or many symbols, in close-time order.

    `market_data_engine` supplies the series (history included, for warm-up and for
    windows of other timeframes). Replay hands the runner every candle of a range; paper
    hands it new candles as they close. Both call `process_span()` for them, so both apply the
    same visibility rule and the same fills.
    """

    def __init__(
        self,
        strategies: Strategy | Iterable[Strategy],
        market_data_engine: Any = None,
        *,
        symbols: Sequence[str] = (),
        timeframe: str | Timeframe = "5m",
        broker: SimBroker | None = None,
        as_of: datetime | None = None,
        square_off: str | None = None,
    ) -> None:
        items = [strategies] if isinstance(strategies, Strategy) else list(strategies)
        if not items:
            raise InputError("no strategy to run")
        self.strategies = items
        self.engine = market_data_engine
        self.symbols = tuple(symbols)
        self.timeframe = parse(timeframe)
        self.broker = broker
        self.as_of = as_of  # newest instant any series is read up to (the run's end, or now)
        self._now_us = 0
        self.current: SeriesData | None = None  # the series whose candle is being processed ...
        self.candle: Candle | None = None  # ... and that candle (its close is now)
        self.wake: dict[str, tuple[Indicator, bool]] = {}  # symbol -> a lone strategy's wake-up indicator (Context.wake_on)
        self._series: dict[tuple[str, str], SeriesData] = {}
        self.notes: list[Note] = []
        self.on_note: Callable[[Note], None] | None = None  # each note as it is made (replay prints it), else logged
        ids = []
        for s in items:
            sid = s.label()
            while sid in ids:
                sid += "'"
            ids.append(sid)
        self.ids = ids
        self.contexts = [Context(self, s, sid) for s, sid in zip(items, ids)]
        if square_off is not None:
            _minute(square_off)  # a bad time is an error even when no strategy is intraday
        self._sq = [(_minute(square_off or s.square_off) if s.intraday else None) for s in items]
        self._intraday = any(x is not None for x in self._sq)
        if broker is not None:  # the broker margins an intraday strategy's stocks as MIS, and marks at closes
            broker.intraday = {sid for sid, sq in zip(ids, self._sq) if sq is not None}
            broker.mark = self._last_price
        self._handlers = [(s.on_candle, ctx) for s, ctx in zip(items, self.contexts)]
        self._blocked: dict[tuple[str, str], int] = {}  # (sid, symbol) -> IST day after square-off
        # paper's RiskEngine: (sid, symbol, side, qty, now_us) -> None, or why the order is refused
        self.risk_check: Callable[[str, str, int, int, int], str | None] | None = None
        self.equity_us = array("q")  # one point per processed candle: its close time ...
        self.equity_values = array("d")  # ... and cash + open positions at that close
        self.exposed_count = 0  # candles that closed with a position open
        self._last_close: dict[str, float] = {}
        self._last_close_us: dict[str, int] = {}  # when that close was (a candle's); live marks are now's
        # Replay and sample paper fill at the next candle's prices; live paper fills at the next
        # last traded price instead (`SimBroker.on_price`), so its candles fill nothing.
        self.fill_on_candles = True

    @property
    def now_us(self) -> int:
        """Now, in epoch microseconds: the close of the candle being processed, else the last
        instant set (the start of a run, a live session's tick)."""
        candle = self.candle
        return candle[8] if candle is not None else self._now_us

    @now_us.setter
    def now_us(self, value: int) -> None:
        self._now_us = value
        self.candle = None

    # -- data
    def add_series(self, data: SeriesData) -> None:
        self._series[(data.symbol, data.timeframe.name)] = data

    def series(self, symbol: str, timeframe: str | None = None) -> SeriesData:
        tf = self.timeframe if timeframe is None else parse(timeframe)
        key = (symbol, tf.name)
        data = self._series.get(key)
        if data is None:
            if self.engine is None:
                raise InputError(f"no {tf} data for {symbol}: this runner has no market_data_engine to read it from")
            frame = self.engine.history(symbol, tf, as_of=self.as_of)
            data = self._series[key] = SeriesData(symbol, tf, frame, self.engine.built_from(symbol, tf))
        return data

    def forget_other_series(self) -> None:
        """Drop the series read for windows of other timeframes: a live session's next window
        reads them again as of its new now."""
        for key in [k for k in self._series if k[1] != self.timeframe.name]:
            del self._series[key]

    def set_marks(self, prices: dict[str, float]) -> None:
        """Mark symbols at these prices (live: the last traded price) for equity and final exits."""
        self._last_close.update(prices)
        for sym in prices:
            self._last_close_us.pop(sym, None)

    def mark(self, symbol: str) -> float:
        return self._last_close.get(symbol, 0.0)

    def note(self, sid: str, message: str, kind: str = "log") -> None:
        candle = self.candle
        note = (Note(candle[2], sid, str(message), candle[0], kind) if candle is not None
                else Note(self.now_us, sid, str(message), None, kind))
        self.notes.append(note)
        if self.on_note is not None:
            self.on_note(note)
        else:
            log.info("%s", note.line())

    # -- orders
    def place(self, sid: str, symbol: str, side: int, qty: int, limit: float | None, stop: float | None,
              stop_loss: float | None, target: float | None, tag: str, exit_: bool = False) -> Order | None:
        assert self.broker is not None
        if symbol not in self.symbols:
            raise InputError(f"cannot trade {symbol}: this run trades {', '.join(self.symbols)}")
        order = self.broker.place(sid, symbol, side, qty, self.now_us, limit=limit, stop=stop, stop_loss=stop_loss,
                                  target=target, tag=tag)
        day = self._blocked.get((sid, symbol))
        if day is not None and day == ist_day(self.now_us) and not exit_:
            self.broker.reject(order, "after the intraday square-off time", "after square-off")
            self.note(sid, f"order {order.id} rejected: after the intraday square-off time", "reject")
            return None
        bad = self.broker.vet(order, self._last_price(symbol))
        if bad is not None:
            self.broker.reject(order, bad[1], bad[0])
            self.note(sid, f"order {order.id} rejected: {bad[1]}")
            return None
        if self.risk_check is not None:
            why = self.risk_check(sid, symbol, side, qty, self.now_us)
            if why is not None:
                self.broker.reject(order, why, "risk limit")
                self.note(sid, f"order {order.id} rejected: {why}", "reject")
                return None
        return order

    def quantity(self, symbol: str, qty: int | None, lots: int | None) -> int:
        """An order's quantity from `qty` or `lots` (one of them)."""
        if lots is None:
            if qty is None:
                raise InputError("give an order's quantity: buy(qty) or buy(lots=N)")
            return qty
        if qty is not None:
            raise InputError(f"give qty or lots, not both (qty={qty!r}, lots={lots!r})")
        if isinstance(lots, bool) or not isinstance(lots, int) or lots <= 0:
            raise InputError(f"lots must be a positive whole number, not {lots!r}")
        assert self.broker is not None
        return lots * self.broker.contract(symbol).lot_size

    def _last_price(self, symbol: str) -> float | None:
        """The latest close of `symbol` visible now: a market entry's reference for its bracket."""
        candle = self.candle
        if candle is not None and candle[0] == symbol:
            return candle[6]
        data = self._series.get((symbol, self.timeframe.name))
        if data is None:
            return self._last_close.get(symbol)
        k = data.visible(self.now_us)
        return data.close[k - 1] if k else self._last_close.get(symbol)

    def flatten_all(self, reason: str) -> None:
        """Exit every open position with a market order (it fills at the next open), past any risk check."""
        assert self.broker is not None
        for (sid, sym), pos in list(self.broker.positions.items()):
            if pos.qty:
                self.broker.cancel_where(sym, sid)
                self.broker.place(sid, sym, -1 if pos.qty > 0 else 1, abs(pos.qty), self.now_us, reason=reason)

    def equity(self) -> float:
        """Cash plus open positions marked at their latest close visible now."""
        assert self.broker is not None
        total = self.broker.cash
        for sym, qty in self.broker.net.items():
            data = self.series(sym)
            k = data.visible(self.now_us)
            total += qty * (data.close[k - 1] if k else self._last_close.get(sym, 0.0))
        return total

    # -- running
    def start(self, now_us: int) -> None:
        self.now_us = now_us
        self._call_hooks("on_start")

    def _call_hooks(self, hook: str) -> None:
        """Every strategy's `hook` (on_start, on_stop); one that raises becomes a StrategyError."""
        try:
            for strategy, ctx in zip(self.strategies, self.contexts):
                getattr(strategy, hook)(ctx)
        except Exception as exc:
            err = self.strategy_error(exc, hook)
            if err is None:
                raise
            raise err from exc

    def process_span(self, data: SeriesData, start: int, end: int) -> None:
        """Candles start..end-1 of one series, in order; the loop behind both replay and paper.

        Per candle: square-off (intraday), fills at this candle's prices for orders placed
        before it, then each strategy's on_candle at its close. It runs a million times for a
        year of 1m, so the candles are built in C (map over zip) and the loop only branches;
        the equity curve is computed afterwards from the points where a fill changed cash or
        positions, which can happen only in the two broker calls before the strategy's.
        """
        broker = self.broker
        assert broker is not None
        if end <= start:
            return
        sym = data.symbol
        live = broker.pending.setdefault(sym, [])  # the broker keeps this list for the symbol: a cheap test
        booked = broker.fills
        seen = len(booked)
        steps = [(start, broker.cash, tuple(broker.net.items()))]  # (first candle, cash, net) from each fill on
        handlers = self._handlers
        only_fn, only_ctx = handlers[0] if len(handlers) == 1 else (None, None)
        intraday = self._intraday
        for _, ctx in handlers:
            ctx.symbol = sym
        self.current = data
        wake = self.wake.get(sym) if only_fn is not None and not intraday else None
        try:  # costs nothing per candle (zero-cost exceptions)
            if wake is not None:
                seen = self._sparse(data, start, end, wake[0].marks(wake[1]), live, steps, seen, only_fn, only_ctx)
            else:
                seen = self._dense(data, start, end, live, steps, seen, handlers, only_fn, only_ctx)
        except Exception as exc:
            err = self.strategy_error(exc, "on_candle")
            if err is None:
                raise
            raise err from exc
        self.current = None
        self.now_us = data.close_us[end - 1]  # the last close stays now after the span
        if len(booked) != seen:
            raise MdeError(f"a fill was booked inside on_candle at {us_to_datetime(self.now_us):%Y-%m-%d %H:%M}; orders "
                           "placed by a strategy fill from the next candle (broker.FILL_MODEL)")
        self._equity(data, start, end, steps)
        self._last_close[sym] = data.close[end - 1]
        self._last_close_us[sym] = data.close_us[end - 1]

    def _dense(self, data: SeriesData, start: int, end: int, live: list[Order], steps: list[tuple[int, float, tuple]],
               seen: int, handlers: list[tuple[Callable[[Context, Candle], None], Context]], only_fn: Any, only_ctx: Any) -> int:
        """Every candle to every strategy. Returns the number of fills booked so far."""
        broker = self.broker
        assert broker is not None
        booked = broker.fills
        sym = data.symbol
        intraday = self._intraday
        fills = self.fill_on_candles
        square_off = self._square_off
        n = end - start
        whole = start == 0 and end == len(data)
        cols = [c if whole else c[start:end] for c in (data.ts_us, data.open, data.high, data.low, data.close,
                                                        data.volume, data.close_us)]
        candles = map(_candle_of, zip(repeat(sym, n), repeat(data.timeframe.name, n), *cols, range(start, end)))
        for candle in candles:
            if intraday:
                square_off(data, candle[9])
                if len(booked) != seen:
                    seen = self._step(candle[9], steps)
            if fills and live:
                broker.on_candle(sym, candle[2], candle[3], candle[4], candle[5])
                if len(booked) != seen:
                    seen = self._step(candle[9], steps)
            self.candle = candle  # now is its close (now_us)
            if only_fn is not None:
                only_fn(only_ctx, candle)
            else:
                for on_candle, ctx in handlers:
                    on_candle(ctx, candle)
        return seen

    def _sparse(self, data: SeriesData, start: int, end: int, marks: Sequence[int], live: list[Order],
                steps: list[tuple[int, float, tuple]], seen: int, fn: Any, ctx: Any) -> int:
        """A lone strategy woken by an indicator (Context.wake_on): only its candles, and every
        candle while an order of the symbol is live, are visited. Returns the fills booked so far."""
        broker = self.broker
        assert broker is not None
        booked = broker.fills
        sym = data.symbol
        ts, o, h, lo = data.ts_us, data.open, data.high, data.low
        fills = self.fill_on_candles
        k, n_marks = bisect_left(marks, start), len(marks)
        i = start
        while i < end:
            busy = fills and live
            if not busy:  # nothing can fill: jump to the next candle the strategy wants
                if k >= n_marks or marks[k] >= end:
                    break
                i = marks[k]
            else:
                broker.on_candle(sym, ts[i], o[i], h[i], lo[i])
                if len(booked) != seen:
                    seen = self._step(i, steps)
            if k < n_marks and marks[k] == i:
                k += 1
                candle = self.candle = data.candle(i)
                fn(ctx, candle)
            i += 1
        return seen

    def strategy_error(self, exc: BaseException, where: str) -> StrategyError | None:
        """The one-line StrategyError for an exception a strategy's own code raised (None for
        mde's errors and for exceptions raised outside any strategy: those stay what they are).

        It names the strategy, the innermost line of the strategy's source files in the
        traceback, the candle being processed (in on_candle) and the exception; the full
        traceback is logged at debug level (shown with -v) and kept as `.traceback`.
        """
        if isinstance(exc, MdeError):
            return None
        frames = list(traceback.walk_tb(exc.__traceback__))
        strategy = next((f.f_locals.get("self") for f, _ in frames if isinstance(f.f_locals.get("self"), Strategy)), None)
        if strategy is None:
            return None
        candle = self.candle
        if where == "on_candle" and candle is not None:
            when = f"on {candle[0]} {candle[1]} candle {us_to_datetime(candle[2]).isoformat(' ', 'minutes')}"
        else:
            when = f"in {where} at {us_to_datetime(self.now_us).isoformat(' ', 'minutes')}"
        return strategy_error(exc, type(strategy), when)

    def _step(self, i: int, steps: list[tuple[int, float, tuple]]) -> int:
        """A fill was booked at candle i: cash and positions from there on. Returns the fills booked."""
        broker = self.broker
        assert broker is not None
        steps.append((i, broker.cash, tuple(broker.net.items())))
        return len(broker.fills)

    def _equity(self, data: SeriesData, start: int, end: int, steps: list[tuple[int, float, tuple]]) -> None:
        """One equity point per candle start..end-1: cash + open positions, this symbol marked at
        the candle's close and the others at their last close (set when their span ended).

        Cash and positions change only at `steps`, so each stretch between two of them is
        (cash + others) + qty * close over a slice of closes, and a flat stretch one repeated value.
        """
        sym, last, close, out = data.symbol, self._last_close, data.close, self.equity_values
        times = data.close_us[start:end]
        if isinstance(times, memoryview):
            self.equity_us.frombytes(times.cast("B"))  # extend() would go value by value
        else:
            self.equity_us.extend(times)
        for k, (first, cash, net) in enumerate(steps):
            upto = steps[k + 1][0] if k + 1 < len(steps) else end
            if upto == first:
                continue
            others, qty = 0.0, 0
            for s, q in net:
                if s == sym:
                    qty = q
                else:
                    others += q * last[s]
            base = cash + others
            if net:
                self.exposed_count += upto - first
            if qty:
                out.fromlist([base + qty * c for c in close[first:upto]])
            else:  # flat in this symbol: one value all along
                out.extend(array("d", [base]) * (upto - first))

    def _square_off(self, data: SeriesData, i: int) -> None:
        """Flatten intraday strategies at the open of the first candle not closed by their square-off time."""
        broker = self.broker
        assert broker is not None
        sym = data.symbol
        ts, close_us = data.ts_us[i], data.close_us[i]
        day = ist_day(ts)
        close_min = (close_us // US_PER_MIN + IST_OFFSET_MIN) % 1440
        if ist_day(close_us) != day:
            close_min = 1440
        for sid, sq in zip(self.ids, self._sq):
            if sq is None:
                continue
            pos = broker.position(sid, sym)
            holding = pos is not None and pos.qty != 0
            if close_min > sq:
                if self._blocked.get((sid, sym)) != day:
                    self._blocked[(sid, sym)] = day
                    broker.cancel_where(sym, sid)
                    if holding:
                        broker.flatten(sid, sym, data.open[i], ts, "square-off")
            elif holding and pos is not None and pos.opened_day != day:
                broker.flatten(sid, sym, data.open[i], ts, "square-off")  # missed yesterday's (data gap)

    def square_off_due(self, now_us: int) -> int:
        """Live: at the first tick at or after an intraday strategy's square-off time, cancel its
        orders and send market orders that flatten it (they fill at the next price). Later
        candles of that day see the square-off as done. Returns the orders sent."""
        broker = self.broker
        assert broker is not None
        day = ist_day(now_us)
        minute = (now_us // US_PER_MIN + IST_OFFSET_MIN) % 1440
        sent = 0
        for sid, sq in zip(self.ids, self._sq):
            if sq is None or minute < sq:
                continue
            for sym in self.symbols:
                if self._blocked.get((sid, sym)) == day:
                    continue
                self._blocked[(sid, sym)] = day
                broker.cancel_where(sym, sid)
                pos = broker.position(sid, sym)
                if pos is not None and pos.qty:
                    broker.place(sid, sym, -1 if pos.qty > 0 else 1, abs(pos.qty), now_us, reason="square-off")
                    sent += 1
        return sent

    def finish(self, reason: str = "end of replay") -> None:
        """Close what is still open at each symbol's last close, cancel pending orders, call on_stop."""
        broker = self.broker
        assert broker is not None
        self._call_hooks("on_stop")
        for (sid, sym), pos in list(broker.positions.items()):
            if pos.qty != 0 and sym in self._last_close:  # at the symbol's own last close, not another's
                broker.flatten(sid, sym, self._last_close[sym], self._last_close_us.get(sym, self.now_us), reason)
        for orders in list(broker.pending.values()):
            for order in list(orders):
                broker.cancel(order)
        if self.equity_values:
            self.equity_values[-1] = broker.cash  # flat now: equity is cash, charges of the last exits included

    def run(self, events: Iterable[tuple[SeriesData, int, int]], start_us: int) -> RunOutcome:
        """Drive the strategies over spans of candles (series, start, end) in time order, from `start_us`."""
        self.start(start_us)
        n = 0
        gc.freeze()  # the series and the events are long-lived: keep the collector from rescanning them
        try:
            for data, start, end in events:
                self.process_span(data, start, end)
                n += end - start
        finally:
            gc.unfreeze()
        self.finish()
        assert self.broker is not None
        return RunOutcome(self.broker, self.equity_us, self.equity_values, self.exposed_count, n, self.notes)


def merge_events(series: Sequence[SeriesData], starts: Sequence[int], ends: Sequence[int]) -> list[tuple[SeriesData, int, int]]:
    """Spans (series, start, end) that visit the candles of several series in close-time order
    (ties: the order of `series`). One series is one span."""
    if len(series) == 1:
        return [(series[0], starts[0], ends[0])]
    keyed = sorted((data.close_us[i], k, i) for k, data in enumerate(series) for i in range(starts[k], ends[k]))
    spans: list[tuple[SeriesData, int, int]] = []
    for _, k, i in keyed:
        if spans and spans[-1][0] is series[k] and spans[-1][2] == i:
            data, start, _ = spans[-1]
            spans[-1] = (data, start, i + 1)
        else:
            spans.append((series[k], i, i + 1))
    return spans

