"""Faults of the source (issue #15): a lagging source, a trickling answer, malformed answers,
errors attributed to the right series and status, a rate limiter that is strictly safe.

Everything talks to tests/kite_server.py through the real kiteconnect client. The rate
limiter is tested on a simulated clock shared by the limiter and the server, so the tests
say the same thing on a loaded machine as on an idle one.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest

from mde.config import load
from mde.engine import MarketDataEngine
from mde.errors import AuthError, ConfigError, SourceError, SourceUnavailable
from mde.sources.kite import KiteSource, RateLimiter, RetryPolicy
from mde.timeframes import parse as tf_parse
from test_kite_source import (  # noqa: F401  (fixtures)
    BANKNIFTY,
    FAST,
    HIST,
    NIFTY,
    Kite,
    base_server,
    csv_rows,
    error_lines,
    hist,
    ist,
    kite,
    ranges,
    srv,
)

# -- a source that lags the clock ------------------------------------------------------------


def minute_day(day: str, base: float = 22000.0) -> list[tuple]:
    """375 one-minute candles of one session (09:15..15:29), prices rising from `base`."""
    start = datetime.fromisoformat(f"{day}T09:15:00+05:30")
    return [
        (start + timedelta(minutes=i), base + i, base + i + 1, base + i - 1, base + i + 0.5, 100 + i)
        for i in range(375)
    ]


def test_a_lagging_source_leaves_no_covered_gap_and_the_next_refresh_asks_again(kite):
    """Kite's data reaches 15:04 while the clock says 15:35: the refresh stores up to 15:04,
    the ledger does not vouch past 15:05, the next refresh asks again (one request) and,
    once the source has caught up, gets 15:05..15:29; then the series is whole and a
    further refresh makes no request."""
    kite.srv.add_candles(NIFTY, "minute", minute_day("2024-06-27") + minute_day("2024-06-28", 22500.0))
    now = "2024-06-28T15:35:00+05:30"
    kite.srv.data_until = ist("2024-06-28T15:04")
    eng = kite.engine(now)
    eng.download("NIFTY", "1m", "2024-06-27", "2024-06-28")
    inst, tf = eng.resolve("NIFTY"), tf_parse("1m")
    assert eng.load_cache("NIFTY", "1m")["ts"][-1] == ist("2024-06-28T15:04")
    ledger = eng.store.manifest(inst, tf).coverage
    assert max(b for _, b in ledger) == ist("2024-06-28T15:05")  # the close of the last candle that came

    kite.srv.requests.clear()
    rep = kite.engine(now).refresh("NIFTY", "1m")  # still lagging: asks again, gets nothing new
    assert len(hist(kite.srv)) == 1 and rep.added == 0

    kite.srv.data_until = None  # the source catches up
    kite.srv.requests.clear()
    rep = kite.engine(now).refresh("NIFTY", "1m")
    assert len(hist(kite.srv)) == 1 and rep.added == 25
    day = eng.load_cache("NIFTY", "1m").filter(pl_day("2024-06-28"))
    assert day.height == 375 and day["ts"][-1] == ist("2024-06-28T15:29")
    kite.srv.requests.clear()
    assert kite.engine(now).refresh("NIFTY", "1m").requested is None and hist(kite.srv) == []


def pl_day(day: str):
    import polars as pl

    return pl.col("ts").dt.date() == datetime.fromisoformat(day).date()


def test_a_lagging_source_on_a_new_series_is_not_vouched_for_either(kite):
    kite.srv.add_candles(NIFTY, "minute", minute_day("2024-06-27") + minute_day("2024-06-28", 22500.0))
    kite.srv.data_until = ist("2024-06-28T15:04")
    now = "2024-06-28T15:35:00+05:30"
    eng = kite.engine(now)
    eng.refresh("NIFTY", "1m", count=500)
    ledger = eng.store.manifest(eng.resolve("NIFTY"), tf_parse("1m")).coverage
    assert max(b for _, b in ledger) <= ist("2024-06-28T15:05")
    kite.srv.requests.clear()
    kite.srv.data_until = None
    assert kite.engine(now).refresh("NIFTY", "1m").added == 25


# -- a trickling answer ------------------------------------------------------------------------


def test_a_trickling_answer_is_cut_at_the_total_deadline(kite):
    """200 and the headers at once, then one byte every 0.2 s (each read well inside the 7 s
    read timeout): every try ends at the 1 s deadline, and after the tries SourceUnavailable
    says so in one line. The bound is generous; without a deadline this takes ~20 minutes."""
    kite.srv.trickle_next(0.2, times=10, path_prefix=HIST)
    retry = RetryPolicy(attempts=2, base_delay=0.01, delay_429=0.05, deadline=1.0)
    eng = kite.engine("2024-06-14T18:00:00+05:30", retry=retry)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"did not finish answering within 1s.*gave up after 2 tries") as info:
        eng.refresh("NIFTY", "5m")
    assert time.monotonic() - started < 2 * 1.0 + 8
    assert "\n" not in info.value.message
    assert len(hist(kite.srv)) == 2
    assert not eng.store.exists(eng.resolve("NIFTY"), tf_parse("5m"))


def test_cli_fetch_from_a_trickling_server_exits_5_within_the_configured_deadline(kite):
    kite.srv.trickle_next(0.2, times=50, path_prefix=HIST)
    started = time.monotonic()
    res = kite.cli(
        "2024-06-14T18:00:00+05:30",
        "fetch",
        "NIFTY",
        "-t",
        "5m",
        "--from",
        "2024-06-10",
        "--to",
        "2024-06-14",
        fast=True,
        env={"MDE_KITE_DEADLINE": "1"},
    )
    assert res.returncode == 5, res.stdout + res.stderr
    assert time.monotonic() - started < RetryPolicy().attempts * 1.0 + 20
    assert error_lines(res) == [res.stderr.strip()] and "did not finish answering within 1s" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_deadline_is_configurable_and_checked():
    assert load(environ={"MDE_KITE_DEADLINE": "2.5"}).kite.deadline == 2.5
    assert load(environ={}).kite.deadline == 30.0
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ConfigError, match="MDE_KITE_DEADLINE"):
            load(environ={"MDE_KITE_DEADLINE": bad})


# -- malformed answers -----------------------------------------------------------------------


def envelope(candles) -> dict:
    return {"status": "success", "data": {"candles": candles}}


def test_ints_and_floats_mixed_in_one_answer_are_prices(kite):
    candles = [
        ["2024-06-14T09:15:00+0530", 23883, 23890.5, 23880, 23889, 0],
        ["2024-06-14T09:20:00+0530", 23889.25, 23900, 23885.5, 23899, 12],
    ]
    kite.srv.raw_next(envelope(candles), path_prefix=HIST)
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    rep = eng.download("NIFTY", "5m", "2024-06-14", "2024-06-14")
    got = eng.load_cache("NIFTY", "5m")
    assert rep.received == 2
    assert got.select("open", "high", "low", "close", "volume").rows() == [
        (23883.0, 23890.5, 23880.0, 23889.0, 0),
        (23889.25, 23900.0, 23885.5, 23899.0, 12),
    ]


MALFORMED = {
    "candles_not_a_list": {"status": "success", "data": {"candles": "nope"}},
    "no_candles": {"status": "success", "data": {}},
    "data_null": {"status": "success", "data": None},
    "text_price": envelope([["2024-06-14T09:15:00+0530", "abc", 1, 1, 1, 0]]),
    "short_candle": envelope([["2024-06-14T09:15:00+0530", 1, 1, 1]]),
    "bad_time": envelope([["yesterday", 1, 1, 1, 1, 0]]),
    "not_an_object": [1, 2, 3],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_answer_fails_that_series_alone(kite, case):
    """A 200 answer that is JSON but not Kite's shape is a SourceError for that series (one
    line, no traceback, no retry); the other series of the same refresh go on."""
    kite.srv.raw_next(MALFORMED[case], path_prefix=f"{HIST}/{NIFTY}/")
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    results = eng.refresh_many(["NIFTY", "BANKNIFTY"], ["5m"], count=100)
    bad, good = results
    assert isinstance(bad.error, SourceError) and "malformed answer" in bad.error.message, bad.error
    assert "\n" not in bad.error.message
    assert good.error is None and good.report.rows == 100
    assert not eng.store.exists(eng.resolve("NIFTY"), tf_parse("5m"))
    assert len(kite.srv.requests_to(f"{HIST}/{NIFTY}/")) == 1  # not retried


def test_cli_refresh_with_a_malformed_answer_exits_5_and_refreshes_the_rest(kite):
    kite.srv.raw_next(MALFORMED["text_price"], path_prefix=f"{HIST}/{NIFTY}/")
    res = kite.cli("2024-06-14T18:00:00+05:30", "refresh", "NIFTY", "BANKNIFTY", "-t", "5m", fast=True)
    assert res.returncode == 5, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    errors = error_lines(res)
    assert len(errors) == 1 and errors[0].startswith("error: NIFTY 5m: Kite sent a malformed answer")
    assert "'abc'" in errors[0]
    assert res.stdout.startswith("refresh: 1 ok, 1 failed")


# -- errors name the right series and the right status -------------------------------------------


def test_after_a_token_error_later_series_do_not_report_another_series_request(kite):
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    kite.srv.expire_tokens()
    results = [eng.refresh_one(s, t, 100) for s, t in (("BANKNIFTY", "5m"), ("NIFTY", "15m"), ("INFY", "1d"))]
    assert all(isinstance(r.error, AuthError) and r.error.exit_code == 3 for r in results)
    assert "NIFTY BANK 5m" in results[0].error.message
    for res in results[1:]:
        assert "NIFTY BANK" not in res.error.message and "while fetching" not in res.error.message
        assert "run `mde login`" in res.error.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_an_html_error_page_is_reported_with_its_real_status(kite, status):
    kite.srv.html_error_next(status, times=50, path_prefix=HIST)
    eng = kite.engine("2024-06-14T18:00:00+05:30", retry=RetryPolicy(**FAST))
    with pytest.raises(SourceUnavailable) as info:
        eng.refresh("NIFTY", "5m")
    assert f"HTTP {status}" in info.value.message


# -- the rate limiter, on a simulated clock -----------------------------------------------------


class SimClock:
    """A clock shared by the limiter and the server: it moves only when someone sleeps on it
    or a request is made to arrive late, so a run's timings are the same on any machine."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += max(seconds, 0.0)


