"""`alignlab compare RUN_A RUN_B [RUN_C ...] --task T`: paired comparison of evaluated runs.

Reads ``<run>/eval/<task>.jsonl`` from each run directory (or eval files given directly), pairs
the rows by ``id``, and for every pair of runs and every metric they share computes the mean
difference and one method that both decides and sizes it (``stats.paired_comparison``): for 0/1
metrics McNemar's test with the Tango score CI of the risk difference and McNemar's effect sizes
(Cohen's g, the conditional odds ratio b01/b10); otherwise the paired t-test with its t-interval
and Cohen's d_z. The Wilcoxon signed-rank p is shown as a check. The primary test is
Holm-corrected across *all* comparisons in the report (every pair x every metric), and only
Holm-significant differences (adjusted p <= alpha) get a "beats" verdict ("is higher than" for
metrics without a better direction, such as the refusal rate).

Runs evaluated on different example sets are refused unless ``--intersection`` is given (then
only the shared ids are compared, and the report says how many were dropped). Rows that share an
id but not the prompt or reference are refused too: that is a different example set in disguise.

Seeds: ``--group NAME=RUN1,RUN2,...`` (repeatable, at least two groups of at least two runs each)
compares *groups* of runs, one run per training seed, instead of single runs. Per group and metric:
the per-seed means, their mean, SD and t-interval (``stats.aggregate_seeds``). Per pair of groups,
one method decides and sizes the difference: ``stats.group_ttest``, a t-test whose standard error
carries the seed variance and the test set's variance without counting example noise twice
(Satterthwaite df); its p is Holm-corrected across every group pair x metric, and its t-interval is
the CI shown. With fewer than 5 seeds in a group the report says how little that test can conclude.
Every run of every group must be evaluated on the same examples (same rule and ``--intersection``
as above).

Outputs in ``--out``: report.md, report.html (self-contained, plots embedded), comparison.json
(every number), distributions.png and diff_<A>_vs_<B>.png (groups.png with ``--group``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignlab.eval import stats
from alignlab.eval.io import EvalFileError, display_name, read_eval_file, write_json


class CompareError(ValueError):
    pass


@dataclass
class Run:
    label: str
    path: Path
    rows: dict = field(default_factory=dict)  # id -> row


def resolve_eval_file(spec: str | Path, task: str) -> tuple[str, Path]:
    """(label, eval file) for a run directory or an eval file path."""
    from alignlab.tasks import ALIASES

    p = Path(spec)
    names = [task] + ([ALIASES[task]] if task in ALIASES else [])
    if p.is_dir():
        for name in names:
            for cand in (p / "eval" / f"{name}.jsonl", p / f"{name}.jsonl"):
                if cand.is_file():
                    label = p.name if cand.parent == p / "eval" else (p.parent.name if p.name == "eval" else p.name)
                    return label, cand
        raise CompareError(f"{p}: no eval file {p / 'eval' / (task + '.jsonl')}; evaluate the run first "
                           f"(alignlab eval --run {p} --task {task} ...)")
    if p.is_file():
        label = p.parent.parent.name if p.parent.name == "eval" else p.stem
        return label, p
    raise CompareError(f"{p}: neither a run directory nor an eval file")


def load_runs(specs: list[str], task: str, labels: list[str] | None = None) -> list[Run]:
    if len(specs) < 2:
        raise CompareError("compare needs at least two runs (or two --group NAME=RUN1,RUN2,... of seed runs)")
    if labels is not None and len(labels) != len(specs):
        raise CompareError(f"--labels gives {len(labels)} names for {len(specs)} runs")
    runs: list[Run] = []
    for i, spec in enumerate(specs):
        label, path = resolve_eval_file(spec, task)
        if labels is not None:
            label = labels[i]
        rows = read_eval_file(path)
        runs.append(Run(label, path, {r["id"]: r for r in rows}))
    seen: dict[str, int] = {}
    for r in runs:  # make labels unique: base, base (2), ...
        if r.label in seen:
            seen[r.label] += 1
            r.label = f"{r.label} ({seen[r.label]})"
        else:
            seen[r.label] = 1
    return runs


def parse_group_args(values: list[str]) -> dict[str, list[str]]:
    """``["sft=runs/a,runs/b", ...]`` -> ``{"sft": ["runs/a", "runs/b"], ...}``, refusing malformed values."""
    groups: dict[str, list[str]] = {}
    for value in values:
        name, eq, members = value.partition("=")
        name = name.strip()
        if not eq or not name:
            raise CompareError(f"--group {value!r}: expected NAME=RUN1,RUN2,... "
                               "(e.g. --group sft=runs/sft-seed0,runs/sft-seed1)")
        if name in groups:
            raise CompareError(f"--group {name} is given twice; list all of its runs in one "
                               f"--group {name}=RUN1,RUN2,...")
        specs = [m.strip() for m in members.split(",")]
        if not members.strip() or any(not m for m in specs):
            raise CompareError(f"--group {value!r}: empty run name in the list; expected NAME=RUN1,RUN2,... "
                               "with no empty entries")
        groups[name] = specs
    return groups


def check_groups(groups: dict[str, list[str]]) -> None:
    """At least two groups, each with at least two seed runs (the test runs over seeds)."""
    if len(groups) < 2:
        raise CompareError(f"--group: comparing groups needs at least two groups, got {len(groups)}"
                           + (f" ({next(iter(groups))})" if groups else ""))
    for name, specs in groups.items():
        if len(specs) < 2:
            raise CompareError(
                f"--group {name} has {len(specs)} run ({', '.join(specs) or 'none'}); a group needs at least 2 "
                f"seed runs, because groups are compared with a test across seeds. Evaluate more seeds and list "
                f"them (--group {name}=RUN_SEED0,RUN_SEED1,...), or compare single runs without --group.")


def load_groups(groups: dict[str, list[str]], task: str) -> tuple[list[Run], dict[str, list[str]]]:
    """Load every run of every group; returns the runs and group name -> run labels.

    A run may belong to one group only (a seed counted twice would shrink the seed variance).
    Run labels are the run names, prefixed with ``GROUP/`` when two runs share a name.
    """
    check_groups(groups)
    owner: dict[Path, tuple[str, str]] = {}
    loaded: list[tuple[str, str, Path]] = []  # (group, base label, eval file)
    for name, specs in groups.items():
        for spec in specs:
            try:
                label, path = resolve_eval_file(spec, task)
            except CompareError as e:
                raise CompareError(f"--group {name}: {e}") from None
            key = path.resolve()
            if key in owner:
                g, other = owner[key]
                where = f"twice in --group {name}" if g == name else f"in both --group {g} and --group {name}"
                same = "" if other == spec else f" (the same eval file as {other})"
                raise CompareError(f"{spec}{same} is {where}; each run belongs to one group")
            owner[key] = (name, spec)
            loaded.append((name, label, path))
    counts: dict[str, int] = {}
    for _, label, _ in loaded:
        counts[label] = counts.get(label, 0) + 1
    runs: list[Run] = []
    members: dict[str, list[str]] = {name: [] for name in groups}
    seen: dict[str, int] = {}
    for name, label, path in loaded:
        if counts[label] > 1:
            label = f"{name}/{label}"
        if label in seen:  # two runs of one group with the same name: base, base (2), ...
            seen[label] += 1
            label = f"{label} ({seen[label]})"
        else:
            seen[label] = 1
        rows = read_eval_file(path)
        runs.append(Run(label, path, {r["id"]: r for r in rows}))
        members[name].append(label)
    return runs, members


def align(runs: list[Run], intersection: bool) -> tuple[list, dict]:
    """Shared ids in the first run's order, and what was dropped per run."""
    id_sets = [set(r.rows) for r in runs]
    common = set.intersection(*id_sets)
    dropped = {r.label: len(s - common) for r, s in zip(runs, id_sets)}
    if any(dropped.values()) and not intersection:
        parts = []
        for r, s in zip(runs, id_sets):
            extra = sorted(map(str, s - common))
            if extra:
                parts.append(f"{r.label} ({r.path}) has {len(extra)} id(s) the others lack, e.g. "
                             + ", ".join(extra[:3]))
        raise CompareError("the runs were evaluated on different example sets: " + "; ".join(parts)
                           + ". Re-evaluate on the same data, or pass --intersection to compare only the "
                           f"{len(common)} shared examples.")
    if not common:
        raise CompareError("the runs share no example ids")
    ids = [i for i in runs[0].rows if i in common]
    mismatched = []
    for i in ids:
        for key in ("prompt", "reference"):
            vals = [r.rows[i].get(key) for r in runs if key in r.rows[i]]
            if len(vals) > 1 and any(json.dumps(v, sort_keys=True) != json.dumps(vals[0], sort_keys=True)
                                     for v in vals[1:]):
                mismatched.append((i, key))
    if mismatched:
        eg = ", ".join(f"{i!r} ({k})" for i, k in mismatched[:3])
        raise CompareError(f"{len(mismatched)} shared id(s) have a different prompt or reference across runs "
                           f"(e.g. {eg}): these are different examples under the same id; re-evaluate on one data file")
    return ids, dropped


