"""Candle timeframes: the names users type, Kite's interval names, and how each is stored.

A candle is labelled by its start (`ts`). It closes at `ts + timeframe`, clipped to the end
of its session (the 15:15 60m candle closes at 15:30); `calendar.close_time` computes that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .errors import InputError


@dataclass(frozen=True, slots=True)
class Timeframe:
    name: str  # canonical: "1m" ... "60m", "1d"
    minutes: int  # 1440 for "1d"
    kite_interval: str  # the interval name Kite's historical API takes
    partition: str  # "month" | "year" | "all": one Parquet file per period

    @property
    def is_daily(self) -> bool:
        return self.name == "1d"

    @property
    def length(self) -> timedelta:
        return timedelta(minutes=self.minutes)

    def __str__(self) -> str:
        return self.name


_ALL = (
    Timeframe("1m", 1, "minute", "month"),
    Timeframe("3m", 3, "3minute", "month"),
    Timeframe("5m", 5, "5minute", "year"),
    Timeframe("10m", 10, "10minute", "year"),
    Timeframe("15m", 15, "15minute", "year"),
    Timeframe("30m", 30, "30minute", "year"),
    Timeframe("60m", 60, "60minute", "year"),
    Timeframe("1d", 1440, "day", "all"),
)
TIMEFRAMES: dict[str, Timeframe] = {tf.name: tf for tf in _ALL}
VALID_NAMES = tuple(TIMEFRAMES)

_ALIASES: dict[str, str] = {tf.kite_interval: tf.name for tf in _ALL}
_ALIASES.update({"1h": "60m", "1hour": "60m", "60min": "60m", "d": "1d", "1day": "1d", "daily": "1d"})
_ALIASES.update({f"{tf.minutes}min": tf.name for tf in _ALL if not tf.is_daily})
_ALIASES["1minute"] = "1m"


def parse(value: str | Timeframe) -> Timeframe:
    """Accept `5m`, `1h`, Kite's `5minute`/`minute`/`day`; anything else is an InputError."""
    if isinstance(value, Timeframe):
        return value
    key = str(value).strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return TIMEFRAMES[key]
    except KeyError:
        raise InputError(
            f"unknown timeframe {value!r}; use one of {', '.join(VALID_NAMES)} (or 1h, or Kite's names like 5minute)"
        ) from None


def sources_for(target: Timeframe) -> list[Timeframe]:
    """Smaller timeframes that `target` can be built from, largest (cheapest) first."""
    if target.is_daily:
        return [tf for tf in reversed(_ALL) if not tf.is_daily]
    return [tf for tf in reversed(_ALL) if tf.minutes < target.minutes and target.minutes % tf.minutes == 0]


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in '1s', '500ms', '1m' or a bare number of seconds (a clock step, not a timeframe)."""
    raw = text.strip().lower()
    num = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(num) :] or "s"
    try:
        value = float(num) * _DURATION_UNITS[unit]
    except (ValueError, KeyError):
        raise InputError(f"{what} {text!r} is not a duration like 1s, 500ms or 1m") from None
    if not value > 0:
        raise InputError(f"{what} must be more than 0 seconds")
    if not value <= 86400:  # inf and nan too
        raise InputError(f"{what} {text!r} is longer than a day")
    return value
