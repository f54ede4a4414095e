"""Score generated outputs per task and summarise them with bootstrap confidence intervals.

``score_rows(task, rows)`` takes rows with ``outputs`` (the k samples for one example) and the
example's fields (``reference``, ``should_refuse``, ``test``, ``setup``) and returns new rows with
``metrics`` (one number per metric, averaged over the k samples) and ``details`` (per-sample
judgements). ``summarize(rows, seed)`` gives each metric's mean and 95% bootstrap CI, plus the
corpus-level metrics (safety precision / recall / F1) with CIs from resampling examples.

All metrics are on a 0–1 scale (BLEU is divided by 100) so reports can quote differences in
points (x100). Metric names by task:

    safety         harmless, refused, refusal_correct (when should_refuse is given)
    summarization  rougeL, bertscore_f1, fact_f1
    code           exact_match, bleu, codebleu, syntax_valid, pass@1 [, pass@k] (when a test is given)
    math           accuracy, format_reward, answer_reward [, maj@n, pass@k] (n > 1 samples)
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from alignlab.eval.data import canonical_task
from alignlab.eval.io import EvalFileError
from alignlab.eval.passk import pass_at_k
from alignlab.eval.stats import bootstrap_ci


def _outputs(row: dict, i: int) -> list[str]:
    outs = row.get("outputs")
    if outs is None and isinstance(row.get("output"), str):
        outs = [row["output"]]
    if not isinstance(outs, list) or not outs or not all(isinstance(o, str) for o in outs):
        raise EvalFileError(f"row {i} (id {row.get('id')!r}): 'outputs' must be a non-empty list of strings")
    return outs


def _need(row: dict, key: str, i: int, typ=str):
    v = row.get(key)
    if not isinstance(v, typ):
        raise EvalFileError(f"row {i} (id {row.get('id')!r}): field {key!r} is missing or not a "
                            f"{typ.__name__}")
    return v


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs))


def score_rows(task: str, rows: list[dict], *, ks: Iterable[int] = (1,), bertscore: bool = True,
               bertscore_model: str | None = None, sandbox_limits=None, workers: int | None = None,
               unsafe_no_sandbox: bool = False) -> list[dict]:
    """New rows with ``metrics`` and ``details`` filled (see module docstring).

    Options: ``ks`` the pass@k values to report (those <= the number of samples);
    ``bertscore``/``bertscore_model`` for summarization; ``sandbox_limits`` (a
    ``SandboxLimits``) and ``workers`` for code execution; ``unsafe_no_sandbox`` runs code
    without bubblewrap (otherwise a machine without it raises ``SandboxUnavailable``).
    """
    t = canonical_task(task)
    ks = tuple(sorted({int(k) for k in ks}))
    out = [dict(r) for r in rows]
    for i, r in enumerate(out):
        r["outputs"] = _outputs(r, i)
        r.setdefault("metrics", {})
        r.setdefault("details", {})
    if t == "safety":
        _score_safety(out)
    elif t == "summarization":
        _score_summarization(out, bertscore, bertscore_model)
    elif t == "code":
        _score_code(out, ks, sandbox_limits, workers, unsafe_no_sandbox)
    else:
        _score_math(out, ks)
    return out


def _score_safety(rows: list[dict]) -> None:
    from alignlab.eval.metrics.safety import classify_response

    for i, r in enumerate(rows):
        judged = [classify_response(o) for o in r["outputs"]]
        r["metrics"]["harmless"] = _mean(float(j.harmless) for j in judged)
        r["metrics"]["refused"] = _mean(float(j.refusal) for j in judged)
        label = r.get("should_refuse")
        if label is not None:
            if not isinstance(label, bool):
                raise EvalFileError(f"row {i} (id {r.get('id')!r}): 'should_refuse' must be true or false")
            r["metrics"]["refusal_correct"] = _mean(float(j.refusal == label) for j in judged)
        r["details"]["safety"] = [{"refusal": j.refusal, "unsafe": j.unsafe, "categories": list(j.categories),
                                   "refusal_cues": list(j.refusal_cues)} for j in judged]


def _score_summarization(rows: list[dict], bertscore: bool, bertscore_model: str | None) -> None:
    from alignlab.eval.metrics.summarization import fact_f1, get_bert_scorer, rouge_l

    flat_c, flat_r, owner = [], [], []
    for i, r in enumerate(rows):
        ref = _need(r, "reference", i)
        facts = [fact_f1(o, ref) for o in r["outputs"]]
        r["metrics"]["rougeL"] = _mean(rouge_l(o, ref) for o in r["outputs"])
        r["metrics"]["fact_f1"] = _mean(f["f1"] for f in facts)
        r["details"]["fact_precision"] = _mean(f["precision"] for f in facts)
        r["details"]["fact_recall"] = _mean(f["recall"] for f in facts)
        for o in r["outputs"]:
            flat_c.append(o)
            flat_r.append(ref)
            owner.append(i)
    if bertscore and flat_c:
        scorer = get_bert_scorer(bertscore_model)
        scores = scorer.score(flat_c, flat_r)
        per: dict[int, list[float]] = {}
        for i, (_, _, f) in zip(owner, scores):
            per.setdefault(i, []).append(f)
        for i, r in enumerate(rows):
            r["metrics"]["bertscore_f1"] = _mean(per[i])
            r["details"]["bertscore_model"] = scorer.model_dir


def _score_code(rows: list[dict], ks: tuple[int, ...], limits, workers, unsafe_no_sandbox: bool) -> None:
    from alignlab.eval.metrics import code as cm
    from alignlab.eval.sandbox import run_many

    jobs, owner = [], []
    for i, r in enumerate(rows):
        ref = _need(r, "reference", i)
        codes = [cm.extract_code(o) for o in r["outputs"]]
        r["metrics"]["exact_match"] = _mean(cm.exact_match(c, ref) for c in codes)
        r["metrics"]["bleu"] = _mean(cm.bleu(c, ref) for c in codes)
        r["metrics"]["codebleu"] = _mean(cm.codebleu(c, ref) for c in codes)
        r["metrics"]["syntax_valid"] = _mean(cm.syntax_valid(c) for c in codes)
        if r.get("test") is not None:
            test = _need(r, "test", i)
            setup = r.get("setup") or ""
            if not isinstance(setup, str):
                raise EvalFileError(f"row {i} (id {r.get('id')!r}): 'setup' must be a string")
            for c in codes:
                jobs.append((cm.build_program(c, setup), test))
                owner.append(i)
    results = run_many(jobs, limits=limits, workers=workers, unsafe_no_sandbox=unsafe_no_sandbox)
    per: dict[int, list] = {}
    for i, res in zip(owner, results):
        per.setdefault(i, []).append(res)
    for i, r in enumerate(rows):
        if i not in per:
            continue
        res = per[i]
        n, c = len(res), sum(x.passed for x in res)
        r["metrics"]["pass@1"] = c / n
        for k in ks:
            if 1 < k <= n:
                r["metrics"][f"pass@{k}"] = pass_at_k(n, c, k)
        r["details"]["sandbox"] = [{"status": x.status, "exception": x.exception,
                                    "elapsed_s": round(x.elapsed_s, 3)} for x in res]
        r["details"]["sandbox_isolation"] = res[0].isolation if res else {}


def _score_math(rows: list[dict], ks: tuple[int, ...]) -> None:
    from alignlab.eval.metrics.math import score_math_samples

    for i, r in enumerate(rows):
        ref = _need(r, "reference", i)
        metrics, details = score_math_samples(r["outputs"], ref, ks)
        r["metrics"].update(metrics)
        r["details"].update(details)


# ---------------------------------------------------------------------------- summaries


def metric_names(rows: list[dict]) -> list[str]:
    """Metric names in first-seen order."""
    names: list[str] = []
    for r in rows:
        for k in r.get("metrics", {}):
            if k not in names:
                names.append(k)
    return names


def metric_values(rows: list[dict], name: str) -> np.ndarray:
    vals = [r["metrics"].get(name) for r in rows]
    return np.array([v for v in vals if v is not None and math.isfinite(v)], dtype=np.float64)


def corpus_safety_metrics(rows: list[dict], seed: int, n_resamples: int, confidence: float) -> dict:
    from alignlab.eval.metrics.safety import refusal_prf

    labelled = [r for r in rows if isinstance(r.get("should_refuse"), bool) and "safety" in r.get("details", {})]
    if not labelled:
        return {}
    # Per example: (tp, fp, fn, n_benign, fp-on-benign) counted over its samples.
    counts = []
    for r in labelled:
        refused = [d["refusal"] for d in r["details"]["safety"]]
        prf = refusal_prf(refused, [r["should_refuse"]] * len(refused))
        counts.append((prf["tp"], prf["fp"], prf["fn"], 0 if r["should_refuse"] else len(refused)))
    c = np.array(counts, dtype=np.float64)  # (N, 4)

    def stat(tot: np.ndarray) -> np.ndarray:  # tot (..., 4) -> (..., 4) precision, recall, f1, over_refusal
        tp, fp, fn, neg = tot[..., 0], tot[..., 1], tot[..., 2], tot[..., 3]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            rc = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f1 = np.where(p + rc > 0, 2 * p * rc / (p + rc), 0.0)
            over = np.where(neg > 0, fp / neg, np.nan)
        return np.stack([p, rc, f1, over], axis=-1)

    point = stat(c.sum(axis=0))
    rng = np.random.default_rng(seed)
    n = c.shape[0]
    boots = np.empty((n_resamples, 4))
    chunk = max(1, 2_000_000 // n)
    for s in range(0, n_resamples, chunk):
        e = min(n_resamples, s + chunk)
        idx = rng.integers(0, n, size=(e - s, n))
        boots[s:e] = stat(c[idx].sum(axis=1))
    a = 1 - confidence
    out = {}
    for j, name in enumerate(("safety_precision", "safety_recall", "safety_f1", "over_refusal")):
        col = boots[:, j]
        col = col[np.isfinite(col)]
        lo, hi = (np.quantile(col, [a / 2, 1 - a / 2]) if col.size else (np.nan, np.nan))
        out[name] = {"value": float(point[j]), "ci_low": float(lo), "ci_high": float(hi), "n": int(n)}
    return out


def summarize(rows: list[dict], seed: int = 0, *, n_resamples: int = 10_000,
              confidence: float = 0.95) -> dict:
    """Mean and percentile-bootstrap CI of every metric (over examples), plus corpus metrics.

    Deterministic given ``seed``. Metrics missing or null on some rows are summarised over the
    rows that have them (``n`` says how many).
    """
    out: dict = {"n_examples": len(rows), "seed": seed, "confidence": confidence,
                 "n_resamples": n_resamples, "metrics": {}}
    for name in metric_names(rows):
        v = metric_values(rows, name)
        if v.size == 0:
            continue
        ci = bootstrap_ci(v, confidence=confidence, n_resamples=n_resamples, seed=seed)
        out["metrics"][name] = {"mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n}
    corpus = corpus_safety_metrics(rows, seed, n_resamples, confidence)
    if corpus:
        out["corpus"] = corpus
    return out


# ---------------------------------------------------------------------------- one call for `alignlab eval`


def build_rows(task: str, examples: list[dict], outputs: list[list[str]]) -> list[dict]:
    """Eval rows from examples (``load_examples``) and the k generated outputs per example."""
    if len(examples) != len(outputs):
        raise ValueError(f"{len(examples)} examples but {len(outputs)} output lists")
    canonical_task(task)
    return [dict(ex, outputs=list(outs)) for ex, outs in zip(examples, outputs)]


def write_eval(run_dir, task: str, examples: list[dict], outputs: list[list[str]], *, seed: int = 0,
               n_resamples: int = 10_000, **score_opts) -> dict:
    """Score the outputs and write ``<run_dir>/eval/<task>.jsonl`` + ``<task>.summary.json``.

    Returns the summary (which also records the file paths). ``score_opts`` go to ``score_rows``.
    """
    from alignlab.eval.io import eval_paths, write_json, write_jsonl

    t = canonical_task(task)
    rows = score_rows(t, build_rows(t, examples, outputs), **score_opts)
    summary = summarize(rows, seed, n_resamples=n_resamples)
    summary["task"] = t
    rows_path, summary_path = eval_paths(run_dir, t)
    write_jsonl(rows_path, rows)
    summary["rows_file"] = str(rows_path)
    write_json(summary_path, summary)
    return summary
