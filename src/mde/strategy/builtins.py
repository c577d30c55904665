"""Built-in strategies: `sma_cross` and the opening-range breakout `orb`.

`sma_cross` computes its averages once per series with polars (`ctx.indicator`, checked for
look-ahead) and reads one value per candle; `orb` keeps its range from the candles it is
given. Replay and paper compute exactly the same numbers.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..errors import InputError
from .api import Candle, Context, Strategy


def check_size(name: str, qty: int, lots: int) -> None:
    """qty (units, 0 = use lots) and lots: one of them sizes an entry."""
    if qty < 0:
        raise InputError(f"{name}: qty must be 0 (use lots) or more")
    if lots < 1:
        raise InputError(f"{name}: lots must be at least 1")
    if qty and lots != 1:
        raise InputError(f"{name}: give qty or lots, not both")


class SmaCross(Strategy):
    """Long when the fast SMA crosses above the slow one; flat when it crosses back below.

    SMA(n) at candle i is the mean of the closes of candles i-n+1..i. Enter when
    fast(i) > slow(i) and fast(i-1) <= slow(i-1); exit when fast(i) < slow(i) and
    fast(i-1) >= slow(i-1). Averages are compared in integer paise
    (sum_fast * slow vs sum_slow * fast), exactly, on every machine.
    """

    name = "sma_cross"
    fast: int = 10
    slow: int = 30
    qty: int = 0  # units per entry; 0: `lots` lots (one lot of a futures contract, one share of a stock)
    lots: int = 1

    def validate(self) -> None:
        if self.fast < 1 or self.slow < 1:
            raise InputError("sma_cross: fast and slow must be at least 1")
        if self.fast >= self.slow:
            raise InputError(f"sma_cross: fast ({self.fast}) must be smaller than slow ({self.slow})")
        check_size("sma_cross", self.qty, self.lots)

    def on_start(self, ctx: Context) -> None:
        # per symbol: [the sign indicator, its value at the previous candle (warm-up history at start)]
        self._state: dict[str, list[Any]] = {}
        for symbol in ctx.symbols:
            sign = ctx.indicator(self.sign, symbol, name=f"sma_cross {self.fast}/{self.slow}")
            self._state[symbol] = [sign, sign.value]
            ctx.wake_on(sign, changes=True)  # on_candle does nothing while the sign stays the same

    def sign(self, candles: pl.DataFrame) -> pl.Expr:
        """sign(SMA(fast) - SMA(slow)) per candle, null until `slow` closes are in.

        Sums in integer paise (exact on NSE's 0.05 grid, 0.01 for indices), compared as
        sum_fast * slow vs sum_slow * fast, so a tie is a tie on every machine. One
        expression, so polars frees each intermediate column as soon as it is used.
        """
        paise = (pl.col("close") * 100).round().cast(pl.Int64)
        diff = paise.rolling_sum(self.fast) * self.slow - paise.rolling_sum(self.slow) * self.fast  # null until `slow`
        return diff.sign().cast(pl.Int8).alias("sign")

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        # woken where the sign changes (wake_on); with other strategies in the run, at every candle
        state = self._state[candle.symbol]
        now = state[0].value
        before = state[1]
        if now == before:
            return
        state[1] = now
        if before is None or now is None:
            return
        if now > 0 >= before:
            if ctx.position() == 0:
                ctx.buy(self.qty) if self.qty else ctx.buy(lots=self.lots)
        elif now < 0 <= before and ctx.position() > 0:
            ctx.close()


class OpeningRangeBreakout(Strategy):
    """Intraday: trade the first break of the opening range, with a bracket.

    The range is the high and low of the first `range_minutes` of the session. The first
    candle that closes above the range high buys `qty` units or `lots` lots (below the low: sells short), with
    the stop-loss at the other side of the range and the target `target_r` range-heights
    beyond the broken side. One entry per symbol per day; squared off at `square_off`.
    """

    name = "orb"
    intraday = True
    range_minutes: int = 15
    target_r: float = 2.0
    qty: int = 0  # units per entry; 0: `lots` lots (one lot of a futures contract, one share of a stock)
    lots: int = 1
    square_off: str = "15:20"
    shorts: bool = True

    def validate(self) -> None:
        if not 1 <= self.range_minutes <= 300:
            raise InputError("orb: range_minutes must be between 1 and 300")
        if self.target_r <= 0:
            raise InputError("orb: target_r must be positive")
        check_size("orb", self.qty, self.lots)

    def on_start(self, ctx: Context) -> None:
        self._day: dict[str, Any] = {}
        self._range: dict[str, list[float]] = {}  # symbol -> [high, low, range end minute, traded]

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        sym = candle.symbol
        day = candle.day  # one range per IST day, from its first candle
        if self._day.get(sym) != day:
            self._day[sym] = day
            self._range[sym] = [candle.high, candle.low, candle.minute + self.range_minutes, False]
        r = self._range[sym]
        closes_minute = candle.minute + (candle.close_us - candle.ts_us) // 60_000_000
        if closes_minute <= r[2]:  # still inside the opening range
            r[0] = max(r[0], candle.high)
            r[1] = min(r[1], candle.low)
            return
        if r[3] or ctx.position() != 0:
            return
        high, low = r[0], r[1]
        height = high - low
        if height <= 0:
            return
        if candle.close > high:
            r[3] = True
            qty, lots = (self.qty, None) if self.qty else (None, self.lots)
            ctx.buy(qty, lots=lots, stop_loss=low, target=high + self.target_r * height)
        elif candle.close < low and self.shorts:
            r[3] = True
            qty, lots = (self.qty, None) if self.qty else (None, self.lots)
            ctx.sell(qty, lots=lots, stop_loss=high, target=low - self.target_r * height)
