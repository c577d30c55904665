"""The generated 1m candles that bench/cache.py and bench/replay.py share (one seed, one walk).

Imports are lazy so that importing this module costs nothing in the memory-measuring children
of bench/replay.py.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from typing import Any

SEED = 20240614
SESSION_MINUTES = 375


def session_days(n: int, end: date) -> list[date]:
    """The last `n` regular NSE sessions up to `end` (weekdays, minus holidays and special days)."""
    from mde.calendar import nse

    cal = nse()
    days: list[date] = []
    d = end
    while len(days) < n:
        if d.weekday() < 5 and d not in cal.holidays and d not in cal.special:
            days.append(d)
        d -= timedelta(days=1)
    return days[::-1]


def generate(days: list[date], seed: int = SEED) -> Any:
    """A random walk of 1m candles on the session minutes of `days`: log returns, prices on
    the 0.05 tick, open = previous close, wicks beyond open/close, lognormal volume."""
    import polars as pl

    rng = random.Random(seed)
    gauss, exp = rng.gauss, math.exp
    ts_us: list[int] = []
    o_: list[int] = []
    h_: list[int] = []
    l_: list[int] = []
    c_: list[int] = []
    v_: list[int] = []
    price = 14_500.0
    epoch = date(1970, 1, 1)
    for d in days:
        price *= exp(gauss(0.0002, 0.006))  # overnight gap
        first = ((d - epoch).days * 86_400 + (9 * 60 + 15) * 60 - 19_800) * 1_000_000
        close_ticks = round(price * 20)  # prices in ticks of 0.05
        for m in range(SESSION_MINUTES):
            open_ticks = close_ticks
            price *= exp(gauss(0.0, 0.00045))
            close_ticks = round(price * 20)
            hi = max(open_ticks, close_ticks) + round(abs(gauss(0.0, 0.0002)) * price * 20)
            lo = min(open_ticks, close_ticks) - round(abs(gauss(0.0, 0.0002)) * price * 20)
            ts_us.append(first + m * 60_000_000)
            o_.append(open_ticks)
            h_.append(hi)
            l_.append(lo)
            c_.append(close_ticks)
            v_.append(int(exp(gauss(11.0, 0.6))))
    ts = pl.Series("ts", ts_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone("Asia/Kolkata")
    prices = {
        name: (pl.Series(name, col, dtype=pl.Int64) / 20).round(2)
        for name, col in (("open", o_), ("high", h_), ("low", l_), ("close", c_))
    }
    return pl.DataFrame({"ts": ts, **prices, "volume": v_})
