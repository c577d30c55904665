"""Benchmark: `mde replay` (sma_cross) against backtesting.py 0.6 on the same candles, same rule.

    uv run --frozen --group test python bench/replay.py            # the report (about 2 min)
    uv run --frozen --group test python bench/replay.py --profile  # + cProfile top-15 of the mde loop, 1M candles

One run prints every figure beside its peer, the ratio, PASS/FAIL against the goals below and a
SUMMARY line. It always exits 0: it is a report, not a test (tests/test_replay_parity.py is the
test of the same parity on real NSE candles).

Data: GENERATED 1m candles, the seeded random walk of bench/candles.py, shared with bench/cache.py (same seed:
log returns, prices on the 0.05 tick, overnight gaps, lognormal volume) on the NSE session minutes
09:15-15:29 of weekdays that are not NSE holidays or special sessions:
  * 1 year = the last 250 sessions up to 2025-12-30 = 93,750 candles;
  * 1M     = the first 1,000,000 candles of the 2,667 sessions up to 2025-12-30 (the last
             session ends at 13:24; the clock is pinned to that candle's close).
Each series goes into its own Parquet cache (MarketDataEngine.save_cache) in a temporary folder,
removed at the end. Data generation and cache writing are never timed.

The rule (mde's built-in `sma_cross`, fast=10, slow=30; the same rule as a backtesting.py
Strategy): SMA(n) at bar i = mean of the closes i-n+1..i, compared exactly in integer paise
(sum_fast * slow vs sum_slow * fast); enter long (1 unit) when fast crosses above slow, exit when it
crosses back below; market orders fill at the next bar's open (backtesting's default
trade_on_close=False); no commission or spread, cash far above the price. Both sides start at
the first candle, so neither has a warm-up the other lacks.

Contenders, each timed from data in hand to result. The three run in turn, REPS rounds (so a
change of the machine's load hits all of them), and the median of each is reported; the CPU time
of the process (time.process_time) is printed beside the wall time, because it is less sensitive to
other work on the machine:
  mde (a) end-to-end  run_replay(engine, "sma_cross", ..., costs="none") from the Parquet cache:
                      Parquet read, SeriesData, the loop, trades frame, metrics.
  mde (b) loop        StrategyRunner.run over a SeriesData already built in memory (as run_replay
                      builds it): on_start (sma_cross's indicator), the loop, finish. SimBroker +
                      runner creation included (microseconds). sma_cross declares ctx.wake_on on
                      its sign's changes, so on_candle runs only where the sign changes, and every
                      candle where an order can fill (README "Replay").
  mde (c) (info)      the same loop with the wake-up ignored: on_candle at every candle, the
                      per-candle cost of the runner (a Candle tuple, one call, the sign read).
  backtesting.py      Backtest(df, ...).run() on a pandas frame already built: its data checks, its
                      indicator (Strategy.I, numpy), its loop and its stats.
Trade lists: mde (a), (b), (c) and backtesting.py must give identical trades (entry time and
price, exit time and price, size). One difference is normalised, because both libraries document it:
a position still open after the last bar. mde closes it at the last candle's close, stamped with that
candle's close time ("end of replay"). backtesting.py's finalize_trades=True closes it at the last bar's
OPEN, stamped with the bar's start.

Peak memory (1M candles): each contender runs once in its own subprocess (sys.executable, the
MDE_*/KITE_* variables removed, a temporary cwd). It loads its input the natural way: mde through
run_replay from the Parquet cache; backtesting.py from a .npz of numpy arrays into the pandas
frame it needs. After the run it reads resource.getrusage(RUSAGE_SELF).ru_maxrss. Nothing is
subtracted. The baselines (python + the imports of each contender) are printed for context.
Linux carries a parent's peak RSS into a child's ru_maxrss (across fork and exec). So the
candles are generated in a subprocess too, and the memory children run before this process imports
polars or loads any data. /proc/self/status VmHWM is printed beside ru_maxrss as a check.

Goals: mde candles/s >= 5x backtesting.py's (checked for (a) and (b) on both sizes);
peak RSS of mde (a) <= backtesting.py's, at 1M candles.
The machine is shared: the load average is printed at the start and at the end.
"""

