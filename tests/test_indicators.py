"""ctx.indicator: causal polars indicators, read one value per candle, never ahead of now;
sma_cross's vectorised sign; the equity curve built per stretch between fills."""

from __future__ import annotations

import random
from datetime import date

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from factories import make_candles, trading_days
from mde.broker import SimBroker
from mde.calendar import nse
from mde.costs import cost_model
from mde.engine import MarketDataEngine
from mde.errors import InputError
from mde.replay import run_replay
from mde.resample import with_close
from mde.strategies import SmaCross
from mde.strategy import Candle, Context, SeriesData, Strategy, StrategyRunner, merge_events
from mde.timeframes import parse

DAYS = trading_days(date(2024, 3, 4), 6)
TF = parse("5m")


@pytest.fixture
def cached(engine: MarketDataEngine) -> MarketDataEngine:
    engine.save_cache("NIFTY", "5m", make_candles(DAYS, step=5, start_price=22000.0, seed=1))
    engine.save_cache("BANKNIFTY", "5m", make_candles(DAYS, step=5, start_price=47000.0, seed=2))
    return engine


def series(symbol: str, seed: int, days: list[date] = DAYS) -> SeriesData:
    return SeriesData(symbol, TF, with_close(make_candles(days, step=5, start_price=1000.0, seed=seed), TF, nse()))


class Reader(Strategy):
    """Reads an indicator at every candle and compares it with the same computation over the
    candles visible now, i.e. what a strategy could have computed itself without look-ahead."""

    name = "reader"

    def __init__(self, compute: object, **params: object) -> None:
        super().__init__(**params)
        self.compute = compute
        self.seen: list[tuple[object, object]] = []

    def on_start(self, ctx: Context) -> None:
        self.ind = ctx.indicator(self.compute, name="probe")

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        visible = ctx.window(n=100_000)
        expected = visible.select(self.compute(visible)).to_series()[-1]
        self.seen.append((self.ind.value, expected))
        assert self.ind.last(3)[-1] == self.ind.value


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["sma", "ema", "max", "cum", "lag"]),
    n=st.integers(1, 40),
    start=st.integers(0, 4),
)
def test_an_indicator_value_is_what_the_candles_closed_by_now_give(
    cached: MarketDataEngine, kind: str, n: int, start: int
) -> None:
    compute = {
        "sma": lambda f: pl.col("close").rolling_mean(n),
        "ema": lambda f: pl.col("close").ewm_mean(span=n, adjust=False),
        "max": lambda f: pl.col("high").rolling_max(n),
        "cum": lambda f: pl.col("volume").cum_sum(),
        "lag": lambda f: pl.col("close").shift(n),
    }[kind]
    strat = Reader(compute)
    run_replay(cached, strat, ["NIFTY"], "5m", DAYS[start], DAYS[-1], costs="none")
    assert len(strat.seen) > 70
    assert all(got == want for got, want in strat.seen), [x for x in strat.seen if x[0] != x[1]][:3]


@pytest.mark.parametrize(
    "leak",
    [
        pytest.param(lambda f: pl.col("close").shift(-1), id="next close"),
        pytest.param(lambda f: pl.col("close").rolling_mean(5, center=True), id="centred window"),
        pytest.param(lambda f: pl.col("close") / pl.col("close").max(), id="scaled by the whole series"),
        pytest.param(lambda f: pl.col("close").backward_fill().reverse().cum_max().reverse(), id="future maximum"),
    ],
)
def test_an_indicator_that_looks_ahead_is_refused(cached: MarketDataEngine, leak: object) -> None:
    with pytest.raises(InputError, match="looks ahead"):
        run_replay(cached, Reader(leak), ["NIFTY"], "5m", DAYS[2], DAYS[-1], costs="none")


def test_an_indicator_that_fails_or_returns_the_wrong_shape_says_so(cached: MarketDataEngine) -> None:
    with pytest.raises(InputError, match="indicator probe failed: ColumnNotFoundError"):
        run_replay(cached, Reader(lambda f: pl.col("nope")), ["NIFTY"], "5m", DAYS[2], DAYS[-1], costs="none")
    with pytest.raises(InputError, match="one value per candle"):
        run_replay(cached, Reader(lambda f: f["close"].head(3)), ["NIFTY"], "5m", DAYS[2], DAYS[-1], costs="none")


