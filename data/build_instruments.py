"""Build the instruments dump shipped inside the package (src/mde/data/instruments.parquet)
from data/instruments.csv, a real Kite `GET /instruments` dump (see data/README.md).

    uv run python data/build_instruments.py

`mde instruments` serves it on the sample source, and every command uses it offline to tell
an unknown symbol ("did you mean NIFTY?") from one that is only not cached yet.
tests/test_trust_symbols.py checks that the committed file equals what this script makes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from mde.atomic import atomic_write
from mde.instruments import BUNDLED_DATE, BUNDLED_DUMP, BUNDLED_META
from mde.sources.kite.instruments import dump_frame

HERE = Path(__file__).resolve().parent


def build(csv: Path = HERE / "instruments.csv", out: Path = BUNDLED_DUMP) -> pl.DataFrame:
    rows = pl.read_csv(csv, infer_schema_length=0).to_dicts()  # every column as text, as the dump is
    for row in rows:
        row["instrument_token"] = int(row["instrument_token"])
        for col in ("last_price", "strike", "tick_size"):
            row[col] = float(row[col]) if row[col] not in (None, "") else None
        row["lot_size"] = int(row["lot_size"]) if row["lot_size"] not in (None, "") else None
    table = dump_frame(rows)  # in the dump's own order
    with atomic_write(out) as fh:
        table.write_parquet(fh, compression="zstd", compression_level=19, statistics=False)
    with atomic_write(out.with_name(BUNDLED_META), "w") as fh:
        json.dump(
            {"fetched_at": f"{BUNDLED_DATE}T00:00:00+05:30", "rows": table.height, "source": "data/instruments.csv"},
            fh,
            indent=1,
        )
        fh.write("\n")
    return table


if __name__ == "__main__":
    table = build()
    print(f"{BUNDLED_DUMP}: {table.height} instruments, {BUNDLED_DUMP.stat().st_size:,} bytes", file=sys.stderr)
