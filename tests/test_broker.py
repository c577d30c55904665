"""The fill model: next-open fills, stops and limits through or gapping past, pessimistic brackets."""

from __future__ import annotations

from datetime import date

import pytest

from mde.broker import SimBroker
from mde.costs import CostModel, load_table
from mde.errors import InputError

MIN = 60_000_000
T0 = 1_717_386_300_000_000  # 2024-06-03 09:15 IST in epoch microseconds


def broker(slippage: int = 0, costs: CostModel | None = None, cash: float = 100_000.0) -> SimBroker:
    model = costs or CostModel(None, None)
    return SimBroker(cash, lambda s: model, lambda s: 0.05, slippage)


def candle(b: SimBroker, k: int, o: float, h: float, low: float) -> None:
    """Candle k (5 minutes each from T0) trades at o, h, low."""
    b.on_candle("X", T0 + k * 5 * MIN, o, h, low)


def decide_at_close_of(k: int) -> int:
    return T0 + (k + 1) * 5 * MIN


def test_market_order_fills_at_the_next_candles_open_not_the_signal_candle() -> None:
    b = broker()
    b.place("s", "X", 1, 2, decide_at_close_of(0))
    candle(b, 0, 90.0, 95.0, 85.0)  # the signal candle itself: must not fill
    assert b.fills == []
    candle(b, 1, 101.0, 104.0, 99.0)
    assert [(f.price, f.qty, f.ts_us) for f in b.fills] == [(101.0, 2, T0 + 5 * MIN)]
    assert b.cash == 100_000.0 - 202.0


def test_slippage_moves_market_and_stop_fills_against_the_order() -> None:
    b = broker(slippage=2)
    b.place("s", "X", 1, 1, decide_at_close_of(0))
    b.place("s", "X", -1, 1, decide_at_close_of(0), stop=95.0)
    candle(b, 1, 100.0, 101.0, 94.0)
    assert [f.price for f in b.fills] == [100.10, pytest.approx(94.90)]


def test_limit_buy_fills_at_its_price_when_traded_through_and_at_a_better_open_on_a_gap() -> None:
    b = broker(slippage=3)  # limits get no slippage
    b.place("s", "X", 1, 1, decide_at_close_of(0), limit=98.0)
    candle(b, 1, 100.0, 101.0, 98.5)  # does not reach 98
    assert b.fills == []
    candle(b, 2, 99.0, 99.5, 97.0)
    assert b.fills[-1].price == 98.0
    b.place("s", "X", 1, 1, decide_at_close_of(2), limit=96.0)
    candle(b, 3, 95.0, 97.0, 94.0)  # opens below the limit: filled at the open
    assert b.fills[-1].price == 95.0


def test_stop_sell_fills_at_the_stop_or_at_the_open_when_it_gaps_down() -> None:
    b = broker()
    b.place("s", "X", -1, 1, decide_at_close_of(0), stop=95.0)
    candle(b, 1, 97.0, 98.0, 94.0)
    assert b.fills[-1].price == 95.0
    b.place("s", "X", -1, 1, decide_at_close_of(1), stop=90.0)
    candle(b, 2, 88.0, 89.0, 85.0)
    assert b.fills[-1].price == 88.0


def test_bracket_takes_the_stop_loss_when_both_legs_are_touched_in_one_candle() -> None:
    b = broker()
    b.place("s", "X", 1, 1, decide_at_close_of(0), stop_loss=95.0, target=110.0)
    candle(b, 1, 100.0, 101.0, 99.0)  # entry at the open; neither leg touched
    candle(b, 2, 100.0, 111.0, 94.0)  # both touched
    assert [(f.reason, f.price) for f in b.fills] == [("signal", 100.0), ("stop", 95.0)]
    assert b.pending["X"] == []  # the target was cancelled with it
    assert b.trades[0].gross == -5.0


