"""Candles from ticks: `mde.ticks.CandleBuilder`, fed by the real KiteTicker (through the local
ticker server) with tick paths made from the real candles in data/nse (tests/ticks.py).

The built candles must equal the source candles exactly, and `mde.resample` of them for
every coarser timeframe; faults (gaps, late, duplicate, out-of-order, untimed ticks, a
heartbeat-only minute) must never give a wrong candle: a bucket is either right or tainted.
"""

from __future__ import annotations

import functools
import random
from datetime import date, datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from polars.testing import assert_frame_equal

from conftest import NSE_DATA
from kite_ticker_server import KiteTickerServer, LiveTicker, ScriptTick, expected_tick
from mde.calendar import nse
from mde.clock import IST
from mde.importer import read_candles
from mde.resample import resample
from mde.ticks import CandleBuilder, Emitted, Tainted
from mde.timeframes import parse
from ticks import by_minute, candle_path, ticks_from_candles

NIFTY, BANKNIFTY, RELIANCE, INFY = 256265, 260105, 738561, 408065
CAL = nse()


def at(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=IST)


def epoch(dt: datetime) -> int:
    return int(dt.timestamp())


@functools.cache
def _read(name: str, tf: str) -> pl.DataFrame:
    return read_candles(NSE_DATA / name, parse(tf)).candles


def candles(name: str, tf: str, day: date | None = None, days: int = 1) -> pl.DataFrame:
    df = _read(name, tf)
    if day is None:
        return df
    dates = sorted({d for d in df.get_column("ts").dt.date().to_list() if d >= day})[:days]
    return df.filter(pl.col("ts").dt.date().is_in(dates))


NIFTY_DAY = date(2024, 6, 3)
RELIANCE_DAY = date(2024, 12, 5)


@pytest.fixture(scope="module")
def nifty_day() -> pl.DataFrame:
    return candles("NIFTY50_1m_2024Q2.csv", "1m", NIFTY_DAY)


@pytest.fixture(scope="module")
def reliance_60m() -> pl.DataFrame:
    return candles("RELIANCE_60m_2024-12_2026-01.csv", "60m", RELIANCE_DAY, days=2)


def collect(outs: list[Emitted]) -> tuple[dict[tuple[int, str], pl.DataFrame], list[Tainted]]:
    frames: dict[tuple[int, str], list[pl.DataFrame]] = {}
    tainted: list[Tainted] = []
    for out in outs:
        for key, df in out.candles.items():
            frames.setdefault(key, []).append(df)
        tainted += out.tainted
    return {k: pl.concat(v) for k, v in frames.items()}, tainted


def spans(tainted: list[Tainted]) -> set[tuple[str, str, str]]:
    """(timeframe, start, end) of the tainted ranges, adjacent ones of separate polls merged."""
    merged: dict[str, list[list[datetime]]] = {}
    for t in sorted(tainted, key=lambda t: (t.timeframe.minutes, t.start)):
        runs = merged.setdefault(t.timeframe.name, [])
        if runs and t.start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], t.end)
        else:
            runs.append([t.start, t.end])
    return {(name, a.strftime("%H:%M"), b.strftime("%H:%M")) for name, runs in merged.items() for a, b in runs}


def expect(source: pl.DataFrame, tf: str, base: str = "1m") -> pl.DataFrame:
    return source if tf == base else resample(source, parse(tf), CAL)


# -- the tick paths -------------------------------------------------------------------------


@given(
    lo=st.integers(1, 10_000),
    spread=st.integers(0, 500),
    fo=st.floats(0, 1),
    fc=st.floats(0, 1),
    extra=st.integers(0, 10),
    seed=st.integers(0, 2**32),
)
def test_a_path_starts_at_the_open_visits_high_and_low_and_ends_at_the_close(
    lo: int, spread: int, fo: float, fc: float, extra: int, seed: int
) -> None:
    hi = lo + spread
    o, c = lo + round(spread * fo), lo + round(spread * fc)
    path = candle_path(o, hi, lo, c, random.Random(seed), extra)
    assert path[0] == o and path[-1] == c and max(path) == hi and min(path) == lo and len(path) == 4 + extra


