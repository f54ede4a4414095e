"""Statistics against scipy and hand-worked values."""
import math

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
    ref = sps.wilcoxon(b - a, zero_method="wilcox")
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.pvalue == pytest.approx(ref.pvalue)
    assert r.n_nonzero == 55
    assert stats.wilcoxon_signed_rank([1, 2], [1, 2]).pvalue == 1.0


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


# ---------------------------------------------------------------------------- effect sizes


def test_cohens_d_hand():
    a, b = [1, 2, 3, 4], [2, 4, 5, 5]
    assert stats.cohens_dz(a, b) == pytest.approx(1.5 / math.sqrt(1 / 3))
    # pooled: var_a = 5/3, var_b = 2 -> s_p = sqrt((5/3 + 2) / 2)
    assert stats.cohens_d_pooled(a, b) == pytest.approx(1.5 / math.sqrt((5 / 3 + 2) / 2))
    assert stats.cohens_dz(a, a) == 0.0
    assert stats.cohens_dz([1, 2], [2, 3]) == math.inf


def test_dz_relates_to_t(pair):
    a, b = pair
    assert stats.paired_ttest(a, b).statistic == pytest.approx(stats.cohens_dz(a, b) * math.sqrt(a.size))


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_matches_explicit_loop():
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3, 0.8])
    ci = stats.bootstrap_ci(x, n_resamples=2000, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, x.size, size=(2000, x.size))
    means = np.array([x[row].mean() for row in idx])
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    assert ci.estimate == pytest.approx(x.mean())


def test_bootstrap_chunking_is_invisible():
    # 20_000 values forces several chunks; result must equal one big draw.
    x = np.random.default_rng(0).random(20_000)
    ci = stats.bootstrap_ci(x, n_resamples=300, seed=5)
    rng = np.random.default_rng(5)
    means = x[rng.integers(0, x.size, size=(300, x.size))].mean(axis=1)
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_equals_scipy_percentile_with_same_generator(pair, seed):
    # scipy.stats.bootstrap draws its resample indices from the same PCG64 stream, so with the
    # same seed the percentile intervals agree to rounding.
    a, _ = pair
    ours = stats.bootstrap_ci(a, n_resamples=10_000, seed=seed)
    ref = sps.bootstrap((a,), np.mean, n_resamples=10_000, method="percentile",
                        random_state=np.random.default_rng(seed)).confidence_interval
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), rel=1e-12)


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
    assert 0.88 <= hits / 200 <= 0.99


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


def test_paired_comparison_picks_test():
    cont = stats.paired_comparison([0.1, 0.2, 0.3, 0.5], [0.2, 0.25, 0.5, 0.55], n_resamples=500)
    assert cont["test"] == "paired t" and cont["pvalue"] == cont["t_pvalue"]
    binr = stats.paired_comparison([0, 0, 1, 1, 0], [1, 1, 1, 0, 1], n_resamples=500)
    assert binr["binary"] and binr["test"] == "mcnemar" and binr["pvalue"] == binr["mcnemar_pvalue"]
    assert binr["diff"] == pytest.approx(0.4)
