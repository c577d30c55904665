"""MarketDataEngine: the cache, a source, and the clock, behind the names users know.

    engine = MarketDataEngine()                       # settings from mde.toml / env
    engine.update_cache("NIFTY", "5m")                # fetch what is missing up to now
    engine.get_window("NIFTY", "15m", limit=20, as_of="2024-06-14T11:00")

Every read answers "what could a user have seen at `as_of`": a candle is visible only
once it has closed (`closes_at <= as_of`), and a timeframe that is not cached is built
from a smaller cached one under the same rule, so a backtest cannot peek ahead.
"""

from __future__ import annotations

import functools
import logging
import shlex
import time as time_mod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import polars as pl

from . import calendar as cal_mod
from .candles import Candle, empty_candles, normalize as normalize_frame
from .clock import IST
from .config import MAX_COUNT, Settings, load
from .errors import CacheError, ConfigError, InputError, MdeError, NotCached, worst
from .importer import read_candles
from .jsonout import dumps, finite, frame_rows
from .resample import resample, visible, with_close
from .sources import Source, make_source
from .store import CandleStore, Range, WriteResult, union_ranges
from .symbols import Instrument, per_instrument, resolve_offline, validate_symbol
from .timeframes import Timeframe, parse, sources_for
from .validate import require_plausible

if TYPE_CHECKING:
    from .sources.sample import SampleSource

log = logging.getLogger("mde.engine")
MAX_LIMIT = 1000
LATEST_LOOKBACK_DOUBLINGS = 6  # new series: look back up to ~64x the first span for `count` candles


class Window(NamedTuple):
    """A window and where its candles come from (`MarketDataEngine.read_window`).

    `built_from` is None when the candles are the source's own `timeframe` candles, else the
    smaller cached timeframe they were resampled from. A built daily candle is the first open,
    highest high, lowest low and last close of its session's 5m (or 1m ...) candles; NSE's
    official daily close (and Kite's daily candle) is not the last traded price and can differ.
    """

    candles: pl.DataFrame
    timeframe: Timeframe
    built_from: Timeframe | None

    def note(self, symbol: str) -> str | None:
        """The one line the CLI prints about a built window (None when it is the source's own)."""
        return built_note(symbol, self.timeframe, self.built_from)


def built_note(symbol: str, timeframe: Timeframe, built_from: Timeframe | None, *, advice: bool = True) -> str | None:
    """What a user should know about candles built from a smaller timeframe, and (`advice`)
    the command that caches the source's own (after which reads use those: the note goes away)."""
    if built_from is None:
        return None
    if timeframe.is_daily:
        note = f"built from {built_from} candles: NSE's official daily close can differ from the last trade"
        own = "caches the source's own"
    else:
        note = f"built from {built_from} candles, not the source's own {timeframe}"
        own = "caches those"
    if not advice:
        return note
    return f"{note}; `mde refresh --symbols {shlex.quote(validate_symbol(symbol))} --timeframe {timeframe}` {own}"


@dataclass(frozen=True)
class FetchReport:
    symbol: str
    instrument: Instrument
    timeframe: Timeframe
    requested: Range | None  # None when nothing needed fetching
    received: int  # complete candles the source returned
    added: int
    replaced: int
    rows: int
    candles: pl.DataFrame
    redownloaded: bool = False  # the source re-adjusted the past; the series was replaced whole
    backfilled: int = 0  # older candles added to reach `count`
    implausible: dict[str, int] = field(default_factory=dict)  # received candles failing validate.check, kept
    empty: bool = False  # the source answered no candle for sessions of the range: recorded as empty


@dataclass(frozen=True)
class RefreshResult:
    symbol: str
    timeframe: str
    report: FetchReport | None
    error: MdeError | None


