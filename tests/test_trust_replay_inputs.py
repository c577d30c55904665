"""Replay and paper inputs that used to give a silently wrong result or a misleading message:
a square-off time that carried into the next hour, a NaN price from the source reaching fills,
and `--until` before the first candle called "not a trading day"."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import run_mde
from mde.config import load
from mde.engine import MarketDataEngine
from mde.errors import InputError
from mde.replay import run_replay
from mde.strategy import _minute


@pytest.mark.parametrize("text", ["12:99", "-0:30", "9:5", "24:00", "12:60", "1230", "", "ab:cd", "12:3O"])
def test_a_square_off_that_is_not_a_time_of_day_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="is not a time of day HH:MM"):
        _minute(text)


@pytest.mark.parametrize(("text", "minute"), [("15:20", 920), ("09:15", 555), ("00:00", 0), ("23:59", 1439)])
def test_a_square_off_time_of_day_is_its_minute(text: str, minute: int) -> None:
    assert _minute(text) == minute


def _poison(cache: Path, when: str) -> None:
    """Rewrite the NIFTY 5m partition with the close of the candle at `when` as NaN, as a
    source's implausible candle would sit in the cache (kept, counted)."""
    (part,) = (cache / "NSE" / "NIFTY_50" / "5m").glob("*.parquet")
    df = pl.read_parquet(part)
    at = pl.lit(when).str.to_datetime(time_zone="Asia/Kolkata")
    df = df.with_columns(pl.when(pl.col("ts") == at).then(float("nan")).otherwise(pl.col("close")).alias("close"))
    assert df["close"].is_nan().sum() == 1
    df.write_parquet(part)


@pytest.fixture
def poisoned(tmp_path: Path) -> MarketDataEngine:
    eng = MarketDataEngine(load(cache_dir=tmp_path / "cache", source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-06-10", "2024-06-14")
    _poison(tmp_path / "cache", "2024-06-12 10:00")
    return eng


def test_a_nan_price_in_the_range_is_refused_naming_the_candle(poisoned: MarketDataEngine) -> None:
    with pytest.raises(
        InputError, match=r"NIFTY 5m: 1 candle\(s\) without a valid price \(first: 2024-06-12 10:00 close nan\)"
    ):
        run_replay(poisoned, "sma_cross", ["NIFTY"], "5m", "2024-06-11", "2024-06-14", costs="none")


def test_a_nan_price_in_the_warm_up_is_a_warning(poisoned: MarketDataEngine) -> None:
    result = run_replay(poisoned, "sma_cross", ["NIFTY"], "5m", "2024-06-13", "2024-06-14", costs="none")
    assert any(
        "warm-up history before 2024-06-13: 1 candle(s) without a valid price (first: 2024-06-12 10:00 close nan), left out"
        in w
        for w in result.warnings
    ), result.warnings
    assert all(v == v for v in result.metrics.values() if isinstance(v, float))  # no NaN reached a number


def test_until_before_the_first_candle_says_so_not_that_the_day_is_no_trading_day(tmp_path: Path) -> None:
    env = {"MDE_CACHE_DIR": str(tmp_path / "cache"), "MDE_SOURCE": "sample"}
    done = run_mde(
        "paper",
        "--strategy",
        "sma_cross",
        "-s",
        "NIFTY",
        "--date",
        "2024-06-13",
        "--until",
        "09:00",
        "--segment",
        "futures",
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: --until 09:00 ends the session before its first 5m candle closes (09:20); give a later --until\n"
    )
    holiday = run_mde(
        "paper", "--strategy", "sma_cross", "-s", "NIFTY", "--date", "2024-06-15", "--segment", "futures", env=env
    )
    assert holiday.returncode == 2 and "pick a trading day" in holiday.stderr


def test_a_paper_session_leaves_a_nan_candle_out_and_says_so(
    poisoned: MarketDataEngine, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from mde.paper.session import run_sample_session

    with caplog.at_level(logging.WARNING, logger="mde"):
        result = run_sample_session(
            poisoned.settings, "sma_cross", ["NIFTY"], "5m", "2024-06-14", segment="futures", name="nan-warmup"
        )
    assert result.status == "finished" and result.candles == 75
    assert any(
        "1 candle(s) without a valid price (first: 2024-06-12 10:00 close nan), left out" in r.getMessage()
        for r in caplog.records
    )
    assert all(v == v for v in result.summary.metrics.values() if isinstance(v, float))
