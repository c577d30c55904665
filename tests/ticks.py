"""Tick paths from real candles, for the ticker server (tests/kite_ticker_server.py).

Inside each candle's period [start, close) the path starts at the open, visits the high and
the low (in an order the random generator picks), ends at the close, and may wander between
them; the exchange timestamps are whole seconds, strictly increasing inside the candle.
For a tradable instrument every tick is a trade: its cumulative ``volume_traded`` rises by
at least 1, and the rises of one candle add up to exactly its volume (the day's cumulative
volume starts at 0 each day). An index (``token & 0xff == 9``) carries no volume.

So a candle builder fed these ticks must give back the source candles exactly, and any
coarser timeframe equal to ``mde.resample`` of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime

import polars as pl

from kite_ticker_server import ScriptTick, divisor, is_index
from mde.calendar import nse
from mde.clock import IST_OFFSET_MIN, to_ist_minutes
from mde.timeframes import Timeframe, parse

__all__ = ["candle_path", "ticks_from_candles"]


def candle_path(o: int, h: int, low: int, c: int, rng: random.Random, extra: int = 0) -> list[int]:
    """Prices (wire units) from `o` through `h` and `low` (random order) to `c`, with `extra`
    points in [low, h] spread between them. Needs low <= o, c <= h."""
    if not low <= min(o, c) <= max(o, c) <= h:
        raise ValueError(f"not a candle: o={o} h={h} l={low} c={c}")
    middle = [h, low] if rng.random() < 0.5 else [low, h]
    for _ in range(extra):
        middle.insert(rng.randrange(len(middle) + 1), rng.randint(low, h))
    return [o, *middle, c]


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`parts` positive integers summing to `total` (total >= parts)."""
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def ticks_from_candles(
    candles: pl.DataFrame, token: int, timeframe: str | Timeframe = "1m", *, seed: int = 0, extra: int = 2
) -> list[ScriptTick]:
    """The ticks of `candles` (the cache schema: ts = start, IST) for instrument `token`.

    `extra` more points per candle besides open, high, low and close (fewer where the
    volume is too small to give every tick a trade). Deterministic for a given `seed`."""
    tf = parse(timeframe)
    cal = nse()
    rng = random.Random(seed)
    d = divisor(token)
    index = is_index(token)
    out: list[ScriptTick] = []
    day = None
    cum = 0
    day_open = day_high = day_low = prev_close = 0
    last_close = 0
    turnover = 0
    for row in candles.iter_rows(named=True):
        start: datetime = row["ts"]
        start_min = to_ist_minutes(start)
        close_min = cal.close_minute(start_min, tf)
        first_s = (start_min - IST_OFFSET_MIN) * 60
        seconds = (close_min - start_min) * 60
        if start.date() != day:
            day, cum, turnover = start.date(), 0, 0
            prev_close, day_open, day_high, day_low = last_close, 0, 0, 0
        o, h, low, c = (round(row[k] * d) for k in ("open", "high", "low", "close"))
        volume = row["volume"]
        n_extra = extra
        if not index:
            if volume is None or volume < 1:
                raise ValueError(f"{start}: a tradable candle needs a volume >= 1, not {volume}")
            n_extra = max(0, min(extra, volume - 4))
        path = candle_path(o, h, low, c, rng, n_extra)
        if not index and len(path) > volume:
            raise ValueError(f"{start}: volume {volume} is too small for a path of {len(path)} trades")
        stamps = sorted(rng.sample(range(seconds), len(path)))
        qtys = _split(volume, len(path), rng) if not index else [0] * len(path)
        for price, offset, qty in zip(path, stamps, qtys, strict=True):
            if day_open == 0:
                day_open = day_high = day_low = price
            day_high, day_low = max(day_high, price), min(day_low, price)
            if index:
                out.append(
                    ScriptTick(
                        token,
                        first_s + offset,
                        price,
                        None,
                        day_open=day_open,
                        day_high=day_high,
                        day_low=day_low,
                        prev_close=prev_close,
                    )
                )
                continue
            cum += qty
            turnover += qty * price
            out.append(
                ScriptTick(
                    token,
                    first_s + offset,
                    price,
                    cum,
                    last_qty=qty,
                    avg_price=turnover // cum,
                    buy_qty=1000 + qty,
                    sell_qty=1200 + qty,
                    day_open=day_open,
                    day_high=day_high,
                    day_low=day_low,
                    prev_close=prev_close,
                )
            )
        last_close = c
    return out


def by_minute(ticks: list[ScriptTick]) -> Iterator[list[ScriptTick]]:
    """The ticks grouped by exchange minute, in order."""
    group: list[ScriptTick] = []
    for t in ticks:
        if group and t.ts // 60 != group[0].ts // 60:
            yield group
            group = []
        group.append(t)
    if group:
        yield group
