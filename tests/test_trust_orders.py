"""Orders a careful broker would refuse: buying power at each fill, lots, ticks, wrong-side brackets.

Replays run on real Kite NIFTY 5m candles in a temporary cache; lot sizes come from the real
instruments dump in data/instruments.csv (NIFTY25DECFUT: 75). Paper runs a bundled day.
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from conftest import run_mde
from mde.broker import SimBroker
from mde.config import load
from mde.costs import CostModel, load_table
from mde.engine import MarketDataEngine
from mde.errors import ConfigError, InputError
from mde.margins import Contract, load_margins, round_order_prices, to_tick
from mde.paper.session import run_sample_session
from mde.paper.state import TradeState, session_path
from mde.replay import run_replay
from mde.strategy import Strategy

MIN = 60_000_000
T0 = 1_717_386_300_000_000  # 2024-06-03 09:15 IST in epoch microseconds
DAY = date(2024, 6, 3)


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory) -> MarketDataEngine:
    e = MarketDataEngine(load(cache_dir=tmp_path_factory.mktemp("orders") / "cache", source="sample", environ={}))
    e.download("NIFTY", "5m", "2024-01-01", "2024-03-31")
    return e


def candle(b: SimBroker, k: int, o: float, h: float, low: float, symbol: str = "X") -> None:
    b.on_candle(symbol, T0 + k * 5 * MIN, o, h, low)


def placed_after(k: int) -> int:
    return T0 + (k + 1) * 5 * MIN


# -- strategies used below ----------------------------------------------------------------
class BuyABillion(Strategy):
    """The issue's absurd order: ctx.buy(10**9) on Rs 10 lakh."""

    def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
        if ctx.position() == 0:
            ctx.buy(10**9)


class BuyOne(Strategy):
    def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
        if ctx.position() == 0:
            ctx.buy(1)


class BuyLots(Strategy):
    lots: int = 2

    def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
        if ctx.position() == 0:
            ctx.buy(lots=self.lots)
        elif candle.minute == 15 * 60:  # hold a while, then exit
            ctx.close()


class WrongSideBracket(Strategy):
    """A long with its stop-loss ABOVE the entry, a short with its target ABOVE: both nonsense."""

    short: bool = False

    def on_start(self, ctx):  # type: ignore[no-untyped-def]
        self.placed: list[object] = []

    def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
        if ctx.position() == 0 and not ctx.open_orders():
            if self.short:
                self.placed.append(ctx.sell(lots=1, stop_loss=candle.close + 50, target=candle.close + 20))
            else:
                self.placed.append(ctx.buy(lots=1, stop_loss=candle.close + 50, target=candle.close + 100))


# -- buying power -------------------------------------------------------------------------
def test_an_absurd_order_is_rejected_with_its_reason_and_counted(eng: MarketDataEngine) -> None:
    result = run_replay(eng, BuyABillion, ["NIFTY"], "5m", "2024-01-01", "2024-01-31", costs="none")
    assert result.trades.height == 0
    assert result.metrics["net_pnl"] == 0 and result.metrics["return_pct"] == 0
    assert abs(result.equity["equity"][-1] - 1_000_000.0) < 1e-6
    n = len(result.rejections)
    assert n > 100  # re-placed at each candle, refused at each fill
    assert result.rejections_by_reason() == {"buying power": n}
    first = result.rejections[0]
    assert first["qty"] == 10**9 and first["side"] == "buy" and first["reason"] == "buying power"
    assert "needs Rs" in first["detail"] and "Rs 1,000,000.00 is free" in first["detail"]
    summary = json.loads(result.to_json())
    assert summary["rejections"]["total"] == n
    assert summary["rejections"]["by_reason"] == {"buying power": n}
    assert len(summary["rejections"]["orders"]) == n


