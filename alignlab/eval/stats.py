"""Paired statistics for comparing two systems on the same examples.

Every function takes plain sequences or numpy arrays of per-example scores and returns a small
frozen dataclass (``.as_dict()`` for JSON). Where scipy has the test, scipy computes it; this
module adds the pairing, the edge cases (all-equal differences, tiny samples) and the pieces
scipy lacks (paired bootstrap of the mean difference, McNemar, Holm, power for paired designs).

Conventions: ``a`` is the baseline, ``b`` the challenger, differences are ``d = b - a``, so a
positive difference means b scores higher. Confidence levels default to 95%.

References
- Efron & Tibshirani (1993), *An Introduction to the Bootstrap*: percentile intervals.
- Koehn (2004), "Statistical significance tests for machine translation evaluation"
  (paired bootstrap resampling of the per-example difference).
- Cohen (1988), *Statistical Power Analysis for the Behavioral Sciences*: d, d_z.
- McNemar (1947), Psychometrika 12:153; Edwards (1948) continuity correction.
- Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
- Dror et al. (2018), "The Hitchhiker's Guide to Testing Statistical Significance in NLP" (ACL).
- Welch (1947), "The generalization of 'Student's' problem when several different population
  variances are involved", Biometrika 34:28.
- Davison & Hinkley (1997), *Bootstrap Methods and their Application*, sec. 3.8 (hierarchical data);
  Saravanan, Berman & Sober (2020), "Application of the hierarchical bootstrap to multi-level data
  in neuroscience", Neurons, Behavior, Data analysis, and Theory 3(5).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

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
class WelchTTest(_Result):
    statistic: float
    pvalue: float
    df: float
    mean_diff: float
    ci_low: float
    ci_high: float


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


def bootstrap_ci(x: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap CI of the mean of x.

    Resample n values with replacement ``n_resamples`` times, take the mean of each resample
    and report the (1-c)/2 and (1+c)/2 quantiles (Efron & Tibshirani 1993, ch. 13).
    Deterministic given ``seed`` (numpy PCG64). A single value gives a zero-width interval.
    """
    arr = _as_1d(x, "x")
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(arr, n_resamples, rng)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(arr.mean()), float(lo), float(hi), confidence, n_resamples, int(arr.size))


def paired_bootstrap_ci(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95,
                        n_resamples: int = 10_000, seed: int = 0) -> BootstrapCI:
    """Paired bootstrap CI of mean(b - a): resample *examples* (keeping each pair together).

    Equivalent to the percentile bootstrap of the per-example differences d_i = b_i - a_i
    (Koehn 2004). ``estimate`` is the observed mean difference.
    """
    a, b = _paired(a, b)
    return bootstrap_ci(b - a, confidence=confidence, n_resamples=n_resamples, seed=seed)


def paired_bootstrap_pvalue(a: ArrayLike, b: ArrayLike, *, n_resamples: int = 10_000,
                            seed: int = 0) -> float:
    """Two-sided bootstrap p-value for H0: mean(b - a) = 0.

    Shift the differences to mean zero (imposing H0), resample, and count how often the
    resampled |mean| reaches the observed |mean| (Efron & Tibshirani 1993, alg. 16.1), with the
    +1 correction so p is never exactly 0.
    """
    a, b = _paired(a, b)
    d = b - a
    obs = abs(d.mean())
    rng = np.random.default_rng(seed)
    null = _bootstrap_means(d - d.mean(), n_resamples, rng)
    return float((np.sum(np.abs(null) >= obs - 1e-12) + 1) / (n_resamples + 1))


# ---------------------------------------------------------------------------- paired tests


