"""What a strategy author reads: `Strategy`, the `Context` it is handed, `Candle`, `Indicator`, `Order`.

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
time of the candle being processed, under the same resampling rule as
`MarketDataEngine.get_window`. Nothing in a strategy knows whether a backtest or a paper
session runs it; the fills follow broker.FILL_MODEL in both.

This module imports nothing of the runner (`runner.py`) or of the loader (`loading.py`):
`Context` and `Indicator` ask whatever drives them for the few things in `ContextHost`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, Protocol, get_type_hints

import polars as pl

from ..broker import Order, SimBroker
from ..candles import Candle
from ..clock import as_us, us_to_datetime
from ..columns import CODES, view
from ..errors import InputError, MdeError
from ..timeframes import Timeframe, parse

__all__ = [
    "PREFIX_CHECK",
    "Candle",
    "Context",
    "ContextHost",
    "Indicator",
    "Note",
    "Order",
    "PerSymbolIndicator",
    "SeriesView",
    "Strategy",
    "coerce_param",
]

_PARAM_TYPES = (int, float, bool, str)
PREFIX_CHECK = 4096  # candles of the prefixes an indicator is checked on (look-ahead)


# -- strategies ------------------------------------------------------------------------
class Strategy:
    """Base class. Parameters are the annotated class attributes of a subclass."""

    name: ClassVar[str] = ""
    intraday: ClassVar[bool] = False  # squared off each session (see `square_off`)
    # HH:MM IST; not a ClassVar: an intraday strategy may declare it as a parameter (orb does)
    square_off: str = "15:20"

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
        raise InputError(
            f"parameter {key}={value!r} is not {kind.__name__ if kind is not bool else 'true/false'}"
        ) from None


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


# -- what a Context asks of whatever drives it (StrategyRunner) -------------------------
class SeriesView(Protocol):
    """One series of candles held for a run (`runner.SeriesData`), as `Context` reads it."""

    @property
    def symbol(self) -> str: ...
    @property
    def timeframe(self) -> Timeframe: ...
    @property
    def built_from(self) -> Timeframe | None: ...
    @property
    def frame(self) -> pl.DataFrame: ...
    @property
    def close(self) -> Sequence[float]: ...
    @property
    def close_us(self) -> Sequence[int]: ...
    def __len__(self) -> int: ...
    def visible(self, now_us: int) -> int:
        """How many candles have closed by `now_us`."""
        ...

    def candle(self, i: int) -> Candle: ...


class ContextHost(Protocol):
    """What `Context` and `Indicator` ask the runner: now, the series, the broker, and the order
    and log paths. `runner.StrategyRunner` is the one implementation; a test can drive a
    `Context` with anything of this shape."""

    @property
    def now_us(self) -> int: ...
    @property
    def symbols(self) -> tuple[str, ...]: ...
    @property
    def timeframe(self) -> Timeframe: ...
    @property
    def broker(self) -> SimBroker | None: ...
    @property
    def current(self) -> SeriesView | None:
        """The series whose candle is being processed (None between candles)."""
        ...

    @property
    def candle(self) -> Candle | None:
        """The candle being processed (its close is now), None between candles."""
        ...

    @property
    def wake(self) -> dict[str, tuple[Indicator, bool]]: ...
    def series(self, symbol: str, timeframe: str | None = None) -> SeriesView: ...
    def equity(self) -> float: ...
    def quantity(self, symbol: str, qty: int | None, lots: int | None) -> int: ...
    def place(
        self,
        sid: str,
        symbol: str,
        side: int,
        qty: int,
        limit: float | None,
        stop: float | None,
        stop_loss: float | None,
        target: float | None,
        tag: str,
        exit_: bool = False,
    ) -> Order | None: ...
    def note(self, sid: str, message: str, kind: str = "log") -> None: ...


def _broker(host: ContextHost) -> SimBroker:
    broker = host.broker
    if broker is None:
        raise InputError("this runner has no broker: positions, cash and orders need one (StrategyRunner(broker=...))")
    return broker


# -- indicators ------------------------------------------------------------------------
class Indicator:
    """Values of a causal indicator, one per candle of a series, read only up to now.

    Computed over the whole series at once (polars), checked for look-ahead on prefixes, and
    computed again when a live session adds candles (the values already read must not change).
    """

    __slots__ = (
        "name",
        "_runner",
        "_symbol",
        "_timeframe",
        "_compute",
        "_data",
        "_values",
        "_offset",
        "_all",
        "_marks",
    )

    def __init__(
        self,
        runner: ContextHost,
        symbol: str,
        timeframe: str | None,
        compute: Callable[[pl.DataFrame], pl.Series | pl.Expr],
        name: str,
    ) -> None:
        self.name = name or "indicator"
        self._runner = runner
        self._symbol = symbol
        self._timeframe = timeframe
        self._compute = compute
        self._data: SeriesView | None = None
        self._values: Sequence[Any] = ()
        self._offset = 0  # leading nulls (warm-up) are not stored
        self._all = pl.Series()  # every value, for the check when the series grows
        self._marks: dict[bool, Sequence[int]] = {}
        self._refresh()

    @property
    def value(self) -> Any:
        """The value at the latest candle closed by now (None during the warm-up)."""
        runner = self._runner
        candle = runner.candle
        if candle is not None and runner.current is self._data:  # the candle being processed: no search
            j = candle[9] - self._offset
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
            out: object = self._compute(frame)
            if isinstance(out, pl.Expr):
                out = frame.select(out).to_series()
        except MdeError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"indicator {self.name} failed: {type(exc).__name__}: {first}") from exc
        if not isinstance(out, pl.Series) or out.len() != frame.height:
            raise InputError(
                f"indicator {self.name} must return a polars Series with one value per candle "
                f"({frame.height}), not {type(out).__name__}"
            )
        return out

    def _looks_ahead(self) -> InputError:
        return InputError(
            f"indicator {self.name} looks ahead: its values for earlier candles change when later "
            "candles are added; compute each value from its candle and earlier ones only"
        )


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


# -- the context -----------------------------------------------------------------------
class Context:
    """A strategy's view of the market and its account at `now` (the close being processed).

    One per strategy of a run, made by the runner (`StrategyRunner`), which it asks for
    everything (`ContextHost`): a strategy never holds data of its own that could run ahead.
    """

    __slots__ = ("_runner", "_strategy", "_sid", "symbol")

    def __init__(self, runner: ContextHost, strategy: Strategy, sid: str) -> None:
        self._runner = runner
        self._strategy = strategy
        self._sid = sid
        self.symbol: str = runner.symbols[0] if runner.symbols else ""  # the candle's symbol in on_candle

    # -- time and universe
    @property
    def now(self) -> datetime:
        """The close of the candle being processed (IST datetime): nothing after it is visible.

        In on_start, the start of the run (windows then hold the warm-up history only); in
        on_stop, the last close."""
        return us_to_datetime(self._runner.now_us)

    @property
    def now_us(self) -> int:
        """`now` in microseconds since the epoch.

        Cheaper than `now` in a tight on_candle; compare it with `candle.close_us`."""
        return self._runner.now_us

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols of the run.

        Use it in on_start to set up state or indicators per symbol; on_candle runs for each."""
        return self._runner.symbols

    @property
    def timeframe(self) -> str:
        """The run's timeframe (`on_candle` runs at its closes).

        Windows and indicators read it when their `timeframe` is None."""
        return self._runner.timeframe.name

    # -- market data (never past `now`)
    def window(self, symbol: str | None = None, timeframe: str | None = None, n: int = 50) -> pl.DataFrame:
        """The last `n` candles closed by now, oldest first (same columns as get_window).

        Use it for a look at another symbol or a larger timeframe (a 15m window in a 5m run
        holds complete 15m buckets only). It builds a frame per call: for a value per candle,
        `indicator` is far cheaper. `built_from(symbol, timeframe)` says whether they are the
        source's own candles."""
        series = self._runner.series(symbol or self.symbol, timeframe)
        k = series.visible(self._runner.now_us)
        n = _count(n)
        return series.frame.slice(max(0, k - n), min(n, k))

    def built_from(self, symbol: str | None = None, timeframe: str | None = None) -> str | None:
        """The smaller timeframe this series' candles were built from ("5m" for a 1d series
        resampled from cached 5m candles), or None when they are the source's own.

        Check it when the difference matters: a built daily close is the last trade; NSE's
        official close (the source's 1d candle) can differ."""
        built = self._runner.series(symbol or self.symbol, timeframe).built_from
        return None if built is None else built.name

    def closes(self, symbol: str | None = None, timeframe: str | None = None, n: int = 50) -> list[float]:
        """The last `n` closes (closed by now), oldest first: a cheap list for indicators.

        Cheaper than `window` (no frame): for a hand-written rule over the recent closes."""
        series = self._runner.series(symbol or self.symbol, timeframe)
        k = series.visible(self._runner.now_us)
        return list(series.close[max(0, k - _count(n)) : k])

    def last(self, symbol: str | None = None, timeframe: str | None = None) -> Candle | None:
        """The latest candle closed by now (a `Candle`), or None.

        In on_candle, of the current symbol and timeframe it is the candle being processed; use
        it for another symbol's or a larger timeframe's latest complete candle."""
        series = self._runner.series(symbol or self.symbol, timeframe)
        k = series.visible(self._runner.now_us)
        return series.candle(k - 1) if k else None

    def stale(self, symbol: str | None = None, timeframe: str | None = None) -> bool:
        """True when the series lacks a candle the calendar says has closed by now.

        Live, a failed cache update leaves a series behind while the others go on; a strategy
        that trades one symbol on another's signal can check this first.
        """
        from ..calendar import nse

        series = self._runner.series(symbol or self.symbol, timeframe)
        due = nse().latest_close(self.now, series.timeframe)
        if due is None:
            return False
        k = series.visible(self._runner.now_us)
        return k == 0 or series.close_us[k - 1] < as_us(due)

    def indicator(
        self,
        compute: Callable[[pl.DataFrame], pl.Series | pl.Expr],
        symbol: str | None = None,
        timeframe: str | None = None,
        *,
        name: str = "",
    ) -> Indicator | PerSymbolIndicator:
        """A causal indicator of a series, computed once with polars instead of once per candle.

        Make it in on_start. `compute(frame)` gets the series' candles (ts, open, high, low,
        close, volume, oldest first) and returns one value per candle (a Series or an
        expression), each from that candle and earlier ones only (rolling means, cumulative
        sums, `shift(k)` with k > 0, ewm ...). Read it with `.value` (the latest candle closed
        by now) or `.last(n)`. mde checks the promise: the values for a prefix of the series
        must equal the whole computation's, else InputError.

        Without `symbol`, in a run of several symbols, it is one indicator per symbol whose
        `.value`/`.last(n)` follow the symbol of the candle being processed (as `ctx.closes()`);
        `symbol=` binds it to that symbol's series.
        """
        name = name or getattr(compute, "__name__", "")
        symbols = self._runner.symbols
        if symbol is None and len(symbols) > 1:
            return PerSymbolIndicator(
                self, {s: Indicator(self._runner, s, timeframe, compute, name) for s in symbols}, timeframe, name
            )
        return Indicator(self._runner, symbol or self.symbol, timeframe, compute, name)

    def wake_on(self, indicator: Indicator | PerSymbolIndicator, *, changes: bool = False) -> None:
        """Call this strategy's on_candle only at the candles where `indicator` is true (not null,
        not zero), or with `changes=True` where its value changes.

        A promise that on_candle does nothing on the other candles, so skipping them changes
        nothing but the time: fills, stops, the equity curve and square-offs go on at every
        candle. Ignored (every candle is delivered) when several strategies share a run or for
        intraday strategies. A per-symbol indicator (made without `symbol=`) wakes each symbol
        on its own values."""
        if indicator._timeframe not in (None, self.timeframe) and parse(indicator._timeframe) != self._runner.timeframe:
            raise InputError(f"wake_on needs an indicator of the run's timeframe ({self.timeframe})")
        if isinstance(indicator, PerSymbolIndicator):
            for symbol, each in indicator.by_symbol.items():
                self._runner.wake[symbol] = (each, changes)
        else:
            self._runner.wake[indicator._symbol] = (indicator, changes)

    # -- account
    def position(self, symbol: str | None = None) -> int:
        """The signed quantity held in `symbol` (default: the current candle's); 0 when flat.

        Check it before an entry: orders fill from the next candle, so a position changes only
        between two of this strategy's candles."""
        pos = _broker(self._runner).position(self._sid, symbol or self.symbol)
        return pos.qty if pos is not None else 0

    def avg_price(self, symbol: str | None = None) -> float:
        """The average entry price of that position (0.0 when flat).

        For exits relative to the entry (a trailing stop, a target in points)."""
        pos = _broker(self._runner).position(self._sid, symbol or self.symbol)
        return pos.avg_price if pos is not None else 0.0

    @property
    def cash(self) -> float:
        """The broker's cash now (starting cash, plus and minus fills and charges).

        Shared by the strategies of a run; size entries from it or from `equity`."""
        return _broker(self._runner).cash

    @property
    def equity(self) -> float:
        """Cash plus the open positions at their latest close.

        Marked at closes visible now, so it never uses a price from after `now`."""
        return self._runner.equity()

    def open_orders(self, symbol: str | None = None, *, every: bool = False) -> list[Order]:
        """This strategy's live orders of `symbol` (default: the current candle's, as position()
        does, so a multi-symbol run never couples its symbols by accident); `every=True`: all.

        Check it before placing another entry: an order placed on this candle is live until the
        next candle of its symbol."""
        live = _broker(self._runner).pending
        symbols = list(live) if every else [symbol or self.symbol]
        return [o for s in symbols for o in live.get(s, ()) if o.strategy == self._sid]

    # -- orders: they fill from the next candle of their symbol (broker.FILL_MODEL)
    def buy(
        self,
        qty: int | None = None,
        symbol: str | None = None,
        *,
        lots: int | None = None,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        target: float | None = None,
        tag: str = "",
    ) -> Order | None:
        """Buy `qty` units, or `lots` lots (qty = lots x the contract's lot size; 1 for a stock).

        A market order fills at the next candle's open; `limit`/`stop` make it a limit or stop
        entry, and `stop_loss`/`target` attach the exits of a bracket (broker.FILL_MODEL).
        Returns the order, or None when it was rejected (the reason is in the strategy's log)."""
        sym = symbol or self.symbol
        return self._runner.place(
            self._sid, sym, 1, self._runner.quantity(sym, qty, lots), limit, stop, stop_loss, target, tag
        )

    def sell(
        self,
        qty: int | None = None,
        symbol: str | None = None,
        *,
        lots: int | None = None,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        target: float | None = None,
        tag: str = "",
    ) -> Order | None:
        """Sell `qty` units, or `lots` lots (see `buy`).

        From flat it opens a short; to exit a long, `close()` is simpler (it also cancels the
        bracket's exits)."""
        sym = symbol or self.symbol
        return self._runner.place(
            self._sid, sym, -1, self._runner.quantity(sym, qty, lots), limit, stop, stop_loss, target, tag
        )

    def lot_size(self, symbol: str | None = None) -> int:
        """The lot size of a symbol's contract (1 for a stock or an index traded as cash).

        For sizing in units when the segment is futures: `buy(lots=n)` does the product."""
        return _broker(self._runner).contract(symbol or self.symbol).lot_size

    def close(self, symbol: str | None = None, tag: str = "") -> Order | None:
        """Exit the whole position with a market order (and cancel its stop-loss/target).

        Returns None when flat. It fills at the next candle's open, like any market order."""
        sym = symbol or self.symbol
        qty = self.position(sym)
        if qty == 0:
            return None
        _broker(self._runner).cancel_where(sym, self._sid)
        return self._runner.place(
            self._sid, sym, -1 if qty > 0 else 1, abs(qty), None, None, None, None, tag, exit_=True
        )

    def cancel(self, order: Order) -> None:
        """Cancel one live order.

        An order from `buy`/`sell`/`open_orders`; one that already filled or was cancelled
        stays as it is."""
        _broker(self._runner).cancel(order)

    def cancel_all(self, symbol: str | None = None, *, every: bool = False) -> None:
        """Cancel this strategy's live orders of `symbol` (default: the current candle's); `every=True`: all.

        Other strategies' orders in the same run are never touched."""
        for order in self.open_orders(symbol, every=every):
            _broker(self._runner).cancel(order)

    def log(self, message: str) -> None:
        """A line of the strategy's log: stderr in replay, the journal and screen in paper.

        Stamped with the candle's start and symbol in on_candle (`Note`); a sweep does not
        print them."""
        self._runner.note(self._sid, message)


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"window size must be a positive whole number, not {n!r}")
    return n