def test_bracket_target_fills_when_only_the_target_is_reached() -> None:
    b = broker()
    b.place("s", "X", -1, 3, decide_at_close_of(0), stop_loss=105.0, target=90.0)  # a short
    candle(b, 1, 100.0, 101.0, 99.0)
    candle(b, 2, 95.0, 96.0, 89.0)
    assert [(f.reason, f.price) for f in b.fills] == [("signal", 100.0), ("target", 90.0)]
    assert b.trades[0].gross == 30.0 and b.trades[0].side == -1


def test_in_the_entry_candle_a_target_counts_only_after_an_entry_at_the_open() -> None:
    b = broker()
    # Entry by limit inside the candle: the high may have come before the fill, so no target.
    b.place("s", "X", 1, 1, decide_at_close_of(0), limit=99.0, target=103.0)
    candle(b, 1, 100.0, 104.0, 98.0)
    assert [f.reason for f in b.fills] == ["signal"]
    candle(b, 2, 101.0, 103.5, 100.0)
    assert [f.reason for f in b.fills] == ["signal", "target"]
    # Entry at the open: the rest of the candle came after it, so the target counts at once.
    b.place("s", "X", 1, 1, decide_at_close_of(2), target=106.0)
    candle(b, 3, 104.0, 107.0, 103.0)
    assert [f.reason for f in b.fills][-2:] == ["signal", "target"]


def test_stop_loss_counts_in_the_entry_candle() -> None:
    b = broker()
    b.place("s", "X", 1, 1, decide_at_close_of(0), limit=99.0, stop_loss=97.0)
    candle(b, 1, 100.0, 100.5, 96.0)
    assert [(f.reason, f.price) for f in b.fills] == [("signal", 99.0), ("stop", 97.0)]


def test_closing_the_position_cancels_its_bracket() -> None:
    b = broker()
    b.place("s", "X", 1, 1, decide_at_close_of(0), stop_loss=90.0, target=120.0)
    candle(b, 1, 100.0, 101.0, 99.0)
    b.flatten("s", "X", 100.5, decide_at_close_of(1), "signal")
    assert b.pending["X"] == [] and b.positions[("s", "X")].qty == 0


def test_fifo_lots_make_one_trade_per_matched_quantity_and_reversals_open_the_rest() -> None:
    b = broker()
    b.place("s", "X", 1, 2, decide_at_close_of(0))
    candle(b, 1, 100.0, 100.0, 100.0)
    b.place("s", "X", 1, 1, decide_at_close_of(1))
    candle(b, 2, 110.0, 110.0, 110.0)
    b.place("s", "X", -1, 5, decide_at_close_of(2))  # closes 3 long, opens 2 short
    candle(b, 3, 120.0, 120.0, 120.0)
    assert [(t.qty, t.entry_price, t.exit_price, t.side) for t in b.trades] == [
        (2, 100.0, 120.0, 1),
        (1, 110.0, 120.0, 1),
    ]
    assert b.positions[("s", "X")].qty == -2
    assert b.cash == 100_000.0 - 200.0 - 110.0 + 600.0


def test_charges_are_booked_when_a_trade_closes() -> None:
    b = broker(costs=CostModel(load_table(), "futures"), cash=1_000_000.0)  # a lot's margin (~2.7 lakh) fits
    b.place("s", "X", 1, 75, decide_at_close_of(0))
    candle(b, 1, 24000.0, 24000.0, 24000.0)
    assert b.charges_paid == 0
    b.place("s", "X", -1, 75, decide_at_close_of(1))
    candle(b, 2, 24100.0, 24100.0, 24100.0)
    expected = CostModel(load_table(), "futures").round_trip(
        "long", 75, 24000.0, date(2024, 6, 3), 24100.0, date(2024, 6, 3)
    )
    assert b.trades[0].charges == expected.total > 0
    assert b.cash == pytest.approx(1_000_000.0 + 7500.0 - expected.total)


def test_bad_orders_are_refused_with_a_clear_message() -> None:
    b = broker()
    with pytest.raises(InputError, match="positive whole number"):
        b.place("s", "X", 1, 0, T0)
    with pytest.raises(InputError, match="not both"):
        b.place("s", "X", 1, 1, T0, limit=1.0, stop=2.0)
