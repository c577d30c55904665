"""Reading candles from files: CSV (`ts,open,high,low,close,volume`) and the previous
version's JSON cache (`artifacts/market_data/<SYMBOL>_<TF>.json`, a list of objects).

Every row is checked (`validate.check`): a file with an implausible row (a price that is
empty, not a number, infinite or <= 0; high < low; a volume that is not a whole number >= 0;
a timestamp off the timeframe's grid; a timestamp given twice; a short row) is refused whole,
with the first bad rows by line number, unless `drop_invalid`, which drops them and counts
them by reason. Bars that start outside every NSE session (vendor junk after 15:30) are
dropped and counted, as before; a file where every bar is outside the sessions is refused
(its times are probably in another zone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .calendar import nse
from .candles import normalize, normalize_daily
from .errors import InputError
from .timeframes import Timeframe
from .validate import PROBLEMS, InvalidCandles, check, counts, counts_text, report

FIELDS = ("ts", "open", "high", "low", "close", "volume", "oi")
REQUIRED = ("ts", "open", "high", "low", "close")
REPORT_ROWS = 10


@dataclass(frozen=True)
class ImportedCandles:
    candles: pl.DataFrame
    dropped_outside_session: int
    rows_read: int
    dropped_invalid: dict[str, int] = field(default_factory=dict)  # by validate.PROBLEMS key (drop_invalid)
    first_outside: str | None = None  # `line 77: 2024-01-01 15:30 is outside every NSE session`, for the summary


def _value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v)
    return json.dumps(v)  # a bool, a list, an object: not a number or a timestamp, said so by the check


def _read_json(path: Path) -> tuple[pl.DataFrame, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"cannot read {path} as JSON: {exc}") from None
    if isinstance(raw, dict) and "candles" in raw:  # the API/`mde window --format json` shape
        raw = raw["candles"]
    if not isinstance(raw, list):
        raise InputError(f"{path}: expected a list of {{ts, open, high, low, close, volume}} objects")
    items: list[dict[str, Any]] = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, list):  # Kite's raw [ts, o, h, l, c, v(, oi)]
            item = dict(zip(FIELDS, item, strict=False))  # a short row lacks fields: said below
        if not isinstance(item, dict):
            raise InputError(f'{path}: item {i} is not an object like {{"ts": ..., "open": ...}}')
        if "ts" not in item and "date" in item:
            item = {**item, "ts": item["date"]}
        items.append(item)
    present = [f for f in FIELDS if any(f in item for item in items)]
    missing = [f for f in REQUIRED if f not in present]
    if items and missing:
        raise InputError(
            f"{path}: no item has {', '.join(repr(m) for m in missing)}; expected {{ts, open, high, low, close, volume}} objects"
        )
    cols: dict[str, list[Any]] = {f: [_value(item.get(f)) for item in items] for f in present}
    # a field most items have but one lacks (volume: null is how "none" is written)
    lacking = [next((f for f in present if f not in item and f != "oi"), None) for item in items]
    cols["_problem"] = ["row" if f else None for f in lacking]
    cols["_detail"] = [f"no {f!r} field (write null if there is none)" if f else None for f in lacking]
    cols["_line"] = list(range(1, len(items) + 1))
    schema = {f: pl.String for f in present} | {"_problem": pl.String, "_detail": pl.String, "_line": pl.Int64}
    return pl.DataFrame(cols, schema=schema), "item"


def _read_csv(path: Path) -> tuple[pl.DataFrame, str]:
    """Split by hand rather than pl.read_csv: every line keeps its number, and a short row or a
    field like `abc` is a reason on that line, not a parser error about the whole file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    lines = pl.Series("text", text.split("\n"), dtype=pl.String).str.strip_suffix("\r")
    frame = pl.DataFrame([lines]).with_row_index("_line", offset=1).with_columns(pl.col("_line").cast(pl.Int64))
    frame = frame.filter(pl.col("text").str.strip_chars() != "")
    if frame.is_empty():
        raise InputError(f"{path} is empty; expected a header ts,open,high,low,close,volume")
    header = [h.strip().strip('"').strip().lower() for h in frame.item(0, "text").split(",")]
    if "ts" not in header and "date" in header:
        header[header.index("date")] = "ts"
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(
            f"{path}: the header {','.join(header)!r} lacks {', '.join(missing)}; expected a header ts,open,high,low,close,volume"
        )
    body = frame.slice(1).with_columns(pl.col("text").str.split(",").alias("_fields"))
    n = len(header)
    width = pl.col("_fields").list.len()
    body = body.with_columns(
        pl.when(width != n).then(pl.lit("row")).alias("_problem"),
        pl.when(width < n)
        .then(pl.format("short row: {} of {} fields (" + ",".join(header) + ")", width, pl.lit(n)))
        .when(width > n)
        .then(pl.format("long row: {} fields, the header has {}", width, pl.lit(n)))
        .alias("_detail"),
    )
    fields = [
        pl.col("_fields").list.get(i, null_on_oob=True).str.strip_chars().str.strip_chars('"').alias(name)
        for i, name in enumerate(header)
        if name in FIELDS and name not in header[:i]
    ]
    out = body.select(fields + [pl.col("_problem"), pl.col("_detail"), pl.col("_line")])
    # an empty field is a missing value
    return out.with_columns(pl.col(c).replace("", None) for c in out.columns if c in FIELDS), "line"


