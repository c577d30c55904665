"""Reading candles from files: CSV (`ts,open,high,low,close,volume`) and the previous
version's JSON cache (`artifacts/market_data/<SYMBOL>_<TF>.json`, a list of objects).

Bars that start outside every NSE session (vendor junk after 15:30) are dropped and counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .calendar import nse
from .errors import InputError
from .resample import drop_outside_sessions
from .store import normalize, normalize_daily
from .timeframes import Timeframe


@dataclass(frozen=True)
class ImportedCandles:
    candles: pl.DataFrame
    dropped_outside_session: int
    rows_read: int


def _read_json(path: Path) -> pl.DataFrame:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path} as JSON: {exc}") from None
    if isinstance(raw, dict) and "candles" in raw:  # the API/`mde window --format json` shape
        raw = raw["candles"]
    if not isinstance(raw, list):
        raise InputError(f"{path}: expected a list of {{ts, open, high, low, close, volume}} objects")
    rows = []
    for i, item in enumerate(raw):
        if isinstance(item, list):  # Kite's raw [ts, o, h, l, c, v(, oi)]
            item = dict(zip(["ts", "open", "high", "low", "close", "volume", "oi"], item))
        if not isinstance(item, dict):
            raise InputError(f"{path}: item {i} is not an object")
        if "ts" not in item and "date" in item:
            item = {**item, "ts": item["date"]}
        rows.append(item)
    if not rows:
        return pl.DataFrame(schema={"ts": pl.String, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64, "volume": pl.Int64})
    df = pl.DataFrame(rows, infer_schema_length=None)
    return df.with_columns(pl.col("ts").cast(pl.String))


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, schema_overrides={"ts": pl.String}, infer_schema_length=10000)
    except Exception as exc:
        raise InputError(f"cannot read {path} as CSV ({type(exc).__name__}): expected a header ts,open,high,low,close,volume") from None


def _parse_ts(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """ISO timestamps with an offset (`+05:30`, Kite's `+0530`, `Z`) or naive IST wall clock."""
    ts = pl.col("ts").str.strip_chars().str.replace(r"([+-]\d\d)(\d\d)$", "$1:$2").str.replace(" ", "T")
    sample = df.get_column("ts").drop_nulls().head(1).to_list()
    aware = bool(sample) and bool(re.search(r"([+-]\d\d:?\d\d|Z)$", sample[0].strip()))
    try:
        if aware:
            parsed = ts.str.to_datetime(time_unit="us", time_zone="UTC", strict=True).dt.convert_time_zone("Asia/Kolkata")
        else:
            parsed = ts.str.to_datetime(time_unit="us", strict=True).dt.replace_time_zone("Asia/Kolkata")
        return df.with_columns(parsed.alias("ts"))
    except Exception:
        raise InputError(f"{path}: cannot parse timestamps like {sample[:1]!r}; use ISO 8601 (2024-06-14T09:15:00+05:30)") from None


def read_candles(path: str | Path, timeframe: Timeframe) -> ImportedCandles:
    """Candles from a CSV or JSON file, normalized to the cache schema, outside-session bars dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    raw = _read_json(path) if path.suffix.lower() == ".json" else _read_csv(path)
    if "ts" not in raw.columns:
        raise InputError(f"{path} has no 'ts' column; expected ts,open,high,low,close,volume")
    if "volume" not in raw.columns:
        raw = raw.with_columns(pl.lit(None, dtype=pl.Int64).alias("volume"))
    rows = raw.height
    if raw.schema["ts"] == pl.String:
        raw = _parse_ts(raw, path)
    candles = normalize(raw)
    if timeframe.is_daily:
        candles = normalize_daily(candles)
    candles, dropped = drop_outside_sessions(candles, timeframe, nse())
    return ImportedCandles(candles=candles, dropped_outside_session=dropped, rows_read=rows)
