"""MarketDataEngine on the offline sample source: refresh, fetch, windows, replay, status.

Every read answers "what could a user have seen at as_of": no candle with closes_at > as_of.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import NSE_DATA, engine_at
from mde.calendar import nse, parse_instant
from mde.clock import IST
from mde.config import RefreshSettings, Settings, load
from mde.engine import MAX_LIMIT, MarketDataEngine
from mde.errors import InputError, NotCached
from mde.resample import resample, visible, with_close
from mde.sources.sample import SampleSource
from mde.timeframes import parse

CAL = nse()
CLOCK = datetime(2024, 12, 31, 15, 30, tzinfo=IST)  # the sample's end of data


class CountingSource(SampleSource):
    """The sample source, counting calls to historical()."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str, datetime, datetime]] = []

    def historical(self, instrument, timeframe, start, end):  # type: ignore[no-untyped-def]
        self.calls.append((instrument.key, timeframe.name, start, end))
        return super().historical(instrument, timeframe, start, end)


def counting_engine(settings: Settings, now: str | None = None) -> tuple[MarketDataEngine, CountingSource]:
    src = CountingSource()
    if now is not None:
        settings = settings.with_overrides(now=parse_instant(now))
    return MarketDataEngine(settings, src), src


def sample_series(symbol_key: str, tf: str) -> pl.DataFrame:
    src = SampleSource()
    inst = src.resolve(symbol_key)
    return src.historical(inst, parse(tf), datetime(1990, 1, 1, tzinfo=IST), datetime(2030, 1, 1, tzinfo=IST))


def closes(df: pl.DataFrame, tf: str) -> pl.Series:
    return with_close(df, parse(tf), CAL)["closes_at"]


# -- refresh --------------------------------------------------------------------------------


def test_engine_clock_is_the_sample_end_of_data(engine: MarketDataEngine) -> None:
    assert engine.now() == CLOCK


def test_refresh_of_a_new_series_fetches_the_newest_1000_complete_candles(settings: Settings) -> None:
    eng, src = counting_engine(settings)
    report = eng.refresh("NIFTY", "5m")
    assert report.added == report.rows == report.received == 1000
    cached = eng.load_cache("NIFTY", "5m")
    expected = visible(sample_series("NIFTY", "5m"), parse("5m"), CAL, CLOCK).tail(1000)
    assert cached.equals(expected)
    assert cached["ts"][-1] == datetime(2024, 12, 31, 15, 25, tzinfo=IST)
    assert closes(cached, "5m").max() <= CLOCK
    manifest = eng.store.manifest(eng.resolve("NIFTY"), parse("5m"))
    assert manifest is not None and manifest.source == "sample" and manifest.rows == 1000
    assert manifest.coverage == [(cached["ts"][0], CLOCK)]
    assert src.calls and all(c[:2] == ("NSE:NIFTY 50", "5m") for c in src.calls)

    calls = len(src.calls)
    again = eng.refresh("NIFTY", "5m")
    assert (again.added, again.requested, again.rows) == (0, None, 1000)
    assert len(src.calls) == calls  # up to date: the source is not asked at all
    assert eng.update_cache("NIFTY", "5m") == 0
    assert len(src.calls) == calls


def test_refresh_count_and_settings_count(settings: Settings) -> None:
    eng, _ = counting_engine(settings)
    assert eng.refresh("BANKNIFTY", "15m", count=30).added == 30
    got = eng.load_cache("BANKNIFTY", "15m")
    assert got["ts"][-1] == datetime(2024, 12, 31, 15, 15, tzinfo=IST)
    assert got.height == 30
    small = MarketDataEngine(settings.with_overrides(refresh=RefreshSettings(count=12)), CountingSource())
    assert small.refresh("NIFTY", "1d").added == 12


def test_refresh_of_a_short_series_takes_what_there_is(settings: Settings) -> None:
    """INFY 60m starts 2024-12-05 in the sample: fewer than 1000 candles, all of them."""
    eng, _ = counting_engine(settings)
    report = eng.refresh("INFY", "60m")
    expected = visible(sample_series("INFY", "60m"), parse("60m"), CAL, CLOCK)
    assert report.added == expected.height < 1000
    assert eng.load_cache("INFY", "60m").equals(expected)


