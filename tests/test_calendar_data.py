"""Check src/mde/data/nse_calendar.toml against itself and against real NSE candles.

The real candles are the repo's own copies in ``data/nse`` (sources in data/README.md).
Only the stdlib is used so this stays fast.
"""

from __future__ import annotations

import csv
import datetime as dt
import tomllib
from functools import cache
from pathlib import Path

import pytest

CALENDAR = Path(__file__).resolve().parents[1] / "src" / "mde" / "data" / "nse_calendar.toml"
DATA = Path(__file__).resolve().parents[1] / "data" / "nse"

NIFTY_1D = "NIFTY50_1d_1990-2025.csv"  # Kite daily, ends 2025-12-19
RELIANCE_1D = "RELIANCE_1d_2020-2026.csv"  # Kite daily, ends 2026-01-09
NIFTY_5M = "NIFTY50_5m_2024.csv"  # Kite 5m, calendar year 2024
RELIANCE_60M = "RELIANCE_60m_2024-12_2026-01.csv"  # Kite 60m, 2024-12-05..2026-01-09


# --------------------------------------------------------------------------- helpers


@cache
def calendar() -> dict:
    with CALENDAR.open("rb") as fh:
        return tomllib.load(fh)


def holidays() -> set[dt.date]:
    return {dt.date.fromisoformat(d) for dates in calendar()["holidays"].values() for d in dates}


def specials() -> dict[dt.date, list[tuple[dt.time, dt.time]]]:
    out = {}
    for entry in calendar()["special"]:
        out[dt.date.fromisoformat(entry["date"])] = [
            (dt.time.fromisoformat(a), dt.time.fromisoformat(b)) for a, b in entry["sessions"]
        ]
    return out


def is_trading_day(day: dt.date) -> bool:
    if day in specials():
        return True
    return day.weekday() < 5 and day not in holidays()


def days(start: dt.date, end: dt.date):
    d = start
    while d <= end:
        yield d
        d += dt.timedelta(days=1)


def need_data() -> None:
    assert DATA.is_dir(), f"real candle data not found at {DATA}"


@cache
def bars_by_day(name: str) -> dict[dt.date, list[dt.time]]:
    """Bar start times per date, from a CSV with an ISO ``ts`` column (+05:30)."""
    out: dict[dt.date, list[dt.time]] = {}
    with (DATA / name).open(newline="") as fh:
        for row in csv.DictReader(fh):
            ts = row["ts"]
            out.setdefault(dt.date.fromisoformat(ts[:10]), []).append(dt.time.fromisoformat(ts[11:19]))
    return out


def minutes(t: dt.time) -> int:
    return t.hour * 60 + t.minute


# --------------------------------------------------------------------------- file structure


def test_regular_session():
    reg = calendar()["regular"]
    assert (reg["open"], reg["close"]) == ("09:15", "15:30")


def test_holiday_lists_are_weekdays_sorted_and_in_their_year():
    hol = calendar()["holidays"]
    assert set(hol) >= {"2023", "2024", "2025", "2026"}
    for year, dates in hol.items():
        parsed = [dt.date.fromisoformat(d) for d in dates]
        assert parsed == sorted(set(parsed)), f"{year}: not sorted or has duplicates"
        for d in parsed:
            assert str(d.year) == year, f"{d} listed under {year}"
            assert d.weekday() < 5, f"{d} is a weekend day; only weekday holidays are listed"


def test_special_entries_are_well_formed():
    entries = calendar()["special"]
    dates = [dt.date.fromisoformat(e["date"]) for e in entries]
    assert dates == sorted(set(dates)), "special dates must be sorted and unique"
    for e in entries:
        assert e["name"]
        assert e["sessions"], f"{e['date']}: no sessions"
        prev_end = -1
        for a, b in e["sessions"]:
            start, end = minutes(dt.time.fromisoformat(a)), minutes(dt.time.fromisoformat(b))
            assert prev_end <= start < end, f"{e['date']}: bad or overlapping session {a}-{b}"
            prev_end = end


