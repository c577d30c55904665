"""Benchmark: a `mde paper` sample session at --speed 0 over one day for 50 symbols, 1 s ticks.

    uv run --frozen python bench/paper.py            # about a minute

One run prints mde's figures beside a bare loop's, the ratio, PASS/FAIL against the goals below and
a SUMMARY line. It always exits 0: it is a report (tests/test_paper_*.py test the behaviour).

Data: the bundled sample has 5 symbols, so 50 are made from the real NIFTY 50 5m candles of
2024 (data/nse/NIFTY50_5m_2024.csv): symbol Bnn is NIFTY scaled by 1 + nn/100 (prices on the
0.05 tick), written as a sample-data folder (index.json + Parquet) in a temporary directory and
served by mde's own SampleSource, which only hands out candles closed by the session clock, as
Kite does. The cache is filled up to 2024-06-13 (warm-up) before timing; the session plays
2024-06-14 (a regular day: 75 candles per symbol, 3,750 in all).

mde       run_sample_session(..., speed=0, tick=1.0): 22,500 ticks (09:15:01 .. 15:30:00). At each
          tick it checks the kill switch in the journal, asks the calendar whether a candle closed;
          for each series whose candle closed it runs update_cache (Parquet write), appends the new
          candle to the series in memory, runs sma_cross (fast=10, slow=30) through StrategyRunner,
          checks risk, and commits the candle's journal entry (SQLite, synchronous=FULL) before the
          next. Costs: zerodha futures.
bare      the same 22,500 ticks over the same 3,750 candles already in Python lists: at each tick, for
          each series whose next candle has closed, read it and update a running SMA pair. No cache,
          no journal, no broker.

Figures: ticks per second (whole session, wall); close-to-decision latency = for each tick at
which candles closed, the wall time from the tick's first cache update to the end of the last
strategy call of that tick (p50 / p99 / max); cache updates per tick compared with the number of
series whose candle closed at that tick, at every tick.
Goals: p99 close-to-decision latency < 1 s (one tick interval) with 50 symbols; cache updates per
tick == series whose candle closed, at every tick.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
N = 50
DAY = "2024-06-14"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build_root(root: Path) -> list[str]:
    import polars as pl

    from mde.importer import read_candles
    from mde.timeframes import parse

    base = read_candles(REPO / "data" / "nse" / "NIFTY50_5m_2024.csv", parse("5m")).candles
    series, names = [], []
    for n in range(1, N + 1):
        name = f"B{n:02d}"
        k = 1 + n / 100
        df = base.with_columns([((pl.col(c) * k * 20).round() / 20).alias(c) for c in ("open", "high", "low", "close")])
        folder = root / "NSE" / name
        folder.mkdir(parents=True)
        df.write_parquet(folder / "5m.parquet")
        series.append(
            {
                "instrument": f"NSE:{name}",
                "timeframe": "5m",
                "rows": df.height,
                "first": df["ts"][0].isoformat(),
                "last": df["ts"][-1].isoformat(),
                "files": [],
            }
        )
        names.append(name)
    (root / "index.json").write_text(json.dumps({"end": "2024-12-31T15:30:00+05:30", "series": series}))
    return names


def bare_loop(frames: dict[str, tuple[list[int], list[float]]], ticks: list[int]) -> tuple[float, list[float]]:
    """The floor: the same ticks and candles from memory, a running SMA pair per series."""
    latencies = []
    state = {s: [0, 0.0, 0.0, []] for s in frames}  # next index, fast sum, slow sum, window
    t0 = time.perf_counter()
    for now in ticks:
        start = None
        for sym, (close_us, close) in frames.items():
            st = state[sym]
            i = st[0]
            while i < len(close_us) and close_us[i] <= now:
                if start is None:
                    start = time.perf_counter()
                c = close[i]
                win = st[3]
                win.append(c)
                st[1] += c - (win[-11] if len(win) > 10 else 0.0)
                st[2] += c - (win[-31] if len(win) > 30 else 0.0)
                i += 1
            st[0] = i
        if start is not None:
            latencies.append(time.perf_counter() - start)
    return time.perf_counter() - t0, latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    import polars as pl

    from mde.config import load
    from mde.engine import MarketDataEngine
    from mde.paper import session as session_mod
    from mde.sources.sample import SampleSource
    from mde.strategy import StrategyRunner

    print(f"bench/paper.py: {N} symbols, {DAY}, 1 s ticks, speed 0; load average {load_avg()}")
    tmp = Path(tempfile.mkdtemp(prefix="mde-bench-paper-"))
    try:
        names = build_root(tmp / "root")
        settings = load(cache_dir=tmp / "cache", source="sample", environ={})

        def engine() -> MarketDataEngine:
            return MarketDataEngine(settings, SampleSource(root=tmp / "root"))

        warm = engine()
        for name in names:
            warm.download(name, "5m", "2024-05-01", "2024-06-13")
        print(f"cache filled: {N} series, 2024-05-01..2024-06-13 (not timed)")

        eng = engine()
        # -- the harness: when each tick's first cache update starts, when its last strategy call ends
        updates: dict[int, int] = {}
        first_update: dict[int, float] = {}
        last_decision: dict[int, float] = {}
        clock = {"tick": 0}
        real_update = eng.update_cache

        def update_cache(symbol: str, tf: object = "5m") -> int:
            t = clock["tick"] = int(eng.now().timestamp() * 1e6)
            if eng.now().hour == 0:
                return real_update(symbol, tf)  # the warm-up at the session's start, not a tick
            updates[t] = updates.get(t, 0) + 1
            first_update.setdefault(t, time.perf_counter())
            return real_update(symbol, tf)

        eng.update_cache = update_cache  # type: ignore[method-assign]
        real_span = StrategyRunner.process_span

        def process_span(self: StrategyRunner, data: object, start: int, end: int) -> None:
            real_span(self, data, start, end)
            last_decision[clock["tick"]] = time.perf_counter()

        StrategyRunner.process_span = process_span  # type: ignore[method-assign]
        t0 = time.perf_counter()
        result = session_mod.run_sample_session(
            settings, "sma_cross", names, "5m", DAY, name="bench", speed=0.0, tick=1.0, segment="futures", engine=eng
        )
        wall = time.perf_counter() - t0
        StrategyRunner.process_span = real_span  # type: ignore[method-assign]

        # -- what should have been updated: the series whose candle closed at each tick
        day = pl.read_parquet(tmp / "root" / "NSE" / "B01" / "5m.parquet").filter(
            pl.col("ts").dt.date() == pl.date(2024, 6, 14)
        )
        close_us = [int(t.timestamp() * 1e6) + 300_000_000 for t in day["ts"]]
        first = close_us[0] - 300_000_000
        ticks = list(range(first + 1_000_000, close_us[-1] + 1_000_000, 1_000_000))
        expected = {c: N for c in close_us}
        mismatched = sorted(set(expected) ^ set(updates)) + [t for t in expected if updates.get(t) != expected[t]]
        lat = [last_decision[t] - first_update[t] for t in first_update if t in last_decision]

        frames = {}
        for name in names:
            df = pl.read_parquet(tmp / "root" / "NSE" / name / "5m.parquet").filter(
                pl.col("ts").dt.date() == pl.date(2024, 6, 14)
            )
            frames[name] = ([int(t.timestamp() * 1e6) + 300_000_000 for t in df["ts"]], df["close"].to_list())
        bare_wall, bare_lat = bare_loop(frames, ticks)

        print(
            f"\nsession: {result.candles} candles, {len(ticks)} ticks, {result.trades.height} trades, status {result.status}"
        )
        print(f"{'':28}{'mde':>14}{'bare loop':>14}{'ratio':>10}")
        print(f"{'wall (s)':28}{wall:>14.2f}{bare_wall:>14.3f}{wall / bare_wall:>9.0f}x")
        print(f"{'ticks/s':28}{len(ticks) / wall:>14,.0f}{len(ticks) / bare_wall:>14,.0f}{bare_wall / wall:>10.4f}")
        for label, q in (("close->decision p50 (ms)", 0.5), ("close->decision p99 (ms)", 0.99)):
            a, b = pct(lat, q) * 1e3, pct(bare_lat, q) * 1e3
            print(f"{label:28}{a:>14.1f}{b:>14.3f}{a / b:>9.0f}x")
        print(f"{'close->decision max (ms)':28}{max(lat) * 1e3:>14.1f}{max(bare_lat) * 1e3:>14.3f}")
        print(f"{'per closing tick, per symbol (ms)':28}{statistics.median(lat) / N * 1e3:>9.2f}")
        p99 = pct(lat, 0.99)
        ok_lat = p99 < 1.0
        ok_upd = not mismatched and len(lat) == len(close_us)
        print(
            f"\n{'PASS' if ok_lat else 'FAIL'}  close->decision p99 {p99 * 1e3:.0f} ms < 1000 ms (one tick) with {N} symbols"
        )
        print(
            f"{'PASS' if ok_upd else 'FAIL'}  cache updates per tick == series whose candle closed, at all {len(ticks)} ticks "
            f"({sum(updates.values())} updates at {len(updates)} ticks; expected {N} at each of {len(close_us)} closes"
            + (f"; mismatched ticks: {mismatched[:5]}" if mismatched else "")
            + ")"
        )
        print(
            f"SUMMARY paper: {len(ticks) / wall:,.0f} ticks/s, p99 close->decision {p99 * 1e3:.0f} ms, "
            f"{'all goals met' if ok_lat and ok_upd else 'goal missed'}; load average {load_avg()}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
