"""Try `mde stream` without a Kite account: the local REST and ticker servers of the tests,
half an hour of NIFTY's real 1m candles (2024-06-14) replayed as ticks on market time.

    python3 -m uv run --frozen --group test python tests/stream_demo.py

It runs `mde stream --symbols NIFTY BANKNIFTY -t 1m -t 5m --until 09:45` against them into a
temporary cache, prints what the stream prints, then the 5m candles it wrote.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import polars as pl  # noqa: E402

from kite_server import KiteServer  # noqa: E402
from kite_ticker_server import KiteTickerServer  # noqa: E402
from mde.importer import read_candles  # noqa: E402
from mde.timeframes import parse  # noqa: E402
from test_stream import BANKNIFTY, DAY, FILES, NIFTY, NSE_DATA, REPO, _epoch, cached, env_for, script, sentinel, start  # noqa: E402


def main() -> None:
    source = {}
    for token, name in FILES.items():
        frame = read_candles(NSE_DATA / name, parse("1m")).candles
        day = frame.filter(pl.col("ts").dt.strftime("%Y-%m-%d") == DAY).head(60)
        source[token] = day.with_columns(pl.lit(0, dtype=pl.Int64).alias("volume"))
    with (
        KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as kite,
        KiteTickerServer() as ws,
        tempfile.TemporaryDirectory() as tmp,
    ):
        ws.api_key, ws.access_token = kite.api_key, kite.access_token
        for token, frame in source.items():
            kite.add_candles(token, "minute", frame.select("ts", "open", "high", "low", "close", "volume").rows())
        ws.load([*script(source, [NIFTY, BANKNIFTY]), sentinel("09:45:03")])
        cache = Path(tmp) / "cache"
        child = start(
            env_for(kite, ws, cache), "--symbols", "NIFTY", "BANKNIFTY", "-t", "1m", "-t", "5m", "--until", "09:45"
        )
        ws.wait_subscribed([NIFTY, BANKNIFTY], "full", timeout=30)
        ws.advance(_epoch("09:45:03"))
        out, err = child.communicate(timeout=60)
        print(out + err)
        print(cached(cache, NIFTY, "5m"))


if __name__ == "__main__":
    main()