@pytest.mark.parametrize(
    "source,token,tf", [("NIFTY50_1m_2024Q2.csv", NIFTY, "1m"), ("RELIANCE_60m_2024-12_2026-01.csv", RELIANCE, "60m")]
)
def test_ticks_from_real_candles_reproduce_each_candle(source: str, token: int, tf: str) -> None:
    df = candles(source, tf, NIFTY_DAY if tf == "1m" else RELIANCE_DAY, days=2)
    ticks = ticks_from_candles(df, token, tf, seed=7, extra=5)
    rows = df.iter_rows(named=True)
    by_candle: dict[int, list[ScriptTick]] = {}
    starts = [epoch(r["ts"]) for r in df.iter_rows(named=True)]
    for t in ticks:
        start = max(s for s in starts if s <= t.ts)
        by_candle.setdefault(start, []).append(t)
    prev_cum = 0
    for row, start in zip(rows, starts, strict=True):
        group = by_candle[start]
        close = epoch(CAL.close_time(row["ts"], parse(tf)))
        assert all(start <= t.ts < close for t in group)
        assert [t.ts for t in group] == sorted({t.ts for t in group})  # strictly increasing seconds
        prices = [t.price / 100 for t in group]
        assert (prices[0], max(prices), min(prices), prices[-1]) == (row["open"], row["high"], row["low"], row["close"])
        if token == NIFTY:
            assert all(t.volume is None for t in group)
            continue
        if row["ts"].time().strftime("%H:%M") == "09:15":
            prev_cum = 0
        increments = [
            b - a for a, b in zip([prev_cum] + [t.volume for t in group], [t.volume for t in group], strict=False)
        ]
        assert all(i >= 1 for i in increments) and sum(increments) == row["volume"]
        prev_cum = group[-1].volume


# -- through the real client ----------------------------------------------------------------


class Driver:
    """Moves the server's fake clock in steps, waits for the real client to have every tick
    sent so far, feeds them to the builder, and polls it at the fake time."""

    def __init__(self, server: KiteTickerServer, client: LiveTicker, builder: CandleBuilder) -> None:
        self.server, self.client, self.builder = server, client, builder
        self.sent = 0
        self.fed = 0
        self.outs: list[Emitted] = []

    def run(self, until: datetime, step: int = 60, heartbeats: bool = False) -> None:
        end = epoch(until)
        clock = self.server.clock
        assert clock is not None
        while clock < end:
            clock = min(clock + step - clock % step if step == 60 else clock + step, end)
            self.sent += self.server.advance(clock, heartbeats)
            ticks = self.client.wait_ticks(self.sent)
            self.builder.add(ticks[self.fed :])
            self.fed = len(ticks)
            self.outs.append(self.builder.poll(datetime.fromtimestamp(clock, IST)))


def test_candles_from_the_real_client_equal_the_source_candles(
    ticker_server: KiteTickerServer, nifty_day: pl.DataFrame
) -> None:
    """A whole NIFTY session, minute by minute on the fake clock, polled every minute."""
    ticker_server.load(ticks_from_candles(nifty_day, NIFTY, "1m", seed=3))
    start = at(2024, 6, 3, 9, 10)
    builder = CandleBuilder([NIFTY], ["1m", "5m", "15m", "60m", "1d"], now=start)
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        builder.connected(start)
        driver = Driver(ticker_server, client, builder)
        driver.run(at(2024, 6, 3, 15, 31))
    built, tainted = collect(driver.outs)
    assert tainted == [] and builder.stats.late == builder.stats.outside == 0
    for tf in ("1m", "5m", "15m", "60m", "1d"):
        assert_frame_equal(built[(NIFTY, tf)], expect(nifty_day, tf))
    assert built[(NIFTY, "1m")].get_column("volume").null_count() == 375  # an index has no volume


def test_volumes_from_cumulative_ticks_equal_the_source(
    ticker_server: KiteTickerServer, reliance_60m: pl.DataFrame
) -> None:
    """Two equities with real volumes, two sessions, one connection: 60m candles exactly, and
    the 1m candles built on the way add up to them."""
    infy = candles("INFY_60m_2024-12_2026-01.csv", "60m", RELIANCE_DAY, days=2)
    script = ticks_from_candles(reliance_60m, RELIANCE, "60m", seed=4, extra=40)
    script += ticks_from_candles(infy, INFY, "60m", seed=5, extra=40)
    ticker_server.load(script)
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([RELIANCE, INFY], ["1m", "15m", "60m", "1d"], now=start)
    with LiveTicker(ticker_server, [RELIANCE, INFY]) as client:
        ticker_server.wait_subscribed([RELIANCE, INFY])
        builder.connected(start)
        driver = Driver(ticker_server, client, builder)
        driver.run(at(2024, 12, 6, 15, 31), step=600)
    built, tainted = collect(driver.outs)
    assert tainted == []
    for token, source in ((RELIANCE, reliance_60m), (INFY, infy)):
        assert_frame_equal(built[(token, "60m")], source)
        assert_frame_equal(resample(built[(token, "1m")], parse("60m"), CAL), source)
        assert_frame_equal(resample(built[(token, "1m")], parse("15m"), CAL), built[(token, "15m")])
        assert_frame_equal(built[(token, "1d")], resample(source, parse("1d"), CAL))