def _values(run: Run, ids: list, metric: str) -> np.ndarray:
    out = []
    for i in ids:
        v = run.rows[i]["metrics"].get(metric)
        out.append(np.nan if v is None else float(v))
    return np.array(out, dtype=np.float64)


def compare_runs(runs: list[Run], ids: list, *, metrics: list[str] | None = None, baseline_only: bool = False,
                 seed: int = 0, n_resamples: int = 10_000, alpha: float = 0.05, confidence: float = 0.95,
                 groups: dict[str, list[str]] | None = None) -> dict:
    """Every number in the report, as a JSON-able dict.

    With ``groups`` (group name -> run labels, from ``load_groups``) the runs are seeds of their
    group: pairs of *groups* are compared (``group_comparisons``) and the Holm family is every
    group pair x metric; single runs are not compared with each other.
    """
    shared = None
    for r in runs:
        names = []
        for i in ids:
            for k in r.rows[i]["metrics"]:
                if k not in names:
                    names.append(k)
        shared = names if shared is None else [k for k in shared if k in names]
    shared = shared or []
    if metrics:
        unknown = [m for m in metrics if m not in shared]
        if unknown:
            raise CompareError(f"metric(s) {', '.join(unknown)} not in every run; shared: {', '.join(shared)}")
        shared = list(metrics)
    if not shared:
        raise CompareError("the runs share no metric")

    per_run: dict = {}
    run_values: dict = {}  # label -> metric -> finite per-example values (for the plots)
    scale: dict = {}
    for m in shared:
        all_vals = np.concatenate([_values(r, ids, m) for r in runs])
        fin = all_vals[np.isfinite(all_vals)]
        scale[m] = 100.0 if fin.size and fin.min() >= 0 and fin.max() <= 1 else 1.0
    for r in runs:
        per_run[r.label] = {"path": str(r.path), "n_rows": len(r.rows), "metrics": {}}
        run_values[r.label] = {}
        for m in shared:
            v = _values(r, ids, m)
            v = v[np.isfinite(v)]
            run_values[r.label][m] = v.tolist()
            if v.size == 0:
                continue
            ci = stats.bootstrap_ci(v, confidence=confidence, n_resamples=n_resamples, seed=seed)
            per_run[r.label]["metrics"][m] = {"mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n}

    pairs = [] if groups else _pairs(len(runs), baseline_only)
    comparisons = []
    for i, j in pairs:
        a_run, b_run = runs[i], runs[j]
        for m in shared:
            a, b = _values(a_run, ids, m), _values(b_run, ids, m)
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() == 0:
                continue
            res = stats.paired_comparison(a[ok], b[ok], confidence=confidence)
            res.update(a=a_run.label, b=b_run.label, metric=m, a_values=a[ok].tolist(), b_values=b[ok].tolist())
            comparisons.append(res)
    group_stats, group_comparisons = {}, []
    if groups:
        group_stats, group_comparisons = _compare_groups(
            runs, groups, ids, shared, per_run, baseline_only=baseline_only, confidence=confidence)
    family = group_comparisons if groups else comparisons
    if family:
        adj, rej = stats.holm([c["pvalue"] for c in family], alpha=alpha)
        for c, p_adj, rj in zip(family, adj, rej):
            c["pvalue_holm"] = float(p_adj)
            c["significant"] = bool(rj) and c["diff"] != 0
    n = len(ids)
    result = {
        "task": None, "n_examples": n, "ids_dropped": {}, "seed": seed, "n_resamples": n_resamples,
        "alpha": alpha, "confidence": confidence, "metrics": shared, "scale": scale, "runs": per_run,
        "comparisons": comparisons, "family_size": len(family),
        "sample_size_note": stats.sample_size_note(n, "automatic"),
        "mde_dz": stats.minimum_detectable_effect(n) if n >= 2 else None,
        "run_values": run_values,
    }
    if groups:
        result.update(mode="groups", groups=group_stats, group_comparisons=group_comparisons,
                      group_test="t-test over seeds and examples (stats.group_ttest: seed variance plus the "
                                 "test set's variance, Satterthwaite df)",
                      group_ci="the same test's t-interval",
                      seed_note=seed_note(group_comparisons, confidence))
        result["verdicts"] = verdicts(result, key="group_comparisons")
    else:
        result["mode"] = "runs"
        result["verdicts"] = verdicts(result)
    result["corpus"] = _corpus(runs, ids, seed, n_resamples, confidence)
    return result


def _pairs(k: int, baseline_only: bool) -> list[tuple[int, int]]:
    if baseline_only:
        return [(0, j) for j in range(1, k)]
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _compare_groups(runs: list[Run], groups: dict[str, list[str]], ids: list, shared: list[str], per_run: dict, *,
                    baseline_only: bool, confidence: float) -> tuple[dict, list]:
    """Per-group seed aggregates and the between-group comparisons (Holm is applied by the caller)."""
    by_label = {r.label: r for r in runs}
    group_stats: dict = {}
    for name, labels in groups.items():
        group_stats[name] = {"runs": list(labels), "metrics": {}}
        for m in shared:
            seeds = {lab: per_run[lab]["metrics"][m]["mean"] for lab in labels if m in per_run[lab]["metrics"]}
            if not seeds:
                continue
            agg = stats.aggregate_seeds(list(seeds.values()), confidence=confidence)
            group_stats[name]["metrics"][m] = {"seed_means": seeds, "mean": agg.mean, "std": agg.std,
                                               "ci_low": agg.ci_low, "ci_high": agg.ci_high, "n_seeds": agg.n}
    names = list(groups)
    comparisons = []
    for i, j in _pairs(len(names), baseline_only):
        ga, gb = names[i], names[j]
        for m in shared:
            a = np.stack([_values(by_label[lab], ids, m) for lab in groups[ga]])  # (k_a, n)
            b = np.stack([_values(by_label[lab], ids, m) for lab in groups[gb]])  # (k_b, n)
            ok = np.all(np.isfinite(a), axis=0) & np.all(np.isfinite(b), axis=0)
            if ok.sum() == 0:
                continue
            res = stats.group_comparison(a[:, ok], b[:, ok], confidence=confidence)
            res.update(a=ga, b=gb, metric=m, runs_a=list(groups[ga]), runs_b=list(groups[gb]))
            comparisons.append(res)
    return group_stats, comparisons


def seed_note(comparisons: list[dict], confidence: float) -> str | None:
    """Plain words on how little a test over few seeds can conclude (None with 5+ seeds per group)."""
    if not comparisons:
        return None
    k = min(min(c["seeds_a"], c["seeds_b"]) for c in comparisons)
    if k >= 5:
        return None
    from scipy import stats as sps

    dfs = [c["df"] for c in comparisons if c.get("df") is not None and math.isfinite(c["df"])]
    conf = int(round(confidence * 100))
    crit = ""
    if dfs:
        df = min(dfs)
        crit = (f" The test's {conf}% critical value is t = {sps.t.ppf((1 + confidence) / 2, df):.2f} at the "
                f"smallest df here ({df:.1f}), against {sps.norm.ppf((1 + confidence) / 2):.2f} with many seeds.")
    return (f"a group here has only {k} seeds, so its seed variance rests on {k - 1} degree"
            f"{'s' if k - 1 != 1 else ''} of freedom.{crit} Only a large gap, consistent across seeds, can be "
            "called significant; intervals this wide say little, and 'not significant' is no evidence that the "
            "methods are equal. Train 5 or more seeds per method to resolve differences of a few points")


def _corpus(runs: list[Run], ids: list, seed: int, n_resamples: int, confidence: float) -> dict:
    """Corpus-level metrics (safety precision / recall / F1) per run, when the rows allow them."""
    from alignlab.eval.scoring import corpus_safety_metrics

    out = {}
    for r in runs:
        c = corpus_safety_metrics([r.rows[i] for i in ids], seed, n_resamples, confidence)
        if c:
            out[r.label] = c
    return out


# Metrics where higher is not simply better: a significant difference is reported as "higher
# than", not "beats" (more refusals are good on harmful prompts and bad on benign ones).
NEUTRAL_METRICS = {"refused"}


def _fmt_diff(x: float, scale: float) -> str:
    return f"{x * scale:.1f}" if scale != 1 else f"{x:.3g}"


def _unit(scale: float) -> str:
    return " points" if scale != 1 else ""


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_effect(x) -> str:
    """An effect size for print: 2 decimals; n/a when undefined (never inf)."""
    return "n/a" if x is None or not math.isfinite(x) else f"{abs(x):.2f}"


def verdicts(result: dict, key: str = "comparisons") -> list[str]:
    """One plain-language line per pair of runs, e.g.
    "B beats A on ROUGE-L by 2.1 points, 95% CI [0.8, 3.4], d_z=0.31; not significant on BERTScore".

    The CI is the deciding test's own interval: the paired t-interval with d_z for continuous
    metrics, the Tango score interval with Cohen's g (McNemar's effect size) for 0/1 metrics. For
    groups (``key="group_comparisons"``) it is ``group_ttest``'s interval, the Holm-adjusted p
    follows, and the line ends with the seed counts:
    "grpo beats sft on accuracy by 9.0 points, 95% CI [5.1, 12.8], p=0.004 (Holm) [seeds: grpo 3, sft 3]".
    """
    groups = key == "group_comparisons"
    lines = []
    by_pair: dict = {}
    for c in result[key]:
        by_pair.setdefault((c["a"], c["b"]), []).append(c)
    conf = int(round(result["confidence"] * 100))
    for (a, b), cs in by_pair.items():
        wins, ns = [], []
        for c in cs:
            name, sc = display_name(c["metric"]), result["scale"][c["metric"]]
            if c.get("significant"):
                if c["diff"] > 0:
                    winner, loser, d, lo, hi = b, a, c["diff"], c["ci_low"], c["ci_high"]
                else:
                    winner, loser, d, lo, hi = a, b, -c["diff"], -c["ci_high"], -c["ci_low"]
                verb = "is higher than" if c["metric"] in NEUTRAL_METRICS else "beats"
                who = (winner, verb)
                subject = "" if wins and wins[-1][0] == who else f"{winner} {verb} {loser} "
                if groups:
                    p_s = _fmt_p(c["pvalue_holm"])
                    effect = f"p{'' if p_s.startswith('<') else '='}{p_s} (Holm)"
                elif c.get("binary"):
                    effect = f"g={_fmt_effect(c.get('g'))}"
                else:
                    effect = f"d_z={_fmt_effect(c.get('d_z'))}"
                wins.append((who, f"{subject}on {name} by {_fmt_diff(d, sc)}{_unit(sc)}, "
                                  f"{conf}% CI [{_fmt_diff(lo, sc)}, {_fmt_diff(hi, sc)}], {effect}"))
            else:
                ns.append(name)
        parts = [w for _, w in wins]
        if ns:
            parts.append("not significant on " + ", ".join(ns))
        line = "; ".join(parts)
        if not wins:
            line = f"{b} vs {a}: " + line
        if groups:
            line += f" [seeds: {b} {cs[0]['seeds_b']}, {a} {cs[0]['seeds_a']}]"
        lines.append(line)
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alignlab compare",
        description="Paired statistical comparison of evaluated runs on the same examples "
                    "(Markdown + HTML report with CIs, p-values, effect sizes and plots).")
    p.add_argument("runs", nargs="*", help="run directories (reads <run>/eval/<task>.jsonl) or eval .jsonl files "
                                           "(leave out with --group)")
    p.add_argument("--task", required=True, help="safety, summarization, code or math (the eval file's name)")
    p.add_argument("--out", default=None, help="output folder (default: compare-<task>)")
    p.add_argument("--intersection", action="store_true",
                   help="compare only the example ids all runs share (default: refuse different example sets)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate for Holm (default 0.05)")
    p.add_argument("--labels", default=None, help="comma-separated display names, one per run")
    p.add_argument("--metrics", default=None, help="comma-separated subset of metrics to compare")
    p.add_argument("--baseline", action="store_true", help="compare each run with the first only (default: all pairs)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--group", action="append", default=None, metavar="NAME=RUN1,RUN2,...",
                   help="a group of seed runs of one method (repeat for each method, at least 2 groups of at "
                        "least 2 runs); compares groups across seeds (a t-test carrying seed and test-set "
                        "variance, with its own CI) instead of single runs. --baseline compares every group "
                        "with the first group.")
    return p