def test_refresh_mid_session_stores_only_complete_candles_then_adds_the_next_one(settings: Settings) -> None:
    eng, src = counting_engine(settings, "2024-06-14T11:07+05:30")
    eng.refresh("NIFTY", "5m", count=50)
    cached = eng.load_cache("NIFTY", "5m")
    assert cached.height == 50
    assert cached["ts"][-1] == datetime(2024, 6, 14, 11, 0, tzinfo=IST)  # the 11:05 one closes 11:10
    assert cached.filter(pl.col("ts") >= datetime(2024, 6, 14, 11, 5, tzinfo=IST)).is_empty()
    # same clock: nothing to do, no source call
    calls = len(src.calls)
    assert eng.update_cache("NIFTY", "5m") == 0 and len(src.calls) == calls

    later, _ = counting_engine(settings, "2024-06-14T11:12+05:30")
    report = later.refresh("NIFTY", "5m")
    assert report.added == 1
    # the refresh re-reads the last cached session from its 09:15 open (an overlap at no extra
    # request, to catch revisions and re-adjustments): 09:15..11:00 come back unchanged
    assert report.replaced == 22 and not report.redownloaded
    new = later.load_cache("NIFTY", "5m")
    assert new.height == 51
    assert new["ts"][-1] == datetime(2024, 6, 14, 11, 5, tzinfo=IST)
    assert new.head(50).equals(cached)


def test_refresh_on_a_clock_before_the_cached_candles_fetches_up_to_that_clock(settings: Settings) -> None:
    """MDE_NOW or a sample paper session set in the past: later cached candles say nothing of
    then, so the series is brought up to the clock's now, and a second run asks for nothing."""
    late, _ = counting_engine(settings, "2024-12-31T15:30")
    late.refresh("NIFTY", "5m", count=50)  # only late December is cached
    early, src = counting_engine(settings, "2024-06-14T11:07")
    report = early.refresh("NIFTY", "5m", count=50)
    assert report.added == 50
    assert early.get_window("NIFTY", "5m", 2)["ts"].to_list() == [
        datetime(2024, 6, 14, 10, 55, tzinfo=IST),
        datetime(2024, 6, 14, 11, 0, tzinfo=IST),
    ]
    calls = len(src.calls)
    assert early.update_cache("NIFTY", "5m") == 0 and len(src.calls) == calls
    # an hour later on that clock, the 12 candles closed since (11:05 .. 12:00) are added
    later, _ = counting_engine(settings, "2024-06-14T12:07")
    assert later.update_cache("NIFTY", "5m") == 12
    # and the December candles are still there, untouched
    assert late.get_window("NIFTY", "5m", 50).equals(
        counting_engine(settings, "2024-12-31T15:30")[0].get_window("NIFTY", "5m", 50)
    )
    assert late.load_cache("NIFTY", "5m")["ts"][-1] == datetime(2024, 12, 31, 15, 25, tzinfo=IST)


def test_refresh_over_a_weekend_and_holiday_is_a_no_op(settings: Settings) -> None:
    friday, _ = counting_engine(settings, "2024-01-19T15:30")
    friday.refresh("NIFTY", "5m", count=10)
    # Saturday 2024-01-20 was a full session, so on Monday (a holiday) there is more to fetch:
    # the 65 earlier candles of Friday's session (re-read from its open) and Saturday's 75 ...
    monday, src = counting_engine(settings, "2024-01-22T12:00")
    assert monday.update_cache("NIFTY", "5m") == 65 + 75
    # ... and on Tuesday before the open nothing more
    tuesday, src2 = counting_engine(settings, "2024-01-23T09:00")
    assert tuesday.update_cache("NIFTY", "5m") == 0
    assert src2.calls == []


# -- fetch_historical -----------------------------------------------------------------------


