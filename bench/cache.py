"""Benchmark: mde's Parquet candle cache against the previous version's JSON cache, the
in-process read path, and the start-up of the `mde` command against floors.

    uv run python bench/cache.py            # or: .venv/bin/python bench/cache.py

One run prints every figure beside its comparison, the ratio and PASS/FAIL against the
goals below, then a summary line. It always exits 0: it is a report, not a test.

Data: GENERATED 1m candles, a seeded random walk (log returns, 0.05 ticks, overnight gaps,
lognormal volume) on NSE session minutes 09:15-15:29 of weekdays that are not NSE holidays
or special sessions, ending 2025-12-30: 1 year = 250 sessions x 375 = 93,750 candles,
5 years = 1,250 sessions = 468,750, and a one-month series (December 2025, 21 sessions).
The 1-year series is the last 250 sessions of the 5-year one, so both end in the same
partition. Everything lives in a temporary folder that is removed at the end; the OS page
cache is warm for both formats (every file was just written), so the figures compare CPU
and format work, not the disk.

Goals (ratio = peer/mde for "x smaller/faster", mde/peer for "<= k x"):
  Parquet (through MarketDataEngine) vs the old JSON cache file (one file per series, a list
  of {ts, open, high, low, close, volume}, ts ISO 8601 +05:30; read with json.load, appended
  by load + append + json.dump of the whole file, as the old version did):
    size on disk >= 10x smaller, full load >= 20x faster, last 50 candles >= 50x faster,
    appending one candle >= 20x faster.
  get_window(symbol, "1m", limit=50) in process: <= 2 ms median on a warm engine (a fresh
    engine per call is reported too, for information), 5 years / 1 year <= 1.3;
    appending one candle to 5 years <= 1.5x appending it to a one-month series.
  `mde window NIFTY --limit 50` <= 1.25x bench/floor_window.py (python + polars + tail(50)
    of the same partition + print); `mde --help` <= 1.3x bench/bare_typer.py --help.
    Subprocesses: the same interpreter (sys.executable), a temporary cwd, MDE_*/KITE_*
    removed from the environment (so no mde.toml is read; MDE_SOURCE=sample as in the repo's
    config), byte-code cached in a temporary PYTHONPYCACHEPREFIX (the steady state of an
    installed package), one warm-up, then runs of mde and its floor interleaved.

"fresh" = a new MarketDataEngine per call (its in-memory partition cache is empty, as in a
new `mde` process); "warm" = one engine reused, as a backtest or paper session does.
Append measurements use a fresh engine (a cron `mde refresh` is a new process each time),
with the warm figure beside it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
from candles import SEED, SESSION_MINUTES, generate, session_days  # bench/candles.py, shared

from mde.clock import IST
from mde.config import Settings, load
from mde.engine import MarketDataEngine
from mde.symbols import resolve_offline
from mde.timeframes import parse

BENCH = Path(__file__).resolve().parent
END_DAY = date(2025, 12, 30)  # Tuesday; Dec 31 is a session of the same month partition
APPEND_DAY = date(2025, 12, 31)
SYMBOL, TF = "NIFTY", "1m"

# Fixed repeats: the whole run stays well under 2 minutes on a 2-core VM.
REPS = {
    "json_load_1y": 5,
    "json_load_5y": 3,
    "pq_load": 11,
    "pq_last50": 25,
    "json_append_1y": 3,
    "json_append_5y": 1,  # JSON 5y: ~5-8 s per append
    "pq_append": 15,
    "gw_warm": 300,
    "gw_fresh": 30,
    "subproc": 15,
}


def write_json_cache(df: pl.DataFrame, path: Path) -> None:
    """The old cache file, byte for byte what `json.dump(list_of_dicts, fh)` writes (default
    separators), built by polars because json.dump of 468,750 dicts takes seconds."""
    rows = df.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%:z"))
    text = rows.write_json().replace("},{", "}, {").replace(',"', ', "').replace('":', '": ')
    probe = rows.head(200)
    assert probe.write_json().replace("},{", "}, {").replace(',"', ', "').replace('":', '": ') == json.dumps(
        probe.to_dicts()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# -- the old JSON cache's operations ------------------------------------------------------
def json_load(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def json_append(path: Path, candle: dict) -> None:
    rows = json_load(path)
    rows.append(candle)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rows, fh)


# -- timing -------------------------------------------------------------------------
def median_s(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_b(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


ROWS: list[tuple[str, str, str, str, str, str]] = []


def row(metric: str, mde: str, peer: str, ratio: float | None, goal: str, ok: bool | None) -> None:
    verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
    ROWS.append((metric, mde, peer, "-" if ratio is None else f"{ratio:.2f}x", goal, verdict))
    print(f"  {metric:<48} {mde:>10} {peer:>10} {ROWS[-1][3]:>8}  {goal:<16} {verdict}", flush=True)


def section(title: str) -> None:
    print(f"\n{title}\n  {'metric':<48} {'mde':>10} {'peer':>10} {'ratio':>8}  {'goal':<16} verdict", flush=True)


# -- helpers around mde -----------------------------------------------------------------
def settings_for(cache: Path, now: datetime) -> Settings:
    # environ={} and a cwd without mde.toml: no config file, no MDE_* variables
    return load(environ={}, cache_dir=cache, source="kite", now=now)


class ReadCounter:
    """Counts Parquet files actually decoded (cache misses) while active."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._orig = pl.read_parquet

    def __enter__(self) -> ReadCounter:
        def counting(source, *a, **k):  # type: ignore[no-untyped-def]
            self.paths.append(Path(str(source)).name)
            return self._orig(source, *a, **k)

        pl.read_parquet = counting  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        pl.read_parquet = self._orig  # type: ignore[assignment]