def sim_engine(kite, clock: SimClock, workers: int) -> MarketDataEngine:
    kite.srv.rate_window = 1.0
    kite.srv.clock = clock
    limiters = {
        k: RateLimiter(n, window=1.0, clock=clock, sleep=clock.sleep)
        for k, n in (("historical", 3), ("quote", 1), ("other", 10))
    }
    now = "2025-01-31T16:00:00+05:30"
    kite.srv.now = ist(now)
    env = kite.environ(now)
    settings = load(
        environ={k: env[k] for k in ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "MDE_KITE_ROOT", "MDE_NOW")},
        cache_dir=kite.cache,
        source="kite",
    )
    source = KiteSource(settings, retry=RetryPolicy(**FAST), limiters=limiters, max_workers=workers)
    return MarketDataEngine(settings, source)


def assert_never_more_than_3_in_a_second(reqs) -> None:
    times = sorted(r.time for r in reqs)
    assert all(b - a >= 1.0 for a, b in zip(times, times[3:], strict=False)), times


def test_requests_that_reach_kite_late_never_make_a_429(kite):
    """Every fourth request reaches the server 0.15 s after it was sent (a busy GIL, a new
    connection): a limiter that spaces sends by a window plus 10% lets the next request in
    0.95 s after the late one arrived, and Kite's sliding window answers 429. Ours holds each
    slot until the answer is in, so the server never sees a fourth request within a second."""
    clock = SimClock()
    eng = sim_engine(kite, clock, workers=1)
    arrivals = iter(range(10**6))
    kite.srv.on_arrival = lambda rec: clock.advance(0.15 if next(arrivals) % 4 == 0 else 0.0)
    rep = eng.download("NIFTY", "5m", "2022-01-01", "2024-12-31")  # 11 chunks of 100 days
    assert rep.received == len(csv_rows("NIFTY50_5m_2024.csv"))
    reqs = hist(kite.srv)
    assert len(reqs) == 11 and [r.status for r in reqs] == [200] * 11
    assert eng.source.stats.rate_limited == 0
    assert_never_more_than_3_in_a_second(reqs)


