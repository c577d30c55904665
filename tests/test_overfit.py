"""PBO (CSCV) and the deflated Sharpe ratio: hand-computed cases, the DSR paper's numerical
example, and the properties the papers promise (noise -> PBO ~ 0.5 and DSR not significant;
a real edge -> PBO ~ 0 and DSR ~ 1)."""

from __future__ import annotations

import math
import random
from statistics import NormalDist, linear_regression

import pytest
from hypothesis import example, given, settings, strategies as st

from mde.errors import InputError
from mde.overfit import (
    DSR_HOW_TO_READ,
    EULER_GAMMA,
    PBO_HOW_TO_READ,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    moments,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe,
)

LN3 = math.log(3)


def noise(seed: int, t: int, n: int, edge: float = 0.0) -> list[list[float]]:
    """T x N iid N(0, 1) returns; column 0 gets `edge` added to its mean."""
    rng = random.Random(seed)
    return [[rng.gauss(0.0, 1.0) + (edge if k == 0 else 0.0) for k in range(n)] for _ in range(t)]


def column(m: list[list[float]], k: int) -> list[float]:
    return [row[k] for row in m]


# -- PBO by hand -----------------------------------------------------------------------------------


def test_pbo_hand_computed_four_blocks_with_ties() -> None:
    # T=4, S=4 (one row per block), N=3, metric = mean. Column sums A=8, B=4, C=5.
    m = [
        [4, 0, 1],  # block 0
        [0, 3, 1],  # block 1
        [2, 1, 1],  # block 2
        [2, 0, 2],  # block 3
    ]
    # splits in itertools.combinations order; IS/OOS sums (means are sums / 2, same ranking):
    # {0,1}: IS A4 B3 C2 -> A; OOS {2,3}: A4 B1 C3 -> A rank 3 of 3 -> ω = 3/4, λ = ln 3
    # {0,2}: IS A6 B1 C2 -> A; OOS {1,3}: A2 B3 C3 -> A rank 1 -> ω = 1/4, λ = -ln 3
    # {0,3}: IS A6 B0 C3 -> A; OOS {1,2}: A2 B4 C2 -> A ties C below B: mean rank 1.5 -> ω = 1.5/4, λ = ln(0.6)
    # {1,2}: IS A2 B4 C2 -> B; OOS {0,3}: A6 B0 C3 -> B rank 1 -> λ = -ln 3
    # {1,3}: IS A2 B3 C3 -> B and C tie: the one worse out of sample; OOS {0,2}: A6 B1 C2 -> B, rank 1 -> λ = -ln 3
    # {2,3}: IS A4 B1 C3 -> A; OOS {0,1}: A4 B3 C2 -> A rank 3 -> λ = ln 3
    r = probability_of_backtest_overfitting(m, n_blocks=4, metric="mean")
    expected = [LN3, -LN3, math.log(0.6), -LN3, -LN3, LN3]
    assert r.n_splits == 6 and r.n_blocks == 4 and r.n_combinations == 3 and r.rows_used == 4
    assert r.logits == pytest.approx(expected)
    assert r.pbo == pytest.approx(4 / 6)
    # degradation: (IS mean, OOS mean) of the IS best per split, regressed OOS on IS
    pairs = [(2, 2), (3, 1), (3, 1), (2, 0), (1.5, 0.5), (2, 2)]
    fit = linear_regression([x for x, _ in pairs], [y for _, y in pairs])
    assert (r.slope, r.intercept) == pytest.approx((fit.slope, fit.intercept))
    assert r.prob_oos_loss == 0.0
    assert "PBO 0.67" in r.how_to_read() and "mostly luck" in r.how_to_read()


def test_pbo_hand_computed_two_blocks_sharpe() -> None:
    # S=2: blocks of 3 rows [a-d, a, a+d] have mean a, sample std d, so Sharpe a/d.
    # A: block0 [0,1,2] SR 1,   block1 [-1,0,1] SR 0
    # B: block0 [-1,0,1] SR 0,  block1 [1,2,3] SR 2
    # C: block0 [1,3,5] SR 1.5, block1 [1,2,3] SR 2 -> ties B in block 1
    a = [0, 1, 2, -1, 0, 1]
    b = [-1, 0, 1, 1, 2, 3]
    c = [1, 3, 5, 1, 2, 3]
    m = [list(row) for row in zip(a, b, c, strict=True)]
    # split {0}: IS SR A1 B0 C1.5 -> C; OOS block1 A0 B2 C2: C ties B at the top -> rank 2.5, ω = 2.5/4, λ = ln(5/3)
    # split {1}: IS A0 B2 C2 -> B and C tie; OOS block0 A1 B0 C1.5 -> the worse is B, rank 1, ω = 1/4, λ = -ln 3
    r = probability_of_backtest_overfitting(m, n_blocks=2)
    assert r.logits == pytest.approx([math.log(5 / 3), -LN3])
    assert r.pbo == 0.5