def append_candles(start_close: float) -> tuple[Callable[[], pl.DataFrame], Callable[[], dict]]:
    """Two generators of 'the next candle' on APPEND_DAY (one for Parquet, one for JSON)."""
    state = {"pq": 0, "js": 0}
    base = datetime(APPEND_DAY.year, APPEND_DAY.month, APPEND_DAY.day, 9, 15, tzinfo=IST)

    def pq() -> pl.DataFrame:
        ts = base + timedelta(minutes=state["pq"])
        state["pq"] += 1
        return pl.DataFrame(
            {
                "ts": [ts],
                "open": [start_close],
                "high": [start_close + 1],
                "low": [start_close - 1],
                "close": [start_close],
                "volume": [1000],
            }
        )

    def js() -> dict:
        ts = base + timedelta(minutes=state["js"])
        state["js"] += 1
        return {
            "ts": ts.isoformat(),
            "open": start_close,
            "high": start_close + 1,
            "low": start_close - 1,
            "close": start_close,
            "volume": 1000,
        }

    return pq, js


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    return dt


def interleaved(
    a: list[str], b: list[str], reps: int, cwd: Path, env: dict[str, str], warm_up: bool = True
) -> tuple[float, float]:
    if warm_up:
        run(a, cwd, env), run(b, cwd, env)  # page cache, byte-code cache
    ta, tb = [], []
    for _ in range(reps):
        ta.append(run(a, cwd, env))
        tb.append(run(b, cwd, env))
    return statistics.median(ta), statistics.median(tb)


def importtime_top(cmd: list[str], cwd: Path, env: dict[str, str], n: int = 6) -> list[tuple[str, float]]:
    """Top-level imports (not nested in another) by cumulative time, from -X importtime."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    out = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, name = line.split("|", 2)
        if name.startswith(" ") and not name.startswith("  "):  # depth 0: exactly one space
            out.append((name.strip(), int(cum) / 1000))
    return sorted(out, key=lambda x: -x[1])[:n]


def command_tree(app: object) -> dict[str, list[tuple]]:
    """Every command's parameters (name, flags, type, default, help) of a typer app."""
    import typer.main

    def sig(p: object) -> tuple:
        desc = getattr(p, "type_descriptor", None)
        kind = re.sub(r"\b(mde\.cli|bare_typer)\.", "", repr(getattr(desc, "annotation", None)))
        return (p.name, tuple(p.opts), kind, repr(p.default), getattr(p, "help", None))  # type: ignore[attr-defined]

    group = typer.main.get_command(app)  # type: ignore[arg-type]
    tree = {"": [sig(p) for p in group.params]}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        tree[name] = [sig(p) for p in cmd.params] + [("__doc__", cmd.help)]
    return tree


