"""Paired statistics for comparing two systems on the same examples.

Every function takes plain sequences or numpy arrays of per-example scores and returns a small
frozen dataclass (``.as_dict()`` for JSON). Where scipy has the test, scipy computes it; this
module adds the pairing, the edge cases (all-equal differences, tiny samples) and the pieces
scipy lacks (McNemar with its risk-difference and odds-ratio intervals, Holm, power for paired
designs, the seeds-and-examples test for groups of training runs).

Conventions: ``a`` is the baseline, ``b`` the challenger, differences are ``d = b - a``, so a
positive difference means b scores higher. Confidence levels default to 95%. A difference no
larger than floating-point rounding of the scores (``noise_floor``) counts as zero: two runs
whose metric differs only in the 17th digit are tied, never "significantly" different.

References
- Efron & Tibshirani (1993), *An Introduction to the Bootstrap*: percentile intervals (ch. 13),
  BCa intervals (ch. 14, eq. 14.9-14.15); Hesterberg (2015), "What teachers should know about the
  bootstrap", The American Statistician 69:371 (the small-sample expansion of the quantiles).
- Koehn (2004), "Statistical significance tests for machine translation evaluation"
  (paired bootstrap resampling of the per-example difference).
- Cohen (1988), *Statistical Power Analysis for the Behavioral Sciences*: d, d_z.
- McNemar (1947), Psychometrika 12:153; Edwards (1948) continuity correction.
- Tango (1998), "Equivalence test and confidence interval for the difference in proportions for
  the paired-sample design", Statistics in Medicine 17:891 (score interval of the risk difference).
- Cohen (1988), ch. 5: g = P - 1/2 for McNemar's discordant pairs; Breslow & Day (1980), sec. 7.2
  (the conditional odds ratio b01/b10 and its exact interval).
- Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
- Dror et al. (2018), "The Hitchhiker's Guide to Testing Statistical Significance in NLP" (ACL).
- Welch (1947), "The generalization of 'Student's' problem when several different population
  variances are involved", Biometrika 34:28.
- Satterthwaite (1946), "An approximate distribution of estimates of variance components",
  Biometrics Bulletin 2:110; Searle, Casella & McCulloch (1992), *Variance Components*, ch. 4
  (two-way crossed random designs: the seeds x examples ANOVA behind ``group_ttest``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import integrate, optimize, stats

# The project plan's minimum sample sizes (per compared system, paired examples).
RECOMMENDED_SAMPLE_SIZE = {"automatic": 500, "human": 200}
RECOMMENDED_ANNOTATORS = 2

ArrayLike = Sequence[float] | np.ndarray


class _Result:
    def as_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class BootstrapCI(_Result):
    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n: int
    method: str = "bca"


@dataclass(frozen=True)
class TTest(_Result):
    statistic: float
    pvalue: float
    df: int
    mean_diff: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Wilcoxon(_Result):
    statistic: float
    pvalue: float
    n_nonzero: int


@dataclass(frozen=True)
class McNemar(_Result):
    b01: int  # a wrong (0), b right (1)
    b10: int  # a right (1), b wrong (0)
    statistic: float
    pvalue: float
    exact: bool


@dataclass(frozen=True)
class RiskDifferenceCI(_Result):
    """Paired risk difference mean(b) - mean(a) of 0/1 outcomes with its score interval."""
    estimate: float
    low: float
    high: float
    confidence: float
    n: int


@dataclass(frozen=True)
class DiscordantEffect(_Result):
    """McNemar's effect sizes from the discordant pairs (None where undefined or unbounded).

    g = b01 / (b01 + b10) - 1/2 (Cohen's g, in [-1/2, 1/2]); odds_ratio = b01 / b10 (conditional
    odds ratio). Both intervals are the exact (Clopper-Pearson) interval of b01 / (b01 + b10),
    transformed. ``odds_ratio`` and ``or_high`` are None when b10 = 0 (unbounded above).
    """
    g: float | None
    g_low: float | None
    g_high: float | None
    odds_ratio: float | None
    or_low: float | None
    or_high: float | None
    confidence: float


@dataclass(frozen=True)
class WelchTTest(_Result):
    statistic: float
    pvalue: float
    df: float
    mean_diff: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class GroupTTest(WelchTTest):
    """``group_ttest``: the difference of two groups of seed runs (Welch's fields), its SE split by source."""
    se: float
    se_seeds: float     # from the spread of per-seed means (training variance + per-seed example noise)
    se_examples: float  # from the examples' shared effect on the difference (test-set sampling)
    confidence: float


@dataclass(frozen=True)
class SeedAggregate(_Result):
    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float
    confidence: float


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop them before testing")
    return arr


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("no paired examples")
    return a, b


def is_binary(x: ArrayLike) -> bool:
    """True when every value is 0 or 1 (such metrics get McNemar's test)."""
    arr = np.asarray(x, dtype=np.float64)
    return arr.size > 0 and bool(np.all((arr == 0.0) | (arr == 1.0)))


# Differences within this many units of double rounding (relative to the largest |score|) are
# rounding error, not data: 0.1 + 0.2 - 0.3, or one metric averaged in two orders. 64 ulps leaves
# room for sums of a few hundred terms and is ~1e-14 on a 0-1 metric, far below any real effect.
_NOISE_ULPS = 64


def noise_floor(*arrays: np.ndarray) -> float:
    """Largest |difference| that is floating-point rounding of these scores: 64 eps max|score|."""
    scale = max((float(np.max(np.abs(x))) for x in arrays if np.size(x)), default=0.0)
    return _NOISE_ULPS * np.finfo(np.float64).eps * scale


def snap_to_zero(d: np.ndarray, floor: float) -> np.ndarray:
    """d with every entry of magnitude <= ``floor`` set to exactly 0 (a copy)."""
    d = np.array(d, dtype=np.float64)
    d[np.abs(d) <= floor] = 0.0
    return d


def differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Paired differences b - a, with rounding-level differences (``noise_floor``) set to 0."""
    return _differences(a, b)[0]


def _differences(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, float]:
    """(``differences(a, b)``, the noise floor). A spread of d within the floor is no spread either:
    0.2 - 0.1, 0.3 - 0.2 and 0.4 - 0.3 are one constant shift of 0.1, not three values."""
    a, b = _paired(a, b)
    floor = noise_floor(a, b)
    return snap_to_zero(b - a, floor), floor


# ---------------------------------------------------------------------------- bootstrap


def _bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of x, drawn in chunks.

    Chunks bound memory at ~4M indices; the draws are identical to a single
    ``rng.integers(0, n, size=(n_resamples, n))`` call (the generator streams row-major).
    """
    n = x.size
    out = np.empty(n_resamples)
    chunk = max(1, min(n_resamples, 4_000_000 // max(n, 1)))
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _bca_levels(x: np.ndarray, means: np.ndarray, confidence: float, expand: bool) -> tuple[float, float]:
    """The BCa quantile levels (alpha_1, alpha_2) for the mean of x (Efron & Tibshirani 1993, 14.10).

    z0 = Phi^-1(share of bootstrap means below the mean, ties counted half), acceleration
    a = sum(u^3) / (6 sum(u^2)^1.5) from the jackknife means, u_i = mean_jack - jack_i. With
    ``expand`` the normal quantiles z_{alpha/2} become sqrt(n/(n-1)) t_{n-1, alpha/2} (Hesterberg
    2015), which corrects the bootstrap's narrowness at small n and vanishes as n grows; without it
    the levels are scipy.stats.bootstrap(method="BCa")'s.
    """
    n, m = x.size, x.mean()
    p0 = (np.count_nonzero(means < m) + np.count_nonzero(means <= m)) / (2 * means.size)
    z0 = stats.norm.ppf(p0)
    jack = (x.sum() - x) / (n - 1)  # leave-one-out means
    u = jack.mean() - jack
    den = float(np.sum(u ** 2))
    acc = float(np.sum(u ** 3)) / (6 * den ** 1.5) if den > 0 else 0.0
    half = (1 - confidence) / 2
    z = (math.sqrt(n / (n - 1)) * stats.t.ppf(half, n - 1) if expand and n > 1 else stats.norm.ppf(half))
    lo = stats.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
    hi = stats.norm.cdf(z0 + (z0 - z) / (1 - acc * (z0 - z)))
    return float(lo), float(hi)


def bootstrap_ci(x: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0, method: str = "bca") -> BootstrapCI:
    """Bootstrap CI of the mean of x: BCa with the small-sample expansion (default) or percentile.

    Resample n values with replacement ``n_resamples`` times and take the mean of each resample.
    ``"percentile"`` reports the (1-c)/2 and (1+c)/2 quantiles of those means (Efron & Tibshirani
    1993, ch. 13); it covers too little at small n (about 0.92 for a 95% interval at n = 10) and
    on skewed scores. ``"bca"`` moves the quantile levels for bias and skew (``_bca_levels``) and
    widens them by sqrt(n/(n-1)) t_{n-1} / z (Hesterberg 2015); at large n it equals
    scipy.stats.bootstrap(method="BCa"). Deterministic given ``seed`` (numpy PCG64, the same
    resamples as scipy). All-equal values (or a single one) give a zero-width interval.
    """
    arr = _as_1d(x, "x")
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")
    m = float(arr.mean())
    if np.ptp(arr) == 0:
        return BootstrapCI(m, m, m, confidence, n_resamples, int(arr.size), method)
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(arr, n_resamples, rng)
    alpha = 1.0 - confidence
    levels = _bca_levels(arr, means, confidence, expand=True) if method == "bca" else (alpha / 2, 1 - alpha / 2)
    lo, hi = np.quantile(means, levels)
    return BootstrapCI(m, float(lo), float(hi), confidence, n_resamples, int(arr.size), method)


def paired_bootstrap_ci(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95,
                        n_resamples: int = 10_000, seed: int = 0, method: str = "bca") -> BootstrapCI:
    """Paired bootstrap CI of mean(b - a): resample *examples* (keeping each pair together).

    Equivalent to the bootstrap of the per-example differences d_i = b_i - a_i (Koehn 2004),
    rounding-level differences set to 0 (``differences``). ``estimate`` is the observed mean
    difference. ``compare`` reports the paired t-interval instead (the interval of its test).
    """
    return bootstrap_ci(differences(a, b), confidence=confidence, n_resamples=n_resamples, seed=seed,
                        method=method)


def paired_bootstrap_pvalue(a: ArrayLike, b: ArrayLike, *, n_resamples: int = 10_000,
                            seed: int = 0) -> float:
    """Two-sided bootstrap p-value for H0: mean(b - a) = 0.

    Shift the differences to mean zero (imposing H0), resample, and count how often the
    resampled |mean| reaches the observed |mean| (Efron & Tibshirani 1993, alg. 16.1), with the
    +1 correction so p is never exactly 0.
    """
    d = differences(a, b)
    obs = abs(d.mean())
    rng = np.random.default_rng(seed)
    null = _bootstrap_means(d - d.mean(), n_resamples, rng)
    return float((np.sum(np.abs(null) >= obs - 1e-12) + 1) / (n_resamples + 1))


# ---------------------------------------------------------------------------- paired tests


def paired_ttest(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> TTest:
    """Paired t-test of H0: mean(b - a) = 0 (scipy.stats.ttest_rel), two-sided.

    t = mean(d) / (sd(d) / sqrt(n)), df = n - 1; the CI is mean(d) ± t_{df,(1+c)/2} sd(d)/sqrt(n).
    Rounding-level differences count as 0 (``differences``), so scores equal up to float noise give
    t = 0, p = 1. When every difference is the same (up to rounding) the test is degenerate: p = 1 if
    that difference is 0, else p = 0 (a constant non-zero shift), with a zero-width interval.
    """
    d, floor = _differences(a, b)
    n = d.size
    if n < 2:
        raise ValueError("paired t-test needs at least 2 pairs")
    md = float(d.mean())
    if np.ptp(d) <= floor:
        return TTest(0.0 if md == 0 else math.copysign(math.inf, md), 1.0 if md == 0 else 0.0,
                     n - 1, md, md, md)
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(confidence_level=confidence)
    return TTest(float(res.statistic), float(res.pvalue), int(n - 1), md, float(ci.low), float(ci.high))


def wilcoxon_signed_rank(a: ArrayLike, b: ArrayLike) -> Wilcoxon:
    """Wilcoxon signed-rank test of H0: the differences b - a are symmetric about 0.

    scipy.stats.wilcoxon after dropping zero differences, rounding-level ones included (Wilcoxon
    1945's "wilcox" zero method). As R's wilcox.test decides: the exact null distribution for fewer
    than 50 non-zero differences without ties, else the normal approximation with the tie
    correction and a continuity correction of 1/2 (``method="approx", correction=True``). All
    differences zero -> statistic 0, p = 1.
    """
    d = differences(a, b)
    d = d[d != 0]
    nz = int(d.size)
    if nz == 0:
        return Wilcoxon(0.0, 1.0, 0)
    exact = nz < 50 and np.unique(np.abs(d)).size == nz
    res = stats.wilcoxon(d, correction=True, method="exact" if exact else "approx", alternative="two-sided")
    return Wilcoxon(float(res.statistic), float(res.pvalue), nz)


def mcnemar(a: ArrayLike, b: ArrayLike, *, exact: bool | None = None) -> McNemar:
    """McNemar's test for paired binary outcomes (0/1 per example).

    Only discordant pairs count: b01 = #(a=0, b=1), b10 = #(a=1, b=0).
    Exact: two-sided binomial test of b10 ~ Bin(b01 + b10, 1/2) (scipy.stats.binomtest).
    Asymptotic: chi2 = (|b01 - b10| - 1)^2 / (b01 + b10) with Edwards' continuity correction, 1 df.
    ``exact=None`` picks the exact test when b01 + b10 < 25 (the usual rule). No discordant
    pairs -> p = 1.
    """
    b01, b10, _ = _binary_pair_counts(a, b, "McNemar's test")
    n = b01 + b10
    if exact is None:
        exact = n < 25
    if n == 0:
        return McNemar(b01, b10, 0.0, 1.0, bool(exact))
    if exact:
        res = stats.binomtest(b10, n, 0.5, alternative="two-sided")
        return McNemar(b01, b10, float(min(b01, b10)), float(res.pvalue), True)
    chi2 = (abs(b01 - b10) - 1.0) ** 2 / n
    return McNemar(b01, b10, float(chi2), float(stats.chi2.sf(chi2, 1)), False)


def _binary_pair_counts(a: ArrayLike, b: ArrayLike, what: str = "this paired binary statistic") -> tuple[int, int, int]:
    """(b01, b10, n) of paired 0/1 outcomes."""
    a, b = _paired(a, b)
    if not (is_binary(a) and is_binary(b)):
        raise ValueError(f"{what} needs 0/1 scores")
    return int(np.sum((a == 0) & (b == 1))), int(np.sum((a == 1) & (b == 0))), int(a.size)


def _tango_p10(b01: int, b10: int, n: int, delta: float) -> float:
    """Restricted MLE of p10 = P(a=1, b=0) under p01 - p10 = delta (Tango 1998, eq. 3):
    the root in range of 2n p^2 + B p + C = 0, B = -b01 - b10 + (2n - b01 + b10) delta,
    C = -b10 delta (1 - delta)."""
    bq = -b01 - b10 + (2 * n - b01 + b10) * delta
    cq = -b10 * delta * (1 - delta)
    disc = max(bq * bq - 8 * n * cq, 0.0)
    return (math.sqrt(disc) - bq) / (4 * n)


def tango_score(b01: int, b10: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: p01 - p10 = delta; at delta = 0 it is McNemar's
    (b01 - b10) / sqrt(b01 + b10) without continuity correction. Decreasing in delta."""
    p10 = _tango_p10(b01, b10, n, delta)
    var = n * (2 * p10 + delta - delta * delta)
    num = b01 - b10 - n * delta
    if var <= 0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def paired_risk_difference_ci(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> RiskDifferenceCI:
    """Score interval of the paired risk difference mean(b) - mean(a) = (b01 - b10) / n for 0/1 outcomes.

    Tango (1998): every delta whose score statistic |Z(delta)| <= z_{(1+c)/2}. It inverts the test
    McNemar's chi-square approximates, so it excludes 0 whenever McNemar (exact, or with continuity
    correction) rejects at 1 - c, stays inside [-1, 1], and has a non-zero width when no pair is
    discordant. Coverage is close to nominal even with few discordant pairs (Newcombe 1998).
    """
    b01, b10, n = _binary_pair_counts(a, b)
    z = float(stats.norm.ppf((1 + confidence) / 2))
    est = (b01 - b10) / n
    eps = 1e-12

    def endpoint(lo: float, hi: float, target: float) -> float:
        f = lambda dl: tango_score(b01, b10, n, dl) - target  # noqa: E731
        if f(lo) * f(hi) > 0:  # the interval reaches the bound of [-1, 1]
            return -1.0 if target > 0 else 1.0
        return float(optimize.brentq(f, lo, hi, xtol=1e-12))

    low = -1.0 if est <= -1 + eps else endpoint(-1 + eps, est, z)
    high = 1.0 if est >= 1 - eps else endpoint(est, 1 - eps, -z)
    return RiskDifferenceCI(float(est), low, high, confidence, n)


def discordant_effect(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> DiscordantEffect:
    """Effect sizes that fit McNemar: Cohen's g and the conditional odds ratio b01/b10, with exact CIs.

    McNemar's test looks only at the discordant pairs; its effect is the share pi = b01 / (b01 + b10)
    of them that favour b. g = pi - 1/2 (Cohen 1988, ch. 5: 0.05 small, 0.15 medium, 0.25 large);
    the odds ratio pi / (1 - pi) = b01 / b10. Intervals: Clopper-Pearson for pi
    (scipy.stats.binomtest(...).proportion_ci(method="exact")), transformed. No discordant pairs:
    every field None. b10 = 0: the odds ratio and its upper bound are None (unbounded), never inf.
    """
    b01, b10, _ = _binary_pair_counts(a, b)
    nd = b01 + b10
    if nd == 0:
        return DiscordantEffect(None, None, None, None, None, None, confidence)
    ci = stats.binomtest(b01, nd).proportion_ci(confidence_level=confidence, method="exact")
    lo, hi = float(ci.low), float(ci.high)

    def odds(p: float) -> float | None:
        return None if p >= 1.0 else p / (1.0 - p)

    return DiscordantEffect(b01 / nd - 0.5, lo - 0.5, hi - 0.5, None if b10 == 0 else b01 / b10,
                            odds(lo), odds(hi), confidence)


# ---------------------------------------------------------------------------- effect sizes


def cohens_dz(a: ArrayLike, b: ArrayLike) -> float:
    """Paired effect size d_z = mean(d) / sd(d), d = b - a, sd with ddof = 1 (Cohen 1988, eq. 2.3.5).

    This is the standardiser the paired t-test uses (t = d_z sqrt(n)), for continuous scores
    (for 0/1 scores use ``discordant_effect``). Rounding-level differences count as 0. Zero
    spread: 0 when the mean difference is 0, else ±inf (reports print that as n/a).
    """
    d, floor = _differences(a, b)
    if d.size < 2:
        raise ValueError("d_z needs at least 2 pairs")
    sd = float(d.std(ddof=1))
    md = float(d.mean())
    if np.ptp(d) <= floor:
        return 0.0 if md == 0.0 else math.copysign(math.inf, md)
    return md / sd


def cohens_d_pooled(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d with the pooled SD: (mean(b) - mean(a)) / s_p,
    s_p = sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)) (Cohen 1988, eq. 2.5.2).

    Ignores the pairing; comparable with effect sizes from unpaired studies.
    """
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.size < 2 or b.size < 2:
        raise ValueError("pooled d needs at least 2 values per group")
    sp2 = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    md = float(b.mean() - a.mean())
    if sp2 == 0.0:
        return 0.0 if md == 0.0 else math.copysign(math.inf, md)
    return md / math.sqrt(sp2)


# ---------------------------------------------------------------------------- multiplicity


def holm(pvalues: ArrayLike, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm–Bonferroni step-down correction (Holm 1979). Returns (adjusted p, reject).

    Sort p ascending; p_adj(i) = max_{j<=i} min(1, (m - j) * p_(j)) (0-based j), mapped back to
    the input order. Reject where p_adj <= alpha. Controls the family-wise error rate.
    """
    p = _as_1d(pvalues, "pvalues")
    m = p.size
    if m == 0:
        return np.array([]), np.array([], dtype=bool)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="mergesort")
    adj_sorted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(adj_sorted)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj, adj <= alpha


# ---------------------------------------------------------------------------- seeds


def aggregate_seeds(values: ArrayLike, *, confidence: float = 0.95) -> SeedAggregate:
    """Mean ± t-interval of one metric across independent training seeds.

    CI = mean ± t_{n-1,(1+c)/2} * sd / sqrt(n) with sd at ddof = 1. Seeds are the unit of
    replication here (each value is one seed's metric mean), so the interval reflects
    training variance, not test-set sampling. One seed gives an infinite-width interval.
    """
    x = _as_1d(values, "values")
    n = x.size
    if n == 0:
        raise ValueError("aggregate_seeds needs at least one value")
    m = float(x.mean())
    if n == 1:
        return SeedAggregate(m, float("nan"), 1, -math.inf, math.inf, confidence)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return SeedAggregate(m, sd, n, m - half, m + half, confidence)


def welch_ttest(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> WelchTTest:
    """Welch's unequal-variance t-test of H0: mean(b) = mean(a), two-sided (Welch 1947).

    scipy.stats.ttest_ind(b, a, equal_var=False): t = (mean(b) - mean(a)) / sqrt(s_a^2/n_a + s_b^2/n_b)
    with the Welch-Satterthwaite df; the CI of mean(b) - mean(a) is scipy's t-interval. Used with
    one value per training seed (the unpaired samples are the seeds of two methods). When neither
    sample has any spread the test is degenerate: p = 1 if the means are equal, else p = 0, with a
    zero-width interval (as in ``paired_ttest``). ``compare --group`` uses ``group_ttest`` instead,
    which also carries the test set's variance.
    """
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values per sample, got {a.size} and {b.size}")
    md = float(b.mean() - a.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return WelchTTest(0.0 if md == 0 else math.copysign(math.inf, md), 1.0 if md == 0 else 0.0,
                          float(a.size + b.size - 2), md, md, md)
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return WelchTTest(float(res.statistic), float(res.pvalue), float(res.df), md, float(ci.low), float(ci.high))


def group_ttest(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> GroupTTest:
    """t-test and t-interval of mean(b) - mean(a) for two groups of seed runs on the same examples.

    a: (k_a, n), b: (k_b, n) per-example scores, one row per training seed, columns paired by
    example; k_a, k_b >= 2. The estimate is b.mean() - a.mean(). Its variance, over new seeds *and*
    a new test set drawn like this one, comes from a two-way (seeds x examples) random-effects
    ANOVA per group (Searle et al. 1992, ch. 4):

        se^2 = s_a^2 / k_a + s_b^2 / k_b + max(0, s_D^2 - r_a / k_a - r_b / k_b) / n

    s_g^2: variance of group g's per-seed means (seed variance plus that seed's own example noise);
    s_D^2: variance over examples of D_i = mean_s b_si - mean_s a_si (the examples' effect on the
    difference, plus the per-seed noise again); r_g: group g's residual mean square (seed x example
    interaction and noise, (k_g - 1)(n - 1) df). Subtracting r_g / k_g keeps example noise from being
    counted twice, once through the seeds and once through the examples; each term is unbiased, so
    se^2 is. df: Satterthwaite (1946) from the three terms (k_a - 1, k_b - 1, n - 1 df). Then
    t = estimate / se, two-sided p from t(df), CI = estimate ± t_{df,(1+c)/2} se, so the verdict and
    the interval always agree. Coverage 0.93-0.97 with 3-10 seeds, seed- or example-dominated
    (bench/group_ci_coverage.py, docs/evaluation.md). Rounding-level differences count as 0; no
    spread at all: p = 1 (equal) or 0 (a constant shift), zero-width interval.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (seeds, examples) with the same examples, got {a.shape} and {b.shape}")
    (k_a, n), k_b = a.shape, b.shape[0]
    if k_a < 2 or k_b < 2 or n < 1:
        raise ValueError(f"each group needs at least 2 seeds (rows) and 1 example, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a or b contains NaN or infinite values; drop those examples before testing")
    floor = noise_floor(a, b)
    seeds_a, seeds_b = a.mean(axis=1), b.mean(axis=1)                 # (k_a,), (k_b,)
    md = float(snap_to_zero(np.array([seeds_b.mean() - seeds_a.mean()]), floor)[0])
    # Seed means that differ only by rounding have no spread (as in ``paired_ttest``).
    var_a, var_b = (0.0 if np.ptp(m) <= floor else float(m.var(ddof=1)) / m.size for m in (seeds_a, seeds_b))
    var_ex, df_ex = 0.0, max(n - 1, 1)
    if n >= 2:
        dvec = snap_to_zero(b.mean(axis=0) - a.mean(axis=0), floor)    # (n,) D_i
        resid = [((y - y.mean(axis=1, keepdims=True) - y.mean(axis=0) + y.mean()) ** 2).sum() / ((y.shape[0] - 1) * (n - 1))
                 for y in (a, b)]
        var_ex = max(0.0, float(dvec.var(ddof=1)) - resid[0] / k_a - resid[1] / k_b) / n
    se2 = float(var_a + var_b + var_ex)
    if se2 <= floor ** 2:
        t, pval = (0.0, 1.0) if md == 0 else (math.copysign(math.inf, md), 0.0)
        return GroupTTest(t, pval, float(k_a + k_b - 2), md, md, md, 0.0, 0.0, 0.0, confidence)
    df = se2 ** 2 / (var_a ** 2 / (k_a - 1) + var_b ** 2 / (k_b - 1) + var_ex ** 2 / df_ex)
    se = math.sqrt(se2)
    t = md / se
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    return GroupTTest(t, float(2 * stats.t.sf(abs(t), df)), float(df), md, md - half, md + half, se,
                      math.sqrt(var_a + var_b), math.sqrt(var_ex), confidence)


def group_comparison(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> dict:
    """All statistics for one metric between two groups of seed runs on the same examples.

    a: (k_a, n), b: (k_b, n) as in ``group_ttest``; k_a, k_b >= 2. One method decides and sizes the
    difference: ``group_ttest`` gives ``pvalue`` (to be Holm-corrected by the caller) and the CI.
    ``d_seeds`` is the pooled-SD Cohen's d over seed means (training-seed scale, not example scale;
    None when the seed means have no spread).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"each group needs at least 2 seeds (rows), got shapes {a.shape} and {b.shape}")
    seeds_a, seeds_b = a.mean(axis=1), b.mean(axis=1)  # (k_a,), (k_b,)
    gt = group_ttest(a, b, confidence=confidence)
    d_seeds = cohens_d_pooled(seeds_a, seeds_b)
    return {
        "n": int(a.shape[1]), "seeds_a": int(a.shape[0]), "seeds_b": int(b.shape[0]),
        "seed_means_a": seeds_a.tolist(), "seed_means_b": seeds_b.tolist(),
        "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": gt.mean_diff,
        "ci_low": gt.ci_low, "ci_high": gt.ci_high, "ci_method": "t (seeds + examples)",
        "t": gt.statistic, "df": gt.df, "se": gt.se, "se_seeds": gt.se_seeds, "se_examples": gt.se_examples,
        "d_seeds": d_seeds if math.isfinite(d_seeds) else None,
        "test": "t over seeds + examples", "pvalue": gt.pvalue,
    }


# ---------------------------------------------------------------------------- power


def _power_by_integration(nc: float, df: int, tc: float) -> float:
    """P(|T| > tc) for T ~ noncentral t(df, nc), by integrating over the chi-square denominator.

    T = (Z + nc) / sqrt(V / df), V ~ chi2(df), so P(|T| > tc) = E_V[Phi(nc - s) + Phi(-nc - s)] with
    s = tc sqrt(V / df). quad over V between its 1e-12 and 1 - 1e-12 quantiles; accurate to ~1e-10
    at every df, including df = 1 where scipy's nct returns NaN.
    """
    def integrand(v: float) -> float:
        s = tc * math.sqrt(v / df)
        return float(stats.chi2.pdf(v, df) * (stats.norm.cdf(nc - s) + stats.norm.cdf(-nc - s)))

    lo, hi = (float(q) for q in stats.chi2.ppf([1e-12, 1 - 1e-12], df))
    points = [float(df)] if lo < df < hi else None
    return float(integrate.quad(integrand, lo, hi, points=points, limit=200, epsabs=1e-12, epsrel=1e-10)[0])


def power_paired_t(effect_size: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test for effect d_z with n pairs.

    Under H1, t ~ noncentral t(df = n - 1, nc = d_z sqrt(n)); power = P(|t| > t_{1-alpha/2})
    (Cohen 1988, ch. 2; matches G*Power's "means: difference between two dependent means" and
    statsmodels' TTestPower). scipy.stats.nct computes it; where nct fails (NaN or out of [0, 1],
    e.g. df = 1 with a large nc) the same probability is integrated directly
    (``_power_by_integration``). A NaN effect size is an error, not power 1.
    """
    if not math.isfinite(effect_size):
        raise ValueError(f"effect size must be a finite number, got {effect_size}")
    if n < 2:
        return 0.0
    df = n - 1
    nc = abs(effect_size) * math.sqrt(n)
    tc = float(stats.t.ppf(1 - alpha / 2, df))
    pw = float(stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc))
    if not 0.0 <= pw <= 1.0 + 1e-9:  # NaN included
        pw = _power_by_integration(nc, df, tc)
    return min(1.0, max(0.0, pw))


def required_sample_size(effect_size: float, *, alpha: float = 0.05, power: float = 0.8,
                         max_n: int = 10_000_000) -> int:
    """Smallest number of pairs n with power_paired_t(d_z, n) >= power.

    E.g. d_z = 0.5 -> 34, d_z = 0.2 -> 199 at alpha = 0.05, power = 0.8.
    """
    d = abs(effect_size)
    if d == 0:
        raise ValueError("a zero effect cannot be detected at any sample size")
    # Normal approximation as a starting point, then exact search.
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, int((z / d) ** 2) - 2)
    while power_paired_t(d, n, alpha=alpha) >= power and n > 2:
        n -= 1
    while power_paired_t(d, n, alpha=alpha) < power:
        n += 1
        if n > max_n:
            raise ValueError(f"effect {effect_size} needs more than {max_n} pairs")
    return n


def minimum_detectable_effect(n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest d_z the paired t-test detects with the given power from n pairs.

    Multiply by sd(b - a) to express it in metric units. n = 500 -> ~0.125; n = 200 -> ~0.199.
    """
    if n < 2:
        return math.inf
    return float(optimize.brentq(lambda d: power_paired_t(d, n, alpha=alpha) - power, 1e-6, 50.0))


def sample_size_note(n: int, kind: str = "automatic") -> str | None:
    """A warning when n is below the plan's recommendation for this kind of evaluation, else None."""
    if kind not in RECOMMENDED_SAMPLE_SIZE:
        raise ValueError(f"kind must be one of {sorted(RECOMMENDED_SAMPLE_SIZE)}, got {kind!r}")
    need = RECOMMENDED_SAMPLE_SIZE[kind]
    if n >= need:
        return None
    return (f"only {n} paired examples; the plan recommends {need}+ for {kind} evaluation "
            f"(with n={n} the paired t-test detects d_z >= {minimum_detectable_effect(n):.2f} "
            f"at 80% power; with n={need}, d_z >= {minimum_detectable_effect(need):.2f})")


# ---------------------------------------------------------------------------- everything at once


def paired_comparison(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> dict:
    """All paired statistics for one metric: the numbers a comparison report needs.

    One method per metric decides and sizes the difference:
    - 0/1 scores: McNemar's test (``pvalue``), the Tango score interval of the risk difference
      (``ci_low``/``ci_high``, ``ci_method="Tango score"``), and McNemar's effect sizes g and the
      conditional odds ratio with exact intervals (``discordant_effect``); no d_z.
    - other scores: the paired t-test (``pvalue``), its t-interval (``ci_method="t"``), d_z and the
      pooled d (None where they would be infinite: no spread in the differences).
    Wilcoxon's p is carried along as a distribution-free check. ``pvalue`` is to be Holm-corrected
    across the family by the caller. Rounding-level differences count as 0 throughout.
    """
    a, b = _paired(a, b)
    n = a.size
    d = differences(a, b)
    binary = is_binary(a) and is_binary(b)
    out: dict = {"n": int(n), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(d.mean()),
                 "binary": binary}
    wx = wilcoxon_signed_rank(a, b)
    out.update(wilcoxon_stat=wx.statistic, wilcoxon_pvalue=wx.pvalue)
    if binary:
        mc = mcnemar(a, b)
        rd = paired_risk_difference_ci(a, b, confidence=confidence)
        eff = discordant_effect(a, b, confidence=confidence)
        out.update(ci_low=rd.low, ci_high=rd.high, ci_method="Tango score",
                   mcnemar_b01=mc.b01, mcnemar_b10=mc.b10, mcnemar_pvalue=mc.pvalue, mcnemar_exact=mc.exact,
                   g=eff.g, g_low=eff.g_low, g_high=eff.g_high,
                   odds_ratio=eff.odds_ratio, or_low=eff.or_low, or_high=eff.or_high,
                   test="mcnemar", pvalue=mc.pvalue)
        return out
    if n >= 2:
        tt = paired_ttest(a, b, confidence=confidence)
        dz, dp = cohens_dz(a, b), cohens_d_pooled(a, b)
        out.update(ci_low=tt.ci_low, ci_high=tt.ci_high, t_stat=tt.statistic, t_pvalue=tt.pvalue,
                   d_z=dz if math.isfinite(dz) else None, d_pooled=dp if math.isfinite(dp) else None)
    else:
        out.update(ci_low=float("nan"), ci_high=float("nan"), t_stat=float("nan"), t_pvalue=1.0,
                   d_z=None, d_pooled=None)
    out.update(ci_method="t", test="paired t", pvalue=out["t_pvalue"])
    return out
