"""`mde.instruments.list_instruments` (what `mde instruments` renders) and the instruments
modules' foreign errors (JSON, Parquet, polars) becoming mde's errors with their cause kept."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from mde.clock import IST
from mde.config import Settings
from mde.errors import CacheError, InputError, SourceError
from mde.instruments import BUNDLED_DATE, OfflineCatalog, list_instruments, read_dump
from mde.sources.kite.instruments import InstrumentCatalog, dump_frame


def test_the_sample_source_lists_the_shipped_dump_with_a_note(settings: Settings) -> None:
    listing = list_instruments(settings, "nifty", limit=3)
    assert listing.rows.height == 3 and listing.rows["tradingsymbol"][0] == "NIFTY 50"
    assert listing.total > 10_000
    assert listing.fetched_at is not None and f"{listing.fetched_at:%Y-%m-%d}" == BUNDLED_DATE
    assert listing.note is not None and "shipped with mde" in listing.note
    assert list_instruments(settings, limit=2).rows.height == 2
    assert not settings.cache_dir.exists()  # offline and read-only


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "--limit must be at least 1, got 0"),
        ({"refresh": True}, "--refresh downloads Kite's instruments list: add --source kite"),
        ({"search": "  "}, "give some text to search for"),
    ],
)
def test_bad_requests_are_input_errors(settings: Settings, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        list_instruments(settings, **kwargs)


def test_a_corrupt_memory_file_is_a_cache_error_caused_by_the_json_error(tmp_path: Path) -> None:
    folder = tmp_path / "_meta"
    folder.mkdir()
    (folder / "known_instruments.json").write_text("{not json")
    cat = OfflineCatalog(folder, lambda: datetime(2025, 12, 20, tzinfo=IST))
    with pytest.raises(CacheError, match="known_instruments.json is unreadable") as info:
        cat.known()
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_an_unreadable_cached_dump_is_skipped_not_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "_meta"
    folder.mkdir()
    (folder / "instruments.parquet").write_bytes(b"PAR1 this is not parquet")
    assert read_dump(folder) is None
    cat = OfflineCatalog(folder, lambda: datetime(2025, 12, 20, tzinfo=IST))
    assert cat.table().height > 10_000 and cat.bundled  # the shipped dump instead


def test_a_malformed_dump_is_a_source_error_caused_by_the_polars_error(tmp_path: Path) -> None:
    rows = [{"instrument_token": 1, "tradingsymbol": "X", "exchange": "NSE", "lot_size": object()}]
    with pytest.raises(SourceError, match="malformed") as info:
        dump_frame(rows)
    assert isinstance(info.value.__cause__, ValueError)  # polars: cannot convert
    cat = InstrumentCatalog(tmp_path / "_meta", lambda: rows, lambda: datetime(2025, 12, 20, tzinfo=IST))
    with pytest.raises(SourceError):
        cat.refresh()
    assert not (tmp_path / "_meta" / "instruments.parquet").exists()


def test_the_kite_catalog_reads_what_the_offline_one_reads(tmp_path: Path) -> None:
    folder = tmp_path / "_meta"
    folder.mkdir()
    frame = dump_frame(
        [
            {
                "instrument_token": 408065,
                "exchange_token": "1594",
                "tradingsymbol": "INFY",
                "name": "INFOSYS",
                "expiry": "",
                "lot_size": 1,
                "tick_size": 0.1,
                "instrument_type": "EQ",
                "segment": "NSE",
                "exchange": "NSE",
            }
        ]
    )
    frame.write_parquet(folder / "instruments.parquet")
    (folder / "instruments.json").write_text(json.dumps({"fetched_at": "2025-12-20T08:00:00+05:30", "rows": 1}))
    now = datetime(2025, 12, 20, 10, 0, tzinfo=IST)

    def no_download() -> list[dict]:
        raise AssertionError("fetched today: no download")

    kite = InstrumentCatalog(folder, no_download, lambda: now)
    offline = OfflineCatalog(folder, lambda: now)
    assert kite.table().equals(offline.table()) and isinstance(kite.table(), pl.DataFrame)
    assert kite.resolve("INFY").token == offline.resolve("INFY").token == 408065
    assert kite.instrument_info("NSE:INFY") == offline.instrument_info("NSE:INFY")