from __future__ import annotations

import cProfile
import io
import json
import math
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from candles import SEED, SESSION_MINUTES, generate, session_days  # bench/candles.py, shared

END_DAY = date(2025, 12, 30)
SYMBOL, TF = "NIFTY", "1m"
FAST, SLOW = 10, 30
N_1Y = 250 * SESSION_MINUTES  # 93,750
N_1M = 1_000_000
BT_CASH = 1e9  # far above the price, small enough that float cash stays exact to the paisa
REPS = {"1y": 5, "1M": 2}  # rounds; each round runs the four contenders in turn. About 1 min on a 2-core VM
Trade = tuple[int, float, int, float, int]  # entry_us, entry_price, exit_us, exit_price, size


# -- mde ---------------------------------------------------------------------------------------
def settings_for(cache: Path, now: datetime) -> Any:
    from mde.config import load

    # environ={} and a cwd without mde.toml: no config file, no MDE_* variables; "sample" resolves offline
    return load(environ={}, cache_dir=cache, source="sample", now=now)


def engine_for(cache: Path, now: datetime) -> Any:
    from mde.engine import MarketDataEngine

    return MarketDataEngine(settings_for(cache, now))


def mde_e2e(cache: Path, now: datetime, first: date, last: date) -> Any:
    from mde.replay import run_replay

    return run_replay(
        engine_for(cache, now),
        "sma_cross",
        [SYMBOL],
        TF,
        first,
        last,
        params={"fast": FAST, "slow": SLOW},
        costs="none",
    )


def mde_series(cache: Path, now: datetime) -> Any:
    """The SeriesData run_replay would build: engine.history (with closes_at) -> SeriesData."""
    from mde.strategy import SeriesData
    from mde.timeframes import parse

    eng = engine_for(cache, now)
    return SeriesData(SYMBOL, parse(TF), eng.history(SYMBOL, TF, as_of=now))


def mde_loop(data: Any, dense: bool = False) -> Any:
    """StrategyRunner.run alone over an in-memory SeriesData; returns the broker. `dense`: every
    candle is delivered to on_candle (sma_cross's wake_on is ignored), for the per-candle cost."""
    from mde.broker import SimBroker
    from mde.costs import cost_model
    from mde.strategies import SmaCross
    from mde.strategy import StrategyRunner, merge_events

    model = cost_model("none", None, None, SYMBOL)
    broker = SimBroker(1_000_000.0, lambda _s: model, lambda _s: 0.05)
    runner = StrategyRunner([SmaCross(fast=FAST, slow=SLOW)], None, symbols=[SYMBOL], timeframe=TF, broker=broker)
    runner.add_series(data)
    events = merge_events([data], [0], [len(data)])
    if dense:
        runner.start(data.ts_us[0])
        runner.wake.clear()
        for series, start, end in events:
            runner.process_span(series, start, end)
        runner.finish()
    else:
        runner.run(events, data.ts_us[0])
    return broker


def trades_of_frame(t: Any) -> list[Trade]:
    return list(
        zip(
            t["entry_ts"].dt.epoch("us").to_list(),
            t["entry_price"].to_list(),
            t["exit_ts"].dt.epoch("us").to_list(),
            t["exit_price"].to_list(),
            t["qty"].to_list(),
            strict=True,
        )
    )


def trades_of_broker(broker: Any) -> list[Trade]:
    return [(x.entry_us, x.entry_price, x.exit_us, x.exit_price, x.qty * x.side) for x in broker.trades]


# -- backtesting.py ------------------------------------------------------------------------------
def paise_sign(close: Any, fast: int, slow: int) -> Any:
    """sign(SMA_fast - SMA_slow) per bar in exact integer paise; NaN for the first slow-1 bars."""
    import numpy as np

    x = np.rint(np.asarray(close, dtype=np.float64) * 100).astype(np.int64)
    csum = np.concatenate(([0], np.cumsum(x)))
    out = np.full(len(x), np.nan)
    i = np.arange(slow - 1, len(x))
    out[slow - 1 :] = np.sign((csum[i + 1] - csum[i + 1 - fast]) * slow - (csum[i + 1] - csum[i + 1 - slow]) * fast)
    return out