def test_muhurat_weekdays_are_holidays_too():
    # Weekday Muhurat dates are holidays for the regular session and special for the evening.
    for day in (dt.date(2024, 11, 1), dt.date(2025, 10, 21)):
        assert day in holidays()
        assert day in specials()


# --------------------------------------------------------------------------- against real data


def check_daily(name: str, start: dt.date, end: dt.date) -> None:
    present = bars_by_day(name)
    assert max(present) >= end, f"{name} ends before {end}"
    wrong_missing, wrong_present = [], []
    for day in days(start, end):
        if day.weekday() >= 5:
            continue
        if is_trading_day(day) and day not in present:
            wrong_missing.append(day.isoformat())
        elif not is_trading_day(day) and day in present:
            wrong_present.append(day.isoformat())
    assert not wrong_missing, f"{name}: weekdays missing from data but not holidays: {wrong_missing}"
    assert not wrong_present, f"{name}: holidays that have a daily candle: {wrong_present}"


def test_weekday_holidays_match_nifty_daily_2023_2025():
    need_data()
    check_daily(NIFTY_1D, dt.date(2023, 1, 1), dt.date(2025, 12, 19))


def test_weekday_holidays_match_reliance_daily_2023_to_2026_01_09():
    # Covers 2026-01-01..2026-01-09 and the end of 2025 (e.g. 2025-12-25) that NIFTY50_1d lacks.
    need_data()
    check_daily(RELIANCE_1D, dt.date(2023, 1, 1), dt.date(2026, 1, 9))


@pytest.mark.parametrize(("name", "end"), [(NIFTY_1D, dt.date(2025, 12, 19)), (RELIANCE_1D, dt.date(2026, 1, 9))])
def test_weekend_candles_are_special_and_specials_have_candles(name, end):
    need_data()
    present = bars_by_day(name)
    start = dt.date(2023, 1, 1)
    weekend = sorted(d for d in present if start <= d <= end and d.weekday() >= 5)
    assert weekend, "expected some weekend special sessions in the data"
    assert [d for d in weekend if d not in specials()] == []
    assert [d for d in specials() if start <= d <= end and d not in present] == []


def check_intraday(name: str, bar_minutes: int) -> list[dt.date]:
    bars = bars_by_day(name)
    first, last = min(bars), max(bars)
    covered = [d for d in sorted(specials()) if first <= d <= last]
    for day in covered:
        sessions = [(minutes(a), minutes(b)) for a, b in specials()[day]]
        starts = [minutes(t) for t in bars.get(day, [])]
        assert starts, f"{name}: no bars on special date {day}"
        for s in starts:
            # The bar must start inside a session; its end may be clipped by the session end (Kite's last
            # 60m bar of a 09:15-15:30 session is 15:15-15:30).
            assert any(a <= s < b for a, b in sessions), (
                f"{name}: {day} bar at {s // 60:02d}:{s % 60:02d} outside sessions"
            )
            if bar_minutes < 60:
                assert any(a <= s and s + bar_minutes <= b for a, b in sessions)
        for a, b in sessions:
            inside = [s for s in starts if a <= s < b]
            assert inside, f"{name}: {day} session {a}-{b} has no bars"
            assert inside[0] == a, f"{name}: {day} first bar of session does not equal its start"
            if bar_minutes < 60:
                assert inside[-1] + bar_minutes == b, f"{name}: {day} last bar does not end at session end"
    return covered


def test_special_sessions_match_nifty_5m_2024():
    need_data()
    covered = check_intraday(NIFTY_5M, 5)
    assert {d.isoformat() for d in covered} == {"2024-01-20", "2024-03-02", "2024-05-18", "2024-11-01"}


def test_special_sessions_match_reliance_60m():
    need_data()
    covered = check_intraday(RELIANCE_60M, 60)
    assert {d.isoformat() for d in covered} == {"2025-02-01", "2025-10-21"}
