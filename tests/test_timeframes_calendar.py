"""Timeframe names and the NSE calendar: sessions, candle close times, the latest close."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mde.calendar import nse, parse_instant
from mde.clock import IST
from mde.errors import InputError
from mde.timeframes import VALID_NAMES, parse

T = lambda text: parse_instant(text)  # noqa: E731  (naive ISO = IST)


def hm(h: int, m: int) -> int:
    return h * 60 + m


# -- timeframes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "minutes"),
    [
        ("1m", "1m", 1),
        ("3m", "3m", 3),
        ("5m", "5m", 5),
        ("10m", "10m", 10),
        ("15m", "15m", 15),
        ("30m", "30m", 30),
        ("60m", "60m", 60),
        ("1d", "1d", 1440),
        ("1h", "60m", 60),
        ("1H", "60m", 60),
        (" 5M ", "5m", 5),
        ("minute", "1m", 1),
        ("5minute", "5m", 5),
        ("60minute", "60m", 60),
        ("day", "1d", 1440),
    ],
)
def test_parse_accepts_our_names_kite_names_and_1h(text: str, name: str, minutes: int) -> None:
    tf = parse(text)
    assert (tf.name, tf.minutes) == (name, minutes)
    assert tf.is_daily == (name == "1d")
    assert parse(tf) is tf


def test_parse_maps_back_to_kite_interval_names() -> None:
    assert [parse(n).kite_interval for n in ("1m", "5m", "60m", "1d")] == ["minute", "5minute", "60minute", "day"]


@pytest.mark.parametrize("bad", ["7m", "2h", "", "  ", "5 m", "1w", "0m"])
def test_parse_rejects_unknown_timeframes_listing_the_valid_ones(bad: str) -> None:
    with pytest.raises(InputError) as info:
        parse(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in VALID_NAMES:
        assert name in message
    assert "1h" in message and "5minute" in message


# -- sessions ---------------------------------------------------------------------------


def test_regular_weekday_has_one_session_0915_to_1530() -> None:
    assert nse().sessions(date(2024, 6, 14)) == ((hm(9, 15), hm(15, 30)),)
    assert nse().is_trading_day(date(2024, 6, 14))
    assert nse().anchor(date(2024, 6, 14)) == hm(9, 15)


@pytest.mark.parametrize("day", [date(2024, 6, 15), date(2024, 6, 16)])
def test_ordinary_weekend_has_no_session(day: date) -> None:
    assert nse().sessions(day) == ()
    assert not nse().is_trading_day(day)


@pytest.mark.parametrize("day", [date(2024, 1, 22), date(2024, 1, 26), date(2024, 11, 15), date(2024, 12, 25)])
def test_holidays_have_no_session(day: date) -> None:
    assert day.weekday() < 5
    assert nse().sessions(day) == ()
    assert not nse().is_trading_day(day)


def test_dr_drill_saturday_has_two_sessions() -> None:
    assert nse().sessions(date(2024, 3, 2)) == ((hm(9, 15), hm(10, 0)), (hm(11, 30), hm(12, 30)))
    assert nse().session_end(date(2024, 3, 2), hm(9, 55)) == hm(10, 0)
    assert nse().session_end(date(2024, 3, 2), hm(11, 0)) is None  # the gap between the sessions
    assert nse().session_end(date(2024, 3, 2), hm(12, 25)) == hm(12, 30)


def test_muhurat_day_is_only_the_evening_session() -> None:
    day = date(2024, 11, 1)  # a holiday for the regular session
    assert nse().sessions(day) == ((hm(18, 0), hm(19, 0)),)
    assert nse().anchor(day) == hm(18, 0)
    assert nse().session_end(day, hm(10, 0)) is None
    assert nse().day_close(day) == hm(19, 0)


def test_saturday_2024_01_20_is_a_full_session() -> None:
    assert date(2024, 1, 20).weekday() == 5
    assert nse().sessions(date(2024, 1, 20)) == ((hm(9, 15), hm(15, 30)),)


def test_candles_per_day() -> None:
    cal = nse()
    regular = date(2024, 6, 14)
    assert [cal.candles_per_day(regular, parse(t)) for t in ("1m", "5m", "15m", "60m", "1d")] == [375, 75, 25, 7, 1]
    assert cal.candles_per_day(date(2024, 11, 1), parse("5m")) == 12
    assert cal.candles_per_day(date(2024, 11, 1), parse("60m")) == 1
    assert cal.candles_per_day(date(2024, 1, 22), parse("5m")) == 0
    assert cal.candles_per_day(date(2024, 3, 2), parse("5m")) == 21


# -- close times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "tf", "closes"),
    [
        ("2024-06-14T15:15", "60m", "2024-06-14T15:30"),  # Kite's short last hour
        ("2024-06-14T14:15", "60m", "2024-06-14T15:15"),
        ("2024-06-14T09:15", "60m", "2024-06-14T10:15"),
        ("2024-06-14T15:25", "5m", "2024-06-14T15:30"),
        ("2024-06-14T15:29", "1m", "2024-06-14T15:30"),
        ("2024-06-14T15:00", "30m", "2024-06-14T15:30"),
        ("2024-06-14T00:00", "1d", "2024-06-14T15:30"),
        ("2024-11-01T00:00", "1d", "2024-11-01T19:00"),  # Muhurat day closes in the evening
        ("2024-11-01T18:00", "60m", "2024-11-01T19:00"),
        ("2024-11-01T18:55", "5m", "2024-11-01T19:00"),
        ("2024-03-02T00:00", "1d", "2024-03-02T12:30"),  # DR drill: the last session's end
        ("2024-03-02T09:15", "60m", "2024-03-02T10:00"),  # clipped to the first DR session
        ("2024-01-20T15:15", "60m", "2024-01-20T15:30"),
    ],
)
def test_close_time(ts: str, tf: str, closes: str) -> None:
    got = nse().close_time(T(ts), parse(tf))
    assert got == T(closes)
    assert got.tzinfo is not None and got.utcoffset() == T(closes).utcoffset()


def test_close_time_of_a_naive_ts_is_read_as_ist() -> None:
    assert nse().close_time(datetime(2024, 6, 14, 15, 15), parse("60m")) == datetime(2024, 6, 14, 15, 30, tzinfo=IST)


# -- latest close -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "tf", "expected"),
    [
        # mid-candle: the candle in progress does not count
        ("2024-06-14T11:07", "5m", "2024-06-14T11:05"),
        ("2024-06-14T11:07", "1m", "2024-06-14T11:07"),
        ("2024-06-14T11:07", "15m", "2024-06-14T11:00"),
        ("2024-06-14T11:07", "60m", "2024-06-14T10:15"),
        ("2024-06-14T11:07", "1d", "2024-06-13T15:30"),
        # exactly at a close: that candle is complete
        ("2024-06-14T11:05", "5m", "2024-06-14T11:05"),
        ("2024-06-14T15:30", "60m", "2024-06-14T15:30"),
        ("2024-06-14T15:30", "1d", "2024-06-14T15:30"),
        ("2024-06-14T15:29:59", "60m", "2024-06-14T15:15"),
        # before the open: yesterday's close
        ("2024-06-14T09:00", "5m", "2024-06-13T15:30"),
        ("2024-06-14T09:15", "5m", "2024-06-13T15:30"),
        ("2024-06-14T09:00", "1d", "2024-06-13T15:30"),
        # weekend: Friday's close
        ("2024-06-15T12:00", "5m", "2024-06-14T15:30"),
        ("2024-06-16T23:59", "1d", "2024-06-14T15:30"),
        # holiday Monday 2024-01-22: back to the special Saturday 2024-01-20
        ("2024-01-22T12:00", "5m", "2024-01-20T15:30"),
        ("2024-01-22T12:00", "1d", "2024-01-20T15:30"),
        # the holiday week of 2024-03-25 (Holi Monday) and Good Friday 2024-03-29
        ("2024-03-25T10:00", "15m", "2024-03-22T15:30"),
        ("2024-03-30T10:00", "60m", "2024-03-28T15:30"),
        # Muhurat: the regular session of Nov 1 is a holiday; the evening one counts
        ("2024-11-01T12:00", "5m", "2024-10-31T15:30"),
        ("2024-11-01T18:31", "5m", "2024-11-01T18:30"),
        ("2024-11-01T18:59", "60m", "2024-10-31T15:30"),
        ("2024-11-01T19:00", "60m", "2024-11-01T19:00"),
        ("2024-11-02T10:00", "1d", "2024-11-01T19:00"),
        # DR drill: the gap between the two sessions
        ("2024-03-02T11:00", "5m", "2024-03-02T10:00"),
        ("2024-03-02T11:00", "1d", "2024-03-01T15:30"),
    ],
)
def test_latest_close(now: str, tf: str, expected: str) -> None:
    assert nse().latest_close(T(now), parse(tf)) == T(expected)


def test_latest_close_accepts_other_time_zones() -> None:

    now_utc = datetime(2024, 6, 14, 5, 37, tzinfo=UTC)  # 11:07 IST
    assert nse().latest_close(now_utc, parse("5m")) == T("2024-06-14T11:05")


@pytest.mark.parametrize("day", [date(2024, 6, 14), date(2024, 3, 2), date(2024, 11, 1), date(2024, 1, 20)])
@pytest.mark.parametrize("tf_name", ["5m", "15m", "30m", "60m", "1d"])
def test_latest_close_agrees_with_the_candles_resample_makes(day: date, tf_name: str) -> None:
    """At each resampled candle's close, latest_close is that close; just before, it is earlier;
    and candles_per_day counts exactly those candles."""
    from datetime import timedelta

    from factories import make_candles
    from mde.resample import resample, with_close

    cal, tf = nse(), parse(tf_name)
    candles = with_close(resample(make_candles(day), tf, cal), tf, cal)
    assert candles.height == cal.candles_per_day(day, tf)
    for ts, close in candles.select("ts", "closes_at").iter_rows():
        assert cal.close_time(ts, tf) == close
        assert cal.latest_close(close, tf) == close, (ts, close)
        assert cal.latest_close(close - timedelta(seconds=1), tf) < close


def test_parse_instant_naive_is_ist_and_bad_text_is_an_input_error() -> None:
    assert parse_instant("2024-06-14T10:30") == datetime(2024, 6, 14, 10, 30, tzinfo=IST)
    assert parse_instant("2024-06-14T05:00:00+00:00") == datetime(2024, 6, 14, 10, 30, tzinfo=IST)
    with pytest.raises(InputError, match="ISO 8601"):
        parse_instant("14/06/2024")
