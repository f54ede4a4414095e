"""`alignlab compare RUN_A RUN_B [RUN_C ...] --task T`: paired comparison of evaluated runs.

Reads ``<run>/eval/<task>.jsonl`` from each run directory (or eval files given directly), pairs
the rows by ``id``, and for every pair of runs and every metric they share computes: the mean
difference with a paired bootstrap 95% CI, the paired t-test, the Wilcoxon signed-rank test,
Cohen's d_z (paired) and pooled d, and McNemar's test for 0/1 metrics. The primary test (McNemar
for 0/1 metrics, the paired t-test otherwise) is Holm-corrected across *all* comparisons in the
report (every pair x every metric), and only Holm-significant differences get a "beats" verdict
("is higher than" for metrics without a better direction, such as the refusal rate).

Runs evaluated on different example sets are refused unless ``--intersection`` is given (then
only the shared ids are compared, and the report says how many were dropped). Rows that share an
id but not the prompt or reference are refused too: that is a different example set in disguise.

Outputs in ``--out``: report.md, report.html (self-contained, plots embedded), comparison.json
(every number), distributions.png and diff_<A>_vs_<B>.png.
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
from alignlab.eval.io import EvalFileError, read_eval_file, write_json


class CompareError(ValueError):
    pass


@dataclass
class Run:
    label: str
    path: Path
    rows: dict = field(default_factory=dict)  # id -> row


def resolve_eval_file(spec: str | Path, task: str) -> tuple[str, Path]:
    """(label, eval file) for a run directory or an eval file path."""
    from alignlab.eval.data import ALIASES

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
        raise CompareError("compare needs at least two runs")
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
                 seed: int = 0, n_resamples: int = 10_000, alpha: float = 0.05, confidence: float = 0.95) -> dict:
    """Every number in the report, as a JSON-able dict."""
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
    scale: dict = {}
    for m in shared:
        all_vals = np.concatenate([_values(r, ids, m) for r in runs])
        fin = all_vals[np.isfinite(all_vals)]
        scale[m] = 100.0 if fin.size and fin.min() >= 0 and fin.max() <= 1 else 1.0
    for r in runs:
        per_run[r.label] = {"path": str(r.path), "n_rows": len(r.rows), "metrics": {}}
        for m in shared:
            v = _values(r, ids, m)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            ci = stats.bootstrap_ci(v, confidence=confidence, n_resamples=n_resamples, seed=seed)
            per_run[r.label]["metrics"][m] = {"mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n}

    pairs = [(0, j) for j in range(1, len(runs))] if baseline_only else \
        [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    comparisons = []
    for i, j in pairs:
        a_run, b_run = runs[i], runs[j]
        for m in shared:
            a, b = _values(a_run, ids, m), _values(b_run, ids, m)
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() == 0:
                continue
            res = stats.paired_comparison(a[ok], b[ok], n_resamples=n_resamples, seed=seed, confidence=confidence)
            res.update(a=a_run.label, b=b_run.label, metric=m, a_values=a[ok].tolist(), b_values=b[ok].tolist())
            comparisons.append(res)
    if comparisons:
        adj, rej = stats.holm([c["pvalue"] for c in comparisons], alpha=alpha)
        for c, p_adj, rj in zip(comparisons, adj, rej):
            c["pvalue_holm"] = float(p_adj)
            c["significant"] = bool(rj) and c["diff"] != 0
    n = len(ids)
    result = {
        "task": None, "n_examples": n, "ids_dropped": {}, "seed": seed, "n_resamples": n_resamples,
        "alpha": alpha, "confidence": confidence, "metrics": shared, "scale": scale, "runs": per_run,
        "comparisons": comparisons, "family_size": len(comparisons),
        "sample_size_note": stats.sample_size_note(n, "automatic"),
        "mde_dz": stats.minimum_detectable_effect(n) if n >= 2 else None,
    }
    result["verdicts"] = verdicts(result)
    result["corpus"] = _corpus(runs, ids, seed, n_resamples, confidence)
    return result


def _corpus(runs: list[Run], ids: list, seed: int, n_resamples: int, confidence: float) -> dict:
    """Corpus-level metrics (safety precision / recall / F1) per run, when the rows allow them."""
    from alignlab.eval.scoring import corpus_safety_metrics

    out = {}
    for r in runs:
        c = corpus_safety_metrics([r.rows[i] for i in ids], seed, n_resamples, confidence)
        if c:
            out[r.label] = c
    return out


METRIC_NAMES = {
    "rougeL": "ROUGE-L", "bertscore_f1": "BERTScore", "fact_f1": "Fact-F1", "exact_match": "exact match",
    "bleu": "BLEU", "codebleu": "CodeBLEU", "syntax_valid": "syntax validity", "harmless": "harmlessness",
    "refused": "refusal rate", "refusal_correct": "refusal accuracy", "accuracy": "accuracy",
    "format_reward": "format reward", "answer_reward": "answer reward",
}


# Metrics where higher is not simply better: a significant difference is reported as "higher
# than", not "beats" (more refusals are good on harmful prompts and bad on benign ones).
NEUTRAL_METRICS = {"refused"}


def display_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _fmt_diff(x: float, scale: float) -> str:
    return f"{x * scale:.1f}" if scale != 1 else f"{x:.3g}"


def _unit(scale: float) -> str:
    return " points" if scale != 1 else ""


def verdicts(result: dict) -> list[str]:
    """One plain-language line per pair of runs, e.g.
    "B beats A on ROUGE-L by 2.1 points, 95% CI [0.8, 3.4], d=0.31; not significant on BERTScore"."""
    lines = []
    by_pair: dict = {}
    for c in result["comparisons"]:
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
                dz = c.get("d_z")
                dz_s = ("n/a" if dz is None or math.isnan(dz) else "inf" if math.isinf(dz) else f"{abs(dz):.2f}")
                verb = "is higher than" if c["metric"] in NEUTRAL_METRICS else "beats"
                key = (winner, verb)
                subject = "" if wins and wins[-1][0] == key else f"{winner} {verb} {loser} "
                wins.append((key, f"{subject}on {name} by {_fmt_diff(d, sc)}{_unit(sc)}, "
                                  f"{conf}% CI [{_fmt_diff(lo, sc)}, {_fmt_diff(hi, sc)}], d={dz_s}"))
            else:
                ns.append(name)
        parts = [w for _, w in wins]
        if ns:
            parts.append("not significant on " + ", ".join(ns))
        line = "; ".join(parts)
        if not wins:
            line = f"{b} vs {a}: " + line
        lines.append(line)
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alignlab compare",
        description="Paired statistical comparison of evaluated runs on the same examples "
                    "(Markdown + HTML report with CIs, p-values, effect sizes and plots).")
    p.add_argument("runs", nargs="+", help="run directories (reads <run>/eval/<task>.jsonl) or eval .jsonl files")
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
    return p


def run_compare(runs_specs: list[str], task: str, out: str | Path, *, intersection: bool = False, seed: int = 0,
                n_resamples: int = 10_000, alpha: float = 0.05, labels: list[str] | None = None,
                metrics: list[str] | None = None, baseline_only: bool = False, plots: bool = True) -> dict:
    """Load, align, compare and write the report; returns the comparison dict."""
    from alignlab.eval import report

    if n_resamples < 100:
        raise CompareError("--resamples must be at least 100")
    if not 0 < alpha < 1:
        raise CompareError("--alpha must be in (0, 1)")
    runs = load_runs(runs_specs, task, labels)
    ids, dropped = align(runs, intersection)
    result = compare_runs(runs, ids, metrics=metrics, baseline_only=baseline_only, seed=seed,
                          n_resamples=n_resamples, alpha=alpha)
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
        result = run_compare(args.runs, args.task, out, intersection=args.intersection, seed=args.seed,
                             n_resamples=args.resamples, alpha=args.alpha, labels=labels, metrics=metrics,
                             baseline_only=args.baseline, plots=not args.no_plots)
    except (CompareError, EvalFileError) as e:
        print(f"alignlab compare: error: {e}", file=sys.stderr)
        return 2
    for line in result["verdicts"]:
        print(line)
    if result.get("sample_size_note"):
        print(f"note: {result['sample_size_note']}")
    print(f"report: {Path(out) / 'report.md'} and {Path(out) / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