@dataclass(frozen=True)
class RefreshReport:
    """What `refresh_many` did: one RefreshResult per series (in plan order) and the run's
    figures (`summary`: what `mde refresh --json` prints). Iterating it gives the results, as
    the list `refresh_many` used to return did."""

    results: list[RefreshResult]
    summary: dict[str, Any]  # refresh_summary(): ok, failed, added, requests, seconds, series...

    @property
    def ok(self) -> int:
        return sum(r.error is None for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.results)

    @property
    def errors(self) -> list[MdeError]:
        return [r.error for r in self.results if r.error is not None]

    @property
    def worst_error(self) -> MdeError | None:
        """The most severe failure (errors.worst), None if every series was refreshed."""
        return worst(self.errors)

    @property
    def exit_code(self) -> int:
        """0, or the worst failure's exit code: `mde refresh`'s exit status (cron-safe)."""
        bad = self.worst_error
        return 0 if bad is None else bad.exit_code

    def __iter__(self) -> Iterator[RefreshResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> RefreshResult:
        return self.results[index]


@dataclass(frozen=True)
class SeriesStatus:
    instrument: Instrument
    timeframe: Timeframe
    last_ts: datetime | None
    last_close: datetime | None
    expected_close: datetime | None  # close of the newest candle a complete series would have
    as_of: datetime

    @property
    def stale(self) -> bool:
        if self.last_close is None:
            return True
        return self.expected_close is not None and self.last_close < self.expected_close


@dataclass(frozen=True)
class SeriesInfo:
    instrument: Instrument
    timeframe: Timeframe
    source: str
    rows: int | None  # None only with `error`
    first_ts: datetime | None
    last_ts: datetime | None
    updated_at: datetime | None
    coverage: list[Range]
    bytes: int
    partitions: int
    implausible: dict[str, int] = field(default_factory=dict)  # cached candles failing validate.check, by rule
    empty: list[Range] = field(default_factory=list)  # answered with no candle (see Manifest.empty)
    error: CacheError | None = None  # the series could not be summarised (a corrupt manifest): why


@dataclass(frozen=True)
class ImportReport:
    instrument: Instrument
    timeframe: Timeframe
    rows_read: int
    dropped_outside_session: int
    dropped_incomplete: int
    added: int
    replaced: int
    rows: int
    dropped_invalid: dict[str, int] = field(default_factory=dict)  # by validate.PROBLEMS key (--drop-invalid)
    first_outside: str | None = None  # the first bar dropped outside the sessions, with its line


_US = timedelta(microseconds=1)


class _Fill:
    """What a back-fill wrote, piece by piece."""

    def __init__(self, edge: datetime) -> None:
        self.lo = edge
        self.frames: list[pl.DataFrame] = []
        self.writes = self.received = self.added = self.replaced = self.rows = 0
        self.implausible: dict[str, int] = {}  # written candles failing validate.check, by rule

    def add(self, complete: pl.DataFrame, result: WriteResult) -> None:
        self.frames.append(complete)
        for key, n in result.implausible.items():
            self.implausible[key] = self.implausible.get(key, 0) + n
        self.writes += 1
        self.received += complete.height
        self.added += result.added
        self.replaced += result.replaced
        self.rows = result.rows

    def candles(self) -> pl.DataFrame:
        if not self.frames:
            return empty_candles()
        return pl.concat(self.frames[::-1], how="diagonal_relaxed")


PRICE_TOLERANCE = 0.011  # rupees: float noise like 2071.19 vs 2071.2 is rounding, not an adjustment


def _adjusted(cached: pl.DataFrame, fresh: pl.DataFrame) -> bool:
    """Do the source's candles differ from cached ones at the same ts beyond rounding?"""
    if cached.is_empty() or fresh.is_empty():
        return False
    both = cached.join(fresh, on="ts", suffix="_new")
    if both.is_empty():
        return False
    diff = pl.max_horizontal([(pl.col(c) - pl.col(f"{c}_new")).abs() for c in ("open", "high", "low", "close")])
    return bool(both.select((diff > PRICE_TOLERANCE).any()).item())


def check_limit(limit: Any) -> int:
    number: int
    if isinstance(limit, bool) or not isinstance(limit, int):
        try:
            number = int(str(limit))
        except ValueError:
            raise InputError(f"limit must be a whole number between 1 and {MAX_LIMIT}, got {limit!r}") from None
    else:
        number = limit
    if not 1 <= number <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, got {number}")
    return number


def check_count(count: Any) -> int:
    """A number of candles to keep cached (`--count`, `[refresh] count`): 1..MAX_COUNT."""
    number: int
    if isinstance(count, bool) or not isinstance(count, int):
        try:
            number = int(str(count))
        except ValueError:
            raise InputError(f"count must be a whole number between 1 and {MAX_COUNT:,}, got {count!r}") from None
    else:
        number = count
    if not 1 <= number <= MAX_COUNT:
        raise InputError(f"count must be between 1 and {MAX_COUNT:,} (about ten years of 1m candles), got {number:,}")
    return number


def _as_instant(value: datetime | date | str | None, what: str, end_of_day: bool = False) -> datetime | None:
    """Dates mean whole sessions: a start date is 00:00, an end date is 23:59:59.999999."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if len(value) == 10:
            value = cal_mod.parse_date(value, what)
        else:
            return cal_mod.parse_instant(value, what)
    if isinstance(value, datetime):
        return value.astimezone(IST) if value.tzinfo else value.replace(tzinfo=IST)
    day = datetime.combine(value, time(0, 0), IST)
    return day + timedelta(days=1, microseconds=-1) if end_of_day else day


class MarketDataEngine:
    """The candle cache and its source. Works offline for everything that only reads."""

    def __init__(self, settings: Settings | None = None, source: Source | None = None) -> None:
        self.settings = settings if settings is not None else load()
        self._source = source
        self._clock_source: Source | None = None
        self._auth_error: MdeError | None = None
        self.store = CandleStore(self.settings.cache_dir)
        self.store.lock_timeout = self.settings.lock_timeout
        self.calendar = cal_mod.nse()
        # symbol -> instrument without a catalog is pure given the aliases; memoized for servers
        self._offline = functools.lru_cache(maxsize=4096)(
            functools.partial(resolve_offline, aliases=self.settings.aliases)
        )

    # -- plumbing -----------------------------------------------------------------------
    @property
    def source(self) -> Source:
        """The configured source, created on first use (Kite is imported only then)."""
        if self._source is None:
            self._source = make_source(self.settings)
        return self._source

    @property
    def source_name(self) -> str:
        return self._source.name if self._source is not None else self.settings.source

    def now(self) -> datetime:
        """MDE_NOW if pinned, else the source's clock (the sample's end of data), else the wall clock."""
        if self.settings.now is not None:
            return self.settings.now
        source = self._source
        if source is None and self.settings.source == "sample":
            # cheap: no network, no kiteconnect. Not kept as self._source, so reads keep resolving
            # offline (an imported TCS stays readable whether or not the clock was looked at).
            if self._clock_source is None:
                self._clock_source = make_source(self.settings)
            source = self._clock_source
        clock = source.clock() if source is not None else None
        return clock if clock is not None else cal_mod.now_ist()

    def pin_clock(self, now: datetime) -> None:
        """Move a pinned clock (what MDE_NOW does), keeping the store and its read cache:
        a simulated session advances one engine instead of building one per tick."""
        self.settings = self.settings.with_overrides(now=now)

    def resolve(self, symbol: str) -> Instrument:
        """The instrument a symbol stands for.

        Reads need no network: aliases and EXCH:SYMBOL answer most symbols. Only a symbol
        with nothing cached under that reading (NIFTY-FUT, a bare NFO tradingsymbol) is
        asked of the Kite instruments catalog, which downloads its dump at most once a day.
        """
        if self._source is not None:
            self.store.check_memory()
            return self._source.resolve(symbol)
        inst = self._offline(symbol)
        if self.settings.source == "kite" and not self.store.instrument_dir(inst).is_dir():
            self.store.check_memory()  # the catalog may download: not on a server's event loop
            try:
                return self.source.resolve(symbol)
            except CacheError:
                raise  # e.g. a corrupt known_instruments.json: that, not "nothing cached", is the problem
            except MdeError:
                return inst  # the read then says plainly that nothing is cached for it
        return inst

    @functools.cached_property
    def offline_catalog(self) -> Any:
        """The instruments list without a network (the cached Kite dump, else the one shipped
        with mde): it tells an unknown symbol from one that is only not cached."""
        from .instruments import OfflineCatalog

        return OfflineCatalog(self.settings.cache_dir / "_meta", self.now)

    def check_symbol(self, symbol: str) -> None:
        """Offline and read-only: nothing if the symbol is cached or names a known instrument
        (an alias, an index, the instruments list, a remembered contract); else InputError
        `unknown symbol 'NIFTI'; did you mean NIFTY?`. Asked only where nothing is cached."""
        inst = self._offline(symbol)  # validates
        if self.store.instrument_dir(inst).is_dir():
            return
        self.offline_catalog.check(symbol, self.settings.aliases)

    def _series(self, symbol: str, timeframe: str | Timeframe) -> tuple[Instrument, Timeframe]:
        tf = parse(timeframe)  # validate the timeframe before the symbol: cheaper, clearer
        return self.resolve(symbol), tf

    def _fetchable(self, symbol: str, timeframe: str | Timeframe) -> tuple[Instrument, Timeframe]:
        """Like _series, but the source resolves (it knows which instruments exist)."""
        tf = parse(timeframe)
        return self.source.resolve(symbol), tf

    def source_span(self, inst: Instrument, tf: Timeframe, source: str | None = None) -> Range | None:
        """What the source can answer for a series, if it knows (the sample does; Kite does not).
        `source` names the series' source when it is cached (its manifest's), else the configured one."""
        name = source or self.source_name
        if name != "sample":
            return None
        src = self._source if self._source is not None and self._source.name == "sample" else None
        if src is None:
            if self._clock_source is None or self._clock_source.name != "sample":
                self._clock_source = make_source(self.settings, "sample")
            src = self._clock_source
        return cast("SampleSource", src).span(inst, tf)  # the source named "sample" is a SampleSource

    def _sample_has(self, symbol: str) -> str:
        """` (it has 1d, 60m)`: the sample's timeframes of a symbol, for messages."""
        try:
            key = self._offline(symbol).key
            src = (
                self._source
                if self._source is not None and self._source.name == "sample"
                else make_source(self.settings, "sample")
            )
            have = sorted(
                {tf for k, tf in cast("SampleSource", src).series() if k == key}, key=lambda n: parse(n).minutes
            )
        except MdeError:
            return ""
        return f" (it has {', '.join(have)} for {symbol})" if have else f" (it has nothing for {symbol})"

    def _span(self, inst: Instrument, tf: Timeframe) -> Range | None:
        span = getattr(self.source, "span", None)
        return span(inst, tf) if span is not None else None

    def _ask(self, inst: Instrument, tf: Timeframe, lo: datetime, hi: datetime) -> tuple[pl.DataFrame, Range | None]:
        """The source's candles for [lo, hi] cut to what it has, and the range it vouched for
        (None when it has nothing there: a sample range outside its span)."""
        span = self._span(inst, tf)
        if span is not None:
            lo, hi = max(lo, span[0]), min(hi, span[1])
            if lo >= hi:
                return empty_candles(), None
        return self.source.historical(inst, tf, lo, hi), (lo, hi)

    def has_session(self, lo: datetime, hi: datetime) -> bool:
        """Is some NSE session open at a moment of [lo, hi]?"""
        day = lo.astimezone(IST).date()
        while day <= hi.astimezone(IST).date():
            base = datetime.combine(day, time(0, 0), IST)
            if any(
                base + timedelta(minutes=a) <= hi and base + timedelta(minutes=b) > lo
                for a, b in self.calendar.sessions(day)
            ):
                return True
            day += timedelta(days=1)
        return False

    def _complete(self, candles: pl.DataFrame, tf: Timeframe, now: datetime) -> pl.DataFrame:
        return visible(candles, tf, self.calendar, now)

    # -- the cache ----------------------------------------------------------------------
    def load_cache(self, symbol: str, timeframe: str | Timeframe = "5m") -> pl.DataFrame:
        """Every cached candle of the series (empty frame if none)."""
        inst, tf = self._series(symbol, timeframe)
        return self.store.read(inst, tf)

    def save_cache(
        self, symbol: str, timeframe: str | Timeframe, candles: pl.DataFrame, *, covered: Range | None = None
    ) -> WriteResult:
        """Merge candles into the cache; incomplete ones (closing after now) are dropped.

        Every row must be a plausible candle (validate.check: finite positive prices, low <= open,
        close <= high, volume null or a whole number >= 0, ts on the timeframe's session grid, no ts
        twice), else InvalidCandles (InputError) names the first bad rows and nothing is written."""
        inst, tf = self._series(symbol, timeframe)
        require_plausible(candles, tf, self.calendar)
        return self._save(inst, tf, candles, self.source_name, covered, self.now())[0]

    def _save(
        self,
        inst: Instrument,
        tf: Timeframe,
        candles: pl.DataFrame,
        source: str,
        covered: Range | None,
        now: datetime,
        empty: Range | None = None,
    ) -> tuple[WriteResult, pl.DataFrame, int]:
        from .candles import normalize, normalize_daily

        candles = normalize(candles)
        if tf.is_daily:
            candles = normalize_daily(candles)
        complete = self._complete(candles, tf, now)
        result = self.store.write(inst, tf, complete, source=source, covered=covered, now=now, empty=empty)
        return result, complete, candles.height - complete.height

    # -- fetching -----------------------------------------------------------------------
    def download(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        start: datetime | date | str,
        end: datetime | date | str | None = None,
    ) -> FetchReport:
        """Fetch [start, end] (dates are whole sessions) from the source and merge it into the cache."""
        now = self.now()
        lo = _as_instant(start, "start date")  # the dates first: a bad one must not resolve (and record) the symbol
        hi = _as_instant(end, "end date", end_of_day=True) if end is not None else now
        assert lo is not None and hi is not None
        inst, tf = self._fetchable(symbol, timeframe)
        if lo > hi:
            raise InputError(f"start {lo:%Y-%m-%d %H:%M} is after end {hi:%Y-%m-%d %H:%M}")
        if lo > now:
            raise InputError(f"start {lo:%Y-%m-%d %H:%M} is in the future (now is {now:%Y-%m-%d %H:%M} IST)")
        hi = min(hi, now)
        if not self.has_session(lo, hi):
            until = f"{hi:%Y-%m-%d}" if hi != now else f"now ({hi:%Y-%m-%d %H:%M})"
            raise InputError(f"no NSE session between {lo:%Y-%m-%d} and {until}; nothing was fetched")
        raw = self.source.historical(inst, tf, lo, hi)  # the sample says what it has (InputError)
        span = self._span(inst, tf)
        asked = (max(lo, span[0]), min(hi, span[1])) if span is not None else (lo, hi)
        fresh = self._complete(raw, tf, now)
        # the ledger vouches only for what the answer shows (a lagging source's current session: up to its last candle)
        covered = self._vouched(tf, asked[0], asked[1], fresh, now)
        if fresh.is_empty() and span is None:
            # e.g. Kite before the instrument was listed: the answer is "nothing", not a gap to fetch again
            result, complete, _ = self._save(inst, tf, raw, self.source.name, None, now, empty=covered)
            return FetchReport(symbol, inst, tf, (lo, hi), 0, 0, 0, result.rows, complete, empty=covered is not None)
        result, complete, _ = self._save(inst, tf, raw, self.source.name, covered, now)
        return FetchReport(
            symbol,
            inst,
            tf,
            asked,
            complete.height,
            result.added,
            result.replaced,
            result.rows,
            complete,
            implausible=result.implausible,
        )

    def fetch_historical(
        self, symbol: str, timeframe: str | Timeframe, start: datetime | date | str, end: datetime | date | str
    ) -> pl.DataFrame:
        """Exactly [start, end] from the source, merged into the cache; returns the candles received."""
        return self.download(symbol, timeframe, start, end).candles

    def _fetch_latest(self, symbol: str, timeframe: str | Timeframe, count: int) -> FetchReport:
        count = check_count(count)
        inst, tf = self._fetchable(symbol, timeframe)
        now = self.now()
        span = self._span(inst, tf)
        top = min(now, span[1]) if span is not None else now  # the sample's older series end before its clock
        fill = self._fill_back(inst, tf, top + _US, count, now, newest=True)
        candles = fill.candles()
        if candles.is_empty() and span is not None:
            from .sources.sample import outside_span

            raise InputError(outside_span(inst, tf, fill.lo, now, span))
        if fill.writes == 0:
            vouched = self._vouched(tf, fill.lo, top, candles, now)
            if self.has_session(fill.lo, top):
                # nothing at all (Kite: an instrument not traded yet): recorded as empty, not as covered
                result, complete, _ = self._save(inst, tf, candles, self.source.name, None, now, empty=vouched)
                return FetchReport(
                    symbol, inst, tf, (fill.lo, top), 0, 0, 0, result.rows, complete, empty=vouched is not None
                )
            result, _, _ = self._save(inst, tf, candles, self.source.name, vouched, now)
            rows = result.rows
        else:
            rows = fill.rows
        covered = (candles["ts"][0], top) if not candles.is_empty() else (fill.lo, top)
        return FetchReport(
            symbol,
            inst,
            tf,
            covered,
            candles.height,
            fill.added,
            fill.replaced,
            rows,
            candles,
            implausible=fill.implausible,
        )

    def _vouched(self, tf: Timeframe, lo: datetime, hi: datetime, candles: pl.DataFrame, now: datetime) -> Range | None:
        """The part of an answered request [lo, hi] that the ledger may record as covered.

        Kite's candles can lag the clock by minutes, so an answer vouches for the current
        session (the latest one that has opened by `now`) only up to the close of the last
        complete candle it returned, unless that candle is the newest one that could have
        closed by `hi`. Sessions before the current one are vouched for as asked (one with
        no candles is genuinely empty: the source has moved past it). `candles` are the
        complete candles returned. None when nothing can be vouched for.
        """
        current = self._current_open(now)
        expected = self.calendar.latest_close(hi, tf)  # the newest candle [lo, hi] could hold
        if current is None or hi <= current or expected is None or expected <= lo:
            return (lo, hi)
        end = current
        if not candles.is_empty():
            last_close = self.calendar.close_time(candles["ts"][-1], tf)
            if last_close >= expected:
                return (lo, hi)
            end = max(end, min(last_close, hi))
        return (lo, end) if end > lo else None

    def _current_open(self, now: datetime) -> datetime | None:
        """The open of the latest session that has begun by `now` (None if none in 15 days)."""
        day = now.astimezone(IST).date()
        for back in range(16):
            d = day - timedelta(days=back)
            sessions = self.calendar.sessions(d)
            if sessions:
                opened = datetime.combine(d, time(0, 0), IST) + timedelta(minutes=sessions[0][0])
                if opened <= now:
                    return opened
        return None

    def _chunks(
        self, inst: Instrument, tf: Timeframe, lo: datetime, hi: datetime
    ) -> Iterator[tuple[datetime, datetime, pl.DataFrame]]:
        """The source's answer for [lo, hi] in pieces, newest first (one piece if it cannot split)."""
        pieces = getattr(self.source, "historical_chunks", None)
        if pieces is None:
            yield lo, hi, self.source.historical(inst, tf, lo, hi)
        else:
            yield from pieces(inst, tf, lo, hi)

    def _fill_back(
        self, inst: Instrument, tf: Timeframe, edge: datetime, need: int, now: datetime, *, newest: bool = False
    ) -> _Fill:
        """Fetch the newest `need` complete candles before `edge`, writing each piece as it arrives.

        Pieces come newest first; each is written and recorded in the ledger (from its oldest
        candle up to the previous piece's, so the covered stretch stays contiguous) before the
        next, so a kill loses at most the piece in flight and the next run goes on from the
        ledger. Asks for a span the calendar says holds `need` candles; if that is short (a data
        gap, an old contract, the sample's older series), looks further back, doubling the span
        a bounded number of times and stopping where the source has nothing older (the sample
        says where its data starts; nothing is asked before the calendar's earliest day).
        With `newest` (a new series), the first piece's top is what the answer vouches for.
        """
        fill = _Fill(edge)
        floor = datetime.combine(cal_mod.EARLIEST_DAY, time(0, 0), IST)
        hi = edge - _US
        lo = max(floor, self.calendar.start_for_count(hi, tf, need))
        span = hi - lo
        top = edge
        have = self._span(inst, tf)
        for _ in range(LATEST_LOOKBACK_DOUBLINGS + 1):
            fill.lo = lo
            ask_lo, ask_hi = (max(lo, have[0]), min(hi, have[1])) if have is not None else (lo, hi)
            if ask_lo >= ask_hi:
                break  # before what the source has
            found = False
            pieces = self._chunks(inst, tf, ask_lo, ask_hi)
            try:
                for _lo, _hi, raw in pieces:
                    fresh = self._complete(raw, tf, now).filter(pl.col("ts") < edge) if not raw.is_empty() else raw
                    if fresh.is_empty():
                        continue
                    found = True
                    fresh = normalize_frame(fresh).tail(need)
                    if newest and fill.writes == 0:
                        covered = self._vouched(tf, fresh["ts"][0], min(now, hi), fresh, now)
                    else:
                        covered = (fresh["ts"][0], top)
                    result, complete, _ = self._save(inst, tf, fresh, self.source.name, covered, now)
                    fill.add(complete, result)
                    top = fresh["ts"][0]
                    need -= fresh.height
                    if need <= 0:
                        return fill
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
            if (not found and fill.writes) or lo <= floor:
                break  # the series starts here
            hi, lo = lo - _US, max(floor, lo - span)
            span *= 2
        return fill

    def fetch_latest(self, symbol: str, timeframe: str | Timeframe = "5m", count: int = 1000) -> pl.DataFrame:
        """The newest `count` completed candles from the source, merged into the cache."""
        return self._fetch_latest(symbol, timeframe, count).candles

    def refresh(self, symbol: str, timeframe: str | Timeframe = "5m", count: int | None = None) -> FetchReport:
        """Bring one series up to now, fetching the least it can.

        A new series gets its newest `count` candles (default `[refresh] count`). A cached one
        is fetched from the open of its last cached session (that session is re-read as an
        overlap, at no extra request) up to now, but only when the coverage ledger does not
        already reach the newest candle that could have closed, so a second run on a closed
        market makes no request at all. If the overlap shows Kite has re-adjusted the past
        (split, bonus), the whole series is downloaded again and swapped in at once.
        With `count`, the covered stretch is back-filled until at least `count` are cached.
        """
        if count is not None:
            count = check_count(count)
        inst, tf = self._fetchable(symbol, timeframe)
        now = self.now()
        # "up to now" is relative to the clock: on a clock set in the past (MDE_NOW, a sample
        # paper session) the cache may already hold later candles, which say nothing of now
        last = self._last_ts(inst, tf, before=now)
        if last is None:
            return self._fetch_latest(symbol, tf, count or self.settings.refresh.count)
        # a manifest moved aside is rebuilt from the files (ledger included) before it is used
        manifest = self.store.restore_manifest(inst, tf, source=self.source.name, now=now)
        last_close = self.calendar.close_time(last, tf)
        # only a fetched range that includes the last candle vouches for what follows it
        ledger = manifest.coverage if manifest else []
        covered_until = max([b for a, b in ledger if a <= last_close] + [last_close])
        expected = self.calendar.latest_close(now, tf)
        report = FetchReport(symbol, inst, tf, None, 0, 0, 0, manifest.rows if manifest else 0, empty_candles())
        if expected is None or covered_until < expected:
            report = self._fetch_tail(symbol, inst, tf, last, now)
        if count:
            report = self._backfill(report, count, now)
        return report

    def _fetch_tail(self, symbol: str, inst: Instrument, tf: Timeframe, last: datetime, now: datetime) -> FetchReport:
        day = last.astimezone(IST).date()
        lo = datetime.combine(day, time(0, 0), IST) + timedelta(minutes=0 if tf.is_daily else self.calendar.anchor(day))
        raw, asked = self._ask(inst, tf, lo, now)
        fresh = self._complete(raw, tf, now)
        cached = self.store.read(inst, tf, lo, now)
        if _adjusted(cached, fresh):
            return self._redownload(symbol, inst, tf, now)
        covered = self._vouched(tf, asked[0], asked[1], fresh, now) if asked is not None else None
        result, complete, _ = self._save(inst, tf, raw, self.source.name, covered, now)
        return FetchReport(
            symbol,
            inst,
            tf,
            asked or (lo, now),
            complete.height,
            result.added,
            result.replaced,
            result.rows,
            complete,
            implausible=result.implausible,
        )

    def _redownload(self, symbol: str, inst: Instrument, tf: Timeframe, now: datetime) -> FetchReport:
        manifest = self.store.manifest(inst, tf)
        starts = [a for a, _ in manifest.coverage] if manifest and manifest.coverage else []
        head = self.store.read(inst, tf).head(1)
        starts += [head["ts"][0]] if not head.is_empty() else []
        lo = datetime.combine(min(starts).astimezone(IST).date(), time(0, 0), IST)
        raw, asked = self._ask(inst, tf, lo, now)
        raw = self._complete(raw, tf, now)
        log.warning("%s %s: the source re-adjusted past candles; downloaded the whole series again", inst, tf)
        a, b = asked or (lo, now)
        vouched = self._vouched(tf, a, b, raw, now)
        result = self.store.replace_series(
            inst, tf, raw, source=self.source.name, coverage=[vouched] if vouched else [], now=now
        )
        return FetchReport(
            symbol,
            inst,
            tf,
            (a, b),
            raw.height,
            result.added,
            result.replaced,
            result.rows,
            raw,
            redownloaded=True,
            implausible=result.implausible,
        )

    def _backfill(self, report: FetchReport, count: int, now: datetime) -> FetchReport:
        """Extend the covered stretch that reaches the newest candle back until it holds `count`
        candles. The ledger, not the files, says where that stretch starts: candles a killed
        run wrote beyond it do not hide the hole between them and the stretch."""
        inst, tf = report.instrument, report.timeframe
        edge, have = self._stretch(inst, tf, now)
        if edge is None or have >= count:
            return report
        fill = self._fill_back(inst, tf, edge, count - have, now)
        if fill.writes == 0:
            return report
        bad = dict(report.implausible)
        for key, n in fill.implausible.items():
            bad[key] = bad.get(key, 0) + n
        return replace(
            report,
            received=report.received + fill.received,
            added=report.added + fill.added,
            rows=fill.rows,
            backfilled=fill.added,
            implausible=bad,
        )

    def _stretch(self, inst: Instrument, tf: Timeframe, now: datetime) -> tuple[datetime | None, int]:
        """The oldest end of the contiguous covered stretch that reaches the newest candle before
        `now`, and how many cached candles lie from there on. Ledger ranges separated only by
        time in which no candle can fall (nights, weekends, holidays) count as contiguous. A
        series whose newest candle the ledger does not cover starts its stretch at that candle."""
        last = self._last_ts(inst, tf, before=now)
        if last is None:
            return None, 0
        manifest = self.store.manifest(inst, tf)
        ranges = union_ranges(manifest.coverage) if manifest else []
        edge = last
        i = next((k for k in range(len(ranges) - 1, -1, -1) if ranges[k][0] <= last <= ranges[k][1]), None)
        if i is not None:
            edge = ranges[i][0]
            for a, b in reversed(ranges[:i]):
                newest_between = self.calendar.latest_close(edge, tf)
                if newest_between is not None and newest_between > b:
                    break  # a candle could close between the two ranges: a hole
                edge = a
        return edge, self.store.read(inst, tf, edge).height

    def refresh_plan(self, symbols: list[str], timeframes: list[str] | None = None) -> list[tuple[str, str]]:
        """(symbol, timeframe) pairs to refresh: explicit timeframes, else `[refresh.multi_tf]`
        for that symbol (the seed's multi_tf_config), else `[refresh] timeframes`."""
        multi_tf, aliases = self.settings.refresh.multi_tf, self.settings.aliases
        for tf in timeframes or []:
            parse(tf)  # a mistyped timeframe fails the whole run before any series is touched
        plan: list[tuple[str, str]] = []
        for symbol in symbols:
            try:
                own = None if timeframes else per_instrument(multi_tf, symbol, aliases)
            except InputError:
                own = None  # a bad symbol fails in its own refresh, beside the good ones
            tfs = timeframes or own or list(self.settings.refresh.timeframes)
            plan.extend((symbol, tf) for tf in tfs)
        return plan

    def refresh_one(self, symbol: str, timeframe: str, count: int | None = None) -> RefreshResult:
        """refresh(), with the error captured instead of raised. After an AuthError every
        later series fails the same way without another request."""
        from .errors import AuthError

        if self._auth_error is not None:  # its own message: the request that failed was another series'
            skipped = AuthError(
                "not fetched: Kite rejected the access token earlier in this run (tokens expire daily at ~06:00 IST): run `mde login`"
            )
            return RefreshResult(symbol, timeframe, None, skipped)
        try:
            return RefreshResult(symbol, timeframe, self.refresh(symbol, timeframe, count), None)
        except AuthError as exc:
            self._auth_error = exc
            return RefreshResult(symbol, timeframe, None, exc)
        except MdeError as exc:
            return RefreshResult(symbol, timeframe, None, exc)

    def refresh_symbols(self, symbols: str | Iterable[str] | None = None) -> list[str]:
        """The symbols a refresh is about: the given ones (each may be comma-separated:
        "NIFTY,BANKNIFTY"), else `[refresh] symbols`; none at all is a ConfigError."""
        if isinstance(symbols, str):
            symbols = [symbols]
        names = [s.strip() for item in symbols or [] for s in item.split(",") if s.strip()]
        names = names or list(self.settings.refresh.symbols)
        if not names:
            raise ConfigError(
                "no symbols to refresh: give --symbols NIFTY BANKNIFTY or set [refresh] symbols in mde.toml"
            )
        return names

    def refresh_many(
        self,
        symbols: str | Iterable[str] | None = None,
        timeframes: str | Iterable[str] | None = None,
        count: int | None = None,
        on_result: Callable[[RefreshResult], None] | None = None,
        *,
        on_plan: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> RefreshReport:
        """Refresh every planned series (`refresh_symbols`, then `refresh_plan`: `[refresh]`
        symbols and timeframes by default); one failing series does not stop the others.
        A bad `count` or timeframe fails the whole run (InputError) before any series.
        `on_plan(plan)` is called once before the first series, `on_result(result)` after each
        (a progress display). The report's `exit_code` is the worst failure's, else 0."""
        if count is not None:
            count = check_count(count)  # one error before any series, not one per series
        names = self.refresh_symbols(symbols)
        started = time_mod.monotonic()
        plan = self.refresh_plan(names, [timeframes] if isinstance(timeframes, str) else list(timeframes or []) or None)
        if on_plan is not None:
            on_plan(plan)
        results = []
        for symbol, tf in plan:
            results.append(self.refresh_one(symbol, tf, count))
            if on_result is not None:
                on_result(results[-1])
        return RefreshReport(results, self.refresh_summary(results, time_mod.monotonic() - started))

    def refresh_summary(self, results: list[RefreshResult], seconds: float) -> dict[str, Any]:
        """What a cron job logs: ok/failed, candles added, requests made, 429s, time taken."""
        stats = self._source.stats if self._source is not None else None
        return {
            "ok": sum(r.error is None for r in results),
            "failed": sum(r.error is not None for r in results),
            "added": sum(r.report.added for r in results if r.report),
            "implausible": sum(sum(r.report.implausible.values()) for r in results if r.report),
            "redownloaded": [
                f"{r.report.instrument} {r.report.timeframe}" for r in results if r.report and r.report.redownloaded
            ],
            "requests": stats.requests if stats else 0,
            "rate_limited": stats.rate_limited if stats else 0,
            "retries": stats.retries if stats else 0,
            "seconds": round(seconds, 3),
            "series": [
                {
                    "symbol": r.symbol,
                    "timeframe": r.timeframe,
                    "ok": r.error is None,
                    "added": r.report.added if r.report else 0,
                    "rows": r.report.rows if r.report else None,
                    "implausible": sum(r.report.implausible.values()) if r.report else 0,
                    "error": r.error.message if r.error else None,
                    "exit_code": r.error.exit_code if r.error else 0,
                }
                for r in results
            ],
        }

    def update_cache(self, symbol: str, timeframe: str | Timeframe = "5m") -> int:
        """Fetch what is missing up to now and merge it; returns the number of candles added."""
        return self.refresh(symbol, timeframe).added

    def _last_ts(self, inst: Instrument, tf: Timeframe, before: datetime | None = None) -> datetime | None:
        tail = self.store.read_tail(inst, tf, 1, before=before)
        return None if tail.is_empty() else tail["ts"][0]

    # -- reading ------------------------------------------------------------------------
    def get_window(
        self, symbol: str, timeframe: str | Timeframe = "5m", limit: int = 50, as_of: datetime | str | None = None
    ) -> pl.DataFrame:
        """The last `limit` candles complete at `as_of` (default now), oldest first.

        No candle with closes_at > as_of is ever returned. A timeframe that is not cached
        is resampled from the largest cached smaller one, under the same rule;
        `read_window` says whether it was (and from which).
        """
        return self.read_window(symbol, timeframe, limit, as_of).candles

    def read_window(
        self, symbol: str, timeframe: str | Timeframe = "5m", limit: int | str = 50, as_of: datetime | str | None = None
    ) -> Window:
        """`get_window`, with the timeframe its candles were built from (None: the source's own).

        The source's own series wins whenever it is cached at all, even when it holds fewer
        candles than `limit` or stops before `as_of`: a window never mixes the source's
        candles with built ones (a built daily close is the last trade, the source's is NSE's
        official close), and the status line says when such a series is stale. Only a
        timeframe with no cached series of its own is built, from one smaller timeframe.
        `limit` may be the text of a number (the HTTP API's query); check_limit says what is wrong.
        """
        limit = check_limit(limit)
        inst, tf = self._series(symbol, timeframe)
        at = self._as_of(as_of)
        tail = self.store.read_tail(inst, tf, limit + 2, before=at)  # empty if nothing is cached
        if not tail.is_empty() or self.store.exists(inst, tf):
            return Window(self._complete(tail, tf, at).tail(limit), tf, None)
        # Not cached: build it from a smaller cached timeframe, the coarsest that can fill the window.
        best: pl.DataFrame | None = None
        best_tf: Timeframe | None = None
        for smaller in sources_for(tf):
            if self.store.exists(inst, smaller):
                window = self._resampled_window(inst, smaller, tf, limit, at)
                if best is None or window.height > best.height:
                    best, best_tf = window, smaller
                if best.height >= limit:
                    break
        if best is None:
            raise self._not_cached(symbol, tf)
        return Window(best, tf, best_tf)

    def history(
        self, symbol: str, timeframe: str | Timeframe = "5m", as_of: datetime | str | None = None
    ) -> pl.DataFrame:
        """Every candle complete at `as_of` (default now), with its `closes_at`, oldest first.

        The whole-series counterpart of get_window, for backtests that read ahead of time
        and then reveal candles by `closes_at`: a timeframe that is not cached is resampled
        from the largest cached smaller one, so each bucket holds only candles it may hold.
        """
        inst, tf = self._series(symbol, timeframe)
        at = self._as_of(as_of)
        base = self._read_from(inst, tf)
        if base is None:
            raise self._not_cached(symbol, tf)
        df = self.store.read(inst, base, None, at, remember=False)  # read once, held by the caller
        if base != tf:
            df = resample(self._complete(df, base, at), tf, self.calendar)
        return with_close(self._complete(df, tf, at), tf, self.calendar)

    def built_from(self, symbol: str, timeframe: str | Timeframe) -> Timeframe | None:
        """The smaller timeframe `history` builds this series from, or None when the series is
        cached as itself (or not at all). The strategy API's `ctx.built_from` reads this."""
        inst, tf = self._series(symbol, timeframe)
        base = self._read_from(inst, tf)
        return base if base is not None and base != tf else None

    def cached_timeframe(self, symbol: str, timeframe: str | Timeframe) -> Timeframe | None:
        """The timeframe a series is read from: itself if cached, else the largest cached
        smaller one it can be resampled from, else None."""
        return self._read_from(*self._series(symbol, timeframe))

    def _read_from(self, inst: Instrument, tf: Timeframe) -> Timeframe | None:
        if self.store.exists(inst, tf):
            return tf
        return next((s for s in sources_for(tf) if self.store.exists(inst, s)), None)

    def _as_of(self, as_of: datetime | str | None) -> datetime:
        if as_of is None:
            return self.now()
        if isinstance(as_of, str):
            return cal_mod.parse_instant(as_of, "as_of")
        # IST, whatever zone it came in: the cache's ts column is Asia/Kolkata and polars
        # refuses to compare datetimes of different zones
        return as_of.astimezone(IST) if as_of.tzinfo else as_of.replace(tzinfo=IST)

    def _resampled_window(
        self, inst: Instrument, src: Timeframe, tf: Timeframe, limit: int, at: datetime
    ) -> pl.DataFrame:
        per_bucket = 375 // src.minutes + 1 if tf.is_daily else tf.minutes // src.minutes
        want = (limit + 2) * per_bucket
        while True:
            base = self.store.read_tail(inst, src, want, before=at)
            base = self._complete(base, src, at)
            out = resample(base, tf, self.calendar)
            reached_start = base.height < want - 2
            if not reached_start and out.height:
                out = out.slice(1)  # the oldest bucket may be cut short by where we started reading
            out = visible(out, tf, self.calendar, at)
            if out.height >= limit or reached_start:
                return out.tail(limit)
            want *= 2

    def _not_cached(self, symbol: str, tf: Timeframe) -> NotCached:
        """What to say when a series is not cached: an unknown symbol is InputError with
        close matches (raised here), a known one NotCached with the command that fetches it."""
        self.check_symbol(symbol)
        try:
            manifest = self.store.manifest(self._offline(symbol), tf)
        except MdeError:
            manifest = None
        if manifest is not None and manifest.rows == 0 and manifest.empty:
            a, b = manifest.empty[0][0], manifest.empty[-1][1]
            return NotCached(
                f"no cached {tf} candles for {symbol}: the source answered none for {a:%Y-%m-%d}..{b:%Y-%m-%d} "
                f"(recorded as empty: not traded yet?)"
            )
        if self.source_name == "sample":
            try:
                span = self.source_span(self._offline(symbol), tf)
            except MdeError:
                span = None
            if span is None:  # advice to refresh would fail the same way: say so instead
                return NotCached(
                    f"no cached {tf} candles for {symbol}, and the sample has none to fetch{self._sample_has(symbol)}"
                )
        return NotCached(
            f"no cached {tf} candles for {symbol}; run `mde refresh --symbols {symbol} --timeframe {tf}` first "
            f"(or mde fetch with a date range)"
        )

    def get_latest_candle(
        self, symbol: str, timeframe: str | Timeframe = "5m", as_of: datetime | str | None = None
    ) -> Candle | None:
        """The newest complete candle at `as_of` (default now), or None if the window is empty."""
        tf = parse(timeframe)
        df = self.get_window(symbol, tf, limit=1, as_of=as_of)
        if df.is_empty():
            return None
        return next(self._candles(symbol, df, tf))

    def _candles(self, symbol: str, df: pl.DataFrame, tf: Timeframe) -> Iterator[Candle]:
        """The rows of a candle frame as `Candle`s (the type a strategy's on_candle receives)."""
        df = with_close(df, tf, self.calendar)
        name = validate_symbol(symbol)
        us = pl.col("ts").dt.epoch("us").alias("ts_us"), pl.col("closes_at").dt.epoch("us").alias("close_us")
        oi = pl.col("oi") if "oi" in df.columns else pl.lit(None, pl.Int64).alias("oi")
        rows = df.select(us[0], "open", "high", "low", "close", "volume", us[1], oi)
        for i, (ts_us, o, h, lo, c, v, close_us, oi_value) in enumerate(rows.iter_rows()):
            yield Candle(name, tf.name, ts_us, o, h, lo, c, v, close_us, i, oi_value)

    def replay(
        self, symbol: str, timeframe: str | Timeframe, start: datetime | date | str, end: datetime | date | str
    ) -> Iterator[Candle]:
        """Cached candles with start <= ts <= end in time order, each only once it is complete."""
        inst, tf = self._series(symbol, timeframe)
        lo = _as_instant(start, "start date")
        hi = _as_instant(end, "end date", end_of_day=True)
        if not self.store.exists(inst, tf):
            raise self._not_cached(symbol, tf)
        df = self._complete(self.store.read(inst, tf, lo, hi), tf, self.now())
        yield from self._candles(symbol, df, tf)

    def status(
        self, symbol: str, timeframe: str | Timeframe = "5m", as_of: datetime | str | None = None
    ) -> SeriesStatus:
        """Is the series up to date at `as_of`? (The window footer and `mde ls` show it.)"""
        inst, tf = self._series(symbol, timeframe)
        at = self._as_of(as_of)
        window = self.get_window(symbol, tf, limit=1, as_of=at)
        last = None if window.is_empty() else window["ts"][0]
        last_close = self.calendar.close_time(last, tf) if last is not None else None
        return SeriesStatus(inst, tf, last, last_close, self.calendar.latest_close(at, tf), at)

    # -- inventory and maintenance ---------------------------------------------------------
    def inventory(self) -> list[SeriesInfo]:
        """Every cached series with its manifest summary, like freqtrade's list-data.

        A series that cannot be summarised (a corrupt manifest or file) is listed with its
        `error` and no figures; the others are listed as usual.
        """
        out = []
        for inst, tf in self.store.list_series():
            size, parts = self.store.size_on_disk(inst, tf), len(self.store.partitions(inst, tf))
            try:
                m = self.store.manifest(inst, tf) or self.store.rebuilt_manifest(inst, tf, "unknown")[0]
            except CacheError as exc:
                out.append(SeriesInfo(inst, tf, "?", None, None, None, None, [], size, parts, error=exc))
                continue
            out.append(
                SeriesInfo(
                    inst,
                    tf,
                    m.source,
                    m.rows,
                    m.first_ts,
                    m.last_ts,
                    m.updated_at,
                    m.coverage,
                    size,
                    parts,
                    m.implausible,
                    m.empty,
                )
            )
        return out

    def import_file(
        self,
        path: str | Path,
        symbol: str,
        timeframe: str | Timeframe,
        origin: str = "import",
        *,
        drop_invalid: bool = False,
    ) -> ImportReport:
        """Load a CSV or the old JSON cache into the Parquet cache (bars outside sessions dropped).

        A typo must not become a series: a symbol must be known (see check_symbol) unless it is
        given as EXCHANGE:SYMBOL, the way to import under a name the instruments list lacks.

        A file with an implausible row is refused whole (InvalidCandles, nothing written) unless
        `drop_invalid`, which drops those rows and counts them by reason."""
        inst, tf = self._series(symbol, timeframe)
        if ":" not in validate_symbol(symbol):
            try:
                self.check_symbol(symbol)
            except InputError as exc:
                raise InputError(
                    f"{exc.message}; to import under a name the instruments list lacks, "
                    f"give it with its exchange: --symbol {inst.key}"
                ) from None
        imported = read_candles(path, tf, drop_invalid=drop_invalid)
        now = self.now()
        df = imported.candles
        covered = (df["ts"][0], self.calendar.close_time(df["ts"][-1], tf)) if not df.is_empty() else None
        result, complete, incomplete = self._save(inst, tf, df, origin, covered, now)
        return ImportReport(
            inst,
            tf,
            imported.rows_read,
            imported.dropped_outside_session,
            incomplete,
            result.added,
            result.replaced,
            result.rows,
            imported.dropped_invalid,
            imported.first_outside,
        )

    def prune(
        self,
        before: date | str,
        symbol: str | None = None,
        timeframe: str | Timeframe | None = None,
        dry_run: bool = False,
    ) -> list[tuple[Instrument, Timeframe, list[str], int]]:
        """Drop candles before a date (whole partitions, or rewrite the one that straddles it)."""
        cutoff = _as_instant(
            before if isinstance(before, (date, datetime)) else cal_mod.parse_date(before, "--before date"), "--before"
        )
        assert cutoff is not None
        # `is not None`: an empty --symbol/--timeframe is an error, never "prune every series".
        want_inst = self.resolve(symbol) if symbol is not None else None
        want_tf = parse(timeframe) if timeframe is not None else None
        now = self.now()
        series = [
            (inst, tf)
            for inst, tf in self.store.list_series()
            if not ((want_inst and inst.key != want_inst.key) or (want_tf and tf != want_tf))
        ]
        # All or nothing: plan every series first (reading every file and manifest it would
        # touch, so a corrupt one stops the prune before anything changed), then apply.
        out = []
        for inst, tf in series:
            parts, dropped = self.store.prune(inst, tf, cutoff, now=now, dry_run=True)
            if parts:
                out.append((inst, tf, parts, dropped))
        if symbol is not None and not series:
            self.check_symbol(symbol)  # a typo is an error with close matches, not "nothing to prune"
        if dry_run:
            return out
        done = [(inst, tf, *self.store.prune(inst, tf, cutoff, now=now)) for inst, tf, _, _ in out]
        return [(inst, tf, parts, dropped) for inst, tf, parts, dropped in done if parts]


def window_payload(symbol: str, timeframe: str | Timeframe, candles: pl.DataFrame) -> dict[str, Any]:
    """The JSON shape of `mde window --format json` and `/api/market_data/window` as Python
    data (a non-finite price is None, as in the JSON). Built independently of `window_body`,
    the bytes both print: tests/test_window_fast_path.py checks that the two agree."""
    tf = parse(timeframe)
    rows = candles.select(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%:z"), "open", "high", "low", "close", "volume"
    ).to_dicts()
    return {"symbol": validate_symbol(symbol), "timeframe": tf.name, "count": len(rows), "candles": finite(rows)}


WINDOW_COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def window_body(symbol: str, timeframe: str | Timeframe, candles: pl.DataFrame) -> bytes:
    """The window as compact JSON bytes: the body of `/api/market_data/window` and exactly
    what `mde window --format json` prints. Valid JSON always: a NaN or infinite price is
    `null` (jsonout.frame_rows).

    polars writes the candles in one call, `ts` as ISO 8601 with the zone's offset
    (`2024-06-14T11:20:00+05:30`): about 30 us for 50 candles, where strftime + to_dicts +
    json.dumps take ~200 us (bench/api.py).
    """
    tf = parse(timeframe)
    frame = (
        candles
        if tuple(candles.columns) == WINDOW_COLUMNS
        else pl.DataFrame([candles.get_column(c) for c in WINDOW_COLUMNS])
    )
    rows = frame_rows(frame)
    head = dumps(
        {"symbol": validate_symbol(symbol), "timeframe": tf.name, "count": frame.height}, separators=(",", ":")
    )
    return f'{head[:-1]},"candles":{rows}}}'.encode()
