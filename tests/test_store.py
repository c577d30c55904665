"""The Parquet candle cache (`mde.store.CandleStore`) and the engine methods that write through it.

Everything runs on real files under tmp_path: layout, file format, merging, the manifest,
refusing to mix sources, corrupt files, symbol validation, prune, stale temp files and the
rule that an incomplete candle is never stored.
"""

from __future__ import annotations

import json
import os
import struct
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import mde.store as mde_store
from conftest import engine_at, run_mde
from factories import make_candles, trading_days
from mde.calendar import nse
from mde.candles import COLUMNS, merge_candles
from mde.clock import IST
from mde.engine import MarketDataEngine
from mde.errors import CacheError, InputError
from mde.store import MANIFEST, CandleStore, Manifest, union_ranges
from mde.symbols import Instrument, safe_name, unsafe_name
from mde.timeframes import parse
from mde.validate import implausible

NIFTY = Instrument("NSE", "NIFTY 50")
NOW = datetime(2024, 12, 31, 15, 30, tzinfo=IST)
DOCUMENTED_SCHEMA = {
    "ts": pl.Datetime("us", "Asia/Kolkata"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Int64(),
}


# -- helpers ------------------------------------------------------------------------------
def ist(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=IST)


def candles_at(stamps: list[datetime], price: float = 100.0, volume: int = 10) -> pl.DataFrame:
    """One flat candle per timestamp, all with the same price (handy for 'which one won')."""
    n = len(stamps)
    return pl.DataFrame(
        {
            "ts": stamps,
            "open": [price] * n,
            "high": [price + 1] * n,
            "low": [price - 1] * n,
            "close": [price] * n,
            "volume": [volume] * n,
        },
        schema_overrides={"ts": pl.Datetime("us", "Asia/Kolkata")},
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.parquet")}


def write(
    store: CandleStore, df: pl.DataFrame, tf: str = "5m", *, source: str = "sample", covered=None, now=NOW, inst=NIFTY
):
    return store.write(inst, parse(tf), df, source=source, covered=covered, now=now)


# A tiny reader of Parquet's footer (Thrift compact protocol): enough to see each column
# chunk's compression codec without pyarrow.
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return out, pos


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf: bytes, pos: int, kind: int):
    if kind in (1, 2):  # bool inside a struct: the type nibble is the value
        return kind == 1, pos
    if kind == 3:
        return buf[pos], pos + 1
    if kind in (4, 5, 6):
        v, pos = _varint(buf, pos)
        return _zigzag(v), pos
    if kind == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if kind == 8:
        n, pos = _varint(buf, pos)
        return buf[pos : pos + n], pos + n
    if kind in (9, 10):
        head = buf[pos]
        pos += 1
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            if elem in (1, 2):  # bools in a list take one byte each
                items.append(buf[pos] == 1)
                pos += 1
            else:
                item, pos = _value(buf, pos, elem)
                items.append(item)
        return items, pos
    if kind == 11:
        size, pos = _varint(buf, pos)
        if size == 0:
            return {}, pos
        kinds = buf[pos]
        pos += 1
        out = {}
        for _ in range(size):
            k, pos = _value(buf, pos, kinds >> 4)
            v, pos = _value(buf, pos, kinds & 0x0F)
            out[k] = v
        return out, pos
    if kind == 12:
        fields: dict[int, object] = {}
        last = 0
        while True:
            head = buf[pos]
            pos += 1
            if head == 0:
                return fields, pos
            delta, ftype = head >> 4, head & 0x0F
            if delta:
                fid = last + delta
            else:
                raw, pos = _varint(buf, pos)
                fid = _zigzag(raw)
            fields[fid], pos = _value(buf, pos, ftype)
            last = fid
    raise AssertionError(f"unknown thrift type {kind}")


def parquet_codecs(path: Path) -> set[int]:
    """Compression codec of every column chunk (Parquet's enum: 0 none, 1 snappy, 6 zstd)."""
    raw = path.read_bytes()
    assert raw[:4] == b"PAR1" and raw[-4:] == b"PAR1"
    (footer_len,) = struct.unpack("<i", raw[-8:-4])
    meta, _ = _value(raw[-8 - footer_len : -8], 0, 12)
    codecs = set()
    for row_group in meta[4]:  # FileMetaData.row_groups
        for chunk in row_group[1]:  # RowGroup.columns
            codecs.add(chunk[3][4])  # ColumnChunk.meta_data.codec
    return codecs


ZSTD, SNAPPY = 6, 1


# -- layout -------------------------------------------------------------------------------
def test_1m_candles_go_to_one_file_per_month(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    days = [date(2024, 5, 30), date(2024, 5, 31), date(2024, 6, 3)]
    write(store, make_candles(days), "1m")
    folder = cache_dir / "NSE" / "NIFTY_50" / "1m"
    assert store.series_dir(NIFTY, parse("1m")) == folder
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["2024-05.parquet", "2024-06.parquet"]
    may = pl.read_parquet(folder / "2024-05.parquet")
    assert may["ts"].dt.month().unique().to_list() == [5]
    assert pl.read_parquet(folder / "2024-06.parquet")["ts"].dt.month().unique().to_list() == [6]


def test_month_partition_follows_ist_not_utc(cache_dir: Path) -> None:
    """00:00 IST on June 1 is still May 31 in UTC; the file is chosen by the IST month."""
    store = CandleStore(cache_dir)
    write(store, candles_at([ist("2024-06-01T00:00:00")]), "1m")
    folder = store.series_dir(NIFTY, parse("1m"))
    assert [p.name for p in folder.glob("*.parquet")] == ["2024-06.parquet"]
    assert store.read(NIFTY, parse("1m"), start=ist("2024-06-01T00:00:00"))["ts"].to_list() == [
        ist("2024-06-01T00:00:00")
    ]


@pytest.mark.parametrize("tf", ["5m", "10m", "15m", "30m", "60m"])
def test_intraday_5m_to_60m_go_to_one_file_per_year(cache_dir: Path, tf: str) -> None:
    store = CandleStore(cache_dir)
    step = parse(tf).minutes
    days = [date(2023, 12, 28), date(2023, 12, 29), date(2024, 1, 1)]
    write(store, make_candles(days, step=step), tf)
    folder = cache_dir / "NSE" / "NIFTY_50" / tf
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["2023.parquet", "2024.parquet"]
    assert pl.read_parquet(folder / "2023.parquet")["ts"].dt.year().unique().to_list() == [2023]


def test_3m_candles_are_partitioned_per_month_like_1m(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    write(store, make_candles([date(2024, 5, 31), date(2024, 6, 3)], step=3), "3m")
    folder = cache_dir / "NSE" / "NIFTY_50" / "3m"
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["2024-05.parquet", "2024-06.parquet"]


def test_daily_candles_go_to_one_file(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    stamps = [ist("2019-03-01T00:00:00"), ist("2023-12-29T00:00:00"), ist("2024-01-01T00:00:00")]
    write(store, candles_at(stamps), "1d")
    folder = cache_dir / "NSE" / "NIFTY_50" / "1d"
    assert [p.name for p in folder.glob("*.parquet")] == ["all.parquet"]
    assert pl.read_parquet(folder / "all.parquet").height == 3


def test_index_name_with_space_maps_to_safe_folder_and_round_trips(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    write(store, make_candles(date(2024, 6, 3), step=5))
    assert safe_name("NIFTY 50") == "NIFTY_50"
    assert unsafe_name("NIFTY_50") == "NIFTY 50"
    assert (cache_dir / "NSE" / "NIFTY_50" / "5m" / "2024.parquet").is_file()
    assert store.list_series() == [(NIFTY, parse("5m"))]


@pytest.mark.parametrize("name", ["NIFTY 50", "M&M", "BAJAJ-AUTO", "NIFTY FIN SERVICE", "A_B", "NIFTY24JUN23500CE"])
def test_safe_name_is_a_plain_file_name_and_reversible(name: str) -> None:
    safe = safe_name(name)
    assert all(ch.isascii() and (ch.isalnum() or ch in "-_%") for ch in safe)
    assert unsafe_name(safe) == name


def test_engine_save_cache_writes_the_documented_layout(engine: MarketDataEngine, cache_dir: Path) -> None:
    engine.save_cache("NIFTY", "1m", make_candles([date(2024, 5, 31), date(2024, 6, 3)]))
    engine.save_cache("NIFTY", "5m", make_candles([date(2023, 12, 29), date(2024, 1, 1)], step=5))
    engine.save_cache("BANKNIFTY", "1d", candles_at([ist("2024-01-01T00:00:00")]))
    files = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*.parquet"))
    assert files == [
        "NSE/NIFTY_50/1m/2024-05.parquet",
        "NSE/NIFTY_50/1m/2024-06.parquet",
        "NSE/NIFTY_50/5m/2023.parquet",
        "NSE/NIFTY_50/5m/2024.parquet",
        "NSE/NIFTY_BANK/1d/all.parquet",
    ]
    assert {(i.key, t.name) for i, t in engine.store.list_series()} == {
        ("NSE:NIFTY 50", "1m"),
        ("NSE:NIFTY 50", "5m"),
        ("NSE:NIFTY BANK", "1d"),
    }


# -- file format --------------------------------------------------------------------------
def test_files_are_zstd_parquet_with_the_documented_schema(cache_dir: Path, nifty_5m: pl.DataFrame) -> None:
    store = CandleStore(cache_dir)
    write(store, nifty_5m, "5m")
    path = cache_dir / "NSE" / "NIFTY_50" / "5m" / "2024.parquet"
    df = pl.read_parquet(path)  # plain polars, no mde code
    assert dict(df.schema) == DOCUMENTED_SCHEMA
    assert dict(COLUMNS) == DOCUMENTED_SCHEMA
    assert df.equals(nifty_5m)
    assert parquet_codecs(path) == {ZSTD}


def test_the_footer_reader_tells_zstd_from_snappy(tmp_path: Path, nifty_5m: pl.DataFrame) -> None:
    """Guards the test above: the codec check would notice another compression."""
    path = tmp_path / "snappy.parquet"
    nifty_5m.head(100).write_parquet(path, compression="snappy")
    assert parquet_codecs(path) == {SNAPPY}


def test_appending_one_candle_rewrites_only_the_last_month(cache_dir: Path, nifty_1m_q2: pl.DataFrame) -> None:
    store = CandleStore(cache_dir)
    write(store, nifty_1m_q2.head(nifty_1m_q2.height - 1), "1m")
    folder = store.series_dir(NIFTY, parse("1m"))
    before = stats(folder)
    bytes_before = {name: (folder / name).read_bytes() for name in before}
    assert sorted(before) == ["2024-04.parquet", "2024-05.parquet", "2024-06.parquet"]

    result = write(store, nifty_1m_q2.tail(1), "1m")

    assert (result.added, result.replaced, result.rows) == (1, 0, nifty_1m_q2.height)
    after = stats(folder)
    assert after["2024-04.parquet"] == before["2024-04.parquet"]
    assert after["2024-05.parquet"] == before["2024-05.parquet"]
    assert (folder / "2024-04.parquet").read_bytes() == bytes_before["2024-04.parquet"]
    assert after["2024-06.parquet"] != before["2024-06.parquet"]
    assert store.read(NIFTY, parse("1m")).equals(nifty_1m_q2)


# -- merging ------------------------------------------------------------------------------
def test_new_candles_replace_cached_ones_with_the_same_ts(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    day = date(2024, 6, 3)
    old = make_candles(day, step=5, seed=1)  # 75 candles
    first = write(store, old.head(40))
    assert (first.added, first.replaced, first.rows) == (40, 0, 40)

    revised = old.slice(30, 20).with_columns(pl.col("close") + 1000, pl.col("volume") * 0 + 7)  # 10 cached, 10 new
    result = write(store, revised)

    assert (result.added, result.replaced, result.rows) == (10, 10, 50)
    cached = store.read(NIFTY, parse("5m"))
    assert cached.height == 50
    assert cached["ts"].is_sorted() and cached["ts"].is_unique().all()
    assert cached.slice(0, 30).equals(old.head(30))
    assert cached.slice(30, 20).equals(revised)


def test_out_of_order_input_with_duplicates_is_stored_sorted_and_unique(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    ts = [
        ist("2024-06-03T09:25:00"),
        ist("2024-06-03T09:15:00"),
        ist("2024-06-03T09:20:00"),
        ist("2024-06-03T09:15:00"),
    ]
    df = pl.concat([candles_at(ts[:3], price=100), candles_at(ts[3:], price=200)])
    result = write(store, df)
    assert (result.added, result.replaced, result.rows) == (3, 0, 3)
    cached = store.read(NIFTY, parse("5m"))
    assert cached["ts"].to_list() == sorted(set(ts))
    assert cached["close"].to_list() == [200.0, 100.0, 100.0]  # the later duplicate in the batch wins


def test_rewriting_the_same_batch_replaces_everything_and_adds_nothing(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    df = make_candles(trading_days(date(2024, 6, 3), 2), step=5)
    write(store, df)
    again = write(store, df)
    assert (again.added, again.replaced, again.rows) == (0, df.height, df.height)
    assert store.read(NIFTY, parse("5m")).equals(df)


def test_write_spanning_partitions_counts_per_partition_and_in_total(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    may, june = make_candles(date(2024, 5, 31), seed=1), make_candles(date(2024, 6, 3), seed=2)
    write(store, may.head(100), "1m")
    result = write(store, pl.concat([may.slice(50, 100), june.head(10)]), "1m")
    assert (result.added, result.replaced, result.rows) == (50 + 10, 50, 160)


def test_merge_candles_new_wins_on_equal_ts() -> None:
    a = candles_at([ist("2024-06-03T09:15:00"), ist("2024-06-03T09:20:00")], price=1)
    b = candles_at([ist("2024-06-03T09:20:00"), ist("2024-06-03T09:10:00")], price=2)
    merged = merge_candles(a, b)
    assert merged["ts"].to_list() == [
        ist("2024-06-03T09:10:00"),
        ist("2024-06-03T09:15:00"),
        ist("2024-06-03T09:20:00"),
    ]
    assert merged["close"].to_list() == [2.0, 1.0, 2.0]


# -- manifest -----------------------------------------------------------------------------
def test_manifest_records_source_instrument_rows_first_last_and_coverage(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    df = make_candles(trading_days(date(2024, 6, 3), 2), step=5)
    covered = (ist("2024-06-03T00:00:00"), ist("2024-06-04T23:59:59"))
    write(store, df, covered=covered, now=ist("2024-06-05T08:00:00"))

    m = store.manifest(NIFTY, parse("5m"))
    assert m is not None
    assert (m.source, m.instrument, m.timeframe, m.rows) == ("sample", "NSE:NIFTY 50", "5m", df.height)
    assert (m.first_ts, m.last_ts) == (df["ts"][0], df["ts"][-1])
    assert m.updated_at == ist("2024-06-05T08:00:00")
    assert m.coverage == [covered]
    assert m.partitions["2024"]["rows"] == df.height

    raw = json.loads((store.series_dir(NIFTY, parse("5m")) / MANIFEST).read_text())
    assert raw["source"] == "sample" and raw["instrument"] == "NSE:NIFTY 50" and raw["rows"] == df.height
    assert raw["first_ts"] == "2024-06-03T09:15:00+05:30"
    assert raw["last_ts"] == "2024-06-04T15:25:00+05:30"
    assert raw["coverage"] == [["2024-06-03T00:00:00+05:30", "2024-06-04T23:59:59+05:30"]]


def test_a_range_answered_with_no_candles_still_counts_as_covered(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    weekend = (ist("2024-06-15T00:00:00"), ist("2024-06-16T23:59:59"))
    result = write(store, make_candles(date(2024, 6, 3), step=5).clear(), covered=weekend)
    assert (result.added, result.replaced, result.rows) == (0, 0, 0)
    m = store.manifest(NIFTY, parse("5m"))
    assert m is not None and m.coverage == [weekend] and m.rows == 0
    assert not store.exists(NIFTY, parse("5m"))


def test_engine_download_of_a_weekend_is_refused_and_records_nothing(engine: MarketDataEngine) -> None:
    """Issue 14: a range without an NSE session is an error, not a covered range of nothing."""
    with pytest.raises(InputError, match="no NSE session between 2024-06-15 and 2024-06-16"):
        engine.download("NIFTY", "5m", "2024-06-15", "2024-06-16")
    assert engine.store.manifest(NIFTY, parse("5m")) is None


def test_touching_and_overlapping_covered_ranges_are_unioned(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    empty = candles_at([]).clear()
    a, b, c, d = (
        ist("2024-06-03T09:15:00"),
        ist("2024-06-03T12:00:00"),
        ist("2024-06-03T15:30:00"),
        ist("2024-06-04T15:30:00"),
    )
    write(store, empty, covered=(a, b))
    write(store, empty, covered=(c, d))
    assert store.manifest(NIFTY, parse("5m")).coverage == [(a, b), (c, d)]  # type: ignore[union-attr]
    write(store, empty, covered=(b, c))  # touches both ends
    assert store.manifest(NIFTY, parse("5m")).coverage == [(a, d)]  # type: ignore[union-attr]
    write(store, empty, covered=(a - timedelta(hours=1), a + timedelta(hours=1)))  # overlaps the start
    assert store.manifest(NIFTY, parse("5m")).coverage == [(a - timedelta(hours=1), d)]  # type: ignore[union-attr]


def test_union_ranges_merges_touching_and_overlapping_but_keeps_gaps() -> None:
    t = [ist(f"2024-06-03T{h:02d}:00:00") for h in range(10)]
    assert union_ranges([(t[5], t[6]), (t[0], t[2]), (t[2], t[3]), (t[1], t[2]), (t[7], t[9]), (t[8], t[8])]) == [
        (t[0], t[3]),
        (t[5], t[6]),
        (t[7], t[9]),
    ]


def test_manifest_rows_track_the_files_across_writes(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    may, june = make_candles(date(2024, 5, 31), seed=1), make_candles(date(2024, 6, 3), seed=2)
    write(store, may, "1m")
    write(store, june, "1m")
    m = store.manifest(NIFTY, parse("1m"))
    assert m is not None
    assert m.rows == may.height + june.height == store.read(NIFTY, parse("1m")).height
    assert (m.first_ts, m.last_ts) == (may["ts"][0], june["ts"][-1])
    assert set(m.partitions) == {"2024-05", "2024-06"}
    assert Manifest.from_json(m.to_json()) == m


# -- one source per series ------------------------------------------------------------------
def test_mixing_sources_in_one_series_is_refused_and_changes_no_file(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    write(
        store,
        make_candles(date(2024, 6, 3), step=5),
        source="sample",
        covered=(ist("2024-06-03T00:00:00"), ist("2024-06-03T23:59:00")),
    )
    before = snapshot(cache_dir)

    with pytest.raises(InputError) as err:
        write(
            store,
            make_candles(date(2024, 6, 4), step=5),
            source="kite",
            covered=(ist("2024-06-04T00:00:00"), ist("2024-06-04T23:59:00")),
        )

    message = str(err.value)
    assert "'sample'" in message and "'kite'" in message and "NSE:NIFTY 50" in message
    assert "MDE_CACHE_DIR" in message and "prune" in message
    assert "\n" not in message
    assert snapshot(cache_dir) == before


def test_engine_import_with_another_origin_is_refused(
    engine: MarketDataEngine, cache_dir: Path, tmp_path: Path
) -> None:
    engine.save_cache("NIFTY", "5m", make_candles(date(2024, 6, 3), step=5))
    csv = tmp_path / "more.csv"
    make_candles(date(2024, 6, 4), step=5).with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%:z")).write_csv(csv)
    before = snapshot(cache_dir)
    with pytest.raises(InputError, match="refusing to mix"):
        engine.import_file(csv, "NIFTY", "5m", origin="kite")
    assert snapshot(cache_dir) == before


def test_an_empty_write_from_another_source_is_refused_too(cache_dir: Path) -> None:
    store = CandleStore(cache_dir)
    write(store, make_candles(date(2024, 6, 3), step=5), source="kite")
    before = snapshot(cache_dir)
    with pytest.raises(InputError):
        write(
            store,
            candles_at([]).clear(),
            source="sample",
            covered=(ist("2024-06-15T00:00:00"), ist("2024-06-16T00:00:00")),
        )
    assert snapshot(cache_dir) == before


# -- corrupt cache files ----------------------------------------------------------------------
def _corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "garbage":
        path.write_bytes(b"this is not a parquet file\n" * 50)
    elif how == "wrong-schema":
        pl.DataFrame(
            {"ts": ["2024-06-03 09:15"], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.5]}
        ).write_parquet(path)
    elif how == "float-volume":
        df = pl.read_parquet(path).with_columns(pl.col("volume").cast(pl.Float64))
        df.write_parquet(path)
    elif how == "missing-column":
        pl.read_parquet(path).drop("volume").write_parquet(path)
    else:  # pragma: no cover
        raise AssertionError(how)


CORRUPTIONS = ["truncated", "garbage", "wrong-schema", "float-volume", "missing-column"]


@pytest.fixture
def nifty_cached(engine: MarketDataEngine, nifty_5m: pl.DataFrame) -> Path:
    """The sample's NIFTY 5m for 2024 saved through the engine; returns the partition file."""
    engine.save_cache("NIFTY", "5m", nifty_5m)
    path = engine.store.series_dir(NIFTY, parse("5m")) / "2024.parquet"
    assert path.is_file()
    return path


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_partition_raises_cache_error_naming_the_file_and_leaves_it_alone(
    settings, nifty_cached: Path, cache_dir: Path, how: str
) -> None:
    _corrupt(nifty_cached, how)
    before = snapshot(cache_dir)
    engine = MarketDataEngine(settings)  # a fresh engine: nothing read before the damage

    for read in (lambda: engine.get_window("NIFTY", "5m", limit=20), lambda: engine.load_cache("NIFTY", "5m")):
        with pytest.raises(CacheError) as err:
            read()
        message = str(err.value)
        assert "\n" not in message
        assert str(nifty_cached) in message
        assert "move it aside" in message.lower()

    assert snapshot(cache_dir) == before  # same files, same bytes: nothing deleted or rewritten
    assert err.value.exit_code == 6


@pytest.mark.parametrize("how", ["truncated", "garbage", "wrong-schema"])
def test_writing_into_a_corrupt_partition_is_refused_not_overwritten(
    nifty_cached: Path, cache_dir: Path, how: str
) -> None:
    _corrupt(nifty_cached, how)
    before = snapshot(cache_dir)
    store = CandleStore(cache_dir)
    with pytest.raises(CacheError, match="move it aside|Move it aside"):
        write(store, make_candles(date(2024, 6, 3), step=5))
    after = snapshot(cache_dir)
    assert after == before


@pytest.mark.parametrize("how", ["truncated", "garbage", "wrong-schema"])
def test_cli_window_on_a_corrupt_cache_exits_6_with_one_error_line(
    nifty_cached: Path, cache_dir: Path, how: str
) -> None:
    _corrupt(nifty_cached, how)
    before = snapshot(cache_dir)
    proc = run_mde("--cache-dir", str(cache_dir), "window", "NIFTY", "--timeframe", "5m", env={"MDE_SOURCE": "sample"})
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "2024.parquet" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(cache_dir) == before


def test_corrupt_manifest_is_a_cache_error_and_is_left_alone(nifty_cached: Path, cache_dir: Path) -> None:
    manifest = nifty_cached.parent / MANIFEST
    manifest.write_text("{not json")
    store = CandleStore(cache_dir)
    with pytest.raises(CacheError, match="manifest.json"):
        store.manifest(NIFTY, parse("5m"))
    assert manifest.read_text() == "{not json"


# -- symbols are validated before any path is built --------------------------------------------
BAD_SYMBOLS = [
    "../x",
    "/etc/passwd",
    "a/b",
    "..",
    ".",
    "NIF\x00TY",
    "",
    "   ",
    "\t\n",
    "A" * 65,
    "%2e%2e%2f",
    "..\\x",
    "a\\b",
    "NSE:../x",
    "NSE:..",
    "~/x",
    "NIFTY\t50",
]


@pytest.mark.parametrize("symbol", BAD_SYMBOLS)
def test_bad_symbols_are_refused_before_touching_the_disk(
    settings, tmp_path: Path, cache_dir: Path, symbol: str
) -> None:
    before = tree(tmp_path)
    parent_before = set(os.listdir(tmp_path.parent))
    engine = MarketDataEngine(settings)
    df = make_candles(date(2024, 6, 3), step=5)
    with pytest.raises(InputError):
        engine.save_cache(symbol, "5m", df)
    with pytest.raises(InputError):
        engine.load_cache(symbol, "5m")
    with pytest.raises(InputError):
        engine.get_window(symbol, "5m")
    with pytest.raises(InputError):
        engine.prune("2024-01-01", symbol=symbol)
    assert tree(tmp_path) == before
    assert not cache_dir.exists()
    assert set(os.listdir(tmp_path.parent)) <= parent_before | {tmp_path.name}


def test_engine_prune_with_an_empty_symbol_or_timeframe_is_refused_not_widened_to_everything(
    engine: MarketDataEngine, cache_dir: Path
) -> None:
    engine.save_cache("NIFTY", "5m", make_candles(date(2024, 6, 3), step=5))
    before = snapshot(cache_dir)
    with pytest.raises(InputError):
        engine.prune("2025-01-01", symbol="")
    with pytest.raises(InputError):
        engine.prune("2025-01-01", timeframe="")
    assert snapshot(cache_dir) == before


def test_symbol_of_64_characters_is_accepted_and_stays_inside_the_cache(
    engine: MarketDataEngine, cache_dir: Path
) -> None:
    symbol = "NSE:" + "A" * 60
    engine.save_cache(symbol, "5m", make_candles(date(2024, 6, 3), step=5))
    assert (cache_dir / "NSE" / ("A" * 60) / "5m" / "2024.parquet").is_file()


def test_store_keeps_even_unvalidated_names_inside_its_root(cache_dir: Path) -> None:
    """Defence in depth: dots and slashes are escaped in file names, so no name climbs out."""
    store = CandleStore(cache_dir)
    for inst in (Instrument("..", ".."), Instrument("NSE", "../../x"), Instrument("/", "/etc/passwd")):
        folder = store.series_dir(inst, parse("5m"))
        assert folder.resolve().is_relative_to(cache_dir.resolve())
        assert len(folder.relative_to(cache_dir).parts) == 3


# -- prune ------------------------------------------------------------------------------------
@pytest.fixture
def q2_1m(cache_dir: Path, nifty_1m_q2: pl.DataFrame) -> CandleStore:
    store = CandleStore(cache_dir)
    covered = (nifty_1m_q2["ts"][0], nifty_1m_q2["ts"][-1] + timedelta(minutes=1))
    write(store, nifty_1m_q2, "1m", covered=covered)
    return store


def test_prune_drops_whole_partitions_and_rewrites_the_straddling_one(
    q2_1m: CandleStore, nifty_1m_q2: pl.DataFrame
) -> None:
    store, tf = q2_1m, parse("1m")
    folder = store.series_dir(NIFTY, tf)
    june_before = stats(folder)["2024-06.parquet"]
    cutoff = ist("2024-05-15T00:00:00")

    affected, dropped = store.prune(NIFTY, tf, cutoff, now=ist("2024-07-01T08:00:00"))

    expected = nifty_1m_q2.filter(pl.col("ts") >= cutoff)
    assert affected == ["2024-04", "2024-05"]
    assert dropped == nifty_1m_q2.height - expected.height
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["2024-05.parquet", "2024-06.parquet"]
    assert stats(folder)["2024-06.parquet"] == june_before  # untouched
    assert pl.read_parquet(folder / "2024-05.parquet")["ts"].min() >= cutoff
    assert store.read(NIFTY, tf).equals(expected)

    m = store.manifest(NIFTY, tf)
    assert m is not None
    assert m.rows == expected.height
    assert m.first_ts == expected["ts"][0]
    assert m.coverage == [(cutoff, nifty_1m_q2["ts"][-1] + timedelta(minutes=1))]
    assert set(m.partitions) == {"2024-05", "2024-06"}
    assert m.updated_at == ist("2024-07-01T08:00:00")


def test_prune_after_everything_cached_removes_the_series(q2_1m: CandleStore, nifty_1m_q2: pl.DataFrame) -> None:
    tf = parse("1m")
    affected, dropped = q2_1m.prune(NIFTY, tf, ist("2024-07-01T00:00:00"), now=NOW)
    assert (affected, dropped) == (["2024-04", "2024-05", "2024-06"], nifty_1m_q2.height)
    assert q2_1m.partitions(NIFTY, tf) == []
    assert q2_1m.manifest(NIFTY, tf) is None
    assert q2_1m.list_series() == []
    assert q2_1m.read(NIFTY, tf).is_empty()


def test_prune_dry_run_reports_but_changes_nothing(
    q2_1m: CandleStore, cache_dir: Path, nifty_1m_q2: pl.DataFrame
) -> None:
    before = snapshot(cache_dir)
    cutoff = ist("2024-05-15T00:00:00")
    affected, dropped = q2_1m.prune(NIFTY, parse("1m"), cutoff, now=NOW, dry_run=True)
    assert affected == ["2024-04", "2024-05"]
    assert dropped == nifty_1m_q2.filter(pl.col("ts") < cutoff).height
    assert snapshot(cache_dir) == before


def test_prune_before_everything_cached_changes_nothing(q2_1m: CandleStore, cache_dir: Path) -> None:
    before = snapshot(cache_dir)
    assert q2_1m.prune(NIFTY, parse("1m"), ist("2024-01-01T00:00:00"), now=NOW) == ([], 0)
    assert snapshot(cache_dir) == before


def test_engine_prune_by_date_only_touches_the_chosen_series(
    engine: MarketDataEngine, cache_dir: Path, nifty_1m_q2: pl.DataFrame
) -> None:
    engine.save_cache("NIFTY", "1m", nifty_1m_q2)
    engine.save_cache("BANKNIFTY", "1m", nifty_1m_q2)
    bank_before = snapshot(cache_dir / "NSE" / "NIFTY_BANK")

    dry = engine.prune("2024-06-01", symbol="NIFTY", timeframe="1m", dry_run=True)
    assert [(i.key, t.name, parts) for i, t, parts, _ in dry] == [("NSE:NIFTY 50", "1m", ["2024-04", "2024-05"])]
    assert engine.load_cache("NIFTY", "1m").height == nifty_1m_q2.height

    done = engine.prune("2024-06-01", symbol="NIFTY", timeframe="1m")
    assert done == dry
    left = engine.load_cache("NIFTY", "1m")
    assert left["ts"].min() >= ist("2024-06-01T00:00:00")
    assert engine.store.manifest(NIFTY, parse("1m")).rows == left.height  # type: ignore[union-attr]
    assert snapshot(cache_dir / "NSE" / "NIFTY_BANK") == bank_before


def test_cli_prune_dry_run_changes_nothing(cache_dir: Path, nifty_1m_q2: pl.DataFrame) -> None:
    write(CandleStore(cache_dir), nifty_1m_q2, "1m")
    before = snapshot(cache_dir)
    proc = run_mde(
        "--cache-dir", str(cache_dir), "prune", "--before", "2024-05-15", "--dry-run", env={"MDE_SOURCE": "sample"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "would drop" in proc.stdout and "2024-04, 2024-05" in proc.stdout
    assert snapshot(cache_dir) == before


# -- temp files left by a killed writer ---------------------------------------------------------
def test_stale_temp_files_are_ignored_by_readers_and_removed_by_the_next_writer(
    engine: MarketDataEngine, cache_dir: Path
) -> None:
    first = make_candles(date(2024, 6, 3), step=5)
    engine.save_cache("NIFTY", "5m", first)
    folder = engine.store.series_dir(NIFTY, parse("5m"))
    stale = [folder / ".2024.parquet.k1ll3d.tmp", folder / ".manifest.json.k1ll3d.tmp", folder / ".2025.parquet.x.tmp"]
    stale[0].write_bytes(b"PAR1 half a file")
    stale[1].write_text("{")
    stale[2].write_bytes(b"")

    fresh = MarketDataEngine(engine.settings)
    assert fresh.load_cache("NIFTY", "5m").equals(first)
    assert fresh.get_window("NIFTY", "5m", limit=5).equals(first.tail(5))
    assert fresh.store.partitions(NIFTY, parse("5m")) == [folder / "2024.parquet"]
    assert [(i.key, t.name) for i, t in fresh.store.list_series()] == [("NSE:NIFTY 50", "5m")]
    assert all(p.exists() for p in stale)  # readers leave them alone

    second = make_candles(date(2024, 6, 4), step=5)
    fresh.save_cache("NIFTY", "5m", second)
    assert not any(p.exists() for p in stale)
    assert list(folder.glob("*.tmp")) == list(folder.glob(".*.tmp")) == []
    assert fresh.load_cache("NIFTY", "5m").equals(pl.concat([first, second]))


# -- whole-series replacement (Kite re-adjusted the past) --------------------------------------------
class _Crash(Exception):
    """Stands for a SIGKILL at a chosen point of a swap (the crash test kills for real)."""


@pytest.fixture
def swapped_q2(cache_dir: Path, nifty_1m_q2: pl.DataFrame) -> tuple[CandleStore, pl.DataFrame]:
    """Q2 1m cached; the replacement is June only, every price doubled (an 'adjustment')."""
    store = CandleStore(cache_dir)
    write(store, nifty_1m_q2, "1m", covered=(ist("2024-04-01T00:00:00"), ist("2024-06-30T23:59:00")))
    june = nifty_1m_q2.filter(pl.col("ts") >= ist("2024-06-01T00:00:00"))
    return store, june.with_columns(pl.col("open", "high", "low", "close") * 2)


def test_replace_series_swaps_in_the_whole_series_at_once(swapped_q2, nifty_1m_q2: pl.DataFrame) -> None:
    store, new = swapped_q2
    tf = parse("1m")
    coverage = [(ist("2024-06-01T00:00:00"), ist("2024-06-30T23:59:00"))]
    result = store.replace_series(NIFTY, tf, new, source="sample", coverage=coverage, now=ist("2024-07-01T08:00:00"))

    assert store.read(NIFTY, tf).equals(new)
    folder = store.series_dir(NIFTY, tf)
    assert [p.name for p in folder.glob("*.parquet")] == ["2024-06.parquet"]  # April and May went with the old series
    assert sorted(p.name for p in folder.parent.iterdir()) == [".1m.lock", "1m"]  # no .new/.old left
    assert (result.rows, result.added + result.replaced) == (new.height, new.height)
    m = store.manifest(NIFTY, tf)
    assert m is not None
    assert (m.rows, m.source, m.coverage, m.first_ts) == (new.height, "sample", coverage, new["ts"][0])


def test_a_swap_cut_between_its_two_renames_is_undone_by_the_next_writer(
    swapped_q2, nifty_1m_q2: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, new = swapped_q2
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    old_files = snapshot(folder)
    real_replace = os.replace

    def crash_on_second_rename(src, dst):
        if Path(src).name == ".1m.new":
            raise _Crash
        real_replace(src, dst)

    monkeypatch.setattr(mde_store.os, "replace", crash_on_second_rename)
    with pytest.raises(_Crash):
        store.replace_series(NIFTY, tf, new, source="sample", coverage=[], now=NOW)
    monkeypatch.undo()
    assert not folder.exists() and (folder.parent / ".1m.old").is_dir() and (folder.parent / ".1m.new").is_dir()

    one_more = nifty_1m_q2.tail(1).with_columns(pl.col("ts") + timedelta(minutes=1))
    CandleStore(store.root).write(NIFTY, tf, one_more, source="sample", now=NOW)

    assert store.read(NIFTY, tf).equals(pl.concat([nifty_1m_q2, one_more]))  # the old series stands
    assert {k: v for k, v in snapshot(folder).items() if k != "2024-06.parquet" and k != MANIFEST} == {
        k: v for k, v in old_files.items() if k != "2024-06.parquet" and k != MANIFEST
    }
    assert sorted(p.name for p in folder.parent.iterdir()) == [".1m.lock", "1m"]


def test_a_swap_cut_after_its_renames_keeps_the_new_series_and_drops_the_old(
    swapped_q2, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, new = swapped_q2
    tf = parse("1m")

    def crash(path, *args, **kwargs):
        raise _Crash

    monkeypatch.setattr(mde_store.shutil, "rmtree", crash)
    with pytest.raises(_Crash):
        store.replace_series(NIFTY, tf, new, source="sample", coverage=[], now=NOW)
    monkeypatch.undo()
    folder = store.series_dir(NIFTY, tf)
    assert (folder.parent / ".1m.old").is_dir()
    assert CandleStore(store.root).read(NIFTY, tf).equals(new)  # readers already see the new series

    CandleStore(store.root).write(NIFTY, tf, new.head(0), source="sample", now=NOW)
    assert store.read(NIFTY, tf).equals(new)
    assert sorted(p.name for p in folder.parent.iterdir()) == [".1m.lock", "1m"]


def test_a_half_built_swap_is_discarded_and_the_old_series_kept(swapped_q2, nifty_1m_q2: pl.DataFrame) -> None:
    store, _ = swapped_q2
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    staging = folder.parent / ".1m.new"
    staging.mkdir()
    (staging / "2024-06.parquet").write_bytes(b"PAR1 half a file")
    before = snapshot(folder)

    assert CandleStore(store.root).read(NIFTY, tf).equals(nifty_1m_q2)  # readers never look in .new
    assert store.prune(NIFTY, tf, ist("2024-01-01T00:00:00"), now=NOW) == ([], 0)  # any writer cleans up
    assert not staging.exists()
    assert snapshot(folder) == before


# -- the clock: an incomplete candle is never stored ----------------------------------------------
def test_save_cache_mid_session_stores_only_closed_candles(settings, cache_dir: Path) -> None:
    engine = engine_at(settings, "2024-06-14T10:07:00+05:30")
    day = make_candles(date(2024, 6, 14), step=5)  # 09:15 .. 15:25
    result = engine.save_cache("NIFTY", "5m", day)

    cached = engine.load_cache("NIFTY", "5m")
    assert cached["ts"][-1] == ist("2024-06-14T10:00:00")  # closes 10:05; the 10:05 candle closes 10:10
    assert ist("2024-06-14T10:05:00") not in cached["ts"].to_list()
    assert cached.height == result.added == 10
    assert cached.equals(day.head(10))
    m = engine.store.manifest(NIFTY, parse("5m"))
    assert m is not None and m.last_ts == ist("2024-06-14T10:00:00")

    later = engine_at(settings, "2024-06-14T10:10:00+05:30")
    assert later.save_cache("NIFTY", "5m", day).added == 1  # now 10:05 has closed
    assert later.load_cache("NIFTY", "5m")["ts"][-1] == ist("2024-06-14T10:05:00")


# -- cost flat in history: the manifest is updated, not rebuilt; listings and reads are reused ----
def partitions_from_files(folder: Path) -> dict[str, dict]:
    """What the manifest must say about each partition, recomputed from the files themselves."""
    out = {}
    for path in sorted(folder.glob("*.parquet")):
        df, st = pl.read_parquet(path), path.stat()
        out[path.stem] = {
            "rows": df.height,
            "first": df["ts"][0].isoformat(),
            "last": df["ts"][-1].isoformat(),
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        # candles a source gave that fail validate.check, counted ({} when none)
        out[path.stem]["implausible"] = implausible(df, parse(folder.name), nse())
    return out


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every pl.read_parquet call from now on (its source: a path or a list of paths)."""
    calls: list[object] = []
    real = pl.read_parquet

    def counting(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pl, "read_parquet", counting)
    return calls


@pytest.fixture
def five_months(cache_dir: Path) -> tuple[CandleStore, pl.DataFrame]:
    """A 1m series with a candle every 15 minutes from January to May 2024: five files."""
    df = make_candles(trading_days(date(2024, 1, 1), 100), step=15)
    store = CandleStore(cache_dir)
    write(store, df, "1m")
    assert [p.stem for p in store.partitions(NIFTY, parse("1m"))] == [
        "2024-01",
        "2024-02",
        "2024-03",
        "2024-04",
        "2024-05",
    ]
    return store, df


def test_appends_to_one_partition_among_many_keep_the_manifest_equal_to_the_files(five_months, cache_dir: Path) -> None:
    store, df = five_months
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    before = store.manifest(NIFTY, tf).partitions  # type: ignore[union-attr]
    assert before == partitions_from_files(folder)

    last = df["ts"][-1]
    extra = candles_at([last + timedelta(minutes=15)], price=7.0)
    write(CandleStore(cache_dir), extra, "1m")  # a fresh store, as a cron refresh runs
    march = df.filter(pl.col("ts").dt.month() == 3).head(5).with_columns(pl.col("close") + 1)
    write(store, march, "1m")  # the warm store that wrote the series: a replacement in the middle
    write(store, candles_at([last + timedelta(minutes=30)], price=8.0), "1m")

    m = store.manifest(NIFTY, tf)
    assert m is not None
    assert m.partitions == partitions_from_files(folder)
    for key in ("2024-01", "2024-02", "2024-04"):
        assert m.partitions[key] == before[key]  # entries of files not written are kept as they were
    assert m.rows == df.height + 2 == CandleStore(cache_dir).read(NIFTY, tf).height
    assert (m.first_ts, m.last_ts) == (df["ts"][0], last + timedelta(minutes=30))
    assert store.read(NIFTY, tf).equals(CandleStore(cache_dir).read(NIFTY, tf))  # the read cache is not stale


def test_an_append_decodes_only_the_partition_it_writes(
    five_months, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, df = five_months
    decodes = count_decodes(monkeypatch)
    fresh = CandleStore(cache_dir)
    result = write(fresh, candles_at([df["ts"][-1] + timedelta(minutes=15)]), "1m")
    assert result.rows == df.height + 1
    assert [Path(str(s)).name for s in decodes] == ["2024-05.parquet"]
    decodes.clear()
    assert fresh.read_tail(NIFTY, parse("1m"), 2)["ts"][-1] == df["ts"][-1] + timedelta(minutes=15)
    assert decodes == []  # the written frame went into the read cache


@pytest.mark.parametrize("how", ["rewritten", "older-manifest", "garbled-entry"])
def test_a_manifest_entry_that_no_longer_matches_its_file_is_recomputed(five_months, cache_dir: Path, how: str) -> None:
    """A writer killed between a partition and the manifest, a file replaced by hand, a
    manifest written by an mde that did not record mtimes, or an entry edited into nonsense:
    the next write puts it right (and reads still work before that)."""
    store, df = five_months
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    if how == "rewritten":
        feb = folder / "2024-02.parquet"
        pl.read_parquet(feb).head(7).write_parquet(feb)
    else:
        raw = json.loads((folder / MANIFEST).read_text())
        for entry in raw["partitions"].values():
            if how == "older-manifest":
                del entry["mtime_ns"]
            else:
                entry["first"], entry["last"] = "garbage", "2024-02-01T09:15:00"  # no offset
        (folder / MANIFEST).write_text(json.dumps(raw))
    assert (
        CandleStore(cache_dir)
        .read(NIFTY, tf)
        .equals(pl.concat([pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]))
    )

    write(CandleStore(cache_dir), candles_at([df["ts"][-1] + timedelta(minutes=15)]), "1m")

    m = store.manifest(NIFTY, tf)
    assert m is not None
    assert m.partitions == partitions_from_files(folder)
    assert m.rows == CandleStore(cache_dir).read(NIFTY, tf).height


def test_replace_series_and_prune_leave_a_manifest_equal_to_the_files(five_months, cache_dir: Path) -> None:
    store, df = five_months
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    new = df.filter(pl.col("ts") >= ist("2024-02-10T00:00:00")).with_columns(pl.col("close") * 2)
    store.replace_series(NIFTY, tf, new, source="sample", coverage=[], now=NOW)
    assert store.manifest(NIFTY, tf).partitions == partitions_from_files(folder)  # type: ignore[union-attr]
    assert store.read(NIFTY, tf).equals(new) and CandleStore(cache_dir).read(NIFTY, tf).equals(new)

    store.prune(NIFTY, tf, ist("2024-03-10T00:00:00"), now=NOW)
    m = store.manifest(NIFTY, tf)
    assert m is not None and m.partitions == partitions_from_files(folder)
    assert set(m.partitions) == {"2024-03", "2024-04", "2024-05"}
    assert m.rows == new.filter(pl.col("ts") >= ist("2024-03-10T00:00:00")).height


def _age(folder: Path, seconds: float = 60) -> None:
    """Make the folder's last change look `seconds` old, so its listing may be reused."""
    then = datetime.now().timestamp() - seconds
    os.utime(folder, (then, then))


def count_listings(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = mde_store._partitions_in

    def counting(folder: Path) -> list[Path]:
        calls.append(folder)
        return real(folder)

    monkeypatch.setattr(mde_store, "_partitions_in", counting)
    return calls


def test_the_partition_listing_is_reused_while_the_folder_is_unchanged(
    five_months, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, df = five_months
    tf = parse("1m")
    _age(store.series_dir(NIFTY, tf))
    listings = count_listings(monkeypatch)
    for _ in range(5):
        assert store.exists(NIFTY, tf)
        assert store.read_tail(NIFTY, tf, 3, before=NOW).equals(df.tail(3))
    assert len(listings) == 1
    store.partitions(NIFTY, tf).clear()  # callers get a copy
    assert len(store.partitions(NIFTY, tf)) == 5


def test_a_folder_changed_just_now_is_listed_again_on_every_call(five_months, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timestamps are coarse: a file added in the same tick would not change the mtime."""
    store, _ = five_months
    tf = parse("1m")
    listings = count_listings(monkeypatch)
    for _ in range(3):
        store.exists(NIFTY, tf)
    assert len(listings) == 3


def test_the_listing_sees_a_partition_written_by_another_store(five_months, cache_dir: Path) -> None:
    store, df = five_months
    tf = parse("1m")
    _age(store.series_dir(NIFTY, tf))
    assert store.read_tail(NIFTY, tf, 1, before=NOW)["ts"].to_list() == [df["ts"][-1]]  # listing remembered

    june = make_candles(date(2024, 6, 3), step=15, seed=7)
    write(CandleStore(cache_dir), june, "1m")

    assert store.partitions(NIFTY, tf)[-1].name == "2024-06.parquet"
    assert store.read_tail(NIFTY, tf, 1, before=NOW)["ts"].to_list() == [june["ts"][-1]]


def test_the_listing_sees_a_partition_written_by_another_process(five_months, cache_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    store, _ = five_months
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    _age(folder)
    assert [p.stem for p in store.partitions(NIFTY, tf)][-1] == "2024-05"
    june = make_candles(date(2024, 6, 3), step=15, seed=7)
    june.write_parquet(tmp_path / "june.parquet")
    code = (
        "import sys, polars as pl; from datetime import datetime; from mde.store import CandleStore; "
        "from mde.symbols import Instrument; from mde.timeframes import parse; "
        "CandleStore(sys.argv[1]).write(Instrument('NSE', 'NIFTY 50'), parse('1m'), pl.read_parquet(sys.argv[2]), "
        "source='sample', now=datetime.fromisoformat(sys.argv[3]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(cache_dir), str(tmp_path / "june.parquet"), NOW.isoformat()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr

    assert [p.stem for p in store.partitions(NIFTY, tf)][-1] == "2024-06"
    assert store.read(NIFTY, tf, start=ist("2024-06-01T00:00:00")).equals(june)
    assert store.manifest(NIFTY, tf).partitions == partitions_from_files(folder)  # type: ignore[union-attr]


def test_a_full_read_decodes_the_files_in_one_call_and_caches_each(
    five_months, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, df = five_months
    tf = parse("1m")
    fresh = CandleStore(cache_dir)
    decodes = count_decodes(monkeypatch)
    assert fresh.read(NIFTY, tf).equals(df)
    assert len(decodes) == 1 and len(decodes[0]) == 5  # type: ignore[arg-type]
    decodes.clear()
    march = fresh.read(NIFTY, tf, start=ist("2024-03-01T00:00:00"), end=ist("2024-03-31T23:59:00"))
    assert march.equals(df.filter(pl.col("ts").dt.month() == 3))
    assert fresh.read_tail(NIFTY, tf, 4).equals(df.tail(4))
    assert decodes == []  # every file came from the read cache


@pytest.mark.parametrize("how", ["rows", "first", "last", "no-manifest", "oi-in-one-file"])
def test_a_full_read_that_cannot_trust_the_manifest_reads_file_by_file(five_months, cache_dir: Path, how: str) -> None:
    store, df = five_months
    tf = parse("1m")
    folder = store.series_dir(NIFTY, tf)
    expected = df
    if how == "no-manifest":
        (folder / MANIFEST).unlink()
    elif how == "oi-in-one-file":  # the schemas differ, so one polars call cannot read them all
        june = make_candles(date(2024, 6, 3), step=15, seed=7).with_columns(oi=pl.lit(5, dtype=pl.Int64))
        write(store, june, "1m")
        expected = pl.concat([df, june], how="diagonal_relaxed")
    else:  # an entry that lies while its size and mtime still match: the cuts would be wrong
        raw = json.loads((folder / MANIFEST).read_text())
        entry, nxt = raw["partitions"]["2024-02"], raw["partitions"]["2024-03"]
        if how == "rows":
            entry["rows"] -= 1
            nxt["rows"] += 1
        elif how == "first":
            entry["first"] = nxt["first"]
        else:
            entry["last"] = nxt["last"]
        (folder / MANIFEST).write_text(json.dumps(raw))
    fresh = CandleStore(cache_dir)
    assert fresh.read(NIFTY, tf).equals(expected)
    # what the full read left in the read cache: February is February, whole
    feb = fresh.read(NIFTY, tf, start=ist("2024-02-01T00:00:00"), end=ist("2024-02-29T23:59:00"))
    assert feb.equals(df.filter(pl.col("ts").dt.month() == 2))
    assert fresh.read_tail(NIFTY, tf, 2, before=ist("2024-03-01T00:00:00")).equals(feb.tail(2))


def test_normalize_returns_a_normalized_frame_as_it_is_and_still_fixes_the_rest() -> None:
    from mde.candles import normalize

    df = make_candles(date(2024, 6, 3), step=5)
    assert normalize(df) is df
    shuffled = pl.concat([df.tail(3), df.head(3), df.head(1).with_columns(pl.col("close") + 1)])
    out = normalize(shuffled)
    assert out["ts"].to_list() == df.head(3)["ts"].to_list() + df.tail(3)["ts"].to_list()
    assert out["close"][0] == df["close"][0] + 1  # the last of the duplicates wins
    sorted_with_a_duplicate = pl.concat([df.head(2), df.slice(1, 2)])
    assert normalize(sorted_with_a_duplicate)["ts"].to_list() == df.head(3)["ts"].to_list()
    reordered = df.select("ts", "volume", "open", "high", "low", "close")
    assert normalize(reordered).columns == list(COLUMNS)
    with pytest.raises(InputError, match="empty timestamp"):
        normalize(
            df.with_columns(pl.when(pl.col("volume") >= 0).then(None).otherwise(pl.col("ts")).alias("ts")).head(1)
        )


# -- the window table: one row of multi-line cells prints what one row per candle prints ---------
def _window_table_row_per_candle(df: pl.DataFrame, symbol: str, status, console) -> None:  # type: ignore[no-untyped-def]
    """The straightforward rendering (one table row per candle), for comparison."""
    from rich.table import Table

    from mde.render import _price, status_line

    tf = status.timeframe
    table = Table(
        title=f"{symbol} ({status.instrument}) {tf} · {df.height} candle{'s' if df.height != 1 else ''}",
        caption=status_line(status),
        caption_style="yellow" if status.stale else "dim",
    )
    table.add_column("ts (IST)", no_wrap=True)
    for name in ("open", "high", "low", "close"):
        table.add_column(name, justify="right")
    table.add_column("volume", justify="right")
    fmt = "%Y-%m-%d" if tf.is_daily else "%Y-%m-%d %H:%M"
    for ts, o, h, low, c, v in df.select("ts", "open", "high", "low", "close", "volume").iter_rows():
        table.add_row(ts.strftime(fmt), _price(o), _price(h), _price(low), _price(c), "-" if v is None else f"{v:,}")
    console.print(table)


def test_the_window_table_prints_exactly_what_one_row_per_candle_prints(
    engine: MarketDataEngine, nifty_5m: pl.DataFrame
) -> None:
    import io

    from rich.console import Console

    from mde.render import window_table

    engine.save_cache("NIFTY", "5m", nifty_5m)
    engine.save_cache(
        "NIFTY", "1d", candles_at([ist("2024-12-30T00:00:00"), ist("2024-12-31T00:00:00")], price=23_644.9, volume=0)
    )
    window = engine.get_window("NIFTY", "5m", limit=50)
    status = engine.status("NIFTY", "5m")
    no_volume = window.with_columns(
        pl.when(pl.col("volume") % 3 == 0).then(None).otherwise(pl.col("volume")).alias("volume")
    )
    cases = [
        (window, status),
        (no_volume, status),
        (window.head(1), status),
        (window.head(0), status),
        (engine.get_window("NIFTY", "1d", limit=5), engine.status("NIFTY", "1d")),
    ]
    for df, st in cases:
        for width in (12, 30, 45, 60, 79, 80, 100, 160):
            for terminal in (False, True):
                outputs = []
                for render in (window_table, _window_table_row_per_candle):
                    buf = io.StringIO()
                    console = Console(
                        file=buf,
                        width=width,
                        highlight=False,
                        force_terminal=terminal,
                        color_system="truecolor" if terminal else None,
                    )
                    render(df, "NIFTY", st, console)
                    outputs.append(buf.getvalue())
                assert outputs[0] == outputs[1], (df.height, width, terminal)
