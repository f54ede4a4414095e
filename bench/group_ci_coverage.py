"""Coverage of the group verdict's CI (`stats.group_ttest`) against two named baselines.

`alignlab compare --group` decides and sizes each difference between groups of seed runs with one
method, `group_ttest`. This script simulates groups of seed runs on a shared test set with known
true difference and counts how often each 95% interval covers it:

  group_ttest      t-interval, SE^2 = seed term + examples' shared term (noise not counted twice)
  welch_seeds      Welch's t-interval over per-seed means (the old verdict): misses the test set's
                   shared variance
  naive_sum        seed term + Var(D_i)/n without removing the per-seed noise: counts it twice

Data: y[g, s, i] = mu_g + su*u[g, s] + sv*v[i] + sw*w[g, i] + se*e[g, s, i] (gaussian), or
Bernoulli(logistic(same linear predictor)) (binary, both groups alike so the true difference is 0).
u: seed effect; v: example difficulty shared by the groups; w: group-specific example effect; e:
per-seed example noise (sampling). Regimes: seed-dominant (training variance dominates) and
example-dominant (the test set's variance dominates). n = 200 examples.

    python bench/group_ci_coverage.py [--reps 2000] [--seed 0]

Prints one row per setting; the figures in docs/evaluation.md come from the default run.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats as sps

from alignlab.eval import stats

N_EXAMPLES = 200
REGIMES = {  # (su, sv, sw, se) on the score scale (gaussian) or the logit scale (binary)
    ("gaussian", "seed-dominant"): (0.04, 0.15, 0.03, 0.15),
    ("gaussian", "example-dominant"): (0.003, 0.15, 0.15, 0.3),
    ("binary", "seed-dominant"): (0.35, 1.5, 0.2, 0.0),
    ("binary", "example-dominant"): (0.0, 1.5, 0.8, 0.0),
}


def simulate(kind: str, scales: tuple, k: int, rng: np.random.Generator, delta: float) -> tuple[np.ndarray, np.ndarray]:
    su, sv, sw, se = scales
    v = rng.normal(0, sv, N_EXAMPLES)
    out = []
    for mu in (0.0, delta):
        lin = mu + su * rng.normal(0, 1, (k, 1)) + v + sw * rng.normal(0, 1, N_EXAMPLES)
        if kind == "gaussian":
            out.append(lin + se * rng.normal(0, 1, (k, N_EXAMPLES)))
        else:
            out.append((rng.random((k, N_EXAMPLES)) < 1 / (1 + np.exp(-lin))).astype(float))
    return out[0], out[1]


def baselines(a: np.ndarray, b: np.ndarray, conf: float = 0.95) -> dict[str, tuple[float, float]]:
    k_a, k_b, n = a.shape[0], b.shape[0], a.shape[1]
    ma, mb = a.mean(1), b.mean(1)
    w = sps.ttest_ind(mb, ma, equal_var=False).confidence_interval(conf)
    va, vb = ma.var(ddof=1) / k_a, mb.var(ddof=1) / k_b
    vd = (b.mean(0) - a.mean(0)).var(ddof=1) / n
    se2 = va + vb + vd
    df = se2 ** 2 / (va ** 2 / (k_a - 1) + vb ** 2 / (k_b - 1) + vd ** 2 / (n - 1))
    half = sps.t.ppf((1 + conf) / 2, df) * math.sqrt(se2)
    md = mb.mean() - ma.mean()
    return {"welch_seeds": (w.low, w.high), "naive_sum": (md - half, md + half)}


def run(reps: int, seed: int) -> list[dict]:
    rows = []
    for (kind, regime), scales in REGIMES.items():
        for k in (3, 5, 10):
            rng = np.random.default_rng([seed, k, len(rows)])
            delta = 0.05 if kind == "gaussian" else 0.0
            hits = {"group_ttest": 0, "welch_seeds": 0, "naive_sum": 0}
            share = []
            for _ in range(reps):
                a, b = simulate(kind, scales, k, rng, delta)
                g = stats.group_ttest(a, b)
                hits["group_ttest"] += g.ci_low <= delta <= g.ci_high
                for name, (lo, hi) in baselines(a, b).items():
                    hits[name] += lo <= delta <= hi
                share.append(g.se_seeds ** 2 / g.se ** 2 if g.se > 0 else 0.0)
            rows.append({"data": kind, "regime": regime, "seeds": k, "seed_share": float(np.mean(share)),
                         **{name: h / reps for name, h in hits.items()}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = run(args.reps, args.seed)
    mc_se = math.sqrt(0.95 * 0.05 / args.reps)
    print(f"95% CI coverage, {args.reps} simulated comparisons per row, {N_EXAMPLES} examples "
          f"(Monte Carlo SE {mc_se:.3f}); seed share = seed term / SE^2 in group_ttest")
    print(f"| data | variance | seeds per group | seed share | group_ttest | welch_seeds (old) | naive_sum |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['regime']} | {r['seeds']} | {r['seed_share']:.2f} | {r['group_ttest']:.3f} | "
              f"{r['welch_seeds']:.3f} | {r['naive_sum']:.3f} |")
    worst = max(abs(r["group_ttest"] - 0.95) for r in rows)
    print(f"group_ttest: largest distance from 0.95 = {worst:.3f}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