def test_a_heartbeat_only_minute_has_no_candle(ticker_server: KiteTickerServer, nifty_day: pl.DataFrame) -> None:
    first = nifty_day.head(12)
    quiet = first.get_column("ts")[5]  # 09:20: no tick, only heartbeats
    source = first.filter(pl.col("ts") != quiet)
    ticker_server.load(ticks_from_candles(source, NIFTY, "1m", seed=6))
    start = at(2024, 6, 3, 9, 14)
    builder = CandleBuilder([NIFTY], ["1m", "5m"], now=start)
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        builder.connected(start)
        driver = Driver(ticker_server, client, builder)
        driver.run(at(2024, 6, 3, 9, 27, 30), heartbeats=True)
        beats = sum(1 for p, binary in client.messages if binary and len(p) == 1)
    built, tainted = collect(driver.outs)
    assert beats >= 60 and tainted == []
    assert quiet not in built[(NIFTY, "1m")].get_column("ts").to_list()
    assert_frame_equal(built[(NIFTY, "1m")], source)
    closed = source.filter(pl.col("ts") < at(2024, 6, 3, 9, 25))  # 09:25-09:30 is not over yet
    assert_frame_equal(built[(NIFTY, "5m")], resample(closed, parse("5m"), CAL))


def test_a_disconnect_mid_candle_taints_it_and_the_rest_is_exact(
    ticker_server: KiteTickerServer, nifty_day: pl.DataFrame
) -> None:
    """The server cuts the connection at 10:00:30; the client reconnects by itself; ticks of
    the market meanwhile are lost. Those buckets come out tainted, never half-built."""
    morning = nifty_day.filter(pl.col("ts") < at(2024, 6, 3, 10, 30))
    ticker_server.load(ticks_from_candles(morning, NIFTY, "1m", seed=8))
    start = at(2024, 6, 3, 9, 14)
    builder = CandleBuilder([NIFTY], ["1m", "5m", "15m", "60m"], now=start)
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        builder.connected(start)
        driver = Driver(ticker_server, client, builder)
        driver.run(at(2024, 6, 3, 10, 0, 30), step=30)
        ticker_server.drop()
        client.wait_event("close")
        builder.disconnected(at(2024, 6, 3, 10, 0, 30))
        lost = ticker_server.advance(epoch(at(2024, 6, 3, 10, 1, 10)), heartbeats=False)
        driver.outs.append(builder.poll(at(2024, 6, 3, 10, 1, 10)))
        client.wait_event("connect", 2)
        ticker_server.wait_subscribed([NIFTY])
        builder.connected(at(2024, 6, 3, 10, 1, 10))
        driver.run(at(2024, 6, 3, 10, 31), step=30)
    assert lost == 0  # nobody was connected: those ticks are gone
    built, tainted = collect(driver.outs)
    assert spans(tainted) == {
        ("1m", "10:00", "10:02"),
        ("5m", "10:00", "10:05"),
        ("15m", "10:00", "10:15"),
        ("60m", "09:15", "10:15"),
    }
    for tf in ("1m", "5m", "15m"):
        bad = [(t.start, t.end) for t in tainted if t.timeframe.name == tf]
        keep = expect(morning, tf).filter(
            ~pl.any_horizontal([(pl.col("ts") >= a) & (pl.col("ts") < b) for a, b in bad])
        )
        assert_frame_equal(built[(NIFTY, tf)], keep)
    assert (NIFTY, "60m") not in built  # 09:15 is tainted, 10:15 not over at 10:31


# -- the builder alone, with ticks in the client's own format -------------------------------


