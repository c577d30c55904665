"""Where candles come from. A source resolves symbols and answers historical ranges;
the engine does the caching. `sample` is offline (bundled real NSE candles); `kite`
talks to Zerodha's Kite Connect and is imported only when used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import polars as pl

    from ..config import Settings
    from ..symbols import Instrument
    from ..timeframes import Timeframe


@dataclass
class SourceStats:
    """What a run cost: requests made (retries included), retries, 429 answers seen."""

    requests: int = 0
    historical_requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class Source(Protocol):
    name: str  # recorded in each series' manifest; one series never mixes sources
    stats: SourceStats

    def resolve(self, symbol: str) -> Instrument:
        """The instrument a user's symbol stands for, or InputError with close matches."""
        ...

    def historical(self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime) -> pl.DataFrame:
        """Candles with start <= ts <= end, in the cache schema. May include an incomplete last candle."""
        ...

    def clock(self) -> datetime | None:
        """The source's own 'now' (the sample's end of data), or None for the wall clock."""
        ...


def make_source(settings: Settings, kind: str | None = None) -> Source:
    kind = kind or settings.source
    if kind == "sample":
        from .sample import SampleSource

        return SampleSource(aliases=settings.aliases)
    if kind == "kite":
        from .kite import KiteSource  # imports kiteconnect: ~260 ms, so only here

        return KiteSource(settings)
    from ..errors import ConfigError

    raise ConfigError(f"unknown source {kind!r}; use sample or kite")