def read_candles(path: str | Path, timeframe: Timeframe, *, drop_invalid: bool = False) -> ImportedCandles:
    """Candles from a CSV or JSON file, checked row by row, normalized to the cache schema.

    Raises InvalidCandles (nothing read) if a row is implausible, unless `drop_invalid`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    raw, label = _read_json(path) if path.suffix.lower() == ".json" else _read_csv(path)
    if raw.is_empty():
        raise InputError(f"{path} has no candles")
    cal = nse()
    checked = check(raw, timeframe, cal)
    by_reason = counts(checked)
    outside = by_reason.pop("session", 0)
    lines = raw.get_column("_line")
    if by_reason and not drop_invalid:
        bad = sum(by_reason.values())
        first = report(raw, checked, timeframe, cal, label=label, numbers=lines, skip=("session",), limit=REPORT_ROWS)
        more = f"; first {len(first)}" if bad > len(first) else ""
        raise InvalidCandles(
            f"{path}: {bad} of {raw.height} rows are not plausible candles ({counts_text(by_reason)}){more}: "
            + "; ".join(first)
            + "; nothing was imported: fix them, or pass --drop-invalid to import the rest"
        )
    keep = checked.filter(pl.col("problem").is_null())
    if keep.is_empty():
        why = "every row starts outside the NSE sessions" if outside == raw.height else "no row is a plausible candle"
        first = report(raw, checked, timeframe, cal, label=label, numbers=lines, limit=1)
        hint = " (naive times are read as IST: write UTC times with +00:00)" if outside == raw.height else ""
        raise InputError(f"{path}: {why} ({first[0]}){hint}; nothing was imported")
    candles = normalize(keep.drop("problem"))
    if timeframe.is_daily:
        candles = normalize_daily(candles)
    first_outside = None
    if outside:
        only = checked.with_columns(pl.when(pl.col("problem") == "session").then(pl.col("problem")).alias("problem"))
        first_outside = report(raw, only, timeframe, cal, label=label, numbers=lines, limit=1)[0]
    return ImportedCandles(
        candles=candles,
        dropped_outside_session=outside,
        rows_read=raw.height,
        dropped_invalid=by_reason if drop_invalid else {},
        first_outside=first_outside,
    )


__all__ = ["ImportedCandles", "InvalidCandles", "PROBLEMS", "read_candles"]
