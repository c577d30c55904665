"""The rules of a paper session that need no engine: its default name, the timeframe each
symbol trades, its risk limits, and where the journals live."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import InputError
from ..symbols import per_instrument
from ..timeframes import Timeframe, parse
from .risk import RiskLimits


def limits_from(settings: Settings, **flags: float | int | None) -> RiskLimits:
    """`[risk]` in mde.toml, overridden by the flags that were given."""
    merged: dict[str, Any] = {**settings.risk, **{k: v for k, v in flags.items() if v is not None}}
    # RiskLimits refuses 0, negative and non-finite values (0 is not "unlimited": leave the flag out)
    return RiskLimits(
        max_loss_per_day=merged.get("max_loss_per_day"),
        max_position_qty=merged.get("max_position_qty"),
        max_position_notional=merged.get("max_position_notional"),
        max_orders_per_minute=merged.get("max_orders_per_minute"),
    )


def sessions_dir(settings: Settings) -> Path:
    return settings.cache_dir / "_paper"


def default_timeframe(settings: Settings, symbols: Sequence[str]) -> str:
    """One timeframe for all of `symbols`: the first timeframe of their `[refresh.multi_tf]`
    entries, else the first of `[refresh] timeframes`; symbols that disagree are an InputError.

    Symbols and multi_tf keys are compared as instruments, so `NIFTY` finds a `"NSE:NIFTY 50"`
    entry (the seed's logical_alias). For a caller that needs a single timeframe: a paper
    session gives each symbol its own (`symbol_timeframes`).
    """
    multi_tf = settings.refresh.multi_tf
    firsts = {s: tfs[0] for s in symbols if (tfs := per_instrument(multi_tf, s, settings.aliases))}
    if len(set(firsts.values())) > 1:
        listed = ", ".join(f"{s} {tf}" for s, tf in firsts.items())
        raise InputError(
            f"[refresh.multi_tf] gives these symbols different timeframes ({listed}); "
            "one session trades one timeframe: pass --timeframe"
        )
    if firsts:
        return next(iter(firsts.values()))
    return settings.refresh.timeframes[0] if settings.refresh.timeframes else "5m"


def default_name(strategy: str, day: date) -> str:
    """`sma_cross-2024-06-14` for a built-in, `ClassName-2024-06-14` for path/to/file.py:ClassName."""
    from ..strategy import BUILTIN_STRATEGIES

    base = strategy if strategy in BUILTIN_STRATEGIES else strategy.rpartition(":")[2] or strategy
    return f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in base)[-40:]}-{day}"


def symbol_timeframes(
    settings: Settings, symbols: Sequence[str], timeframe: str | Timeframe | Mapping[str, str] | None = None
) -> dict[str, Timeframe]:
    """The timeframe each symbol of a session trades on (its first candle close decides, its
    progress is journaled per series `NIFTY:1m`):

    1. `timeframe` when given (`--timeframe`): one for every symbol, or a mapping symbol ->
       timeframe (symbols it leaves out fall back as below);
    2. else the first timeframe of the symbol's `[refresh.multi_tf]` entry (symbols and keys
       compared as instruments, so `NIFTY` finds `"NSE:NIFTY 50"`);
    3. else `[refresh] timeframes[0]`, else 5m.

    Symbols may disagree: NIFTY on 1m and BANKNIFTY on 15m in one session.
    """
    fallback = settings.refresh.timeframes[0] if settings.refresh.timeframes else "5m"
    if isinstance(timeframe, (str, Timeframe)):
        tf = parse(timeframe)
        return {s: tf for s in symbols}
    given = {k.strip().upper(): v for k, v in (timeframe or {}).items()}
    out = {}
    for sym in symbols:
        own = per_instrument(settings.refresh.multi_tf, sym, settings.aliases)
        out[sym] = parse(given.get(sym.strip().upper()) or (own[0] if own else fallback))
    return out


def meta_timeframes(meta: Mapping[str, str]) -> dict[str, str]:
    """symbol -> timeframe of a journal's meta: `timeframe` is one for all, or a comma list
    beside `symbols` when they differ."""
    symbols = [s for s in meta.get("symbols", "").split(",") if s]
    tfs = (meta.get("timeframe") or "5m").split(",")
    if len(tfs) == 1 or len(tfs) != len(symbols):
        return {s: tfs[0] for s in symbols}
    return dict(zip(symbols, tfs, strict=True))
