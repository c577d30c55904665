"""Benchmark: back-filling and refreshing from Kite, against the local Kite-compatible
server with Kite's real historical rate limit (3 requests per second, 429 beyond).

    .venv/bin/python bench/refresh.py [--timeline]

Scenario (issue: "back-fill one year of 1m and 5m for NIFTY and BANKNIFTY, then refresh"):
  * The server (tests/kite_server.py) runs in its OWN process (this file with --serve), so
    its Python work does not compete with the client for the GIL. It serves:
      5m  data/nse/NIFTY50_5m_2024.csv and BANKNIFTY_5m_2024.csv (tokens 256265 / 260105);
      1m  GENERATED: a seeded random walk on every NSE session minute of 2024 (and of the
          next session day, 2025-01-01) as mde.calendar.nse().sessions(day) lists them:
          92,520 candles per index in 2024 (249 sessions, special sessions included).
    Its clock (`now`) is pinned to MDE_NOW = 2024-12-31T16:00+05:30; Kite's rate limits are
    on (historical: 3 per 1 s sliding window, 429 beyond). A /__bench/ side route hands the
    request log back and moves the clock; it is neither logged nor rate-limited.
  * floor: the real kiteconnect client alone (KiteConnect(...).historical_data), the same
    chunks mde requests (mde.sources.kite.chunk_ranges over the same range), one after
    another; the sum of the call times is "the client's own time" (request + its dateutil
    parsing; mde's client is a KiteConnect subclass that parses timestamps with
    datetime.fromisoformat instead, so it is not bound by that time). Calls are paced so that the server's 3/s window is never exceeded; the pacing
    sleeps are not counted. It is measured before and after the mde back-fill (the machine
    may be shared) and the mean is used: floor = max(minimum requests / 3 per s, that time).
  * mde back-fill: MarketDataEngine(settings, KiteSource(settings)).download(sym, tf,
    "2024-01-01", "2024-12-31") for the 4 series one after another, a fresh cache folder,
    the default RetryPolicy and the default process-wide rate limiter. Wall time includes
    resolving the symbols. kiteconnect, polars and mde are imported before any timing.
  * check: every candle mde cached equals what the plain kiteconnect client returned for the
    same chunks in floor pass 1 (built into frames the same way, outside the timed calls).
  * for information: the same back-fill with KiteSource(settings, max_workers=1).
  * second run: a new engine and KiteSource, refresh() for the 4 series (a) at the same
    closed-market clock (expect 0 requests), (b) with mde's and the server's clocks moved to
    the next session day 09:30 (expect <= 1 request per series; 15 1m / 3 5m candles added).
  * minimum requests = sum over series of ceil(calendar days inclusive / Kite's max days
    per request for the interval), from tests/kite_server.MAX_DAYS (Kite's documented
    limits), independent of mde's chunker.

Goals: back-fill historical requests == minimum; wall <= 1.15 x floor; zero 429s (server
log, every phase; KiteSource.stats too); second-run requests <= number of series; cached
candles == plain kiteconnect's.
One run prints every figure, the ratios and PASS/FAIL; it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import deque
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO / "src", REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

NOW = "2024-12-31T16:00:00+05:30"
NEXT = "2025-01-01T09:30:00+05:30"  # the next session day, 15 minutes after the open
START, END = "2024-01-01", "2024-12-31"
NIFTY, BANKNIFTY = 256265, 260105
# (symbol, mde timeframe, token, Kite interval)
SERIES = [
    ("NIFTY", "1m", NIFTY, "minute"),
    ("NIFTY", "5m", NIFTY, "5minute"),
    ("BANKNIFTY", "1m", BANKNIFTY, "minute"),
    ("BANKNIFTY", "5m", BANKNIFTY, "5minute"),
]
CSV_5M = {NIFTY: REPO / "data/nse/NIFTY50_5m_2024.csv", BANKNIFTY: REPO / "data/nse/BANKNIFTY_5m_2024.csv"}
INSTRUMENTS_CSV = REPO / "data/instruments.csv"
HIST = "/instruments/historical"
RATE = 3  # Kite's historical requests per second
WALL_GOAL = 1.15
IST = timezone(timedelta(hours=5, minutes=30), "IST")


# ======================================================================================
# the server process


def generate_minutes(token: int, first_open: float, days: list[date]) -> list[tuple]:
    """Seeded random-walk 1m candles on every session minute of `days` (indices: volume 0)."""
    from mde.calendar import nse

    cal = nse()
    rng = random.Random(token)
    price = first_open
    rows = []
    for day in days:
        midnight = datetime(day.year, day.month, day.day, tzinfo=IST)
        for start, end in cal.sessions(day):
            for minute in range(start, end):
                o = price
                price = max(1.0, price * math.exp(rng.gauss(0.0, 0.0004)))
                c = price
                h = max(o, c) * (1 + abs(rng.gauss(0.0, 0.0002)))
                low = min(o, c) * (1 - abs(rng.gauss(0.0, 0.0002)))
                rows.append(
                    (midnight + timedelta(minutes=minute), round(o, 2), round(h, 2), round(low, 2), round(c, 2), 0)
                )
    return rows


def five_minute(rows: list[tuple]) -> list[tuple]:
    """Group 1m rows of one day into 5m buckets aligned to 09:15."""
    out: dict[datetime, list[tuple]] = {}
    for r in rows:
        ts = r[0]
        anchor = ts.replace(hour=9, minute=15)
        bucket = anchor + timedelta(minutes=(int((ts - anchor).total_seconds()) // 60) // 5 * 5)
        out.setdefault(bucket, []).append(r)
    return [(ts, g[0][1], max(x[2] for x in g), min(x[3] for x in g), g[-1][4], 0) for ts, g in sorted(out.items())]


def serve() -> None:
    """Load the data, print {url, api_key, access_token, served} as one JSON line, serve
    until stdin closes (the parent exits or closes it)."""
    from urllib.parse import parse_qs, urlsplit

    from kite_server import KiteServer

    class BenchServer(KiteServer):
        def _handle(self, method, raw_path, headers, body):  # type: ignore[override]
            if raw_path.startswith("/__bench/"):
                return self._bench(raw_path)
            return super()._handle(method, raw_path, headers, body)

        def _bench(self, raw_path: str):
            parts = urlsplit(raw_path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/__bench/log":
                with self._lock:
                    recs = list(self.requests)
                return self._json(
                    200,
                    [
                        {
                            "path": r.path,
                            "t": r.time,
                            "status": r.status,
                            "from": r.query.get("from"),
                            "to": r.query.get("to"),
                        }
                        for r in recs
                    ],
                )
            if parts.path == "/__bench/now":
                self.now = datetime.fromisoformat(query["ts"])
                return self._json(200, {"now": self.now.isoformat()})
            return self._json(404, {"status": "error", "message": "unknown bench route"})

    server = BenchServer(instruments_csv=INSTRUMENTS_CSV)
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(367)]  # 2024 and 2025-01-01
    for token, path in CSV_5M.items():
        server.load_csv(token, "5minute", path)
        with open(path) as fh:
            fh.readline()
            first_open = float(fh.readline().split(",")[1])
        minutes = generate_minutes(token, first_open, days)
        server.add_candles(token, "minute", minutes)
        server.add_candles(token, "5minute", five_minute([r for r in minutes if r[0].date() == days[-1]]))
    server.now = datetime.fromisoformat(NOW)
    server._load_instruments()
    served = {}
    lo, hi = datetime(2024, 1, 1), datetime.fromisoformat(NOW).replace(tzinfo=None)
    for _, _, token, interval in SERIES:
        served[f"{token}/{interval}"] = len(server.candles(token, interval, lo, hi))  # also sorts the keys
    server.start()
    print(
        json.dumps(
            {"url": server.url, "api_key": server.api_key, "access_token": server.access_token, "served": served}
        ),
        flush=True,
    )
    sys.stdin.read()
    server.stop()


# ======================================================================================
# the client side


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(REPO),
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit("the bench server did not start")
        info = json.loads(line)
        self.url, self.api_key, self.access_token, self.served = (
            info["url"],
            info["api_key"],
            info["access_token"],
            info["served"],
        )

    def log(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/__bench/log") as resp:
            return json.loads(resp.read())

    def set_now(self, ts: str) -> None:
        with urllib.request.urlopen(self.url + "/__bench/now?ts=" + urllib.parse.quote(ts)) as resp:
            resp.read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def hist(records: list[dict]) -> list[dict]:
    return [r for r in records if r["path"].startswith(HIST)]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def minimum_requests() -> tuple[int, dict[str, int]]:
    from kite_server import MAX_DAYS as KITE_MAX_DAYS

    days = (date.fromisoformat(END) - date.fromisoformat(START)).days + 1
    per = {f"{sym} {tf}": math.ceil(days / KITE_MAX_DAYS[interval]) for sym, tf, _, interval in SERIES}
    return sum(per.values()), per


def chunks_for(interval: str) -> list[tuple[datetime, datetime]]:
    """The chunks mde requests for download(START, END) at NOW (same bounds as engine.download)."""
    from mde.clock import IST as MDE_IST
    from mde.sources.kite import chunk_ranges

    lo = datetime.combine(date.fromisoformat(START), datetime.min.time(), MDE_IST)
    hi = min(datetime.combine(date.fromisoformat(END), datetime.max.time(), MDE_IST), datetime.fromisoformat(NOW))
    return chunk_ranges(lo, hi, interval)


class Pacer:
    """Keeps the floor's own requests within the server's 3/s window (sleeps are not timed)."""

    def __init__(self, rate: int = RATE, span: float = 1.05) -> None:
        self.rate, self.span, self.starts = rate, span, deque()

    def wait(self) -> None:
        now = time.monotonic()
        if len(self.starts) == self.rate and now - self.starts[0] < self.span:
            time.sleep(self.span - (now - self.starts[0]))
        self.starts.append(time.monotonic())
        if len(self.starts) > self.rate:
            self.starts.popleft()


def timed_parse(client) -> list[tuple[float, float]]:
    """Wrap the client's _format_historical (timestamp parsing: dateutil in kiteconnect,
    datetime.fromisoformat in mde's subclass) to time it: the list it fills gets (wall
    seconds, CPU seconds of the calling thread) per call."""
    spent: list[tuple[float, float]] = []
    original = client._format_historical

    def wrapper(data):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return original(data)
        finally:
            spent.append((time.perf_counter() - t, time.thread_time() - c))

    client._format_historical = wrapper
    return spent


def measure_floor(srv: Server, keep: bool = False) -> dict:
    """The plain client over the same chunks. keep: also return its candles as one normalised
    frame per series (built after each call; that CPU is not counted)."""
    from kiteconnect import KiteConnect

    from mde.candles import normalize
    from mde.sources.kite.client import _to_frame, _wall

    before = len(srv.log())
    kite = KiteConnect(srv.api_key, access_token=srv.access_token, root=srv.url)
    parse = timed_parse(kite)
    kite.historical_data(NIFTY, "2024-01-02 00:00:00", "2024-01-02 23:59:59", "minute")  # warm-up: connection, dateutil
    time.sleep(1.1)
    parse.clear()
    pacer = Pacer()
    calls: list[tuple[str, float, int]] = []
    frames: dict[str, list] = {}
    excluded = 0.0
    cpu = time.process_time()
    for sym, tf, token, interval in SERIES:
        for lo, hi in chunks_for(interval):
            pacer.wait()
            t = time.perf_counter()
            rows = kite.historical_data(token, _wall(lo), _wall(hi), interval)
            calls.append((f"{sym} {tf}", time.perf_counter() - t, len(rows)))
            if keep:
                c = time.process_time()
                frames.setdefault(f"{sym} {tf}", []).append(_to_frame(rows))
                del rows
                excluded += time.process_time() - c
    cpu = time.process_time() - cpu - excluded
    import polars as pl

    series = {name: normalize(pl.concat(fs)) for name, fs in frames.items()}
    log = hist(srv.log()[before:])
    return {
        "r429": sum(r["status"] == 429 for r in log),
        "requests": len(log),
        "calls": calls,
        "total": sum(c[1] for c in calls),
        "cpu": cpu,
        "parse": sum(p[0] for p in parse),
        "parse_cpu": sum(p[1] for p in parse),
        "candles": sum(c[2] for c in calls),
        "series": series,
    }


def make_engine(srv: Server, tmp: Path, now: str, cache: str = "cache", **source_kwargs):
    from mde.config import load
    from mde.engine import MarketDataEngine
    from mde.sources.kite import KiteSource

    env = {
        "KITE_API_KEY": srv.api_key,
        "KITE_ACCESS_TOKEN": srv.access_token,
        "MDE_KITE_ROOT": srv.url,
        "MDE_NOW": now,
        "MDE_TOKEN_FILE": str(tmp / "kite_token.json"),
    }
    settings = load(tmp / "mde.toml", environ=env, cache_dir=tmp / cache, source="kite")
    source = KiteSource(settings, **source_kwargs)  # default RetryPolicy, default (process-wide) limiters
    return MarketDataEngine(settings, source), source


def run_phase(srv: Server, engine, source, action) -> dict:
    before = len(srv.log())
    cpu, t0 = time.process_time(), time.monotonic()
    reports, per_series = [], []
    for sym, tf, _, _ in SERIES:
        t = time.monotonic()
        reports.append(action(engine, sym, tf))
        per_series.append(time.monotonic() - t)
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu
    log = srv.log()[before:]
    return {
        "wall": wall,
        "cpu": cpu,
        "t0": t0,
        "per_series": per_series,
        "reports": reports,
        "log": log,
        "hist": hist(log),
        "other": [r for r in log if not r["path"].startswith(HIST)],
        "stats": source.stats,
    }


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeline", action="store_true", help="print when each back-fill request reached the server")
    parser.add_argument(
        "--budget", type=float, default=110.0, help="skip the second floor pass if this many seconds have passed"
    )
    parser.add_argument(
        "--budget-info", type=float, default=100.0, help="skip the one-worker run if this many seconds have passed"
    )
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    t_begin = time.monotonic()
    import kiteconnect  # noqa: F401  (imported before any timing, by mde and the floor alike)
    import polars  # noqa: F401

    import mde.engine  # noqa: F401
    from mde.sources.kite.client import _wall

    load_before = os.getloadavg()
    srv = Server()
    print(
        f"server: {srv.url} in pid {srv.proc.pid}; ready after {time.monotonic() - t_begin:.1f}s; "
        f"candles served for {START}..{NOW}: {srv.served}"
    )
    tmp_dir = tempfile.TemporaryDirectory(prefix="mde-bench-refresh-")
    tmp = Path(tmp_dir.name)
    (tmp / "mde.toml").write_text("# bench: no settings\n")
    floors = []
    try:
        minimum, min_per = minimum_requests()
        mde_chunks = {f"{sym} {tf}": len(chunks_for(interval)) for sym, tf, _, interval in SERIES}

        # -- floor, pass 1: the real client alone, sequential ---------------------------
        floors.append(measure_floor(srv, keep=True))
        time.sleep(1.2)  # let the server's window empty

        # -- mde back-fill --------------------------------------------------------------
        engine, source = make_engine(srv, tmp, NOW)
        mde_parse = timed_parse(source.client)
        backfill = run_phase(srv, engine, source, lambda e, s, tf: e.download(s, tf, START, END))
        same_as_client = {
            f"{sym} {tf}": engine.load_cache(sym, tf).equals(floors[0]["series"][f"{sym} {tf}"])
            for sym, tf, _, _ in SERIES
        }
        floors[0].pop("series")
        time.sleep(1.2)

        # -- floor, pass 2 (brackets the mde run: the machine may be shared) -------------
        if time.monotonic() - t_begin < args.budget:
            floors.append(measure_floor(srv))
            time.sleep(1.2)  # the floor's requests share the API key but not mde's limiter
        else:
            print(f"(second floor pass skipped: {time.monotonic() - t_begin:.0f}s > --budget {args.budget:.0f}s)")

        # -- for information: the same back-fill with one worker thread (one request in
        #    flight at a time), into a fresh cache ---------------------------------------
        one_worker = None
        if time.monotonic() - t_begin < args.budget_info:
            engine1, source1 = make_engine(srv, tmp, NOW, cache="cache-1worker", max_workers=1)
            one_worker = run_phase(srv, engine1, source1, lambda e, s, tf: e.download(s, tf, START, END))
            time.sleep(1.2)
        else:
            print(
                f"(one-worker run skipped: {time.monotonic() - t_begin:.0f}s > --budget-info {args.budget_info:.0f}s)"
            )

        # -- second run, closed market ------------------------------------------------------
        engine2, source2 = make_engine(srv, tmp, NOW)
        second = run_phase(srv, engine2, source2, lambda e, s, tf: e.refresh(s, tf))

        # -- second run, next session day 09:30 ----------------------------------------------
        srv.set_now(NEXT)
        engine3, source3 = make_engine(srv, tmp, NEXT)
        nextday = run_phase(srv, engine3, source3, lambda e, s, tf: e.refresh(s, tf))
        all_log = hist(srv.log())
    finally:
        srv.close()
        tmp_dir.cleanup()
    load_after = os.getloadavg()

    # -- figures -----------------------------------------------------------------------------
    n_series = len(SERIES)
    bf_hist = len(backfill["hist"])
    rate_floor = minimum / RATE
    client_floor = sum(f["total"] for f in floors) / len(floors)
    client_cpu = sum(f["cpu"] for f in floors) / len(floors)
    wall_floor = max(rate_floor, client_floor)
    r429_server = sum(r["status"] == 429 for r in all_log)
    r429_phase = {
        "floor": sum(f["r429"] for f in floors),
        **{
            name: sum(r["status"] == 429 for r in ph["hist"])
            for name, ph in (
                ("back-fill", backfill),
                ("one worker", one_worker),
                ("2nd closed", second),
                ("2nd next day", nextday),
            )
            if ph
        },
    }
    r429_stats = sum(ph["stats"].rate_limited for ph in (backfill, second, nextday, one_worker) if ph)
    first_hist = min((r["t"] for r in backfill["hist"]), default=backfill["t0"]) - backfill["t0"]
    sent = sorted((r["path"].rsplit("/", 1)[-1], r["from"], r["to"]) for r in backfill["hist"])
    expected = sorted(
        (interval, _wall(lo), _wall(hi)) for _, _, _, interval in SERIES for lo, hi in chunks_for(interval)
    )
    bf_wall, bf_cpu = backfill["wall"], backfill["cpu"]

    print()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(other work on the machine slows both sides; the floor is measured before and after mde)"
    )
    print(
        f"minimum historical requests for {START}..{END} (Kite's max days per request): {min_per} = {minimum}; "
        f"mde.chunk_ranges: {mde_chunks}"
    )
    for i, f in enumerate(floors, 1):
        print(
            f"floor pass {i} (kiteconnect alone, sequential, same chunks): {len(f['calls'])} calls, {f['candles']:,} candles, "
            f"{f['total']:.2f}s of calls ({f['cpu']:.2f}s CPU), of which {f['parse']:.2f}s ({f['parse_cpu']:.2f}s CPU) in "
            "_format_historical (dateutil)"
        )
        for name in dict.fromkeys(c[0] for c in f["calls"]):
            times = [c[1] for c in f["calls"] if c[0] == name]
            print(f"    {name}: {len(times)} calls, {sum(times):.2f}s ({', '.join(f'{t:.2f}' for t in times)})")
    print(
        f"floor = max(requests / {RATE} per s = {minimum}/{RATE} = {rate_floor:.2f}s, kiteconnect's own time "
        f"{client_floor:.2f}s{' (mean of the passes)' if len(floors) > 1 else ''}) = {wall_floor:.2f}s"
    )
    print(
        f"mde back-fill: {bf_wall:.2f}s wall, {bf_cpu:.2f}s client CPU ({bf_cpu / bf_wall:.0%} of wall), "
        f"{sum(p[0] for p in mde_parse):.2f}s thread-wall / {sum(p[1] for p in mde_parse):.2f}s CPU in its client's "
        f"_format_historical (fromisoformat; 3 workers overlap); first historical request {first_hist:.2f}s after the start; "
        f"{len(backfill['other'])} non-historical request(s); requests sent == the minimal chunks: {sent == expected}"
    )
    for (sym, tf, token, interval), secs, rep in zip(SERIES, backfill["per_series"], backfill["reports"], strict=True):
        print(
            f"    {sym} {tf}: {secs:.2f}s, {rep.rows:,} rows cached (server has {srv.served[f'{token}/{interval}']:,})"
        )
    print(
        f"    most historical requests the server saw in any 1 s: {max_in_window([r['t'] for r in backfill['hist']])}"
    )
    if one_worker:
        print(
            f"mde back-fill with KiteSource(max_workers=1): {one_worker['wall']:.2f}s wall, {one_worker['cpu']:.2f}s client CPU, "
            f"{len(one_worker['hist'])} historical requests; default (3 workers) / 1 worker: wall "
            f"{bf_wall / one_worker['wall']:.2f}x, CPU {bf_cpu / one_worker['cpu']:.2f}x"
        )
    for name, ph in (("second run, closed market", second), ("second run, next session 09:30", nextday)):
        added = ", ".join(f"{s} {tf} +{rep.added}" for (s, tf, _, _), rep in zip(SERIES, ph["reports"], strict=True))
        print(
            f"{name}: {len(ph['hist'])} historical requests (KiteSource.stats: {ph['stats'].historical_requests}), "
            f"{ph['wall']:.3f}s; {added}"
        )
    print(
        "cached candles == plain kiteconnect's (floor pass 1): "
        + ", ".join(f"{k} {v}" for k, v in same_as_client.items())
    )
    print("429s by phase (server log): " + ", ".join(f"{k} {v}" for k, v in r429_phase.items()))
    if args.timeline:
        print("back-fill timeline (s after start: arrival at the server, status, interval, from .. to):")
        for r in backfill["hist"]:
            print(
                f"    {r['t'] - backfill['t0']:7.3f}  {r['status']}  {r['path'].rsplit('/', 1)[-1]:8} {r['from']} .. {r['to']}"
            )

    rows_ok = all(
        rep.rows == srv.served[f"{token}/{interval}"]
        for (_, _, token, interval), rep in zip(SERIES, backfill["reports"], strict=True)
    )
    table = [
        ("back-fill historical requests", bf_hist, minimum, bf_hist / minimum, "== minimum", bf_hist == minimum),
        (
            "back-fill wall s (vs floor)",
            bf_wall,
            wall_floor,
            bf_wall / wall_floor,
            f"<= {WALL_GOAL}x",
            bf_wall <= WALL_GOAL * wall_floor,
        ),
        ("  floor: requests / 3 per s", None, rate_floor, bf_wall / rate_floor, "info", None),
        ("  floor: kiteconnect's own time", None, client_floor, bf_wall / client_floor, "info", None),
        ("  client CPU s (vs kiteconnect's)", bf_cpu, client_cpu, bf_cpu / client_cpu, "info", None),
        *(
            [
                (
                    "  max_workers=1: wall s (vs floor)",
                    one_worker["wall"],
                    wall_floor,
                    one_worker["wall"] / wall_floor,
                    "info",
                    None,
                ),
                (
                    "  max_workers=1: CPU s (vs kiteconnect)",
                    one_worker["cpu"],
                    client_cpu,
                    one_worker["cpu"] / client_cpu,
                    "info",
                    None,
                ),
            ]
            if one_worker
            else []
        ),
        ("429s, server log (all phases)", r429_server, 0, None, "== 0", r429_server == 0),
        ("429s, KiteSource.stats", r429_stats, 0, None, "== 0", r429_stats == 0),
        (
            "2nd run requests, closed market",
            len(second["hist"]),
            n_series,
            len(second["hist"]) / n_series,
            f"<= {n_series}",
            len(second["hist"]) <= n_series,
        ),
        (
            "2nd run requests, next day 09:30",
            len(nextday["hist"]),
            n_series,
            len(nextday["hist"]) / n_series,
            f"<= {n_series}",
            len(nextday["hist"]) <= n_series,
        ),
        ("back-fill rows == rows served", "yes" if rows_ok else "no", "-", None, "check", rows_ok),
        (
            "cached candles == kiteconnect's",
            "yes" if all(same_as_client.values()) else "no",
            "-",
            None,
            "check",
            all(same_as_client.values()),
        ),
    ]
    print()
    head = ("metric", "mde", "floor/peer", "ratio", "goal", "")
    widths = (40, 8, 10, 6, 10, 4)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for metric, value, peer, ratio, goal, ok in table:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        cells = (metric, fmt(value), fmt(peer), fmt(ratio), goal, verdict)
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    failed = [row[0].strip() for row in table if row[5] is False]
    print()
    print(
        f"summary: {sum(row[5] is True for row in table)} PASS, {len(failed)} FAIL"
        + (f" ({'; '.join(failed)})" if failed else "")
        + f"; bench took {time.monotonic() - t_begin:.0f}s"
    )


if __name__ == "__main__":
    main()
    sys.exit(0)
