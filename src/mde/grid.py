"""Parameter grids and walk-forward folds for `mde sweep`.

`-p fast=5,10,20` lists values, `-p fast=5:50:5` is an inclusive range (exact decimal steps:
`0.1:0.3:0.1` is 0.1, 0.2, 0.3, never 0.30000000000000004), and both mix: `fast=2,5:50:5`.
A grid is the product of its parameters in a stable order (the first parameter varies
slowest, like `itertools.product`), and `sample` draws a seeded subset of it without
replacement that is the same on every run, platform and Python version (its own random
numbers from BLAKE2b, not `random`), without building a grid it does not need.

`walk_forward` cuts a date range into train/test folds on the NSE calendar.
"""

from __future__ import annotations

import hashlib
import math
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import TypeAlias, overload

from .calendar import Calendar, nse
from .errors import InputError

Value: TypeAlias = int | float | str
Combo: TypeAlias = dict[str, Value]

# Without --samples a grid larger than this is refused (100 combinations of a year of 1m
# take ~3 s on 2 cores; 10,000 take minutes to hours): `--samples N` runs a random part of it.
MAX_COMBINATIONS = 10_000

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT_MIN, _FLOAT_MAX = Decimal("1e-300"), Decimal("1e300")
MAX_RANGE = 10**12  # values of one range: start + i * step stays exact in 60 digits
_EXACT = Context(prec=60)


# -- values --------------------------------------------------------------------------------------


def _number(text: str, *, bounded: bool = True) -> Decimal | None:
    """A finite decimal literal (`5`, `-0.25`, `1e-3`), or None; `bounded`: also None beyond
    what a double holds (it would turn into inf, or 0.0 for a tiny non-zero value)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if bounded and value != 0 and not _FLOAT_MIN < value.copy_abs() < _FLOAT_MAX:
        return None
    return value


def _typed(text: str) -> Value:
    """A list value keeps its type when that loses nothing: `5` -> 5, `0.5` -> 0.5; text whose
    number would print differently (`05`, `2.50`, `+5`, `1e3`) stays text, which the strategy
    converts to its parameter's type (so `str(value)` is always what the user typed)."""
    if _INT.fullmatch(text) and str(int(text)) == text:
        return int(text)
    num = _number(text)
    if num is not None:
        as_float = float(num)  # Decimal reads more spellings than float() (`1_0`, other scripts' digits)
        if repr(as_float) == text:
            return as_float
    return text


def _typed_as(text: str, kind: type | None) -> Value:
    """With the parameter's type known, a number becomes that type (`05` -> 5 for an int);
    text the type cannot read stays text, for the strategy to refuse in its own words."""
    if kind is str:
        return text
    if kind is int and _INT.fullmatch(text):
        return int(text)
    num = _number(text)
    if kind is float and num is not None:
        return float(num)
    return _typed(text)


