"""Buying power, lots and ticks: what an order must satisfy before the simulated broker fills it.

* Margins come from `data/margins.toml`, a dated, editable table of rates per segment
  (approximations of SPAN + exposure and of SEBI's cash-segment minimum; `[margins] file`
  in mde.toml points at your own copy, as `[costs] file` does for charges).
* Lot sizes come from an instruments dump (Kite's `lot_size` column): the cached Kite dump
  (`<cache>/_meta/instruments.parquet`) if there is one, else the dump shipped with mde. An
  index has no lot: run "as futures" (or options) it takes the lot of the index's future in
  the dump, the first expiring on or after the run's start (else the last listed), and says so.
* Prices are rounded to the instrument's tick so that the rounded order never fills where the
  one asked for could not, and never at a better price than asked for a stop:
  a limit rounds to the tick on its own side of the price (buy limit down, sell limit up),
  a stop away from the market (buy stop up, sell stop down). So a long's stop-loss (a sell
  stop) rounds down and its target (a sell limit) up; a short's the other way. On prices of
  the tick grid, the rounded order triggers on exactly the candles the asked one would.
"""

from __future__ import annotations

import math
import tomllib
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from .errors import ConfigError, InputError, MdeError

MARGIN_SEGMENTS = ("delivery", "intraday", "futures", "options")
_RATE_KEYS = ("delivery_pct", "intraday_pct", "futures_pct", "options_short_pct")
# Index instruments -> the `name` of their derivatives in the dump.
INDEX_UNDERLYINGS = {
    "NIFTY 50": "NIFTY",
    "NIFTY BANK": "BANKNIFTY",
    "NIFTY FIN SERVICE": "FINNIFTY",
    "NIFTY MID SELECT": "MIDCPNIFTY",
    "SENSEX": "SENSEX",
}


# -- the margin table ----------------------------------------------------------------------
@dataclass(frozen=True)
class MarginTable:
    """Dated margin rates (percent of notional) per segment."""

    dates: tuple[date, ...]
    rates: tuple[dict[str, float], ...]
    where: str

    def rates_on(self, day: date) -> dict[str, float]:
        i = bisect_right(self.dates, day) - 1
        if i < 0:
            raise InputError(
                f"no margin rates for {day} in {self.where} (the table starts {self.dates[0]}); add an older row"
            )
        return self.rates[i]

    def margin(self, segment: str, qty: int, price: float, day: date, strike: float | None = None) -> float:
        """What a position of signed `qty` at `price` blocks. A bought option blocks its premium."""
        if not qty:
            return 0.0
        size = abs(qty)
        r = self.rates_on(day)
        if segment == "options":
            if qty > 0:
                return price * size
            return r["options_short_pct"] / 100 * (strike or price) * size
        return r[f"{segment}_pct"] / 100 * price * size

    def describe(self) -> str:
        r = self.rates[-1]
        return (
            f"delivery {r['delivery_pct']:g}% of price x qty, intraday {r['intraday_pct']:g}%, futures "
            f"{r['futures_pct']:g}%, short options {r['options_short_pct']:g}% (of the strike), long options the "
            f"premium, plus the opening leg's charges (rates from {self.where}; [margins] file overrides them)"
        )


