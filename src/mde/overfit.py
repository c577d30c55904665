"""How much of a sweep's best result is luck: the probability of backtest overfitting (PBO)
and the deflated Sharpe ratio (DSR) of the best combination.

Picking the best of many parameter combinations inflates its backtest: the best of 500
skill-less rules still shows a fine Sharpe. These two statistics say how much:

- PBO (Bailey, Borwein, López de Prado & Zhu 2015, "The Probability of Backtest
  Overfitting", combinatorially symmetric cross-validation): how often the in-sample best
  combination ranks at or below the median out of sample.
- DSR (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio"): the probabilistic Sharpe
  ratio (PSR) of the best combination against the Sharpe that the best of N skill-less
  trials would reach by luck, corrected for skewness, fat tails and track-record length.

Pure functions on plain Python floats (mde does not depend on numpy); Sharpe ratios here are
per period (not annualised), with the sample standard deviation (n - 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from .errors import InputError

EULER_GAMMA = 0.5772156649015329  # the Euler–Mascheroni constant
_NORMAL = NormalDist()

PBO_HOW_TO_READ = (
    "PBO: the share of train/test splits in which the in-sample best combination ranked at or below "
    "the out-of-sample median; near 0 the ranking holds up, near 0.5 or above it is mostly luck"
)
DSR_HOW_TO_READ = (
    "DSR: the probability that the best combination's Sharpe is above what the best of the trials would "
    "reach by luck (skewness and fat tails included); below 0.95 it is not significant"
)

Metric = Callable[[Sequence[float]], float]

# bigger values are no return or P&L of any period, and their 4th powers would overflow a double
_LIMIT = 1e50

# C(S, S/2) splits: S=16 is the usual choice (12,870 splits); more grows fast (S=20: 184,756)
MAX_BLOCKS = 20


# -- Sharpe and moments --------------------------------------------------------------------------


def _sharpe_from(n: int, mean: float, var: float) -> float:
    """Per-period Sharpe from a sample's size, mean and (n - 1) variance. A constant series has
    no risk: Sharpe 0 when it is flat, +-inf when it earns (or loses) every period."""
    if n < 2:
        return math.nan
    if var <= 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / math.sqrt(var)


def sharpe(returns: Sequence[float]) -> float:
    """Per-period Sharpe ratio: mean / sample standard deviation (n - 1), not annualised."""
    n = len(returns)
    if n < 2:
        return math.nan
    mean = math.fsum(returns) / n
    # a constant series is exactly flat (its mean may not be exactly its value in binary)
    var = 0.0 if min(returns) == max(returns) else math.fsum((r - mean) ** 2 for r in returns) / (n - 1)
    return _sharpe_from(n, mean, var)


@dataclass(frozen=True)
class Moments:
    n: int
    mean: float
    std: float  # sample (n - 1)
    skewness: float  # m3 / m2^1.5 (population moments, as in the paper)
    kurtosis: float  # m4 / m2^2, NOT excess: 3 for a normal distribution


def moments(returns: Sequence[float]) -> Moments:
    n = len(returns)
    mean = math.fsum(returns) / n
    dev = [r - mean for r in returns]
    m2 = 0.0 if min(returns) == max(returns) else math.fsum(d * d for d in dev) / n
    std = math.sqrt(m2 * n / (n - 1)) if n > 1 else 0.0
    if m2 == 0.0:
        return Moments(n, mean, std, 0.0, 3.0)
    # standardise first: m3 / m2**1.5 underflows to 0/0 for tiny returns (1e-123), z does not
    root = math.sqrt(m2)
    z = [d / root for d in dev]
    return Moments(n, mean, std, math.fsum(x**3 for x in z) / n, math.fsum(x**4 for x in z) / n)


def _finite_series(returns: Sequence[float], what: str) -> list[float]:
    out: list[float] = []
    for i, value in enumerate(returns):
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{what}: row {i} is {value!r}, not a number") from None
        if not math.isfinite(x):
            raise InputError(f"{what}: row {i} is {x}; drop or fill missing returns before computing statistics")
        if abs(x) > _LIMIT:
            raise InputError(f"{what}: row {i} is {x}, beyond ±1e50: not a per-period return")
        out.append(x)
    return out


# -- probabilistic and deflated Sharpe ratio -----------------------------------------------------


@dataclass(frozen=True)
class DeflatedSharpe:
    sharpe: float  # the best combination's per-period Sharpe
    sharpe0: float  # the benchmark: E[max SR] of n_trials skill-less trials (0 for one trial)
    dsr: float  # PSR(sharpe0): the probability that the true Sharpe exceeds sharpe0
    psr: float  # PSR(0): the probability that the true Sharpe is above zero, ignoring the trials
    n_trials: int
    sr_variance: float  # variance of the trials' Sharpe ratios
    n: int  # periods in the best combination's returns
    skewness: float
    kurtosis: float  # non-excess

    def how_to_read(self) -> str:
        verdict = "significant" if self.dsr >= 0.95 else "not significant"
        return (
            f"DSR {self.dsr:.2f}: the probability that the best Sharpe ({self.sharpe:.4f} per period) beats "
            f"the {self.sharpe0:.4f} that the best of {self.n_trials} trials would reach by luck: {verdict} "
            f"(0.95 is the usual bar)"
        )


def probabilistic_sharpe_ratio(
    sharpe_ratio: float,
    benchmark: float,
    n: int,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """PSR(SR*) = Φ( (SR - SR*) sqrt(n - 1) / sqrt(1 - γ3 SR + (γ4 - 1)/4 SR²) )

    (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient Frontier"; used as is by the
    DSR paper). Per-period SR, γ3 the skewness, γ4 the non-excess kurtosis, n periods."""
    if n < 2:
        raise InputError(f"a probabilistic Sharpe ratio needs at least 2 returns, got {n}")
    if not all(math.isfinite(x) and abs(x) <= _LIMIT for x in (sharpe_ratio, benchmark, skewness, kurtosis)):
        raise InputError("a probabilistic Sharpe ratio needs finite Sharpe ratios, skewness and kurtosis")
    spread = 1.0 - skewness * sharpe_ratio + (kurtosis - 1.0) / 4.0 * sharpe_ratio**2
    # γ4 >= 1 + γ3² for any distribution, so spread >= (1 - γ3 SR / 2)² >= 0: zero only for two-point ones
    if spread <= 0.0:
        raise InputError(
            "the Sharpe ratio's standard error is zero for these returns (a two-valued series); PSR is undefined"
        )
    z = (sharpe_ratio - benchmark) * math.sqrt(n - 1) / math.sqrt(spread)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """SR0 = sqrt(V[SR_n]) ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e))), γ Euler–Mascheroni:
    the expected maximum Sharpe of N independent skill-less trials (the DSR paper; one
    trial has no selection: 0)."""
    if n_trials < 1:
        raise InputError(f"the number of trials must be at least 1, got {n_trials}")
    if not math.isfinite(sr_variance) or sr_variance < 0.0:
        raise InputError(f"the variance of the trials' Sharpe ratios must be finite and >= 0, got {sr_variance}")
    if n_trials == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + EULER_GAMMA * _NORMAL.inv_cdf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return math.sqrt(sr_variance) * z


def deflated_sharpe_ratio(
    returns: Sequence[float],
    *,
    trial_sharpes: Sequence[float] | None = None,
    n_trials: int | None = None,
    sr_variance: float | None = None,
) -> DeflatedSharpe:
    """DSR = PSR(SR0) of the best combination's per-period `returns` (the DSR paper's definition).

    Give the Sharpe ratios of all trials (`trial_sharpes`, per period, the best included: their
    sample variance and count are used), or `n_trials` with `sr_variance`. `n_trials` may exceed
    len(trial_sharpes) when combinations were tried and not kept."""
    rets = _finite_series(returns, "the best combination's returns")
    if len(rets) < 3:
        raise InputError(f"a deflated Sharpe ratio needs at least 3 returns, got {len(rets)}")
    if trial_sharpes is not None:
        if sr_variance is not None:
            raise InputError("give the trials' Sharpe ratios or their variance, not both")
        srs = _finite_series(trial_sharpes, "the trials' Sharpe ratios")
        if len(srs) < 2:
            raise InputError("the variance of the trials' Sharpe ratios needs at least 2 trials")
        mean = math.fsum(srs) / len(srs)
        sr_variance = math.fsum((s - mean) ** 2 for s in srs) / (len(srs) - 1)
        if n_trials is None:
            n_trials = len(srs)
        elif n_trials < len(srs):
            raise InputError(f"n_trials={n_trials} is fewer than the {len(srs)} Sharpe ratios given")
    if n_trials is None or sr_variance is None:
        raise InputError("a deflated Sharpe ratio needs the trials' Sharpe ratios, or n_trials and sr_variance")
    m = moments(rets)
    if m.std == 0.0:
        raise InputError("the best combination's returns are constant: a Sharpe ratio needs returns that vary")
    sr = m.mean / m.std
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    return DeflatedSharpe(
        sharpe=sr,
        sharpe0=sr0,
        dsr=probabilistic_sharpe_ratio(sr, sr0, m.n, m.skewness, m.kurtosis),
        psr=probabilistic_sharpe_ratio(sr, 0.0, m.n, m.skewness, m.kurtosis),
        n_trials=n_trials,
        sr_variance=sr_variance,
        n=m.n,
        skewness=m.skewness,
        kurtosis=m.kurtosis,
    )


# -- probability of backtest overfitting (CSCV) --------------------------------------------------


@dataclass(frozen=True)
class Overfitting:
    pbo: float  # share of splits with logit <= 0
    logits: tuple[float, ...]  # λ_c = ln(ω_c / (1 - ω_c)), one per split, in split order
    n_splits: int  # C(S, S/2)
    n_blocks: int  # S
    n_combinations: int  # N
    rows_used: int  # T rounded down to a multiple of S (the oldest T mod S rows are dropped)
    slope: float  # performance degradation: OLS slope of out-of-sample on in-sample metric of the IS best
    intercept: float
    prob_oos_loss: float  # share of splits where the IS best's out-of-sample metric is < 0

    def how_to_read(self) -> str:
        verdict = (
            "the ranking holds up out of sample"
            if self.pbo < 0.1
            else "the ranking is partly luck"
            if self.pbo < 0.5
            else "the ranking is mostly luck"
        )
        return (
            f"PBO {self.pbo:.2f}: in {self.pbo:.0%} of {self.n_splits} train/test splits the in-sample best "
            f"ranked at or below the out-of-sample median: {verdict}"
        )


def _matrix(returns: Sequence[Sequence[float]]) -> list[list[float]]:
    rows: list[list[float]] = []
    width = None
    for t, row in enumerate(returns):
        values = list(row)
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise InputError(f"returns: row {t} has {len(values)} columns, the first has {width}; give a T x N matrix")
        out = []
        for n, value in enumerate(values):
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise InputError(f"returns: row {t} column {n} is {value!r}, not a number") from None
            if not math.isfinite(x):
                raise InputError(
                    f"returns: row {t} column {n} is {x}; drop or fill missing returns (a period with no position is 0)"
                )
            if abs(x) > _LIMIT:
                raise InputError(f"returns: row {t} column {n} is {x}, beyond ±1e50: not a per-period return")
            out.append(x)
        rows.append(out)
    return rows


def _midrank_share(values: Sequence[float], k: int) -> float:
    """ω = rank / (N + 1) of values[k] among `values`, rank 1 the lowest; ties share their
    mean rank (so the result does not depend on the order of the combinations)."""
    v = values[k]
    below = sum(1 for x in values if x < v)
    equal = sum(1 for x in values if x == v)
    return (below + (equal + 1) / 2) / (len(values) + 1)


def probability_of_backtest_overfitting(
    returns: Sequence[Sequence[float]],
    n_blocks: int = 16,
    metric: str | Metric = "sharpe",
) -> Overfitting:
    """PBO by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado & Zhu
    2015: the CSCV procedure and the PBO definition), over a T x N matrix (rows = periods in time order, columns =
    combinations' per-period returns, a period without a position is 0).

    The rows are cut into S = `n_blocks` contiguous blocks of T // S rows (the oldest T mod S rows
    are dropped). For each of the C(S, S/2) ways to choose S/2 blocks as in-sample J (the rest J̄
    out of sample, both in time order): n* = the combination with the best metric on J, ω = its
    relative rank on J̄ = rank / (N + 1) (rank 1 the lowest, ties: mean rank), λ = ln(ω / (1 - ω)).
    PBO = share of splits with λ <= 0, i.e. the IS best is at or below the OOS median.

    Ties for the in-sample best (identical combinations, say ones that never trade) are resolved
    against the selection: the tied one with the worst out-of-sample metric is taken, so the
    result does not depend on the order of the columns and never flatters the sweep.

    `metric`: "sharpe" (per-period, the paper's choice) or "mean", both computed from per-block
    sums; or any function of a return sequence (slower: called 2 N times per split)."""
    rows = _matrix(returns)
    if not rows:
        raise InputError("PBO needs a T x N matrix of returns; got no rows")
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 2 or n_blocks % 2:
        raise InputError(f"n_blocks must be an even number >= 2 (16 is usual), got {n_blocks!r}")
    if n_blocks > MAX_BLOCKS:
        raise InputError(
            f"n_blocks={n_blocks} makes {math.comb(n_blocks, n_blocks // 2):,} splits; use at most {MAX_BLOCKS}"
        )
    t_all = len(rows)
    n_cols = len(rows[0]) if rows else 0
    if n_cols < 2:
        raise InputError(f"PBO compares combinations: it needs at least 2 columns, got {n_cols}")
    size = t_all // n_blocks
    if size < 2 and (metric == "sharpe" or not isinstance(metric, str)):
        raise InputError(
            f"{t_all} periods cannot make {n_blocks} blocks of at least 2; use fewer blocks or more periods"
        )
    if size < 1:
        raise InputError(f"{t_all} periods cannot make {n_blocks} blocks; use fewer blocks or more periods")
    rows = rows[t_all - size * n_blocks :]
    blocks = [rows[b * size : (b + 1) * size] for b in range(n_blocks)]
    splits = list(itertools.combinations(range(n_blocks), n_blocks // 2))

    if isinstance(metric, str):
        if metric not in ("sharpe", "mean"):
            raise InputError(f"unknown PBO metric {metric!r}; use sharpe or mean (or pass a function)")
        evaluate = _moment_evaluator(blocks, n_cols, metric)
    else:
        evaluate = _callable_evaluator(blocks, n_cols, metric)

    logits: list[float] = []
    pairs: list[tuple[float, float]] = []
    for split in splits:
        inside, outside = evaluate(split)
        best = max(inside)
        tied = [k for k, v in enumerate(inside) if v == best]
        n_star = min(tied, key=lambda k: outside[k])
        omega = _midrank_share(outside, n_star)
        logits.append(math.log(omega / (1.0 - omega)))
        pairs.append((inside[n_star], outside[n_star]))

    slope, intercept = _ols([p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])])
    return Overfitting(
        pbo=sum(1 for lam in logits if lam <= 0.0) / len(logits),
        logits=tuple(logits),
        n_splits=len(splits),
        n_blocks=n_blocks,
        n_combinations=n_cols,
        rows_used=size * n_blocks,
        slope=slope,
        intercept=intercept,
        prob_oos_loss=sum(1 for _, oos in pairs if oos < 0.0) / len(pairs),
    )


Evaluator = Callable[[tuple[int, ...]], tuple[list[float], list[float]]]


def _moment_evaluator(blocks: list[list[list[float]]], n_cols: int, metric: str) -> Evaluator:
    """Per-block sums of each column's returns and of their squares (correctly rounded): a
    split side's mean and variance come from the sums of its S/2 blocks. Raw, not centred:
    a block without a position sums to exactly 0, so a side that never trades has a Sharpe of
    exactly 0 (a shift would leave rounding noise there, and noise / noise is any Sharpe).
    Per-period returns have |mean| << std, so the sums do not cancel badly."""
    s1 = [[math.fsum(row[n] for row in b) for n in range(n_cols)] for b in blocks]
    s2 = [[math.fsum(row[n] * row[n] for row in b) for n in range(n_cols)] for b in blocks]
    per_block = len(blocks[0])
    every = range(len(blocks))

    def stats(blocks_in: list[int]) -> list[float]:
        # this loop is the whole cost of PBO (2 N per split)
        count = per_block * len(blocks_in)
        a1 = [sum(col) for col in zip(*(s1[b] for b in blocks_in), strict=True)]
        if metric == "mean":
            return [a / count for a in a1]
        a2 = [sum(col) for col in zip(*(s2[b] for b in blocks_in), strict=True)]
        dof = count - 1
        out = []
        for a, q in zip(a1, a2, strict=True):
            mean = a / count
            var = (q - a * mean) / dof
            out.append(mean / math.sqrt(var) if var > 0.0 else _sharpe_from(count, mean, 0.0))
        return out

    def evaluate(split: tuple[int, ...]) -> tuple[list[float], list[float]]:
        inside = set(split)
        return stats(list(split)), stats([b for b in every if b not in inside])

    return evaluate


def _callable_evaluator(blocks: list[list[list[float]]], n_cols: int, metric: Metric) -> Evaluator:
    columns = [[[row[n] for row in b] for n in range(n_cols)] for b in blocks]  # [block][col] -> returns

    def evaluate(split: tuple[int, ...]) -> tuple[list[float], list[float]]:
        chosen = set(split)
        inside, outside = [], []
        for n in range(n_cols):
            ins = [x for b in range(len(blocks)) if b in chosen for x in columns[b][n]]
            outs = [x for b in range(len(blocks)) if b not in chosen for x in columns[b][n]]
            inside.append(float(metric(ins)))
            outside.append(float(metric(outs)))
        for v in inside + outside:
            if math.isnan(v):
                raise InputError("the PBO metric returned NaN for a split; it must rank every combination")
        return inside, outside

    return evaluate


def _ols(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Slope and intercept of y on x (the paper's performance degradation); NaN when x has no spread."""
    if len(pairs) < 2:
        return math.nan, math.nan
    mx = math.fsum(x for x, _ in pairs) / len(pairs)
    my = math.fsum(y for _, y in pairs) / len(pairs)
    sxx = math.fsum((x - mx) ** 2 for x, _ in pairs)
    if sxx == 0.0:
        return math.nan, math.nan
    slope = math.fsum((x - mx) * (y - my) for x, y in pairs) / sxx
    return slope, my - slope * mx