class DecimalRange(Sequence[Value]):
    """START:STOP:STEP, STOP included when a step lands on it, computed as start + i * step
    in decimal: ints when all three are integer literals, else floats (the nearest double to
    the exact decimal, no accumulated drift). Indexable without building the list."""

    def __init__(self, start: Decimal, stop: Decimal, step: Decimal, integral: bool) -> None:
        self.start, self.step, self.integral = start, step, integral
        with localcontext(_EXACT):
            self._len = int((stop - start) // step) + 1

    def __len__(self) -> int:
        return self._len

    def _at(self, i: int) -> Value:
        with localcontext(_EXACT):
            value = self.start + i * self.step
        return int(value) if self.integral else float(value)

    @overload
    def __getitem__(self, i: int) -> Value: ...
    @overload
    def __getitem__(self, i: slice) -> list[Value]: ...
    def __getitem__(self, i: int | slice) -> Value | list[Value]:
        if isinstance(i, slice):
            return [self._at(k) for k in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._at(i)


class _Axis(Sequence[Value]):
    """One parameter's values: its list items and ranges, concatenated, indexable lazily."""

    def __init__(self, parts: list[Sequence[Value]]) -> None:
        self.parts = parts
        self.starts = [0]
        for part in parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    @overload
    def __getitem__(self, i: int) -> Value: ...
    @overload
    def __getitem__(self, i: slice) -> list[Value]: ...
    def __getitem__(self, i: int | slice) -> Value | list[Value]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        p = bisect_left(self.starts, i + 1) - 1
        return self.parts[p][i - self.starts[p]]


def _range(name: str, item: str, pair: str, kind: type | None) -> DecimalRange:
    parts = item.split(":")
    nums = [_number(p.strip()) for p in parts]
    if len(parts) != 3 or any(_number(p.strip(), bounded=False) is None for p in parts):
        raise InputError(f"--param {pair!r}: a range is START:STOP:STEP with numbers, like {name}=5:50:5")
    if any(n is None for n in nums):
        raise InputError(f"--param {pair!r}: a number of the range is beyond 1e300 or closer to 0 than 1e-300")
    start, stop, step = (n for n in nums if n is not None)
    if step <= 0:
        raise InputError(f"--param {pair!r}: the step must be above 0, like {name}=5:50:5")
    if stop < start:
        raise InputError(
            f"--param {pair!r}: the range runs down ({start} > {stop}); write it START:STOP:STEP with START <= STOP"
        )
    with localcontext(_EXACT):
        count = (stop - start) / step
    if count >= MAX_RANGE:
        raise InputError(f"--param {pair!r}: the range has over {MAX_RANGE:,} values; use a larger step")
    integral = all(_INT.fullmatch(p.strip()) for p in parts)
    if kind is int and not integral:
        raise InputError(f"--param {pair!r}: {name} is a whole number; use whole START:STOP:STEP")
    if kind is float:
        integral = False
    return DecimalRange(start, stop, step, integral)


# -- grids ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """The parameters of a sweep: names in the order given, each with its values."""

    axes: tuple[tuple[str, Sequence[Value]], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.axes]

    def __len__(self) -> int:
        return math.prod(len(values) for _, values in self.axes)

    def combo(self, index: int) -> Combo:
        """The combination at `index` of the product order (the last parameter varies fastest)."""
        out: Combo = {}
        for name, values in reversed(self.axes):
            index, k = divmod(index, len(values))
            out[name] = values[k]
        return {name: out[name] for name, _ in self.axes}

    def __iter__(self) -> Iterator[Combo]:
        return (self.combo(i) for i in range(len(self)))

    def combos(self, limit: int = MAX_COMBINATIONS) -> list[Combo]:
        """Every combination, refused with advice when there are more than `limit`."""
        total = len(self)
        if total > limit:
            raise InputError(
                f"the --param values make {total:,} combinations, more than {limit:,}; "
                f"add --samples N to run a random sample of them, or narrow the ranges"
            )
        return list(self)

    def sample(self, n: int, seed: int = 0, limit: int = MAX_COMBINATIONS) -> list[Combo]:
        """`n` distinct combinations drawn at random with `seed`, in grid order; all of them when
        n >= the grid's size. The same (grid, n, seed) gives the same sample everywhere."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"--samples must be a whole number >= 1, got {n!r}")
        if n > limit:
            raise InputError(f"--samples {n:,} is more than {limit:,} combinations; ask for fewer")
        total = len(self)
        if n >= total:
            return list(self)
        return [self.combo(i) for i in sorted(sample_indices(total, n, seed))]


def parse_grid(pairs: Sequence[str], kinds: Mapping[str, type] | None = None) -> Grid:
    """`["fast=5:50:5", "slow=60,120"]` -> a Grid. Accepts everything `replay.param_grid` does
    (NAME=V1,V2,...) with the same combinations in the same order, except a parameter named
    twice or a value listed twice in one parameter (errors here: typos that would run the same
    combinations twice), plus ranges START:STOP:STEP.

    `kinds` (the strategy's parameter types, name -> int/float/bool/str) makes `:` plain text
    for a str parameter (`square_off=15:10` is a time, not a range) and a typo for a number
    (`fast=5:50` is an error). Without `kinds`, an item is a range when it is three numbers
    joined by `:` and text otherwise."""
    axes: list[tuple[str, Sequence[Value]]] = []
    seen: set[str] = set()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {pair!r} is not NAME=VALUE (or NAME=V1,V2 / NAME=START:STOP:STEP for a sweep)")
        if key in seen:
            raise InputError(f"--param {key} is given twice; give all its values in one: {key}=V1,V2")
        seen.add(key)
        kind = kinds.get(key) if kinds is not None else None
        items = [v.strip() for v in value.split(",")]
        if any(v == "" for v in items):
            raise InputError(f"--param {pair!r} has an empty value")
        parts: list[Sequence[Value]] = []
        literal: list[Value] = []
        for item in items:
            colons = ":" in item and kind is not str and kind is not bool
            if colons and (kind in (int, float) or _is_range(item)):
                if literal:
                    parts.append(literal)
                    literal = []
                parts.append(_range(key, item, pair, kind))
            else:
                literal.append(_typed_as(item, kind))
        if literal:
            parts.append(literal)
        axis = _Axis(parts)
        _check_distinct(key, pair, axis)
        axes.append((key, axis))
    return Grid(tuple(axes))


def _is_range(item: str) -> bool:
    parts = item.split(":")
    return len(parts) == 3 and all(_number(p.strip(), bounded=False) is not None for p in parts)


def _check_distinct(key: str, pair: str, axis: _Axis) -> None:
    """No value twice (5 and 5.0 are the same number, `05` and 5 the same text once converted)."""
    if len(axis.parts) == 1 and isinstance(axis.parts[0], DecimalRange):
        return  # a range is distinct by construction (and may be too long to look through)
    if len(axis) > MAX_COMBINATIONS * 10:  # only ever sampled; a repeat there costs a duplicate row, not a wrong one
        return
    seen: dict[object, Value] = {}
    for v in axis:
        canon: object = _number(v) if isinstance(v, str) and _number(v) is not None else v
        if isinstance(canon, (int, float)):
            canon = Decimal(repr(canon)) if isinstance(canon, float) else Decimal(canon)
        if isinstance(canon, Decimal):
            canon = canon.normalize()
        if canon in seen:
            raise InputError(f"--param {pair!r} lists {seen[canon]!s} twice; each value once")
        seen[canon] = v


# -- seeded sampling -----------------------------------------------------------------------------


class _Draws:
    """Uniform integers from BLAKE2b(seed, counter): a fixed algorithm, so a seed means the same
    numbers on every platform and Python version (`random`'s methods may change between them)."""

    def __init__(self, seed: int) -> None:
        self.key = hashlib.blake2b(str(int(seed)).encode(), digest_size=16).digest()
        self.counter = 0

    def below(self, n: int) -> int:
        """Uniform in [0, n) by rejection (no modulo bias)."""
        bits = max(1, (n - 1).bit_length())
        while True:
            self.counter += 1
            raw = hashlib.blake2b(self.counter.to_bytes(8, "big"), key=self.key, digest_size=16).digest()
            x = int.from_bytes(raw, "big") >> (128 - bits)
            if x < n:
                return x


def sample_indices(total: int, n: int, seed: int) -> set[int]:
    """`n` distinct integers of range(total), uniformly (Floyd's algorithm: n draws, no list of
    `total`)."""
    if not 0 <= n <= total:
        raise InputError(f"cannot sample {n} of {total}")
    draws = _Draws(seed)
    chosen: set[int] = set()
    for j in range(total - n, total):
        t = draws.below(j + 1)
        chosen.add(j if t in chosen else t)
    return chosen


# -- walk-forward folds --------------------------------------------------------------------------

UNITS = {"D": "trading days", "W": "weeks", "M": "months", "Y": "years"}
_SPAN = re.compile(r"([0-9]+)([DWMY])")


@dataclass(frozen=True)
class Span:
    count: int
    unit: str  # D trading days (sessions of the NSE calendar), W calendar weeks, M months, Y years

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"


@dataclass(frozen=True)
class WalkForward:
    train: Span
    test: Span
    anchored: bool = False


@dataclass(frozen=True)
class Fold:
    """Trading days, inclusive at both ends: train_end < test_start, and test_start is the
    trading day after train_end."""

    train_start: date
    train_end: date
    test_start: date
    test_end: date


def parse_walk_forward(text: str) -> WalkForward:
    """`train=6M,test=1M[,anchored]`; units D (trading days), W (weeks), M (months), Y (years)."""
    how = "use --walk-forward train=6M,test=1M[,anchored] (units D trading days, W weeks, M months, Y years)"
    spans: dict[str, Span] = {}
    anchored = False
    for raw in str(text).split(","):
        item = raw.strip()
        if item.lower() == "anchored":
            anchored = True
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        match = _SPAN.fullmatch(value.strip().upper())
        if not sep or key not in ("train", "test") or key in spans or match is None or int(match.group(1)) < 1:
            raise InputError(f"bad --walk-forward {text!r} at {item!r}; {how}")
        spans[key] = Span(int(match.group(1)), match.group(2))
    if set(spans) != {"train", "test"}:
        raise InputError(f"bad --walk-forward {text!r}: it needs both train= and test=; {how}")
    return WalkForward(spans["train"], spans["test"], anchored)


def _add_months(day: date, months: int) -> date:
    """Same day of the month `months` later, clamped to the month's last day (Jan 31 + 1M = Feb 28)."""
    y, m = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= y <= 9999:
        raise InputError("the walk-forward windows run past the years mde handles")
    last = (date(y + (m + 1) // 12, (m + 1) % 12 + 1, 1) - timedelta(days=1)).day
    return date(y, m + 1, min(day.day, last))


def walk_forward(
    spec: str | WalkForward,
    start: date,
    end: date,
    calendar: Calendar | None = None,
) -> list[Fold]:
    """Folds over the trading days of [start, end] (inclusive): the first train window starts
    at `start`; the tests follow it back to back up to `end` (the last one may be shorter); a
    rolling train window is the `train` span before its test, an anchored one starts at `start`.

    Windows are cut on calendar dates (W, M, Y: Jan 31 + 1M = Feb 28) or counts of trading
    days (D), then reduced to their trading days; a window with none is skipped, so the tests
    tile every trading day after the first train window."""
    wf = parse_walk_forward(spec) if isinstance(spec, str) else spec
    if end < start:
        raise InputError(f"the walk-forward range runs backwards ({start} to {end})")
    cal = calendar or nse()
    days: list[date] = []
    d = start
    while d <= end:
        if cal.is_trading_day(d):
            days.append(d)
        d += timedelta(days=1)

    def later(base: date, span: Span, times: int) -> date:
        """`base` moved by `times` calendar spans (W, M, Y)."""
        n = span.count * times
        if span.unit == "W":
            return base + timedelta(weeks=n)
        return _add_months(base, n * (12 if span.unit == "Y" else 1))

    # the first test starts `train` after `start`: a count of trading days, or a calendar date
    if wf.train.unit == "D":
        first_test = wf.train.count
        origin = days[first_test] if first_test < len(days) else end
    else:
        origin = later(start, wf.train, 1)
        first_test = bisect_left(days, origin)
    if not 1 <= first_test < len(days):  # no trading day in the first train window, or none after it
        raise InputError(
            f"{start} to {end} has {len(days)} trading days: too short for one fold of train={wf.train} "
            f"and a test after it; widen the range or shorten the windows"
        )

    def test_start(k: int) -> int:
        """Index into `days` of the k-th test window's first trading day (len(days) past the end)."""
        if wf.test.unit == "D":
            return min(first_test + k * wf.test.count, len(days))
        return bisect_left(days, later(origin, wf.test, k))

    folds: list[Fold] = []
    k = 0
    while (lo := test_start(k)) < len(days):
        hi = test_start(k + 1)
        if hi > lo:  # else a test window without trading days (a long holiday): nothing to test
            if wf.anchored or k == 0:  # the first train window is [start, start + train) by definition
                t0 = 0
            elif wf.train.unit == "D":
                t0 = max(0, lo - wf.train.count)
            else:  # the train span before the test window's calendar start
                edge = days[lo] if wf.test.unit == "D" else later(origin, wf.test, k)
                t0 = min(bisect_left(days, later(edge, wf.train, -1)), lo - 1)
            folds.append(Fold(days[t0], days[lo - 1], days[lo], days[hi - 1]))
        k += 1
    return folds
