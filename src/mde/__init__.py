"""mde: the Market Data Engine. A Parquet candle cache for NSE/NFO via Zerodha Kite Connect.

Public names are imported lazily so that `mde --help` does not pay for polars.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "AuthError",
    "CacheError",
    "Candle",
    "ConfigError",
    "InputError",
    "MarketDataEngine",
    "MdeError",
    "NotCached",
    "RateLimited",
    "Settings",
    "SourceError",
    "SourceUnavailable",
    "Strategy",
    "StrategyError",
    "StrategyRunner",
    "load_settings",
    "run_replay",
]

_WHERE = {
    "MarketDataEngine": ("mde.engine", "MarketDataEngine"),
    "Candle": ("mde.engine", "Candle"),
    "Settings": ("mde.config", "Settings"),
    "load_settings": ("mde.config", "load"),
    "Strategy": ("mde.strategy", "Strategy"),
    "StrategyRunner": ("mde.strategy", "StrategyRunner"),
    "run_replay": ("mde.replay", "run_replay"),
    **{name: ("mde.errors", name) for name in (
        "AuthError", "CacheError", "ConfigError", "InputError", "MdeError", "NotCached",
        "RateLimited", "SourceError", "SourceUnavailable", "StrategyError",
    )},
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module, attr = _WHERE[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'mde' has no attribute {name!r}")


if TYPE_CHECKING:
    from .config import Settings
    from .config import load as load_settings
    from .engine import Candle, MarketDataEngine
    from .replay import run_replay
    from .strategy import Strategy, StrategyRunner
    from .errors import (
        AuthError, CacheError, ConfigError, InputError, MdeError, NotCached, RateLimited, SourceError, SourceUnavailable,
        StrategyError,
    )
