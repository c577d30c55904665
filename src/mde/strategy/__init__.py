"""Strategies and the runner that drives them, the same code for `mde replay` and `mde paper`.

The package, from what a strategy author reads to what only mde calls (each module imports
only the ones before it):

- `api`: `Strategy`, the `Context` a strategy is handed (`ctx`), `Candle`, `Indicator`,
  `Order`, `Note`, and `ContextHost`, the protocol of what `Context` asks its runner.
- `loading`: a strategy from a name or `file.py:Class` (`load_strategy`), `--param` text
  (`parse_params`), `build`, and the one-line StrategyError of a strategy that raises.
- `runner`: `StrategyRunner` and its hot loop over `SeriesData`, `merge_events`.
- `builtins`: `sma_cross` and `orb`.

Every name is re-exported here, so `from mde.strategy import Context, StrategyRunner` keeps working.
"""

from __future__ import annotations

# The time, column and error helpers the single module mde/strategy.py imported stay importable
# from here (`X as X`: an explicit re-export); other code and tests import some of them so.
from ..broker import Order, SimBroker as SimBroker
from ..clock import (
    IST_OFFSET_MIN as IST_OFFSET_MIN,
    US_PER_MIN as US_PER_MIN,
    as_us as as_us,
    ist_day as ist_day,
    us_to_datetime as us_to_datetime,
)
from ..columns import CODES as CODES, grow as grow, view as view
from ..errors import InputError as InputError, MdeError as MdeError, StrategyError as StrategyError
from ..timeframes import Timeframe as Timeframe, parse as parse
from .api import (
    _PARAM_TYPES as _PARAM_TYPES,
    PREFIX_CHECK,
    Candle,
    Context,
    ContextHost,
    Indicator,
    Note,
    PerSymbolIndicator,
    SeriesView,
    Strategy,
    _count as _count,
    coerce_param,
)
from .loading import BUILTIN_STRATEGIES, build, describe, load_strategy, log as log, parse_params, strategy_error
from .runner import (
    CandleReader,
    RunOutcome,
    SeriesData,
    StrategyRunner,
    _candle_of as _candle_of,
    _minute as _minute,
    merge_events,
)

__all__ = [
    "BUILTIN_STRATEGIES",
    "PREFIX_CHECK",
    "Candle",
    "CandleReader",
    "Context",
    "ContextHost",
    "Indicator",
    "Note",
    "Order",
    "PerSymbolIndicator",
    "RunOutcome",
    "SeriesData",
    "SeriesView",
    "Strategy",
    "StrategyRunner",
    "build",
    "coerce_param",
    "describe",
    "load_strategy",
    "merge_events",
    "parse_params",
    "strategy_error",
]
