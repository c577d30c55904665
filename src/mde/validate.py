"""Is a candle plausible? One vectorised check, shared by `mde import`, `save_cache` and the
count of implausible candles a source answered. Pure polars: no I/O.

A row is plausible when:
- `ts` is a timestamp (ISO 8601 text is parsed here: `+05:30`, `+0530`, `Z`, or naive IST);
- open, high, low and close are finite numbers > 0;
- low <= min(open, close) <= max(open, close) <= high;
- volume (and oi) is null or a whole number from 0 to 2**62;
- intraday: `ts` is the start of a bucket on the timeframe's session grid (09:15, 09:20 ...
  for 5m) and the bucket overlaps an NSE session; daily: any time of the day (it is folded
  to the day, and several rows of one day, as Kite's old BANKNIFTY days have, are folded into
  one), every day accepted (older years had sessions the calendar does not list);
- no other plausible row of the input has the same `ts`. Exact copies
  are harmless: the first stays and the others are flagged; copies that disagree are all
  flagged, since nothing says which one is right.

`check` returns the rows typed to the cache schema with a `problem` column: null for a
plausible row, else the key of the first rule it breaks (see PROBLEMS).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from .calendar import Calendar
from .candles import TS_DTYPE
from .clock import IST, US_PER_MIN, from_ist_minutes, to_ist_minutes
from .errors import InputError
from .resample import _day_index, ist_minutes
from .timeframes import Timeframe

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then

PRICES = ("open", "high", "low", "close")
# key -> the words a summary counts it under; the order is the order rules are checked in
PROBLEMS: dict[str, str] = {
    "row": "malformed row",
    "ts": "bad timestamp",
    "price": "bad price",
    "ohlc": "high/low inconsistent",
    "volume": "bad volume",
    "oi": "bad oi",
    "session": "outside NSE sessions",
    "grid": "off the timeframe grid",
    "duplicate": "duplicate ts",
}
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
MAX_COUNT = 2.0**62  # a volume or oi beyond this is garbage (and would not fit the cache's int64)


class InvalidCandles(InputError):
    """An input with implausible rows; nothing was written (exit 2)."""


def parse_ts(col: pl.Expr) -> pl.Expr:
    """ISO 8601 text to IST timestamps, null where it is not one. An offset (`+05:30`,
    Kite's `+0530`, `Z`) is honoured; a naive time is IST wall clock."""
    text = (
        col.str.strip_chars()
        .str.replace(" ", "T")
        .str.replace(r"Z$", "+00:00")
        .str.replace(r"([+-]\d\d)(\d\d)$", "$1:$2")
    )
    aware = pl.coalesce(
        [text.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in _AWARE_FORMATS]
    ).dt.convert_time_zone("Asia/Kolkata")
    naive = pl.coalesce([text.str.to_datetime(f, time_unit="us", strict=False) for f in _NAIVE_FORMATS])
    naive = naive.dt.replace_time_zone("Asia/Kolkata", ambiguous="null", non_existent="null")
    has_offset = text.str.contains(r"[+-]\d\d:\d\d$")
    return pl.when(has_offset).then(aware).otherwise(naive).cast(TS_DTYPE)


def _typed_ts(df: pl.DataFrame) -> pl.Expr:
    dtype = df.schema["ts"]
    if isinstance(dtype, pl.Datetime):
        ts = pl.col("ts")
        ts = (
            ts.dt.replace_time_zone("Asia/Kolkata")
            if dtype.time_zone is None
            else ts.dt.convert_time_zone("Asia/Kolkata")
        )
        return ts.cast(TS_DTYPE)
    if dtype == pl.Date:
        return pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("Asia/Kolkata").cast(TS_DTYPE)
    return parse_ts(pl.col("ts").cast(pl.String))


def _number(df: pl.DataFrame, name: str) -> tuple[pl.Expr, pl.Expr]:
    """(the column as Float64, whether a value was given that is not a number)."""
    if name not in df.columns:
        return pl.lit(None, dtype=pl.Float64), pl.lit(False)
    dtype = df.schema[name]
    if dtype == pl.String:
        text = pl.col(name).str.strip_chars()
        value = text.cast(pl.Float64, strict=False)
        return value, text.is_not_null() & (text != "") & value.is_null()
    if dtype.is_numeric():
        return pl.col(name).cast(pl.Float64), pl.lit(False)
    return pl.lit(None, dtype=pl.Float64), pl.col(name).is_not_null()


_TABLES: dict[int, tuple[Calendar, pl.Series, pl.DataFrame, pl.DataFrame]] = {}


def _tables(cal: Calendar) -> tuple[pl.Series, pl.DataFrame, pl.DataFrame]:
    """The calendar as small frames (built once per calendar): the day numbers that are not
    regular sessions, each special day's sessions, and each special day's grid anchor."""
    hit = _TABLES.get(id(cal))
    if hit is None or hit[0] is not cal:
        not_regular = pl.Series([_day_index(d) for d in (*cal.holidays, *cal.special)], dtype=pl.Int64)
        sessions = pl.DataFrame(
            [(_day_index(d), s, e) for d, ss in cal.special.items() for s, e in ss],
            schema={"_day": pl.Int64, "_s": pl.Int64, "_e": pl.Int64},
            orient="row",
        )
        anchors = pl.DataFrame(
            [(_day_index(d), ss[0][0]) for d, ss in cal.special.items() if ss],
            schema={"_day": pl.Int64, "_anchor": pl.Int64},
            orient="row",
        )
        hit = _TABLES[id(cal)] = (cal, not_regular, sessions, anchors)
    return hit[1], hit[2], hit[3]


def _session_checks(df: pl.DataFrame, tf: Timeframe, cal: Calendar) -> pl.DataFrame:
    """`_outside`: the bucket [ts, ts + tf) overlaps no session of its day (a DR day's 11:30
    session starts inside the 15m bucket labelled 11:15, as resample labels it); `_off_grid`:
    ts is not the start of a bucket on the day's grid (anchored at its first session's start)."""
    not_regular, sessions, anchors = _tables(cal)
    x = (
        df.select(pl.col("ts"), ist_minutes().alias("_local"))
        .with_columns((pl.col("_local") // 1440).alias("_day"), (pl.col("_local") % 1440).alias("_lo"))
        .with_columns((pl.col("_lo") + tf.minutes).alias("_hi"))
        .with_row_index("_i")
    )
    regular = (
        (pl.col("ts").dt.weekday() <= 5)
        & ~pl.col("_day").is_in(not_regular.implode())
        & (pl.col("_lo") < cal.regular[1])
        & (pl.col("_hi") > cal.regular[0])
    )
    special = (
        x.select("_i", "_day", "_lo", "_hi")
        .join(sessions, on="_day")
        .filter((pl.col("_lo") < pl.col("_e")) & (pl.col("_hi") > pl.col("_s")))
        .get_column("_i")
    )
    x = x.join(anchors, on="_day", how="left", maintain_order="left")
    anchor = pl.col("_anchor").fill_null(cal.regular[0])
    on_minute = pl.col("ts").dt.epoch("us") % US_PER_MIN == 0
    return x.select(
        (~(regular | pl.col("_i").is_in(special.implode()))).alias("_outside"),
        (~on_minute | ((pl.col("_lo") - anchor) % tf.minutes != 0)).alias("_off_grid"),
    )


def unpriced() -> pl.Expr:
    """True for a candle without a valid price: an open, high, low or close that is missing,
    not finite, zero or negative (the `price` rule; replay and paper keep such candles out)."""
    return pl.any_horizontal([pl.col(p).is_null() | ~pl.col(p).is_finite() | (pl.col(p) <= 0) for p in PRICES])


def check(raw: pl.DataFrame, tf: Timeframe, cal: Calendar) -> pl.DataFrame:
    """Every row of `raw` typed to the cache schema (ts, open, high, low, close, volume[, oi])
    plus `problem`: null if the row is plausible, else the key (PROBLEMS) of the first rule
    it breaks. `raw` may hold text (a CSV's fields) or typed columns; an optional `_problem`
    column carries problems the reader found (a short row) and wins over the rest."""
    typed: list[pl.Expr] = [_typed_ts(raw).alias("ts")]
    not_numbers: dict[str, pl.Expr] = {}
    for name in (*PRICES, "volume", *(["oi"] if "oi" in raw.columns else [])):
        value, bad = _number(raw, name)
        typed.append(value.alias(name))
        not_numbers[name] = bad.alias(f"_nan_{name}")
    pre = pl.col("_problem") if "_problem" in raw.columns else pl.lit(None, dtype=pl.String)
    df = raw.select([*typed, *not_numbers.values(), pre.alias("_pre")])

    o, h, low, c = (pl.col(p) for p in PRICES)
    bad_price = unpriced()
    bad_ohlc = ~((low <= pl.min_horizontal(o, c)) & (pl.max_horizontal(o, c) <= h))

    def bad_count(name: str) -> pl.Expr:
        v = pl.col(name)
        return pl.col(f"_nan_{name}") | (
            v.is_not_null() & (~v.is_finite() | (v < 0) | (v > MAX_COUNT) | (v != v.round(0)))
        )

    if tf.is_daily:
        off_grid, outside = pl.lit(False), pl.lit(False)
    else:
        df = pl.concat([df, _session_checks(df, tf, cal)], how="horizontal")
        off_grid, outside = pl.col("_off_grid"), pl.col("_outside")
    rules = [
        ("ts", pl.col("ts").is_null()),
        ("price", bad_price),
        ("ohlc", bad_ohlc),
        ("volume", bad_count("volume")),
        *([("oi", bad_count("oi"))] if "oi" in df.columns else []),
        ("session", outside),
        ("grid", off_grid),
    ]
    chain: Then | ChainedThen = pl.when(pl.col("_pre").is_not_null()).then(pl.col("_pre"))
    for key, cond in rules:
        chain = chain.when(cond).then(pl.lit(key))
    df = df.with_columns(chain.otherwise(pl.lit(None, dtype=pl.String)).alias("problem"))

    # duplicates among the rows that are otherwise fine
    cols = [c for c in (*PRICES, "volume", "oi") if c in df.columns]
    clean = df.with_row_index("_i").filter(pl.col("problem").is_null()).with_columns(pl.col("ts").alias("_key"))
    if clean.height > 1:
        dups = clean.filter(pl.col("_key").is_duplicated())
        if not dups.is_empty():
            same = pl.struct(cols).n_unique().over("_key") == 1
            flagged = dups.filter(~same | ~pl.col("_key").is_first_distinct()).get_column("_i")
            df = df.with_columns(
                pl.when(pl.int_range(pl.len()).is_in(flagged.implode()))
                .then(pl.lit("duplicate"))
                .otherwise(pl.col("problem"))
                .alias("problem")
            )
    out = [pl.col("ts"), *[pl.col(p) for p in PRICES]]
    for name in ("volume", *(["oi"] if "oi" in df.columns else [])):
        ok = (
            pl.col(name).is_finite()
            & (pl.col(name) >= 0)
            & (pl.col(name) <= MAX_COUNT)
            & (pl.col(name) == pl.col(name).round(0))
        )
        out.append(pl.when(ok).then(pl.col(name).round(0)).cast(pl.Int64).alias(name))
    return df.select([*out, "problem"])


def counts(checked: pl.DataFrame, *, include: tuple[str, ...] | None = None) -> dict[str, int]:
    """How many rows break each rule, in PROBLEMS order (rules nobody broke are left out)."""
    found = checked.get_column("problem").drop_nulls().value_counts()
    by_key = dict(zip(found.get_column("problem").to_list(), found.get_column("count").to_list(), strict=True))
    return {k: int(by_key[k]) for k in PROBLEMS if k in by_key and (include is None or k in include)}


def counts_text(by_key: dict[str, int]) -> str:
    return ", ".join(f"{n} {PROBLEMS[k]}" for k, n in by_key.items())


def implausible(candles: pl.DataFrame, tf: Timeframe, cal: Calendar) -> dict[str, int]:
    """Rules broken by candles in the cache schema (a source's answer), counted by key."""
    if candles.is_empty():
        return {}
    return counts(check(candles, tf, cal))


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "empty"
    return repr(value) if isinstance(value, str) else f"{value}"


def _ts_text(ts: datetime) -> str:
    return ts.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S").removesuffix(":00")


def explain(
    raw_row: dict[str, Any], row: dict[str, Any], problem: str, tf: Timeframe, cal: Calendar, detail: str | None = None
) -> str:
    """One clause saying why a row was refused (for the first few rows of a report)."""
    if problem == "row":
        return detail or "malformed row"
    if problem == "ts":
        return f"timestamp {_fmt(raw_row.get('ts'))} is not ISO 8601 (2024-06-14T09:15:00+05:30)"
    if problem == "price":
        for p in PRICES:
            v = row.get(p)
            if v is None:
                given = raw_row.get(p)
                return (
                    f"{p} is empty"
                    if given is None or str(given).strip() == ""
                    else f"{p} {_fmt(given)} is not a number"
                )
            if v != v or v in (float("inf"), float("-inf")):
                return f"{p} {v} is not a finite number"
            if v <= 0:
                return f"{p} {v} is not positive"
    if problem == "ohlc":
        o, h, low, c = (row[p] for p in PRICES)
        if h < low:
            return f"high {h} < low {low}"
        return f"open {o} / close {c} outside low..high {low}..{h}"
    if problem in ("volume", "oi"):
        v = row.get(problem)
        if v is None and isinstance(raw_row.get(problem), (int, float)):
            v = float(raw_row[problem])
        if v is None:
            try:
                v = float(str(raw_row.get(problem)))
            except ValueError:
                v = None
        if v is not None and v == v and v > MAX_COUNT and v != float("inf"):
            return f"{problem} {_fmt(raw_row.get(problem))} is too large for a count"
        return f"{problem} {_fmt(raw_row.get(problem))} is not a whole number >= 0"
    ts: datetime = row["ts"]  # a row of `check`'s answer; a null ts is problem "ts", above
    if problem == "session":
        return f"{_ts_text(ts)} is outside every NSE session"
    if problem == "grid":
        minute = to_ist_minutes(ts)
        anchor = cal.anchor(ts.astimezone(IST).date())
        start = from_ist_minutes(minute - minute % 1440 + anchor + (minute % 1440 - anchor) // tf.minutes * tf.minutes)
        return f"{_ts_text(ts)} is not on the {tf} grid (the candle would start at {start:%H:%M})"
    if problem == "duplicate":
        return f"{_ts_text(ts)} is given more than once"
    return PROBLEMS.get(problem, problem)


def report(
    raw: pl.DataFrame,
    checked: pl.DataFrame,
    tf: Timeframe,
    cal: Calendar,
    *,
    label: str = "row",
    numbers: pl.Series | None = None,
    skip: tuple[str, ...] = (),
    limit: int = 10,
) -> list[str]:
    """`<label> N: <reason>` for the first `limit` rows with a problem (not those in `skip`).
    `numbers` are the rows' line numbers in the input (default: 1-based row numbers)."""
    mask = checked.get_column("problem").is_not_null() & ~checked.get_column("problem").is_in(list(skip))
    idx = mask.arg_true().head(limit).to_list()
    lines = numbers.to_list() if numbers is not None else None
    details = raw.get_column("_detail") if "_detail" in raw.columns else None
    out = []
    for i in idx:
        row = checked.row(i, named=True)
        raw_row = raw.row(i, named=True)
        n = lines[i] if lines is not None else i + 1
        out.append(
            f"{label} {n}: {explain(raw_row, row, row['problem'], tf, cal, details[i] if details is not None else None)}"
        )
    return out


def require_plausible(candles: pl.DataFrame, tf: Timeframe, cal: Calendar, what: str = "candles") -> None:
    """Raise InvalidCandles naming the first bad rows (0-based row numbers) if any row of a
    frame given through the Python API (`save_cache`) is implausible or outside the sessions."""
    if candles.is_empty():
        return
    missing = [c for c in ("ts", *PRICES, "volume") if c not in candles.columns]
    if missing:
        raise InputError(f"{what} lack column(s) {', '.join(missing)}; expected ts, open, high, low, close, volume")
    checked = check(candles, tf, cal)
    by_reason = counts(checked)
    if by_reason:
        first = report(candles, checked, tf, cal, label="row", numbers=pl.Series(range(candles.height)), limit=5)
        raise InvalidCandles(
            f"{what}: {sum(by_reason.values())} of {candles.height} rows are not plausible {tf} candles "
            f"({counts_text(by_reason)}): " + "; ".join(first) + "; nothing was saved"
        )
