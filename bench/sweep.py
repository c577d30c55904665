"""Benchmark: `mde sweep` (sma_cross, 100 combinations) against backtesting.py's `optimize`, on
the same candles, with the trade count of every combination checked equal.

    uv run --frozen --group test python bench/sweep.py   # about a minute on a 2-core VM

Data: one year of GENERATED 1m candles (bench/candles.py, the same seeded walk as bench/replay.py:
the last 250 sessions up to 2025-12-30, 93,750 candles) in a Parquet cache in a temporary folder.
Grid (issue 18): fast 5..50 step 5 x slow 60..240 step 20 = 100 combinations, every one valid.

Contenders, each timed from data in hand to the result of every combination, the median of REPS
rounds (backtesting.py in a fresh subprocess: its fork-based pool crashes in a process that loaded
polars) (wall time; the machine is shared, the load average is printed):
  mde           run_sweep(..., workers=2, costs="none"): a spawned process pool, each worker
                replaying its chunk of combinations from the Parquet cache (read once per worker),
                metrics, fingerprint and per-session returns per combination, then PBO and DSR.
  backtesting   Backtest(df, ...).optimize(fast=..., slow=..., maximize="# Trades",
                return_heatmap=True) on a pandas frame already built (its own process pool).
vectorbt (the issue's goal: mde wall <= vectorbt's) is not here yet: it belongs in a `bench`
dependency group that this branch does not add. Always exits 0: a report, not a test.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candles import SESSION_MINUTES, generate, session_days  # noqa: E402  # bench/candles.py, shared
from replay import BT_CASH, END_DAY, SYMBOL, TF, bt_frame, bt_strategy, engine_for  # noqa: E402

# backtesting's optimize runs a process pool; forked, it segfaults on this machine (a process that
# has loaded polars' or pyarrow's threads), so it gets a spawn pool, which pickles the strategy
# class: a module-level one (bench/replay.py's, made at import)
BtSmaCross = bt_strategy()
BtSmaCross.__qualname__ = BtSmaCross.__name__ = "BtSmaCross"
BtSmaCross.__module__ = __name__

FASTS = list(range(5, 51, 5))
SLOWS = list(range(60, 241, 20))
REPS = 2
WORKERS = 2


def mde_sweep(cache: Path, now: Any, first: Any, last: Any) -> dict[tuple[int, int], int]:
    from mde.sweep import run_sweep

    res = run_sweep(
        engine_for(cache, now),
        "sma_cross",
        [SYMBOL],
        TF,
        first,
        last,
        ["fast=5:50:5", "slow=60:240:20"],
        workers=WORKERS,
        costs="none",
    )
    return {(r["params"]["fast"], r["params"]["slow"]): r["metrics"]["trades"] for r in res.ok_rows()}


def bt_optimize(df: Any) -> dict[tuple[int, int], int]:
    import multiprocessing

    import backtesting
    from backtesting import Backtest

    backtesting.Pool = multiprocessing.get_context("spawn").Pool  # type: ignore[attr-defined]  # its documented override
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(
            df, BtSmaCross, cash=BT_CASH, commission=0.0, spread=0.0, trade_on_close=False, finalize_trades=True
        )
        _, heat = bt.optimize(fast=FASTS, slow=SLOWS, maximize="# Trades", return_heatmap=True, n_bars=len(df))
    return {(int(key[0]), int(key[1])): int(v) for key, v in heat.items()}


def bt_child(npz: str) -> int:
    """backtesting's optimize forks a process pool: in a process that has loaded polars (whose
    thread pool does not survive fork) that crashes, so it runs here, in a fresh process that
    loads numpy and pandas only. Prints the median time and the trade counts as JSON."""
    import json

    import numpy as np

    with np.load(npz) as z:
        frame = bt_frame(z["ts"], *(z[c] for c in ("open", "high", "low", "close", "volume")))
    times, counts = [], {}
    for _ in range(REPS):
        t0 = time.perf_counter()
        counts = bt_optimize(frame)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times, "counts": [[f, s, n] for (f, s), n in counts.items()]}))
    return 0


def run_bt(npz: Path) -> tuple[list[float], dict[tuple[int, int], int]]:
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    out = subprocess.run([sys.executable, __file__, "--bt", str(npz)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"backtesting child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return doc["times"], {(f, s): n for f, s, n in doc["counts"]}


def main() -> int:
    import numpy as np

    from mde.clock import IST

    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        df = generate(session_days(250, END_DAY))
        assert df.height == 250 * SESSION_MINUTES
        now = (df["ts"][-1] + timedelta(minutes=1)).astimezone(IST)
        cache = Path(tmp) / "cache"
        engine_for(cache, now).save_cache(SYMBOL, TF, df)
        first, last = df["ts"][0].date(), df["ts"][-1].date()
        npz = Path(tmp) / "1y.npz"
        np.savez(
            npz,
            ts=df["ts"].dt.epoch("us").to_numpy(),
            **{c: df[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        )
        times: dict[str, list[float]] = {"mde": []}
        results: dict[str, dict[tuple[int, int], int]] = {}
        for _ in range(REPS):
            t0 = time.perf_counter()
            results["mde"] = mde_sweep(cache, now, first, last)
            times["mde"].append(time.perf_counter() - t0)
        times["backtesting"], results["backtesting"] = run_bt(npz)
    mde_t, bt_t = statistics.median(times["mde"]), statistics.median(times["backtesting"])
    same = results["mde"] == results["backtesting"]
    diff = [k for k in results["mde"] if results["mde"][k] != results["backtesting"].get(k)]
    print(f"grid: {len(FASTS) * len(SLOWS)} combinations over {df.height:,} 1m candles")
    print(f"mde sweep ({WORKERS} workers)   {mde_t:6.2f} s   (rounds: {', '.join(f'{t:.2f}' for t in times['mde'])})")
    print(f"backtesting.py optimize  {bt_t:6.2f} s   (rounds: {', '.join(f'{t:.2f}' for t in times['backtesting'])})")
    print(f"ratio backtesting / mde  {bt_t / mde_t:6.1f}x   goal >= 8x: {'PASS' if bt_t / mde_t >= 8 else 'FAIL'}")
    print(f"trade counts per combination equal: {same}" + ("" if same else f" (first differences: {diff[:5]})"))
    print("vectorbt: not run (no `bench` dependency group on this branch yet)")
    print(f"load average at end: {os.getloadavg()}")
    print(f"SUMMARY sweep mde={mde_t:.2f}s backtesting={bt_t:.2f}s ratio={bt_t / mde_t:.1f}x trades_equal={same}")
    return 0


if __name__ == "__main__":
    sys.exit(bt_child(sys.argv[2]) if sys.argv[1:2] == ["--bt"] else main())
