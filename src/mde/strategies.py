"""The built-in strategies moved to `mde.strategy.builtins`; this name stays importable for code
written against it (`from mde.strategies import SmaCross`)."""

from __future__ import annotations

from .strategy.builtins import OpeningRangeBreakout, SmaCross, check_size

__all__ = ["OpeningRangeBreakout", "SmaCross", "check_size"]