def client_ticks(script: list[ScriptTick], mode: str = "full") -> list[dict]:
    return [expected_tick(t, mode) for t in script]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), max_delay=st.integers(0, 59), dup=st.floats(0, 0.5), poll_every=st.integers(1, 200))
def test_any_arrival_order_duplicates_and_poll_split_give_the_same_candles(
    seed: int, max_delay: int, dup: float, poll_every: int
) -> None:
    """Each tick arrives up to `max_delay` s after its exchange time (so out of order across
    buckets too), some twice; polls fall anywhere. With a grace longer than the delays nothing
    is late, and the candles are the source's exactly, for an index and a volume series."""
    rng = random.Random(seed)
    nifty = candles("NIFTY50_1m_2024Q2.csv", "1m", NIFTY_DAY).head(40)
    reliance = candles("RELIANCE_60m_2024-12_2026-01.csv", "60m", RELIANCE_DAY).head(2)
    feeds = [
        (NIFTY, nifty, "1m", ticks_from_candles(nifty, NIFTY, "1m", seed=seed)),
        (RELIANCE, reliance, "60m", ticks_from_candles(reliance, RELIANCE, "60m", seed=seed, extra=60)),
    ]
    for token, source, tf, script in feeds:
        arrivals = [(t.ts + rng.uniform(0, max_delay), t) for t in script]
        arrivals += [(t.ts + rng.uniform(0, max_delay), t) for t in script if rng.random() < dup]
        arrivals.sort(key=lambda a: a[0])
        first = source.get_column("ts")[0]
        builder = CandleBuilder([token], ["1m", "5m", "60m"], now=first, grace=60)
        builder.connected(datetime.fromtimestamp(epoch(first) - 60, IST))
        outs = []
        for i, (when, tick) in enumerate(arrivals):
            builder.add(client_ticks([tick]))
            if i % poll_every == 0:
                outs.append(builder.poll(datetime.fromtimestamp(when, IST)))
        outs.append(builder.poll(source.get_column("ts")[-1] + parse(tf).length * 2))
        built, tainted = collect(outs)
        assert tainted == [] and builder.stats.late == 0
        assert_frame_equal(built[(token, tf)], source)
        assert_frame_equal(built[(token, "5m")], resample(built[(token, "1m")], parse("5m"), CAL))


def test_a_late_tick_is_counted_and_changes_nothing(nifty_day: pl.DataFrame) -> None:
    source = nifty_day.head(3)
    script = ticks_from_candles(source, NIFTY, "1m", seed=9)
    start = at(2024, 6, 3, 9, 14)
    builder = CandleBuilder([NIFTY], ["1m", "5m"], now=start)
    builder.connected(start)
    groups = list(by_minute(script))
    builder.add(client_ticks(groups[0]))
    first = builder.poll(at(2024, 6, 3, 9, 16, 2))  # 09:15 closes at 09:16, + 2 s grace
    assert_frame_equal(first.candles[(NIFTY, "1m")], source.head(1))
    wild = ScriptTick(NIFTY, groups[0][0].ts + 1, 1)  # a price of 0.01 for 09:15, too late
    builder.add(client_ticks([wild, *groups[1], *groups[2]]))
    assert builder.stats.late == 1
    rest = builder.poll(at(2024, 6, 3, 9, 20, 2))
    assert_frame_equal(rest.candles[(NIFTY, "1m")], source.slice(1))
    assert_frame_equal(rest.candles[(NIFTY, "5m")], resample(source, parse("5m"), CAL))


def test_nothing_is_final_before_close_plus_grace(nifty_day: pl.DataFrame) -> None:
    script = ticks_from_candles(nifty_day.head(1), NIFTY, "1m", seed=1)
    builder = CandleBuilder([NIFTY], ["1m"], now=at(2024, 6, 3, 9, 14), grace=2)
    builder.connected(at(2024, 6, 3, 9, 14))
    builder.add(client_ticks(script))
    assert not builder.poll(at(2024, 6, 3, 9, 16, 1))
    assert builder.poll(at(2024, 6, 3, 9, 16, 2)).candles[(NIFTY, "1m")].height == 1
    assert not builder.poll(at(2024, 6, 3, 9, 16, 3))  # emitted once


