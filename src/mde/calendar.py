"""The NSE trading calendar: which minutes of which days are a session.

Read from `data/nse_calendar.toml` inside the package (holidays 2023-2026 and special
sessions such as Muhurat evenings and Saturday DR drills); users may edit that file.
Days in years the file does not cover are assumed to be regular weekday sessions.

Times are handled as integer "IST minutes": minutes since 1970-01-01 00:00 IST. IST has
no daylight saving, so a day is always 1440 of them and the arithmetic is exact.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources

from .clock import IST, from_ist_minutes, to_ist_minutes
from .errors import ConfigError, InputError
from .timeframes import Timeframe

_EPOCH_DAY = date(1970, 1, 1).toordinal()

# No NSE candle is older (NSE opened in 1994): how far back a count of candles is looked for.
EARLIEST_DAY = date(1990, 1, 1)

Session = tuple[int, int]  # (start, end) minutes after local midnight, end exclusive


def _hhmm(text: str, where: str) -> int:
    try:
        t = time.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"bad time {text!r} in {where}; use HH:MM") from None
    return t.hour * 60 + t.minute


@dataclass(frozen=True)
class Calendar:
    regular: Session = (9 * 60 + 15, 15 * 60 + 30)
    holidays: frozenset[date] = frozenset()
    special: dict[date, tuple[Session, ...]] = field(default_factory=dict)
    covered_years: frozenset[int] = frozenset()

    # -- days -----------------------------------------------------------------
    def sessions(self, day: date) -> tuple[Session, ...]:
        """The sessions of `day` in time order; empty on weekends and holidays."""
        if day in self.special:
            return self.special[day]
        if day.weekday() >= 5 or day in self.holidays:
            return ()
        return (self.regular,)

    def is_trading_day(self, day: date) -> bool:
        return bool(self.sessions(day))

    def anchor(self, day: date) -> int:
        """Start of the day's first session: the grid that intraday buckets align to (09:15)."""
        s = self.sessions(day)
        return s[0][0] if s else self.regular[0]

    def session_end(self, day: date, minute: int) -> int | None:
        """End of the session that contains `minute` of `day`, or None outside every session."""
        for start, end in self.sessions(day):
            if start <= minute < end:
                return end
        return None

    def day_close(self, day: date) -> int:
        """End of the day's last session (when a daily candle is complete)."""
        s = self.sessions(day)
        return s[-1][1] if s else self.regular[1]

    # -- candles --------------------------------------------------------------
    def close_time(self, ts: datetime, timeframe: Timeframe) -> datetime:
        """When the candle labelled `ts` is complete: ts + timeframe, clipped to its session's end."""
        return from_ist_minutes(self.close_minute(to_ist_minutes(ts), timeframe))

    def close_minute(self, ts_min: int, timeframe: Timeframe) -> int:
        day_index, minute = divmod(ts_min, 1440)
        day = date.fromordinal(_EPOCH_DAY + day_index)
        if timeframe.is_daily:
            return day_index * 1440 + self.day_close(day)
        end = ts_min + timeframe.minutes
        session_end = self.session_end(day, minute)
        if session_end is not None:
            end = min(end, day_index * 1440 + session_end)
        return end

    def latest_close(self, now: datetime, timeframe: Timeframe, lookback_days: int = 15) -> datetime | None:
        """Close time of the newest candle that a complete series would have at `now`."""
        now_min = to_ist_minutes(now)
        day_index, minute = divmod(now_min, 1440)
        for back in range(lookback_days + 1):
            d_index = day_index - back
            day = date.fromordinal(_EPOCH_DAY + d_index)
            sessions = self.sessions(day)
            if not sessions:
                continue
            if timeframe.is_daily:
                close = d_index * 1440 + self.day_close(day)
                if close <= now_min:
                    return from_ist_minutes(close)
                continue
            best = None
            anchor = sessions[0][0]
            for start, end in sessions:
                # candles sit on the anchor grid; a session that starts off the grid (11:30 on a
                # DR day) begins inside the grid bucket that resample labels 11:15
                first = anchor + (start - anchor) // timeframe.minutes * timeframe.minutes
                k = first
                while k < end:
                    close = d_index * 1440 + min(k + timeframe.minutes, end)
                    if close <= now_min:
                        best = close
                    k += timeframe.minutes
            if best is not None:
                return from_ist_minutes(best)
        return None

    def candles_per_day(self, day: date, timeframe: Timeframe) -> int:
        if timeframe.is_daily:
            return 1 if self.sessions(day) else 0
        tf, anchor = timeframe.minutes, self.anchor(day)  # grid buckets each session touches
        return sum((end - 1 - anchor) // tf - (start - anchor) // tf + 1 for start, end in self.sessions(day))

    def start_for_count(self, now: datetime, timeframe: Timeframe, count: int, margin_days: int = 3) -> datetime:
        """A start time far enough back that [start, now] holds at least `count` candles.

        Walks back over sessions and adds a few days of margin for data gaps; the caller
        keeps only the newest `count` candles.
        """
        day = now.astimezone(IST).date()
        total = 0
        while total < count and day > EARLIEST_DAY:
            total += self.candles_per_day(day, timeframe)
            day -= timedelta(days=1)
        day = max(EARLIEST_DAY, day - timedelta(days=margin_days))
        return datetime.combine(day, time(0, 0), IST)


def load_calendar(text: str, where: str = "nse_calendar.toml") -> Calendar:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    regular = raw.get("regular", {})
    reg = (_hhmm(regular.get("open", "09:15"), where), _hhmm(regular.get("close", "15:30"), where))
    holidays: set[date] = set()
    years: set[int] = set()
    for year, days in raw.get("holidays", {}).items():
        years.add(int(year))
        holidays.update(date.fromisoformat(d) for d in days)
    special: dict[date, tuple[Session, ...]] = {}
    for entry in raw.get("special", []):
        day = date.fromisoformat(str(entry["date"]))
        sessions = tuple(sorted((_hhmm(a, where), _hhmm(b, where)) for a, b in entry["sessions"]))
        special[day] = sessions
    return Calendar(regular=reg, holidays=frozenset(holidays), special=special, covered_years=frozenset(years))


@lru_cache(maxsize=1)
def nse() -> Calendar:
    """The calendar shipped with mde."""
    text = resources.files("mde").joinpath("data/nse_calendar.toml").read_text(encoding="utf-8")
    return load_calendar(text)


FIRST_YEAR, LAST_YEAR = 1900, 2199  # dates and instants a user may give (date.min/max overflow in arithmetic)


def parse_instant(text: str, what: str = "time", *, check_years: bool = True) -> datetime:
    """ISO 8601 instant; a naive one is IST. `2024-06-14T10:30` and `...+05:30` both work.
    `check_years=False`: the caller bounds it itself (MDE_NOW has a narrower range)."""
    raw = str(text).strip()
    try:
        value = datetime.fromisoformat(raw.replace(" ", "T", 1) if len(raw) > 10 else raw)
    except ValueError:
        raise InputError(f"bad {what} {text!r}; use ISO 8601 like 2024-06-14T10:30:00+05:30") from None
    if check_years and not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise InputError(f"bad {what} {text!r}; mde handles the years {FIRST_YEAR} to {LAST_YEAR}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=IST)
    return value.astimezone(IST)


def parse_date(text: str | date, what: str = "date") -> date:
    if isinstance(text, datetime):
        return text.astimezone(IST).date()
    if isinstance(text, date):
        return text
    try:
        value = date.fromisoformat(str(text).strip())
    except ValueError:
        raise InputError(f"bad {what} {text!r}; use YYYY-MM-DD") from None
    if not FIRST_YEAR <= value.year <= LAST_YEAR:  # arithmetic on days must not leave the calendar
        raise InputError(f"bad {what} {text!r}; mde handles the years {FIRST_YEAR} to {LAST_YEAR}")
    return value


def now_ist() -> datetime:
    return datetime.now(IST)
