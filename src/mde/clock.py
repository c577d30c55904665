"""IST and epoch-microsecond time, defined once.

The hot loops (replay, paper, the broker) keep instants as int microseconds since the epoch
and turn them into dates and datetimes with integer arithmetic: exact, and several times
cheaper than `datetime.fromtimestamp(us / 1e6, IST)` (a float division that can be off by a
microsecond and a zoneinfo lookup per call). NSE has had one offset (+05:30, no DST) since
1945, so the fixed offset is exact for every candle mde can hold. Imports nothing of mde.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
IST_OFFSET_MIN = 330
US_PER_SECOND = 1_000_000
US_PER_MIN = 60 * US_PER_SECOND
US_PER_DAY = 1440 * US_PER_MIN
IST_OFFSET_US = IST_OFFSET_MIN * US_PER_MIN
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_EPOCH_IST = datetime(1970, 1, 1, tzinfo=IST)


def as_us(ts: datetime) -> int:
    """Epoch microseconds of an instant; a naive datetime is read as IST."""
    ts = ts if ts.tzinfo else ts.replace(tzinfo=IST)
    return int(ts.timestamp() * US_PER_SECOND)


def to_ist(ts: datetime) -> datetime:
    """The same instant in IST; a naive datetime is taken to be IST wall clock already (what
    Kite sends, and what a user types)."""
    return ts.replace(tzinfo=IST) if ts.tzinfo is None or ts.utcoffset() is None else ts.astimezone(IST)


def us_to_datetime(us: int) -> datetime:
    """The IST datetime of an epoch-microsecond instant (exact, no float)."""
    return _EPOCH_IST + timedelta(microseconds=us + IST_OFFSET_US)


def ist_day(us: int) -> int:
    """Days since 1970-01-01 in IST for an epoch-microsecond instant."""
    return (us + IST_OFFSET_US) // US_PER_DAY


def ist_date(us: int) -> date:
    return date.fromordinal(_EPOCH_ORD + ist_day(us))


def to_ist_minutes(ts: datetime) -> int:
    """Minutes since 1970-01-01 00:00 IST (a naive datetime is read as IST)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=IST)
    return int(ts.timestamp() // 60) + IST_OFFSET_MIN


def from_ist_minutes(minutes: int) -> datetime:
    return datetime.fromtimestamp((minutes - IST_OFFSET_MIN) * 60, tz=UTC).astimezone(IST)
