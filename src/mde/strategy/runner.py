"""The runner: drives strategies over closed candles, the same code for `mde replay` and `mde paper`.

`StrategyRunner` holds the series of a run (`SeriesData`: a frame for windows and
indicators, flat columns for the hot loop), hands each candle to every strategy at its close
(`process_span`), books fills through the broker and keeps the equity curve. `merge_events`
orders the candles of several series by close time. What a strategy sees of all this is
`api.Context`, which asks the runner through the small `api.ContextHost` protocol.
"""

from __future__ import annotations

import gc
import logging
import traceback
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import repeat
from typing import Any

import polars as pl

from ..broker import Order, SimBroker
from ..candles import Candle
from ..clock import IST_OFFSET_MIN, US_PER_MIN, ist_day, us_to_datetime
from ..columns import grow, view
from ..errors import InputError, MdeError, StrategyError
from ..protocols import CandleReader
from ..timeframes import Timeframe, parse
from .api import Context, Indicator, Note, Strategy
from .loading import strategy_error

__all__ = ["CandleReader", "RunOutcome", "SeriesData", "StrategyRunner", "merge_events"]

log = logging.getLogger("mde.strategy")

_candle_of = partial(tuple.__new__, Candle)  # a Candle from a tuple of its fields, in C
Step = tuple[int, float, tuple[tuple[str, int], ...]]  # (first candle, cash, net positions) from a fill on


class SeriesData:
    """One series held in memory for a run: a frame for windows, plain lists for the hot loop."""

    def __init__(
        self, symbol: str, timeframe: Timeframe, frame: pl.DataFrame, built_from: Timeframe | None = None
    ) -> None:
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
        oi = frame["oi"] if "oi" in frame.columns else None  # open interest: futures and options only
        self.oi: Sequence[int | None] | None = (
            None if oi is None else view("q", oi) if not oi.null_count() else oi.to_list()
        )

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
        new: dict[str, list[Any]] = {
            "ts_us": frame["ts"].dt.epoch("us").to_list(),
            "close_us": frame["closes_at"].dt.epoch("us").to_list(),
            **{name: frame[name].cast(pl.Float64).to_list() for name in ("open", "high", "low", "close")},
            "volume": frame["volume"].to_list(),
        }
        if self.oi is not None:
            new["oi"] = frame["oi"].to_list() if "oi" in frame.columns else [None] * frame.height
        for name, values in new.items():
            column = getattr(self, name)
            if isinstance(column, memoryview):  # a view of the frame read at start: copied once, to grow
                column = grow(column)
            if isinstance(column, array) and None in values:  # volume, oi: a null turns the column into a list
                column = list(column)
            column.extend(values)
            setattr(self, name, column)

    def candle(self, i: int) -> Candle:
        """Candle i of the series (the one type `on_candle` receives)."""
        oi = self.oi[i] if self.oi is not None else None
        return _candle_of(
            (
                self.symbol,
                self.timeframe.name,
                self.ts_us[i],
                self.open[i],
                self.high[i],
                self.low[i],
                self.close[i],
                self.volume[i],
                self.close_us[i],
                i,
                oi,
            )
        )


# -- the runner ------------------------------------------------------------------------
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
        market_data_engine: CandleReader | None = None,
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
        self.wake: dict[
            str, tuple[Indicator, bool]
        ] = {}  # symbol -> a lone strategy's wake-up indicator (Context.wake_on)
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
        self.contexts = [Context(self, s, sid) for s, sid in zip(items, ids, strict=True)]
        if square_off is not None:
            _minute(square_off)  # a bad time is an error even when no strategy is intraday
        self._sq = [(_minute(square_off or s.square_off) if s.intraday else None) for s in items]
        self._intraday = any(x is not None for x in self._sq)
        if broker is not None:  # the broker margins an intraday strategy's stocks as MIS, and marks at closes
            broker.intraday = {sid for sid, sq in zip(ids, self._sq, strict=True) if sq is not None}
            broker.mark = self._last_price
        self._handlers = [(s.on_candle, ctx) for s, ctx in zip(items, self.contexts, strict=True)]
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
        note = (
            Note(candle[2], sid, str(message), candle[0], kind)
            if candle is not None
            else Note(self.now_us, sid, str(message), None, kind)
        )
        self.notes.append(note)
        if self.on_note is not None:
            self.on_note(note)
        else:
            log.info("%s", note.line())

    # -- orders
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
    ) -> Order | None:
        assert self.broker is not None
        if symbol not in self.symbols:
            raise InputError(f"cannot trade {symbol}: this run trades {', '.join(self.symbols)}")
        order = self.broker.place(
            sid, symbol, side, qty, self.now_us, limit=limit, stop=stop, stop_loss=stop_loss, target=target, tag=tag
        )
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
            for strategy, ctx in zip(self.strategies, self.contexts, strict=True):
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
        steps: list[Step] = [
            (start, broker.cash, tuple(broker.net.items()))
        ]  # (first candle, cash, net) from each fill on
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
            raise MdeError(
                f"a fill was booked inside on_candle at {us_to_datetime(self.now_us):%Y-%m-%d %H:%M}; orders "
                "placed by a strategy fill from the next candle (broker.FILL_MODEL)"
            )
        self._equity(data, start, end, steps)
        self._last_close[sym] = data.close[end - 1]
        self._last_close_us[sym] = data.close_us[end - 1]

    def _dense(
        self,
        data: SeriesData,
        start: int,
        end: int,
        live: list[Order],
        steps: list[Step],
        seen: int,
        handlers: Sequence[tuple[Callable[[Context, Candle], None], Context]],
        only_fn: Any,
        only_ctx: Any,
    ) -> int:
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
        cols = [
            c if whole else c[start:end]
            for c in (data.ts_us, data.open, data.high, data.low, data.close, data.volume, data.close_us)
        ]
        oi: Iterable[int | None] = repeat(None, n) if data.oi is None else data.oi if whole else data.oi[start:end]
        candles = map(
            _candle_of, zip(repeat(sym, n), repeat(data.timeframe.name, n), *cols, range(start, end), oi, strict=True)
        )
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

    def _sparse(
        self,
        data: SeriesData,
        start: int,
        end: int,
        marks: Sequence[int],
        live: list[Order],
        steps: list[Step],
        seen: int,
        fn: Any,
        ctx: Any,
    ) -> int:
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
        strategy = next(
            (f.f_locals.get("self") for f, _ in frames if isinstance(f.f_locals.get("self"), Strategy)), None
        )
        if strategy is None:
            return None
        candle = self.candle
        if where == "on_candle" and candle is not None:
            when = f"on {candle[0]} {candle[1]} candle {us_to_datetime(candle[2]).isoformat(' ', 'minutes')}"
        else:
            when = f"in {where} at {us_to_datetime(self.now_us).isoformat(' ', 'minutes')}"
        return strategy_error(exc, type(strategy), when)

    def _step(self, i: int, steps: list[Step]) -> int:
        """A fill was booked at candle i: cash and positions from there on. Returns the fills booked."""
        broker = self.broker
        assert broker is not None
        steps.append((i, broker.cash, tuple(broker.net.items())))
        return len(broker.fills)

    def _equity(self, data: SeriesData, start: int, end: int, steps: list[Step]) -> None:
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
        for sid, sq in zip(self.ids, self._sq, strict=True):
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
        for sid, sq in zip(self.ids, self._sq, strict=True):
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


def merge_events(
    series: Sequence[SeriesData], starts: Sequence[int], ends: Sequence[int]
) -> list[tuple[SeriesData, int, int]]:
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