def test_pbo_callable_metric_equals_the_built_in_sharpe() -> None:
    m = noise(3, 96, 7)
    fast = probability_of_backtest_overfitting(m, n_blocks=8)
    slow = probability_of_backtest_overfitting(m, n_blocks=8, metric=sharpe)
    assert fast.logits == pytest.approx(slow.logits, rel=1e-9, abs=1e-12)
    assert fast.pbo == slow.pbo


def test_pbo_drops_the_oldest_rows_that_do_not_fill_a_block() -> None:
    m = noise(4, 83, 5)  # 83 = 8 * 10 + 3
    r = probability_of_backtest_overfitting(m, n_blocks=8)
    assert r.rows_used == 80
    assert r.logits == probability_of_backtest_overfitting(m[3:], n_blocks=8).logits


# -- PBO properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pbo_of_pure_noise_is_near_one_half(seed: int) -> None:
    r = probability_of_backtest_overfitting(noise(seed, 1000, 50), n_blocks=16)
    assert r.n_splits == math.comb(16, 8) == 12870
    assert 0.3 <= r.pbo <= 0.7, r.pbo  # the in-sample best is a coin flip out of sample
    assert "luck" in r.how_to_read()


def test_pbo_of_a_dominant_combination_is_near_zero() -> None:
    r = probability_of_backtest_overfitting(noise(7, 1000, 50, edge=0.5), n_blocks=16)
    assert r.pbo <= 0.01
    assert r.prob_oos_loss == 0.0
    assert "holds up" in r.how_to_read()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 5).flatmap(
        lambda n: st.lists(st.lists(st.integers(-3, 3), min_size=n, max_size=n), min_size=8, max_size=20)
    ),
    st.randoms(use_true_random=False),
    st.sampled_from(["sharpe", "mean"]),
)
def test_pbo_does_not_depend_on_the_order_of_the_combinations(
    m: list[list[int]], rnd: random.Random, metric: str
) -> None:
    # small integers: ties in sample and out of sample are common, and must not matter
    order = list(range(len(m[0])))
    rnd.shuffle(order)
    permuted = [[row[k] for k in order] for row in m]
    a = probability_of_backtest_overfitting(m, n_blocks=4, metric=metric)
    b = probability_of_backtest_overfitting(permuted, n_blocks=4, metric=metric)
    assert a.logits == pytest.approx(b.logits) and a.pbo == b.pbo
    assert all(
        -math.log(len(m[0])) - 1e-9 <= lam <= math.log(len(m[0])) + 1e-9 for lam in a.logits
    )  # ω in [1/(N+1), N/(N+1)]


