"""Live candles from ticks: pure, no I/O, no wall clock (the caller passes `now`).

`CandleBuilder` takes the tick dicts that ``kiteconnect.KiteTicker`` delivers
(``instrument_token``, ``last_price``, ``exchange_timestamp``, ``volume_traded``, ...) and
builds candles of several timeframes on the session grid that `mde.resample` uses (09:15
on regular days; a special session's own anchor), labelled by their start, in the cache
schema (`mde.store.COLUMNS`).

Rules (a wrong number is worse than a missing one: when in doubt a bucket is *tainted* and
the caller fetches it from the historical API):

* **Time** is the tick's exchange timestamp, never its arrival. The client makes it a naive
  *local* datetime with ``datetime.fromtimestamp``; ``.timestamp()`` turns that back into the
  exact epoch on any host time zone, so naive values are read as host-local, aware ones as
  they are (an int/float is epoch seconds). Ticks without one (LTP and quote packets,
  e.g. right after a reconnect before full mode is back) cannot be placed: they are counted
  (`stats.untimed`) and make the series *blind* from its last timed tick until its next one:
  buckets overlapping that span are tainted (a trade only they reported could be a high).
* **Trades.** Every 1m bucket keeps its ticks until it is final. For an instrument with
  volume, the cumulative ``volume_traded`` orders trades exactly (it only grows): a tick is a
  trade of its bucket when its volume is above the *baseline*, the highest volume of the
  series' earlier buckets that day (0 for a day's first bucket: the day's volume starts at 0;
  whether Kite's 09:15 historical candle includes the pre-open volume is not checked here:
  reconciliation will tell). open = price of the trade with the lowest (volume, time,
  arrival), close = of the highest; high/low over the trades; volume = highest volume of the
  bucket - baseline. A tick whose volume equals the baseline is a quote update carrying the
  previous bucket's last price and sets nothing. A bucket without a trade has no candle (as
  Kite's). An index (no ``volume_traded``) has every tick a price; order is (time, arrival):
  two index ticks of the same second are taken in arrival order. Its volume is
  `index_volume` (None: null, as the vendor 1m files; Kite's historical API says 0).
* So **duplicates and out-of-order ticks** inside a bucket that is not final give the same
  candle (for an index: unless they disagree within one second).
* **Final**: a bucket is final once its close time + `grace` (default 2 s) <= `now`. A tick
  of a final 1m bucket is *late*: counted (`stats.late`) and ignored; it never changes an
  emitted candle. Coarser timeframes are built from the final 1m buckets (first open, max,
  min, last close, volume sum: `resample` exactly) and emitted when final themselves.
* **Gaps**: the builder starts disconnected; the caller reports ``connected(at)`` and
  ``disconnected(at)`` (its own clock, the one `now` comes from). Every bucket that overlaps a
  gap widened by `grace` on both sides is tainted, with or without ticks, and so is a bucket
  of a volume series whose baseline tick came before a gap (its volume would swallow the
  trades of the gap). Tainted buckets come out as `Tainted` ranges, never as candles.
* Ticks outside every session (pre-open, after 15:30) are counted (`stats.outside`) and
  ignored; so are tokens the builder was not given (`stats.unknown`).

Memory: the ticks of the open 1m buckets (the current minute, plus the previous one during
its grace) and one running aggregate per open coarser bucket, per series; gaps are kept for
the watermark's day only.

Not thread-safe: KiteTicker calls back on the Twisted reactor thread, so a caller either
runs `add`/`poll` there (a ``LoopingCall`` for `poll`) or hands ticks over through a queue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl

from .calendar import Calendar, nse
from .candles import TS_DTYPE
from .clock import IST, IST_OFFSET_MIN, from_ist_minutes
from .timeframes import Timeframe, parse

__all__ = ["CandleBuilder", "Emitted", "TickStats", "Tainted"]

_EPOCH_DAY = date(1970, 1, 1).toordinal()
_INF = math.inf

# a tick inside a 1m bucket: (volume or -1, exchange epoch seconds, arrival number, price)
_Tick = tuple[int, float, int, float]


@dataclass
class TickStats:
    received: int = 0
    used: int = 0
    late: int = 0  # for a bucket already final
    outside: int = 0  # exchange time outside every session
    untimed: int = 0  # no exchange timestamp (LTP / quote packets)
    unknown: int = 0  # a token the builder does not track


@dataclass(frozen=True)
class Tainted:
    """Buckets [start, end) of one series and timeframe that must come from the historical
    API: `start` is the first bucket's start, `end` the last one's close time."""

    token: int
    timeframe: Timeframe
    start: datetime
    end: datetime


@dataclass
class Emitted:
    """What became final in one `poll`: candles per (token, timeframe name), sorted by ts,
    in the cache schema, and the tainted ranges."""

    candles: dict[tuple[int, str], pl.DataFrame] = field(default_factory=dict)
    tainted: list[Tainted] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.candles or self.tainted)


class _Agg:
    """A coarser bucket being filled from final 1m buckets."""

    __slots__ = ("open", "high", "low", "close", "volume", "tainted", "seen")

    def __init__(self) -> None:
        self.open = self.high = self.low = self.close = 0.0
        self.volume: int | None = None
        self.tainted = False
        self.seen = False

    def add(self, o: float, h: float, low: float, c: float, v: int | None) -> None:
        if not self.seen:
            self.open, self.high, self.low, self.seen = o, h, low, True
        else:
            self.high = max(self.high, h)
            self.low = min(self.low, low)
        self.close = c
        if v is not None:
            self.volume = v if self.volume is None else self.volume + v


class _Series:
    __slots__ = ("token", "minutes", "aggs", "base_day", "base_vol", "base_ts", "last_ts", "blind_from", "gaps")

    def __init__(self, token: int, coarser: Sequence[Timeframe]) -> None:
        self.token = token
        self.minutes: dict[int, list[_Tick]] = {}  # open 1m buckets by IST minute
        self.aggs: dict[str, dict[int, _Agg]] = {tf.name: {} for tf in coarser}
        self.base_day: int | None = None  # the volume baseline: IST day, volume, its tick's time
        self.base_vol = 0
        self.base_ts = -_INF
        self.last_ts = -_INF  # newest exchange time seen
        self.blind_from: float | None = None  # an untimed tick came after last_ts
        self.gaps: list[tuple[float, float]] = []  # blind spans, epoch seconds


def _epoch(value: datetime | float) -> float:
    if isinstance(value, datetime):
        return value.timestamp()  # naive: host-local, the inverse of the client's fromtimestamp
    return float(value)


def _caller_epoch(value: datetime) -> float:
    """The caller's clock: an aware datetime, or a naive one in IST (mde's convention)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=IST)).timestamp()


