"""Tick ingest: mde's candle building against the client's own parsing floor.

    uv run python bench/ticks_ingest.py [instruments=200] [minutes=30]

The frames are what the local ticker server (tests/kite_ticker_server.py) sends: full-mode
packets (184 bytes) of real RELIANCE 60m candle paths (tests/ticks.py), copied onto
`instruments` equity tokens, one frame per exchange second. The floor is
`KiteTicker._parse_binary` on every frame (what any client of the websocket pays); the
candidate is the same parse plus `CandleBuilder.add` and a `poll` every second, with 1m, 5m
and 15m candles. A sanity figure for the issue's goal (>= 0.8x the floor, i.e. building
adds at most 25 %); `bench/stream.py` is the full benchmark. Prints figures, asserts nothing.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kiteconnect import KiteTicker  # noqa: E402

from kite_ticker_server import ScriptTick, encode_frame, encode_packet  # noqa: E402
from mde.calendar import IST  # noqa: E402
from mde.importer import read_candles  # noqa: E402
from mde.ticks import CandleBuilder  # noqa: E402
from mde.timeframes import parse  # noqa: E402
from ticks import ticks_from_candles  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    minutes = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    src = read_candles(ROOT / "data/nse/RELIANCE_60m_2024-12_2026-01.csv", parse("60m")).candles.head(1)
    base = ticks_from_candles(src, 738561, "60m", seed=1, extra=1200)  # ~one tick per 3 s per instrument
    first = base[0].ts
    base = [t for t in base if t.ts < first + 60 * minutes]
    tokens = [(i << 8) | 1 for i in range(1, n + 1)]
    by_second: dict[int, list[ScriptTick]] = {}
    for k, token in enumerate(tokens):
        for t in base:
            ts = t.ts + k % 3  # spread the instruments over the seconds
            by_second.setdefault(ts, []).append(ScriptTick(token, ts, t.price, t.volume, t.last_qty, t.avg_price))
    frames = [encode_frame([encode_packet(t, "full") for t in by_second[s]]) for s in sorted(by_second)]
    seconds = sorted(by_second)
    packets = sum(len(v) for v in by_second.values())
    kt = KiteTicker("k", "t")

    def floor() -> float:
        t0 = time.perf_counter()
        for frame in frames:
            kt._parse_binary(frame)
        return time.perf_counter() - t0

    def build() -> float:
        start = datetime.fromtimestamp(first - 60, IST)
        b = CandleBuilder(tokens, ["1m", "5m", "15m"], now=start)
        b.connected(start)
        t0 = time.perf_counter()
        for sec, frame in zip(seconds, frames, strict=True):
            b.add(kt._parse_binary(frame))
            b.poll(datetime.fromtimestamp(sec, IST))
        return time.perf_counter() - t0

    f = min(floor() for _ in range(3))
    c = min(build() for _ in range(3))
    print(f"{packets:,} full packets in {len(frames):,} frames, {n} instruments, {minutes} min of market time")
    print(f"floor  (parse only):       {packets / f:12,.0f} ticks/s")
    print(f"mde    (parse + build):    {packets / c:12,.0f} ticks/s")
    print(f"ratio: {f / c:.2f}x the floor (goal >= 0.80x)")


if __name__ == "__main__":
    main()