def test_an_indicator_follows_a_series_that_grows_as_in_a_live_session() -> None:
    full = series("NIFTY", 7)
    head = SeriesData(
        "NIFTY", TF, with_close(make_candles(DAYS, step=5, start_price=1000.0, seed=7), TF, nse()).head(150)
    )
    values = []

    class Live(Strategy):
        name = "live"

        def on_start(self, ctx: Context) -> None:
            self.sma = ctx.indicator(lambda f: pl.col("close").rolling_mean(20))

        def on_candle(self, ctx: Context, candle: Candle) -> None:
            values.append(self.sma.value)

    runner = StrategyRunner(
        Live(),
        symbols=["NIFTY"],
        timeframe="5m",
        broker=SimBroker(1e6, lambda _s: cost_model("none", None, None, "NIFTY"), lambda _s: 0.05),
    )
    runner.add_series(head)
    runner.start(head.close_us[-1])
    rest = full.frame.with_columns(
        closes_at=pl.Series(list(full.close_us))
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Kolkata")
    ).slice(150)
    for k in range(rest.height):  # one candle per tick, as paper appends them
        head.extend(rest.slice(k, 1))
        runner.process_span(head, 150 + k, 151 + k)
    want = full.frame["close"].rolling_mean(20).slice(150).to_list()
    assert values == want


@hsettings(max_examples=40, deadline=None)
@given(
    closes=st.lists(st.integers(9_000, 9_060), min_size=1, max_size=120),
    fast=st.integers(1, 6),
    extra=st.integers(1, 10),
)
def test_sma_cross_sign_is_the_exact_rule_in_paise(closes: list[int], fast: int, extra: int) -> None:
    """The vectorised sign against the rule written out per candle (prices on a 0.05 grid, many ties)."""
    slow = fast + extra
    prices = [c * 5 / 100 for c in closes]  # 450.00 .. 453.00 in steps of 0.05
    got = pl.DataFrame({"close": prices}).select(SmaCross(fast=fast, slow=slow).sign(None)).to_series().to_list()  # type: ignore[arg-type]
    paise = [round(p * 100) for p in prices]
    want = []
    for i in range(len(paise)):
        if i + 1 < slow:
            want.append(None)
            continue
        d = sum(paise[i + 1 - fast : i + 1]) * slow - sum(paise[i + 1 - slow : i + 1]) * fast
        want.append((d > 0) - (d < 0))
    assert got == want


class Random(Strategy):
    """Trades at random (market, limit, stop and bracket orders) and records ctx.equity."""

    name = "random"
    seed: int = 0

    def on_start(self, ctx: Context) -> None:
        self.rng = random.Random(self.seed)
        self.marks: dict[int, float] = {}

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        self.marks[candle.close_us] = ctx.equity  # the last symbol of a close time wins, as in equity_frame
        r = self.rng.random()
        qty = self.rng.randint(1, 3)
        if r < 0.12:
            ctx.buy(qty)
        elif r < 0.2:
            ctx.sell(qty, limit=round(candle.close + 0.5, 2))
        elif r < 0.26:
            ctx.buy(
                qty,
                stop=round(candle.high + 0.1, 2),
                stop_loss=round(candle.low - 2, 2),
                target=round(candle.high + 3, 2),
            )
        elif r < 0.34:
            ctx.close()


@hsettings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), two=st.booleans())
def test_the_equity_curve_is_cash_plus_positions_at_each_close_whole_or_candle_by_candle(seed: int, two: bool) -> None:
    def run(by_candle: bool) -> tuple[list[float], dict[int, float], int]:
        data = [series("A", seed)] + ([series("B", seed + 1)] if two else [])
        strat = Random(seed=seed)
        model = cost_model("zerodha", "futures", "NFO-FUT", "A")  # charges move cash when trades close
        broker = SimBroker(1e6, lambda _s: model, lambda _s: 0.05)
        runner = StrategyRunner(strat, symbols=[d.symbol for d in data], timeframe="5m", broker=broker)
        for d in data:
            runner.add_series(d)
        spans = merge_events(data, [0] * len(data), [len(d) for d in data])
        if by_candle:
            spans = [(d, i, i + 1) for d, a, b in spans for i in range(a, b)]
        runner.start(data[0].ts_us[0])
        for d, a, b in spans:
            runner.process_span(d, a, b)
        return list(runner.equity_values), strat.marks, runner.exposed_count

    whole, marks, exposed = run(False)
    stepwise, _, exposed_stepwise = run(True)
    assert whole == stepwise and exposed == exposed_stepwise
    # the last point of each close time against ctx.equity (cash + positions at their visible closes)
    data = [series("A", seed)] + ([series("B", seed + 1)] if two else [])
    order = sorted((d.close_us[i], k, i) for k, d in enumerate(data) for i in range(len(d)))
    assert len(order) == len(whole)
    last_at = {t: value for (t, _k, _i), value in zip(order, whole, strict=True)}
    assert len(last_at) == len(marks)
    for t, value in last_at.items():
        assert value == pytest.approx(marks[t], rel=1e-12, abs=1e-6)
