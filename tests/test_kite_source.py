"""The Kite source end to end (issue #4): the engine and the `mde` CLI against the local
Kite-compatible server (tests/kite_server.py), through the real kiteconnect client.

Nothing is mocked: engines are built as users build them (`load()` with KITE_* / MDE_*
settings, a KiteSource with short retry delays and its own rate limiters), and the CLI
runs as a subprocess. Where a CLI run goes through retries (and for the concurrent and
killed runs), `Kite.cli(..., fast=True)` / `Kite.popen` run the same `mde.cli.main()` with
RetryPolicy's delays shortened (0.01 s backoff, 0.05 s per 429, 3 s timeout) so that a 429
storm takes a fraction of a second instead of 15 s; everything else (the process-wide
3/s limiter, error mapping, exit codes, messages) is the shipped code.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from conftest import NSE_DATA, REPO, run_mde
from mde.calendar import parse_instant
from mde.clock import IST
from mde.config import load
from mde.engine import MarketDataEngine
from mde.errors import AuthError, InputError, RateLimited, SourceUnavailable
from mde.sources.kite import MAX_DAYS, KiteSource, RateLimiter, RetryPolicy
from mde.symbols import Instrument
from mde.timeframes import parse as tf_parse

try:
    from kite_server import KiteServer
except ImportError:  # pragma: no cover
    from tests.kite_server import KiteServer

NIFTY, BANKNIFTY, INFY = 256265, 260105, 408065
NIFTY_DEC, NIFTY_JAN = 12683010, 12602626  # NIFTY25DECFUT (exp 2025-12-30), NIFTY26JANFUT (exp 2026-01-27)
HIST = "/instruments/historical"
WINDOW = 0.2  # the server's (and our limiters') rate window in most tests; one test keeps Kite's 1 s
FAST = {"base_delay": 0.01, "delay_429": 0.05, "timeout": 3.0}  # 3 s: responses stay under it on a busy CI box
INSTRUMENTS_CSV = REPO / "data" / "instruments.csv"
SUMMARY_RE = re.compile(
    r"^refresh: (?P<ok>\d+) ok, (?P<failed>\d+) failed; (?P<added>\d+) candles added; "
    r"(?P<requests>\d+) requests, (?P<r429>\d+) rate-limited \(429\), (?P<retries>\d+) retries; (?P<secs>[\d.]+)s"
)


# -- data ---------------------------------------------------------------------------------


@functools.cache
def csv_rows(name: str) -> tuple[tuple, ...]:
    """(ts, o, h, l, c, volume) rows of a data/nse CSV (empty volume -> 0)."""
    with open(NSE_DATA / name, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return tuple(
            (r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4]), int(float(r[5] or 0))) for r in reader if r
        )


def rows_between(name: str, first: str, last: str) -> list[tuple]:
    """Rows whose ts string starts within [first, last] (compared as ISO prefixes)."""
    return [r for r in csv_rows(name) if first <= r[0][: len(first)] and r[0][: len(last)] <= last]


def synthetic_5m(days: list[date], base: float) -> list[tuple]:
    """75 five-minute candles a day (09:15..15:25), prices rising from `base`, with OI."""
    out = []
    i = 0
    for day in days:
        t = datetime.combine(day, datetime.min.time(), IST).replace(hour=9, minute=15)
        for _ in range(75):
            p = base + i * 0.5
            out.append((t, p, p + 2, p - 2, p + 1, 1000 + i, 50_000 + i))
            t += timedelta(minutes=5)
            i += 1
    return out


def ist(text: str) -> datetime:
    return parse_instant(text)


def wall(text: str) -> datetime:
    """A `from`/`to` query value as Kite gets it (IST wall clock)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


# -- the server and engines ---------------------------------------------------------------


@pytest.fixture(scope="module")
def base_server():
    """One server for the module (loading CSVs is the slow part); tests that change candles
    use their own server or tokens no other test reads."""
    with KiteServer(instruments_csv=INSTRUMENTS_CSV) as server:
        server.load_csv(NIFTY, "5minute", NSE_DATA / "NIFTY50_5m_2024.csv")
        server.load_csv(BANKNIFTY, "5minute", NSE_DATA / "BANKNIFTY_5m_2024.csv")
        server.load_csv(NIFTY, "day", NSE_DATA / "NIFTY50_1d_1990-2025.csv")
        server.load_csv(BANKNIFTY, "day", NSE_DATA / "BANKNIFTY_1d_2000-2025.csv")
        yield server


@pytest.fixture
def srv(base_server):
    base_server.reset()
    base_server.rate_window = WINDOW
    yield base_server
    base_server.reset()