class CandleBuilder:
    """Candles of `timeframes` for the instrument `tokens`, from ticks; see the module notes.

    `now` at construction: buckets final before it are none of this builder's business
    (their ticks are late). Feed ticks with `add`, report the connection with `connected` /
    `disconnected`, and call `poll(now)` often (every second) to collect what is final.
    """

    def __init__(
        self,
        tokens: Iterable[int],
        timeframes: Iterable[str | Timeframe],
        *,
        now: datetime,
        calendar: Calendar | None = None,
        grace: float = 2.0,
        index_volume: int | None = None,
    ) -> None:
        tfs = sorted({parse(t) for t in timeframes}, key=lambda t: t.minutes)
        if not tfs:
            raise ValueError("no timeframe to build")
        if grace < 0:
            raise ValueError("grace must be >= 0 seconds")
        self.timeframes = tfs
        self.cal = calendar or nse()
        self.grace = float(grace)
        self.index_volume = index_volume
        self.stats = TickStats()
        self._emit_1m = tfs[0].minutes == 1
        self._coarser = [tf for tf in tfs if tf.minutes != 1]
        self._series: dict[int, _Series] = {}
        self._gaps: list[tuple[float, float]] = []  # disconnections, epoch seconds
        self._down_since: float | None = -_INF  # starts disconnected
        self._seq = 0
        self._sessions: dict[int, tuple[tuple[int, int], ...]] = {}
        self._anchors: dict[int, int] = {}
        self._watermark = self._final_before(_caller_epoch(now))  # IST minutes < this are final
        self.track(tokens)

    # -- input -------------------------------------------------------------------------------
    def track(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            if token not in self._series:
                self._series[int(token)] = _Series(int(token), self._coarser)

    def connected(self, at: datetime) -> None:
        if self._down_since is not None:
            self._gaps.append((self._down_since, _caller_epoch(at)))
            self._down_since = None

    def disconnected(self, at: datetime) -> None:
        if self._down_since is None:
            self._down_since = _caller_epoch(at)

    @property
    def is_connected(self) -> bool:
        return self._down_since is None

    def add(self, ticks: Iterable[Mapping[str, Any]]) -> None:
        """Take ticks as KiteTicker parses them (any order; duplicates allowed)."""
        stats = self.stats
        series = self._series
        watermark = self._watermark
        for tick in ticks:
            stats.received += 1
            s = series.get(tick.get("instrument_token"))  # type: ignore[arg-type]
            if s is None:
                stats.unknown += 1
                continue
            stamp = tick.get("exchange_timestamp")
            if stamp is None:
                stats.untimed += 1
                if s.blind_from is None:
                    s.blind_from = s.last_ts
                continue
            epoch = _epoch(stamp)
            if s.blind_from is not None:
                s.gaps.append((s.blind_from, epoch))
                s.blind_from = None
            if epoch > s.last_ts:
                s.last_ts = epoch
            minute = int(epoch // 60) + IST_OFFSET_MIN
            if minute < watermark:
                stats.late += 1
                continue
            if not self._in_session(minute):
                stats.outside += 1
                continue
            volume = tick.get("volume_traded")
            self._seq += 1
            item = (-1 if volume is None else int(volume), epoch, self._seq, float(tick["last_price"]))
            bucket = s.minutes.get(minute)
            if bucket is None:
                s.minutes[minute] = [item]
            else:
                bucket.append(item)
            stats.used += 1

    # -- output ------------------------------------------------------------------------------
    @property
    def watermark(self) -> datetime:
        """Buckets that close at or before this are final."""
        return from_ist_minutes(self._watermark)

    def poll(self, now: datetime) -> Emitted:
        """Everything that became final by `now` (close time + grace <= now)."""
        new = self._final_before(_caller_epoch(now))
        out = Emitted()
        old = self._watermark
        if new <= old:
            return out
        self._watermark = new
        gap_minutes = self._gap_minutes(
            old, new, self._gaps + ([(self._down_since, _INF)] if self._down_since is not None else []), self.grace
        )
        rows: dict[tuple[int, str], list[tuple[int, float, float, float, float, int | None]]] = {}
        tainted: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for s in self._series.values():
            blind = s.gaps + ([(s.blind_from, _INF)] if s.blind_from is not None else [])
            todo = {m for m in s.minutes if m < new} | gap_minutes
            if blind:
                todo |= self._gap_minutes(old, new, blind, 0.0)
            for minute in sorted(todo):
                ticks = s.minutes.pop(minute, [])
                candle, bad = self._finish_minute(s, minute, ticks, blind)
                if self._emit_1m:
                    if bad:
                        tainted.setdefault((s.token, "1m"), []).append((minute, minute + 1))
                    elif candle is not None:
                        rows.setdefault((s.token, "1m"), []).append((minute, *candle))
                for tf in self._coarser:
                    start = self._bucket(minute, tf)
                    agg = s.aggs[tf.name].get(start)
                    if agg is None:
                        agg = s.aggs[tf.name][start] = _Agg()
                    if bad:
                        agg.tainted = True
                    elif candle is not None:
                        agg.add(*candle)
            for tf in self._coarser:
                aggs = s.aggs[tf.name]
                for start in sorted(aggs):
                    close = self.cal.close_minute(start, tf)
                    if close > new:
                        break
                    agg = aggs.pop(start)
                    if agg.tainted or self._overlaps(start, close, blind):
                        tainted.setdefault((s.token, tf.name), []).append((start, close))
                    elif agg.seen:
                        rows.setdefault((s.token, tf.name), []).append(
                            (start, agg.open, agg.high, agg.low, agg.close, agg.volume)
                        )
        out.candles = _frames(rows)
        # Gaps that ended before the watermark's day can no longer matter: every bucket of an
        # earlier day is final, and a volume baseline starts afresh each day. Memory stays flat.
        day_start = ((new // 1440) * 1440 - IST_OFFSET_MIN) * 60.0
        self._gaps = [gap for gap in self._gaps if gap[1] + self.grace >= day_start]
        for s in self._series.values():
            if s.gaps and s.gaps[0][1] < day_start:
                s.gaps = [gap for gap in s.gaps if gap[1] >= day_start]
        by_name = {tf.name: tf for tf in self.timeframes}
        for (token, name), ranges in tainted.items():
            merged: list[list[int]] = []
            for start, end in ranges:
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            out.tainted += [Tainted(token, by_name[name], from_ist_minutes(a), from_ist_minutes(b)) for a, b in merged]
        return out

    # -- internals ---------------------------------------------------------------------------
    def _final_before(self, now_epoch: float) -> int:
        """The IST minute W such that every 1m bucket starting before W is final at now."""
        return int((now_epoch - self.grace) // 60) + IST_OFFSET_MIN

    def _day_sessions(self, day: int) -> tuple[tuple[int, int], ...]:
        found = self._sessions.get(day)
        if found is None:
            d = date.fromordinal(_EPOCH_DAY + day)
            found = self._sessions[day] = self.cal.sessions(d)
            self._anchors[day] = self.cal.anchor(d)
        return found

    def _in_session(self, minute: int) -> bool:
        day, m = divmod(minute, 1440)
        return any(a <= m < b for a, b in self._day_sessions(day))

    def _bucket(self, minute: int, tf: Timeframe) -> int:
        day, m = divmod(minute, 1440)
        if tf.is_daily:
            return day * 1440
        self._day_sessions(day)
        anchor = self._anchors[day]
        return day * 1440 + anchor + (m - anchor) // tf.minutes * tf.minutes

    def _overlaps(self, start_min: int, end_min: int, extra: list[tuple[float, float]]) -> bool:
        """Does the trading part of [start, end) (IST minutes) touch a gap widened by grace?
        (A daily bucket starts at 00:00 but trades from the first session's start.)"""
        sessions = self._day_sessions(start_min // 1440)
        if sessions:
            start_min = max(start_min, start_min // 1440 * 1440 + sessions[0][0])
        a = (start_min - IST_OFFSET_MIN) * 60.0
        b = (end_min - IST_OFFSET_MIN) * 60.0
        return self._touches(a, b, extra)

    def _touches(self, a: float, b: float, blind: list[tuple[float, float]]) -> bool:
        """Does [a, b) (epoch seconds) touch a disconnection (widened by grace: the caller's
        clock against exchange time) or one of the series' blind spans (exchange time: exact)?"""
        g = self.grace
        if self._down_since is not None and self._down_since - g < b:
            return True
        return any(lo - g < b and hi + g > a for lo, hi in self._gaps) or any(lo < b and hi > a for lo, hi in blind)

    def _gap_minutes(self, old: int, new: int, gaps: list[tuple[float, float]], g: float) -> set[int]:
        """Session minutes in [old, new) that touch one of `gaps` widened by `g` seconds."""
        found: set[int] = set()
        for lo, hi in gaps:
            first = old if lo == -_INF else max(old, int((lo - g) // 60) + IST_OFFSET_MIN)
            # a minute m touches (lo - g, hi + g) iff floor((lo - g) / 60) <= m - 330 < ceil((hi + g) / 60)
            last = new if hi == _INF else min(new, math.ceil((hi + g) / 60) + IST_OFFSET_MIN)
            if last <= first:
                continue
            for day in range(first // 1440, (last - 1) // 1440 + 1):
                for s_start, s_end in self._day_sessions(day):
                    found.update(range(max(first, day * 1440 + s_start), min(last, day * 1440 + s_end)))
        return found

    def _finish_minute(
        self, s: _Series, minute: int, ticks: list[_Tick], blind: list[tuple[float, float]]
    ) -> tuple[tuple[float, float, float, float, int | None] | None, bool]:
        """The 1m candle of `ticks` (None: no trade) and whether the bucket is tainted."""
        bad = self._overlaps(minute, minute + 1, blind)
        volumed = [t for t in ticks if t[0] >= 0]
        if volumed:
            day = minute // 1440
            if s.base_day != day:  # the day's cumulative volume starts at 0
                s.base_day, s.base_vol = day, 0
                s.base_ts = (day * 1440 + self._day_sessions(day)[0][0] - IST_OFFSET_MIN) * 60.0
            base, base_ts = s.base_vol, s.base_ts
            # the baseline is only as good as the stretch from its tick to this bucket's end
            if not bad and self._touches(base_ts, (minute + 1 - IST_OFFSET_MIN) * 60.0, blind):
                bad = True
            top = max(t[0] for t in volumed)
            if top >= base:
                confirm = max(t[1] for t in volumed if t[0] == top)
                s.base_vol, s.base_ts = top, (confirm if top > base else max(base_ts, confirm))
            trades = [t for t in volumed if t[0] > base]
            if bad or not trades:
                return None, bad
            prices = [t[3] for t in trades]
            return (min(trades)[3], max(prices), min(prices), max(trades)[3], top - base), False
        if bad or not ticks:
            return None, bad
        order = [(t[1], t[2], t[3]) for t in ticks]
        prices = [t[3] for t in ticks]
        return (min(order)[2], max(prices), min(prices), max(order)[2], self.index_volume), False


def _frames(
    rows: dict[tuple[int, str], list[tuple[int, float, float, float, float, int | None]]],
) -> dict[tuple[int, str], pl.DataFrame]:
    """One frame per (token, timeframe), in the cache schema. Built as one frame per
    timeframe and split by token: a frame per series costs ~0.4 ms, which for hundreds of
    instruments a minute would cost more than the ticks themselves."""
    out: dict[tuple[int, str], pl.DataFrame] = {}
    names = sorted({name for _, name in rows})
    for name in names:
        keys = [key for key in rows if key[1] == name]
        tokens = [token for token, _ in keys for _ in rows[(token, name)]]
        items = [item for key in keys for item in rows[key]]
        starts, o, h, low, c, v = zip(*items, strict=True)
        frame = pl.DataFrame(
            {
                "_token": pl.Series(tokens, dtype=pl.Int64),
                "ts": pl.Series([(m - IST_OFFSET_MIN) * 60_000_000 for m in starts], dtype=pl.Int64).cast(TS_DTYPE),
                "open": pl.Series(o, dtype=pl.Float64),
                "high": pl.Series(h, dtype=pl.Float64),
                "low": pl.Series(low, dtype=pl.Float64),
                "close": pl.Series(c, dtype=pl.Float64),
                "volume": pl.Series(v, dtype=pl.Int64),
            }
        )
        if len(keys) == 1:
            out[keys[0]] = frame.drop("_token")
            continue
        for (token,), part in frame.partition_by(
            "_token", as_dict=True, include_key=False, maintain_order=True
        ).items():
            out[(int(token), name)] = part
    return out