def _pct(row: dict[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
        raise ConfigError(f"{where}: {key} must be a percentage above 0 and at most 100")
    return float(value)


def parse_margins(text: str, where: str) -> MarginTable:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    rows = raw.get("rates")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}: no [[rates]] rows")
    dated = []
    for n, row in enumerate(rows, 1):
        start = row.get("from") if isinstance(row, dict) else None
        if not isinstance(start, date):
            raise ConfigError(f"{where}: [[rates]] row {n} needs `from = YYYY-MM-DD`")
        unknown = set(row) - {"from", *_RATE_KEYS}
        if unknown:
            raise ConfigError(f"{where}: [[rates]] row {n} has unknown key(s) {', '.join(sorted(unknown))}")
        dated.append((start, {k: _pct(row, k, f"{where} [[rates]] row {n} ({start})") for k in _RATE_KEYS}))
    dated.sort(key=lambda r: r[0])
    return MarginTable(tuple(d for d, _ in dated), tuple(r for _, r in dated), where)


@lru_cache(maxsize=8)
def _load_path(path: str, mtime_ns: int) -> MarginTable:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the margins table {path} is not UTF-8 text") from None
    return parse_margins(text, path)


@lru_cache(maxsize=1)
def _bundled(text: str) -> MarginTable:
    return parse_margins(text, "mde/data/margins.toml")


def load_margins(path: Path | None = None) -> MarginTable:
    """The user's table (`[margins] file`) if given, else the one shipped with mde."""
    if path is None:
        return _bundled(resources.files("mde").joinpath("data", "margins.toml").read_text(encoding="utf-8"))
    try:
        return _load_path(str(path), path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"cannot read the margins table {path}: {exc.strerror}") from None


# -- contracts: segment, lot, tick ---------------------------------------------------------
@dataclass(frozen=True)
class Contract:
    """What the broker needs to know of a traded symbol beyond its prices.

    `segment` is the margin segment: delivery, intraday, futures, options, or "equity" (a
    stock: intraday margin for an intraday strategy, else delivery)."""

    segment: str = "delivery"
    lot_size: int = 1
    strike: float | None = None
    lot_note: str = ""  # where the lot size came from (shown in the summary)
    lot_warning: str = ""  # the lot is a later contract's: the run's P&L may be scaled wrongly (a warning)


DEFAULT_CONTRACT = Contract()


def _dump_tables(cache_dir: Path) -> list[tuple[pl.DataFrame, str]]:
    """The instruments dumps to look a lot up in, best first: the cached Kite dump, then the one
    shipped with mde (read by the instruments module, as the symbol resolver reads them)."""
    from .instruments import bundled_dump, cached_dump

    out = []
    cached = cached_dump(cache_dir / "_meta")
    if cached is not None:
        table, fetched = cached
        out.append((table, f"the cached Kite instruments dump{f' of {fetched:%Y-%m-%d}' if fetched else ''}"))
    try:
        table, fetched = bundled_dump()
    except MdeError:
        return out
    out.append((table, f"the instruments dump shipped with mde (taken about {fetched:%Y-%m-%d})"))
    return out


def contract_for(
    cache_dir: Path, exchange: str, tradingsymbol: str, segment: str, start: date, label: str | None = None
) -> Contract:
    """The margin segment and lot size of a symbol traded as `segment`.

    An NFO/BFO contract takes its own row's lot; an index or a stock traded as futures or
    options takes the lot of its future in the dump (first expiring on or after `start`,
    else the last listed). Cash segments trade in ones.
    """
    derivative = exchange in ("NFO", "BFO", "MCX")
    if segment not in ("futures", "options") and not derivative:
        return Contract(segment)
    for table, what in _dump_tables(cache_dir):
        if derivative:
            hit = table.filter((pl.col("tradingsymbol") == tradingsymbol) & (pl.col("exchange") == exchange))
            if hit.height:
                row = hit.row(0, named=True)
                lot = int(row["lot_size"] or 1)
                strike = float(row["strike"]) if row.get("strike") else None
                return Contract(segment, max(lot, 1), strike, f"{tradingsymbol}: lot size {lot} from {what}")
            continue
        underlying = INDEX_UNDERLYINGS.get(tradingsymbol, tradingsymbol)
        futs = table.filter(
            (pl.col("instrument_type") == "FUT")
            & (pl.col("name") == underlying)
            & pl.col("expiry").is_not_null()
            & (pl.col("lot_size") > 0)
        ).sort("expiry")
        if futs.is_empty():
            continue
        later = futs.filter(pl.col("expiry") >= start)
        row = (later if later.height else futs.tail(1)).row(0, named=True)
        lot = int(row["lot_size"])
        expiry = row["expiry"]
        # Monthly futures are listed about three months ahead: a contract expiring later than that
        # after the run's start did not trade then, and its lot may not be the lot of that time.
        late = expiry is not None and (expiry.date() if isinstance(expiry, datetime) else expiry) > start + timedelta(
            days=100
        )
        warning = (
            (
                f"{label or tradingsymbol} as {segment}: the lot size {lot} is that of {row['tradingsymbol']} from {what}, "
                f"a contract listed after {start}; lot sizes change by exchange circular (index lots were raised in "
                "late 2024), so one lot here may not be one lot of that time: read quantities and P&L with that in mind"
            )
            if late
            else ""
        )
        return Contract(
            segment,
            lot,
            None,
            f"{label or tradingsymbol} as {segment}: lot size {lot} of {row['tradingsymbol']} (expiry {expiry}) "
            f"from {what}; lot sizes change by exchange circular, so earlier contracts may have had another",
            warning,
        )
    note = (
        f"{label or tradingsymbol}: no lot size found in an instruments dump; orders are not checked for lots"
        if derivative or segment in ("futures", "options")
        else ""
    )
    return Contract(segment, 1, None, note)


# -- ticks ---------------------------------------------------------------------------------
def _digits(tick: float) -> int:
    exp = Decimal(repr(tick)).normalize().as_tuple().exponent
    return max(0, -int(exp)) if isinstance(exp, int) else 2


def to_tick(price: float, tick: float, up: bool) -> float:
    """`price` on the grid of `tick`, rounded up or down (a price already on it is kept)."""
    if not tick or tick <= 0 or not math.isfinite(price):
        return price
    steps = price / tick
    near = round(steps)
    if abs(steps - near) < 1e-7:  # on the grid, up to float noise
        n = near
    else:
        n = math.ceil(steps) if up else math.floor(steps)
    return round(n * tick, _digits(tick))


def round_order_prices(
    side: int, tick: float, limit: float | None, stop: float | None, stop_loss: float | None, target: float | None
) -> tuple[Any, Any, Any, Any]:
    """Limit, stop, stop-loss and target of an order of `side` (+1 buy, -1 sell) on the tick grid,
    each in the direction that never fills where the asked price could not (module doc)."""
    if limit is not None:
        limit = to_tick(limit, tick, up=side < 0)  # buy limit down, sell limit up
    if stop is not None:
        stop = to_tick(stop, tick, up=side > 0)  # buy stop up, sell stop down
    if stop_loss is not None:  # a stop of the exit side (-side)
        stop_loss = to_tick(stop_loss, tick, up=side < 0)
    if target is not None:  # a limit of the exit side (-side)
        target = to_tick(target, tick, up=side > 0)
    return limit, stop, stop_loss, target
