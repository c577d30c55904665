"""Live paper sessions on Kite: the real kiteconnect client against the local Kite server, on
a virtual clock that the session and the server share (a day runs in seconds)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import NSE_DATA, REPO, run_mde
from mde.clock import IST
from mde.config import Settings, load
from mde.engine import MarketDataEngine
from mde.paper.live import run_live_session
from mde.paper.rules import sessions_dir
from mde.paper.session import request_halt
from mde.paper.state import TradeState, session_path
from mde.sources.kite import KiteSource, RateLimiter, RetryPolicy
from mde.timeframes import parse

try:
    from kite_server import KiteServer
except ImportError:  # pragma: no cover
    from tests.kite_server import KiteServer

NIFTY, BANKNIFTY = 256265, 260105
KEYS = {"NIFTY": "NSE:NIFTY 50", "BANKNIFTY": "NSE:NIFTY BANK"}
DAY = "2024-06-14"
PARAMS = {"fast": 3, "slow": 8}
FAST = RetryPolicy(base_delay=0.01, delay_429=0.05, timeout=3.0, attempts=2)


@pytest.fixture(scope="module")
def server():
    with KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as srv:
        srv.load_csv(NIFTY, "5minute", NSE_DATA / "NIFTY50_5m_2024.csv")
        srv.load_csv(BANKNIFTY, "5minute", NSE_DATA / "BANKNIFTY_5m_2024.csv")
        yield srv


@pytest.fixture
def srv(server):
    server.reset()
    server.enforce_rate_limits = False  # the virtual clock runs far faster than Kite's 1 quote/s
    yield server
    server.reset()


class VirtualClock:
    """The session's clock and sleep, and the server's `now`: one instant for both."""

    def __init__(self, server: KiteServer, start: str) -> None:
        self.server = server
        self.now = datetime.fromisoformat(start).replace(tzinfo=IST)
        server.now = self.now

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.server.now = self.now


def kite_settings(server: KiteServer, cache: Path) -> Settings:
    env = {
        "KITE_API_KEY": server.api_key,
        "KITE_ACCESS_TOKEN": server.access_token,
        "MDE_KITE_ROOT": server.url,
        "MDE_NOW": f"{DAY}T09:00:00+05:30",
    }  # for the token's validity only; the session has its own clock
    return load(environ=env, cache_dir=cache, source="kite")


def kite_engine(st: Settings) -> MarketDataEngine:
    limiters = {k: RateLimiter(1000, window=0.001) for k in ("historical", "quote", "other")}
    return MarketDataEngine(st, KiteSource(st, retry=FAST, limiters=limiters))


@pytest.fixture
def cache(srv: KiteServer, tmp_path: Path) -> Path:
    """The cache up to the day before, as a nightly `mde refresh` would leave it."""
    folder = tmp_path / "cache"
    st = kite_settings(srv, folder)
    eng = kite_engine(st)
    eng.download("NIFTY", "5m", "2024-05-01", "2024-06-13")
    eng.download("BANKNIFTY", "5m", "2024-05-01", "2024-06-13")
    srv.requests.clear()
    return folder


def live(srv: KiteServer, cache: Path, clock: VirtualClock, **kw):
    st = kite_settings(srv, cache)
    kw.setdefault("name", "live")
    kw.setdefault("until", "11:00")
    return run_live_session(
        st,
        "sma_cross",
        ["NIFTY", "BANKNIFTY"],
        "5m",
        params=PARAMS,
        segment="futures",
        tick=10.0,
        engine=kite_engine(st),
        clock=clock,
        sleep=clock.sleep,
        **kw,
    )


def journal(cache: Path, name: str, kind: str | None = None):
    with TradeState(session_path(cache / "_paper", name)) as state:
        return state.events(kind)


def test_a_live_session_asks_one_ltp_per_tick_and_candles_only_when_one_closed(srv: KiteServer, cache: Path) -> None:
    clock = VirtualClock(srv, f"{DAY}T09:14:50")
    result = live(srv, cache, clock)
    ticks = round(
        (
            datetime.fromisoformat(f"{DAY}T11:00:00+05:30") - datetime.fromisoformat(f"{DAY}T09:14:50+05:30")
        ).total_seconds()
        / 10
    )
    ltp = srv.requests_to("/quote/ltp")
    assert len(ltp) == ticks
    assert all(sorted(r.query_all["i"]) == sorted(KEYS.values()) for r in ltp)  # one batched request for the universe
    # none at start (the cache already reaches yesterday's close), then one per series per candle close (09:20 .. 10:55)
    closes = 20
    assert len(srv.requests_to("/instruments/historical")) == 2 * closes
    assert srv.requests_to("/quote", "GET") == ltp  # no full quotes, nothing else
    assert result.candles == 2 * closes and result.status == "finished"
    assert result.trades.height >= 2


def test_live_fills_are_the_next_ltp_after_the_decision(srv: KiteServer, cache: Path) -> None:
    clock = VirtualClock(srv, f"{DAY}T09:14:50")
    live(srv, cache, clock, name="fills")
    orders = {e.payload["order"]: e for e in journal(cache, "fills", "order")}
    fills = [e for e in journal(cache, "fills", "fill") if e.payload.get("via") == "ltp"]
    assert len(fills) >= 3
    for f in fills:
        placed = orders[f.payload["order"]].ts_us  # the close of the candle that decided it
        assert f.seq > orders[f.payload["order"]].seq  # journaled after the decision ...
        assert 0 <= f.ts_us - placed < 10_000_000  # ... at the first LTP asked after it, within one tick
        srv.now = datetime.fromtimestamp(f.ts_us / 1e6, IST)  # what the server's LTP was at that tick
        assert f.payload["price"] == srv._snapshot(KEYS[f.symbol])["last_price"]


def test_a_full_live_session_never_calls_an_order_route(srv: KiteServer, cache: Path) -> None:
    clock = VirtualClock(srv, f"{DAY}T09:14:50")
    result = live(srv, cache, clock, name="safety", until="15:30")  # to the close, square-off included
    assert result.trades.height >= 2
    assert srv.requests_to("/orders") == [] and srv.requests_to("/gtt") == []
    assert {r.method for r in srv.requests} == {"GET"}
    assert {r.path.split("/")[1] for r in srv.requests} <= {"instruments", "quote"}


def test_a_crash_at_random_moments_then_resume_gives_the_uninterrupted_fills(srv: KiteServer, cache: Path) -> None:
    whole = live(srv, cache, VirtualClock(srv, f"{DAY}T09:14:50"), name="whole")
    expected = [(e.symbol, e.payload) for e in journal(cache, "whole", "fill")]
    assert len(expected) >= 4

    class Crash(Exception):
        pass

    rng = random.Random(7)
    clock = VirtualClock(srv, f"{DAY}T09:14:50")
    crashes = lines = 0
    result = None
    while result is None:  # each run dies after a random number of log lines: after a candle's commit, mid-tick
        limit = lines + rng.randint(1, 3) if crashes < 4 else 10**9

        def die(_line: str, limit: int = limit) -> None:
            nonlocal lines
            lines += 1
            if lines >= limit:
                raise Crash

        try:
            result = live(srv, cache, clock, name="crashy", log=die)
        except Crash:
            crashes += 1
    assert crashes >= 3
    assert [(e.symbol, e.payload) for e in journal(cache, "crashy", "fill")] == expected
    assert result.trades.select("net_pnl").equals(whole.trades.select("net_pnl"))
    assert result.resumed_from > 0


def test_the_kill_switch_flattens_at_the_next_ltp_and_stops(srv: KiteServer, cache: Path) -> None:
    clock = VirtualClock(srv, f"{DAY}T09:14:50")
    st = kite_settings(srv, cache)
    asked = []

    def on_tick(snap: dict) -> None:
        if not asked and any(row["position"] for row in snap["symbols"]):
            asked.append(request_halt(st, "halt"))  # as `mde paper --halt` from another terminal

    result = live(srv, cache, clock, name="halt", on_tick=on_tick)
    assert asked and "halt requested" in asked[0]
    assert result.status == "halted"
    flat = [e for e in journal(cache, "halt", "fill") if e.payload["reason"] == "kill switch"]
    assert flat and all(e.payload.get("via") == "ltp" for e in flat)
    with TradeState(session_path(sessions_dir(st), "halt")) as state:
        assert state.meta()["status"] == "halted"


def test_a_failing_update_or_ltp_is_recorded_and_the_session_goes_on(srv: KiteServer, cache: Path) -> None:
    clock = VirtualClock(srv, f"{DAY}T09:14:50")
    srv.fail_next(503, "NetworkException", "Kite is down", times=4, path_prefix="/instruments/historical")
    srv.fail_next(503, "NetworkException", "Kite is down", times=2, path_prefix="/quote/ltp")
    result = live(srv, cache, clock, name="stale", until="10:00")
    stale = journal(cache, "stale", "stale")
    assert {e.symbol for e in stale} >= {None} and any(e.symbol in ("NIFTY", "BANKNIFTY") for e in stale)
    assert all(srv.access_token not in str(e.payload) for e in stale)
    assert result.status == "finished"
    # the failed series caught up later: every candle of the window was processed once
    assert sorted(e.ts_us for e in journal(cache, "stale", "candle") if e.symbol == "NIFTY") == sorted(
        set(e.ts_us for e in journal(cache, "stale", "candle") if e.symbol == "NIFTY")
    )
    assert sum(1 for e in journal(cache, "stale", "candle")) == result.candles == 2 * 8


def test_mde_paper_source_kite_runs_live_and_never_prints_the_token(
    srv: KiteServer, cache: Path, tmp_path: Path
) -> None:
    srv.now = datetime.fromisoformat(f"{DAY}T10:15:01+05:30")
    env = {
        "KITE_API_KEY": srv.api_key,
        "KITE_ACCESS_TOKEN": srv.access_token,
        "MDE_KITE_ROOT": srv.url,
        "MDE_NOW": f"{DAY}T10:14:58+05:30",
        "MDE_CACHE_DIR": str(cache),
        "MDE_SOURCE": "kite",
        "MDE_TOKEN_FILE": str(tmp_path / "token.json"),
    }
    res = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "--symbols",
        "NIFTY",
        "BANKNIFTY",
        "--segment",
        "futures",
        "--tick",
        "1s",
        "--until",
        "10:15:03",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert srv.access_token not in res.stdout + res.stderr
    assert "session sma_cross-2024-06-14 finished" in res.stdout
    # one batched LTP request per 1 s tick over the 5 s the clock runs: at most 7 with the first and
    # last; a loaded machine spends some of those seconds starting up, so only one is certain
    assert 1 <= len(srv.requests_to("/quote/ltp")) <= 7
    assert srv.requests_to("/orders") == []
    res = run_mde("paper", "--strategy", "sma_cross", "-s", "NIFTY", "--date", DAY, env=env)
    assert res.returncode == 2 and "--source sample" in res.stderr


def test_mde_paper_without_kite_credentials_says_what_to_do(tmp_path: Path) -> None:
    res = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--source",
        "kite",
        "--segment",
        "futures",
        env={"MDE_CACHE_DIR": str(tmp_path / "c"), "MDE_NOW": f"{DAY}T10:00:00+05:30"},
    )
    assert res.returncode != 0 and "KITE_API_KEY" in res.stderr + res.stdout
    assert len((res.stderr + res.stdout).strip().splitlines()) == 1


def test_parse_tick() -> None:
    from mde.errors import InputError
    from mde.timeframes import parse_duration

    assert parse_duration("1s") == 1.0 and parse_duration("500ms") == 0.5 and parse_duration("2m") == 120.0
    assert parse_duration("3") == 3.0
    for bad in ("0s", "fast", "1h", "-1s"):
        with pytest.raises(InputError):
            parse_duration(bad, "--tick")
    assert parse("5m").minutes == 5


LIVE_CHILD = """
import csv
import sys
from datetime import datetime, timedelta
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from kite_server import KiteServer
from mde.clock import IST
from mde.config import load
from mde.engine import MarketDataEngine
from mde.paper.live import run_live_session
from mde.paper.state import TradeState, session_path
from mde.sources.kite import KiteSource, RateLimiter, RetryPolicy

