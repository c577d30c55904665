"""Indian trading charges: a dated, editable table (data/costs.toml) and what one trade costs.

Rates change with budgets and exchange circulars, so each row of the table applies from its
date on; a leg is charged at the row in force on the day it fills. Charges are kept in
paise (each component rounded to 0.01 per leg), not rounded to the rupee per contract note.
"""

from __future__ import annotations

import tomllib
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError

SEGMENTS = ("delivery", "intraday", "futures", "options")
COST_MODELS = ("zerodha", "none")
_RATE_KEYS = ("stt_buy_pct", "stt_sell_pct", "exchange_pct", "stamp_buy_pct")
_BROKERAGE_KEYS = ("brokerage_pct", "brokerage_cap", "brokerage_flat")


@dataclass(frozen=True)
class Charges:
    """The charges of one trade (both legs), each in rupees."""

    brokerage: float = 0.0
    stt: float = 0.0
    exchange: float = 0.0
    sebi: float = 0.0
    stamp: float = 0.0
    gst: float = 0.0

    @property
    def total(self) -> float:
        return round(self.brokerage + self.stt + self.exchange + self.sebi + self.stamp + self.gst, 2)

    def __add__(self, other: Charges) -> Charges:
        return Charges(*(round(a + b, 2) for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[float, ...]:
        return (self.brokerage, self.stt, self.exchange, self.sebi, self.stamp, self.gst)


NO_CHARGES = Charges()


@dataclass(frozen=True)
class CostTable:
    """Brokerage per segment plus dated statutory rates; `leg()` prices one executed order."""

    brokerage: dict[str, tuple[float, float, float]]  # segment -> (pct, cap, flat)
    dates: tuple[date, ...]
    rates: tuple[dict[str, dict[str, float]], ...]  # parallel to dates: segment -> key -> pct
    sebi_per_crore: float
    gst_pct: float
    where: str

    def rates_on(self, day: date, segment: str) -> dict[str, float]:
        i = bisect_right(self.dates, day) - 1
        if i < 0:
            raise InputError(
                f"no charges for {day} in {self.where} (the table starts {self.dates[0]}); "
                "add an older row or use --costs none"
            )
        return self.rates[i][segment]

    def leg(self, segment: str, side: str, price: float, qty: float, day: date) -> Charges:
        """Charges of one executed order: `side` is "buy" or "sell"."""
        if segment not in SEGMENTS:
            raise InputError(f"unknown segment {segment!r}; use one of {', '.join(SEGMENTS)}")
        turnover = abs(price * qty)
        pct, cap, flat = self.brokerage[segment]
        brokerage = flat if flat else turnover * pct / 100
        if cap:
            brokerage = min(brokerage, cap)
        r = self.rates_on(day, segment)
        stt = turnover * r["stt_buy_pct" if side == "buy" else "stt_sell_pct"] / 100
        exchange = turnover * r["exchange_pct"] / 100
        sebi = turnover * self.sebi_per_crore / 1e7
        stamp = turnover * r["stamp_buy_pct"] / 100 if side == "buy" else 0.0
        gst = (brokerage + exchange + sebi) * self.gst_pct / 100
        return Charges(*(round(x, 2) for x in (brokerage, stt, exchange, sebi, stamp, gst)))


def _num(section: dict[str, Any], key: str, where: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: {key} must be a non-negative number")
    return float(value)


def parse_table(text: str, where: str) -> CostTable:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    brokerage: dict[str, tuple[float, float, float]] = {}
    for seg in SEGMENTS:
        sec = raw.get("segments", {}).get(seg)
        if not isinstance(sec, dict):
            raise ConfigError(f"{where}: [segments.{seg}] is missing")
        pct, cap, flat = (_num(sec, k, f"{where} [segments.{seg}]") for k in _BROKERAGE_KEYS)
        brokerage[seg] = (pct, cap, flat)
    common = raw.get("common", {})
    rows = raw.get("rates")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}: no [[rates]] rows")
    dated = []
    for n, row in enumerate(rows, 1):
        start = row.get("from")
        if not isinstance(start, date):
            raise ConfigError(f"{where}: [[rates]] row {n} needs `from = YYYY-MM-DD`")
        per_seg = {}
        for seg in SEGMENTS:
            sec = row.get(seg)
            if not isinstance(sec, dict):
                raise ConfigError(f"{where}: [[rates]] row {n} ({start}) lacks `{seg}`")
            unknown = set(sec) - set(_RATE_KEYS)
            if unknown:
                raise ConfigError(f"{where}: [[rates]] row {n} {seg} has unknown key(s) {', '.join(sorted(unknown))}")
            per_seg[seg] = {k: _num(sec, k, f"{where} row {n} {seg}") for k in _RATE_KEYS}
        dated.append((start, per_seg))
    dated.sort(key=lambda r: r[0])
    return CostTable(
        brokerage=brokerage,
        dates=tuple(d for d, _ in dated),
        rates=tuple(r for _, r in dated),
        sebi_per_crore=_num(common, "sebi_per_crore", f"{where} [common]"),
        gst_pct=_num(common, "gst_pct", f"{where} [common]"),
        where=where,
    )


@lru_cache(maxsize=8)
def _load_path(path: str, mtime_ns: int) -> CostTable:
    return parse_table(Path(path).read_text(encoding="utf-8"), path)


def load_table(path: Path | None = None) -> CostTable:
    """The user's table (`[costs] file`) if given, else the one shipped with mde."""
    if path is None:
        text = resources.files("mde").joinpath("data", "costs.toml").read_text(encoding="utf-8")
        return _bundled(text)
    try:
        return _load_path(str(path), path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"cannot read the costs table {path}: {exc.strerror}") from None


@lru_cache(maxsize=1)
def _bundled(text: str) -> CostTable:
    return parse_table(text, "mde/data/costs.toml")


def segment_for(exchange: str, instrument_type: str | None, tradingsymbol: str) -> str | None:
    """The segment an instrument trades in, or None for an index (not tradable itself).

    Index names have spaces (NIFTY 50, NIFTY BANK, INDIA VIX); tradable symbols never do.
    """
    from .symbols import BUILTIN_ALIASES

    kind = (instrument_type or "").upper()
    if f"{exchange}:{tradingsymbol}" in BUILTIN_ALIASES.values() or " " in tradingsymbol:
        return None
    if kind == "FUT" or (exchange in ("NFO", "BFO", "MCX") and tradingsymbol.endswith("FUT")):
        return "futures"
    if kind in ("CE", "PE") or (exchange in ("NFO", "BFO") and tradingsymbol[-2:] in ("CE", "PE")):
        return "options"
    if kind == "INDEX":
        return None
    return "equity"


@dataclass(frozen=True)
class CostModel:
    """Prices a round trip. `segment` is fixed (futures, options, intraday, delivery), or
    "equity" for a stock, where a trade within one session is intraday and one that
    crossed a session is delivery."""

    table: CostTable | None  # None: no charges
    segment: str | None

    @property
    def name(self) -> str:
        return "none" if self.table is None else "zerodha"

    def describe(self) -> str:
        if self.table is None:
            return "none: gross P&L only, no charges"
        seg = "equity (intraday within a session, else delivery)" if self.segment == "equity" else self.segment
        return f"zerodha: {seg}; rates from {self.table.where}, kept in paise"

    def round_trip(
        self, side: str, qty: float, entry_price: float, entry_day: date, exit_price: float, exit_day: date
    ) -> Charges:
        if self.table is None or self.segment is None:
            return NO_CHARGES
        segment = self.segment
        if segment == "equity":
            segment = "intraday" if entry_day == exit_day else "delivery"
        buy_first = side == "long"
        entry = self.table.leg(segment, "buy" if buy_first else "sell", entry_price, qty, entry_day)
        exit_ = self.table.leg(segment, "sell" if buy_first else "buy", exit_price, qty, exit_day)
        return entry + exit_


def cost_model(
    kind: str, segment: str | None, instrument_segment: str | None, symbol: str, table_path: Path | None = None
) -> CostModel:
    """Build the model for `--costs KIND [--segment SEG]` on one instrument.

    An index has no segment of its own: with `--costs zerodha` the user must say which
    (usually futures), rather than mde guessing a cost that no one pays.
    """
    if kind not in COST_MODELS:
        raise InputError(f"unknown cost model {kind!r}; use one of {', '.join(COST_MODELS)}")
    if segment is not None and segment not in SEGMENTS:
        raise InputError(f"unknown segment {segment!r}; use one of {', '.join(SEGMENTS)}")
    if kind == "none":
        return CostModel(None, None)
    chosen = segment or instrument_segment
    if chosen is None:
        raise InputError(
            f"{symbol} is an index and cannot be traded itself; pass --segment futures (or options, "
            "intraday, delivery) to charge it as that, or --costs none"
        )
    return CostModel(load_table(table_path), chosen)