def test_a_start_inside_a_bucket_taints_it(nifty_day: pl.DataFrame) -> None:
    """Started at 10:00:30: the ticks of 10:00:00-10:00:30 were never seen, so every bucket
    holding that stretch (1m 10:00, 5m 10:00, 60m 09:15) is tainted; 10:01 on is exact."""
    source = nifty_day.filter(pl.col("ts") < at(2024, 6, 3, 10, 5))
    now = at(2024, 6, 3, 10, 0, 30)
    script = [t for t in ticks_from_candles(source, NIFTY, "1m", seed=2) if t.ts > epoch(now)]
    builder = CandleBuilder([NIFTY], ["1m", "5m", "60m"], now=now)
    builder.connected(now)
    builder.add(client_ticks(script))
    built, tainted = collect([builder.poll(at(2024, 6, 3, 10, 16))])
    assert sorted((t.timeframe.name, t.start.strftime("%H:%M"), t.end.strftime("%H:%M")) for t in tainted) == [
        ("1m", "10:00", "10:01"),
        ("5m", "10:00", "10:05"),
        ("60m", "09:15", "10:15"),
    ]
    assert_frame_equal(built[(NIFTY, "1m")], source.filter(pl.col("ts") >= at(2024, 6, 3, 10, 1)))
    assert set(built) == {(NIFTY, "1m")}


def _tick(token: int, when: datetime, price: float, volume: int | None = None, timed: bool = True) -> dict:
    t = ScriptTick(token, epoch(when), round(price * 100), volume)
    return expected_tick(t, "full" if timed else "quote")


def test_a_gap_between_the_volume_baseline_and_a_bucket_taints_it() -> None:
    """Trades lost in a disconnect would land in the next bucket's volume: that bucket is
    tainted too, until a tick after the gap gives a fresh baseline."""
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([RELIANCE], ["1m"], now=start)
    builder.connected(start)
    builder.add([_tick(RELIANCE, at(2024, 12, 5, 10, 20, 10), 10.0, 100)])
    builder.disconnected(at(2024, 12, 5, 10, 20, 30))
    builder.connected(at(2024, 12, 5, 10, 20, 50))  # a trade at 10:20:40 (volume 150) was lost
    builder.add(
        [_tick(RELIANCE, at(2024, 12, 5, 10, 22, 5), 11.0, 170), _tick(RELIANCE, at(2024, 12, 5, 10, 23, 5), 12.0, 180)]
    )
    built, tainted = collect([builder.poll(at(2024, 12, 5, 10, 30))])
    assert [(t.start.strftime("%H:%M"), t.end.strftime("%H:%M")) for t in tainted] == [
        ("10:20", "10:21"),
        ("10:22", "10:23"),
    ]
    assert built[(RELIANCE, "1m")].rows() == [(at(2024, 12, 5, 10, 23), 12.0, 12.0, 12.0, 12.0, 10)]


def test_untimed_ticks_blind_the_series_until_its_next_timed_tick() -> None:
    """A quote packet (no timestamp, e.g. right after a reconnect) may carry a trade we cannot
    place: the buckets between the series' last timed tick and its next one are tainted."""
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([RELIANCE, NIFTY], ["1m"], now=start)
    builder.connected(start)
    builder.add(
        [
            _tick(RELIANCE, at(2024, 12, 5, 10, 20, 10), 10.0, 100),
            _tick(NIFTY, at(2024, 12, 5, 10, 20, 10), 20000.0),
            _tick(RELIANCE, at(2024, 12, 5, 10, 20, 40), 9.0, 150, timed=False),
            _tick(RELIANCE, at(2024, 12, 5, 10, 22, 5), 11.0, 170),
            _tick(RELIANCE, at(2024, 12, 5, 10, 23, 5), 12.0, 180),
            _tick(NIFTY, at(2024, 12, 5, 10, 22, 5), 20010.0),
        ]
    )
    built, tainted = collect([builder.poll(at(2024, 12, 5, 10, 30))])
    assert builder.stats.untimed == 1
    assert [(t.token, t.start.strftime("%H:%M"), t.end.strftime("%H:%M")) for t in tainted] == [
        (RELIANCE, "10:20", "10:23")
    ]
    assert built[(RELIANCE, "1m")].get_column("volume").to_list() == [10]
    assert built[(NIFTY, "1m")].get_column("close").to_list() == [20000.0, 20010.0]


