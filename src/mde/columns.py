"""Polars columns <-> typed arrays, through the Arrow C stream interface (nanoarrow).

A replay's hot loop iterates flat sequences of numbers (8 bytes a value, as fast as lists),
and its results go back into polars for metrics and reports. Going through Python objects
costs about 50 ms and a million objects per million values; the Arrow interface lets us
read (or copy) a column's own buffer instead.
"""

from __future__ import annotations

from array import array
from typing import Any, Literal, TypeAlias, cast, overload

import nanoarrow
import polars as pl

IntCode: TypeAlias = Literal["b", "h", "i", "q"]
FloatCode: TypeAlias = Literal["f", "d"]
Code: TypeAlias = IntCode | FloatCode

# array/memoryview type codes of the numeric columns we read without Python objects
CODES: dict[pl.DataType, Code] = {
    pl.Int8(): "b",
    pl.Int16(): "h",
    pl.Int32(): "i",
    pl.Int64(): "q",
    pl.Float32(): "f",
    pl.Float64(): "d",
}
_DTYPES = {code: dtype for dtype, code in CODES.items()}


@overload
def view(code: IntCode, series: pl.Series) -> memoryview[int] | array[int]: ...
@overload
def view(code: FloatCode, series: pl.Series) -> memoryview[float] | array[float]: ...
@overload
def view(code: Code, series: pl.Series) -> memoryview[int] | memoryview[float] | array[int] | array[float]: ...
def view(code: Code, series: pl.Series) -> memoryview[int] | memoryview[float] | array[int] | array[float]:
    """A column's values without a copy: a read-only memoryview of its buffer when it is one
    chunk without nulls, else `to_array`. `code` is a CODES value; datetimes are read as
    epoch microseconds ("q").

    The view keeps the buffer alive on its own, and iterates nearly as fast as a typed array.
    """
    series = _physical(code, series)
    chunks = _chunk_bytes(code, series) if series.n_chunks() == 1 else None
    if chunks is not None and len(chunks) == 1:
        return chunks[0].cast(code)
    return to_array(code, series)


@overload
def to_array(code: IntCode, series: pl.Series) -> array[int]: ...
@overload
def to_array(code: FloatCode, series: pl.Series) -> array[float]: ...
@overload
def to_array(code: Code, series: pl.Series) -> array[int] | array[float]: ...
def to_array(code: Code, series: pl.Series) -> array[int] | array[float]:
    """A column as a typed array: its buffers copied chunk by chunk.

    Columns with nulls, or buffers of an unexpected layout, go through `to_list`, which gives
    the same values (and fails on a null, as the array cannot hold one).
    """
    out = array(code)
    series = _physical(code, series)
    chunks = _chunk_bytes(code, series)
    if chunks is None:
        out.fromlist(series.to_list())
    else:
        for raw in chunks:
            out.frombytes(raw)
    return out


def _chunk_bytes(code: Code, series: pl.Series) -> list[memoryview[int]] | None:
    """The bytes of each chunk's values (its own memory, offset applied), or None when the
    column has nulls or a buffer is not `code`-sized values."""
    if series.null_count():
        return None
    size = array(code).itemsize
    out: list[memoryview[int]] = []
    for chunk in nanoarrow.Array(series).iter_chunk_views():
        if chunk.n_buffers != 2:
            return None
        raw = memoryview(chunk.buffer(1))
        if raw.itemsize != size:
            return None
        out.append(raw.cast("B")[chunk.offset * size : (chunk.offset + chunk.length) * size])
    return out


def to_series(name: str, values: array[int] | array[float], *, copy: bool = True) -> pl.Series:
    """A typed array as a polars column. With `copy`, the bytes are copied first; without,
    polars holds the array's own buffer, and the array can no longer grow (BufferError) while
    the column lives: for arrays that are final."""
    code = cast(Code, values.typecode)  # the arrays of this module: made with a CODES value
    if not len(values):
        return pl.Series(name, [], dtype=_DTYPES[code])
    buffer = memoryview(values.tobytes()).cast(code) if copy else memoryview(values)
    return pl.Series(nanoarrow.Array(buffer)).alias(name)


def grow(values: memoryview[Any] | array[Any]) -> array[Any]:
    """A typed array with the values of a view (a copy that can be appended to)."""
    if isinstance(values, array):
        return values
    out = array(values.format)
    out.frombytes(values.cast("B"))
    return out


def _physical(code: Code, series: pl.Series) -> pl.Series:
    """The series with the storage the code asks for; datetimes as epoch microseconds."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime) and code == "q":
        return series if dtype.time_unit == "us" else series.dt.epoch("us")  # us: stored as epoch microseconds
    return series if dtype == _DTYPES[code] else series.cast(_DTYPES[code])
