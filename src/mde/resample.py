"""Pure polars transforms on candle frames: bucketing, close times, resampling, visibility.

No I/O here. Intraday buckets are aligned to the start of the day's first session
(09:15 on regular days), as Kite does, so 60m candles are 09:15, 10:15 ... 15:15 and the
15:15 one closes at 15:30. A Muhurat-only day (13:45) gets a 13:45 grid. `1d` is one
candle per day, stamped 00:00 IST, complete when the day's last session ends.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from .calendar import Calendar
from .candles import TS_DTYPE, ohlcv_aggs
from .clock import IST_OFFSET_MIN, US_PER_MIN, from_ist_minutes, to_ist_minutes
from .timeframes import Timeframe

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then

_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _day_index(d: date) -> int:
    return d.toordinal() - _EPOCH_DAY


def ist_minutes(col: str = "ts") -> pl.Expr:
    """Minutes since 1970-01-01 00:00 IST."""
    return pl.col(col).dt.epoch("us") // US_PER_MIN + IST_OFFSET_MIN


def minutes_to_ts(expr: pl.Expr) -> pl.Expr:
    return ((expr - IST_OFFSET_MIN) * US_PER_MIN).cast(TS_DTYPE)


def _anchor(day: pl.Expr, cal: Calendar) -> pl.Expr:
    special = {_day_index(d): s[0][0] for d, s in cal.special.items() if s}
    if not special:
        return pl.lit(cal.regular[0], dtype=pl.Int64)
    return day.replace_strict(list(special), list(special.values()), default=cal.regular[0], return_dtype=pl.Int64)


def bucket_minutes(tf: Timeframe, cal: Calendar, col: str = "ts") -> pl.Expr:
    """IST-minute start of the `tf` bucket that each row's ts falls in."""
    local = ist_minutes(col)
    day = local // 1440
    if tf.is_daily:
        return day * 1440
    minute = local % 1440
    anchor = _anchor(day, cal)
    return day * 1440 + anchor + ((minute - anchor) // tf.minutes) * tf.minutes


def close_minutes(tf: Timeframe, cal: Calendar, col: str = "ts") -> pl.Expr:
    """IST-minute close time of each row's candle: ts + tf, clipped to its session's end."""
    local = ist_minutes(col)
    day = local // 1440
    minute = local % 1440
    if tf.is_daily:
        closes = {_day_index(d): s[-1][1] for d, s in cal.special.items() if s}
        if closes:
            day_close = day.replace_strict(
                list(closes), list(closes.values()), default=cal.regular[1], return_dtype=pl.Int64
            )
        else:
            day_close = pl.lit(cal.regular[1], dtype=pl.Int64)
        return day * 1440 + day_close
    reg_start, reg_end = cal.regular
    chain: Then | ChainedThen | None = None
    for d, sessions in cal.special.items():
        di = _day_index(d)
        for start, end in sessions:
            cond = (day == di) & (minute >= start) & (minute < end)
            chain = pl.when(cond).then(pl.lit(end)) if chain is None else chain.when(cond).then(pl.lit(end))
        cond = day == di
        chain = pl.when(cond).then(pl.lit(None)) if chain is None else chain.when(cond).then(pl.lit(None))
    regular = pl.when(minute < reg_end).then(pl.lit(reg_end)).otherwise(pl.lit(None))
    session_end = regular if chain is None else chain.otherwise(regular)
    raw_end = local + tf.minutes
    return pl.when(session_end.is_null()).then(raw_end).otherwise(pl.min_horizontal(raw_end, day * 1440 + session_end))


def close_minute(ts_min: int, tf: Timeframe, cal: Calendar) -> int:
    """`close_minutes` for one candle, in plain Python: for the few rows of a live tick, where
    building and running the session-aware expression costs milliseconds."""
    day_index, minute = divmod(ts_min, 1440)
    sessions = cal.special.get(date.fromordinal(_EPOCH_DAY + day_index))
    if tf.is_daily:
        return day_index * 1440 + (sessions[-1][1] if sessions else cal.regular[1])
    if sessions is not None:
        end = next((e for s, e in sessions if s <= minute < e), None)
    else:
        end = cal.regular[1] if minute < cal.regular[1] else None
    raw = ts_min + tf.minutes
    return raw if end is None else min(raw, day_index * 1440 + end)


SMALL = 64  # rows up to which close times are computed in Python rather than by expression
SEARCH_IN_PYTHON = 2048  # rows up to which `visible` finds its split in Python


def _close_list(df: pl.DataFrame, tf: Timeframe, cal: Calendar) -> list[int]:
    offset = IST_OFFSET_MIN
    return [close_minute(us // US_PER_MIN + offset, tf, cal) for us in df.get_column("ts").dt.epoch("us").to_list()]


def _regular_close_minutes(tf: Timeframe, cal: Calendar) -> pl.Expr:
    """close_minutes for rows on days that are not special sessions: ts + tf clipped to 15:30."""
    local = ist_minutes()
    minute = local % 1440
    reg_end = cal.regular[1]
    raw_end = local + tf.minutes
    return (
        pl.when(minute < reg_end).then(pl.min_horizontal(raw_end, (local // 1440) * 1440 + reg_end)).otherwise(raw_end)
    )


def with_close(df: pl.DataFrame, tf: Timeframe, cal: Calendar) -> pl.DataFrame:
    """Add `closes_at` (tz-aware IST): the moment each candle is complete and may be seen.

    The session-aware expression is evaluated only on the rows of special-session days; the
    rest (nearly all of a long series) take the regular 09:15-15:30 rule, which is much
    cheaper. The two parts are merged back in ts order.
    """
    if df.height <= SMALL:
        closes = pl.Series(
            "closes_at", [(m - IST_OFFSET_MIN) * US_PER_MIN for m in _close_list(df, tf, cal)], dtype=pl.Int64
        ).cast(TS_DTYPE)
        return df.with_columns(closes)
    full = minutes_to_ts(close_minutes(tf, cal)).alias("closes_at")
    if tf.is_daily or df.height < 4096 or not cal.special:
        return df.with_columns(full)
    ts = df.get_column("ts")
    if tf.minutes == 1 and ts.dtype == TS_DTYPE:
        # a 1m candle starts inside a session, so it closes a minute later (the clip at the session's
        # end never applies): one column instead of the expression's nine temporaries (a million rows)
        closes = (ts + timedelta(minutes=1)).alias("closes_at")
    else:
        closes = df.select(minutes_to_ts(_regular_close_minutes(tf, cal)).alias("closes_at")).to_series()
    if ts.is_sorted():  # the rows of each special day by binary search: no column of day numbers
        stamps = ts.to_physical()  # epoch microseconds
        rows = pl.Series([i for d in cal.special for i in range(*_rows_of_day(stamps, d))], dtype=pl.UInt32)
    else:
        rows = df.select(pl.arg_where((ist_minutes() // 1440).is_in([_day_index(d) for d in cal.special]))).to_series()
    if rows.len():  # patch the few special-session rows in place: no copy of the whole frame
        closes = closes.scatter(rows, df[rows].select(full).to_series())
    return df.with_columns(closes)


def _rows_of_day(stamps: pl.Series, day: date) -> tuple[int, int]:
    """[first, end) row numbers of sorted epoch-microsecond `stamps` that fall on `day` (IST)."""
    start = (_day_index(day) * 1440 - IST_OFFSET_MIN) * US_PER_MIN
    found = stamps.search_sorted(pl.Series([start, start + 1440 * US_PER_MIN]), side="left").to_list()
    return found[0], found[1]


def visible(df: pl.DataFrame, tf: Timeframe, cal: Calendar, as_of: datetime) -> pl.DataFrame:
    """Only the candles complete at `as_of` (closes_at <= as_of). Cheap on sorted frames."""
    if df.is_empty():
        return df
    cutoff = to_ist_minutes(as_of)
    # A candle's close is never later than ts + tf (the session end only clips it), so every
    # candle with ts + tf <= as_of is complete; only the few newer ones need the exact,
    # session-aware close. Sorted ts lets a binary search find the split.
    if df.height <= SEARCH_IN_PYTHON:
        # The tails that get_window reads (limit + 2 rows): one conversion to Python ints and a
        # bisect cost ~10 us, where search_sorted on a zoned datetime costs ~200 us (bench/api.py).
        ts = df.get_column("ts")
        # the physical value of a microsecond Datetime is epoch microseconds (a cast costs ~4 us,
        # .dt.epoch ~45 us: it goes through an expression)
        stamps = (ts.cast(pl.Int64) if getattr(ts.dtype, "time_unit", None) == "us" else ts.dt.epoch("us")).to_list()
        head_end = bisect_right(stamps, (cutoff - tf.minutes - IST_OFFSET_MIN) * US_PER_MIN)
        keep = [close_minute(us // US_PER_MIN + IST_OFFSET_MIN, tf, cal) <= cutoff for us in stamps[head_end:]]
        n = head_end + sum(keep)
        if all(keep[: n - head_end]):  # closes grow with ts: the complete candles are a prefix
            return df.slice(0, n) if n < df.height else df
        return df.filter(pl.Series([True] * head_end + keep, dtype=pl.Boolean))
    ts = df.get_column("ts")
    head_end = ts.search_sorted(from_ist_minutes(cutoff - tf.minutes), side="right")
    head = df.slice(0, head_end)
    rest = df.slice(head_end)
    if rest.is_empty():
        return head
    tail = rest.height
    if rest.height <= SMALL:
        rest = rest.filter(pl.Series([m <= cutoff for m in _close_list(rest, tf, cal)], dtype=pl.Boolean))
    else:
        rest = rest.filter(close_minutes(tf, cal) <= cutoff)
    if rest.height == tail:  # all complete: the frame as it was (a concat would split its columns in two)
        return df
    return pl.concat([head, rest]) if not rest.is_empty() else head


def drop_outside_sessions(df: pl.DataFrame, tf: Timeframe, cal: Calendar) -> tuple[pl.DataFrame, int]:
    """Remove intraday bars that start outside every session (vendor junk after 15:30)."""
    if tf.is_daily or df.is_empty():
        return df, 0
    local = ist_minutes()
    day = local // 1440
    minute = local % 1440
    reg_start, reg_end = cal.regular
    inside = (minute >= reg_start) & (minute < reg_end)
    # Regular weekdays minus holidays; special days use only their own sessions.
    weekday_ok = pl.col("ts").dt.weekday() <= 5
    holidays = [_day_index(d) for d in cal.holidays]
    regular_day = weekday_ok & ~day.is_in(holidays) & ~day.is_in([_day_index(d) for d in cal.special])
    keep = regular_day & inside
    for d, sessions in cal.special.items():
        di = _day_index(d)
        for start, end in sessions:
            keep = keep | ((day == di) & (minute >= start) & (minute < end))
    kept = df.filter(keep)
    return kept, df.height - kept.height


def resample(df: pl.DataFrame, target: Timeframe, cal: Calendar) -> pl.DataFrame:
    """Aggregate sorted candles into `target` buckets (open first, high max, low min, close last,
    volume sum, oi last). Buckets are labelled by their start on the session grid."""
    if df.is_empty():
        return df.select([c for c in df.columns if c != "closes_at"])
    out = (
        df.with_columns(bucket_minutes(target, cal).alias("_bucket"))
        .group_by("_bucket", maintain_order=True)
        .agg(ohlcv_aggs(df.columns))
        .sort("_bucket")
        .with_columns(minutes_to_ts(pl.col("_bucket")).alias("ts"))
        .drop("_bucket")
    )
    return out.select(["ts", *[c for c in out.columns if c != "ts"]])
