"""Statistics against scipy and hand-worked values."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from alignlab.eval import stats


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    a = rng.normal(0.4, 0.1, 60)
    b = a + rng.normal(0.03, 0.05, 60)
    return a, b


# ---------------------------------------------------------------------------- paired tests


def test_paired_ttest_matches_scipy_and_formula(pair):
    a, b = pair
    r = stats.paired_ttest(a, b)
    ref = sps.ttest_rel(b, a)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    d = b - a
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert r.statistic == pytest.approx(t, rel=1e-12)
    half = sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert (r.ci_low, r.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-10)
    assert r.df == 59


def test_paired_ttest_hand_example():
    # d = [1, 2, 2, 1]: mean 1.5, sd = sqrt(1/3), t = 1.5 / (sqrt(1/3)/2) = 5.196, df 3
    r = stats.paired_ttest([1, 2, 3, 4], [2, 4, 5, 5])
    assert r.statistic == pytest.approx(5.196152422706632)
    assert r.pvalue == pytest.approx(2 * sps.t.sf(5.196152422706632, 3))


def test_paired_ttest_degenerate():
    assert stats.paired_ttest([1, 2, 3], [1, 2, 3]).pvalue == 1.0
    r = stats.paired_ttest([1, 2, 3], [2, 3, 4])  # constant shift of +1
    assert r.pvalue == 0.0 and r.mean_diff == 1.0 and math.isinf(r.statistic)


def test_float_noise_is_not_significant():
    # Issue 14 reproducer: 0.1 + 0.2 != 0.3 in binary floating point. scipy sees a real (tiny) difference
    # with t = -1, p = 0.42; the old shortcut saw "all differences equal" and returned t = -inf, p = 0.
    a, b = [0.1 + 0.2, 0.7, 0.5], [0.3, 0.7, 0.5]
    ref = sps.ttest_rel(b, a)
    assert ref.statistic == pytest.approx(-1.0) and ref.pvalue == pytest.approx(0.4226, abs=1e-4)
    r = stats.paired_ttest(a, b)
    assert math.isfinite(r.statistic) and r.pvalue >= ref.pvalue  # never more significant than scipy
    assert r.mean_diff == 0.0 and r.pvalue == 1.0                # rounding error is a tie
    assert stats.cohens_dz(a, b) == 0.0 and stats.wilcoxon_signed_rank(a, b).pvalue == 1.0


def test_one_ulp_differences_of_one_sign_are_ties():
    # b is a one ulp above a everywhere: every difference is positive and they vary with the magnitude, so
    # scipy's t-test on the raw differences is overwhelmingly "significant". It is rounding, not an effect.
    a = np.random.default_rng(0).uniform(0.2, 0.9, 50)
    b = np.nextafter(a, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns that the data are nearly identical
        assert sps.ttest_rel(b, a).pvalue < 1e-10 and sps.wilcoxon(b - a).pvalue < 1e-6
    assert stats.paired_ttest(a, b).pvalue == 1.0
    assert stats.wilcoxon_signed_rank(a, b).pvalue == 1.0
    assert stats.paired_comparison(a, b)["diff"] == 0.0
    # The floor is rounding-sized: a real difference of 1e-9 on a 0-1 metric is still seen.
    c = a + 1e-9 + np.random.default_rng(1).normal(0, 1e-10, a.size)
    assert stats.noise_floor(a, c) < 1e-13
    assert stats.paired_ttest(a, c).pvalue == pytest.approx(sps.ttest_rel(c, a).pvalue) and \
        stats.paired_ttest(a, c).pvalue < 1e-10


def test_wilcoxon_hand_example():
    # d = [1, 2, 3, -4, 5]: W+ = 11, W- = 4; exact two-sided p = 2 * 7/32 (subsets of 1..5 summing <= 4)
    r = stats.wilcoxon_signed_rank([0, 0, 0, 4, 0], [1, 2, 3, 0, 5])
    assert r.statistic == 4.0
    assert r.pvalue == pytest.approx(2 * 7 / 32)
    assert r.n_nonzero == 5


def test_wilcoxon_matches_scipy_and_drops_zeros(pair):
    a, b = pair
    b = b.copy()
    b[:5] = a[:5]  # five zero differences
    r = stats.wilcoxon_signed_rank(a, b)
    ref = sps.wilcoxon(b - a, zero_method="wilcox", correction=True)
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.pvalue == pytest.approx(ref.pvalue)
    assert r.pvalue > sps.wilcoxon(b - a, zero_method="wilcox").pvalue  # the correction is applied
    assert r.n_nonzero == 55
    assert stats.wilcoxon_signed_rank([1, 2], [1, 2]).pvalue == 1.0


def test_wilcoxon_normal_approximation_has_continuity_correction():
    # Ties force the normal approximation. R's wilcox.test(correct=TRUE) and pingouin:
    # z = (|W+ - n(n+1)/4| - 1/2) / sqrt(n(n+1)(2n+1)/24 - sum(t^3 - t)/48), p = 2 Phi(-z).
    d = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 3.0, -1.0, 4.0, 4.0, -2.0, 5.0, 6.0])
    r = stats.wilcoxon_signed_rank(np.zeros(d.size), d)
    ranks = sps.rankdata(np.abs(d))
    w_plus, n = ranks[d > 0].sum(), d.size
    _, t = np.unique(np.abs(d), return_counts=True)
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - np.sum(t ** 3 - t) / 48)
    z = (abs(w_plus - n * (n + 1) / 4) - 0.5) / sd
    assert r.pvalue == pytest.approx(2 * sps.norm.sf(z), rel=1e-10)


def test_mcnemar_exact_hand():
    # b01 = 10 (a wrong, b right), b10 = 2: p = 2 * P(Bin(12, .5) <= 2) = 2 * 79 / 4096
    a = [0] * 10 + [1] * 2 + [1] * 5 + [0] * 3
    b = [1] * 10 + [0] * 2 + [1] * 5 + [0] * 3
    r = stats.mcnemar(a, b)
    assert (r.b01, r.b10, r.exact) == (10, 2, True)
    assert r.pvalue == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_mcnemar_chi2_hand():
    a = [0] * 10 + [1] * 2
    b = [1] * 10 + [0] * 2
    r = stats.mcnemar(a, b, exact=False)
    assert r.statistic == pytest.approx(49 / 12)  # (|10-2| - 1)^2 / 12
    assert r.pvalue == pytest.approx(sps.chi2.sf(49 / 12, 1))
    assert r.pvalue == pytest.approx(0.04331, abs=1e-4)


def test_mcnemar_no_discordant_and_bad_input():
    assert stats.mcnemar([1, 0, 1], [1, 0, 1]).pvalue == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar([0.5, 1], [1, 0])


def _binary_pairs(b01, b10, concordant):
    """0/1 vectors (a, b) with b01 pairs (0, 1), b10 pairs (1, 0) and `concordant` pairs split 1-1 / 0-0."""
    ones = concordant // 2
    a = np.r_[np.zeros(b01), np.ones(b10), np.ones(ones), np.zeros(concordant - ones)]
    b = np.r_[np.ones(b01), np.zeros(b10), np.ones(ones), np.zeros(concordant - ones)]
    return a, b


def test_tango_restricted_mle_maximises_the_likelihood():
    from scipy import optimize

    for b01, b10, n, delta in [(7, 2, 39, 0.1), (7, 2, 39, -0.2), (0, 5, 20, 0.1), (3, 3, 10, 0.5), (30, 10, 400, 0.0)]:
        m = n - b01 - b10

        def nll(p):
            return -(b01 * np.log(p + delta) + (b10 * np.log(p) if b10 else 0.0) + m * np.log(1 - 2 * p - delta))

        lo, hi = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
        ref = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
        assert stats._tango_p10(b01, b10, n, delta) == pytest.approx(ref, abs=1e-7)
    # At delta = 0 the score statistic is McNemar's z without continuity correction.
    assert stats.tango_score(30, 10, 400, 0.0) == pytest.approx(20 / math.sqrt(40))


def test_risk_difference_ci_is_the_inverted_score_test():
    a, b = _binary_pairs(7, 2, 30)
    ci = stats.paired_risk_difference_ci(a, b)
    z = sps.norm.ppf(0.975)
    grid = np.linspace(-1 + 1e-9, 1 - 1e-9, 200_001)
    inside = [d for d in grid if abs(stats.tango_score(7, 2, 39, d)) <= z]
    step = grid[1] - grid[0]
    assert ci.estimate == pytest.approx(5 / 39)
    assert ci.low == pytest.approx(min(inside), abs=step) and ci.high == pytest.approx(max(inside), abs=step)
    # No discordant pairs: a real interval around 0, not [0, 0]; all pairs one way: stays inside [-1, 1].
    none = stats.paired_risk_difference_ci(*_binary_pairs(0, 0, 50))
    assert none.low < 0 < none.high and none.estimate == 0.0
    allb = stats.paired_risk_difference_ci(*_binary_pairs(10, 0, 0))
    assert allb.high == 1.0 and 0 < allb.low < 1


def test_risk_difference_ci_agrees_with_mcnemar():
    # Whenever McNemar (exact below 25 discordant pairs, continuity-corrected above) rejects at 5%,
    # the 95% interval of the difference excludes 0: the verdict and its CI cannot contradict.
    checked = 0
    for concordant in (0, 40):
        for b01 in range(0, 36):
            for b10 in range(0, 36):
                if b01 + b10 + concordant == 0:
                    continue
                a, b = _binary_pairs(b01, b10, concordant)
                if stats.mcnemar(a, b).pvalue <= 0.05:
                    ci = stats.paired_risk_difference_ci(a, b)
                    assert not ci.low <= 0 <= ci.high, (b01, b10, concordant, ci)
                    checked += 1
    assert checked > 500


def test_risk_difference_ci_coverage():
    rng = np.random.default_rng(5)
    n, p01, p10 = 60, 0.12, 0.05  # few discordant pairs per sample
    hits = 0
    for _ in range(400):
        u = rng.random(n)
        a = np.where(u < p10, 1.0, np.where(u < p10 + p01, 0.0, (u > 0.6).astype(float)))
        b = np.where(u < p10, 0.0, np.where(u < p10 + p01, 1.0, a))
        ci = stats.paired_risk_difference_ci(a, b)
        hits += ci.low <= p01 - p10 <= ci.high
    assert 0.92 <= hits / 400 <= 0.98


def test_discordant_effect_sizes():
    a, b = _binary_pairs(30, 10, 200)
    eff = stats.discordant_effect(a, b)
    cp = sps.binomtest(30, 40).proportion_ci(method="exact")
    assert eff.g == pytest.approx(30 / 40 - 0.5) and eff.odds_ratio == pytest.approx(3.0)
    assert (eff.g_low, eff.g_high) == pytest.approx((cp.low - 0.5, cp.high - 0.5))
    assert (eff.or_low, eff.or_high) == pytest.approx((cp.low / (1 - cp.low), cp.high / (1 - cp.high)))
    # McNemar's effect ignores concordant pairs (d_z shrinks as they grow; g and the odds ratio do not).
    assert stats.discordant_effect(*_binary_pairs(30, 10, 5000)) == eff
    assert stats.cohens_dz(*_binary_pairs(30, 10, 5000)) < 0.25 * stats.cohens_dz(a, b)
    # Every discordant pair one way: the odds ratio is unbounded -> None, never inf.
    one_way = stats.discordant_effect(*_binary_pairs(12, 0, 10))
    assert one_way.g == 0.5 and one_way.odds_ratio is None and one_way.or_high is None and one_way.or_low > 1
    assert all(x is None or math.isfinite(x) for x in one_way.as_dict().values())
    assert stats.discordant_effect(*_binary_pairs(0, 0, 10)).g is None


# ---------------------------------------------------------------------------- effect sizes


def test_cohens_d_hand():
    a, b = [1, 2, 3, 4], [2, 4, 5, 5]
    assert stats.cohens_dz(a, b) == pytest.approx(1.5 / math.sqrt(1 / 3))
    # pooled: var_a = 5/3, var_b = 2 -> s_p = sqrt((5/3 + 2) / 2)
    assert stats.cohens_d_pooled(a, b) == pytest.approx(1.5 / math.sqrt((5 / 3 + 2) / 2))
    assert stats.cohens_dz(a, a) == 0.0
    assert stats.cohens_dz([1, 2], [2, 3]) == math.inf  # the function is honest; reports print n/a


def test_dz_relates_to_t(pair):
    a, b = pair
    assert stats.paired_ttest(a, b).statistic == pytest.approx(stats.cohens_dz(a, b) * math.sqrt(a.size))


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_matches_explicit_loop():
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3, 0.8])
    ci = stats.bootstrap_ci(x, n_resamples=2000, seed=3, method="percentile")
    rng = np.random.default_rng(3)
    idx = rng.integers(0, x.size, size=(2000, x.size))
    means = np.array([x[row].mean() for row in idx])
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    assert ci.estimate == pytest.approx(x.mean())


def test_bootstrap_chunking_is_invisible():
    # 20_000 values forces several chunks; result must equal one big draw.
    x = np.random.default_rng(0).random(20_000)
    ci = stats.bootstrap_ci(x, n_resamples=300, seed=5, method="percentile")
    rng = np.random.default_rng(5)
    means = x[rng.integers(0, x.size, size=(300, x.size))].mean(axis=1)
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_equals_scipy_percentile_with_same_generator(pair, seed):
    # scipy.stats.bootstrap draws its resample indices from the same PCG64 stream, so with the
    # same seed the percentile intervals agree to rounding.
    a, _ = pair
    ours = stats.bootstrap_ci(a, n_resamples=10_000, seed=seed, method="percentile")
    ref = sps.bootstrap((a,), np.mean, n_resamples=10_000, method="percentile",
                        random_state=np.random.default_rng(seed)).confidence_interval
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_bca_levels_equal_scipy_without_the_expansion(seed):
    x = np.random.default_rng(seed).exponential(1.0, 25)  # skewed, so z0 and the acceleration matter
    means = stats._bootstrap_means(x, 5000, np.random.default_rng(seed))
    ours = np.quantile(means, stats._bca_levels(x, means, 0.95, expand=False))
    ref = sps.bootstrap((x,), np.mean, n_resamples=5000, method="BCa",
                        random_state=np.random.default_rng(seed)).confidence_interval
    assert tuple(ours) == pytest.approx((ref.low, ref.high), rel=1e-10)
    # The expansion widens the interval, by a factor that vanishes as n grows.
    wide = stats.bootstrap_ci(x, n_resamples=5000, seed=seed)
    assert wide.method == "bca" and wide.low < ours[0] and wide.high > ours[1]


def test_bca_covers_where_percentile_falls_short():
    # Issue 14: percentile intervals covered ~0.92 at n = 10 and ~0.90 on skewed n = 30.
    rng = np.random.default_rng(21)
    settings = [(lambda: rng.normal(0.0, 1.0, 10), 0.0), (lambda: rng.exponential(1.0, 30), 1.0)]
    for draw, mu in settings:
        hits = {"bca": 0, "percentile": 0}
        for s in range(500):
            x = draw()
            for method in hits:
                ci = stats.bootstrap_ci(x, n_resamples=1000, seed=s, method=method)
                hits[method] += ci.low <= mu <= ci.high
        assert hits["bca"] / 500 >= 0.92 and hits["bca"] >= hits["percentile"] + 7, hits


def test_bootstrap_deterministic_and_edge_cases():
    x = np.random.default_rng(0).random(30)
    assert stats.bootstrap_ci(x, seed=1) == stats.bootstrap_ci(x, seed=1)
    assert stats.bootstrap_ci(x, seed=1) != stats.bootstrap_ci(x, seed=2)
    one = stats.bootstrap_ci([0.7])
    assert one.low == one.high == 0.7
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError):
        stats.bootstrap_ci([0.1, float("nan")])


def test_paired_bootstrap_is_bootstrap_of_differences(pair):
    a, b = pair
    assert stats.paired_bootstrap_ci(a, b, seed=4) == stats.bootstrap_ci(b - a, seed=4)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([1, 2], [1, 2, 3])


def test_bootstrap_coverage_roughly_nominal():
    rng = np.random.default_rng(11)
    hits = 0
    for s in range(200):
        x = rng.normal(1.0, 1.0, 40)
        ci = stats.bootstrap_ci(x, n_resamples=1000, seed=s)
        hits += ci.low <= 1.0 <= ci.high
    assert 0.9 <= hits / 200 <= 0.99


def test_paired_bootstrap_pvalue_matches_loop():
    a = np.array([0.2, 0.4, 0.1, 0.5, 0.3, 0.6, 0.2, 0.4])
    b = a + np.array([0.1, -0.05, 0.2, 0.0, 0.15, 0.05, -0.1, 0.1])
    p = stats.paired_bootstrap_pvalue(a, b, n_resamples=3000, seed=9)
    d = b - a
    rng = np.random.default_rng(9)
    idx = rng.integers(0, d.size, size=(3000, d.size))
    null = np.array([(d - d.mean())[row].mean() for row in idx])
    ref = (np.sum(np.abs(null) >= abs(d.mean()) - 1e-12) + 1) / 3001
    assert p == pytest.approx(ref)


def test_paired_bootstrap_pvalue():
    big = stats.paired_bootstrap_pvalue(np.zeros(50), np.r_[np.ones(45), np.zeros(5)], n_resamples=2000)
    assert big < 0.01
    null = stats.paired_bootstrap_pvalue([0, 1, 0, 1, 1, 0], [1, 0, 0, 1, 0, 1], n_resamples=2000)
    assert null > 0.5


# ---------------------------------------------------------------------------- multiplicity, seeds, power


def test_holm_hand():
    adj, rej = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rej.tolist() == [True, False, False, True]
    adj, _ = stats.holm([0.5, 0.9])
    assert adj == pytest.approx([1.0, 1.0])
    assert stats.holm([])[0].size == 0


def test_holm_matches_bruteforce_definition():
    rng = np.random.default_rng(2)
    p = rng.random(9) ** 3
    adj, _ = stats.holm(p)
    order = np.argsort(p)
    m = p.size
    ref = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        ref[i] = running
    assert adj == pytest.approx(ref)


def test_aggregate_seeds_hand():
    r = stats.aggregate_seeds([0.5, 0.6, 0.7])
    half = sps.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # 4.3027 * 0.0577 = 0.2484
    assert r.mean == pytest.approx(0.6) and r.std == pytest.approx(0.1)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.6 - half, 0.6 + half))
    assert half == pytest.approx(0.24841, abs=1e-4)
    assert math.isinf(stats.aggregate_seeds([0.3]).ci_high)


@pytest.mark.parametrize("d,n", [(0.5, 34), (0.2, 199), (0.8, 15), (0.3, 90)])
def test_required_sample_size_gpower_values(d, n):
    # G*Power, "means: difference between two dependent means", two-tailed, alpha .05, power .8
    assert stats.required_sample_size(d) == n
    assert stats.power_paired_t(d, n) >= 0.8 > stats.power_paired_t(d, n - 1)


def test_power_against_monte_carlo():
    rng = np.random.default_rng(0)
    n, d, sims = 30, 0.4, 4000
    x = rng.normal(d, 1.0, (sims, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    empirical = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    assert stats.power_paired_t(d, n) == pytest.approx(empirical, abs=0.025)


def test_power_at_two_pairs_against_monte_carlo():
    # Issue 14: scipy's nct returns NaN at df = 1 here, and the old normal fallback gave 0.082.
    rng = np.random.default_rng(3)
    n, sims = 2, 400_000
    tc = sps.t.ppf(0.975, n - 1)
    for d in (8.0, 11.55, 3.0):
        x = rng.normal(d, 1.0, (sims, n))
        t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
        assert stats.power_paired_t(d, n) == pytest.approx(np.mean(np.abs(t) > tc), abs=0.004), d
    assert 0.62 < stats.power_paired_t(8, 2) < 0.63
    mde = stats.minimum_detectable_effect(2)
    assert stats.power_paired_t(mde, 2) == pytest.approx(0.8, abs=1e-6) and 11.5 < mde < 11.6


def test_power_integration_agrees_with_nct_where_nct_works():
    for n in (3, 5, 20, 200, 3000):
        for d in (0.05, 0.3, 1.0, 2.5):
            df, nc = n - 1, d * math.sqrt(n)
            tc = sps.t.ppf(0.975, df)
            ref = sps.nct.sf(tc, df, nc) + sps.nct.cdf(-tc, df, nc)
            if math.isfinite(ref):
                assert stats._power_by_integration(nc, df, tc) == pytest.approx(ref, abs=1e-8), (n, d)


def test_power_refuses_nan():
    with pytest.raises(ValueError, match="finite"):
        stats.power_paired_t(float("nan"), 10)  # min(1.0, nan) used to make this 1.0
    with pytest.raises(ValueError):
        stats.required_sample_size(float("nan"))


def test_power_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.power")
    for d, n in [(0.5, 34), (2.0, 3), (0.2, 199), (1.0, 2)]:
        assert stats.power_paired_t(d, n) == pytest.approx(sm.TTestPower().power(d, n, 0.05), abs=1e-6)
    # statsmodels' power() also calls scipy's nct (NaN at d = 8, n = 2); its solve_power brackets around it.
    for n in (2, 10, 200):
        ref = sm.TTestPower().solve_power(None, n, 0.05, 0.8)
        assert stats.minimum_detectable_effect(n) == pytest.approx(ref, rel=1e-5)


def test_minimum_detectable_effect():
    mde = stats.minimum_detectable_effect(500)
    assert mde == pytest.approx(0.1255, abs=1e-3)
    assert stats.power_paired_t(mde, 500) == pytest.approx(0.8, abs=1e-6)
    assert stats.minimum_detectable_effect(200) == pytest.approx(0.199, abs=2e-3)
    assert math.isinf(stats.minimum_detectable_effect(1))


def test_sample_size_note():
    assert stats.sample_size_note(500) is None
    assert stats.sample_size_note(200, "human") is None
    note = stats.sample_size_note(120)
    assert "500+" in note and "120" in note
    with pytest.raises(ValueError):
        stats.sample_size_note(10, "vibes")


def test_paired_comparison_picks_test_and_its_interval():
    a, b = [0.1, 0.2, 0.3, 0.5], [0.2, 0.25, 0.5, 0.55]
    cont = stats.paired_comparison(a, b)
    tt = stats.paired_ttest(a, b)
    assert cont["test"] == "paired t" and cont["pvalue"] == cont["t_pvalue"] == tt.pvalue
    assert (cont["ci_low"], cont["ci_high"], cont["ci_method"]) == (tt.ci_low, tt.ci_high, "t")
    assert cont["d_z"] == pytest.approx(stats.cohens_dz(a, b)) and "g" not in cont
    binr = stats.paired_comparison([0, 0, 1, 1, 0], [1, 1, 1, 0, 1])
    assert binr["binary"] and binr["test"] == "mcnemar" and binr["pvalue"] == binr["mcnemar_pvalue"]
    assert binr["diff"] == pytest.approx(0.4) and binr["ci_method"] == "Tango score"
    rd = stats.paired_risk_difference_ci([0, 0, 1, 1, 0], [1, 1, 1, 0, 1])
    assert (binr["ci_low"], binr["ci_high"]) == (rd.low, rd.high)
    assert "d_z" not in binr and binr["g"] == pytest.approx(3 / 4 - 0.5)  # d_z is for continuous metrics
    # A constant shift has no spread (0.2 - 0.1 and 0.3 - 0.2 differ only by rounding): the effect size is
    # undefined (None), never inf or 1e15.
    shift = stats.paired_comparison([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])
    assert shift["d_z"] is None and shift["pvalue"] == 0.0 and shift["diff"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------- groups of seeds


def _two_way(k, n, rng, su, sv, sw, se, delta=0.0):
    """(a, b) of shape (k, n): seed effect su, shared example effect sv, group-specific example effect sw,
    per-seed example noise se."""
    v = rng.normal(0, sv, n)
    return tuple(mu + su * rng.normal(0, 1, (k, 1)) + v + sw * rng.normal(0, 1, n) + se * rng.normal(0, 1, (k, n))
                 for mu in (0.0, delta))


def test_group_ttest_reduces_to_welch_when_examples_add_nothing():
    # Additive seed offsets on one shared example profile: D_i is constant and there is no residual, so
    # only the seed term is left and the test is Welch's over seed means (scipy).
    rng = np.random.default_rng(4)
    prof = rng.random(30)
    a = prof + rng.normal(0, 0.05, (3, 1))
    b = prof + 0.1 + rng.normal(0, 0.05, (4, 1))
    g = stats.group_ttest(a, b)
    w = sps.ttest_ind(b.mean(1), a.mean(1), equal_var=False)
    assert g.se_examples == pytest.approx(0, abs=1e-12)
    assert (g.statistic, g.pvalue, g.df) == pytest.approx((w.statistic, w.pvalue, w.df), rel=1e-9)
    assert (g.ci_low, g.ci_high) == pytest.approx(tuple(w.confidence_interval()), rel=1e-9)


def test_group_ttest_reduces_to_paired_t_when_seeds_agree():
    # Every seed of a group scores the same: no seed variance, no residual; what is left is the paired
    # t-test of the two example profiles (scipy ttest_rel, df = n - 1).
    rng = np.random.default_rng(5)
    pa, pb = rng.random(25), rng.random(25)
    g = stats.group_ttest(np.tile(pa, (3, 1)), np.tile(pb, (5, 1)))
    r = sps.ttest_rel(pb, pa)
    assert g.se_seeds == 0.0
    assert (g.statistic, g.pvalue, g.df) == pytest.approx((r.statistic, r.pvalue, 24), rel=1e-9)


def test_group_ttest_variance_is_unbiased():
    # The mean of se^2 over many simulated experiments matches the actual variance of the estimate, in a
    # seed-dominated and an example-dominated setting. Dropping the examples' term would give a ratio near
    # 0.5 in the second; counting the per-seed noise twice, near 1.5.
    for scales in [(0.04, 0.15, 0.03, 0.15), (0.003, 0.15, 0.15, 0.3)]:
        rng = np.random.default_rng(8)
        est, se2 = [], []
        for _ in range(500):
            a, b = _two_way(3, 100, rng, *scales)
            g = stats.group_ttest(a, b)
            est.append(g.mean_diff)
            se2.append(g.se ** 2)
        assert np.mean(se2) / np.var(est, ddof=1) == pytest.approx(1.0, abs=0.15), scales


def test_group_ttest_coverage_light():
    # A light version of bench/group_ci_coverage.py (its 2000-rep figures are in docs/evaluation.md).
    for k, scales in [(3, (0.04, 0.15, 0.03, 0.15)), (3, (0.003, 0.15, 0.15, 0.3)), (10, (0.003, 0.15, 0.15, 0.3))]:
        rng = np.random.default_rng(k)
        hits, agree = 0, True
        for _ in range(400):
            a, b = _two_way(k, 100, rng, *scales, delta=0.05)
            g = stats.group_ttest(a, b)
            hits += g.ci_low <= 0.05 <= g.ci_high
            agree &= (g.pvalue <= 0.05) == (not g.ci_low <= 0 <= g.ci_high)  # one method: verdict = CI
        assert 0.92 <= hits / 400 <= 0.98, (k, scales, hits / 400)
        assert agree


def test_group_ttest_float_noise_and_degenerate():
    rng = np.random.default_rng(6)
    a = rng.random((3, 20))
    same = a[::-1].copy()  # the same seeds, reordered: means equal up to rounding
    g = stats.group_ttest(a, same)
    assert g.mean_diff == 0.0 and g.pvalue == pytest.approx(1.0)
    flat = np.full((2, 5), 0.5)
    assert stats.group_ttest(flat, flat).pvalue == 1.0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.group_ttest(a[:1], a)
