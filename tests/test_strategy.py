"""Strategies through StrategyRunner: the sma_cross rule, warm-up, no look-ahead, square-off."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from mde.config import Settings
from mde.engine import MarketDataEngine
from mde.errors import InputError, NotCached
from mde.replay import run_replay
from mde.resample import with_close
from mde.strategies import SmaCross
from mde.strategy import Candle, Context, Strategy, StrategyRunner, load_strategy
from mde.timeframes import parse


@pytest.fixture(scope="module")
def nifty_engine(tmp_path_factory: pytest.TempPathFactory) -> MarketDataEngine:
    """NIFTY and BANKNIFTY 5m of 2024 (real Kite candles) and NIFTY 1m of early April, cached."""
    from mde.config import load

    eng = MarketDataEngine(load(cache_dir=tmp_path_factory.mktemp("cache"), source="sample", environ={}))
    eng.download("NIFTY", "5m", "2024-01-01", "2024-12-31")
    eng.download("BANKNIFTY", "5m", "2024-01-01", "2024-12-31")
    eng.download("NIFTY", "1m", "2024-04-01", "2024-04-05")
    return eng


def expected_sma_trades(
    candles: pl.DataFrame, fast: int, slow: int
) -> list[tuple[datetime, float, datetime | None, float]]:
    """The rule of the issue, computed independently with polars in integer paise."""
    df = (
        candles.with_columns(x=(pl.col("close") * 100).round().cast(pl.Int64))
        .with_columns(d=pl.col("x").rolling_sum(fast) * slow - pl.col("x").rolling_sum(slow) * fast)
        .with_columns(prev=pl.col("d").shift(1))
    )
    cross_up = ((pl.col("d") > 0) & (pl.col("prev") <= 0)).fill_null(False)
    cross_down = ((pl.col("d") < 0) & (pl.col("prev") >= 0)).fill_null(False)
    rows = df.with_columns(up=cross_up, down=cross_down).select("ts", "open", "close", "up", "down").rows()
    out: list = []
    holding = None
    for i, (_ts, _o, _c, up, down) in enumerate(rows):
        if up and holding is None and i + 1 < len(rows):
            holding = (rows[i + 1][0], rows[i + 1][1])
        elif down and holding is not None and i + 1 < len(rows):
            out.append((holding[0], holding[1], rows[i + 1][0], rows[i + 1][1]))
            holding = None
    if holding is not None:
        out.append((holding[0], holding[1], rows[-1][0], rows[-1][2]))  # closed at the last close
    return out


def test_sma_cross_trades_follow_the_rule_and_fill_at_the_next_open(nifty_engine: MarketDataEngine) -> None:
    result = run_replay(nifty_engine, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-06-30", costs="none")
    candles = result.candles["NIFTY"]
    got = [
        (r["entry_ts"], r["entry_price"], r["exit_ts"], r["exit_price"]) for r in result.trades.iter_rows(named=True)
    ]
    assert len(got) > 50
    assert got == expected_sma_trades(candles, 10, 30)
    assert result.trades["exit_reason"][-1] in ("signal", "end of replay")
    assert result.metrics["gross_pnl"] == pytest.approx(result.trades["gross_pnl"].sum(), abs=0.01)


def test_sma_cross_refuses_nonsense_parameters() -> None:
    with pytest.raises(InputError, match="must be smaller"):
        SmaCross(fast=30, slow=10)
    with pytest.raises(InputError, match="has no parameter speed; it takes fast, slow, qty"):
        SmaCross(speed=3)
    with pytest.raises(InputError, match="is not int"):
        SmaCross(fast="ten")
    assert SmaCross(fast="5", slow="20").params == {"fast": 5, "slow": 20, "qty": 0, "lots": 1}


class Probe(Strategy):
    """Records what it can see; checks the visibility rule at every candle."""

    name = "probe"

    def on_start(self, ctx: Context) -> None:
        self.start_window = ctx.window(n=500)
        self.start_now = ctx.now
        self.first: Candle | None = None
        self.count = 0

    def on_candle(self, ctx: Context, candle: Candle) -> None:
        if self.first is None:
            self.first = candle
        self.count += 1
        assert candle.closes_at == ctx.now
        assert ctx.window(n=1)["ts"][0] == candle.ts


def test_warm_up_history_before_from_is_visible_but_on_candle_starts_at_from(nifty_engine: MarketDataEngine) -> None:
    probe = Probe()
    run_replay(nifty_engine, probe, ["NIFTY"], "5m", "2024-03-01", "2024-03-05", costs="none")
    assert probe.start_window.height == 500
    assert probe.start_window["ts"][-1] < datetime(2024, 3, 1, tzinfo=probe.start_now.tzinfo)
    assert (
        probe.first is not None and probe.first.ts.date() == date(2024, 3, 1) and probe.first.ts.time() == time(9, 15)
    )
    cal = nifty_engine.calendar
    # 1, 4 and 5 March, plus the Saturday 2 March DR-drill session: every candle, once
    expected = sum(cal.candles_per_day(date(2024, 3, d), parse("5m")) for d in range(1, 6))
    assert probe.count == expected > 3 * 75


def test_a_15m_window_inside_a_5m_replay_excludes_the_unfinished_bucket(nifty_engine: MarketDataEngine) -> None:
    seen: dict[time, pl.DataFrame] = {}

    class Peek(Strategy):
        name = "peek"

        def on_candle(self, ctx: Context, candle: Candle) -> None:
            seen[candle.closes_at.time()] = ctx.window("NIFTY", "15m", 2)

    run_replay(nifty_engine, Peek(), ["NIFTY"], "5m", "2024-03-05", "2024-03-05", costs="none")
    at_0925 = seen[time(9, 25)]  # 09:15-09:30 bucket is still open: yesterday's last 15m candle is the newest
    assert at_0925["ts"][-1] == datetime(2024, 3, 4, 15, 15, tzinfo=at_0925["ts"][-1].tzinfo)
    at_0930 = seen[time(9, 30)]
    assert at_0930["ts"][-1].time() == time(9, 15)
    assert at_0930["close"][-1] == nifty_engine.get_window("NIFTY", "5m", 3, as_of="2024-03-05T09:30")["close"][-1]


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    primary=st.sampled_from(["1m", "3m", "5m"]),
    asks=st.lists(
        st.tuples(st.sampled_from(["1m", "3m", "5m", "15m", "30m", "60m", "1d"]), st.integers(1, 40)),
        min_size=1,
        max_size=3,
    ),
    stride=st.integers(7, 40),
)
def test_no_strategy_can_see_a_candle_before_its_close_at_any_timeframe(
    nifty_engine: MarketDataEngine, primary: str, asks: list[tuple[str, int]], stride: int
) -> None:
    checked = []

    class Snoop(Strategy):
        name = "snoop"

        def on_candle(self, ctx: Context, candle: Candle) -> None:
            if candle.index % stride:
                return
            for tf, n in asks:
                window = ctx.window("NIFTY", tf, n)
                if window.height:
                    closes = with_close(window, parse(tf), nifty_engine.calendar)["closes_at"]
                    assert closes.max() <= ctx.now
                # the very same answer as the engine's own window at that instant
                expected = nifty_engine.get_window("NIFTY", tf, n, as_of=ctx.now)
                assert window.equals(expected.select(window.columns)), (tf, n, ctx.now)
                checked.append(tf)

    run_replay(nifty_engine, Snoop(), ["NIFTY"], primary, "2024-04-02", "2024-04-03", costs="none")
    assert checked


def test_orb_squares_off_intraday_positions_at_the_1520_candle_open(nifty_engine: MarketDataEngine) -> None:
    result = run_replay(nifty_engine, "orb", ["NIFTY"], "5m", "2024-06-01", "2024-07-31", segment="futures")
    trades = result.trades
    assert trades.height > 10
    assert (trades["entry_ts"].dt.date() == trades["exit_ts"].dt.date()).all()
    squared = trades.filter(pl.col("exit_reason") == "square-off")
    assert squared.height > 0
    assert (squared["exit_ts"].dt.time() == time(15, 20)).all()
    candles = result.candles["NIFTY"]
    opens = dict(zip(candles["ts"].to_list(), candles["open"].to_list(), strict=True))
    assert all(
        opens[t] == p for t, p in zip(squared["exit_ts"].to_list(), squared["exit_price"].to_list(), strict=True)
    )
    assert set(trades["exit_reason"]) <= {"square-off", "stop", "target"}
    assert (trades["entry_ts"].dt.time() < time(15, 20)).all()


def test_position_open_at_the_end_is_closed_at_the_last_close_and_marked(nifty_engine: MarketDataEngine) -> None:
    class Hold(Strategy):
        name = "hold"

        def on_candle(self, ctx: Context, candle: Candle) -> None:
            if ctx.position() == 0 and not ctx.open_orders():
                ctx.buy(2)

    result = run_replay(nifty_engine, Hold(), ["NIFTY"], "5m", "2024-02-01", "2024-02-29", costs="none")
    assert result.trades.height == 1
    row = result.trades.row(0, named=True)
    assert row["exit_reason"] == "end of replay"
    assert row["exit_price"] == result.candles["NIFTY"]["close"][-1]
    assert row["entry_price"] == result.candles["NIFTY"]["open"][1]  # decided at the first close
    assert result.metrics["exposure_pct"] > 99


def test_several_symbols_are_driven_in_close_time_order(nifty_engine: MarketDataEngine) -> None:
    order: list[tuple[int, str]] = []

    class Both(Strategy):
        name = "both"

        def on_candle(self, ctx: Context, candle: Candle) -> None:
            order.append((candle.close_us, candle.symbol))

    result = run_replay(nifty_engine, Both(), ["NIFTY", "BANKNIFTY"], "5m", "2024-05-02", "2024-05-03", costs="none")
    assert order == sorted(order, key=lambda x: x[0])
    assert {s for _, s in order} == {"NIFTY", "BANKNIFTY"}
    assert result.equity.height == len({t for t, _ in order})


def test_user_strategy_file_loads_by_path(tmp_path: Path, nifty_engine: MarketDataEngine) -> None:
    path = tmp_path / "mine.py"
    path.write_text(
        "from mde import Strategy\n"
        "class Breakout(Strategy):\n"
        "    lookback: int = 20\n"
        "    def on_candle(self, ctx, candle):\n"
        "        closes = ctx.closes(n=self.lookback + 1)\n"
        "        if len(closes) > self.lookback and ctx.position() == 0 and candle.close > max(closes[:-1]):\n"
        "            ctx.buy(1)\n"
        "        elif ctx.position() > 0 and candle.close < min(closes[:-1]):\n"
        "            ctx.close()\n"
    )
    cls = load_strategy(f"{path}:Breakout")
    assert cls.parameters() == {"lookback": (int, 20)}
    result = run_replay(
        nifty_engine,
        f"{path}:Breakout",
        ["NIFTY"],
        "5m",
        "2024-03-01",
        "2024-03-31",
        params={"lookback": "30"},
        costs="none",
    )
    assert result.params == {"lookback": 30} and result.trades.height > 0
    with pytest.raises(InputError, match="no Strategy subclass named 'Nope'"):
        load_strategy(f"{path}:Nope")
    with pytest.raises(InputError, match="unknown strategy"):
        load_strategy("nope")


def test_strategy_runner_keeps_the_seed_signature() -> None:
    runner = StrategyRunner([SmaCross()])
    assert runner.engine is None
    with pytest.raises(InputError, match="no market_data_engine"):
        runner.series("NIFTY", "5m")


def test_replay_of_an_uncached_range_names_the_fetch_to_run(settings: Settings) -> None:
    eng = MarketDataEngine(settings)
    eng.download("NIFTY", "5m", "2024-03-01", "2024-03-31")
    with pytest.raises(NotCached, match=r"mde fetch NIFTY --timeframe 5m --from 2024-02-01 --to 2024-02-29"):
        run_replay(eng, "sma_cross", ["NIFTY"], "5m", "2024-02-01", "2024-03-31", costs="none")
    result = run_replay(eng, "sma_cross", ["NIFTY"], "5m", "2024-02-01", "2024-03-31", costs="none", allow_gaps=True)
    assert "skipped" in result.warnings[0]
    with pytest.raises(NotCached, match="mde fetch BANKNIFTY --timeframe 5m --from 2024-03-01 --to 2024-03-28"):
        run_replay(eng, "sma_cross", ["BANKNIFTY"], "5m", "2024-03-01", "2024-03-31", costs="none")
    # issue 14: a fetch the sample cannot answer is not advised (it would fail, and replay again)
    with pytest.raises(InputError, match="the sample has none to fetch") as info:
        run_replay(eng, "sma_cross", ["INFY"], "5m", "2024-03-01", "2024-03-31", costs="none")
    assert "mde fetch" not in str(info.value)
