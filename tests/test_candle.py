"""One `Candle` type: what the engine returns (get_latest_candle, replay) is what a strategy's
on_candle receives and `ctx.last()` returns, with the same fields, times and open interest."""

from __future__ import annotations

from datetime import date, datetime, time

import polars as pl
from hypothesis import given, strategies as st

import mde
from factories import make_candles
from mde.broker import SimBroker
from mde.calendar import nse
from mde.candles import Candle
from mde.clock import IST, as_us, us_to_datetime
from mde.costs import cost_model
from mde.engine import MarketDataEngine
from mde.resample import with_close
from mde.strategy import Context, SeriesData, Strategy, StrategyRunner, merge_events
from mde.timeframes import parse

DAY = date(2024, 6, 14)
TF = parse("5m")


class Recorder(Strategy):
    """Keeps every candle it is given and what ctx.last() said at the same moment."""

    def on_start(self, ctx: Context) -> None:
        self.seen: list[Candle] = []
        self.last: list[Candle | None] = []

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        self.seen.append(candle)
        self.last.append(ctx.last())


def _run(frame: pl.DataFrame) -> Recorder:
    data = SeriesData("NIFTY", TF, with_close(frame, TF, nse()))
    strat = Recorder()
    model = cost_model("none", None, None, "NIFTY")
    runner = StrategyRunner(
        [strat], None, symbols=["NIFTY"], timeframe=TF, broker=SimBroker(1e6, lambda _s: model, lambda _s: 0.05)
    )
    runner.add_series(data)
    runner.run(merge_events([data], [0], [len(data)]), data.ts_us[0])
    return strat


def test_the_engine_and_a_strategy_give_the_same_candle(engine: MarketDataEngine) -> None:
    frame = make_candles(DAY, step=5, start_price=22000.0, seed=3)
    engine.save_cache("NIFTY", "5m", frame)
    at = datetime.combine(DAY, time(11, 0), IST)
    latest = engine.get_latest_candle("NIFTY", "5m", as_of=at)
    assert isinstance(latest, Candle) and latest.symbol == "NIFTY" and latest.timeframe == "5m"
    assert latest.ts == datetime.combine(DAY, time(10, 55), IST) and latest.closes_at == at
    row = frame.filter(pl.col("ts") == latest.ts).row(0, named=True)
    assert (latest.open, latest.high, latest.low, latest.close, latest.volume) == (
        row["open"],
        row["high"],
        row["low"],
        row["close"],
        row["volume"],
    )
    assert latest.oi is None

    strat = _run(frame)
    same = next(c for c in strat.seen if c.ts_us == latest.ts_us)
    assert same[2:9] == latest[2:9] and same.oi is None  # times, prices, volume: one type, one meaning
    assert same.closes_at == latest.closes_at and same.minute == latest.minute == 10 * 60 + 55
    assert strat.last == strat.seen  # ctx.last() in on_candle is the candle being processed

    replayed = list(engine.replay("NIFTY", "5m", DAY, DAY))
    assert [c[2:9] for c in replayed] == [c[2:9] for c in strat.seen]
    assert [c.index for c in replayed] == list(range(len(replayed)))
    assert type(replayed[0]) is mde.Candle


def test_open_interest_reaches_the_engine_candle_and_the_strategy(engine: MarketDataEngine) -> None:
    frame = make_candles(DAY, step=5, start_price=22000.0, seed=4)
    frame = frame.with_columns(oi=pl.int_range(0, frame.height, dtype=pl.Int64) * 75 + 1_000_000)
    engine.save_cache("NIFTY", "5m", frame)
    latest = engine.get_latest_candle("NIFTY", "5m", as_of=datetime.combine(DAY, time(15, 30), IST))
    assert latest is not None and latest.oi == 1_000_000 + (frame.height - 1) * 75
    strat = _run(frame)
    assert [c.oi for c in strat.seen] == frame["oi"].to_list()
    with_gap = frame.with_columns(oi=pl.when(pl.int_range(0, frame.height) == 3).then(None).otherwise(pl.col("oi")))
    assert [c.oi for c in _run(with_gap).seen] == with_gap["oi"].to_list()  # a null stays None, not 0


def test_a_series_grown_live_keeps_its_open_interest() -> None:
    full = with_close(make_candles(DAY, step=5, seed=5).with_columns(oi=pl.lit(7, pl.Int64)), TF, nse())
    data = SeriesData("NIFTY", TF, full.head(10))
    data.extend(full.slice(10))
    assert len(data) == full.height
    assert data.candle(full.height - 1).oi == 7 and data.candle(0).oi == 7
    plain = SeriesData("NIFTY", TF, with_close(make_candles(DAY, step=5, seed=5), TF, nse()))
    assert plain.oi is None and plain.candle(0).oi is None


@given(
    st.integers(min_value=as_us(datetime(1990, 1, 1, tzinfo=IST)), max_value=as_us(datetime(2099, 12, 31, tzinfo=IST))),
    st.integers(min_value=1, max_value=1440),
)
def test_the_candle_times_agree_with_its_datetimes(ts_us: int, minutes: int) -> None:
    close_us = ts_us + minutes * 60_000_000
    candle = Candle("NIFTY", "5m", ts_us, 1.0, 2.0, 0.5, 1.5, None, close_us, 0)
    ts = us_to_datetime(ts_us)
    assert candle.ts == ts and candle.ts.utcoffset() == ts.utcoffset()
    assert candle.closes_at == us_to_datetime(close_us)
    assert candle.minute == ts.hour * 60 + ts.minute
    assert candle.day == ts.date()
    assert candle.oi is None and len(candle) == 11
