"""Properties of merging candles: `mde.candles.merge_candles` and `CandleStore.write`.

Frames are drawn from a small set of timestamps so that batches often share candles, and the
values of each candle are drawn too, so "which candle won" is always visible.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta
from functools import reduce
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mde.candles import merge_candles, normalize
from mde.clock import IST
from mde.store import CandleStore
from mde.symbols import Instrument
from mde.timeframes import parse

PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
STORE_PROPS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

MERGE_BASE = datetime(2024, 6, 3, 9, 15, tzinfo=IST)
# 300 slots 6 hours apart from mid-November: the series spans three months and two years, so
# writes touch several partitions (monthly for 1m, yearly for 15m) and their edges in IST.
STORE_BASE = datetime(2023, 11, 15, 9, 15, tzinfo=IST)
STORE_STEP = timedelta(hours=6)
INST = Instrument("NSE", "PROP TEST")
NOW = datetime(2025, 1, 1, tzinfo=IST)

prices = st.floats(min_value=1, max_value=100_000, allow_nan=False, allow_infinity=False)
volumes = st.integers(min_value=0, max_value=10**12)
row = st.tuples(prices, prices, prices, prices, volumes)


def frame(rows: list[tuple[int, tuple]], base: datetime, step: timedelta) -> pl.DataFrame:
    """Rows (slot, (o, h, l, c, v)) as a candle frame in the cache schema (normalized, as the store does)."""
    raw = pl.DataFrame(
        {
            "ts": [base + step * k for k, _ in rows],
            "open": [v[0] for _, v in rows],
            "high": [v[1] for _, v in rows],
            "low": [v[2] for _, v in rows],
            "close": [v[3] for _, v in rows],
            "volume": [v[4] for _, v in rows],
        },
        schema={
            "ts": pl.Datetime("us", "Asia/Kolkata"),
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Int64,
        },
    )
    return normalize(raw)


# Candle frames over 40 slots 15 minutes apart; a slot may repeat in the drawn list
# (normalize keeps the last one, as the store does with a batch).
candle_rows = st.lists(st.tuples(st.integers(0, 39), row), max_size=40)
merge_frames = candle_rows.map(lambda rows: frame(rows, MERGE_BASE, timedelta(minutes=15)))


def as_dict(df: pl.DataFrame) -> dict[datetime, tuple]:
    return {r[0]: r[1:] for r in df.iter_rows()}


# -- merge_candles ------------------------------------------------------------------------------
@PROPS
@given(old=merge_frames, new=merge_frames)
def test_merge_result_is_sorted_and_unique(old: pl.DataFrame, new: pl.DataFrame) -> None:
    merged = merge_candles(old, new)
    assert merged["ts"].is_sorted()
    assert merged["ts"].is_unique().all()
    assert merged.schema == old.schema


@PROPS
@given(old=merge_frames, new=merge_frames)
def test_merge_timestamps_are_the_union_of_both(old: pl.DataFrame, new: pl.DataFrame) -> None:
    merged = merge_candles(old, new)
    assert set(merged["ts"].to_list()) == set(old["ts"].to_list()) | set(new["ts"].to_list())
    assert merged.height == len(set(old["ts"].to_list()) | set(new["ts"].to_list()))


@PROPS
@given(old=merge_frames, new=merge_frames)
def test_merge_newest_candle_wins_for_a_shared_timestamp(old: pl.DataFrame, new: pl.DataFrame) -> None:
    merged = as_dict(merge_candles(old, new))
    expected = {**as_dict(old), **as_dict(new)}
    assert merged == expected


@PROPS
@given(old=merge_frames, new=merge_frames)
def test_merging_the_same_batch_twice_equals_merging_it_once(old: pl.DataFrame, new: pl.DataFrame) -> None:
    once = merge_candles(old, new)
    assert merge_candles(once, new).equals(once)


@PROPS
@given(old=merge_frames)
def test_merging_a_frame_into_itself_or_nothing_changes_nothing(old: pl.DataFrame) -> None:
    assert merge_candles(old, old).equals(old)
    assert merge_candles(old, old.clear()).equals(old)
    assert merge_candles(old.clear(), old).equals(old)


@PROPS
@given(a=merge_frames, b=merge_frames, c=merge_frames)
def test_merging_is_associative(a: pl.DataFrame, b: pl.DataFrame, c: pl.DataFrame) -> None:
    """Fetching in pieces and merging as they come equals merging the pieces first."""
    assert merge_candles(merge_candles(a, b), c).equals(merge_candles(a, merge_candles(b, c)))


# -- CandleStore.write ----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """These properties are about content, not durability (test_store_crash.py covers that):
    skip fsync, which costs ~6 ms a file here and would dominate the runtime."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _files(store: CandleStore, tf: str) -> dict[str, pl.DataFrame]:
    return {p.name: pl.read_parquet(p) for p in store.partitions(INST, parse(tf))}


