"""mde: the Market Data Engine. A Parquet candle cache for NSE/NFO via Zerodha Kite Connect.

Public names are imported lazily so that `mde --help` does not pay for polars. What they are:

- the cache: `MarketDataEngine` (and the `Window` it reads), `Settings`, `load_settings`;
- strategies (`docs/strategy-api.md`): `Strategy`, the `Context` it is handed, `Candle`,
  `Indicator` / `PerSymbolIndicator`, `Order`, `Note`;
- running them: `run_replay` -> `ReplayResult`; `StrategyRunner` over `SeriesData` with a
  `SimBroker`, `load_strategy`; the typed seams `CandleReader` and `ReplayEngine`;
- the errors (`MdeError` and its children; `exit_code` is the CLI's exit status).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "AuthError",
    "CacheError",
    "Candle",
    "CandleReader",
    "ConfigError",
    "Context",
    "Indicator",
    "InputError",
    "MarketDataEngine",
    "MdeError",
    "NotCached",
    "Note",
    "Order",
    "PaperEngine",
    "PerSymbolIndicator",
    "RateLimited",
    "ReplayEngine",
    "ReplayResult",
    "SeriesData",
    "SessionBusy",
    "SessionResult",
    "Settings",
    "SimBroker",
    "SourceError",
    "SourceUnavailable",
    "Strategy",
    "StrategyError",
    "StrategyRunner",
    "Window",
    "load_settings",
    "load_strategy",
    "run_replay",
    "run_session",
]

# public name -> (module, attribute): imported on first use (`__getattr__`)
_WHERE = {
    "MarketDataEngine": ("mde.engine", "MarketDataEngine"),
    "Window": ("mde.engine", "Window"),
    "Candle": ("mde.candles", "Candle"),
    "Settings": ("mde.config", "Settings"),
    "load_settings": ("mde.config", "load"),
    "Order": ("mde.broker", "Order"),
    "SimBroker": ("mde.broker", "SimBroker"),
    "CandleReader": ("mde.protocols", "CandleReader"),
    "ReplayEngine": ("mde.protocols", "ReplayEngine"),
    "Strategy": ("mde.strategy.api", "Strategy"),
    "Context": ("mde.strategy.api", "Context"),
    "Indicator": ("mde.strategy.api", "Indicator"),
    "PerSymbolIndicator": ("mde.strategy.api", "PerSymbolIndicator"),
    "Note": ("mde.strategy.api", "Note"),
    "load_strategy": ("mde.strategy.loading", "load_strategy"),
    "StrategyRunner": ("mde.strategy.runner", "StrategyRunner"),
    "SeriesData": ("mde.strategy.runner", "SeriesData"),
    "run_replay": ("mde.replay", "run_replay"),
    "ReplayResult": ("mde.runs", "ReplayResult"),
    "PaperEngine": ("mde.paper.engine", "PaperEngine"),
    "run_session": ("mde.paper.engine", "run_session"),
    "SessionResult": ("mde.paper.book", "SessionResult"),
    **{
        name: ("mde.errors", name)
        for name in (
            "AuthError",
            "CacheError",
            "ConfigError",
            "InputError",
            "MdeError",
            "NotCached",
            "RateLimited",
            "SessionBusy",
            "SourceError",
            "SourceUnavailable",
            "StrategyError",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module, attr = _WHERE[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'mde' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from mde.broker import Order, SimBroker
    from mde.candles import Candle
    from mde.config import Settings, load as load_settings
    from mde.engine import MarketDataEngine, Window
    from mde.errors import (
        AuthError,
        CacheError,
        ConfigError,
        InputError,
        MdeError,
        NotCached,
        RateLimited,
        SessionBusy,
        SourceError,
        SourceUnavailable,
        StrategyError,
    )
    from mde.paper.book import SessionResult
    from mde.paper.engine import PaperEngine, run_session
    from mde.protocols import CandleReader, ReplayEngine
    from mde.replay import run_replay
    from mde.runs import ReplayResult
    from mde.strategy.api import Context, Indicator, Note, PerSymbolIndicator, Strategy
    from mde.strategy.loading import load_strategy
    from mde.strategy.runner import SeriesData, StrategyRunner
