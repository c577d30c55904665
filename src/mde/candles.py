"""The candle: its schema and the pure transforms every layer shares.

A candle frame has `ts` (tz-aware IST, microseconds, the candle's start), float prices and
an int volume (null where the source has none, e.g. an index), optionally `oi`. Sources,
the importer, resample and the store all speak this schema; keeping it apart from the
store's I/O lets them depend on the shape without depending on the disk.
"""

from __future__ import annotations

import polars as pl

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
        ts = ts.dt.replace_time_zone("Asia/Kolkata") if ts.dtype.time_zone is None else ts.dt.convert_time_zone("Asia/Kolkata")
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
    return pl.concat([old, new], how="diagonal_relaxed").unique(subset="ts", keep="last", maintain_order=True).sort("ts")
