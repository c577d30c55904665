"""Benchmark: `GET /api/market_data/window?symbol=NIFTY&timeframe=5m&limit=50` against a floor.

    uv run --frozen python bench/api.py              # about 60 s; --seconds N per run

mde     `mde.api.create_app(settings)` on a temporary cache holding the real NIFTY 5m candles of
        the bundled sample (the newest 1,000, filled by `MarketDataEngine.refresh`); the clock is
        not pinned: each request reads the window at "now" (the sample's clock), through the
        engine, and serialises it, as `mde serve` does.
floor   a FastAPI app with one `async def` route that returns the same JSON bytes, precomputed,
        from memory (`Response(content=body, media_type="application/json")`): what the
        framework and the server cost with no work at all. The goal is judged against it.
        A second floor with a plain `def` route (FastAPI runs it in its thread pool) is measured
        too, for reference: its ratio is the last column.

Both run in their own process under the same `uvicorn.run(app, host="127.0.0.1", port=...,
log_level="warning", access_log=False)`. The load comes from other processes (2 of them, with
threads for the clients): each client loops on a keep-alive `http.client.HTTPConnection` for
`--seconds` per run, recording the latency of every request; every answer must be 200 and equal
to the expected body. Concurrency 1, 10 and 50; mde and the floor alternate at each level.
Prints requests per second, p50 and p99 latency and the server's CPU time per request (user +
system, from /proc) of both, the ratio of throughputs, PASS/FAIL
for the goal (>= 0.5x the floor) and a SUMMARY line. It always exits 0: a report, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PATH = "/api/market_data/window?symbol=NIFTY&timeframe=5m&limit=50"
LEVELS = (1, 10, 50)
GOAL = 0.5
LOADERS = 2  # load-generating processes


# -- the two servers (run as `python bench/api.py --serve ours|floor PORT ARG`) -----------------
def serve(kind: str, port: int, arg: str) -> None:
    import uvicorn

    if kind == "ours":
        from mde.api import create_app
        from mde.config import load

        app = create_app(load(cache_dir=arg, source="sample", environ={}))
    else:
        from fastapi import FastAPI
        from fastapi.responses import Response

        body = Path(arg).read_bytes()
        app = FastAPI()

        if kind == "floor":  # async: no thread hand-off, the framework's fastest route

            @app.get("/api/market_data/window")
            async def window() -> Response:
                return Response(content=body, media_type="application/json")

        else:  # "floor-sync": a plain `def` route, run in the thread pool as most FastAPI apps are

            @app.get("/api/market_data/window")
            def window_sync() -> Response:
                return Response(content=body, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, arg: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port), arg], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", PATH)
            conn.getresponse().read()
            conn.close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind} server did not start") from None
            time.sleep(0.1)


# -- the load --------------------------------------------------------------------------------
def loader(port: int, clients: int, seconds: float, expected: bytes, start_at: float, out: mp.Queue) -> None:
    """One process: `clients` threads, each a keep-alive connection in a loop until the deadline."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[i]
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        perf = time.perf_counter
        while time.time() < end:
            t0 = perf()
            conn.request("GET", PATH)
            res = conn.getresponse()
            body = res.read()
            mine.append(perf() - t0)
            if res.status != 200 or body != expected:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(([x for lat in latencies for x in lat], sum(errors)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def drive(port: int, concurrency: int, seconds: float, expected: bytes, pid: int = 0) -> dict[str, float]:
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out: mp.Queue = mp.Queue()
    split = [concurrency // LOADERS + (1 if i < concurrency % LOADERS else 0) for i in range(LOADERS)]
    start_at = time.time() + 0.5  # every process is up before the clock starts
    procs = [mp.Process(target=loader, args=(port, n, seconds, expected, start_at, out)) for n in split if n]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    return {
        "cpu_us": cpu / max(1, len(lat)) * 1e6,
        "rps": len(lat) / seconds,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "n": len(lat),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "ARG"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, nargs="*", default=list(LEVELS), help="concurrency levels (default 1 10 50)")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return

    from mde.config import load
    from mde.engine import MarketDataEngine

    tmp = Path(tempfile.mkdtemp(prefix="mde-bench-api-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        os.chdir(tmp)  # never the repository's mde.toml
        cache = tmp / "cache"
        eng = MarketDataEngine(load(cache_dir=cache, source="sample", environ={}))
        eng.refresh("NIFTY", "5m")
        ours, our_port = start("ours", str(cache), env)
        procs.append(ours)
        conn = http.client.HTTPConnection("127.0.0.1", our_port)
        conn.request("GET", PATH)
        expected = conn.getresponse().read()
        conn.close()
        (tmp / "body.json").write_bytes(expected)
        floor, floor_port = start("floor", str(tmp / "body.json"), env)
        procs.append(floor)
        floor_sync, sync_port = start("floor-sync", str(tmp / "body.json"), env)
        procs.append(floor_sync)

        load1 = os.getloadavg()
        print(
            f"bench/api.py: GET {PATH} ({len(expected)} bytes), {args.seconds:g} s per run, "
            f"{LOADERS} load processes, nproc {os.cpu_count()}, load average before {load1[0]:.2f}"
        )
        print(
            f"{'clients':>7} | {'mde rps':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7} | {'floor rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7} | ratio  goal | vs def floor"
        )
        verdicts = []
        for level in args.clients:
            drive(our_port, level, 0.5, expected)  # warm-up (threads, connections)
            drive(floor_port, level, 0.5, expected)
            drive(sync_port, level, 0.5, expected)
            m = drive(our_port, level, args.seconds, expected, ours.pid)
            f = drive(floor_port, level, args.seconds, expected, floor.pid)
            fs = drive(sync_port, level, args.seconds, expected, floor_sync.pid)
            ratio = m["rps"] / f["rps"]
            ok = ratio >= GOAL and m["errors"] == 0 and f["errors"] == 0
            verdicts.append((level, ratio, ok))
            print(
                f"{level:>7} | {m['rps']:>8.0f} {m['p50']:>7.2f} {m['p99']:>7.2f} {m['cpu_us']:>7.0f} | {f['rps']:>9.0f} "
                f"{f['p50']:>7.2f} {f['p99']:>7.2f} {f['cpu_us']:>7.0f} | {ratio:4.2f}x {'PASS' if ok else 'FAIL'} | "
                f"{m['rps'] / fs['rps']:4.2f}x ({fs['rps']:.0f} rps)"
                + (
                    f"  ({m['errors']} bad answers from mde, {f['errors']} from the floor)"
                    if m["errors"] or f["errors"]
                    else ""
                )
                + (f"  ({fs['errors']} bad answers from the def floor)" if fs["errors"] else "")
            )
        load2 = os.getloadavg()
        print(f"load average after: {load2[0]:.2f} {load2[1]:.2f} {load2[2]:.2f}")
        print(
            "SUMMARY: "
            + ", ".join(f"{lv} clients {r:.2f}x {'PASS' if ok else 'FAIL'}" for lv, r, ok in verdicts)
            + f" (goal >= {GOAL}x the floor's requests per second)"
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
