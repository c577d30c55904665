"""The fast paths behind `/api/market_data/window` give exactly what the general ones give."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import engine_at
from mde import resample as resample_mod
from mde.calendar import nse
from mde.clock import IST
from mde.config import Settings
from mde.engine import MarketDataEngine, window_body, window_payload
from mde.resample import resample, visible
from mde.sources import make_source
from mde.store import NotInMemory
from mde.timeframes import parse

CAL = nse()


@pytest.fixture(scope="module")
def frames(nifty_5m: pl.DataFrame) -> dict[str, pl.DataFrame]:
    june = nifty_5m.filter(pl.col("ts").dt.month() == 6)
    return {
        "5m": june,
        "15m": resample(june, parse("15m"), CAL),
        "60m": resample(june, parse("60m"), CAL),
        "1d": resample(nifty_5m, parse("1d"), CAL),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tf=st.sampled_from(["5m", "15m", "60m", "1d"]),
    rows=st.integers(1, 300),
    start=st.integers(0, 2000),
    minutes=st.integers(-30, 24 * 60 * 3),
)
def test_visible_in_python_equals_the_expression_path(
    frames: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch, tf: str, rows: int, start: int, minutes: int
) -> None:
    df = frames[tf]
    tail = df.slice(min(start, max(0, df.height - rows)), rows)
    as_of = tail["ts"][0] + timedelta(minutes=minutes) if minutes < 24 * 60 * 3 else datetime(2030, 1, 1, tzinfo=IST)
    fast = visible(tail, parse(tf), CAL, as_of)
    with monkeypatch.context() as m:
        m.setattr(resample_mod, "SEARCH_IN_PYTHON", -1)  # force the polars expression path
        slow = visible(tail, parse(tf), CAL, as_of)
    assert fast.equals(slow)
    assert fast.height == 0 or fast["ts"][-1] < as_of


@pytest.mark.parametrize("tf", ["5m", "15m", "60m", "1d"])
@pytest.mark.parametrize("n", [0, 1, 50, 1000])
def test_window_body_is_the_payload_as_json(frames: dict[str, pl.DataFrame], tf: str, n: int) -> None:
    df = frames[tf].tail(n)
    body = window_body(" nifty ", tf, df)
    assert json.loads(body) == window_payload(" nifty ", tf, df)
    assert body.startswith(b'{"symbol":"NIFTY","timeframe":"' + tf.encode() + b'","count":')


def test_window_body_keeps_null_volume_and_drops_other_columns(frames: dict[str, pl.DataFrame]) -> None:
    df = (
        frames["5m"]
        .tail(3)
        .with_columns(pl.lit(None, dtype=pl.Int64).alias("volume"), pl.lit(7, dtype=pl.Int64).alias("oi"))
    )
    out = json.loads(window_body("NIFTY", "5m", df))
    assert out == window_payload("NIFTY", "5m", df)
    assert [c["volume"] for c in out["candles"]] == [None] * 3 and "oi" not in out["candles"][0]


def test_memory_only_reads_answer_from_the_memo_and_never_decode_a_file(settings: Settings) -> None:
    """The server's event-loop path: a warm window is answered from memory; a cold one, or one
    whose file another writer replaced, raises NotInMemory (then the caller reads it in a thread)."""
    engine_at(settings, "2024-06-14T12:00").refresh("NIFTY", "5m")
    reader = engine_at(settings, "2024-06-14T15:30")
    with pytest.raises(NotInMemory), reader.store.memory_only():
        reader.get_window("NIFTY", "5m", 5)
    cold = reader.get_window("NIFTY", "5m", 5)
    with reader.store.memory_only():
        warm = reader.get_window("NIFTY", "5m", 5)
    assert warm.equals(cold)
    assert warm["ts"][-1] == datetime(2024, 6, 14, 11, 55, tzinfo=IST)

    engine_at(settings, "2024-06-14T15:30").refresh("NIFTY", "5m")  # another engine rewrites the day's file
    with pytest.raises(NotInMemory), reader.store.memory_only():
        reader.get_window("NIFTY", "5m", 5)
    assert reader.get_window("NIFTY", "5m", 5)["ts"][-1] == datetime(2024, 6, 14, 15, 25, tzinfo=IST)


def test_memory_only_never_asks_a_source_to_resolve(settings: Settings) -> None:
    """With a source attached, resolving may download the instruments catalog: not inline."""
    engine = MarketDataEngine(settings, source=make_source(settings))
    with pytest.raises(NotInMemory), engine.store.memory_only():
        engine.resolve("NIFTY")
    assert engine.resolve("NIFTY").key == "NSE:NIFTY 50"
