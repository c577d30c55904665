"""Charges of round trips against hand-computed figures from the dated table (../shared/costs.md)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mde.costs import CostModel, cost_model, load_table, parse_table, segment_for
from mde.errors import ConfigError, InputError

DAY = date(2024, 11, 4)


def hand(legs: list[tuple[str, float, float]]) -> float:
    return round(sum(sum(parts) for _, *parts in legs), 2)  # type: ignore[misc]


def test_equity_intraday_round_trip_matches_hand_computation() -> None:
    # Buy 100 INFY at 1500 and sell at 1510 in the same session (MIS), rates of 2024-10-01.
    # buy : brokerage min(45, 20) = 20; exchange 150000 x 0.00297% = 4.455; SEBI 0.15; stamp 0.003% = 4.5
    #       GST 18% of (20 + 4.455 + 0.15) = 4.4289
    # sell: brokerage 20; STT 0.025% = 37.75; exchange 4.4847; SEBI 0.151; GST 18% of 24.6357 = 4.43443
    expected = 20 + 4.455 + 0.15 + 4.5 + 4.4289 + 20 + 37.75 + 4.4847 + 0.151 + 4.43443
    charges = CostModel(load_table(), "equity").round_trip("long", 100, 1500.0, DAY, 1510.0, DAY)
    assert charges.total == pytest.approx(expected, abs=0.05)
    assert charges.stt == pytest.approx(37.75, abs=0.01)
    assert charges.brokerage == 40


def test_equity_position_held_overnight_is_charged_as_delivery() -> None:
    # Delivery: no brokerage, STT 0.1% on both sides, stamp 0.015% on the buy.
    charges = CostModel(load_table(), "equity").round_trip("long", 100, 1500.0, DAY, 1510.0, date(2024, 11, 5))
    assert charges.brokerage == 0
    assert charges.stt == pytest.approx(150.0 + 151.0, abs=0.01)
    assert charges.stamp == pytest.approx(22.5, abs=0.01)


def test_futures_round_trip_matches_hand_computation() -> None:
    # 75 NIFTY futures bought at 24000, sold at 24100: turnover 18,00,000 and 18,07,500.
    # brokerage 20 + 20 (0.03% capped); STT 0.02% sell = 361.5; exchange 0.00173% = 31.14 + 31.26975;
    # SEBI 1.8 + 1.8075; stamp 0.002% buy = 36; GST 18% of (20+31.14+1.8) and of (20+31.26975+1.8075)
    expected = (
        40 + 361.5 + 31.14 + 31.26975 + 1.8 + 1.8075 + 36 + 0.18 * (20 + 31.14 + 1.8) + 0.18 * (20 + 31.26975 + 1.8075)
    )
    charges = CostModel(load_table(), "futures").round_trip("long", 75, 24000.0, DAY, 24100.0, DAY)
    assert charges.total == pytest.approx(expected, abs=0.05)
    assert expected == pytest.approx(522.60, abs=0.01)


def test_options_round_trip_matches_hand_computation() -> None:
    # 75 options bought at 100, sold at 120: flat Rs 20 per order, STT 0.1% of the sell premium,
    # exchange 0.03503%, stamp 0.003% on the buy.
    expected = (
        40
        + 9.0
        + 2.62725
        + 3.1527
        + 0.0075
        + 0.009
        + 0.225
        + 0.18 * (20 + 2.62725 + 0.0075)
        + 0.18 * (20 + 3.1527 + 0.009)
    )
    charges = CostModel(load_table(), "options").round_trip("long", 75, 100.0, DAY, 120.0, DAY)
    assert charges.total == pytest.approx(expected, abs=0.05)
    assert charges.stt == pytest.approx(9.0, abs=0.01)


def test_short_trade_pays_sell_side_charges_on_its_entry() -> None:
    table = load_table()
    short = CostModel(table, "futures").round_trip("short", 75, 24100.0, DAY, 24000.0, DAY)
    long = CostModel(table, "futures").round_trip("long", 75, 24000.0, DAY, 24100.0, DAY)
    assert short.stt == long.stt  # STT on the sell leg either way
    assert short.total == pytest.approx(long.total, abs=0.02)


def test_rates_follow_the_date_of_each_leg() -> None:
    # Finance Bill 2026: futures STT 0.05% on the sell side from 2026-04-01.
    model = CostModel(load_table(), "futures")
    before = model.round_trip("long", 75, 24000.0, date(2026, 3, 31), 24000.0, date(2026, 3, 31))
    after = model.round_trip("long", 75, 24000.0, date(2026, 4, 1), 24000.0, date(2026, 4, 1))
    assert before.stt == pytest.approx(360.0, abs=0.01)
    assert after.stt == pytest.approx(900.0, abs=0.01)
    older = model.round_trip("long", 75, 24000.0, date(2024, 6, 3), 24000.0, date(2024, 6, 3))
    assert older.stt == pytest.approx(225.0, abs=0.01)  # 0.0125% before 2024-10-01


def test_no_costs_model_charges_nothing() -> None:
    assert cost_model("none", None, None, "NIFTY").round_trip("long", 1, 1.0, DAY, 2.0, DAY).total == 0


def test_index_needs_a_segment_to_be_charged() -> None:
    assert segment_for("NSE", None, "NIFTY 50") is None
    assert segment_for("NFO", None, "NIFTY24DECFUT") == "futures"
    assert segment_for("NFO", None, "NIFTY24D1924000CE") == "options"
    assert segment_for("NSE", None, "INFY") == "equity"
    with pytest.raises(InputError, match="--segment futures"):
        cost_model("zerodha", None, None, "NIFTY")
    assert cost_model("zerodha", "futures", None, "NIFTY").segment == "futures"
    with pytest.raises(InputError, match="unknown segment"):
        cost_model("zerodha", "crypto", None, "NIFTY")


def test_user_table_is_validated_with_file_and_key_named(tmp_path: Path) -> None:
    bundled = (Path(__file__).resolve().parents[1] / "src" / "mde" / "data" / "costs.toml").read_text()
    bad = tmp_path / "costs.toml"
    bad.write_text(bundled.replace("stamp_buy_pct = 0.002", "stamp_buy_pcnt = 0.002", 1))
    with pytest.raises(ConfigError, match="stamp_buy_pcnt"):
        load_table(bad)
    with pytest.raises(ConfigError, match="no \\[\\[rates\\]\\]"):
        parse_table(bundled[: bundled.index("\n[[rates]]")], "x.toml")


def test_user_table_changes_the_charges(tmp_path: Path) -> None:
    bundled = (Path(__file__).resolve().parents[1] / "src" / "mde" / "data" / "costs.toml").read_text()
    mine = tmp_path / "costs.toml"
    mine.write_text(bundled.replace("brokerage_flat = 20.0", "brokerage_flat = 10.0"))
    charges = CostModel(load_table(mine), "options").round_trip("long", 75, 100.0, DAY, 120.0, DAY)
    assert charges.brokerage == 20.0
