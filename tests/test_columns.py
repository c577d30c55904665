"""mde.columns: polars columns read as flat numbers without a Python object per value."""

from __future__ import annotations

from array import array
from datetime import datetime

import polars as pl
import pytest
from hypothesis import given, strategies as st

from mde.columns import grow, to_array, to_series, view

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    parts=st.lists(st.lists(finite, max_size=30), min_size=1, max_size=5),
    cut=st.integers(0, 10),
    code=st.sampled_from(["d", "q"]),
)
def test_views_and_arrays_hold_the_values_of_chunked_and_sliced_columns(
    parts: list[list[float]], cut: int, code: str
) -> None:
    dtype = pl.Float64 if code == "d" else pl.Int64
    chunks = [pl.Series("x", [v if code == "d" else int(v) % 10**12 for v in p], dtype=dtype) for p in parts]
    column = pl.concat(chunks, rechunk=False)
    column = column.slice(min(cut, column.len()))
    want = column.to_list()
    assert list(view(code, column)) == want
    assert to_array(code, column).tolist() == want
    assert grow(view(code, column)).tolist() == want
    assert to_series("x", to_array(code, column)).to_list() == want


def test_datetimes_are_read_as_epoch_microseconds_whatever_their_unit() -> None:
    ts = pl.Series([datetime(2024, 6, 14, 9, 15), datetime(2024, 6, 14, 9, 20)]).dt.replace_time_zone("Asia/Kolkata")
    want = [1718336700000000, 1718337000000000]
    for unit in ("us", "ms", "ns"):
        assert list(view("q", ts.dt.cast_time_unit(unit))) == want  # type: ignore[arg-type]


def test_a_column_with_nulls_cannot_become_a_typed_array() -> None:
    with pytest.raises(TypeError):
        to_array("q", pl.Series([1, None, 3]))
    assert isinstance(view("q", pl.Series([1, 2, 3])), memoryview)


def test_a_series_made_from_an_array_does_not_pin_it() -> None:
    values = array("d", [1.0, 2.0])
    column = to_series("equity", values)
    values.append(3.0)  # polars holds a copy, so the array can still grow
    values[0] = 9.0
    assert column.to_list() == [1.0, 2.0] and column.name == "equity"
