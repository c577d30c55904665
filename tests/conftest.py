"""Shared fixtures: real files in tmp_path, a clean environment, real NSE candles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mde.config import Settings, load
from mde.engine import MarketDataEngine

REPO = Path(__file__).resolve().parents[1]
NSE_DATA = REPO / "data" / "nse"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MDE_*/KITE_* variable leaks in, and no test reads the repo's mde.toml or data/cache."""
    for name in list(os.environ):
        if name.startswith(("MDE_", "KITE_")):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cli(cache_dir: Path):
    """`mde --cache-dir <tmp> ...` in process (typer's CliRunner) on the sample source."""
    from typer.testing import CliRunner

    from mde.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--cache-dir", str(cache_dir), *args], env={"MDE_SOURCE": "sample"})

    return invoke


@pytest.fixture
def settings(cache_dir: Path) -> Settings:
    """Sample source, a fresh cache, the sample's own clock (2024-12-31 15:30 IST)."""
    return load(cache_dir=cache_dir, source="sample", environ={})


@pytest.fixture
def engine(settings: Settings) -> MarketDataEngine:
    return MarketDataEngine(settings)


def engine_at(settings: Settings, now: str) -> MarketDataEngine:
    """An engine whose clock is pinned, as MDE_NOW would pin it."""
    return MarketDataEngine(
        settings.with_overrides(now=load(environ={"MDE_NOW": now}, cache_dir=settings.cache_dir).now)
    )


@pytest.fixture(scope="session")
def nifty_5m() -> pl.DataFrame:
    """Real Kite NIFTY 50 5m candles for 2024, in the cache schema."""
    from mde.importer import read_candles
    from mde.timeframes import parse

    return read_candles(NSE_DATA / "NIFTY50_5m_2024.csv", parse("5m")).candles


@pytest.fixture(scope="session")
def nifty_1m_q2() -> pl.DataFrame:
    """Real vendor NIFTY 1m candles for 2024 Q2 (see data/README.md)."""
    from mde.importer import read_candles
    from mde.timeframes import parse

    return read_candles(NSE_DATA / "NIFTY50_1m_2024Q2.csv", parse("1m")).candles


def run_mde(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real `mde` entry point in a subprocess (what cron or a user runs)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MDE_", "KITE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mde", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture(scope="session")
def ticker_reactor():
    """The one Twisted reactor of this pytest process, in a daemon thread, for every real
    KiteTicker the tests start (it cannot be restarted: see tests/kite_ticker_server.py)."""
    from kite_ticker_server import ReactorThread

    ReactorThread.ensure()
    yield ReactorThread
    ReactorThread.shutdown()


@pytest.fixture
def ticker_server(ticker_reactor):
    """A Kite ticker WebSocket server on 127.0.0.1 (any free port), stopped after the test."""
    from kite_ticker_server import KiteTickerServer

    with KiteTickerServer() as server:
        yield server