@STORE_PROPS
@given(
    slots=st.lists(st.tuples(st.integers(0, 299), row), min_size=1, max_size=60, unique_by=lambda r: r[0]),
    tf=st.sampled_from(["1m", "15m"]),
    data=st.data(),
)
def test_writing_disjoint_batches_in_any_split_and_order_equals_writing_all_at_once(slots, tf: str, data) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(slots)), max_size=4), label="cuts"))
    bounds = [0, *cuts, len(slots)]
    batches = [slots[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    order = data.draw(st.permutations(range(len(batches))), label="order")

    with tempfile.TemporaryDirectory() as tmp:
        whole, pieces = CandleStore(Path(tmp) / "whole"), CandleStore(Path(tmp) / "pieces")
        all_at_once = frame(slots, STORE_BASE, STORE_STEP)
        once = whole.write(INST, parse(tf), all_at_once, source="sample", now=NOW)

        results = [
            pieces.write(INST, parse(tf), frame(batches[i], STORE_BASE, STORE_STEP), source="sample", now=NOW)
            for i in order
        ]

        assert once.added == len(slots) and once.replaced == 0
        assert sum(r.added for r in results) == len(slots)
        assert sum(r.replaced for r in results) == 0
        assert results[-1].rows == once.rows == len(slots)
        assert pieces.read(INST, parse(tf)).equals(whole.read(INST, parse(tf)))
        assert pieces.read(INST, parse(tf)).equals(all_at_once)
        whole_files, piece_files = _files(whole, tf), _files(pieces, tf)
        assert whole_files.keys() == piece_files.keys()
        assert all(whole_files[name].equals(piece_files[name]) for name in whole_files)
        m_whole, m_pieces = whole.manifest(INST, parse(tf)), pieces.manifest(INST, parse(tf))
        assert m_whole is not None and m_pieces is not None
        assert (m_pieces.rows, m_pieces.first_ts, m_pieces.last_ts, m_pieces.partitions.keys()) == (
            m_whole.rows,
            m_whole.first_ts,
            m_whole.last_ts,
            m_whole.partitions.keys(),
        )


@STORE_PROPS
@given(
    batches=st.lists(st.lists(st.tuples(st.integers(0, 299), row), max_size=25), min_size=1, max_size=4),
    tf=st.sampled_from(["1m", "15m"]),
)
def test_writing_overlapping_batches_keeps_the_newest_candle_and_counts_right(batches, tf: str) -> None:
    frames = [frame(b, STORE_BASE, STORE_STEP) for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        seen: set[datetime] = set()
        for df in frames:
            result = store.write(INST, parse(tf), df, source="sample", now=NOW)
            stamps = set(df["ts"].to_list())
            assert (result.added, result.replaced) == (len(stamps - seen), len(stamps & seen))
            seen |= stamps
            assert result.rows == len(seen)
        expected = reduce(merge_candles, frames)
        cached = store.read(INST, parse(tf))
        assert cached.equals(expected)
        assert cached["ts"].is_sorted() and cached["ts"].is_unique().all()


@STORE_PROPS
@given(batch=st.lists(st.tuples(st.integers(0, 299), row), max_size=40), tf=st.sampled_from(["1m", "15m"]))
def test_writing_the_same_batch_twice_leaves_the_series_as_after_once(batch, tf: str) -> None:
    df = frame(batch, STORE_BASE, STORE_STEP)
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        first = store.write(INST, parse(tf), df, source="sample", now=NOW)
        after_once = _files(store, tf)
        second = store.write(INST, parse(tf), df, source="sample", now=NOW)
        assert (second.added, second.replaced, second.rows) == (0, df.height, first.rows)
        after_twice = _files(store, tf)
        assert after_once.keys() == after_twice.keys()
        assert all(after_once[name].equals(after_twice[name]) for name in after_once)