def bt_strategy() -> type:
    from backtesting import Strategy

    class BtSmaCross(Strategy):
        fast = FAST
        slow = SLOW
        n_bars = 0

        def init(self) -> None:
            self.sign = self.I(paise_sign, self.data.Close, self.fast, self.slow)
            self.open_at_end: list[int] = []

        def next(self) -> None:
            now, before = self.sign[-1], self.sign[-2]
            if now > 0 >= before:
                if not self.position:
                    self.buy(size=1)
            elif now < 0 <= before and self.position.size > 0:
                self.position.close()
            if len(self.data) == self.n_bars:  # what finalize_trades will close
                self.open_at_end = [t.entry_bar for t in self.trades]

    return BtSmaCross


def bt_frame(ts_us: Any, o: Any, h: Any, low: Any, c: Any, v: Any) -> Any:
    import pandas as pd

    index = pd.to_datetime(ts_us, unit="us", utc=True).tz_convert("Asia/Kolkata")
    return pd.DataFrame({"Open": o, "High": h, "Low": low, "Close": c, "Volume": v}, index=index)


def bt_run(df: Any, strategy: type) -> Any:
    from backtesting import Backtest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(
            df, strategy, cash=BT_CASH, commission=0.0, spread=0.0, trade_on_close=False, finalize_trades=True
        )
        return bt.run(n_bars=len(df))