def bare_typer_drift() -> list[str]:
    """Commands whose signature in bench/bare_typer.py differs from src/mde/cli.py."""
    import importlib.util

    import mde.cli

    spec = importlib.util.spec_from_file_location("bare_typer", BENCH / "bare_typer.py")
    assert spec is not None and spec.loader is not None
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    ours, theirs = command_tree(mde.cli.app), command_tree(bare.app)
    return sorted(name or "(options)" for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))


# -- the benchmark ------------------------------------------------------------------------
def main() -> int:
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mde-bench-"))
    os.chdir(tmp)  # no ./mde.toml here
    try:
        return bench(tmp, t_start)
    finally:
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


def bench(tmp: Path, t_start: float) -> int:
    import mde

    print(
        f"mde bench/cache.py  {datetime.now():%Y-%m-%d %H:%M}  nproc={os.cpu_count()}  "
        f"python {platform.python_version()}  polars {pl.__version__}  load average {os.getloadavg()[0]:.2f}  "
        f"({Path(mde.__file__).parent})"
    )
    now = datetime(APPEND_DAY.year, APPEND_DAY.month, APPEND_DAY.day, 15, 30, tzinfo=IST)
    inst, tf = resolve_offline(SYMBOL), parse(TF)

    # Generate and write the three series (Parquet through the engine, JSON like the old version).
    t0 = time.perf_counter()
    days5 = session_days(1250, END_DAY)
    full5 = generate(days5)
    t_gen = time.perf_counter() - t0
    y1 = full5.tail(250 * SESSION_MINUTES)
    month = full5.filter(pl.col("ts") >= datetime(END_DAY.year, END_DAY.month, 1, tzinfo=IST))
    series = {"1y": y1, "5y": full5, "1mo": month}
    caches = {k: tmp / "parquet" / k for k in series}
    jsons = {k: tmp / "json" / k / f"{SYMBOL}_{TF}.json" for k in ("1y", "5y")}
    for k, df in series.items():
        MarketDataEngine(settings_for(caches[k], now)).save_cache(SYMBOL, TF, df)
    for k in jsons:
        write_json_cache(series[k], jsons[k])
    print(
        f"generated 1y={y1.height:,} 5y={full5.height:,} 1mo={month.height:,} candles "
        f"({days5[0]} .. {days5[-1]}, seed {SEED}) in {t_gen:.1f} s; wrote both caches in {time.perf_counter() - t0 - t_gen:.1f} s"
    )

    def eng(k: str) -> MarketDataEngine:
        return MarketDataEngine(settings_for(caches[k], now))

    # -- Parquet vs JSON --------------------------------------------------------------------
    section("Parquet cache (mde) vs the old JSON cache file   [ratio = JSON / Parquet]")
    for k in ("1y", "5y"):
        store = eng(k).store
        pq_bytes = store.size_on_disk(inst, tf) + (store.series_dir(inst, tf) / "manifest.json").stat().st_size
        js_bytes = jsons[k].stat().st_size
        nparts = len(store.partitions(inst, tf))
        row(
            f"{k} size on disk ({nparts} files + manifest)",
            fmt_b(pq_bytes),
            fmt_b(js_bytes),
            js_bytes / pq_bytes,
            ">= 10x smaller",
            js_bytes / pq_bytes >= 10,
        )

        print(
            f"  ({k}: Parquet {pq_bytes / series[k].height:.1f} B/candle, JSON {js_bytes / series[k].height:.1f} B/candle)"
        )

        # The old cache answers "all candles" and "last 50" the same way: json.load the whole
        # file (then slice), so one measurement serves as the peer of both rows.
        got: dict[str, list] = {}
        t_js = median_s(lambda: got.__setitem__("tail", json_load(jsons[k])[-50:]), REPS[f"json_load_{k}"])
        assert got["tail"][-1]["ts"] == series[k]["ts"][-1].isoformat(), "JSON cache does not match"
        assert eng(k).load_cache(SYMBOL, TF).height == series[k].height
        t_pq = median_s(lambda: eng(k).load_cache(SYMBOL, TF), REPS["pq_load"])
        row(
            f"{k} full load (fresh engine / json.load)",
            fmt_t(t_pq),
            fmt_t(t_js),
            t_js / t_pq,
            ">= 20x faster",
            t_js / t_pq >= 20,
        )
        parts = store.partitions(inst, tf)
        t_raw = median_s(lambda: pl.concat([pl.read_parquet(p) for p in parts]), REPS["pq_load"])
        row(
            f"{k} full load: raw polars read of the same files",
            fmt_t(t_raw),
            fmt_t(t_js),
            t_js / t_raw,
            "(floor, info)",
            None,
        )

        assert eng(k).get_window(SYMBOL, TF, limit=50)["ts"].to_list() == series[k].tail(50)["ts"].to_list()
        t_pq = median_s(lambda: eng(k).get_window(SYMBOL, TF, limit=50), REPS["pq_last50"])
        row(
            f"{k} last 50 (fresh get_window / load+[-50:])",
            fmt_t(t_pq),
            fmt_t(t_js),
            t_js / t_pq,
            ">= 50x faster",
            t_js / t_pq >= 50,
        )

    # -- get_window in process ------------------------------------------------------------
    section("get_window(NIFTY, 1m, limit=50) in process   [goal on the warm engine]")
    gw: dict[tuple[str, str], float] = {}
    for k in ("1y", "5y"):
        e = eng(k)
        e.get_window(SYMBOL, TF, limit=50)
        gw[k, "warm"] = median_s(lambda: e.get_window(SYMBOL, TF, limit=50), REPS["gw_warm"])
        gw[k, "fresh"] = median_s(lambda: eng(k).get_window(SYMBOL, TF, limit=50), REPS["gw_fresh"])
        row(
            f"{k} warm engine, median of {REPS['gw_warm']}",
            fmt_t(gw[k, "warm"]),
            "2 ms",
            gw[k, "warm"] / 2e-3,
            "<= 2 ms",
            gw[k, "warm"] <= 2e-3,
        )
        row(
            f"{k} fresh engine per call, median of {REPS['gw_fresh']}",
            fmt_t(gw[k, "fresh"]),
            "2 ms",
            gw[k, "fresh"] / 2e-3,
            "(<= 2 ms, info)",
            None,
        )
    r = gw["5y", "warm"] / gw["1y", "warm"]
    row("5y / 1y, warm", fmt_t(gw["5y", "warm"]), fmt_t(gw["1y", "warm"]), r, "<= 1.3x", r <= 1.3)
    r = gw["5y", "fresh"] / gw["1y", "fresh"]
    row("5y / 1y, fresh", fmt_t(gw["5y", "fresh"]), fmt_t(gw["1y", "fresh"]), r, "<= 1.3x", r <= 1.3)
    with ReadCounter() as rc:
        eng("5y").get_window(SYMBOL, TF, limit=50)
    n5 = len(eng("5y").store.partitions(inst, tf))
    print(f"  (a fresh 5y get_window decodes {len(rc.paths)} of {n5} partition files: {', '.join(rc.paths)})")

    # -- appends (last: they change the series) -----------------------------------------------
    section("append one candle   [fresh engine per append, as `mde refresh` does; warm beside it]")
    last_close = float(full5["close"][-1])
    app: dict[tuple[str, str], float] = {}
    makers = {}
    # Parquet appends first, each after os.sync(): the JSON appends write tens of MB, and on ext4
    # the next fsyncs would wait for that data, charging the JSON's disk writes to mde.
    for k in ("1mo", "1y", "5y"):
        next_pq, next_js = makers[k] = append_candles(last_close)
        os.sync()
        app[k, "fresh"] = median_s(lambda: eng(k).save_cache(SYMBOL, TF, next_pq()), REPS["pq_append"])
        e = eng(k)
        e.save_cache(SYMBOL, TF, next_pq())
        app[k, "warm"] = median_s(lambda: e.save_cache(SYMBOL, TF, next_pq()), REPS["pq_append"])
    for k in ("1y", "5y"):
        if k in jsons:
            next_js = makers[k][1]
            t_js = median_s(lambda: json_append(jsons[k], next_js()), REPS[f"json_append_{k}"])
            r = t_js / app[k, "fresh"]
            row(
                f"{k} append vs JSON load+append+dump", fmt_t(app[k, "fresh"]), fmt_t(t_js), r, ">= 20x faster", r >= 20
            )
            expect = series[k].height + 2 * REPS["pq_append"] + 1
            assert eng(k).load_cache(SYMBOL, TF).height == expect, "appends did not land"
    next_pq = makers["5y"][0]
    for mode in ("fresh", "warm"):
        r = app["5y", mode] / app["1mo", mode]
        row(f"5y / one-month append, {mode}", fmt_t(app["5y", mode]), fmt_t(app["1mo", mode]), r, "<= 1.5x", r <= 1.5)
    with ReadCounter() as rc:
        eng("5y").save_cache(SYMBOL, TF, next_pq())
    print(f"  (a fresh 5y append decodes {len(rc.paths)} of {n5} partition files)")

    # -- start-up of the command ----------------------------------------------------------------
    section(
        f"command start-up, subprocess wall time, median of {REPS['subproc']} after a warm-up   [ratio = mde / floor]"
    )
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    base_env["MDE_SOURCE"] = "sample"  # as the repo's mde.toml: the window ends where the sample ends
    # Steady state of an installed package: byte-code compiled once (by the warm-up) and reused,
    # for mde and the floors alike. The cache goes to a temporary prefix, so neither the venv nor
    # src/ is touched, and PYTHONDONTWRITEBYTECODE (set in some sandboxes) is lifted for it.
    env = {k: v for k, v in base_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    cwd = tmp / "cwd"
    cwd.mkdir()
    sample_cache = tmp / "sample-cache"
    MarketDataEngine(load(environ={}, cache_dir=sample_cache, source="sample")).refresh("NIFTY", "5m")
    part = MarketDataEngine(load(environ={}, cache_dir=sample_cache)).store.partitions(inst, parse("5m"))[-1]
    py = sys.executable
    mde_window = [py, "-m", "mde", "--cache-dir", str(sample_cache), "window", "NIFTY", "--limit", "50"]
    floor_window = [py, str(BENCH / "floor_window.py"), str(part)]
    t_mde, t_floor = interleaved(mde_window, floor_window, REPS["subproc"], cwd, env)
    r_window = t_mde / t_floor
    row(
        "mde window NIFTY --limit 50 vs floor_window.py",
        fmt_t(t_mde),
        fmt_t(t_floor),
        r_window,
        "<= 1.25x",
        r_window <= 1.25,
    )
    t_csv = median_s(lambda: run([*mde_window, "--format", "csv"], cwd, env), 3)
    row(
        "  same with --format csv (no rich table), 3 runs",
        fmt_t(t_csv),
        fmt_t(t_floor),
        t_csv / t_floor,
        "(info)",
        None,
    )
    t_mde_h, t_bare = interleaved(
        [py, "-m", "mde", "--help"], [py, str(BENCH / "bare_typer.py"), "--help"], REPS["subproc"], cwd, env
    )
    r_help = t_mde_h / t_bare
    row("mde --help vs bare_typer.py --help", fmt_t(t_mde_h), fmt_t(t_bare), r_help, "<= 1.3x", r_help <= 1.3)
    drift = bare_typer_drift()
    if drift:
        print(
            f"  WARNING: bench/bare_typer.py is out of step with src/mde/cli.py for: {', '.join(drift)}; "
            "copy the signatures again, the --help floor is not like for like"
        )
    if base_env.get("PYTHONDONTWRITEBYTECODE"):
        # How this environment runs it: no .pyc is ever written, and the venv ships none for
        # typer/pydantic/rich (nor src/mde), so every start compiles them again.
        t_m, t_f = interleaved(mde_window, floor_window, 1, cwd, base_env, warm_up=False)  # nothing to warm
        row(
            "  mde window, PYTHONDONTWRITEBYTECODE=1 as set here, 1 run",
            fmt_t(t_m),
            fmt_t(t_f),
            t_m / t_f,
            "(info)",
            None,
        )
    t_py = median_s(lambda: run([py, "-c", "pass"], cwd, env), 5)
    print(f"  (bare `python -c pass`: {fmt_t(t_py)}; partition read by the floor: {part.name})")
    if r_window > 1.25:
        top = importtime_top(mde_window, cwd, env)
        print(
            "  mde window top-level imports (-X importtime, cumulative): "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in top)
        )
        top = importtime_top(floor_window, cwd, env, 3)
        print("  floor top-level imports: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in top))

    fails = [r for r in ROWS if r[5] == "FAIL"]
    passes = [r for r in ROWS if r[5] == "PASS"]
    print(
        f"\nSUMMARY: {len(passes)} PASS, {len(fails)} FAIL, {sum(r[5] == 'info' for r in ROWS)} info"
        + (f"; FAIL: {'; '.join(r[0] for r in fails)}" if fails else "")
        + f"  ({time.perf_counter() - t_start:.0f} s, load average {os.getloadavg()[0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
