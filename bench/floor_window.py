"""The floor for `mde window NIFTY --limit 50`: start Python, import polars, read the last
50 rows of one Parquet partition, print them. Nothing mde does can be cheaper than this.

    python bench/floor_window.py <cache>/NSE/NIFTY_50/5m/2024.parquet
"""

import sys

import polars as pl

print(pl.scan_parquet(sys.argv[1]).tail(50).collect())
