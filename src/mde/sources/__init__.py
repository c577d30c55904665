"""Where candles come from. A source resolves symbols and answers historical ranges;
the engine does the caching. `sample` is offline (bundled real NSE candles); `kite`
talks to Zerodha's Kite Connect and is imported only when used.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import polars as pl

    from ..config import Settings
    from ..symbols import Instrument
    from ..timeframes import Timeframe


class Source(Protocol):
    name: str  # recorded in each series' manifest; one series never mixes sources

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
