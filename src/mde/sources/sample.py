"""An offline source of real NSE candles shipped inside the package (see data/README.md).

It behaves like Kite: it answers any timeframe, building larger intraday ones from the
finest bundled series on the session grid, and its clock is MDE_NOW or the end of the
bundled data. So `fetch`, `refresh` and `window` work on it exactly as they do on Kite.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from .. import calendar as cal_mod
from ..candles import COLUMNS, empty_candles
from ..clock import IST
from ..errors import InputError, MdeError
from ..resample import resample
from ..symbols import BUILTIN_ALIASES, Instrument, resolve_offline, safe_name, validate_symbol
from ..timeframes import Timeframe, sources_for
from . import SourceStats

SAMPLE_DIR = "sample_data"


def outside_span(
    instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime, span: tuple[datetime, datetime]
) -> str:
    day = "%Y-%m-%d"
    return (
        f"the sample has no {timeframe} candles of {instrument} between {start:{day}} and {end:{day}}: it has them from "
        f"{span[0]:%Y-%m-%d %H:%M} to {span[1]:%Y-%m-%d %H:%M} only; nothing was recorded"
    )


def sample_root() -> Path:
    return Path(str(resources.files("mde").joinpath(SAMPLE_DIR)))


class SampleSource:
    name = "sample"

    def __init__(self, aliases: Mapping[str, str] | None = None, root: Path | None = None) -> None:
        self.aliases = dict(aliases or {})
        self.root = root or sample_root()
        self._frames: dict[tuple[str, str], pl.DataFrame] = {}
        self.stats = SourceStats()

    @cached_property
    def index(self) -> dict[str, Any]:
        index: dict[str, Any] = json.loads((self.root / "index.json").read_text(encoding="utf-8"))
        return index

    def series(self) -> list[tuple[str, str]]:
        """(instrument key, timeframe) of every bundled series."""
        return [(s["instrument"], s["timeframe"]) for s in self.index["series"]]

    def span(self, instrument: Instrument, timeframe: Timeframe) -> tuple[datetime, datetime] | None:
        """(first candle's start, last candle's close) of what the sample can answer for this
        series: the bundled series, or the one a bigger timeframe is built from; None if neither."""
        entries = {(s["instrument"], s["timeframe"]): s for s in self.index["series"]}
        for tf in (timeframe, *sources_for(timeframe)):
            entry = entries.get((instrument.key, tf.name))
            if entry is not None:
                first, last = cal_mod.parse_instant(entry["first"]), cal_mod.parse_instant(entry["last"])
                return first, cal_mod.nse().close_time(last, tf)
        return None

    def clock(self) -> datetime:
        return cal_mod.parse_instant(self.index["end"])

    def resolve(self, symbol: str) -> Instrument:
        inst = resolve_offline(symbol, self.aliases)
        if any(key == inst.key for key, _ in self.series()):
            return inst
        have = ", ".join(sorted({k for k, _ in self.series()}))
        if self._listed(symbol):  # a real instrument, just not bundled: say so, not "unknown"
            raise InputError(
                f"the sample data has no {symbol.strip()!r} ({inst}); it has {have}: "
                "use --source kite to fetch it from Kite"
            )
        names = sorted({k.split(":", 1)[1] for k, _ in self.series()} | set(BUILTIN_ALIASES))
        close = difflib.get_close_matches(validate_symbol(symbol), names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown symbol {symbol!r} in the sample data{hint} (the sample has {have})")

    def _listed(self, symbol: str) -> bool:
        """Whether the instruments dump shipped with mde lists the symbol (offline, read-only)."""
        from ..instruments import BUNDLED_DUMP, OfflineCatalog

        try:
            OfflineCatalog(BUNDLED_DUMP.parent, self.clock).check(symbol, self.aliases)
        except MdeError:
            return False
        return True

    def _load(self, inst: Instrument, tf: str) -> pl.DataFrame | None:
        key = (inst.key, tf)
        if key not in self._frames:
            path = self.root / safe_name(inst.exchange) / safe_name(inst.tradingsymbol) / f"{tf}.parquet"
            if not path.is_file():
                return None
            self._frames[key] = pl.read_parquet(path).select(list(COLUMNS))
        return self._frames[key]

    def historical(self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime) -> pl.DataFrame:
        """Candles with start <= ts <= end; InputError naming the sample's span when the range
        lies wholly outside it (a source says what it has rather than answer 'nothing')."""
        span = self.span(instrument, timeframe)
        if span is not None and (end < span[0] or start >= span[1]):
            raise InputError(outside_span(instrument, timeframe, start, end, span))
        self.stats.add(requests=1, historical_requests=1)
        df = self._load(instrument, timeframe.name)
        if df is None:
            for smaller in sources_for(timeframe):
                base = self._load(instrument, smaller.name)
                if base is not None:
                    # Like Kite: build the bigger interval from what is stored, whole days only.
                    # Whole buckets only: cut at day boundaries, then select buckets by ts below.
                    first_day = start.astimezone(IST).date()
                    last_day = end.astimezone(IST).date() + timedelta(days=1)
                    lo = datetime.combine(first_day, time(0, 0), IST)
                    hi = datetime.combine(last_day, time(0, 0), IST)
                    window = base.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
                    df = resample(window, timeframe, cal_mod.nse())
                    break
        if df is None:
            have = sorted(tf for key, tf in self.series() if key == instrument.key)
            raise InputError(f"the sample data has no {timeframe} candles for {instrument} (it has {', '.join(have)})")
        out = df.filter((pl.col("ts") >= start) & (pl.col("ts") <= end))
        return out if not out.is_empty() else empty_candles()
