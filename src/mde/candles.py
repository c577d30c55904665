"""The candle: its schema and the pure transforms every layer shares.

A candle frame has `ts` (tz-aware IST, microseconds, the candle's start), float prices and
an int volume (null where the source has none, e.g. an index), optionally `oi`. Sources,
the importer, resample and the store all speak this schema; keeping it apart from the
store's I/O lets them depend on the shape without depending on the disk.

`Candle` is one closed candle as a Python value: what a strategy's `on_candle` receives,
`ctx.last()` returns and `MarketDataEngine.get_latest_candle` / `.replay` yield (one type).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import NamedTuple

import polars as pl

from .clock import IST_OFFSET_MIN, US_PER_MIN, ist_date, us_to_datetime
from .errors import InputError

TS_DTYPE = pl.Datetime("us", "Asia/Kolkata")
COLUMNS: dict[str, pl.DataType] = {
    "ts": TS_DTYPE,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Int64(),
}
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {"oi": pl.Int64()}


class Candle(NamedTuple):
    """A closed candle of one series. `ts` is its start (IST); it may be acted on only at
    `closes_at`.

    Times are held as epoch microseconds (`ts_us`, `close_us`); `ts`, `closes_at`, `day` and
    `minute` are computed on demand. A tuple and no datetime per candle is what keeps a
    million-candle replay fast: the runner builds these in C from the series' columns, in
    this field order (the hot loop reads some fields by position).
    """

    symbol: str
    timeframe: str  # its name: "5m", "1d"
    ts_us: int  # the start, epoch microseconds
    open: float
    high: float
    low: float
    close: float
    volume: int | None  # None where the source has none (an index)
    close_us: int  # when it closed, epoch microseconds: nothing decides on it before
    # its position in the series it was read from: in a strategy, the run's series with its
    # warm-up history; from the engine, the frame read (0 for get_latest_candle)
    index: int  # type: ignore[assignment]  # shadows tuple.index(): a field since the first Strategy API
    oi: int | None = None  # open interest (futures and options) where the series has it

    @property
    def ts(self) -> datetime:
        """The start (IST datetime)."""
        return us_to_datetime(self.ts_us)

    @property
    def closes_at(self) -> datetime:
        """The close (IST datetime): the candle is visible from then on."""
        return us_to_datetime(self.close_us)

    @property
    def minute(self) -> int:
        """Minutes after midnight IST of the candle's start (09:15 -> 555)."""
        return (self.ts_us // US_PER_MIN + IST_OFFSET_MIN) % 1440

    @property
    def day(self) -> date:
        """The IST date of the candle's start."""
        return ist_date(self.ts_us)

    def __repr__(self) -> str:
        oi = "" if self.oi is None else f" oi={self.oi}"
        return (
            f"Candle({self.symbol} {self.timeframe} {self.ts:%Y-%m-%d %H:%M} "
            f"o={self.open} h={self.high} l={self.low} c={self.close} v={self.volume}{oi})"
        )


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def _is_normalized(df: pl.DataFrame) -> bool:
    """Already in the cache schema, in column order, with ts sorted, unique and never null."""
    schema = df.schema
    names = list(schema)
    if names != [*COLUMNS] and names != [*COLUMNS, *OPTIONAL_COLUMNS]:
        return False
    if any(schema[name] != dtype for name, dtype in (*COLUMNS.items(), *OPTIONAL_COLUMNS.items()) if name in schema):
        return False
    ts = df.get_column("ts")
    return ts.null_count() == 0 and ts.is_sorted() and ts.n_unique() == ts.len()


def normalize(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the cache schema (tz-aware IST ts, float prices, int volume), sorted, unique ts.

    A frame that is already normalized is returned as it is (the engine normalizes before
    dropping incomplete candles, and the store again before writing)."""
    if _is_normalized(df):
        return df
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"candles lack column(s) {', '.join(missing)}; expected ts, open, high, low, close, volume")
    ts = df.get_column("ts")
    if ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="Asia/Kolkata", time_unit="us")
    elif isinstance(ts.dtype, pl.Datetime):
        ts = (
            ts.dt.replace_time_zone("Asia/Kolkata")
            if ts.dtype.time_zone is None
            else ts.dt.convert_time_zone("Asia/Kolkata")
        )
    cols: list[pl.Series | pl.Expr] = [ts.cast(TS_DTYPE).alias("ts")]
    cols += [pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close")]
    cols.append(pl.col("volume").cast(pl.Float64).round(0).cast(pl.Int64))
    if "oi" in df.columns:
        cols.append(pl.col("oi").cast(pl.Float64).round(0).cast(pl.Int64))
    out = df.select(cols)
    if out.get_column("ts").null_count():
        raise InputError("candles contain an empty timestamp")
    return out.unique(subset="ts", keep="last", maintain_order=True).sort("ts")


def normalize_daily(df: pl.DataFrame) -> pl.DataFrame:
    """Daily candles stamped 00:00 IST, one per day. Kite's old BANKNIFTY days carry odd
    times (09:15, 11:54:10) and four 2015 dates have two rows: those are folded into one."""
    if df.is_empty():
        return df
    day = pl.col("ts").dt.truncate("1d")
    if df.select((pl.col("ts") == day).all() & day.is_unique().all()).item():
        return df
    return df.with_columns(day.alias("ts")).group_by("ts", maintain_order=True).agg(ohlcv_aggs(df.columns)).sort("ts")


def ohlcv_aggs(columns: list[str]) -> list[pl.Expr]:
    """How candles combine: open first, high max, low min, close last, volume sum
    (null if no part has a volume), oi last."""
    aggs = [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.when(pl.col("volume").is_not_null().any()).then(pl.col("volume").sum()).alias("volume"),
    ]
    if "oi" in columns:
        aggs.append(pl.col("oi").last())
    return aggs


def merge_candles(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Union by ts; for a ts in both, the new candle wins. Sorted and unique."""
    if old.is_empty():
        return new
    if new.is_empty():
        return old
    return (
        pl.concat([old, new], how="diagonal_relaxed").unique(subset="ts", keep="last", maintain_order=True).sort("ts")
    )