cache, name, tests, data = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
start = datetime(2024, 6, 14, 9, 14, 50, tzinfo=IST)
path = session_path(cache / "_paper", name)
now = start
if path.exists():  # zero downtime: go on from the tick of the newest journal entry, on the same 10 s grid
    with TradeState(path) as state:
        newest = max((e.ts_us for e in state.events()), default=0)
    if newest:
        now += timedelta(seconds=10 * ((newest / 1e6 - start.timestamp()) // 10))
def june(name):  # the cache holds May and June up to the 13th: the session asks for no older candle
    with open(data / name, newline="") as fh:
        return [row for row in csv.reader(fh) if row[0].startswith("2024-06")]
with KiteServer(instruments_csv=tests.parent / "data" / "instruments.csv") as srv:
    srv.add_candles(256265, "5minute", june("NIFTY50_5m_2024.csv"))
    srv.add_candles(260105, "5minute", june("BANKNIFTY_5m_2024.csv"))
    srv.enforce_rate_limits = False
    srv.now = now
    clock = {"now": now}
    def sleep(s):
        clock["now"] += timedelta(seconds=s)
        srv.now = clock["now"]
    env = {"KITE_API_KEY": srv.api_key, "KITE_ACCESS_TOKEN": srv.access_token, "MDE_KITE_ROOT": srv.url,
           "MDE_NOW": "2024-06-14T09:00:00+05:30"}
    st = load(environ=env, cache_dir=cache, source="kite")
    limiters = {k: RateLimiter(1000, window=0.001) for k in ("historical", "quote", "other")}
    eng = MarketDataEngine(st, KiteSource(st, retry=RetryPolicy(base_delay=0.01, attempts=2), limiters=limiters))
    print("go", flush=True)
    run_live_session(st, "sma_cross", ["NIFTY", "BANKNIFTY"], "5m", name=name, params={"fast": 3, "slow": 8},
                     segment="futures", tick=10.0, until="12:15", engine=eng, clock=lambda: clock["now"], sleep=sleep,
                     log=lambda line: print(line, flush=True))
print("done", flush=True)
"""


def test_sigkill_of_a_live_session_at_random_moments_then_resume_gives_the_uninterrupted_fills(
    srv: KiteServer, cache: Path
) -> None:
    """kill -9 can land inside a SQLite commit, which no exception raised in-process can reach."""
    live(srv, cache, VirtualClock(srv, f"{DAY}T09:14:50"), name="whole", until="12:15")  # 10 signal fills by 12:10
    expected = [(e.symbol, e.payload) for e in journal(cache, "whole", "fill")]
    assert len(expected) >= 8
    rng = random.Random(11)
    argv = [sys.executable, "-c", LIVE_CHILD, str(cache), "killed", str(REPO / "tests"), str(NSE_DATA)]
    killed = 0
    while killed < 3:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "go"
        while child.stdout.readline().startswith("session "):  # die soon after an event (the start line is none):
            pass  # at a fill, mid-commit, between ticks
        time.sleep(rng.uniform(0, 0.03))
        if child.poll() is not None:
            break  # the session ended before this kill
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed += 1
    assert killed >= 3
    partial = len(journal(cache, "killed", "fill"))
    assert 0 < partial < len(expected), partial  # the kills came mid-session: the resume has work to do
    final = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0 or "has finished" in final.stderr, final.stderr
    assert [(e.symbol, e.payload) for e in journal(cache, "killed", "fill")] == expected
    with TradeState(session_path(cache / "_paper", "killed")) as state:
        assert state.meta()["status"] == "finished"
