"""Build the sample data bundled in the package (src/mde/sample_data) from data/nse/*.csv.

    uv run python data/build_sample.py

Uses mde's own importer, so the bundle gets the same cleaning as `mde import`: bars
outside every NSE session are dropped (and counted), daily bars are one per day at 00:00.
tests/test_sample_data.py checks that the committed bundle equals what this script makes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from mde.atomic import atomic_write
from mde.calendar import nse
from mde.importer import read_candles
from mde.resample import with_close
from mde.symbols import parse_instrument, safe_name
from mde.timeframes import parse

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "src" / "mde" / "sample_data"

# instrument, timeframe, CSV files (concatenated in order)
BUNDLE = [
    ("NSE:NIFTY 50", "5m", ["NIFTY50_5m_2024.csv"]),
    ("NSE:NIFTY BANK", "5m", ["BANKNIFTY_5m_2024.csv"]),
    ("NSE:NIFTY 50", "1m", ["NIFTY50_1m_2024Q1.csv", "NIFTY50_1m_2024Q2.csv"]),
    ("NSE:NIFTY BANK", "1m", ["BANKNIFTY_1m_2024Q2.csv"]),
    ("NSE:NIFTY 50", "1d", ["NIFTY50_1d_1990-2025.csv"]),
    ("NSE:NIFTY BANK", "1d", ["BANKNIFTY_1d_2000-2025.csv"]),
    ("NSE:RELIANCE", "60m", ["RELIANCE_60m_2024-12_2026-01.csv"]),
    ("NSE:INFY", "60m", ["INFY_60m_2024-12_2026-01.csv"]),
    ("NSE:SBIN", "60m", ["SBIN_60m_2024-12_2026-01.csv"]),
    ("NSE:RELIANCE", "1d", ["RELIANCE_1d_2020-2026.csv"]),
    ("NSE:INFY", "1d", ["INFY_1d_2020-2026.csv"]),
    ("NSE:SBIN", "1d", ["SBIN_1d_2020-2026.csv"]),
]


# The sample's clock stands at the close of this series' last candle (2024-12-31 15:30 IST),
# so the README's first run shows an up-to-date NIFTY. Later daily and equity candles are
# in the bundle too and become visible with MDE_NOW (e.g. MDE_NOW=2026-01-10).
CLOCK_SERIES = ("NSE:NIFTY 50", "5m")


def build(out: Path = OUT, source_dir: Path = HERE / "nse", quiet: bool = False) -> dict:
    index = {"series": [], "end": None}
    end = None
    for key, tf_name, files in BUNDLE:
        inst, tf = parse_instrument(key), parse(tf_name)
        frames, dropped, read = [], 0, 0
        for name in files:
            imported = read_candles(source_dir / name, tf)
            frames.append(imported.candles)
            dropped += imported.dropped_outside_session
            read += imported.rows_read
        df = pl.concat(frames).unique(subset="ts", keep="last").sort("ts")
        path = out / safe_name(inst.exchange) / safe_name(inst.tradingsymbol) / f"{tf.name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            df.write_parquet(fh, compression="zstd", statistics=True)
        if (inst.key, tf.name) == CLOCK_SERIES:
            end = with_close(df.tail(1), tf, nse())["closes_at"][0]
        index["series"].append(
            {
                "instrument": inst.key,
                "timeframe": tf.name,
                "rows": df.height,
                "first": df["ts"][0].isoformat(),
                "last": df["ts"][-1].isoformat(),
                "files": files,
                "dropped_outside_session": dropped,
            }
        )
        if not quiet:
            print(
                f"{inst.key:<16} {tf.name:>4} {df.height:>7} rows from {read} read, {dropped} outside sessions dropped"
            )
    index["end"] = end.isoformat()
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return index


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    idx = build(target)
    print(f"sample clock (end of data): {idx['end']}")