def paired_ttest(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> TTest:
    """Paired t-test of H0: mean(b - a) = 0 (scipy.stats.ttest_rel), two-sided.

    t = mean(d) / (sd(d) / sqrt(n)), df = n - 1; the CI is mean(d) ± t_{df,(1+c)/2} sd(d)/sqrt(n).
    When every difference is identical (sd = 0) the test is degenerate: p = 1 if the mean is 0,
    else p = 0 (a constant non-zero shift), with a zero-width interval.
    """
    a, b = _paired(a, b)
    d = b - a
    n = d.size
    if n < 2:
        raise ValueError("paired t-test needs at least 2 pairs")
    md = float(d.mean())
    if np.allclose(d, d[0], rtol=0, atol=1e-12):
        return TTest(0.0 if md == 0 else math.copysign(math.inf, md), 1.0 if md == 0 else 0.0,
                     n - 1, md, md, md)
    res = stats.ttest_rel(b, a)
    ci = res.confidence_interval(confidence_level=confidence)
    return TTest(float(res.statistic), float(res.pvalue), int(n - 1), md, float(ci.low), float(ci.high))


def wilcoxon_signed_rank(a: ArrayLike, b: ArrayLike) -> Wilcoxon:
    """Wilcoxon signed-rank test of H0: the differences b - a are symmetric about 0.

    scipy.stats.wilcoxon with zero_method="wilcox" (zero differences are dropped, as in
    Wilcoxon 1945), exact null distribution for small samples without ties, normal
    approximation otherwise. All differences zero -> statistic 0, p = 1.
    """
    a, b = _paired(a, b)
    d = b - a
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return Wilcoxon(0.0, 1.0, 0)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return Wilcoxon(float(res.statistic), float(res.pvalue), nz)


def mcnemar(a: ArrayLike, b: ArrayLike, *, exact: bool | None = None) -> McNemar:
    """McNemar's test for paired binary outcomes (0/1 per example).

    Only discordant pairs count: b01 = #(a=0, b=1), b10 = #(a=1, b=0).
    Exact: two-sided binomial test of b10 ~ Bin(b01 + b10, 1/2) (scipy.stats.binomtest).
    Asymptotic: chi2 = (|b01 - b10| - 1)^2 / (b01 + b10) with Edwards' continuity correction, 1 df.
    ``exact=None`` picks the exact test when b01 + b10 < 25 (the usual rule). No discordant
    pairs -> p = 1.
    """
    a, b = _paired(a, b)
    if not (is_binary(a) and is_binary(b)):
        raise ValueError("McNemar's test needs 0/1 scores")
    b01 = int(np.sum((a == 0) & (b == 1)))
    b10 = int(np.sum((a == 1) & (b == 0)))
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


# ---------------------------------------------------------------------------- effect sizes


def cohens_dz(a: ArrayLike, b: ArrayLike) -> float:
    """Paired effect size d_z = mean(d) / sd(d), d = b - a, sd with ddof = 1 (Cohen 1988, eq. 2.3.5).

    This is the standardiser the paired t-test uses (t = d_z sqrt(n)). Zero spread: 0 when the
    mean difference is 0, else ±inf.
    """
    a, b = _paired(a, b)
    d = b - a
    if d.size < 2:
        raise ValueError("d_z needs at least 2 pairs")
    sd = float(d.std(ddof=1))
    md = float(d.mean())
    if sd == 0.0:
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
    zero-width interval (as in ``paired_ttest``).
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


def hierarchical_bootstrap_ci(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95,
                              n_resamples: int = 10_000, seed: int = 0) -> BootstrapCI:
    """Two-level (seeds, then examples) percentile bootstrap CI of mean(b) - mean(a).

    a: (k_a, n), b: (k_b, n) per-example scores, one row per training seed, columns paired by
    example. Each resample draws k_a rows of a and k_b rows of b with replacement (independently:
    the seeds of two methods are unrelated), then n columns with replacement, the *same* columns for
    both (keeping the pairing over examples), and takes mean(b rows, columns) - mean(a rows, columns).
    The interval so carries training-seed variance and test-set sampling variance (Davison &
    Hinkley 1997, sec. 3.8; Saravanan et al. 2020). ``estimate`` is b.mean() - a.mean(). With few
    seeds the seed level is under-dispersed (its bootstrap variance is (k-1)/k of the sample
    variance), so pair it with a test across seeds (``welch_ttest``). Deterministic given ``seed``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (seeds, examples) with the same examples, got {a.shape} and {b.shape}")
    if a.size == 0 or b.size == 0:
        raise ValueError("hierarchical_bootstrap_ci needs at least one seed and one example per group")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a or b contains NaN or infinite values; drop those examples before testing")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    (k_a, n), k_b = a.shape, b.shape[0]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    chunk = max(1, min(n_resamples, 4_000_000 // n))
    for start in range(0, n_resamples, chunk):
        c = min(chunk, n_resamples - start)
        w_a = rng.multinomial(k_a, np.full(k_a, 1.0 / k_a), size=c) / k_a  # (c, k_a) seed weights
        w_b = rng.multinomial(k_b, np.full(k_b, 1.0 / k_b), size=c) / k_b  # (c, k_b)
        d = w_b @ b - w_a @ a                                               # (c, n) per-example diffs
        idx = rng.integers(0, n, size=(c, n))                               # shared example draws
        diffs[start:start + c] = np.take_along_axis(d, idx, axis=1).mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(b.mean() - a.mean()), float(lo), float(hi), confidence, n_resamples, int(n))


def group_comparison(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """All statistics for one metric between two groups of seed runs on the same examples.

    a: (k_a, n), b: (k_b, n) as in ``hierarchical_bootstrap_ci``; k_a, k_b >= 2. The primary test is
    Welch's t-test over the per-seed means (``pvalue``, to be Holm-corrected by the caller); the CI
    of the difference comes from the hierarchical bootstrap; ``d_seeds`` is the pooled-SD Cohen's d
    over seed means (training-seed scale, not example scale).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"each group needs at least 2 seeds (rows), got shapes {a.shape} and {b.shape}")
    seeds_a, seeds_b = a.mean(axis=1), b.mean(axis=1)  # (k_a,), (k_b,)
    wt = welch_ttest(seeds_a, seeds_b, confidence=confidence)
    boot = hierarchical_bootstrap_ci(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return {
        "n": int(a.shape[1]), "seeds_a": int(a.shape[0]), "seeds_b": int(b.shape[0]),
        "seed_means_a": seeds_a.tolist(), "seed_means_b": seeds_b.tolist(),
        "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": boot.estimate,
        "ci_low": boot.low, "ci_high": boot.high, "ci_method": "hierarchical bootstrap (seeds, then examples)",
        "welch_t": wt.statistic, "welch_df": wt.df, "welch_ci_low": wt.ci_low, "welch_ci_high": wt.ci_high,
        "d_seeds": cohens_d_pooled(seeds_a, seeds_b),
        "test": "Welch t over seeds", "pvalue": wt.pvalue,
    }


# ---------------------------------------------------------------------------- power


def power_paired_t(effect_size: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test for effect d_z with n pairs.

    Under H1, t ~ noncentral t(df = n - 1, nc = d_z sqrt(n)); power = P(|t| > t_{1-alpha/2})
    (Cohen 1988, ch. 2; matches G*Power's "means: difference between two dependent means").
    """
    if n < 2:
        return 0.0
    df = n - 1
    nc = abs(effect_size) * math.sqrt(n)
    tc = stats.t.ppf(1 - alpha / 2, df)
    pw = float(stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc))
    if math.isnan(pw):  # scipy's nct loses precision far in the tail, where power is ~1
        pw = float(stats.norm.sf(tc - nc) + stats.norm.cdf(-tc - nc))
    return min(1.0, pw)


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


def paired_comparison(a: ArrayLike, b: ArrayLike, *, n_resamples: int = 10_000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """All paired statistics for one metric: the numbers a comparison report needs.

    The primary test is McNemar for 0/1 metrics and the paired t-test otherwise; ``pvalue``
    holds the primary test's p (to be Holm-corrected across the family by the caller).
    """
    a, b = _paired(a, b)
    n = a.size
    binary = is_binary(a) and is_binary(b)
    boot = paired_bootstrap_ci(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed)
    out: dict = {
        "n": int(n),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": float((b - a).mean()),
        "ci_low": boot.low,
        "ci_high": boot.high,
        "binary": binary,
    }
    if n >= 2:
        tt = paired_ttest(a, b, confidence=confidence)
        wx = wilcoxon_signed_rank(a, b)
        out.update(t_stat=tt.statistic, t_pvalue=tt.pvalue, wilcoxon_stat=wx.statistic,
                   wilcoxon_pvalue=wx.pvalue, d_z=cohens_dz(a, b), d_pooled=cohens_d_pooled(a, b))
    else:
        out.update(t_stat=float("nan"), t_pvalue=1.0, wilcoxon_stat=float("nan"), wilcoxon_pvalue=1.0,
                   d_z=float("nan"), d_pooled=float("nan"))
    if binary:
        mc = mcnemar(a, b)
        out.update(mcnemar_b01=mc.b01, mcnemar_b10=mc.b10, mcnemar_pvalue=mc.pvalue,
                   mcnemar_exact=mc.exact, test="mcnemar", pvalue=mc.pvalue)
    else:
        out.update(test="paired t", pvalue=out["t_pvalue"])
    return out