def test_quote_updates_do_not_open_a_bucket() -> None:
    """A tick that repeats the previous bucket's volume is a quote update with the old price."""
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([RELIANCE], ["1m"], now=start)
    builder.connected(start)
    builder.add(
        [
            _tick(RELIANCE, at(2024, 12, 5, 9, 15, 59), 10.0, 100),
            _tick(RELIANCE, at(2024, 12, 5, 9, 16, 1), 10.0, 100),  # no trade: old price
            _tick(RELIANCE, at(2024, 12, 5, 9, 16, 5), 12.0, 130),
            _tick(RELIANCE, at(2024, 12, 5, 9, 17, 1), 12.0, 130),
        ]
    )  # a minute with no trade
    built, _ = collect([builder.poll(at(2024, 12, 5, 9, 30))])
    assert built[(RELIANCE, "1m")].rows() == [
        (at(2024, 12, 5, 9, 15), 10.0, 10.0, 10.0, 10.0, 100),
        (at(2024, 12, 5, 9, 16), 12.0, 12.0, 12.0, 12.0, 30),
    ]


def test_ticks_outside_sessions_and_of_unknown_tokens_are_counted() -> None:
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([RELIANCE], ["1m"], now=start, index_volume=0)
    builder.connected(start)
    builder.add(
        [
            _tick(RELIANCE, at(2024, 12, 5, 9, 7, 30), 10.0, 50),  # pre-open
            _tick(RELIANCE, at(2024, 12, 5, 15, 35), 10.0, 60),  # closing session
            _tick(RELIANCE, at(2024, 12, 7, 10, 0), 10.0, 60),  # a Saturday
            _tick(NIFTY, at(2024, 12, 5, 10, 0), 20000.0),
        ]
    )
    assert (builder.stats.outside, builder.stats.unknown, builder.stats.used) == (3, 1, 0)
    assert not builder.poll(at(2024, 12, 9, 9, 0))


def test_index_volume_is_null_or_what_the_caller_says() -> None:
    start = at(2024, 12, 5, 9, 0)
    for index_volume in (None, 0):
        builder = CandleBuilder([NIFTY], ["1m", "5m"], now=start, index_volume=index_volume)
        builder.connected(start)
        builder.add(
            [_tick(NIFTY, at(2024, 12, 5, 9, 15, 1), 20000.0), _tick(NIFTY, at(2024, 12, 5, 9, 16, 1), 20001.0)]
        )
        built, _ = collect([builder.poll(at(2024, 12, 5, 9, 21))])
        assert built[(NIFTY, "1m")].get_column("volume").to_list() == [index_volume] * 2
        assert built[(NIFTY, "5m")].get_column("volume").to_list() == [index_volume]


def test_a_naive_exchange_timestamp_is_host_local_as_the_client_makes_it() -> None:
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([NIFTY], ["1m"], now=start)
    builder.connected(start)
    when = epoch(at(2024, 12, 5, 9, 15, 30))
    builder.add(
        [
            {"instrument_token": NIFTY, "last_price": 1.5, "exchange_timestamp": datetime.fromtimestamp(when)},
            {"instrument_token": NIFTY, "last_price": 2.5, "exchange_timestamp": when + 1},
        ]
    )
    built, _ = collect([builder.poll(at(2024, 12, 5, 9, 17))])
    assert built[(NIFTY, "1m")].rows() == [(at(2024, 12, 5, 9, 15), 1.5, 2.5, 1.5, 2.5, None)]


def test_the_builder_starts_disconnected() -> None:
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([NIFTY], ["5m"], now=start)
    builder.add([_tick(NIFTY, at(2024, 12, 5, 9, 15, 1), 20000.0)])
    out = builder.poll(at(2024, 12, 5, 9, 21))
    assert not out.candles and [(t.start, t.end) for t in out.tainted] == [
        (at(2024, 12, 5, 9, 15), at(2024, 12, 5, 9, 20))
    ]