def run_compare(runs_specs: list[str], task: str, out: str | Path, *, intersection: bool = False, seed: int = 0,
                n_resamples: int = 10_000, alpha: float = 0.05, labels: list[str] | None = None,
                metrics: list[str] | None = None, baseline_only: bool = False, plots: bool = True,
                groups: dict[str, list[str]] | None = None) -> dict:
    """Load, align, compare and write the report; returns the comparison dict.

    ``groups`` (name -> run directories or eval files, one per seed) replaces ``runs_specs``.
    """
    from alignlab.eval import report

    if n_resamples < 100:
        raise CompareError("--resamples must be at least 100")
    if not 0 < alpha < 1:
        raise CompareError("--alpha must be in (0, 1)")
    members = None
    if groups is not None:
        if runs_specs:
            raise CompareError(f"--group: give the runs inside --group NAME=RUN1,RUN2,... only; {runs_specs[0]} "
                               "is also given on its own (put it in a group or leave it out)")
        if labels is not None:
            raise CompareError("--labels names single runs; with --group the group names are the labels")
        runs, members = load_groups(groups, task)
    else:
        runs = load_runs(runs_specs, task, labels)
    ids, dropped = align(runs, intersection)
    result = compare_runs(runs, ids, metrics=metrics, baseline_only=baseline_only, seed=seed,
                          n_resamples=n_resamples, alpha=alpha, groups=members)
    result["task"] = task
    result["ids_dropped"] = dropped
    result["intersection"] = intersection
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = report.make_plots(result, out_dir) if plots else {}
    report.write_reports(result, out_dir, images)
    slim = dict(result)
    slim["comparisons"] = [{k: v for k, v in c.items() if k not in ("a_values", "b_values")}
                           for c in result["comparisons"]]
    slim.pop("run_values", None)
    write_json(out_dir / "comparison.json", _jsonable(slim))
    return result


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or f"compare-{args.task}"
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    metrics = [s.strip() for s in args.metrics.split(",") if s.strip()] if args.metrics else None
    try:
        groups = parse_group_args(args.group) if args.group is not None else None
        result = run_compare(args.runs, args.task, out, intersection=args.intersection, seed=args.seed,
                             n_resamples=args.resamples, alpha=args.alpha, labels=labels, metrics=metrics,
                             baseline_only=args.baseline, plots=not args.no_plots, groups=groups)
    except (CompareError, EvalFileError) as e:
        print(f"alignlab compare: error: {e}", file=sys.stderr)
        return 2
    for line in result["verdicts"]:
        print(line)
    if result.get("seed_note"):
        print(f"note: {result['seed_note']}.")
    if result.get("sample_size_note"):
        print(f"note: {result['sample_size_note']}")
    print(f"report: {Path(out) / 'report.md'} and {Path(out) / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
