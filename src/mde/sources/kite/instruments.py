"""Kite's instruments dump, downloaded at most once per IST day into the cache's `_meta`.

`InstrumentCatalog` is the catalog of `mde.instruments` (symbol resolution, search, the
remembered contracts, lot and tick sizes, all offline) with a download behind it:

    instruments.parquet       the last instruments dump (zstd), as `kite.instruments()` returned it
    instruments.json          {"fetched_at": ISO instant (IST), "rows": N}

The dump is downloaded when the cached one was fetched on an earlier IST date than today by
`now()` (the engine's MDE_NOW-aware clock), or on `refresh()`. If the download fails and an
older dump is on hand, that one is used (with a warning). `dump_frame` turns the client's
rows into the typed frame; what it cannot type is a SourceError (the cached dump is kept).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from ...atomic import atomic_write
from ...clock import to_ist
from ...errors import SourceError
from ...instruments import SCHEMA, Catalog, _to_date, _today, log

_REQUIRED = ("instrument_token", "tradingsymbol", "exchange")


def dump_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The dump as a typed frame: `expiry` '' -> null, missing columns -> null."""
    if not isinstance(rows, list):
        raise SourceError(f"the instruments dump is a {type(rows).__name__}, not a list of rows")
    if not rows:
        raise SourceError("the instruments dump came back empty; the cached one (if any) is kept")
    first = rows[0]
    if not isinstance(first, Mapping) or any(col not in first for col in _REQUIRED):
        raise SourceError("the instruments dump lacks instrument_token, tradingsymbol or exchange columns")
    columns: dict[str, list[Any]] = {}
    for col in SCHEMA:
        values = [row.get(col) for row in rows]
        if col == "expiry":
            values = [_to_date(v) for v in values]
        elif col == "exchange_token":
            values = [None if v is None else str(v) for v in values]
        columns[col] = values
    try:
        frame = pl.DataFrame(columns, schema=SCHEMA, strict=False)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as exc:  # a malformed value
        raise SourceError(f"the instruments dump is malformed: {exc}") from exc
    frame = frame.drop_nulls(list(_REQUIRED))  # a row without these cannot be resolved
    if frame.is_empty():
        raise SourceError("the instruments dump has no usable rows; the cached one (if any) is kept")
    return frame


class InstrumentCatalog(Catalog):
    """The Kite instruments dump, cached per IST day, plus every instrument ever resolved."""

    def __init__(
        self, folder: Path | str, download: Callable[[], list[dict[str, Any]]], now: Callable[[], datetime]
    ) -> None:
        super().__init__(folder, now)
        self._download = download
        self._download_failed = False
        self.downloads = 0  # downloads made by this object (for diagnostics and tests)

    def _is_fresh(self, fetched: datetime | None) -> bool:
        return fetched is not None and _today(fetched) >= _today(self._now())

    def _usable_in_memory(self) -> bool:
        return self._table is not None and (self._download_failed or self._is_fresh(self._fetched_at))

    def _fresh_from_disk(self) -> pl.DataFrame | None:
        fetched = self._read_meta()
        if not self._is_fresh(fetched):
            return None
        table = self._load_cached()
        if table is not None:
            self._set_table(table, fetched)
        return table

    def _cheap_table(self) -> pl.DataFrame | None:
        """The dump if it needs no download: in memory, or on disk and fetched today."""
        if self._usable_in_memory():
            return self._table
        return self._fresh_from_disk()

    def table(self) -> pl.DataFrame:
        """The dump: from memory, else from disk if fetched today (IST), else downloaded now.

        If the download fails and an older dump is on hand, that one is used (with a warning)
        and the download is retried by the next catalog object, not on every call.
        """
        table = self._cheap_table()
        if table is not None:
            return table
        try:
            return self.refresh()
        except Exception as exc:  # whatever failed, an older dump is better than none
            stale = self._table
            fetched = self._fetched_at
            if stale is None:
                fetched = self._read_meta()
                stale = self._load_cached()
            if stale is None:
                raise
            self._download_failed = True
            when = f"{fetched:%Y-%m-%d %H:%M}" if fetched else "an earlier day"
            log.warning("could not download the instruments list (%s); using the one from %s", exc, when)
            self._set_table(stale, fetched)
            return stale

    def refresh(self) -> pl.DataFrame:
        """Download the dump now and cache it, whatever the cached one's age."""
        rows = self._download()
        self.downloads += 1
        table = dump_frame(rows)
        fetched = to_ist(self._now())
        encoded = io.BytesIO()  # encoded first: a full disk is then an OSError, not a polars error
        table.write_parquet(encoded, compression="zstd", statistics=False)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.dump_path) as fh:
                fh.write(encoded.getvalue())
            with atomic_write(self.meta_path, "w") as fh:
                json.dump({"fetched_at": fetched.isoformat(), "rows": table.height}, fh)
                fh.write("\n")
        except OSError as exc:  # a derived file: the next run downloads it again
            log.warning("cannot save the instruments list in %s (%s); it will be downloaded again", self.folder, exc)
        self._download_failed = False
        self._set_table(table, fetched)
        return table