def test_fetch_historical_stores_exactly_the_range_and_earlier_ranges_add(engine: MarketDataEngine) -> None:
    got = engine.fetch_historical("NIFTY", "5m", "2024-06-10", "2024-06-12")
    sample = sample_series("NIFTY", "5m")
    in_range = sample.filter(
        (pl.col("ts") >= datetime(2024, 6, 10, tzinfo=IST)) & (pl.col("ts") < datetime(2024, 6, 13, tzinfo=IST))
    )
    assert in_range.height == 3 * 75
    assert got.equals(in_range)
    assert engine.load_cache("NIFTY", "5m").equals(in_range)

    earlier = engine.download("NIFTY", "5m", date(2024, 6, 3), date(2024, 6, 4))
    assert (earlier.added, earlier.replaced, earlier.rows) == (150, 0, 375)
    cached = engine.load_cache("NIFTY", "5m")
    assert cached.height == 375
    assert cached.filter(pl.col("ts") >= datetime(2024, 6, 10, tzinfo=IST)).equals(in_range)  # nothing deleted
    assert cached["ts"].is_sorted() and cached["ts"].is_unique().all()
    manifest = engine.store.manifest(engine.resolve("NIFTY"), parse("5m"))
    assert manifest is not None and len(manifest.coverage) == 2
    assert manifest.coverage[0][0] == datetime(2024, 6, 3, tzinfo=IST)

    # fetching an overlapping range again replaces, never duplicates
    again = engine.download("NIFTY", "5m", "2024-06-04", "2024-06-10")
    assert again.added == 3 * 75 and again.replaced == 2 * 75
    assert engine.load_cache("NIFTY", "5m").height == 375 + 3 * 75


def test_fetch_historical_of_a_larger_timeframe_and_bad_ranges(engine: MarketDataEngine) -> None:
    got = engine.fetch_historical("NIFTY", "60m", "2024-03-01", "2024-03-04")
    labels = [t.strftime("%m-%d %H:%M") for t in got["ts"]]
    assert labels[:7] == [f"03-01 {h:02d}:15" for h in range(9, 16)]
    assert labels[7:10] == ["03-02 09:15", "03-02 11:15", "03-02 12:15"]  # the DR drill Saturday
    assert len(labels) == 7 + 3 + 7
    with pytest.raises(InputError, match="after end"):
        engine.fetch_historical("NIFTY", "5m", "2024-06-12", "2024-06-10")
    with pytest.raises(InputError, match="future"):
        engine.fetch_historical("NIFTY", "5m", "2025-06-12", "2025-06-13")
    with pytest.raises(InputError, match="bad start date"):
        engine.fetch_historical("NIFTY", "5m", "2024-13-01", "2024-06-10")