@pytest.mark.parametrize(
    "name,tf,day,index_volume,targets",
    [
        # a DR-test Saturday: 09:15-10:00 and 11:30-12:30 (the second session starts off the 09:15 grid)
        ("NIFTY50_1m_2024Q1.csv", "1m", date(2024, 3, 2), None, ["1m", "5m", "15m", "60m", "1d"]),
        # Muhurat 18:00-19:00: its own grid; Kite's own 5m candles (index volume 0, as Kite sends it)
        ("NIFTY50_5m_2024.csv", "5m", date(2024, 11, 1), 0, ["5m", "15m", "30m", "60m", "1d"]),
    ],
)
def test_special_sessions_use_the_same_grid_as_resample(
    name: str, tf: str, day: date, index_volume: int | None, targets: list[str]
) -> None:
    source = candles(name, tf, day)
    assert source.get_column("ts").dt.date().unique().to_list() == [day]
    start = datetime(day.year, day.month, day.day, 0, 0, tzinfo=IST)
    builder = CandleBuilder([NIFTY], targets, now=start, index_volume=index_volume)
    builder.connected(start)
    builder.add(client_ticks(ticks_from_candles(source, NIFTY, tf, seed=11)))
    built, tainted = collect([builder.poll(start.replace(hour=23))])
    assert tainted == [] and builder.stats.outside == 0
    for target in targets:
        assert_frame_equal(built[(NIFTY, target)], expect(source, target, base=tf))


def test_shuffled_split_and_repeated_ticks_through_the_real_client(ticker_server: KiteTickerServer) -> None:
    """Hypothesis over the order of the ticks inside each minute, repeats, and how they are cut
    into frames, with the real client parsing every frame: the candles stay the source's."""
    nifty = candles("NIFTY50_1m_2024Q2.csv", "1m", NIFTY_DAY).head(15)
    reliance = candles("RELIANCE_60m_2024-12_2026-01.csv", "60m", RELIANCE_DAY).head(1)
    feeds = [
        (NIFTY, nifty, "1m", ticks_from_candles(nifty, NIFTY, "1m", seed=12)),
        (RELIANCE, reliance, "60m", ticks_from_candles(reliance, RELIANCE, "60m", seed=13, extra=80)),
    ]
    with LiveTicker(ticker_server, [NIFTY, RELIANCE]) as client:
        ticker_server.wait_subscribed([NIFTY, RELIANCE])

        @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(
            seed=st.integers(0, 2**32),
            split=st.lists(st.integers(1, 30), min_size=1, max_size=20),
            repeat=st.floats(0, 0.3),
        )
        def check(seed: int, split: list[int], repeat: float) -> None:
            rng = random.Random(seed)
            for token, source, tf, script in feeds:
                sent: list[ScriptTick] = []
                for group in by_minute(script):
                    group = group + [t for t in group if rng.random() < repeat]
                    rng.shuffle(group)
                    sent += group
                before = len(client.ticks)
                assert ticker_server.send(sent, split * (len(sent) // len(split) + 1)) == len(sent)
                got = client.wait_ticks(before + len(sent))[before:]
                first = source.get_column("ts")[0] - parse("1m").length  # connected a minute early
                builder = CandleBuilder([token], ["1m", tf], now=first)
                builder.connected(first)
                builder.add(got)
                built, tainted = collect([builder.poll(source.get_column("ts")[-1] + parse(tf).length * 2)])
                assert tainted == [] and builder.stats.late == 0
                assert_frame_equal(built[(token, tf)], source)

        check()


def test_gaps_of_earlier_days_are_forgotten_and_the_next_day_is_clean() -> None:
    start = at(2024, 12, 5, 9, 0)
    builder = CandleBuilder([RELIANCE], ["1m", "1d"], now=start)
    builder.connected(start)
    builder.disconnected(at(2024, 12, 5, 11, 0))
    builder.connected(at(2024, 12, 5, 11, 5))
    builder.add(
        [_tick(RELIANCE, at(2024, 12, 5, 10, 0, 1), 10.0, 100), _tick(RELIANCE, at(2024, 12, 5, 11, 0, 1), 9.0, 150)]
    )
    day1 = builder.poll(at(2024, 12, 5, 16, 0))
    assert {t.timeframe.name for t in day1.tainted} == {"1m", "1d"} and len(builder._gaps) == 2
    builder.add(
        [_tick(RELIANCE, at(2024, 12, 6, 9, 15, 1), 11.0, 40), _tick(RELIANCE, at(2024, 12, 6, 9, 16, 1), 12.0, 70)]
    )
    built, tainted = collect([builder.poll(at(2024, 12, 6, 16, 0))])
    assert tainted == [] and builder._gaps == []
    assert built[(RELIANCE, "1m")].get_column("volume").to_list() == [40, 30]  # the day's volume starts at 0
    assert built[(RELIANCE, "1d")].rows() == [(at(2024, 12, 6, 0, 0), 11.0, 12.0, 11.0, 12.0, 70)]