def test_a_steady_run_with_three_workers_never_sees_a_429_on_a_simulated_clock(kite):
    """The README's promise, with 3 workers in flight and some requests arriving late: zero
    429s, never 4 arrivals in one second, and the run takes about what 3/s allows."""
    clock = SimClock()
    eng = sim_engine(kite, clock, workers=3)
    arrivals = iter(range(10**6))
    kite.srv.on_arrival = lambda rec: clock.advance(0.1 if next(arrivals) % 3 == 0 else 0.0)
    started = clock()
    rep = eng.download("NIFTY", "5m", "2023-01-01", "2024-12-31")
    assert rep.received == len(csv_rows("NIFTY50_5m_2024.csv"))
    reqs = hist(kite.srv)
    assert len(reqs) == 8 and [r.status for r in reqs] == [200] * 8
    assert eng.source.stats.rate_limited == 0 and eng.source.stats.retries == 0
    assert_never_more_than_3_in_a_second(reqs)
    assert clock() - started < 8.0  # simulated seconds: no needless waiting


def test_the_limiter_is_strictly_safe_whatever_the_delays():
    """A property of the limiter alone: requests from several workers, each reaching the
    server some time after it was sent and answered later still; in every simulated run no
    sliding 1 s window holds more than 3 arrivals."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings as hsettings, strategies as st

    @hsettings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)), min_size=4, max_size=30), st.integers(1, 4))
    def run(delays, workers):
        import heapq

        clock = SimClock()
        limiter = RateLimiter(3, window=1.0, clock=clock, sleep=clock.sleep)
        arrivals: list[float] = []
        # discrete events: (time, seq, worker, what, payload)
        events: list = []
        todo = list(delays)
        seq = iter(range(10**6))
        for w in range(min(workers, len(todo))):
            heapq.heappush(events, (clock(), next(seq), w, "want", None))
        while events:
            t, _, w, what, payload = heapq.heappop(events)
            clock.t = max(clock.t, t)
            if what == "want":
                if not todo:
                    continue
                slot, wait = limiter.try_acquire()
                if slot is None:
                    heapq.heappush(
                        events, (clock() + max(wait if wait is not None else 0.01, 0.001), next(seq), w, "want", None)
                    )
                    continue
                now = clock()
                send_delay, answer_delay = todo.pop(0)
                heapq.heappush(events, (now + send_delay, next(seq), w, "arrive", (slot, answer_delay)))
            elif what == "arrive":
                slot, answer_delay = payload
                arrivals.append(t)
                heapq.heappush(events, (t + answer_delay, next(seq), w, "answered", slot))
            else:
                limiter.release(payload)
                heapq.heappush(events, (clock(), next(seq), w, "want", None))
        arrivals.sort()
        assert len(arrivals) == len(delays)
        assert all(b - a >= 1.0 for a, b in zip(arrivals, arrivals[3:], strict=False)), arrivals

    run()


# -- waits that say what they wait for, clocks that stay in range ------------------------------


def test_a_writer_waiting_for_the_cache_lock_says_so_then_exits_6(tmp_path):
    """Another process holds the series' lock: `mde fetch` says on stderr what it waits for
    (and whose lock it is), gives up after MDE_LOCK_TIMEOUT with one error line and exit 6;
    with -q only the error line."""
    import os

    from filelock import FileLock

    from conftest import run_mde

    cache = tmp_path / "cache"
    env = {"MDE_CACHE_DIR": str(cache), "MDE_SOURCE": "sample", "MDE_LOCK_TIMEOUT": "0.5"}
    lock_path = cache / "NSE" / "NIFTY_50" / ".5m.lock"
    lock_path.parent.mkdir(parents=True)
    args = ("fetch", "NIFTY", "-t", "5m", "--from", "2024-06-03", "--to", "2024-06-03")
    with FileLock(str(lock_path)):
        res = run_mde(*args, env=env)
        quiet = run_mde("-q", *args, env=env)
    assert res.returncode == 6, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in res.stderr
    assert "waiting for the cache lock on NSE:NIFTY 50 5m, held by another mde process" in lines[0]
    assert f"(pid {os.getpid()}, running since " in lines[0] or not os.path.exists("/proc/locks")
    assert lines[1].startswith("error: another mde process has held the lock on NSE:NIFTY 50 5m")
    assert quiet.returncode == 6 and quiet.stderr.strip().splitlines() == [lines[1]]
    ok = run_mde(*args, env=env)  # the lock is free again: no message, the fetch goes through
    assert ok.returncode == 0 and "waiting" not in ok.stderr


@pytest.mark.parametrize("value", ["0001-01-01T00:00", "9999-12-31T23:59", "1989-12-31", "2100-01-01T00:00"])
def test_a_pinned_clock_out_of_range_is_one_config_error(value):
    with pytest.raises(ConfigError, match=r"MDE_NOW must be between 1990-01-01 and 2099-12-31"):
        load(environ={"MDE_NOW": value})


def test_cli_with_a_clock_out_of_range_exits_2_in_one_line(tmp_path):
    from conftest import run_mde

    for value in ("0001-01-01T00:00", "9999-12-31T23:59"):
        res = run_mde(
            "refresh",
            "--symbols",
            "NIFTY",
            env={"MDE_NOW": value, "MDE_SOURCE": "sample", "MDE_CACHE_DIR": str(tmp_path)},
        )
        assert res.returncode == 2 and res.stderr.strip().startswith("error: MDE_NOW must be between"), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert load(environ={"MDE_NOW": "2099-12-31T10:00"}).now.year == 2099


# -- replay notices a short last session -----------------------------------------------------------


def test_replay_warns_when_the_last_session_in_range_is_short(settings, nifty_5m, tmp_path):
    """A cache filled while the source lagged (by an mde that vouched for the whole session
    anyway): the last session holds 70 of 75 candles. Replay runs, but says so: in the
    result's warnings, on stderr and in --json's warnings. A whole session: no warning."""
    import json

    from conftest import engine_at, run_mde
    from mde.replay import run_replay

    week = nifty_5m.filter(pl_between("2024-06-10", "2024-06-14"))
    short = week.head(week.height - 5)
    eng = engine_at(settings, "2024-06-14T18:00:00+05:30")
    eng.save_cache("NIFTY", "5m", short, covered=(ist("2024-06-10T00:00"), ist("2024-06-14T23:59:59")))
    result = run_replay(eng, "sma_cross", ["NIFTY"], "5m", "2024-06-10", "2024-06-14", costs="none")
    assert any("2024-06-14" in w and "70 of its 75 5m candles" in w for w in result.warnings), result.warnings

    env = {"MDE_CACHE_DIR": str(settings.cache_dir), "MDE_SOURCE": "sample", "MDE_NOW": "2024-06-14T18:00:00+05:30"}
    res = run_mde(
        "replay",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--from",
        "2024-06-10",
        "--to",
        "2024-06-14",
        "--costs",
        "none",
        "--json",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert any("70 of its 75" in w for w in json.loads(res.stdout)["warnings"])
    assert (
        [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        == [line for line in res.stderr.splitlines() if "70 of its 75" in line]
        != []
    )

    # the advice, run as printed, brings the missing candles and the warning goes away
    (warning,) = [w for w in json.loads(res.stdout)["warnings"] if "70 of its 75" in w]
    advice = warning.split("run `", 1)[1].rstrip("`").split()
    assert advice == ["mde", "fetch", "NIFTY", "--timeframe", "5m", "--from", "2024-06-14", "--to", "2024-06-14"]
    fetched = run_mde(*advice[1:], env=env)
    assert fetched.returncode == 0, fetched.stderr
    again = run_mde(
        "replay",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--from",
        "2024-06-10",
        "--to",
        "2024-06-14",
        "--costs",
        "none",
        "--json",
        env=env,
    )
    assert again.returncode == 0 and not any("of its 75" in w for w in json.loads(again.stdout)["warnings"])


def pl_between(first: str, last: str):
    import polars as pl

    return (pl.col("ts").dt.date() >= datetime.fromisoformat(first).date()) & (
        pl.col("ts").dt.date() <= datetime.fromisoformat(last).date()
    )
