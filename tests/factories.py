"""Small builders of candle frames for tests."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import polars as pl

from mde.calendar import nse
from mde.candles import normalize
from mde.clock import IST


def session_minutes(day: date, step: int = 1) -> list[datetime]:
    """Candle starts of `day` on the session grid, every `step` minutes."""
    out = []
    for start, end in nse().sessions(day):
        anchor = nse().anchor(day)
        m = start + (-(start - anchor)) % step
        while m < end:
            out.append(datetime.combine(day, time(m // 60, m % 60), IST))
            m += step
    return out


def make_candles(days: list[date] | date, step: int = 1, start_price: float = 100.0, seed: int = 0) -> pl.DataFrame:
    """Deterministic random-walk candles on real session times (prices on a 0.05 tick)."""
    import random

    rng = random.Random(seed)
    days = [days] if isinstance(days, date) else days
    rows = []
    price = start_price
    for day in days:
        for ts in session_minutes(day, step):
            o = price
            c = round(max(1.0, o + rng.choice([-1, 1]) * rng.randint(0, 40) * 0.05), 2)
            h = round(max(o, c) + rng.randint(0, 10) * 0.05, 2)
            low = round(min(o, c) - rng.randint(0, 10) * 0.05, 2)
            rows.append((ts, o, h, low, c, rng.randint(0, 10_000)))
            price = c
    return normalize(pl.DataFrame(rows, schema=["ts", "open", "high", "low", "close", "volume"], orient="row"))


def trading_days(start: date, n: int) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if nse().is_trading_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out