@pytest.mark.parametrize(
    ("m", "kwargs", "message"),
    [
        ([[1.0]] * 16, {}, "at least 2 columns"),
        ([], {}, "got no rows"),
        ([[1.0, 2.0]] * 16, {"n_blocks": 3}, "even number"),
        ([[1.0, 2.0]] * 16, {"n_blocks": 22}, "at most 20"),
        ([[1.0, 2.0]] * 10, {"n_blocks": 8}, "cannot make 8 blocks"),
        ([[1.0, 2.0]] * 15 + [[float("nan"), 1.0]], {"n_blocks": 2}, "row 15 column 0 is nan"),
        ([[1.0, 2.0]] * 15 + [[1.0]], {"n_blocks": 2}, "row 15 has 1 columns"),
        ([[1.0, "x"]] * 16, {"n_blocks": 2}, "not a number"),
        ([[1.0, 2.0]] * 16, {"n_blocks": 2, "metric": "sortino"}, "unknown PBO metric"),
    ],
)
def test_pbo_bad_input_is_one_line(m: list[list[object]], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        probability_of_backtest_overfitting(m, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# -- PSR and DSR -----------------------------------------------------------------------------------


def test_dsr_reproduces_the_papers_numerical_example() -> None:
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", section "A numerical example":
    # N = 100 trials, annualised variance of their SRs 1/2, best annualised SR 2.5, T = 1250 daily
    # returns (250 a year), skewness -3, kurtosis 10 -> SR0 = 0.1132 per day, DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert probabilistic_sharpe_ratio(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=5e-5)


def test_expected_max_sharpe_formula() -> None:
    phi_inv = NormalDist().inv_cdf
    n, v = 10, 0.04
    z = (1 - EULER_GAMMA) * phi_inv(1 - 1 / n) + EULER_GAMMA * phi_inv(1 - 1 / (n * math.e))
    assert expected_max_sharpe(n, v) == pytest.approx(0.2 * z)
    assert expected_max_sharpe(1, v) == 0.0  # one trial: nothing was selected


def test_psr_of_normal_returns() -> None:
    # γ3 = 0, γ4 = 3: PSR(0) = Φ(SR sqrt(T-1) / sqrt(1 + SR²/2))
    sr, t = 0.1, 101
    assert probabilistic_sharpe_ratio(sr, 0.0, t) == pytest.approx(NormalDist().cdf(sr * 10 / math.sqrt(1.005)))
    assert probabilistic_sharpe_ratio(sr, sr, t) == 0.5


def test_dsr_uses_the_returns_moments() -> None:
    rng = random.Random(11)
    rets = [rng.expovariate(1.0) - 0.9 for _ in range(500)]  # skewed right, fat tail
    m = moments(rets)
    assert m.skewness > 1.0 and m.kurtosis > 5.0
    d = deflated_sharpe_ratio(rets, n_trials=20, sr_variance=0.002)
    sr = m.mean / m.std
    assert d.sharpe == pytest.approx(sr) and d.n == 500
    assert d.dsr == pytest.approx(
        probabilistic_sharpe_ratio(sr, expected_max_sharpe(20, 0.002), 500, m.skewness, m.kurtosis)
    )
    assert d.psr == pytest.approx(probabilistic_sharpe_ratio(sr, 0.0, 500, m.skewness, m.kurtosis))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dsr_of_the_best_of_pure_noise_is_not_significant(seed: int) -> None:
    m = noise(seed, 1000, 50)
    srs = [sharpe(column(m, k)) for k in range(50)]
    best = max(range(50), key=lambda k: srs[k])
    d = deflated_sharpe_ratio(column(m, best), trial_sharpes=srs)
    assert d.n_trials == 50
    assert d.psr > 0.95  # taken alone, the best of 50 noise rules looks significant...
    assert d.dsr < 0.95  # ...the selection explains its Sharpe...
    assert d.sharpe0 > 0.04  # ...because the best of 50 noise rules reaches ~2.25 / sqrt(1000) by luck
    assert "not significant" in d.how_to_read()


def test_dsr_of_a_real_edge_is_near_one() -> None:
    m = noise(7, 1000, 50, edge=0.3)
    srs = [sharpe(column(m, k)) for k in range(50)]
    d = deflated_sharpe_ratio(column(m, 0), trial_sharpes=srs)
    assert max(range(50), key=lambda k: srs[k]) == 0
    assert d.dsr > 0.99
    assert " significant" in d.how_to_read() and "not significant" not in d.how_to_read()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 10_000), st.floats(1e-6, 0.1))
def test_more_trials_raise_the_bar_and_lower_the_dsr(n1: int, n2: int, var: float) -> None:
    lo, hi = sorted((n1, n2))
    rets = [0.01 * math.sin(k) + 0.004 for k in range(200)]
    a = deflated_sharpe_ratio(rets, n_trials=lo, sr_variance=var)
    b = deflated_sharpe_ratio(rets, n_trials=hi, sr_variance=var)
    assert a.sharpe0 <= b.sharpe0
    assert a.dsr >= b.dsr


def test_dsr_trial_count_may_exceed_the_sharpes_kept() -> None:
    rets = [0.01 * math.sin(k) + 0.004 for k in range(200)]
    srs = [0.1, 0.0, -0.05, 0.2]
    kept = deflated_sharpe_ratio(rets, trial_sharpes=srs)
    more = deflated_sharpe_ratio(rets, trial_sharpes=srs, n_trials=400)
    assert kept.n_trials == 4 and more.n_trials == 400 and more.dsr < kept.dsr
    assert kept.sr_variance == pytest.approx(0.0122916666, rel=1e-6)  # sample variance (n - 1) of the four


