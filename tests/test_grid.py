"""Parameter grids (`-p fast=5:50:5`), seeded samples of them, and walk-forward folds on the
NSE calendar."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import example, given, settings, strategies as st

from mde.calendar import Calendar, nse
from mde.errors import InputError
from mde.grid import (
    MAX_COMBINATIONS,
    Fold,
    Span,
    WalkForward,
    parse_grid,
    parse_walk_forward,
    sample_indices,
    walk_forward,
)
from mde.strategy import coerce_param, load_strategy, parse_params


def param_grid(pairs: list[str]) -> list[dict[str, str]]:
    """`replay.param_grid` as it was before it became `parse_grid(pairs, kinds).combos()`: the
    behaviour the switch must keep (text values, the product in the order given)."""
    parsed = parse_params(pairs)
    keys = list(parsed)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(parsed[k] for k in keys))]


# distinct once converted (no two are the same number), as a sweep's values must be
TOKENS = ["5", "10", "-3", "0.5", "2.50", "abc", "true", "1e3", "+7", "x y", "05:30"]
NAMES = ["fast", "slow", "stop", "square_off", "mode"]


@st.composite
def list_specs(draw: st.DrawFn) -> list[str]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    return [
        f"{name}={','.join(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4, unique=True)))}"
        for name in names
    ]


# -- lists: the same combinations as replay.param_grid -----------------------------------------------


@settings(max_examples=100, deadline=None)
@given(list_specs())
def test_list_specs_give_param_grids_combinations(pairs: list[str]) -> None:
    expected = param_grid(pairs)
    grid = parse_grid(pairs)
    # values keep their type only where that loses nothing: str() is always what was typed
    assert [{k: str(v) for k, v in combo.items()} for combo in grid.combos()] == expected
    # a strategy's str parameters keep their text as given, colons included
    as_text = parse_grid(pairs, {name: str for name in NAMES})
    assert as_text.combos() == expected


def test_no_params_is_one_empty_combination_like_param_grid() -> None:
    assert parse_grid([]).combos() == param_grid([]) == [{}]


def test_list_values_keep_their_type() -> None:
    (combo,) = parse_grid(["fast=5", "stop=0.5", "mode=abc", "pad=05", "x=2.50", "big=1e3"]).combos()
    assert combo == {"fast": 5, "stop": 0.5, "mode": "abc", "pad": "05", "x": "2.50", "big": "1e3"}
    assert type(combo["fast"]) is int and type(combo["stop"]) is float


def test_known_parameter_types_convert_numbers() -> None:
    kinds = {"fast": int, "stop": float, "tag": str, "on": bool}
    (combo,) = parse_grid(["fast=05", "stop=2.50", "tag=007", "on=1"], kinds).combos()
    assert combo == {"fast": 5, "stop": 2.5, "tag": "007", "on": 1}
    assert type(combo["fast"]) is int and type(combo["stop"]) is float
    assert parse_grid(["fast=abc"], kinds).combos() == [{"fast": "abc"}]  # the strategy refuses it in its words


def test_combinations_vary_the_last_parameter_fastest() -> None:
    combos = parse_grid(["fast=5,10", "slow=20:40:10"]).combos()
    assert [(c["fast"], c["slow"]) for c in combos] == list(itertools.product([5, 10], [20, 30, 40]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_combo_at_index_is_the_product_order(sizes: list[int]) -> None:
    pairs = [f"p{i}={','.join(str(v) for v in range(n))}" for i, n in enumerate(sizes)]
    grid = parse_grid(pairs)
    product = [
        dict(zip([f"p{i}" for i in range(len(sizes))], combo, strict=True))
        for combo in itertools.product(*(range(n) for n in sizes))
    ]
    assert len(grid) == len(product) and list(grid) == product


# -- ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ("fast=5:50:5", [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]),
        ("fast=5:50:7", [5, 12, 19, 26, 33, 40, 47]),  # STOP only when a step lands on it
        ("fast=7:7:1", [7]),
        ("fast=-2:2:2", [-2, 0, 2]),
        ("x=0.1:0.3:0.1", [0.1, 0.2, 0.3]),  # not 0.30000000000000004
        ("x=0:1:0.1", [k / 10 for k in range(11)]),
        ("x=1.5:3:0.5", [1.5, 2.0, 2.5, 3.0]),
        ("x=1e-3:3e-3:1e-3", [0.001, 0.002, 0.003]),
        ("fast=2,5:15:5,100", [2, 5, 10, 15, 100]),  # lists and ranges mix
    ],
)
def test_ranges_are_inclusive_and_exact(spec: str, values: list[float]) -> None:
    name = spec.partition("=")[0]
    got = [combo[name] for combo in parse_grid([spec]).combos()]
    assert got == values
    assert [type(v) for v in got] == [type(v) for v in values]


def test_kinds_decide_what_a_colon_means() -> None:
    # without kinds: three numbers are a range, anything else text (square_off=15:20 is a time)
    assert parse_grid(["square_off=15:20"]).combos() == [{"square_off": "15:20"}]
    assert parse_grid(["fast=a:b"]).combos() == [{"fast": "a:b"}]
    # a str parameter never has ranges; a float parameter's integer range gives floats
    assert parse_grid(["tag=1:3:1"], {"tag": str}).combos() == [{"tag": "1:3:1"}]
    assert [c["x"] for c in parse_grid(["x=1:3:1"], {"x": float}).combos()] == [1.0, 2.0, 3.0]
    assert all(type(c["x"]) is float for c in parse_grid(["x=1:3:1"], {"x": float}).combos())


@pytest.mark.parametrize(
    ("pairs", "kinds", "message"),
    [
        (["fast=5:50:0"], None, "the step must be above 0"),
        (["fast=5:50:-5"], None, "the step must be above 0"),
        (["fast=50:5:5"], None, "runs down"),
        (["fast="], None, "empty value"),
        (["fast=5,,10"], None, "empty value"),
        (["=5"], None, "not NAME=VALUE"),
        (["fast"], None, "not NAME=VALUE"),
        (["fast=a:b"], {"fast": int}, "a range is START:STOP:STEP"),
        (["fast=5:50"], {"fast": int}, "a range is START:STOP:STEP"),
        (["fast=5:50:2.5"], {"fast": int}, "whole number"),
        (["fast=5", "fast=10"], None, "given twice"),
        (["fast=5,10,5"], None, "lists 5 twice"),
        (["fast=5,05"], None, "twice"),
        (["x=0.5,0.50"], None, "twice"),
        (["fast=4,2:10:1"], None, "lists 4 twice"),
        (["a=1:100:1", "b=1:101:1"], None, "10,100 combinations, more than 10,000; add --samples N"),
    ],
)
def test_bad_specs_are_one_line(pairs: list[str], kinds: dict[str, type] | None, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        parse_grid(pairs, kinds).combos()
    assert "\n" not in str(info.value)


# -- samples -----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 200), st.integers(0, 2**64))
def test_a_sample_is_a_subset_of_the_grid_of_the_requested_size(a: int, b: int, n: int, seed: int) -> None:
    grid = parse_grid([f"fast=1:{a}:1", f"slow=100:{99 + b}:1"])
    everything = grid.combos()
    sample = grid.sample(n, seed=seed)
    assert len(sample) == min(n, len(everything))
    keys = [(c["fast"], c["slow"]) for c in sample]
    assert len(set(keys)) == len(keys)  # without replacement
    order = [(c["fast"], c["slow"]) for c in everything]
    assert keys == sorted(keys, key=order.index)  # in grid order
    assert sample == grid.sample(n, seed=seed)  # same seed, same sample


def test_a_seed_means_the_same_sample_everywhere() -> None:
    # pinned: the draws are BLAKE2b(seed, counter), not `random`, so these never change with the
    # platform or the Python version (changing them breaks users' recorded sweeps)
    assert sorted(sample_indices(100, 5, seed=42)) == sorted(sample_indices(100, 5, seed=42))
    assert sorted(sample_indices(1000, 6, seed=7)) == PINNED_7
    grid = parse_grid(["fast=5:50:5", "slow=60:240:20"])
    assert grid.sample(3, seed=1) == [grid.combo(i) for i in PINNED_GRID_1]
    assert grid.sample(3, seed=1) != grid.sample(3, seed=2)


PINNED_7 = [10, 108, 156, 644, 814, 922]  # from the first run, frozen
PINNED_GRID_1 = [15, 16, 97]


def test_sampling_a_huge_grid_does_not_build_it() -> None:
    grid = parse_grid(["fast=1:1000000:1", "slow=1:1000000:1", "stop=0.001:10:0.001"])
    assert len(grid) == 10**12 * 10_000
    sample = grid.sample(5, seed=3)
    assert len(sample) == 5 and len({tuple(c.values()) for c in sample}) == 5
    fast = [c["fast"] for c in sample]
    stop = [c["stop"] for c in sample]
    assert all(isinstance(v, int) and 1 <= v <= 1_000_000 for v in fast)
    assert all(isinstance(v, float) and 0.001 <= v <= 10 for v in stop)
    with pytest.raises(InputError, match="add --samples N"):
        grid.combos()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10_000), st.integers(0, 2**32))
def test_sample_indices_are_distinct_and_in_range(total: int, seed: int) -> None:
    n = min(total, 50)
    got = sample_indices(total, n, seed)
    assert len(got) == n and all(0 <= i < total for i in got)


@pytest.mark.parametrize(("n", "message"), [(0, ">= 1"), (-1, ">= 1"), (MAX_COMBINATIONS + 1, "ask for fewer")])
def test_bad_sample_sizes(n: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_grid(["fast=1:5:1"]).sample(n)


# -- walk-forward ------------------------------------------------------------------------------------


def test_parse_walk_forward() -> None:
    assert parse_walk_forward("train=6M,test=1M") == WalkForward(Span(6, "M"), Span(1, "M"), False)
    assert parse_walk_forward(" train=250d , test=2W , anchored ") == WalkForward(Span(250, "D"), Span(2, "W"), True)
    assert parse_walk_forward("test=1Y,train=3Y") == WalkForward(Span(3, "Y"), Span(1, "Y"), False)


@pytest.mark.parametrize(
    "text",
    [
        "train=6M",
        "test=1M",
        "train=6X,test=1M",
        "train=0M,test=1M",
        "train=6M,test=1M,train=3M",
        "6M,1M",
        "train=M,test=1M",
        "train=6M,test=1M,rolling",
        "",
    ],
)
def test_bad_walk_forward_specs(text: str) -> None:
    with pytest.raises(InputError, match="train=6M,test=1M") as info:
        parse_walk_forward(text)
    assert "\n" not in str(info.value)


def test_monthly_folds_of_2023() -> None:
    # 2023: Jan 1 is a Sunday; Oct 2 (Gandhi Jayanti) a holiday; Sep 30, Dec 30-31 weekends
    folds = walk_forward("train=6M,test=1M", date(2023, 1, 1), date(2023, 12, 31))
    assert folds[0] == Fold(date(2023, 1, 2), date(2023, 6, 30), date(2023, 7, 3), date(2023, 7, 31))
    assert [(f.test_start, f.test_end) for f in folds[2:4]] == [
        (date(2023, 9, 1), date(2023, 9, 29)),
        (date(2023, 10, 3), date(2023, 10, 31)),
    ]
    assert folds[-1] == Fold(date(2023, 6, 1), date(2023, 11, 30), date(2023, 12, 1), date(2023, 12, 29))
    assert len(folds) == 6
    anchored = walk_forward("train=6M,test=1M,anchored", date(2023, 1, 1), date(2023, 12, 31))
    assert [(f.test_start, f.test_end) for f in anchored] == [(f.test_start, f.test_end) for f in folds]
    assert {f.train_start for f in anchored} == {date(2023, 1, 2)}


def test_trading_day_folds_count_sessions() -> None:
    cal = nse()
    folds = walk_forward("train=20D,test=5D", date(2024, 1, 1), date(2024, 3, 31))
    for f in folds:
        train = [d for d in _days(f.train_start, f.train_end) if cal.is_trading_day(d)]
        test = [d for d in _days(f.test_start, f.test_end) if cal.is_trading_day(d)]
        assert len(train) == 20
        assert len(test) == 5 or f is folds[-1]


def test_a_range_too_short_for_one_fold() -> None:
    with pytest.raises(InputError, match="too short for one fold"):
        walk_forward("train=6M,test=1M", date(2024, 1, 1), date(2024, 6, 30))
    with pytest.raises(InputError, match="too short for one fold"):
        walk_forward("train=5D,test=1D", date(2024, 1, 1), date(2024, 1, 5))  # five sessions: no test day
    with pytest.raises(InputError, match="runs backwards"):
        walk_forward("train=5D,test=1D", date(2024, 2, 1), date(2024, 1, 5))


def _days(a: date, b: date) -> list[date]:
    return [a + timedelta(days=k) for k in range((b - a).days + 1)]


@settings(max_examples=80, deadline=None)
@example(
    start=date(2024, 11, 8), length=10, train=(1, "W"), test=(1, "D"), anchored=False
)  # Nov 15 closed: train is still [start, start+1W)
@given(
    start=st.dates(date(2023, 1, 1), date(2025, 6, 30)),
    length=st.integers(1, 900),
    train=st.tuples(st.integers(1, 30), st.sampled_from("DWMY")),
    test=st.tuples(st.integers(1, 30), st.sampled_from("DWMY")),
    anchored=st.booleans(),
)
def test_walk_forward_invariants(
    start: date,
    length: int,
    train: tuple[int, str],
    test: tuple[int, str],
    anchored: bool,
) -> None:
    cal = nse()
    end = start + timedelta(days=length)
    spec = f"train={train[0]}{train[1]},test={test[0]}{test[1]}" + (",anchored" if anchored else "")
    try:
        folds = walk_forward(spec, start, end)
    except InputError as exc:
        assert "too short for one fold" in str(exc)
        return
    assert folds  # a range long enough for the first test has at least one fold
    days = [d for d in _days(start, end) if cal.is_trading_day(d)]
    nxt = dict(itertools.pairwise(days))
    for f in folds:
        for d in (f.train_start, f.train_end, f.test_start, f.test_end):
            assert cal.is_trading_day(d) and start <= d <= end
        assert f.train_start <= f.train_end < f.test_start <= f.test_end
        assert nxt[f.train_end] == f.test_start  # the test follows its train with no gap
        if anchored:
            assert f.train_start == days[0]
    for a, b in itertools.pairwise(folds):  # the tests tile the range: disjoint and contiguous
        assert nxt[a.test_end] == b.test_start
        if not anchored:
            assert a.train_start <= b.train_start
    assert folds[-1].test_end == days[-1]
    assert folds[0].train_start == days[0]


def test_a_test_window_without_sessions_is_skipped_and_the_tests_still_tile() -> None:
    # a calendar whose whole week of 2024-03-11 is closed: that weekly test has nothing to test
    closed = frozenset(date(2024, 3, 11) + timedelta(days=k) for k in range(5))
    cal = Calendar(holidays=closed, covered_years=frozenset({2024}))
    folds = walk_forward("train=4W,test=1W", date(2024, 1, 1), date(2024, 3, 31), calendar=cal)
    tests = [(f.test_start, f.test_end) for f in folds]
    assert (date(2024, 3, 8 - 4), date(2024, 3, 8)) in tests  # the week before
    assert (date(2024, 3, 18), date(2024, 3, 22)) in tests  # the week after follows it directly
    assert all(not (f.test_start <= date(2024, 3, 13) <= f.test_end) for f in folds)
    assert folds[0].test_start == date(2024, 1, 29)


ORB_VALUES = {
    "range_minutes": ["5", "15", "030", "+45"],
    "target_r": ["1", "1.5", "2.50", "1e1"],
    "square_off": ["15:10", "15:20", "14:00"],
    "shorts": ["true", "0", "yes"],
    "lots": ["1", "2", "003"],
}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_strategy_gets_the_same_parameters_as_through_param_grid(data: st.DataObject) -> None:
    # what a switch of `replay.param_grid` to `parse_grid(pairs, kinds)` must keep: the built
    # strategy's parameters, combination by combination (orb has int, float, str and bool ones)
    cls = load_strategy("orb")
    kinds = {name: kind for name, (kind, _) in cls.parameters().items()}
    names = data.draw(st.lists(st.sampled_from(sorted(ORB_VALUES)), min_size=1, max_size=5, unique=True))
    pairs = [
        f"{n}={','.join(data.draw(st.lists(st.sampled_from(ORB_VALUES[n]), min_size=1, unique=True)))}" for n in names
    ]
    ours = [{k: coerce_param(k, v, kinds[k]) for k, v in combo.items()} for combo in parse_grid(pairs, kinds).combos()]
    theirs = [{k: coerce_param(k, v, kinds[k]) for k, v in combo.items()} for combo in param_grid(pairs)]
    assert ours == theirs
    for a, b in zip(ours, theirs, strict=True):
        assert [type(v) for v in a.values()] == [type(v) for v in b.values()]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="fast=0123456789.:,-+eE xnaNIif", max_size=24), max_size=3),
    st.sampled_from([None, {"fast": int}, {"fast": float}, {"fast": str}, {"fast": bool}]),
)
def test_any_text_gives_a_grid_or_one_line_input_error(pairs: list[str], kinds: dict[str, type] | None) -> None:
    try:
        grid = parse_grid(pairs, kinds)
        grid.sample(3, seed=1)
        grid.combos()
    except InputError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x=1e999999999:2e999999999:1", "beyond 1e300"),
        ("x=0:1:1e-999999999", "closer to 0 than 1e-300"),
        ("x=1e-301:1:1", "closer to 0"),
        ("x=1:1e30:1e-30", "over 1,000,000,000,000 values"),
        ("x=0:" + "9" * 40 + ":1", "over 1,000,000,000,000 values"),
    ],
)
def test_extreme_ranges_are_refused_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        parse_grid([spec]).combos()
    assert "\n" not in str(info.value)