class Kite:
    """Engines and `mde` runs wired to one server and one cache folder."""

    def __init__(self, server: KiteServer, tmp: Path) -> None:
        self.srv = server
        self.tmp = tmp
        self.cache = tmp / "cache"
        self.new_limiters()

    def new_limiters(self) -> None:
        w = self.srv.rate_window
        self.limiters = {
            "historical": RateLimiter(3, window=w),
            "quote": RateLimiter(1, window=w),
            "other": RateLimiter(10, window=w),
        }

    def environ(self, now: str, **extra: str) -> dict[str, str]:
        env = {
            "KITE_API_KEY": self.srv.api_key,
            "KITE_ACCESS_TOKEN": self.srv.access_token,
            "MDE_KITE_ROOT": self.srv.url,
            "MDE_NOW": now,
            "MDE_CACHE_DIR": str(self.cache),
            "MDE_SOURCE": "kite",
            "MDE_TOKEN_FILE": str(self.tmp / "kite_token.json"),
        }
        env.update(extra)
        return env

    def engine(self, now: str, retry: RetryPolicy | None = None) -> MarketDataEngine:
        """An engine at `now` (MDE_NOW), with the server's live clock set to the same instant."""
        self.srv.now = ist(now)
        env = self.environ(now)
        settings = load(
            environ={k: env[k] for k in ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "MDE_KITE_ROOT", "MDE_NOW")},
            cache_dir=self.cache,
            source="kite",
        )
        source = KiteSource(settings, retry=retry or RetryPolicy(**FAST), limiters=self.limiters)
        return MarketDataEngine(settings, source)

    def cli(
        self, now: str, *args: str, fast: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.srv.now = ist(now)
        full = self.environ(now, **(env or {}))
        if not fast:
            return run_mde(*args, env=full)
        return subprocess.run(_fast_cmd(*args), capture_output=True, text=True, env=_child_env(full), timeout=60)

    def popen(self, now: str, *args: str) -> subprocess.Popen[str]:
        self.srv.now = ist(now)
        return subprocess.Popen(
            _fast_cmd(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(self.environ(now)),
        )

    def snapshot(self) -> dict[str, str]:
        """Every file of the cache (but the instruments catalog) and its content hash."""
        if not self.cache.exists():
            return {}
        return {
            str(p.relative_to(self.cache)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.cache.rglob("*"))
            if p.is_file() and "_meta" not in p.parts
        }


_FAST_MAIN = (
    "import functools, sys\n"
    "from mde.sources.kite import client as kite\n"
    f"kite.RetryPolicy = functools.partial(kite.RetryPolicy, **{FAST!r})\n"
    "sys.argv[0] = 'mde'\n"
    "from mde.cli import main\n"
    "main()\n"
)


def _fast_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", _FAST_MAIN, *args]


def _child_env(env: dict[str, str]) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    full.update(env)
    return full


@pytest.fixture
def kite(srv, tmp_path) -> Kite:
    return Kite(srv, tmp_path)


def hist(server: KiteServer) -> list:
    return server.requests_to(HIST)


def ranges(server: KiteServer) -> list[tuple[datetime, datetime]]:
    return sorted((wall(r.query["from"]), wall(r.query["to"])) for r in hist(server))


def assert_series_sound(eng: MarketDataEngine, symbol: str, tf: str) -> pl.DataFrame:
    """Every partition readable, sorted unique ts, manifest in step with the files, no temp files."""
    inst = eng.resolve(symbol)
    folder = eng.store.series_dir(inst, tf_parse(tf))
    parts = sorted(folder.glob("*.parquet"))
    frames = [pl.read_parquet(p) for p in parts]
    df = pl.concat(frames) if frames else pl.DataFrame()
    assert df["ts"].is_sorted() and df["ts"].is_unique().all()
    manifest = eng.store.manifest(inst, tf_parse(tf))
    assert manifest is not None and manifest.rows == df.height
    assert (
        not list(folder.glob(".*.tmp"))
        and not list(folder.parent.glob(f".{tf}.new"))
        and not list(folder.parent.glob(f".{tf}.old"))
    )
    return df


# -- chunking -------------------------------------------------------------------------------

INTERVALS = [
    ("1m", "minute"),
    ("3m", "3minute"),
    ("5m", "5minute"),
    ("10m", "10minute"),
    ("15m", "15minute"),
    ("30m", "30minute"),
    ("60m", "60minute"),
    ("1d", "day"),
]


@pytest.mark.parametrize(("tf", "interval"), INTERVALS)
def test_requests_are_chunked_at_each_interval_limit(kite, tf, interval):
    """Exactly the limit: one request; one day more: two; twice the limit and a bit: three.
    Chunks are contiguous (next `from` is one second after the previous `to`), never
    overlap, span at most MAX_DAYS calendar days counted inclusively, and are as few as can be."""
    kite.srv.enforce_rate_limits = False  # this test is about ranges; the next one about rates
    kite.srv.rate_window = 0.05
    kite.new_limiters()
    limit = MAX_DAYS[interval]
    assert (
        limit
        == {
            "minute": 60,
            "3minute": 100,
            "5minute": 100,
            "10minute": 100,
            "15minute": 200,
            "30minute": 200,
            "60minute": 400,
            "day": 2000,
        }[interval]
    )
    start = date(2003, 1, 1) if interval == "day" else date(2023, 1, 2)
    eng = kite.engine("2025-06-30T16:00:00+05:30")
    for days in (limit, limit + 1, 2 * limit + 5):
        kite.srv.requests.clear()
        end = start + timedelta(days=days - 1)
        eng.download("NIFTY", tf, start.isoformat(), end.isoformat())
        got = ranges(kite.srv)
        assert all(r.status == 200 for r in hist(kite.srv))
        assert all(r.path == f"{HIST}/{NIFTY}/{interval}" for r in hist(kite.srv))
        assert len(got) == math.ceil(days / limit), (days, got)
        assert got[0][0] == datetime.combine(start, datetime.min.time())
        assert got[-1][1] == datetime.combine(end, datetime.max.time()).replace(microsecond=0)
        for lo, hi in got:
            assert lo <= hi and (hi.date() - lo.date()).days + 1 <= limit
        for (_, hi), (lo, _) in zip(got, got[1:], strict=False):
            assert lo - hi == timedelta(seconds=1)  # contiguous, no overlap, no gap
        assert (got[0][1].date() - got[0][0].date()).days + 1 == limit or len(got) == 1  # full chunks first


def test_a_steady_run_at_kites_real_rate_never_sees_a_429(kite):
    """Kite's own limits (3 historical requests per 1 s window, enforced by the server) and
    our limiter at 3 per second over 8 chunked requests, fetched by 3 worker threads while
    others decode and parse responses (holding the GIL, which delays sends): zero 429s.
    The limiter holds a slot until the answer is in, so this holds however loaded the machine
    is; no wall-clock bound here (tests/test_faults_source.py runs the same on a simulated clock
    and bounds the time there)."""
    kite.srv.rate_window = 1.0
    kite.new_limiters()
    eng = kite.engine("2025-01-31T16:00:00+05:30")
    rep = eng.download("NIFTY", "5m", "2023-01-01", "2024-12-31")
    assert rep.received == len(csv_rows("NIFTY50_5m_2024.csv"))
    reqs = hist(kite.srv)
    assert len(reqs) == 8
    assert [r.status for r in reqs] == [200] * len(reqs)
    assert eng.source.stats.rate_limited == 0 and eng.source.stats.retries == 0
    times = sorted(r.time for r in reqs)
    assert all(b - a >= 1.0 for a, b in zip(times, times[3:], strict=False))  # never 4 arrivals in one second


# -- holidays, the tail, the running candle -------------------------------------------------


def test_a_holiday_answered_empty_is_covered_in_the_ledger(kite):
    eng = kite.engine("2024-03-26T08:00:00+05:30")
    eng.download("NIFTY", "5m", "2024-03-18", "2024-03-22")
    kite.srv.requests.clear()
    with pytest.raises(InputError, match="no NSE session between 2024-03-25 and 2024-03-25"):
        eng.download("NIFTY", "5m", "2024-03-25", "2024-03-25")  # Holi: nothing to ask (issue 14)
    assert hist(kite.srv) == []
    rep = eng.download("NIFTY", "5m", "2024-03-22", "2024-03-25")  # a session, a weekend, then Holi
    assert rep.received == 75 and not rep.empty
    manifest = eng.store.manifest(eng.resolve("NIFTY"), tf_parse("5m"))
    assert any(a <= ist("2024-03-25T00:00") and b >= ist("2024-03-25T23:59:59") for a, b in manifest.coverage)
    kite.srv.requests.clear()
    kite.srv.requests.clear()
    assert eng.refresh("NIFTY", "5m").requested is None
    assert hist(kite.srv) == []


def test_a_session_with_no_candles_is_not_refetched(kite):
    """2025-01-01 is a trading day by the calendar, but the server has no 5m candles for it
    (an unannounced closure / data gap). While it is the latest session the source may just
    be late (issue #15), so each refresh asks again, from the open of the last cached
    session; once the next session has opened, the empty answer is recorded and not asked again."""
    eng = kite.engine("2024-12-31T16:00:00+05:30")
    eng.refresh("NIFTY", "5m", count=200)
    for now in ("2025-01-01T15:45:00+05:30", "2025-01-01T19:00:00+05:30", "2025-01-02T09:16:00+05:30"):
        kite.srv.requests.clear()
        rep = kite.engine(now).refresh("NIFTY", "5m")
        assert rep.added == 0 and len(hist(kite.srv)) == 1
        assert ranges(kite.srv) == [(datetime(2024, 12, 31, 9, 15), ist(now).replace(tzinfo=None))]
    kite.srv.requests.clear()
    for now in ("2025-01-02T09:16:00+05:30", "2025-01-02T09:19:00+05:30"):
        assert kite.engine(now).refresh("NIFTY", "5m").requested is None
    assert hist(kite.srv) == []
    kite.engine("2025-01-02T09:21:00+05:30").refresh("NIFTY", "5m")
    assert ranges(kite.srv) == [(datetime(2024, 12, 31, 9, 15), datetime(2025, 1, 2, 9, 21))]


def test_second_refresh_on_a_closed_market_makes_no_request(kite):
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    first = eng.refresh("NIFTY", "5m")
    assert first.rows == 1000 and len(hist(kite.srv)) == 1
    kite.srv.requests.clear()
    # the same evening, the next morning (Saturday), and Monday 17 June (Bakri Id: a holiday)
    for now in ("2024-06-14T18:00:00+05:30", "2024-06-15T10:00:00+05:30", "2024-06-17T12:00:00+05:30"):
        rep = kite.engine(now).refresh("NIFTY", "5m")
        assert rep.requested is None and rep.added == 0 and rep.rows == 1000
    assert kite.srv.requests == []


def test_in_session_refresh_is_one_request_per_series_and_never_stores_the_running_candle(tmp_path):
    """At 11:02 the server serves the 11:00 candle built from minutes up to 11:02 (partial);
    it is not stored. At 11:07 each series costs exactly one request, from the open of its
    last cached session, and the 11:00 candle arrives whole."""
    with KiteServer(instruments_csv=INSTRUMENTS_CSV) as server:
        server.rate_window = WINDOW
        for token, stem in ((NIFTY, "NIFTY50"), (BANKNIFTY, "BANKNIFTY")):
            server.add_candles(token, "5minute", rows_between(f"{stem}_5m_2024.csv", "2024-05-01", "2024-06-14"))
            server.add_candles(token, "minute", rows_between(f"{stem}_1m_2024Q2.csv", "2024-06-14", "2024-06-14"))
        kite = Kite(server, tmp_path)
        eng = kite.engine("2024-06-14T11:02:00+05:30")
        for sym in ("NIFTY", "BANKNIFTY"):
            eng.refresh(sym, "5m", count=300)
        partial = server.candles(NIFTY, "5minute", datetime(2024, 6, 14, 11, 0), datetime(2024, 6, 14, 11, 2))
        full = {r[0]: r for r in rows_between("NIFTY50_5m_2024.csv", "2024-06-14T11:00", "2024-06-14T11:00")}
        assert (
            partial[-1][0] == datetime(2024, 6, 14, 11, 0) and partial[-1][1][3] != full["2024-06-14T11:00:00+05:30"][4]
        )
        for sym in ("NIFTY", "BANKNIFTY"):
            cached = eng.load_cache(sym, "5m")
            assert cached["ts"][-1] == ist("2024-06-14T10:55")  # the running 11:00 candle was dropped
            assert cached.height >= 300

        server.requests.clear()
        eng = kite.engine("2024-06-14T11:07:00+05:30")
        for sym in ("NIFTY", "BANKNIFTY"):
            rep = eng.refresh(sym, "5m")
            assert rep.added == 1
        reqs = hist(server)
        assert sorted(r.path for r in reqs) == [f"{HIST}/{NIFTY}/5minute", f"{HIST}/{BANKNIFTY}/5minute"]
        assert {(r.query["from"], r.query["to"]) for r in reqs} == {("2024-06-14 09:15:00", "2024-06-14 11:07:00")}
        cached = eng.load_cache("NIFTY", "5m")
        last = cached.row(-1, named=True)
        assert last["ts"] == ist("2024-06-14T11:00")  # 11:05 is running: not stored
        want = full["2024-06-14T11:00:00+05:30"]
        assert (last["open"], last["high"], last["low"], last["close"]) == want[1:5]
        window = eng.get_window("NIFTY", "5m", limit=3)
        assert window["ts"][-1] == ist("2024-06-14T11:00")


# -- retries and failures --------------------------------------------------------------------


def test_a_short_429_storm_is_retried_and_succeeds(kite):
    kite.srv.fail_next(429, "NetworkException", "Too many requests", times=3, path_prefix=HIST)
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    res = eng.refresh_one("NIFTY", "5m")
    assert res.error is None and res.report.rows == 1000
    assert [r.status for r in hist(kite.srv)] == [429, 429, 429, 200]
    summary = eng.refresh_summary([res], 1.0)
    assert summary["rate_limited"] == 3 and summary["requests"] == 4 and summary["ok"] == 1


def test_a_long_429_storm_ends_in_rate_limited_with_the_cache_unchanged(kite):
    kite.engine("2024-06-13T18:00:00+05:30").refresh("NIFTY", "5m", count=200)
    before = kite.snapshot()
    kite.srv.requests.clear()
    kite.srv.fail_next(429, "NetworkException", "Too many requests", times=50, path_prefix=HIST)
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    with pytest.raises(RateLimited, match="too many requests"):
        eng.refresh("NIFTY", "5m")
    assert (
        len(hist(kite.srv)) == RetryPolicy().attempts_429
        and eng.source.stats.rate_limited == RetryPolicy().attempts_429
    )
    assert kite.snapshot() == before


def _fault(server: KiteServer, kind: str, times: int) -> None:
    if kind == "json500":
        server.fail_next(500, "GeneralException", "internal server error", times=times, path_prefix=HIST)
    elif kind == "json503":
        server.fail_next(503, "NetworkException", "upstream unreachable", times=times, path_prefix=HIST)
    elif kind == "html502":
        server.html_error_next(502, times=times, path_prefix=HIST)
    elif kind == "html504":
        server.html_error_next(504, times=times, path_prefix=HIST)
    elif kind == "drop":
        server.drop_connection_next(times=times, path_prefix=HIST)
    elif kind == "timeout":
        server.delay_next(1.2, times=times, path_prefix=HIST)  # beyond SHORT_TIMEOUT's 0.5 s
    else:  # pragma: no cover
        raise AssertionError(kind)


FAULTS = ["json500", "json503", "html502", "html504", "drop", "timeout"]
SHORT_TIMEOUT = RetryPolicy(base_delay=0.01, delay_429=0.05, timeout=0.5)


def retry_for(kind: str) -> RetryPolicy:
    return SHORT_TIMEOUT if kind == "timeout" else RetryPolicy(**FAST)


@pytest.mark.parametrize("kind", FAULTS)
def test_transient_failures_are_retried(kite, kind):
    _fault(kite.srv, kind, times=2)
    eng = kite.engine("2024-06-14T18:00:00+05:30", retry=retry_for(kind))
    rep = eng.refresh("NIFTY", "5m", count=200)
    assert rep.rows >= 200
    assert eng.source.stats.retries == 2 and eng.source.stats.requests == 3
    assert len(hist(kite.srv)) == 3


@pytest.mark.parametrize("kind", FAULTS)
def test_persistent_failures_end_in_source_unavailable_with_the_cache_unchanged(kite, kind):
    kite.engine("2024-06-13T18:00:00+05:30").refresh("NIFTY", "5m", count=200)
    before = kite.snapshot()
    kite.srv.requests.clear()
    _fault(kite.srv, kind, times=50)
    eng = kite.engine("2024-06-14T18:00:00+05:30", retry=retry_for(kind))
    with pytest.raises(SourceUnavailable, match="Try again later") as info:
        eng.refresh("NIFTY", "5m")
    assert "\n" not in info.value.message
    assert len(hist(kite.srv)) == RetryPolicy().attempts
    assert kite.snapshot() == before


def test_token_expiry_mid_run_fails_the_rest_without_another_request(kite):
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    results = [eng.refresh_one("NIFTY", "5m", 100)]
    kite.srv.expire_tokens()
    kite.srv.requests.clear()
    results += [eng.refresh_one(s, t, 100) for s, t in (("BANKNIFTY", "5m"), ("NIFTY", "15m"), ("BANKNIFTY", "1d"))]
    assert results[0].error is None
    for res in results[1:]:
        assert isinstance(res.error, AuthError) and "mde login" in res.error.message
    assert [r.status for r in kite.srv.requests] == [403]  # one 403, then nothing
    assert not eng.store.exists(eng.resolve("BANKNIFTY"), tf_parse("5m"))
    summary = eng.refresh_summary(results, 1.0)
    assert (summary["ok"], summary["failed"]) == (1, 3)
    assert {s["exit_code"] for s in summary["series"][1:]} == {3}


def test_input_exception_is_an_input_error_with_kites_message(kite):
    kite.srv.fail_next(400, "InputException", "interval exceeds max limit: 60 days", path_prefix=HIST)
    eng = kite.engine("2024-06-14T18:00:00+05:30")
    with pytest.raises(InputError, match="interval exceeds max limit: 60 days"):
        eng.refresh("NIFTY", "5m")
    assert len(kite.srv.requests) == 1  # not retried
    # and Kite's own answer for a token it does not know
    tf = tf_parse("5m")
    with pytest.raises(InputError, match="invalid token"):
        eng.source.historical(
            Instrument("NSE", "NOSUCH", 999_999_999), tf, ist("2024-06-14T09:15"), ist("2024-06-14T15:30")
        )


# -- the CLI ---------------------------------------------------------------------------------

SECRET_TOKEN = "tok-SECRET-7d1f0c9a5e3b2468"
SECRET_API = "api-SECRET-ffee99aa0b1c2d3e"
SECRET_ENV = {"KITE_ACCESS_TOKEN": SECRET_TOKEN, "KITE_API_SECRET": SECRET_API}


def assert_no_secrets(kite: Kite, res: subprocess.CompletedProcess[str]) -> None:
    out = res.stdout + res.stderr
    for secret in (SECRET_TOKEN, SECRET_API, f"token {kite.srv.api_key}:{SECRET_TOKEN}"):
        assert secret not in out
    assert "Traceback" not in out


def error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", ["rate_limited", "unavailable"])
def test_cli_failures_exit_codes_one_line_errors_cache_unchanged_no_secrets(kite, case):
    """`mde -v refresh` with KITE_ACCESS_TOKEN and KITE_API_SECRET set to distinctive strings,
    two series failing differently: the worst failure's exit code (a 429 storm: 4; 5xx and
    HTML 502 pages: 5), one `error:` line per failed series, no traceback, the cache as it
    was, and neither secret (nor the Authorization header) anywhere in the output, even when
    Kite's own error message quotes the token."""
    for tf in ("5m", "1d"):
        kite.engine("2024-06-13T18:00:00+05:30").refresh("NIFTY", tf, count=200)
    before = kite.snapshot()
    kite.srv.requests.clear()
    kite.srv.add_access_token(SECRET_TOKEN)
    five, day = f"{HIST}/{NIFTY}/5minute", f"{HIST}/{NIFTY}/day"
    if case == "rate_limited":
        kite.srv.fail_next(429, "NetworkException", "Too many requests", times=50, path_prefix=five)
        kite.srv.fail_next(400, "InputException", f"invalid `to` date (access_token={SECRET_TOKEN})", path_prefix=day)
    else:
        kite.srv.fail_next(500, "GeneralException", f"backend error for {SECRET_TOKEN}", times=50, path_prefix=five)
        kite.srv.html_error_next(502, times=50, path_prefix=day)
    res = kite.cli(
        "2024-06-14T18:00:00+05:30", "-v", "refresh", "NIFTY", "-t", "5m", "-t", "1d", env=SECRET_ENV, fast=True
    )
    assert res.returncode == {"rate_limited": 4, "unavailable": 5}[case], res.stdout + res.stderr
    assert_no_secrets(kite, res)
    errors = error_lines(res)
    assert [e.split(": ")[1] for e in errors] == ["NIFTY 5m", "NIFTY 1d"], res.stderr
    if case == "rate_limited":
        assert "too many requests" in errors[0] and "invalid `to` date (access_token=***)" in errors[1]
    else:
        assert all("Try again later" in e for e in errors)
    summary = SUMMARY_RE.match(res.stdout.strip().splitlines()[-1])
    assert summary and (summary["ok"], summary["failed"]) == ("0", "2")
    assert int(summary["requests"]) == len(kite.srv.requests)
    assert int(summary["r429"]) == (RetryPolicy().attempts_429 if case == "rate_limited" else 0)
    assert kite.snapshot() == before


def test_cli_token_expiry_mid_run_exit_3_and_no_request_after_the_first_403(kite):
    """The token dies while the third series is in flight: that series and the fourth fail
    with one line each telling to run `mde login`; after the 403 nothing is asked; -v logs
    and errors never show the token or the API secret."""
    kite.srv.add_access_token(SECRET_TOKEN)
    kite.srv.delay_next(0.5, path_prefix=f"{HIST}/{BANKNIFTY}/")

    def expire_when_banknifty_is_asked() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if kite.srv.requests_to(f"{HIST}/{BANKNIFTY}/"):
                kite.srv.expire_tokens()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=expire_when_banknifty_is_asked, daemon=True)
    watcher.start()
    res = kite.cli(
        "2024-06-14T18:00:00+05:30", "-v", "refresh", "NIFTY", "BANKNIFTY", "-t", "5m", "-t", "1d", env=SECRET_ENV
    )
    watcher.join(5)
    assert res.returncode == 3, res.stdout + res.stderr
    statuses = [(r.path, r.status) for r in kite.srv.requests]
    assert statuses[-1] == (f"{HIST}/{BANKNIFTY}/5minute", 403)  # the first 403 is the last request
    assert {st for _, st in statuses[:-1]} == {200} and {p for p, _ in statuses[:-1]} == {
        f"{HIST}/{NIFTY}/5minute",
        f"{HIST}/{NIFTY}/day",
    }
    assert_no_secrets(kite, res)
    errors = error_lines(res)
    assert [e.split(": ")[1] for e in errors] == ["BANKNIFTY 5m", "BANKNIFTY 1d"]
    assert all("run `mde login`" in e for e in errors)
    summary = SUMMARY_RE.match(res.stdout.strip().splitlines()[-1])
    assert summary and (summary["ok"], summary["failed"]) == ("2", "2") and int(summary["requests"]) == len(statuses)


def test_cli_count_backfills_and_cron_gets_one_summary_line(kite):
    now = "2024-06-14T18:00:00+05:30"
    eng = kite.engine(now)
    assert eng.refresh("NIFTY", "5m", count=200).rows == 200
    oldest = eng.load_cache("NIFTY", "5m")["ts"][0]

    kite.srv.requests.clear()
    second = kite.cli(now, "refresh", "--symbols", "NIFTY", "-t", "5m", "--count", "1000")
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert len(lines) == 1, second.stdout  # not a TTY: one line for cron
    m = SUMMARY_RE.match(lines[0])
    assert m, lines[0]
    assert (m["ok"], m["failed"], m["added"], m["r429"], m["retries"]) == ("1", "0", "800", "0", "0")
    assert int(m["requests"]) == len(kite.srv.requests) >= 1 and float(m["secs"]) < 30
    cached = assert_series_sound(eng, "NIFTY", "5m")
    assert cached.height == 1000 and cached["ts"][-1] == ist("2024-06-14T15:25")
    assert all(hi < oldest.replace(tzinfo=None) for _, hi in ranges(kite.srv))  # only older candles were asked for
    want = [r[4] for r in rows_between("NIFTY50_5m_2024.csv", "2024-01-01", "2024-06-14")][-1000:]
    assert cached["close"].to_list() == want
    kite.srv.requests.clear()
    again = kite.engine(now)
    assert again.refresh_one("NIFTY", "5m", 1000).report.requested is None
    assert again.refresh_summary([], 0.0)["requests"] == 0 and kite.srv.requests == []


def test_concurrent_refreshes_of_one_series_from_two_processes(kite):
    now = "2024-06-14T18:00:00+05:30"
    kite.srv.delay_next(0.2, times=2, path_prefix=HIST)  # keep both runs in flight together
    procs = [kite.popen(now, "refresh", "NIFTY", "-t", "5m", "--count", str(n)) for n in (1500, 3000)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    eng = kite.engine(now)
    cached = assert_series_sound(eng, "NIFTY", "5m")
    assert cached.height >= 3000
    first = cached["ts"][0].replace(tzinfo=None)
    want = kite.srv.candles(NIFTY, "5minute", first, datetime(2024, 6, 14, 15, 29))
    assert cached["ts"].dt.replace_time_zone(None).to_list() == [ts for ts, _ in want]
    assert cached["close"].to_list() == [row[3] for _, row in want]
    assert not list(kite.cache.rglob("*.tmp"))


def test_kill_9_during_a_long_backfill_leaves_a_readable_cache_and_the_next_run_completes(tmp_path):
    """`mde refresh --count 16000` of 1m candles (two chunks, each held 0.6 s by the server) is
    killed with SIGKILL the moment its first month file lands, i.e. while it writes the
    rest: every Parquet file is readable, the cache reads, and the next refresh completes
    the series with exactly the server's candles."""
    with KiteServer(instruments_csv=INSTRUMENTS_CSV) as server:
        server.rate_window = WINDOW
        server.add_candles(NIFTY, "minute", csv_rows("NIFTY50_1m_2024Q2.csv"))
        kite = Kite(server, tmp_path)
        now = "2024-06-28T18:00:00+05:30"
        folder = kite.cache / "NSE" / "NIFTY_50" / "1m"
        server.delay_next(0.6, times=2, path_prefix=HIST)  # under the fast client's 3 s timeout
        proc = kite.popen(now, "refresh", "NIFTY", "-t", "1m", "--count", "16000")
        deadline = time.monotonic() + 45
        while proc.poll() is None and time.monotonic() < deadline:
            if folder.is_dir() and any(not p.name.startswith(".") for p in folder.glob("*.parquet")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, f"not killed mid-run: {proc.returncode} {out} {err}"
        assert len(set(ranges(server))) == 2  # a long backfill: two chunks (a slow one may be retried)
        for path in kite.cache.rglob("*.parquet"):
            if "_meta" not in path.parts and not path.name.startswith("."):
                assert pl.read_parquet(path).height > 0
        eng = kite.engine(now)
        partial = eng.load_cache("NIFTY", "1m")  # whatever landed is a readable, sorted prefix
        assert partial.height > 0 and partial["ts"].is_sorted()

        assert eng.refresh("NIFTY", "1m", count=16000).rows >= 16000
        cached = assert_series_sound(eng, "NIFTY", "1m")
        assert cached["ts"][-1] == ist("2024-06-28T15:29")
        first = cached["ts"][0].replace(tzinfo=None)
        want = server.candles(NIFTY, "minute", first, datetime(2024, 6, 28, 15, 29))
        assert cached["ts"].dt.replace_time_zone(None).to_list() == [ts for ts, _ in want]
        assert cached["close"].to_list() == [row[3] for _, row in want]


# -- contracts and adjustments ----------------------------------------------------------------


def test_a_rolling_future_is_cached_per_contract(kite):
    """NIFTY-FUT is the DEC contract up to its expiry (2025-12-30) and JAN after it; each is
    fetched by its own token (with OI) and cached in its own instrument folder."""
    days = [date(2025, 12, d) for d in (15, 16, 17, 18, 19, 22, 23, 24, 26, 29, 30, 31)]
    kite.srv.add_candles(NIFTY_DEC, "5minute", synthetic_5m([d for d in days if d <= date(2025, 12, 30)], 26000.0))
    kite.srv.add_candles(NIFTY_JAN, "5minute", synthetic_5m(days, 27000.0))

    eng = kite.engine("2025-12-29T16:00:00+05:30")
    dec = eng.refresh("NIFTY-FUT", "5m", count=300)
    assert dec.instrument == Instrument("NFO", "NIFTY25DECFUT", NIFTY_DEC)
    assert {r.path for r in hist(kite.srv)} == {f"{HIST}/{NIFTY_DEC}/5minute"}
    assert all(r.query.get("oi") == "1" for r in hist(kite.srv))
    assert kite.engine("2025-12-30T10:00:00+05:30").resolve("NIFTY-FUT").tradingsymbol == "NIFTY25DECFUT"  # expiry day
    dec_files = {k: v for k, v in kite.snapshot().items() if k.startswith("NFO/NIFTY25DECFUT/")}
    assert dec_files

    kite.srv.requests.clear()
    eng = kite.engine("2025-12-31T16:00:00+05:30")
    jan = eng.refresh("NIFTY-FUT", "5m", count=300)
    assert jan.instrument == Instrument("NFO", "NIFTY26JANFUT", NIFTY_JAN)
    assert {r.path for r in hist(kite.srv)} == {f"{HIST}/{NIFTY_JAN}/5minute"}
    assert {k: v for k, v in kite.snapshot().items() if k.startswith("NFO/NIFTY25DECFUT/")} == dec_files
    dec_df = pl.read_parquet(kite.cache / "NFO" / "NIFTY25DECFUT" / "5m" / "2025.parquet")
    jan_df = pl.read_parquet(kite.cache / "NFO" / "NIFTY26JANFUT" / "5m" / "2025.parquet")
    assert dec_df["open"].max() < 27000 <= jan_df["open"].min()
    assert dec_df["ts"][-1] == ist("2025-12-29T15:25") and jan_df["ts"][-1] == ist("2025-12-31T15:25")
    assert "oi" in dec_df.columns and "oi" in jan_df.columns and jan_df["oi"].min() >= 50_000


def test_kite_readjusting_the_past_redownloads_the_whole_series(tmp_path):
    """A 1:1 bonus: Kite halves every past INFY price. The next refresh notices on the
    overlap, downloads the whole series again, swaps it in, and says so in the summary."""
    with KiteServer(instruments_csv=INSTRUMENTS_CSV) as server:
        server.rate_window = WINDOW
        rows = csv_rows("INFY_1d_2020-2026.csv")
        server.add_candles(INFY, "day", rows)
        kite = Kite(server, tmp_path)
        eng = kite.engine("2025-06-13T18:00:00+05:30")
        eng.refresh("INFY", "1d", count=300)
        old = eng.load_cache("INFY", "1d")
        assert old.height == 300

        server.add_candles(INFY, "day", [(r[0], r[1] / 2, r[2] / 2, r[3] / 2, r[4] / 2, r[5] * 2) for r in rows])
        server.requests.clear()
        res = kite.cli("2025-06-16T18:00:00+05:30", "refresh", "INFY", "-t", "1d")
        assert res.returncode == 0, res.stderr
        line = res.stdout.strip()
        assert SUMMARY_RE.match(line) and line.endswith("re-downloaded after a source adjustment: NSE:INFY 1d"), line

        eng = kite.engine("2025-06-16T18:00:00+05:30")
        new = assert_series_sound(eng, "INFY", "1d")
        assert new.height == old.height + 1 and new["ts"][-1] == ist("2025-06-16T00:00")
        halved = {datetime.fromisoformat(r[0]): r[4] / 2 for r in rows}
        assert all(abs(halved[ts] - c) < 1e-9 for ts, c in zip(new["ts"], new["close"], strict=True))
        assert new.join(old, on="ts").filter(pl.col("close") == pl.col("close_right")).is_empty()  # no old price left
        assert (new["ts"][0], new["ts"][-2]) == (old["ts"][0], old["ts"][-1])


# -- the client's candle parsing ------------------------------------------------------------


def _both_parsers(client) -> list[list[dict]]:
    """Make `client` (mde's KiteConnect subclass) also run kiteconnect's own
    `_format_historical` on every raw historical response it gets; returns the list those
    results are appended to. The client still returns its own (fast) records."""
    from kiteconnect import KiteConnect

    originals: list[list[dict]] = []

    def both(data):
        originals.append(KiteConnect._format_historical(client, data))
        return type(client)._format_historical(client, data)

    client._format_historical = both
    return originals


def assert_same_records(got: list[dict], expected: list[dict], with_oi: bool) -> None:
    assert got == expected  # same keys ("oi" only in 7-value candles), values, instants
    assert [(r["date"].replace(tzinfo=None), r["date"].utcoffset()) for r in got] == [
        (r["date"].replace(tzinfo=None), r["date"].utcoffset()) for r in expected
    ]  # same wall clock and UTC offset, not just the same instant
    assert all(("oi" in r) is with_oi for r in got)
    assert all(type(a[k]) is type(b[k]) for a, b in zip(got, expected, strict=True) for k in a if k != "date")


@pytest.mark.parametrize(
    ("interval", "frm", "to", "with_oi"),
    [
        ("5minute", "2024-01-01 00:00:00", "2024-04-09 23:59:59", False),  # a full 100-day chunk of real candles
        ("5minute", "2024-10-01 00:00:00", "2024-12-31 23:59:59", True),  # oi asked of an index: 7 values, oi 0
        ("day", "2015-01-01 00:00:00", "2020-06-22 23:59:59", False),
    ],
)
def test_the_fast_candle_parser_equals_kiteconnects_on_real_responses(srv, interval, frm, to, with_oi):
    """mde's client subclass replaces only kiteconnect's dateutil timestamp parsing; on the
    server's responses it returns exactly what kiteconnect's own `_format_historical` does,
    and `_to_frame` builds the same frame from both."""
    from kiteconnect import KiteConnect

    from mde.sources.kite.client import _fast_client_class, _to_frame

    client = _fast_client_class()(srv.api_key, access_token=srv.access_token, root=srv.url)
    assert isinstance(client, KiteConnect) and type(client)._format_historical is not KiteConnect._format_historical
    originals = _both_parsers(client)
    got = client.historical_data(NIFTY, frm, to, interval, False, with_oi)
    assert len(originals) == 1 and len(got) > 50
    assert_same_records(got, originals[0], with_oi)
    assert _to_frame(got).equals(_to_frame(originals[0]))
    assert _to_frame(got).schema == _to_frame(originals[0]).schema
    plain = srv.make_client().historical_data(NIFTY, frm, to, interval, False, with_oi)  # unpatched kiteconnect
    assert got == plain


def test_the_fast_candle_parser_keeps_futures_oi_and_1m_candles(tmp_path):
    """A future with open interest, 1m and 5m, through KiteSource as the engine uses it: the
    cached frame equals the one built from kiteconnect's own parsing."""
    from mde.sources.kite.client import _to_frame

    days = [date(2025, 12, d) for d in (15, 16, 17)]
    minutes = [
        (
            datetime.combine(day, datetime.min.time(), IST).replace(hour=9, minute=15) + timedelta(minutes=i),
            100.0 + i,
            101.5 + i,
            99.25 + i,
            100.75 + i,
            10 * i,
            70_000 + i,
        )
        for day in days
        for i in range(375)
    ]
    with KiteServer(instruments_csv=INSTRUMENTS_CSV) as server:
        server.rate_window = WINDOW
        server.add_candles(NIFTY_DEC, "minute", minutes)
        server.add_candles(NIFTY_DEC, "5minute", synthetic_5m(days, 26000.0))
        kite = Kite(server, tmp_path)
        eng = kite.engine("2025-12-17T16:00:00+05:30")
        originals = _both_parsers(eng.source.client)
        for tf, _interval, n in (("1m", "minute", 3 * 375), ("5m", "5minute", 3 * 75)):
            originals.clear()
            inst = eng.resolve("NIFTY25DECFUT")
            df = eng.source.historical(inst, tf_parse(tf), ist("2025-12-15T00:00"), ist("2025-12-17T23:59:59"))
            assert len(originals) == 1 and df.height == n
            assert all(r.query.get("oi") == "1" for r in hist(server))
            expected = _to_frame(originals[0])
            assert "oi" in df.columns and df["oi"].min() >= 50_000
            assert df.select(expected.columns).equals(expected)
            server.requests.clear()


@pytest.mark.parametrize(
    "text",
    [
        "2024-11-14T09:15:00+0530",
        "2024-11-14T09:15:00+05:30",
        "2024-11-14T03:45:00Z",
        "2024-11-14T03:45:00+0000",
        "2024-11-14T09:15:00.250000+0530",
        "2024-11-14 09:15:00+0530",
        "2024-11-14T09:15:00",
        "2024-11-14",
        "2024-11-14T09:15:00-0400",
        "14 Nov 2024 09:15 +0530",
        "2024/11/14 09:15:00",
    ],
)
def test_parse_candle_ts_matches_dateutil(text):
    import dateutil.parser

    from mde.sources.kite import parse_candle_ts

    got, expected = parse_candle_ts(text), dateutil.parser.parse(text)
    assert got == expected and got.replace(tzinfo=None) == expected.replace(tzinfo=None)
    assert got.utcoffset() == expected.utcoffset()


def test_parse_candle_ts_fails_like_dateutil_on_garbage():
    import dateutil.parser

    from mde.sources.kite import parse_candle_ts

    with pytest.raises(dateutil.parser.ParserError):
        parse_candle_ts("not a time")