@pytest.mark.parametrize(
    ("rets", "kwargs", "message"),
    [
        ([0.1, 0.2], {"n_trials": 5, "sr_variance": 0.1}, "at least 3 returns"),
        ([0.1, float("nan"), 0.2], {"n_trials": 5, "sr_variance": 0.1}, "row 1 is nan"),
        ([0.1, 0.1, 0.1], {"n_trials": 5, "sr_variance": 0.1}, "constant"),
        ([0.1, 0.2, 0.3], {"n_trials": 0, "sr_variance": 0.1}, "at least 1"),
        ([0.1, 0.2, 0.3], {"n_trials": 5, "sr_variance": -1.0}, ">= 0"),
        ([0.1, 0.2, 0.3], {"n_trials": 5}, "needs the trials"),
        ([0.1, 0.2, 0.3], {"trial_sharpes": [0.1]}, "at least 2 trials"),
        ([0.1, 0.2, 0.3], {"trial_sharpes": [0.1, 0.2], "sr_variance": 0.1}, "not both"),
        ([0.1, 0.2, 0.3], {"trial_sharpes": [0.1, 0.2, 0.3], "n_trials": 2}, "fewer than the 3"),
    ],
)
def test_dsr_bad_input_is_one_line(rets: list[float], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        deflated_sharpe_ratio(rets, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_how_to_read_lines_are_one_line() -> None:
    assert "\n" not in PBO_HOW_TO_READ and "\n" not in DSR_HOW_TO_READ


def test_pbo_side_without_a_position_has_a_sharpe_of_exactly_zero() -> None:
    # combinations that do not trade for whole blocks (returns exactly 0 there) are common in a
    # sweep; their Sharpe on such a side is 0, not rounding noise divided by rounding noise
    rng = random.Random(5)
    m = []
    for t in range(64):
        block = t // 8
        m.append(
            [
                rng.gauss(0.001, 0.01),
                rng.gauss(0.3, 0.01) if block < 2 else 0.0,  # trades in blocks 0-1 only, with a huge mean
                0.0,  # never trades
                rng.gauss(-0.2, 0.01) if block == 7 else 0.0,
            ]
        )
    fast = probability_of_backtest_overfitting(m, n_blocks=8)
    slow = probability_of_backtest_overfitting(m, n_blocks=8, metric=sharpe)
    assert fast.logits == pytest.approx(slow.logits, rel=1e-12) and fast.pbo == slow.pbo
    assert fast.slope == pytest.approx(slow.slope, rel=1e-9)


FLOATS = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(FLOATS, max_size=20), st.lists(FLOATS, max_size=5), st.integers(0, 1000))
# returns so small that m2**1.5 underflowed to 0 (a ZeroDivisionError before moments standardised)
@example(rets=[0.0, 0.0, 2.5238670728775616e-123], srs=[0.0, 0.0], n=0)
def test_dsr_of_any_numbers_is_a_probability_or_a_one_line_error(rets: list[float], srs: list[float], n: int) -> None:
    try:
        d = deflated_sharpe_ratio(
            rets, trial_sharpes=srs or None, n_trials=n or None, sr_variance=None if srs else 0.01
        )
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert d.sharpe0 >= 0.0 and 0.0 <= d.dsr <= d.psr <= 1.0  # SR0 >= 0: deflating never helps


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 4).flatmap(lambda n: st.lists(st.lists(FLOATS, min_size=n, max_size=n), max_size=12)),
    st.sampled_from([2, 4, 6]),
    st.sampled_from(["sharpe", "mean"]),
)
def test_pbo_of_any_numbers_is_a_probability_or_a_one_line_error(
    m: list[list[float]], blocks: int, metric: str
) -> None:
    try:
        r = probability_of_backtest_overfitting(m, n_blocks=blocks, metric=metric)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert 0.0 <= r.pbo <= 1.0 and len(r.logits) == r.n_splits == math.comb(blocks, blocks // 2)
    assert all(math.isfinite(lam) for lam in r.logits)


def test_dsr_rarely_calls_the_best_of_noise_significant() -> None:
    # 200 sweeps of 20 skill-less rules over 250 periods: the best one's PSR passes 0.95 often
    # (that is the selection bias), its DSR at most at the 5% rate a 0.95 bar promises
    rng = random.Random(0)
    dsr_hits = psr_hits = 0
    for _ in range(200):
        cols = [[rng.gauss(0.0, 1.0) for _ in range(250)] for _ in range(20)]
        srs = [sharpe(c) for c in cols]
        d = deflated_sharpe_ratio(cols[max(range(20), key=lambda k: srs[k])], trial_sharpes=srs)
        dsr_hits += d.dsr > 0.95
        psr_hits += d.psr > 0.95
    assert dsr_hits / 200 <= 0.05
    assert psr_hits / 200 >= 0.2