def trades_of_bt(stats: Any, df: Any, last_close_us: int) -> list[Trade]:
    """backtesting's trades, the one finalize_trades closed moved to mde's end-of-replay fill."""
    n = len(df)
    finalized = set(stats._strategy.open_at_end)
    last_open, last_close = float(df["Open"].iloc[-1]), float(df["Close"].iloc[-1])
    out: list[Trade] = []
    for row in stats._trades.sort_values(["EntryBar", "ExitBar"]).itertuples():
        entry = (int(row.EntryTime.value // 1000), float(row.EntryPrice))
        if row.EntryBar in finalized:
            assert row.ExitBar == n - 1 and row.ExitPrice == last_open, "finalize_trades did not fill at the last open"
            out.append((*entry, last_close_us, last_close, int(row.Size)))
        else:
            out.append((*entry, int(row.ExitTime.value // 1000), float(row.ExitPrice), int(row.Size)))
    return out


def first_difference(a: list[Trade], b: list[Trade]) -> str | None:
    for k, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"trade #{k}: {fmt_trade(x)} vs {fmt_trade(y)}"
    if len(a) != len(b):
        k = min(len(a), len(b))
        extra = a[k] if len(a) > k else b[k]
        return f"{len(a)} vs {len(b)} trades; first unmatched #{k}: {fmt_trade(extra)}"
    return None


def fmt_trade(t: Trade) -> str:
    def ts(us: int) -> str:
        return (datetime(1970, 1, 1) + timedelta(microseconds=us + 19_800_000_000)).strftime("%Y-%m-%d %H:%M")

    return f"[{ts(t[0])} @ {t[1]} -> {ts(t[2])} @ {t[3]} x{t[4]}]"


# -- children (peak memory) --------------------------------------------------------------------
def child(mode: str, args: list[str]) -> None:
    """One contender in a fresh process; prints one JSON line."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"mode": mode}
    if mode == "prepare":
        prepare(Path(args[0]))
        return
    if mode == "base-mde":
        import polars  # noqa: F401

        import mde.replay  # noqa: F401
        import mde.strategies  # noqa: F401
    elif mode == "base-bt":
        import backtesting  # noqa: F401
        import numpy  # noqa: F401
        import pandas  # noqa: F401
    elif mode == "mde":
        cache, now, first, last = Path(args[0]), ist(args[1]), date.fromisoformat(args[2]), date.fromisoformat(args[3])
        t0 = time.perf_counter()
        result = mde_e2e(cache, now, first, last)
        out.update(trades=result.trades.height, candles=result.events)
    elif mode == "mde-loop":
        cache, now = Path(args[0]), ist(args[1])
        data = mde_series(cache, now)
        t0 = time.perf_counter()
        broker = mde_loop(data)
        out.update(trades=len(broker.trades), candles=len(data))
    elif mode == "bt":
        import numpy as np

        z = np.load(args[0])
        df = bt_frame(z["ts"], z["open"], z["high"], z["low"], z["close"], z["volume"])
        del z
        strategy = bt_strategy()
        t0 = time.perf_counter()
        stats = bt_run(df, strategy)
        out.update(trades=len(stats._trades), candles=len(df))
    else:
        raise SystemExit(f"unknown child mode {mode}")
    out["seconds"] = time.perf_counter() - t0
    out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out["vmhwm_kib"] = vm_hwm()
    print(json.dumps(out), flush=True)


def vm_hwm() -> int | None:
    """Peak RSS of this process image from /proc (VmHWM, KiB): a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def ist(text: str) -> datetime:
    """An ISO instant as a ZoneInfo IST datetime. mde needs that zone: a fixed +05:30 offset (what
    datetime.fromisoformat gives) makes engine.history fail in polars (see bench/README.md)."""
    from mde.clock import IST

    return datetime.fromisoformat(text).astimezone(IST)


def run_child(mode: str, *args: str, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}


# -- report helpers ----------------------------------------------------------------------------
ROWS: list[str] = []


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, tuple[float, float, Any]]:
    """name -> (median wall s, median CPU s, last value), the functions run in turn `rounds` times."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    value: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            value[name] = None  # drop the previous result before the next run
            c0, t0 = time.process_time(), time.perf_counter()
            value[name] = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), value[k]) for k in fns}


def fmt_rate(x: float) -> str:
    return f"{x / 1e3:,.0f} k/s" if x < 1e6 else f"{x / 1e6:.2f} M/s"


def fmt_mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def row(metric: str, mde: str, peer: str, ratio: float | None, goal: str, ok: bool | None) -> None:
    verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
    ROWS.append(verdict)
    r = "-" if ratio is None else f"{ratio:.2f}x"
    print(f"  {metric:<46} {mde:>12} {peer:>12} {r:>8}  {goal:<14} {verdict}", flush=True)


def section(title: str) -> None:
    print(f"\n{title}\n  {'metric':<46} {'mde':>12} {'peer':>12} {'ratio':>8}  {'goal':<14} verdict", flush=True)


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# -- the benchmark -----------------------------------------------------------------------------
def prepare(tmp: Path) -> None:
    """Generate both series; write each to its own Parquet cache, a .npz for backtesting and
    their description to meta.json. Run in a child so that the parent stays small (see bench())."""
    import numpy as np

    from mde.clock import IST

    t0 = time.perf_counter()
    sessions = math.ceil(N_1M / SESSION_MINUTES)
    full = generate(session_days(sessions, END_DAY))
    t_gen = time.perf_counter() - t0
    frames = {"1y": full.tail(N_1Y), "1M": full.head(N_1M)}
    out: dict[str, dict[str, Any]] = {}
    for name, df in frames.items():
        last_ts = df["ts"][-1]
        now = (last_ts + timedelta(minutes=1)).astimezone(IST)  # the close of the last candle
        cache = tmp / f"cache-{name}"
        engine_for(cache, now).save_cache(SYMBOL, TF, df)
        ts_us = df["ts"].dt.epoch("us").to_numpy()
        cols = {c: df[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
        npz = tmp / f"{name}.npz"
        np.savez(npz, ts=ts_us, **cols)
        out[name] = {
            "n": df.height,
            "cache": str(cache),
            "now": now.isoformat(),
            "npz": str(npz),
            "first": df["ts"][0].date().isoformat(),
            "last": last_ts.date().isoformat(),
            "last_close_us": int(now.timestamp() * 1_000_000),
        }
    out["note"] = (
        f"generated {full.height:,} candles ({sessions:,} sessions, seed {SEED}) in {t_gen:.1f} s; "
        f"1y = {frames['1y'].height:,} ({out['1y']['first']} .. {out['1y']['last']}), "
        f"1M = {frames['1M'].height:,} ({out['1M']['first']} .. {out['1M']['last']}); "
        f"caches written in {time.perf_counter() - t0 - t_gen:.1f} s"
    )
    (tmp / "meta.json").write_text(json.dumps(out))


def load_data(tmp: Path) -> dict[str, Any]:
    """What prepare() wrote, with the arrays for backtesting's frame loaded."""
    import numpy as np

    meta = json.loads((tmp / "meta.json").read_text())
    for name in ("1y", "1M"):
        d = meta[name]
        d["cache"], d["npz"], d["now"] = Path(d["cache"]), Path(d["npz"]), ist(d["now"])
        d["first"], d["last"] = date.fromisoformat(d["first"]), date.fromisoformat(d["last"])
        with np.load(d["npz"]) as z:
            d["ts_us"] = z["ts"]
            d["cols"] = {c: z[c] for c in ("open", "high", "low", "close", "volume")}
    return meta


def bench(tmp: Path) -> None:
    """Order matters for the memory figures. On Linux a child's ru_maxrss starts from the peak RSS
    of the process it was forked from (the kernel carries it across fork and exec). So the parent
    imports nothing heavy and holds no data until the memory children have run: the data is
    generated in a child too. VmHWM (per process image) is printed beside ru_maxrss as a check."""
    from importlib.metadata import version

    t_start = time.perf_counter()
    versions = "  ".join(f"{p} {version(p)}" for p in ("polars", "backtesting", "pandas", "numpy"))
    print(
        f"mde bench/replay.py  {datetime.now():%Y-%m-%d %H:%M}  nproc={os.cpu_count()}  python "
        f"{platform.python_version()}  {versions}  (mde {version('mde')} from {Path(__file__).resolve().parents[1]})"
    )
    print(f"load average at start: {load_avg()}", flush=True)
    run_child("prepare", str(tmp), cwd=tmp)
    meta = json.loads((tmp / "meta.json").read_text())
    print(meta["note"], flush=True)

    # -- peak memory, 1M candles, one subprocess per contender, while this process is still small
    d = meta["1M"]
    section(
        f"peak memory, {d['n']:,} candles, one subprocess each   [ru_maxrss after the run; ratio = mde / backtesting.py]"
    )
    parent_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base_mde = run_child("base-mde", cwd=tmp)
    base_bt = run_child("base-bt", cwd=tmp)
    m_mde = run_child("mde", d["cache"], d["now"], d["first"], d["last"], cwd=tmp)
    m_loop = run_child("mde-loop", d["cache"], d["now"], cwd=tmp)
    m_bt = run_child("bt", d["npz"], cwd=tmp)
    assert m_mde["candles"] == m_loop["candles"] == m_bt["candles"] == d["n"]
    assert m_mde["trades"] == m_loop["trades"] == m_bt["trades"]
    row(
        "1M (a) run_replay from Parquet vs Backtest.run",
        fmt_mib(m_mde["maxrss_kib"]),
        fmt_mib(m_bt["maxrss_kib"]),
        m_mde["maxrss_kib"] / m_bt["maxrss_kib"],
        "<= 1x",
        m_mde["maxrss_kib"] <= m_bt["maxrss_kib"],
    )
    row(
        "1M (b) history + SeriesData + loop (info)",
        fmt_mib(m_loop["maxrss_kib"]),
        fmt_mib(m_bt["maxrss_kib"]),
        m_loop["maxrss_kib"] / m_bt["maxrss_kib"],
        "(info)",
        None,
    )
    row(
        "baseline: python + imports (info)",
        fmt_mib(base_mde["maxrss_kib"]),
        fmt_mib(base_bt["maxrss_kib"]),
        base_mde["maxrss_kib"] / base_bt["maxrss_kib"],
        "(info)",
        None,
    )
    hwm = [x.get("vmhwm_kib") for x in (m_mde, m_loop, m_bt, base_mde, base_bt)]
    if all(hwm):
        print(
            f"  VmHWM check (MiB): mde {hwm[0] / 1024:,.0f}, loop {hwm[1] / 1024:,.0f}, backtesting.py {hwm[2] / 1024:,.0f}, "
            f"baselines {hwm[3] / 1024:,.0f} / {hwm[4] / 1024:,.0f}; this process when they started "
            f"{parent_kib / 1024:,.0f} MiB"
        )
    print(
        f"  (mde: python + polars + mde.replay; backtesting.py: python + backtesting + pandas + numpy, its frame from a "
        f".npz. Their own timings: run_replay {m_mde['seconds']:.2f} s, loop {m_loop['seconds']:.2f} s, "
        f"Backtest.run {m_bt['seconds']:.2f} s; trades {m_mde['trades']} / {m_loop['trades']} / {m_bt['trades']})",
        flush=True,
    )

    # -- speed and trade lists, in this process
    data = load_data(tmp)
    strategy = bt_strategy()
    checks: list[tuple[str, bool, str | None]] = []
    rates: dict[tuple[str, str], float] = {}
    for size in ("1y", "1M"):
        d = data[size]
        n = d["n"]
        section(
            f"sma_cross {FAST}/{SLOW} on {n:,} generated 1m candles   [candles/s, median; ratio = mde / backtesting.py]"
        )
        t0 = time.perf_counter()
        series = mde_series(d["cache"], d["now"])
        t_series = time.perf_counter() - t0
        df = bt_frame(d["ts_us"], *(d["cols"][c] for c in ("open", "high", "low", "close", "volume")))
        # (the runs happen in this iteration: the defaults bind this size's data, as the names would)
        got = interleaved(
            {
                "e2e": lambda d=d: mde_e2e(d["cache"], d["now"], d["first"], d["last"]),
                "loop": lambda series=series: mde_loop(series),
                "dense": lambda series=series: mde_loop(series, dense=True),
                "bt": lambda df=df: bt_run(df, strategy),
            },
            REPS[size],
        )
        (t_e2e, c_e2e, result), (t_loop, c_loop, broker), (t_bt, c_bt, stats) = got["e2e"], got["loop"], got["bt"]
        t_dense, dense_broker = got["dense"][0], got["dense"][2]
        del got
        assert result.events == n, f"run_replay processed {result.events} candles, not {n}"

        rates[(size, "e2e")], rates[(size, "loop")], rates[(size, "bt")] = n / t_e2e, n / t_loop, n / t_bt
        row(
            f"{size} (a) run_replay end-to-end vs Backtest.run",
            fmt_rate(n / t_e2e),
            fmt_rate(n / t_bt),
            t_bt / t_e2e,
            ">= 5x",
            t_bt / t_e2e >= 5,
        )
        row(
            f"{size} (b) StrategyRunner loop alone vs Backtest.run",
            fmt_rate(n / t_loop),
            fmt_rate(n / t_bt),
            t_bt / t_loop,
            ">= 5x",
            t_bt / t_loop >= 5,
        )
        row(
            f"{size} (c) loop, on_candle at every candle (info)",
            fmt_rate(n / t_dense),
            fmt_rate(n / t_bt),
            t_bt / t_dense,
            "(info)",
            None,
        )
        row(
            f"{size} (a) by CPU time of the process",
            fmt_rate(n / c_e2e),
            fmt_rate(n / c_bt),
            c_bt / c_e2e,
            "(info)",
            None,
        )
        row(
            f"{size} (b) by CPU time of the process",
            fmt_rate(n / c_loop),
            fmt_rate(n / c_bt),
            c_bt / c_loop,
            "(info)",
            None,
        )
        print(
            f"  {size} medians of {REPS[size]} interleaved rounds, wall (CPU): run_replay {t_e2e:.3f} s ({c_e2e:.3f}), "
            f"loop {t_loop:.3f} s ({c_loop:.3f}), Backtest.run {t_bt:.3f} s ({c_bt:.3f}); building the SeriesData "
            f"(engine.history + lists, not in (b)) {t_series:.3f} s",
            flush=True,
        )

        got_e2e, got_loop = trades_of_frame(result.trades), trades_of_broker(broker)
        want = trades_of_bt(stats, df, d["last_close_us"])
        diff = (
            first_difference(got_e2e, want)
            or first_difference(got_loop, got_e2e)
            or first_difference(trades_of_broker(dense_broker), got_e2e)
        )
        end_open = sum(1 for r in result.trades["exit_reason"].to_list() if r == "end of replay")
        print(
            f"  {size} trades: run_replay {len(got_e2e)}, loop {len(got_loop)} (every candle: "
            f"{len(dense_broker.trades)}), backtesting.py {len(want)} "
            f"({end_open} still open at the end)",
            flush=True,
        )
        bt_pnl = sum(round((x[3] - x[1]) * x[4] * 100) for x in want) / 100
        mde_pnl = result.metrics["net_pnl"]
        ok = diff is None and round(mde_pnl * 100) == round(bt_pnl * 100)
        print(f"  {size} total P&L: mde {mde_pnl:,.2f}  backtesting.py {bt_pnl:,.2f}", flush=True)
        checks.append((size, ok, diff))
        print(
            f"  {size} identical trade lists and P&L: {'PASS' if ok else 'FAIL'}"
            + (f"  first difference: {diff}" if diff else ""),
            flush=True,
        )
        del result, broker, dense_broker, series, stats, df

    for _size, ok, _ in checks:
        ROWS.append("PASS" if ok else "FAIL")
    npass, nfail, ninfo = ROWS.count("PASS"), ROWS.count("FAIL"), ROWS.count("info")
    print(f"\nload average at end: {load_avg()}")
    verdicts = " ".join(f"{s}={'PASS' if ok else 'FAIL'}" for s, ok, _ in checks)
    print(
        f"SUMMARY: {npass} PASS, {nfail} FAIL, {ninfo} info; trade lists {verdicts}; "
        f"mde/backtesting.py candles/s 1y e2e {rates[('1y', 'e2e')] / rates[('1y', 'bt')]:.1f}x loop "
        f"{rates[('1y', 'loop')] / rates[('1y', 'bt')]:.1f}x, 1M e2e {rates[('1M', 'e2e')] / rates[('1M', 'bt')]:.1f}x loop "
        f"{rates[('1M', 'loop')] / rates[('1M', 'bt')]:.1f}x; peak RSS 1M mde {fmt_mib(m_mde['maxrss_kib'])} vs "
        f"backtesting.py {fmt_mib(m_bt['maxrss_kib'])}  ({time.perf_counter() - t_start:.0f} s)",
        flush=True,
    )


def profile(tmp: Path) -> None:
    """cProfile of StrategyRunner.run (mde (b)) over the 1M candles: top 15 by own and cumulative time."""
    print(f"load average at start: {load_avg()}", flush=True)
    run_child("prepare", str(tmp), cwd=tmp)
    d = load_data(tmp)["1M"]
    series = mde_series(d["cache"], d["now"])
    t0 = time.perf_counter()
    mde_loop(series)
    plain = time.perf_counter() - t0
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    broker = mde_loop(series)
    prof.disable()
    profiled = time.perf_counter() - t0
    print(
        f"mde loop on {len(series):,} candles ({len(broker.trades)} trades): {plain:.2f} s plain, {profiled:.2f} s under cProfile"
    )
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(15)
        print(f"\ntop 15 by {key}:")
        print(buf.getvalue().split("\n\n", 1)[-1].rstrip())
    print(f"\nload average at end: {load_avg()}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="mde-bench-replay-"))
    cwd = os.getcwd()
    os.chdir(tmp)  # no ./mde.toml here
    try:
        if "--profile" in argv:
            profile(tmp)
        else:
            bench(tmp)
    except Exception:  # a report, not a test: say what broke and exit 0
        traceback.print_exc()
        print("SUMMARY: the benchmark did not complete (see the traceback above)")
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
