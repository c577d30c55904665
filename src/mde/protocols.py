"""What the layers above the engine ask of it, as small protocols (typed seams).

`StrategyRunner` reads candles through a `CandleReader`; `run_replay` needs a `ReplayEngine`
(the reader, plus symbol resolution, the store's ledger and the clock). `MarketDataEngine`
is both; a test or another data layer can pass anything of the same shape, and mypy checks
that the callers ask for nothing else. Imports nothing of mde at run time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import polars as pl

    from .calendar import Calendar
    from .config import Settings
    from .store import CandleStore, Range
    from .symbols import Instrument
    from .timeframes import Timeframe

__all__ = ["CandleReader", "ReplayEngine"]


class CandleReader(Protocol):
    """A series' candles complete at `as_of` (with `closes_at`, oldest first), and the smaller
    timeframe they were built from (None: the source's own). The runner reads them lazily, for
    the windows of other timeframes and symbols a strategy asks for."""

    def history(
        self, symbol: str, timeframe: str | Timeframe = ..., as_of: datetime | str | None = None
    ) -> pl.DataFrame: ...

    def built_from(self, symbol: str, timeframe: str | Timeframe) -> Timeframe | None: ...


class ReplayEngine(CandleReader, Protocol):
    """What `run_replay` calls: the reader, plus the clock, symbol resolution, the cache's
    ledger (to name the sessions a range lacks) and the settings (costs, margins files)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> CandleStore: ...

    @property
    def calendar(self) -> Calendar: ...

    @property
    def source_name(self) -> str: ...

    def now(self) -> datetime: ...

    def resolve(self, symbol: str) -> Instrument: ...

    def check_symbol(self, symbol: str) -> None: ...

    def cached_timeframe(self, symbol: str, timeframe: str | Timeframe) -> Timeframe | None: ...

    def source_span(self, inst: Instrument, tf: Timeframe, source: str | None = None) -> Range | None: ...

    def _sample_has(self, symbol: str) -> str:
        """The sample's symbols/timeframes, for the message of a sample that has none to fetch."""
        ...


if TYPE_CHECKING:  # mypy proves here that the engine has every member the protocols name
    from .engine import MarketDataEngine

    def _the_engine_is_a_replay_engine(engine: MarketDataEngine) -> ReplayEngine:
        return engine
