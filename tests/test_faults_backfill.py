"""A kill during a back-fill costs at most the chunk in flight, never a hole (issue #15).

`mde fetch` a stretch of 1m candles, then `mde refresh --count N` back-fills older ones. The
refresh runs as a real subprocess against tests/kite_server.py and is killed with SIGKILL
right after its k-th Parquet file lands (a deterministic kill point in the write phase:
the process kills itself from inside the store's writer). The same refresh again must then
leave exactly what an uninterrupted run leaves: the same candles and the same ledger.
"""

from __future__ import annotations

import signal
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mde.calendar import nse
from mde.clock import IST
from mde.timeframes import parse as tf_parse
from test_kite_source import FAST, INSTRUMENTS_CSV, NIFTY, WINDOW, Kite, _child_env, ist

try:
    from kite_server import KiteServer
except ImportError:  # pragma: no cover
    from tests.kite_server import KiteServer

NOW = "2024-06-28T18:00:00+05:30"
COUNT = 40_000

_KILLING_MAIN = (
    "import functools, os, signal, sys\n"
    "from mde.sources.kite import client as kite\n"
    "from mde import store\n"
    f"kite.RetryPolicy = functools.partial(kite.RetryPolicy, **{FAST!r})\n"
    "left = [int(os.environ['KILL_AFTER_WRITES'])]\n"
    "write = store.CandleStore._stage_parquet\n"
    "def killing(self, staged, df, path):\n"
    "    st = write(self, staged, df, path)\n"
    "    left[0] -= 1\n"
    "    if left[0] == 0:\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return st\n"
    "store.CandleStore._stage_parquet = killing\n"
    "sys.argv[0] = 'mde'\n"
    "from mde.cli import main\n"
    "main()\n"
)


def synthetic_1m(first: date, last: date) -> list[tuple]:
    """One-minute candles for every NSE session in [first, last], prices drifting up."""
    cal = nse()
    out, i = [], 0
    d = first
    while d <= last:
        for start, end in cal.sessions(d):
            t0 = datetime.combine(d, datetime.min.time(), IST)
            for m in range(start, end):
                p = 20000 + i * 0.05
                out.append((t0 + timedelta(minutes=m), p, p + 1, p - 1, p + 0.5, 100 + i % 50))
                i += 1
        d += timedelta(days=1)
    return out


@pytest.fixture(scope="module")
def server():
    with KiteServer(instruments_csv=INSTRUMENTS_CSV) as srv:
        srv.add_candles(NIFTY, "minute", synthetic_1m(date(2023, 11, 1), date(2024, 6, 28)))
        yield srv


@pytest.fixture
def fresh(server):
    server.reset()
    server.rate_window = WINDOW
    yield server
    server.reset()


def seeded(server: KiteServer, folder: Path) -> Kite:
    """A cache holding May and June 2024 (`mde fetch`), as the issue's reproduction starts."""
    kite = Kite(server, folder)
    res = kite.cli(NOW, "fetch", "NIFTY", "-t", "1m", "--from", "2024-05-01", "--to", "2024-06-28", fast=True)
    assert res.returncode == 0, res.stderr
    return kite


def refresh(kite: Kite, kill_after: int | None = None) -> subprocess.CompletedProcess[str]:
    kite.srv.now = ist(NOW)
    args = ["refresh", "--symbols", "NIFTY", "-t", "1m", "--count", str(COUNT)]
    env = _child_env(kite.environ(NOW, KILL_AFTER_WRITES=str(kill_after or 0)))
    import sys

    return subprocess.run(
        [sys.executable, "-c", _KILLING_MAIN, *args], capture_output=True, text=True, env=env, timeout=120
    )


def state(kite: Kite) -> tuple[pl.DataFrame, list]:
    eng = kite.engine(NOW)
    inst, tf = eng.resolve("NIFTY"), tf_parse("1m")
    return eng.load_cache("NIFTY", "1m"), eng.store.manifest(inst, tf).coverage


@pytest.fixture(scope="module")
def uninterrupted(server, tmp_path_factory):
    server.reset()
    server.rate_window = WINDOW
    kite = seeded(server, tmp_path_factory.mktemp("whole"))
    writes = [0]
    res = refresh(kite)
    assert res.returncode == 0, res.stderr
    candles, ledger = state(kite)
    # how many Parquet files the back-fill writes: every kill point below is inside it
    folder = kite.cache / "NSE" / "NIFTY_50" / "1m"
    writes[0] = len([p for p in folder.glob("*.parquet") if p.stem < "2024-05"])
    server.reset()
    return candles, ledger, writes[0]


def test_the_uninterrupted_backfill_keeps_exactly_count_candles_under_one_ledger_range(uninterrupted):
    candles, ledger, writes = uninterrupted
    assert candles.height == COUNT and candles["ts"].is_sorted() and candles["ts"].is_unique().all()
    assert len(ledger) == 1 and ledger[0][0] == candles["ts"][0]
    assert writes >= 3  # a back-fill of several chunks and months: the kill points below are real


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4])
def test_a_kill_during_the_backfill_is_made_good_by_the_next_refresh(fresh, tmp_path, uninterrupted, kill_after):
    want_candles, want_ledger, _ = uninterrupted
    kite = seeded(fresh, tmp_path)
    killed = refresh(kite, kill_after=kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    # what landed is readable; the ledger never claims more than the files hold
    candles, ledger = state(kite)
    for a, b in ledger:
        inside = candles.filter((pl.col("ts") >= a) & (pl.col("ts") < b))
        assert inside.height > 0
    again = refresh(kite)
    assert again.returncode == 0, again.stderr
    candles, ledger = state(kite)
    assert ledger == want_ledger
    assert candles.height == COUNT
    assert candles.equals(want_candles)


def test_candles_beyond_the_ledger_do_not_hide_a_hole(fresh, tmp_path, uninterrupted):
    """The cache a killed run of an older mde left: the oldest months of a back-fill on disk,
    outside the ledger, and a hole between them and the covered stretch. The back-fill starts
    from the ledger, so the hole is filled and the stretch holds `count` candles."""
    want_candles, want_ledger, _ = uninterrupted
    kite = seeded(fresh, tmp_path)
    eng = kite.engine(NOW)
    inst, tf = eng.resolve("NIFTY"), tf_parse("1m")
    orphans = eng.source.historical(inst, tf, ist("2023-11-01T00:00"), ist("2023-12-31T23:59"))
    eng.store.write(inst, tf, orphans, source="kite", covered=None, now=ist(NOW))
    res = refresh(kite)
    assert res.returncode == 0, res.stderr
    candles, ledger = state(kite)
    assert ledger == want_ledger
    stretch = candles.filter(pl.col("ts") >= ledger[0][0])
    assert stretch.equals(want_candles)
    kite.srv.requests.clear()
    assert refresh(kite).returncode == 0 and kite.srv.requests_to("/instruments/historical") == []
