"""Tests for the local Kite server fixture, always through the real kiteconnect client.

These pin down that the fake behaves like Kite where mde depends on it: the wire format
of candles, the range limits, error classes and codes as the client raises them, rate
limits, login, quotes and the partial running candle.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import requests
from kiteconnect import KiteConnect, exceptions as kex

try:  # tests/ as a plain directory (rootdir-relative import) or as a package
    from kite_server import IST, MAX_DAYS, SHARED_DATA, KiteServer
except ImportError:  # pragma: no cover
    from tests.kite_server import IST, MAX_DAYS, SHARED_DATA, KiteServer

NSE = SHARED_DATA / "nse"
NIFTY, BANKNIFTY, INFY = 256265, 260105, 408065


def _csv_rows(path, day: str) -> list[list[str]]:
    with open(path, newline="") as fh:
        return [r for r in csv.reader(fh) if r[0].startswith(day)]


@pytest.fixture(scope="module")
def kite_server():
    """One server per module: loading the CSVs is the slow part."""
    with KiteServer() as server:
        server.load_csv(NIFTY, "5minute", NSE / "NIFTY50_5m_2024.csv")
        server.load_csv(NIFTY, "day", NSE / "NIFTY50_1d_1990-2025.csv")
        server.load_csv(BANKNIFTY, "minute", NSE / "BANKNIFTY_1m_2024Q2.csv")
        server.load_csv(BANKNIFTY, "day", NSE / "BANKNIFTY_1d_2000-2025.csv")
        server.load_csv(INFY, "60minute", NSE / "INFY_60m_2024-12_2026-01.csv")
        yield server


@pytest.fixture
def server(kite_server):
    """Per test: clean knobs and log; rate limits off unless a test turns them on."""
    kite_server.reset()
    kite_server.enforce_rate_limits = False
    yield kite_server
    kite_server.reset()


@pytest.fixture
def kite(server) -> KiteConnect:
    return KiteConnect(server.api_key, access_token=server.access_token, root=server.url)


# ------------------------------------------------------------------ historical


def test_historical_round_trip_matches_csv(kite, server):
    start = datetime(2024, 6, 3, 9, 15, tzinfo=IST)
    got = kite.historical_data(NIFTY, start, start.replace(hour=15, minute=29), "5minute")
    want = _csv_rows(NSE / "NIFTY50_5m_2024.csv", "2024-06-03")
    assert len(got) == len(want) == 75
    for g, w in zip(got, want, strict=True):
        assert g["date"] == datetime.fromisoformat(w[0])
        assert g["date"].utcoffset() == timedelta(hours=5, minutes=30)
        assert [g["open"], g["high"], g["low"], g["close"]] == [float(x) for x in w[1:5]]
        assert g["volume"] == 0 and "oi" not in g
    # The client sent IST wall clock without an offset, plus interval/continuous/oi.
    q = server.requests_to("/instruments/historical/")[-1].query
    assert q == {
        "from": "2024-06-03 09:15:00",
        "to": "2024-06-03 15:29:00",
        "interval": "5minute",
        "continuous": "0",
        "oi": "0",
    }


def test_raw_wire_format_has_colonless_offset(server):
    r = requests.get(
        f"{server.url}/instruments/historical/{NIFTY}/day",
        params={"from": "2024-06-03", "to": "2024-06-03"},
        headers={"Authorization": f"token {server.api_key}:{server.access_token}"},
    )
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["data"]["candles"][0][0] == "2024-06-03T00:00:00+0530"
    assert r.json()["status"] == "success"


def test_from_and_to_are_inclusive(kite):
    got = kite.historical_data(NIFTY, "2024-06-03 09:15:00", "2024-06-03 09:25:00", "5minute")
    assert [c["date"].strftime("%H:%M") for c in got] == ["09:15", "09:20", "09:25"]


def test_utc_datetime_is_sent_as_wall_clock_by_the_client(kite):
    # pykiteconnect drops tzinfo: 03:45 UTC (= 09:15 IST) goes out as "03:45" -> no candles.
    utc = datetime(2024, 6, 3, 3, 45, tzinfo=UTC)
    assert kite.historical_data(NIFTY, utc, utc + timedelta(minutes=5), "5minute") == []


@pytest.mark.parametrize("interval", list(MAX_DAYS))
def test_max_range_per_interval(kite, interval):
    # INFY has only 60minute candles from 2024-12: the OK call stays small and fast.
    n = MAX_DAYS[interval]
    frm = datetime(2024, 1, 1, 0, 0, tzinfo=IST)
    to_ok = frm + timedelta(days=n - 1, hours=23, minutes=59)  # n calendar days inclusive
    kite.historical_data(INFY, frm, to_ok, interval)
    with pytest.raises(kex.InputException, match=f"^interval exceeds max limit: {n} days$") as ei:
        kite.historical_data(INFY, frm, frm + timedelta(days=n), interval)
    assert ei.value.code == 400


def test_bad_inputs_are_input_exceptions(kite):
    with pytest.raises(kex.InputException, match="^invalid token$"):
        kite.historical_data(999999999, "2024-06-03", "2024-06-04", "day")
    with pytest.raises(kex.InputException):
        kite.historical_data(NIFTY, "2024-06-03", "2024-06-04", "week")
    with pytest.raises(kex.InputException):
        kite.historical_data(NIFTY, "2024-06-03T09:15:00+05:30", "2024-06-04", "day")


def test_known_token_outside_data_is_empty_success(kite):
    assert kite.historical_data(NIFTY, "2030-01-01", "2030-01-05", "day") == []
    assert kite.historical_data(INFY, "2025-01-01", "2025-01-05", "minute") == []  # listed, no minutes


def test_oi_flag_adds_seventh_field(kite):
    got = kite.historical_data(INFY, "2025-01-02 09:15:00", "2025-01-02 15:15:00", "60minute", oi=True)
    assert len(got) == 7 and all(c["oi"] == 0 for c in got)
    assert got[-1]["date"].strftime("%H:%M") == "15:15"


# ------------------------------------------------------------------ aggregation and live clock


def _minutes(day: str, hhmm_from: str, hhmm_to: str) -> list[tuple[float, ...]]:
    rows = _csv_rows(NSE / "BANKNIFTY_1m_2024Q2.csv", day)
    return [tuple(float(x) for x in r[1:5]) for r in rows if hhmm_from <= r[0][11:16] <= hhmm_to]


def _ohlc(rows):
    return [rows[0][0], max(r[1] for r in rows), min(r[2] for r in rows), rows[-1][3]]


def _vals(c):
    return [c["open"], c["high"], c["low"], c["close"]]


def test_intraday_built_from_minutes_with_partial_bucket_cut_by_to(kite):
    got = kite.historical_data(BANKNIFTY, "2024-04-02 09:40:00", "2024-04-02 09:45:00", "5minute")
    assert [c["date"].strftime("%H:%M") for c in got] == ["09:40", "09:45"]
    assert _vals(got[0]) == _ohlc(_minutes("2024-04-02", "09:40", "09:44"))
    assert _vals(got[1]) == list(_minutes("2024-04-02", "09:45", "09:45")[0])  # only one minute

    hourly = kite.historical_data(BANKNIFTY, "2024-04-02 09:15:00", "2024-04-02 15:29:00", "60minute")
    assert [c["date"].strftime("%H:%M") for c in hourly] == [
        "09:15",
        "10:15",
        "11:15",
        "12:15",
        "13:15",
        "14:15",
        "15:15",
    ]
    assert _vals(hourly[-1]) == _ohlc(_minutes("2024-04-02", "15:15", "15:29"))


def test_live_clock_returns_running_candle_partial(kite, server):
    server.now = datetime(2024, 4, 2, 10, 3, 30, tzinfo=IST)
    got = kite.historical_data(BANKNIFTY, "2024-04-02 09:15:00", "2024-04-02 15:29:00", "5minute")
    assert got[-1]["date"] == datetime(2024, 4, 2, 10, 0, tzinfo=IST)
    assert _vals(got[-1]) == _ohlc(_minutes("2024-04-02", "10:00", "10:03"))
    minutes = kite.historical_data(BANKNIFTY, "2024-04-02 09:15:00", "2024-04-02 15:29:00", "minute")
    assert minutes[-1]["date"].strftime("%H:%M") == "10:03"

    # A stored day candle is cut too: today's is rebuilt from minutes so far.
    stored = _csv_rows(NSE / "BANKNIFTY_1d_2000-2025.csv", "2024-04-02")[0]
    days = kite.historical_data(BANKNIFTY, "2024-03-28", "2024-04-05", "day")
    assert days[-1]["date"] == datetime(2024, 4, 2, tzinfo=IST)
    assert days[-1]["close"] == _minutes("2024-04-02", "10:03", "10:03")[0][3] != float(stored[4])
    assert days[-2]["close"] == float(_csv_rows(NSE / "BANKNIFTY_1d_2000-2025.csv", "2024-04-01")[0][4])

    server.now = datetime(2024, 4, 2, 16, 0, tzinfo=IST)  # after the close: stored candle as is
    days = kite.historical_data(BANKNIFTY, "2024-03-28", "2024-04-05", "day")
    assert days[-1]["close"] == float(stored[4])


# ------------------------------------------------------------------ auth and session


def test_bad_or_expired_token_raises_token_exception(server, kite):
    bad = KiteConnect(server.api_key, access_token="nope", root=server.url)
    with pytest.raises(kex.TokenException, match="Incorrect `api_key` or `access_token`.") as ei:
        bad.profile()
    assert ei.value.code == 403
    with pytest.raises(kex.TokenException):
        KiteConnect(server.api_key, root=server.url).ltp("NSE:INFY")  # no header at all
    assert kite.profile()["user_id"]
    server.expire_tokens()
    with pytest.raises(kex.TokenException):
        kite.historical_data(NIFTY, "2024-06-03", "2024-06-03", "day")


def test_generate_session_works_once(server):
    server.add_request_token("rt-123")
    kite = KiteConnect(server.api_key, root=server.url)
    with pytest.raises(kex.TokenException):
        kite.generate_session("rt-123", "wrong-secret")  # bad checksum
    sess = kite.generate_session("rt-123", server.api_secret)
    assert sess["access_token"] == kite.access_token != server.access_token
    assert isinstance(sess["login_time"], datetime)
    assert kite.profile()["user_id"] == sess["user_id"]
    form = server.requests_to("/session/token", "POST")[-1].form
    assert form["checksum"] == hashlib.sha256((server.api_key + "rt-123" + server.api_secret).encode()).hexdigest()
    with pytest.raises(kex.TokenException) as ei:
        kite.generate_session("rt-123", server.api_secret)  # single use
    assert ei.value.code == 403


# ------------------------------------------------------------------ rate limits and faults


def test_rate_limits_give_429_network_exception(server, kite):
    now = [0.0]  # the server's rate windows on a clock that moves only when the test moves it
    server.clock = lambda: now[0]
    server.enforce_rate_limits = True
    for _ in range(3):
        kite.historical_data(NIFTY, "2024-06-03", "2024-06-03", "day")
    with pytest.raises(kex.NetworkException, match="^Too many requests$") as ei:
        kite.historical_data(NIFTY, "2024-06-03", "2024-06-03", "day")
    assert ei.value.code == 429
    kite.ltp("NSE:INFY")  # quote class is separate: 1/s
    with pytest.raises(kex.NetworkException):
        kite.ohlc("NSE:INFY")
    now[0] += 0.999  # the window slides: still inside it ...
    with pytest.raises(kex.NetworkException):
        kite.ltp("NSE:INFY")
    now[0] += 0.001  # ... and a second after the accepted request, out of it
    kite.ltp("NSE:INFY")
    assert [r.status for r in server.requests][-5:] == [429, 200, 429, 429, 200]


def test_fail_next_with_path_prefix(server, kite):
    server.fail_next(503, "NetworkException", "backend down", times=2, path_prefix="/quote")
    assert kite.profile()  # not matched
    for _ in range(2):
        with pytest.raises(kex.NetworkException, match="backend down") as ei:
            kite.ltp("NSE:INFY")
        assert ei.value.code == 503
    assert "NSE:INFY" in kite.ltp("NSE:INFY")


def test_html_error_page_is_data_exception(server, kite):
    server.html_error_next(502)
    with pytest.raises(kex.DataException, match="Unknown Content-Type"):
        kite.profile()
    assert kite.profile()


def test_dropped_connection_is_requests_connection_error(server, kite):
    server.drop_connection_next()
    with pytest.raises(requests.exceptions.ConnectionError):
        kite.historical_data(NIFTY, "2024-06-03", "2024-06-03", "day")
    assert server.requests[-1].status is None
    assert kite.historical_data(NIFTY, "2024-06-03", "2024-06-03", "day")


def test_delay_triggers_client_timeout(server):
    kite = KiteConnect(server.api_key, access_token=server.access_token, root=server.url, timeout=0.2)
    server.delay_next(0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        kite.profile()
    assert kite.profile()


# ------------------------------------------------------------------ instruments and quotes


def test_instruments_csv(server, kite):
    rows = kite.instruments()
    nifty = next(r for r in rows if r["tradingsymbol"] == "NIFTY 50")
    assert nifty["instrument_token"] == 256265 and nifty["segment"] == "INDICES"
    assert any(r["exchange"] == "NFO" and hasattr(r["expiry"], "year") for r in rows)
    nse = kite.instruments("NSE")
    assert {r["exchange"] for r in nse} == {"NSE"} and len(nse) == 8725
    assert server.requests_to("/instruments")[-1].status == 200


def test_ltp_ohlc_quote(server, kite):
    server.set_ltp("NSE:INFY", 1500.0)
    server.now = datetime(2024, 4, 2, 10, 3, 30, tzinfo=IST)
    got = kite.ltp("NSE:INFY", "NSE:NIFTY BANK", "NSE:NOSUCHTHING")
    assert got["NSE:INFY"] == {"instrument_token": INFY, "last_price": 1500.0}
    assert got["NSE:NIFTY BANK"]["last_price"] == _minutes("2024-04-02", "10:03", "10:03")[0][3]
    assert "NSE:NOSUCHTHING" not in got

    ohlc = kite.ohlc("NSE:NIFTY BANK")["NSE:NIFTY BANK"]["ohlc"]
    assert [ohlc["open"], ohlc["high"], ohlc["low"]] == _ohlc(_minutes("2024-04-02", "09:15", "10:03"))[:3]
    assert ohlc["close"] == float(_csv_rows(NSE / "BANKNIFTY_1d_2000-2025.csv", "2024-04-01")[0][4])

    q = kite.quote(["NSE:NIFTY BANK"])["NSE:NIFTY BANK"]
    assert q["timestamp"] == datetime(2024, 4, 2, 10, 3, 30) and len(q["depth"]["buy"]) == 5

    with pytest.raises(kex.InputException):
        kite.ltp([f"NSE:X{i}" for i in range(1001)])
    with pytest.raises(kex.InputException):
        kite.quote([f"NSE:X{i}" for i in range(501)])


# ------------------------------------------------------------------ routing and lifecycle


def test_unimplemented_routes_are_404_and_logged(server, kite):
    with pytest.raises(kex.GeneralException) as ei:
        kite.orders()
    assert ei.value.code == 404
    with pytest.raises(kex.GeneralException):
        kite.holdings()
    assert [r.path for r in server.requests_to("/orders")] == ["/orders"]
    assert len(server.requests_to("/portfolio")) == 1


def test_request_log_counts_and_spacing(server, kite):
    for day in ("2024-06-03", "2024-06-04"):
        kite.historical_data(NIFTY, day, day, "day")
    hist = server.requests_to("/instruments/historical/")
    assert len(hist) == 2 and hist[1].time >= hist[0].time
    assert [r.query["from"] for r in hist] == ["2024-06-03", "2024-06-04"]
    assert not server.requests_to("/orders")


def test_context_manager_and_add_candles(tmp_path):
    with KiteServer(instruments_csv=None, access_token="tok") as s:
        s.add_candles(
            42,
            "minute",
            [
                (datetime(2024, 1, 1, 9, 15, tzinfo=IST), 1, 2, 0.5, 1.5, 10, 7),
                ("2024-01-01T03:46:00+00:00", 1.5, 3, 1, 2, 5, 8),  # 09:16 IST given in UTC
            ],
        )
        kite = s.make_client()
        got = kite.historical_data(42, "2024-01-01 09:15:00", "2024-01-01 09:20:00", "3minute", oi=True)
        assert got == [
            {
                "date": datetime(2024, 1, 1, 9, 15, tzinfo=IST),
                "open": 1.0,
                "high": 3.0,
                "low": 0.5,
                "close": 2.0,
                "volume": 15,
                "oi": 8,
            }
        ]
        assert kite.instruments() == []
        url = s.url
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/user/profile", timeout=1)
