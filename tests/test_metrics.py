"""Metrics against hand-computed values, annualised by NSE trading time."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import polars as pl
import pytest

from mde.calendar import nse
from mde.clock import IST
from mde.metrics import Basis, basis_for, compute, equity_frame
from mde.timeframes import parse

US = 1_000_000


def trades(pnls: list[float], hold_minutes: list[int]) -> pl.DataFrame:
    t0 = datetime(2024, 6, 3, 9, 20, tzinfo=IST)
    return pl.DataFrame(
        {
            "entry_ts": [t0] * len(pnls),
            "exit_ts": [t0 + timedelta(minutes=m) for m in hold_minutes],
            "gross_pnl": [p + 1 for p in pnls],
            "charges": [1.0] * len(pnls),
            "net_pnl": pnls,
        }
    )


def test_metrics_match_a_hand_computed_small_series() -> None:
    values = [100.0, 110.0, 99.0, 120.0]
    eq = equity_frame([k * 300 * US for k in range(1, 5)], values, 100.0)
    basis = Basis(250, 75, (2024,))
    m = compute(eq, trades([10.0, -4.0, 15.0], [5, 10, 15]), 100.0, basis, exposure=0.5, buy_and_hold_pct=3.0)
    rets = [0.0, 0.1, 99 / 110 - 1, 120 / 99 - 1]
    mean = sum(rets) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / 3)
    downside = math.sqrt(sum(min(r, 0) ** 2 for r in rets) / 4)
    assert m["net_pnl"] == 20.0 and m["return_pct"] == 20.0
    assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(250 * 75), abs=0.01)
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(250 * 75), abs=0.01)
    assert m["max_drawdown"] == -11.0
    assert m["max_drawdown_pct"] == pytest.approx(-10.0)
    assert m["max_drawdown_bars"] == 1  # one candle under water, recovered at the next
    assert m["trades"] == 3
    assert m["win_rate_pct"] == pytest.approx(66.67)
    assert m["profit_factor"] == pytest.approx(25 / 4)
    assert m["expectancy"] == pytest.approx(7.0)
    assert m["gross_pnl"] == 24.0 and m["charges"] == 3.0
    assert m["avg_holding"] == "0:10:00"
    assert m["exposure_pct"] == 50.0 and m["buy_and_hold_pct"] == 3.0
    assert m["cagr_pct"] is None  # 4 candles compounded to a year overflow: no figure rather than nonsense
    # The same four candles as a whole year of trading time (1 session x 4 candles): CAGR = return.
    m = compute(eq, trades([], []), 100.0, Basis(1, 4, (2024,)), 0.5, None)
    assert m["cagr_pct"] == pytest.approx(20.0) and m["years"] == 1.0
    m = compute(eq, trades([], []), 100.0, Basis(1, 2, (2024,)), 0.5, None)  # two years
    assert m["cagr_pct"] == pytest.approx((1.2**0.5 - 1) * 100, abs=0.01)


def test_drawdown_from_the_start_counts_against_the_starting_cash_and_may_not_recover() -> None:
    eq = equity_frame([k * US for k in range(1, 6)], [95.0, 97.0, 90.0, 92.0, 99.0], 100.0)
    m = compute(eq, trades([], []), 100.0, Basis(250, 375, (2024,)), 1.0, None)
    assert m["max_drawdown"] == -10.0
    assert m["max_drawdown_bars"] == 5
    assert m["max_drawdown_to"] == "not recovered"
    assert m["trades"] == 0 and m["win_rate_pct"] is None and m["profit_factor"] is None


def test_flat_equity_has_no_sharpe_instead_of_a_division_by_zero() -> None:
    eq = equity_frame([1, 2, 3], [100.0, 100.0, 100.0], 100.0)
    m = compute(eq, trades([], []), 100.0, Basis(250, 75, (2024,)), 0.0, 0.0)
    assert m["sharpe"] is None and m["sortino"] is None and m["max_drawdown"] == 0.0


def test_simultaneous_closes_of_several_symbols_are_one_equity_point() -> None:
    eq = equity_frame([1, 1, 2, 2], [100.0, 101.0, 102.0, 103.0], 100.0)
    assert eq["equity"].to_list() == [101.0, 103.0]


def test_annualisation_basis_comes_from_the_nse_calendar_not_365_or_252() -> None:
    cal = nse()
    sessions_2024 = sum(cal.is_trading_day(date(2024, 1, 1) + timedelta(days=k)) for k in range(366))
    b5 = basis_for(cal, parse("5m"), date(2024, 1, 1), date(2024, 12, 31))
    assert b5.sessions_per_year == sessions_2024 and 240 <= sessions_2024 <= 252
    assert b5.bars_per_session == 75 and b5.bars_per_year == sessions_2024 * 75
    assert basis_for(cal, parse("1m"), date(2024, 1, 1), date(2024, 3, 1)).bars_per_session == 375
    assert basis_for(cal, parse("60m"), date(2024, 1, 1), date(2024, 3, 1)).bars_per_session == 7
    assert basis_for(cal, parse("1d"), date(2024, 1, 1), date(2024, 3, 1)).bars_per_session == 1
    assert "candles/year" in b5.describe(parse("5m"))