def test_the_html_report_counts_rejections(eng: MarketDataEngine, tmp_path: Path) -> None:
    result = run_replay(eng, BuyABillion, ["NIFTY"], "5m", "2024-01-02", "2024-01-02", costs="none")
    result.write_report(tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert f"Rejected orders: {len(result.rejections):,} (buying power: {len(result.rejections):,})" in html


def test_the_cli_summary_counts_rejections_by_reason(eng: MarketDataEngine, tmp_path: Path) -> None:
    strat = tmp_path / "absurd.py"
    strat.write_text(
        "from mde.strategy import Strategy\n\nclass Absurd(Strategy):\n"
        "    def on_candle(self, ctx, candle):\n        if ctx.position() == 0:\n            ctx.buy(10**9)\n"
    )
    env = {"MDE_CACHE_DIR": str(eng.settings.cache_dir), "MDE_SOURCE": "sample", "COLUMNS": "200"}
    args = (
        "replay",
        "--strategy",
        f"{strat}:Absurd",
        "--symbol",
        "NIFTY",
        "-t",
        "5m",
        "--from",
        "2024-01-02",
        "--to",
        "2024-01-02",
        "--costs",
        "none",
    )
    table = run_mde(*args, env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "rejected orders" in table.stdout and "buying power" in table.stdout
    out = run_mde(*args, "--json", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rejections"]["by_reason"] == {"buying power": summary["rejections"]["total"]}
    assert summary["rejections"]["total"] >= 70
    assert summary["metrics"]["trades"] == 0


def test_delivery_needs_cash_for_the_price_and_the_charges() -> None:
    model = CostModel(load_table(), "delivery")
    price, qty = 1000.0, 100
    charges = load_table().leg("delivery", "buy", price, qty, DAY).total
    assert charges > 0

    def run(cash: float) -> SimBroker:
        b = SimBroker(cash, lambda s: model, lambda s: 0.05, contracts={"X": Contract("delivery")})
        b.place("s", "X", 1, qty, placed_after(0))
        candle(b, 1, price, price, price)
        return b

    short = run(price * qty + charges - 0.01)  # the price but not all the charges
    assert short.fills == [] and [r.code for r in short.rejections] == ["buying power"]
    assert "delivery margin" in short.rejections[0].why
    enough = run(price * qty + charges)
    assert [(f.qty, f.price) for f in enough.fills] == [(qty, price)] and enough.rejections == []


def test_futures_need_margin_blocked_positions_count_and_exits_always_go() -> None:
    model = CostModel(None, None)  # no charges: the margin alone
    b = SimBroker(300_000.0, lambda s: model, lambda s: 0.05, contracts={"X": Contract("futures", lot_size=75)})
    # one lot at 20,000: 15 % of 15 lakh = 2.25 lakh of margin, fits in 3 lakh
    b.place("s", "X", 1, 75, placed_after(0))
    candle(b, 1, 20_000.0, 20_000.0, 20_000.0)
    assert b.net == {"X": 75}
    # a second lot: 2.25 lakh more, but only 0.75 lakh is free while the first blocks its margin
    b.place("s", "X", 1, 75, placed_after(1))
    candle(b, 2, 20_000.0, 20_000.0, 20_000.0)
    assert b.net == {"X": 75} and [r.code for r in b.rejections] == ["buying power"]
    assert "futures margin" in b.rejections[0].why and "Rs 75,000.00 is free" in b.rejections[0].why
    # the market falls far: equity is below the blocked margin, yet the exit always goes
    b.place("s", "X", -1, 75, placed_after(2))
    candle(b, 3, 16_500.0, 16_500.0, 16_500.0)
    assert b.net == {} and len(b.trades) == 1 and b.trades[0].gross == -262_500.0
    # a reversal beyond flat needs margin for its new side: refused now that cash is 37,500
    b.place("s", "X", -1, 75, placed_after(3))
    candle(b, 4, 16_500.0, 16_500.0, 16_500.0)
    assert b.net == {} and len(b.rejections) == 2


def test_a_bought_option_needs_its_premium_a_sold_one_margin_on_the_strike() -> None:
    model = CostModel(None, None)
    opt = Contract("options", lot_size=75, strike=24_000.0)
    b = SimBroker(20_000.0, lambda s: model, lambda s: 0.05, contracts={"CE": opt})
    b.place("s", "CE", 1, 75, placed_after(0))  # 75 x 200 = 15,000 of premium: fits
    candle(b, 1, 200.0, 200.0, 200.0, "CE")
    assert b.net == {"CE": 75}
    b.place("t", "CE", -1, 75, placed_after(1))  # another strategy writes it: 15 % of 24,000 x 75 = 2.7 lakh
    candle(b, 2, 200.0, 200.0, 200.0, "CE")
    assert [r.code for r in b.rejections] == ["buying power"] and b.net == {"CE": 75}


def test_margins_file_overrides_the_bundled_rates(tmp_path: Path) -> None:
    bundled = (Path(__file__).resolve().parents[1] / "src" / "mde" / "data" / "margins.toml").read_text()
    mine = tmp_path / "my-margins.toml"
    mine.write_text(bundled.replace("futures_pct = 15.0", "futures_pct = 50.0"))
    (tmp_path / "mde.toml").write_text('[margins]\nfile = "my-margins.toml"\n')
    settings = load(config=tmp_path / "mde.toml", environ={})
    assert settings.margins_file == mine
    table = load_margins(settings.margins_file)
    assert table.margin("futures", 75, 20_000.0, DAY) == 750_000.0
    assert load_margins().margin("futures", 75, 20_000.0, DAY) == 225_000.0
    b = SimBroker(
        300_000.0,
        lambda s: CostModel(None, None),
        lambda s: 0.05,
        contracts={"X": Contract("futures", lot_size=75)},
        margins=table,
    )
    b.place("s", "X", 1, 75, placed_after(0))
    candle(b, 1, 20_000.0, 20_000.0, 20_000.0)
    assert b.fills == [] and b.rejections[0].code == "buying power"
    bad = tmp_path / "bad.toml"
    bad.write_text(bundled.replace("futures_pct = 15.0", "futures_pct = 150.0", 1))
    with pytest.raises(ConfigError, match="futures_pct must be a percentage"):
        load_margins(bad)


# -- lots ---------------------------------------------------------------------------------
def test_an_index_as_futures_takes_its_futures_lot_and_says_so(eng: MarketDataEngine) -> None:
    result = run_replay(eng, BuyOne, ["NIFTY"], "5m", "2024-01-02", "2024-01-05", segment="futures")
    assert result.trades.height == 0
    assert result.rejections_by_reason() == {"lot size": len(result.rejections)} and result.rejections
    assert "NIFTY trades in lots of 75: quantity 1 is not a multiple" in result.rejections[0]["detail"]
    assert result.lots["NIFTY"]["lot_size"] == 75 and result.lots["NIFTY"]["segment"] == "futures"
    assert "NIFTY25DECFUT" in result.lots["NIFTY"]["source"] and "NIFTY25DECFUT" in result.fill_model
    # placing-time rejections come at once: the order never reached a candle
    assert result.rejections[0]["ts"].startswith("2024-01-02T09:20")


def test_lots_2_fills_two_lots_and_qty_with_lots_is_an_error(eng: MarketDataEngine) -> None:
    result = run_replay(eng, BuyLots, ["NIFTY"], "5m", "2024-01-02", "2024-01-05", segment="futures")
    assert result.trades.height >= 1 and set(result.trades["qty"].to_list()) == {150}
    assert result.rejections == []

    class Both(Strategy):
        def on_candle(self, ctx, candle):  # type: ignore[no-untyped-def]
            ctx.buy(75, lots=1)

    with pytest.raises(InputError, match="give qty or lots, not both"):
        run_replay(eng, Both, ["NIFTY"], "5m", "2024-01-02", "2024-01-02", segment="futures")


def test_builtins_trade_one_lot_on_futures_and_one_unit_on_cash(eng: MarketDataEngine) -> None:
    fut = run_replay(eng, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-01-31", segment="futures")
    assert fut.trades.height > 5 and set(fut.trades["qty"].to_list()) == {75} and fut.rejections == []
    cash = run_replay(eng, "sma_cross", ["NIFTY"], "5m", "2024-01-01", "2024-01-31", costs="none")
    assert set(cash.trades["qty"].to_list()) == {1}
    orb = run_replay(eng, "orb", ["NIFTY"], "5m", "2024-01-01", "2024-01-31", segment="futures")
    assert orb.trades.height > 5 and set(orb.trades["qty"].to_list()) == {75}
    assert orb.rejections_by_reason().get("lot size") is None and orb.rejections_by_reason().get("bracket side") is None
    with pytest.raises(InputError, match="give qty or lots, not both"):
        run_replay(
            eng, "orb", ["NIFTY"], "5m", "2024-01-01", "2024-01-31", params={"qty": 75, "lots": 2}, segment="futures"
        )


# -- ticks --------------------------------------------------------------------------------
TICKS = st.sampled_from([0.05, 0.1, 0.2, 0.01, 1.0, 0.0025])


def on_grid(p: float, tick: float) -> bool:
    return abs(round(p / tick) * tick - p) < 1e-6


@hsettings(max_examples=300, deadline=None)
@given(asked=st.floats(1.0, 100_000.0), tick=TICKS, side=st.sampled_from([1, -1]), up=st.booleans())
def test_rounded_prices_are_on_the_tick_and_never_better_than_asked(
    asked: float, tick: float, side: int, up: bool
) -> None:
    assert on_grid(to_tick(asked, tick, up), tick)
    limit, _, _, _ = round_order_prices(side, tick, asked, None, None, None)
    _, stop, _, _ = round_order_prices(side, tick, None, asked, None, None)
    _, _, stop_loss, target = round_order_prices(side, tick, None, None, asked, asked)
    for p in (limit, stop, stop_loss, target):
        assert on_grid(p, tick) and abs(p - asked) < tick + 1e-9
    # a limit never pays more (buy) or takes less (sell) than asked; a stop never fills better than asked
    assert (limit <= asked + 1e-9) if side > 0 else (limit >= asked - 1e-9)
    assert (stop >= asked - 1e-9) if side > 0 else (stop <= asked + 1e-9)
    # the bracket legs are orders of the exit side: a long's stop-loss is a sell stop, its target a sell limit
    assert (stop_loss <= asked + 1e-9) if side > 0 else (stop_loss >= asked - 1e-9)
    assert (target >= asked - 1e-9) if side > 0 else (target <= asked + 1e-9)


@hsettings(max_examples=300, deadline=None)
@given(
    asked=st.floats(90.0, 110.0),
    side=st.sampled_from([1, -1]),
    kind=st.sampled_from(["limit", "stop"]),
    n_open=st.integers(1700, 2300),
    n_high=st.integers(0, 200),
    n_low=st.integers(0, 200),
)
def test_a_rounded_order_triggers_on_exactly_the_candles_the_asked_one_would(
    asked: float, side: int, kind: str, n_open: int, n_high: int, n_low: int
) -> None:
    """On candles of the tick grid, rounding changes the fill price only: never whether it fills,
    and a fill is never better than the asked price."""
    tick = 0.05
    o = round(n_open * tick, 2)
    h, low = round(o + n_high * tick, 2), round(o - n_low * tick, 2)
    b = SimBroker(1e9, lambda s: CostModel(None, None), lambda s: tick)
    order = b.place("s", "X", side, 1, placed_after(0), **{kind: asked})
    assert on_grid(order.price, tick)
    raw = SimBroker._trigger(type(order)(0, "s", "X", side, 1, kind, asked, 0), o, h, low, 0.0)
    got = SimBroker._trigger(order, o, h, low, 0.0)
    assert (raw is None) == (got is None)
    if got is not None:
        price = got[0]
        assert on_grid(price, tick)
        better = price < asked - 1e-9 if side > 0 else price > asked + 1e-9
        if kind == "stop":
            assert not better  # a stop never fills better than its price
        else:
            assert price <= asked + 1e-9 if side > 0 else price >= asked - 1e-9  # within the limit


# -- brackets -----------------------------------------------------------------------------
@pytest.mark.parametrize("short", [False, True])
def test_a_wrong_side_bracket_is_rejected_when_placed(eng: MarketDataEngine, short: bool) -> None:
    strat = WrongSideBracket(short=short)
    result = run_replay(eng, strat, ["NIFTY"], "5m", "2024-01-02", "2024-01-03", segment="futures")
    assert result.trades.height == 0  # before: one instant stop-out per entry
    assert strat.placed and all(o is None for o in strat.placed)
    assert result.rejections_by_reason() == {"bracket side": len(strat.placed)}
    detail = result.rejections[0]["detail"]
    if short:
        assert "target" in detail and "of a short entry is not below the entry" in detail
    else:
        assert "stop_loss" in detail and "of a long entry is not below the entry" in detail
    assert "(last close when placed)" in detail


def test_a_limit_entrys_bracket_is_judged_against_its_limit() -> None:
    b = SimBroker(1e7, lambda s: CostModel(None, None), lambda s: 0.05)
    ok = b.place("s", "X", 1, 1, placed_after(0), limit=100.0, stop_loss=99.0, target=103.0)
    assert b.vet(ok, reference=120.0) is None  # the limit, not the last close, is the entry
    bad = b.place("s", "X", 1, 1, placed_after(0), limit=100.0, stop_loss=101.0)
    assert b.vet(bad, reference=120.0) == (
        "bracket side",
        "stop_loss 101.00 of a long entry is not below the entry 100.00",
    )


# -- paper ----------------------------------------------------------------------------------
def test_paper_journals_rejections_with_their_reasons(tmp_path: Path) -> None:
    strat = tmp_path / "greedy.py"
    strat.write_text(
        "from mde.strategy import Strategy\n\n"
        "class Greedy(Strategy):\n"
        "    def on_candle(self, ctx, candle):\n"
        "        if ctx.position() == 0:\n"
        "            ctx.buy(1)             # not a lot of 75: refused when placed\n"
        "            ctx.buy(lots=10**6)    # a million lots: refused at the fill\n"
    )
    settings = load(cache_dir=tmp_path / "cache", source="sample", environ={})
    MarketDataEngine(settings).download("NIFTY", "5m", "2024-06-01", "2024-06-13")
    result = run_sample_session(
        settings, f"{strat}:Greedy", ["NIFTY"], "5m", "2024-06-14", name="greedy", segment="futures", until="10:00"
    )
    assert result.trades.height == 0
    with TradeState(session_path(tmp_path / "cache" / "_paper", "greedy")) as state:
        rejects = [e.payload for e in state.events("reject")]
    codes = {p["code"] for p in rejects}
    assert codes == {"lot size", "buying power"}
    assert any("lots of 75" in p["reason"] for p in rejects)
    assert any("needs Rs" in p["reason"] for p in rejects)
    assert result.summary.rejections_by_reason()["lot size"] >= 1
    assert not math.isnan(result.summary.metrics["net_pnl"])


def test_a_stock_is_margined_intraday_for_an_intraday_strategy_and_in_cash_otherwise() -> None:
    model = CostModel(None, "equity")  # no table: no charges
    b = SimBroker(100_000.0, lambda s: model, lambda s: 0.05, contracts={"RELIANCE": Contract("equity")})
    b.intraday = {"mis"}
    # 300 x 1,000 = 3 lakh: 20 % (60,000) for an intraday strategy, the full 3 lakh in cash otherwise
    b.place("cnc", "RELIANCE", 1, 300, placed_after(0))
    b.place("mis", "RELIANCE", 1, 300, placed_after(0))
    candle(b, 1, 1000.0, 1000.0, 1000.0, "RELIANCE")
    assert [(f.strategy, f.qty) for f in b.fills] == [("mis", 300)]
    assert [(r.order.strategy, r.code) for r in b.rejections] == [("cnc", "buying power")]
    assert "delivery margin" in b.rejections[0].why


def test_a_cached_kite_dump_gives_the_lot_of_the_runs_own_time(tmp_path: Path) -> None:
    """Lot sizes change: a dump listing the January 2024 future (lot 25) gives 25 for a January run."""
    import polars as pl

    settings = load(cache_dir=tmp_path / "cache", source="sample", environ={})
    e = MarketDataEngine(settings)
    e.download("NIFTY", "5m", "2024-01-01", "2024-01-31")
    meta = tmp_path / "cache" / "_meta"
    meta.mkdir(parents=True)
    rows = {
        "tradingsymbol": ["NIFTY24JANFUT", "NIFTY24FEBFUT", "NIFTY24DECFUT"],
        "exchange": ["NFO"] * 3,
        "name": ["NIFTY"] * 3,
        "expiry": [date(2024, 1, 25), date(2024, 2, 29), date(2024, 12, 26)],
        "lot_size": [50, 25, 75],
        "instrument_type": ["FUT"] * 3,
        "strike": [0.0] * 3,
        "tick_size": [0.05] * 3,
    }
    rows |= {
        "instrument_token": [1, 2, 3],
        "exchange_token": ["1", "2", "3"],
        "last_price": [0.0] * 3,
        "segment": ["NFO-FUT"] * 3,
    }
    from mde.instruments import SCHEMA

    pl.DataFrame(rows, schema=SCHEMA).write_parquet(meta / "instruments.parquet")  # as the Kite catalog writes it
    (meta / "instruments.json").write_text('{"fetched_at": "2024-01-01T08:00:00+05:30", "rows": 3}')
    jan = run_replay(e, "sma_cross", ["NIFTY"], "5m", "2024-01-02", "2024-01-20", segment="futures")
    assert jan.lots["NIFTY"]["lot_size"] == 50 and "NIFTY24JANFUT" in jan.lots["NIFTY"]["source"]
    assert "cached Kite instruments dump of 2024-01-01" in jan.lots["NIFTY"]["source"]
    assert set(jan.trades["qty"].to_list()) == {50}
    late = run_replay(e, "sma_cross", ["NIFTY"], "5m", "2024-01-26", "2024-01-31", segment="futures")
    assert late.lots["NIFTY"]["lot_size"] == 25  # the February contract: the first expiring on or after --from


def test_an_nfo_contract_takes_its_own_lot_from_the_dump(tmp_path: Path) -> None:
    from conftest import NSE_DATA

    settings = load(cache_dir=tmp_path / "cache", source="sample", environ={}, now="2026-01-10T16:00+05:30")
    e = MarketDataEngine(settings)
    # NIFTY 50 candles stand in for the future's (a real NFO contract, lot 75 in data/instruments.csv)
    e.import_file(NSE_DATA / "NIFTY50_5m_2024.csv", "NFO:NIFTY25DECFUT", "5m")
    result = run_replay(e, "sma_cross", ["NFO:NIFTY25DECFUT"], "5m", "2024-01-01", "2024-02-28")
    assert result.lots["NFO:NIFTY25DECFUT"]["lot_size"] == 75 and result.segment == "futures"
    assert result.trades.height > 5 and set(result.trades["qty"].to_list()) == {75}
    one = run_replay(e, BuyOne, ["NFO:NIFTY25DECFUT"], "5m", "2024-01-02", "2024-01-02")
    assert one.trades.height == 0 and set(one.rejections_by_reason()) == {"lot size"}


# -- live paper: a fill refused at the last traded price -------------------------------------
GREEDY_ONCE = """
from mde.strategy import Strategy

class GreedyOnce(Strategy):
    def on_start(self, ctx):
        self.done = False

    def on_candle(self, ctx, candle):
        if not self.done:
            self.done = True
            ctx.buy(lots=10**4)   # 750,000 NIFTY futures on Rs 10 lakh: refused at its fill
"""


def test_live_paper_journals_a_refused_fill_once_and_a_resume_keeps_it_refused(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from conftest import NSE_DATA, REPO
    from kite_server import KiteServer
    from mde.clock import IST
    from mde.paper.live import run_live_session
    from mde.sources.kite import KiteSource, RateLimiter, RetryPolicy

    strat = tmp_path / "greedy_once.py"
    strat.write_text(GREEDY_ONCE)
    with KiteServer(instruments_csv=REPO / "data" / "instruments.csv") as srv:
        srv.load_csv(256265, "5minute", NSE_DATA / "NIFTY50_5m_2024.csv")
        srv.enforce_rate_limits = False
        env = {
            "KITE_API_KEY": srv.api_key,
            "KITE_ACCESS_TOKEN": srv.access_token,
            "MDE_KITE_ROOT": srv.url,
            "MDE_NOW": "2024-06-14T09:00:00+05:30",
        }
        st = load(environ=env, cache_dir=tmp_path / "cache", source="kite")

        def engine() -> MarketDataEngine:
            limiters = {k: RateLimiter(1000, window=0.001) for k in ("historical", "quote", "other")}
            retry = RetryPolicy(base_delay=0.01, delay_429=0.05, timeout=3.0, attempts=2)
            return MarketDataEngine(st, KiteSource(st, retry=retry, limiters=limiters))

        engine().download("NIFTY", "5m", "2024-06-01", "2024-06-13")
        now = [datetime(2024, 6, 14, 9, 14, 50, tzinfo=IST)]
        srv.now = now[0]

        def sleep(seconds: float) -> None:
            now[0] += timedelta(seconds=seconds)
            srv.now = now[0]

        class Crash(Exception):
            pass

        def die(line: str) -> None:
            if "reject" in line:
                raise Crash  # right after the refusal is journaled

        def run(log):  # type: ignore[no-untyped-def]
            return run_live_session(
                st,
                f"{strat}:GreedyOnce",
                ["NIFTY"],
                "5m",
                name="greedy",
                segment="futures",
                tick=10.0,
                until="09:40",
                engine=engine(),
                clock=lambda: now[0],
                sleep=sleep,
                log=log,
            )

        with pytest.raises(Crash):
            run(die)
        result = run(None)  # resumes: the refused order must not come back to fill
    with TradeState(session_path(tmp_path / "cache" / "_paper", "greedy")) as state:
        rejects = [e.payload for e in state.events("reject")]
        fills = state.events("fill")
    assert [(p["code"], p.get("via"), p["qty"]) for p in rejects] == [("buying power", "ltp", 750_000)]
    assert fills == [] and result.trades.height == 0
    assert result.summary.rejections_by_reason() == {"buying power": 1}


def test_a_lot_from_a_contract_listed_after_the_run_is_a_warning(tmp_path: Path) -> None:
    from datetime import date as _date

    from mde.margins import contract_for

    old = contract_for(tmp_path, "NSE", "NIFTY 50", "futures", _date(2024, 6, 3), label="NIFTY")
    assert old.lot_size == 75 and "a contract listed after 2024-06-03" in old.lot_warning
    near = contract_for(tmp_path, "NSE", "NIFTY 50", "futures", _date(2025, 11, 3), label="NIFTY")
    assert near.lot_size == 75 and near.lot_warning == ""