# -- get_window: validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (0, "limit must be between 1 and 1000, got 0"),
        (1001, "limit must be between 1 and 1000, got 1001"),
        (-5, "limit must be between 1 and 1000, got -5"),
        ("abc", "limit must be a whole number between 1 and 1000, got 'abc'"),
        (2.5, "limit must be a whole number between 1 and 1000, got 2.5"),
        (True, "limit must be a whole number between 1 and 1000, got True"),
    ],
)
def test_get_window_limit_validation(engine: MarketDataEngine, limit: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        engine.get_window("NIFTY", "5m", limit=limit)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert not isinstance(info.value, NotCached)  # the limit is checked before the cache


@pytest.mark.parametrize("limit", ["0", "1001"])
def test_cli_prints_the_same_limit_message(cache_dir: Path, limit: str) -> None:
    from typer.testing import CliRunner

    from mde.cli import app

    with pytest.raises(InputError) as info:
        MarketDataEngine(load(cache_dir=cache_dir, source="sample", environ={})).get_window("NIFTY", "5m", limit=limit)
    result = CliRunner().invoke(
        app, ["window", "NIFTY", "--limit", limit], env={"MDE_CACHE_DIR": str(cache_dir), "MDE_SOURCE": "sample"}
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {info.value}"


def test_get_window_accepts_limit_as_text_and_bounds(engine: MarketDataEngine) -> None:
    engine.refresh("NIFTY", "5m")
    assert engine.get_window("NIFTY", "5m", limit="7").height == 7
    assert engine.get_window("NIFTY", "5m", limit=1).height == 1
    assert engine.get_window("NIFTY", "5m", limit=MAX_LIMIT).height == 1000


def test_get_window_bad_timeframe(engine: MarketDataEngine) -> None:
    with pytest.raises(InputError, match="unknown timeframe '7m'; use one of 1m, 3m, 5m"):
        engine.get_window("NIFTY", "7m")


@pytest.mark.parametrize("symbol", ["../etc/passwd", "NIFTY/5m", "", " ", "A" * 65, "NSE:X:Y", "nul\x00"])
def test_get_window_unsafe_symbol_never_reaches_the_disk(engine: MarketDataEngine, symbol: str) -> None:
    with pytest.raises(InputError) as info:
        engine.get_window(symbol, "5m")
    assert not isinstance(info.value, NotCached)
    assert not engine.settings.cache_dir.exists()


def test_get_window_unknown_symbol_is_not_cached(engine: MarketDataEngine) -> None:
    # TCS is in the instruments list (not cached); FOO is not: an unknown symbol (tests/test_trust_symbols.py)
    with pytest.raises(NotCached, match=r"no cached 5m candles for TCS, and the sample has none to fetch"):
        engine.get_window("TCS", "5m")
    with pytest.raises(NotCached):
        engine.get_window("NIFTY", "5m")  # known, but nothing cached yet
    with pytest.raises(NotCached):
        engine.get_window("NIFTY", "15m")  # nor anything to build it from


def test_unknown_symbol_fetch_suggests_close_matches(engine: MarketDataEngine) -> None:
    with pytest.raises(InputError, match="did you mean NIFTY"):
        engine.refresh("NIFTYY", "5m")


def test_reading_an_imported_symbol_does_not_depend_on_the_clock(engine: MarketDataEngine, tmp_path: Path) -> None:
    """A series the sample does not have (imported from a file) stays readable after now() ran."""
    csv = tmp_path / "tcs.csv"
    lines = (NSE_DATA / "RELIANCE_60m_2024-12_2026-01.csv").read_text().splitlines()[:36]
    csv.write_text("\n".join(lines) + "\n")
    report = engine.import_file(csv, "TCS", "60m")
    assert report.added == 35
    assert engine.get_window("TCS", "60m", limit=3).height == 3
    engine.now()
    assert engine.get_window("TCS", "60m", limit=3).height == 3
    assert engine.status("TCS", "60m").stale


# -- get_window: as_of ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached_engine(tmp_path_factory: pytest.TempPathFactory) -> MarketDataEngine:
    """NIFTY 5m for 2024-06-03..2024-06-21 cached, clock at the sample's end."""
    root = tmp_path_factory.mktemp("engine")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        eng = MarketDataEngine(load(cache_dir=root / "cache", source="sample", environ={}))
        eng.fetch_historical("NIFTY", "5m", "2024-06-03", "2024-06-21")
    return eng


RANGE_LO = datetime(2024, 6, 3, 8, 0, tzinfo=IST)
RANGE_HI = datetime(2024, 6, 22, 12, 0, tzinfo=IST)
instants = st.integers(0, int((RANGE_HI - RANGE_LO).total_seconds())).map(lambda s: RANGE_LO + timedelta(seconds=s))
on_minutes = st.integers(0, int((RANGE_HI - RANGE_LO).total_seconds()) // 60).map(
    lambda m: RANGE_LO + timedelta(minutes=m)
)
PROPS = hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPS
@given(as_of=st.one_of(instants, on_minutes), limit=st.integers(1, 200))
def test_window_as_of_never_shows_a_candle_before_its_close(
    cached_engine: MarketDataEngine, as_of: datetime, limit: int
) -> None:
    window = cached_engine.get_window("NIFTY", "5m", limit=limit, as_of=as_of)
    assert closes(window, "5m").max() is None or closes(window, "5m").max() <= as_of
    everything = cached_engine.load_cache("NIFTY", "5m")
    expected = (
        with_close(everything, parse("5m"), CAL).filter(pl.col("closes_at") <= as_of).drop("closes_at").tail(limit)
    )
    assert window.equals(expected)


@PROPS
@given(
    as_of=st.one_of(instants, on_minutes),
    limit=st.integers(1, 60),
    tf=st.sampled_from(["10m", "15m", "30m", "60m", "1d"]),
)
def test_window_of_an_uncached_timeframe_is_the_resampled_visible_5m(
    cached_engine: MarketDataEngine, as_of: datetime, limit: int, tf: str
) -> None:
    window = cached_engine.get_window("NIFTY", tf, limit=limit, as_of=as_of)
    base = visible(cached_engine.load_cache("NIFTY", "5m"), parse("5m"), CAL, as_of)
    expected = visible(resample(base, parse(tf), CAL), parse(tf), CAL, as_of).tail(limit)
    assert window.equals(expected)
    assert closes(window, tf).max() is None or closes(window, tf).max() <= as_of


def test_window_examples(cached_engine: MarketDataEngine) -> None:
    w = cached_engine.get_window("NIFTY", "60m", limit=3, as_of="2024-06-14T11:07")
    assert [t.strftime("%d %H:%M") for t in w["ts"]] == ["13 14:15", "13 15:15", "14 09:15"]
    w = cached_engine.get_window("NIFTY", "60m", limit=1, as_of="2024-06-14T15:30")
    assert w["ts"].to_list() == [datetime(2024, 6, 14, 15, 15, tzinfo=IST)]
    d = cached_engine.get_window("NIFTY", "1d", limit=2, as_of="2024-06-14T15:29:59")
    assert d["ts"].dt.date().to_list() == [date(2024, 6, 12), date(2024, 6, 13)]
    d = cached_engine.get_window("NIFTY", "1d", limit=2, as_of="2024-06-14T15:30")
    assert d["ts"].dt.date().to_list() == [date(2024, 6, 13), date(2024, 6, 14)]
    # before the cache starts: empty, not an error
    assert cached_engine.get_window("NIFTY", "5m", as_of="2024-06-01T10:00").is_empty()
    assert cached_engine.get_window("NIFTY", "15m", as_of="2024-06-01T10:00").is_empty()
    # default as_of is the engine's clock (the cache ends 2024-06-21)
    assert cached_engine.get_window("NIFTY", "5m", limit=1)["ts"][0] == datetime(2024, 6, 21, 15, 25, tzinfo=IST)


def test_cached_larger_timeframe_is_read_directly(engine: MarketDataEngine) -> None:
    engine.fetch_historical("NIFTY", "5m", "2024-06-10", "2024-06-14")
    engine.fetch_historical("NIFTY", "15m", "2024-06-13", "2024-06-14")
    w = engine.get_window("NIFTY", "15m", limit=100, as_of="2024-06-14T15:30")
    assert w.height == 50  # only what the 15m cache holds, not the wider 5m-built window
    built = resample(engine.load_cache("NIFTY", "5m"), parse("15m"), CAL).tail(50)
    assert w.equals(built)


# -- latest, replay, status ---------------------------------------------------------------------


def test_get_latest_candle(cached_engine: MarketDataEngine) -> None:
    c = cached_engine.get_latest_candle("NIFTY", "5m", as_of="2024-06-14T11:07")
    assert c is not None
    assert c.ts == datetime(2024, 6, 14, 11, 0, tzinfo=IST)
    assert c.closes_at == datetime(2024, 6, 14, 11, 5, tzinfo=IST)
    row = cached_engine.load_cache("NIFTY", "5m").filter(pl.col("ts") == c.ts).row(0, named=True)
    assert (c.open, c.high, c.low, c.close, c.volume) == (
        row["open"],
        row["high"],
        row["low"],
        row["close"],
        row["volume"],
    )
    hour = cached_engine.get_latest_candle("NIFTY", "1h", as_of="2024-06-14T15:30")
    assert hour is not None and (hour.ts.hour, hour.ts.minute, hour.closes_at.minute) == (15, 15, 30)
    assert cached_engine.get_latest_candle("NIFTY", "5m", as_of="2024-06-01T12:00") is None


def test_replay_yields_complete_candles_in_time_order_inside_the_range(settings: Settings) -> None:
    later = engine_at(settings, "2024-06-14T11:12+05:30")
    later.fetch_historical("NIFTY", "5m", "2024-06-12", "2024-06-14")
    candles = list(later.replay("NIFTY", "5m", "2024-06-13", "2024-06-14"))
    assert candles[0].ts == datetime(2024, 6, 13, 9, 15, tzinfo=IST)
    assert candles[-1].ts == datetime(2024, 6, 14, 11, 5, tzinfo=IST)
    assert len(candles) == 75 + 23
    assert all(a.ts < b.ts for a, b in zip(candles, candles[1:], strict=False))
    assert all(c.closes_at <= later.now() for c in candles)

    # an engine whose clock is earlier does not see the 11:05 candle the cache holds
    earlier = engine_at(settings, "2024-06-14T11:07+05:30")
    early = list(earlier.replay("NIFTY", "5m", "2024-06-14", "2024-06-14"))
    assert early[-1].ts == datetime(2024, 6, 14, 11, 0, tzinfo=IST)
    assert all(c.closes_at <= earlier.now() for c in early)

    # instants as bounds are inclusive
    part = list(later.replay("NIFTY", "5m", "2024-06-13T15:00", "2024-06-14T09:25"))
    assert [c.ts.strftime("%d %H:%M") for c in part] == [
        "13 15:00",
        "13 15:05",
        "13 15:10",
        "13 15:15",
        "13 15:20",
        "13 15:25",
        "14 09:15",
        "14 09:20",
        "14 09:25",
    ]
    with pytest.raises(NotCached):
        list(later.replay("NIFTY", "15m", "2024-06-13", "2024-06-14"))


def test_status_stale(engine: MarketDataEngine) -> None:
    engine.refresh("NIFTY", "5m")
    fresh = engine.status("NIFTY", "5m")
    assert not fresh.stale
    assert fresh.last_close == fresh.expected_close == CLOCK
    # the next morning before the open: still up to date; after the first candle: stale
    assert not engine.status("NIFTY", "5m", as_of="2025-01-01T09:00").stale
    later = engine.status("NIFTY", "5m", as_of="2025-01-01T09:21")
    assert later.stale
    assert later.expected_close == datetime(2025, 1, 1, 9, 20, tzinfo=IST)
    # mid-history: the window at as_of is complete by construction
    assert not engine.status("NIFTY", "5m", as_of="2024-12-20T11:07").stale
    # 60m built from 5m is up to date too
    assert not engine.status("NIFTY", "60m").stale
    with pytest.raises(NotCached):
        engine.status("BANKNIFTY", "5m")


def test_status_stale_when_the_cache_lags_the_clock(settings: Settings) -> None:
    engine_at(settings, "2024-06-14T11:07").refresh("NIFTY", "5m", count=20)
    status = engine_at(settings, "2024-06-14T12:00").status("NIFTY", "5m")
    assert status.stale
    assert status.last_close == datetime(2024, 6, 14, 11, 5, tzinfo=IST)
    assert status.expected_close == datetime(2024, 6, 14, 12, 0, tzinfo=IST)


def test_as_of_in_any_time_zone_means_the_same_instant(engine) -> None:  # noqa: ANN001
    from datetime import datetime

    engine.download("NIFTY", "5m", "2024-06-14", "2024-06-14")
    ist = engine.get_window("NIFTY", "5m", 3, as_of="2024-06-14T11:00+05:30")
    fixed = engine.get_window("NIFTY", "5m", 3, as_of=datetime.fromisoformat("2024-06-14T11:00+05:30"))
    utc = engine.get_window("NIFTY", "5m", 3, as_of=datetime(2024, 6, 14, 5, 30, tzinfo=UTC))
    assert ist.equals(fixed) and ist.equals(utc) and ist.height == 3
    assert engine.history("NIFTY", "15m", as_of=datetime(2024, 6, 14, 5, 30, tzinfo=UTC)).height > 0


def test_pinned_clock_from_an_offset_datetime_is_ist(cache_dir) -> None:  # noqa: ANN001
    from datetime import datetime

    from mde.config import load

    settings = load(
        cache_dir=cache_dir, source="sample", environ={}, now=datetime.fromisoformat("2024-12-31T15:30+05:30")
    )
    assert str(settings.now.tzinfo) == "Asia/Kolkata"
