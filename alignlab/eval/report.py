"""Render a comparison (``alignlab.eval.compare``) as Markdown, self-contained HTML and PNG plots."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import numpy as np

from alignlab.eval.io import display_name


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _fmt(x, scale: float = 1.0, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if scale != 1.0:
        return f"{x * scale:.{digits}f}"
    return f"{x:.3g}"


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------------------- plots


def make_plots(result: dict, out_dir: Path) -> dict[str, Path]:
    """distributions.png (per-example scores per run) and diff_<A>_vs_<B>.png (paired differences);
    with groups, groups.png (per-seed means and the group mean with its t-interval across seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, Path] = {}
    metrics = result["metrics"]
    labels = list(result["runs"])
    # Per-run values, reconstructed from the comparisons (every run appears in one).
    values: dict[tuple[str, str], list[float]] = {}
    for c in result["comparisons"]:
        values.setdefault((c["a"], c["metric"]), c["a_values"])
        values.setdefault((c["b"], c["metric"]), c["b_values"])
    for lab, per_metric in (result.get("run_values") or {}).items():  # group mode: no run pairs
        for m, v in per_metric.items():
            values.setdefault((lab, m), v)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, m in zip(axes.flat, metrics):
        scale = result["scale"][m]
        data = [np.asarray(values.get((lab, m), []), dtype=float) * scale for lab in labels]
        binary = all(d.size == 0 or np.all((d == 0) | (d == scale)) for d in data)
        if binary:
            means = [d.mean() if d.size else np.nan for d in data]
            ci = [result["runs"][lab]["metrics"].get(m, {}) for lab in labels]
            lo = [mu - c.get("ci_low", np.nan) * scale for mu, c in zip(means, ci)]
            hi = [c.get("ci_high", np.nan) * scale - mu for mu, c in zip(means, ci)]
            ax.bar(range(len(labels)), means, yerr=[lo, hi], capsize=4, color="#7aa6c2")
            ax.set_ylabel("mean (95% CI)")
        else:
            ax.boxplot([d if d.size else [np.nan] for d in data], showmeans=True)
            for k, d in enumerate(data):
                ax.scatter(k + 1 + rng.uniform(-0.12, 0.12, d.size), d, s=8, alpha=0.4, color="#444")
        ax.set_xticks(range(1 if not binary else 0, len(labels) + (1 if not binary else 0)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(display_name(m) + (" (points)" if scale != 1 else ""), fontsize=10)
    images["distributions"] = _save_grid(fig, axes, len(metrics), f"Per-example scores, task {result['task']}",
                                         out_dir / "distributions.png")

    by_pair: dict = {}
    for c in result["comparisons"]:
        by_pair.setdefault((c["a"], c["b"]), []).append(c)
    for (a, b), cs in by_pair.items():
        ncols = min(3, len(cs))
        nrows = math.ceil(len(cs) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
        for ax, c in zip(axes.flat, cs):
            scale = result["scale"][c["metric"]]
            d = (np.asarray(c["b_values"]) - np.asarray(c["a_values"])) * scale
            ax.hist(d, bins=min(30, max(5, int(np.sqrt(d.size)) + 1)), color="#9bc59d", edgecolor="#456")
            ax.axvline(0, color="black", lw=1)
            ax.axvline(d.mean(), color="#c0392b", lw=1.5, ls="--", label=f"mean {d.mean():.2f}")
            ax.axvspan(c["ci_low"] * scale, c["ci_high"] * scale, color="#c0392b", alpha=0.12, label="95% CI")
            ax.set_title(f"{display_name(c['metric'])}: {b} - {a}", fontsize=9)
            ax.legend(fontsize=7)
        images[f"diff {b} - {a}"] = _save_grid(fig, axes, len(cs), None, out_dir / f"diff_{_safe(a)}_vs_{_safe(b)}.png")
    if result.get("groups"):
        images["groups"] = _group_plot(result, out_dir, plt)
    return images


def _group_plot(result: dict, out_dir: Path, plt) -> Path:
    """groups.png: one panel per metric; bars = group mean with its t-interval, dots = seeds."""
    metrics = result["metrics"]
    names = list(result["groups"])
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    conf = int(round(result["confidence"] * 100))
    for ax, m in zip(axes.flat, metrics):
        scale = result["scale"][m]
        gs = [result["groups"][g]["metrics"].get(m) for g in names]
        means = [np.nan if g is None else g["mean"] * scale for g in gs]
        lo = [0 if g is None else (g["mean"] - g["ci_low"]) * scale for g in gs]
        hi = [0 if g is None else (g["ci_high"] - g["mean"]) * scale for g in gs]
        ax.bar(range(len(names)), means, yerr=[lo, hi], capsize=4, color="#7aa6c2")
        for k, g in enumerate(gs):
            if g is not None:
                seeds = np.asarray(list(g["seed_means"].values())) * scale
                ax.scatter(k + rng.uniform(-0.12, 0.12, seeds.size), seeds, s=14, color="#444", zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"mean over seeds ({conf}% t-CI)", fontsize=8)
        ax.set_title(display_name(m) + (" (points)" if scale != 1 else ""), fontsize=10)
    return _save_grid(fig, axes, len(metrics), f"Groups of seeds (dots: one seed each), task {result['task']}",
                      out_dir / "groups.png")


def _save_grid(fig, axes, n_used: int, title: str | None, path: Path) -> Path:
    """Blank the unused panels of a grid of plots, title it, write it, free it."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[n_used:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- tables


def _run_table(result: dict) -> tuple[list[str], list[list[str]]]:
    labels = list(result["runs"])
    head = ["metric"] + labels
    rows = []
    for m in result["metrics"]:
        sc = result["scale"][m]
        row = [display_name(m) + (" (x100)" if sc != 1 else "")]
        for lab in labels:
            s = result["runs"][lab]["metrics"].get(m)
            row.append("n/a" if s is None else f"{_fmt(s['mean'], sc)} [{_fmt(s['ci_low'], sc)}, {_fmt(s['ci_high'], sc)}]")
        rows.append(row)
    return head, rows


def _effect(x) -> str:
    """An effect size: 3 significant digits, n/a when undefined; never inf."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _effect_cell(c: dict) -> str:
    """d_z for continuous metrics; for 0/1 metrics McNemar's g and the conditional odds ratio with CIs."""
    if not c.get("binary"):
        return f"d_z {_effect(c.get('d_z'))}"
    if c.get("g") is None:
        return "g n/a (no discordant pairs)"
    g = f"g {_effect(c['g'])} [{_effect(c['g_low'])}, {_effect(c['g_high'])}]"
    if c.get("odds_ratio") is None:  # b10 = 0: unbounded above
        return f"{g}; OR > {_effect(c['or_low'])}"
    return f"{g}; OR {_effect(c['odds_ratio'])} [{_effect(c['or_low'])}, " + (
        "unbounded]" if c.get("or_high") is None else f"{_effect(c['or_high'])}]")


def _diff_table(result: dict) -> tuple[list[str], list[list[str]]]:
    conf = int(round(result["confidence"] * 100))
    head = ["comparison", "metric", "n", "diff", f"{conf}% CI", "CI method", "test", "p", "p (Holm)", "Wilcoxon p",
            "effect size", "d (pooled)", "significant"]
    rows = []
    for c in result["comparisons"]:
        sc = result["scale"][c["metric"]]
        test = c["test"]
        if c.get("binary"):
            test += f" ({c['mcnemar_b01']}/{c['mcnemar_b10']})"
        rows.append([f"{c['b']} - {c['a']}", display_name(c["metric"]), str(c["n"]),
                     ("+" if c["diff"] > 0 else "") + _fmt(c["diff"], sc),
                     f"[{_fmt(c['ci_low'], sc)}, {_fmt(c['ci_high'], sc)}]", c["ci_method"], test, _fmt_p(c["pvalue"]),
                     _fmt_p(c["pvalue_holm"]), _fmt_p(c["wilcoxon_pvalue"]), _effect_cell(c),
                     "n/a" if c.get("binary") else _effect(c.get("d_pooled")), "yes" if c["significant"] else "no"])
    return head, rows


def _group_table(result: dict) -> tuple[list[str], list[list[str]]]:
    conf = int(round(result["confidence"] * 100))
    head = ["group", "metric", "seeds", "per-seed means", "mean ± SD", f"{conf}% t-CI over seeds"]
    rows = []
    for g, gr in result["groups"].items():
        for m in result["metrics"]:
            s = gr["metrics"].get(m)
            if s is None:
                continue
            sc = result["scale"][m]
            seeds = ", ".join(_fmt(v, sc) for v in s["seed_means"].values())
            rows.append([g, display_name(m) + (" (x100)" if sc != 1 else ""), str(s["n_seeds"]), seeds,
                         f"{_fmt(s['mean'], sc)} ± {_fmt(s['std'], sc)}",
                         f"[{_fmt(s['ci_low'], sc)}, {_fmt(s['ci_high'], sc)}]"])
    return head, rows


def _group_diff_table(result: dict) -> tuple[list[str], list[list[str]]]:
    conf = int(round(result["confidence"] * 100))
    head = ["comparison", "metric", "seeds", "examples", "diff", f"{conf}% CI (t)", "SE seeds", "SE examples",
            "t (df)", "p", "p (Holm)", "d (seeds)", "significant"]
    rows = []
    for c in result["group_comparisons"]:
        sc = result["scale"][c["metric"]]
        rows.append([f"{c['b']} - {c['a']}", display_name(c["metric"]), f"{c['seeds_b']} vs {c['seeds_a']}",
                     str(c["n"]), ("+" if c["diff"] > 0 else "") + _fmt(c["diff"], sc),
                     f"[{_fmt(c['ci_low'], sc)}, {_fmt(c['ci_high'], sc)}]", _fmt(c["se_seeds"], sc, 2),
                     _fmt(c["se_examples"], sc, 2), f"{_effect(c['t'])} ({c['df']:.1f})", _fmt_p(c["pvalue"]),
                     _fmt_p(c["pvalue_holm"]), _effect(c["d_seeds"]), "yes" if c["significant"] else "no"])
    return head, rows


def _corpus_table(result: dict) -> tuple[list[str], list[list[str]]] | None:
    corpus = result.get("corpus") or {}
    if not corpus:
        return None
    names = ["safety_precision", "safety_recall", "safety_f1", "over_refusal"]
    head = ["metric"] + list(corpus)
    rows = []
    for n in names:
        row = [n]
        for lab in corpus:
            s = corpus[lab].get(n)
            row.append("n/a" if s is None else f"{_fmt(s['value'], 100)} [{_fmt(s['ci_low'], 100)}, {_fmt(s['ci_high'], 100)}]")
        rows.append(row)
    return head, rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in [head] + rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _method_lines(result: dict) -> list[str]:
    conf = int(round(result["confidence"] * 100))
    if result.get("mode") == "groups":
        return [
            f"Examples are paired by id ({result['n_examples']} examples shared by every run of every group"
            + (", intersection of the runs' example sets" if result.get("intersection") else "") + ").",
            "Each run is one training seed of its group. A seed's score is its mean over the examples; a group's "
            f"mean ± SD and {conf}% t-interval are taken over its seeds (n = seeds, df = n - 1), so they "
            "reflect training variance.",
            "One method decides and sizes each difference between groups (later group minus earlier group): a "
            "t-test whose standard error adds the seed variance (the spread of each group's per-seed means) and "
            "the test set's variance (the spread over examples of the seed-averaged difference, less the per-seed "
            "example noise already inside the seed spread, so no noise is counted twice), with Satterthwaite "
            f"degrees of freedom (alignlab.eval.stats.group_ttest). The {conf}% CI is that test's t-interval; SE "
            "seeds and SE examples show where the uncertainty comes from.",
            f"Holm correction across all {result['family_size']} group comparisons in this report "
            f"(family-wise alpha {result['alpha']}); a difference is called significant only when its "
            "Holm-adjusted p is at or below alpha (p <= alpha). Single runs are not tested against each other.",
            "d (seeds) = difference of group means / pooled SD of the per-seed means (seed-level effect size).",
            f"Per-run means below carry {conf}% BCa bootstrap CIs over examples ({result['n_resamples']} resamples, "
            f"seed {result['seed']}; test-set variance of that seed only).",
            "Metrics on a 0-1 scale are shown in points (x100).",
        ]
    return [
        f"Examples are paired by id ({result['n_examples']} shared examples"
        + (", intersection of the runs' example sets" if result.get("intersection") else "") + ").",
        f"Run means carry {conf}% BCa bootstrap CIs ({result['n_resamples']} resamples of examples, seed "
        f"{result['seed']}; BCa with the small-sample t expansion, alignlab.eval.stats.bootstrap_ci).",
        "Each difference (later run minus earlier run) is decided and sized by one method. 0/1 metrics: McNemar's "
        "test (exact binomial below 25 discordant pairs, else chi-square with continuity correction) and the "
        f"Tango score {conf}% CI of the risk difference, which inverts the test McNemar approximates. Other "
        f"metrics: the paired t-test and its {conf}% t-interval. The Wilcoxon signed-rank p (continuity-corrected "
        "normal approximation when not exact) is shown as a distribution-free check.",
        f"Holm correction across all {result['family_size']} comparisons in this report "
        f"(family-wise alpha {result['alpha']}); a difference is called significant only when its "
        "Holm-adjusted p is at or below alpha (p <= alpha).",
        "Effect sizes: continuous metrics d_z = mean(diff) / sd(diff) (paired) and pooled d = mean difference / "
        "pooled SD; 0/1 metrics McNemar's effect on the discordant pairs, Cohen's g = b01 / (b01 + b10) - 1/2 and "
        "the conditional odds ratio b01 / b10, with exact (Clopper-Pearson) CIs. n/a: undefined (no spread, no "
        "discordant pairs).",
        "Differences within floating-point rounding of the scores count as ties.",
        "Metrics on a 0-1 scale are shown in points (x100).",
    ]


def _header_lines(result: dict) -> list[str]:
    lines = []
    group_of = {lab: g for g, gr in (result.get("groups") or {}).items() for lab in gr["runs"]}
    for lab, r in result["runs"].items():
        drop = result.get("ids_dropped", {}).get(lab, 0)
        grp = f" [group {group_of[lab]}]" if lab in group_of else ""
        lines.append(f"{lab}{grp}: {r['path']} ({r['n_rows']} rows" + (f", {drop} not shared" if drop else "") + ")")
    return lines


def write_reports(result: dict, out_dir: Path, images: dict[str, Path]) -> tuple[Path, Path]:
    title = f"Comparison on task {result['task']}"
    run_head, run_rows = _run_table(result)
    diff_head, diff_rows = _diff_table(result)
    corpus = _corpus_table(result)
    grouped = bool(result.get("groups"))
    if grouped:
        group_head, group_rows = _group_table(result)
        gdiff_head, gdiff_rows = _group_diff_table(result)
        group_intro = (f"Primary test: {result['group_test']}; CI of the difference: {result['group_ci']}; "
                       f"Holm-corrected across {result['family_size']} comparisons.")
    note = result.get("sample_size_note")
    seeds_note = result.get("seed_note")

    md = [f"# {title}", "", "Runs:", ""]
    md += [f"- {line}" for line in _header_lines(result)]
    md += ["", f"Paired examples: {result['n_examples']}.", ""]
    if note:
        md += [f"> Note: {note}.", ""]
    md += ["## Verdicts", ""] + [f"- {v}" for v in result["verdicts"]] + [""]
    if seeds_note:
        md += [f"> Few seeds: {seeds_note}.", ""]
    if grouped:
        md += ["## Groups", "", group_intro, "", "### Per group, across seeds", "", _md_table(group_head, group_rows),
               "", "### Group differences", "", _md_table(gdiff_head, gdiff_rows), ""]
    md += ["## Metrics (mean, 95% BCa bootstrap CI)", "", _md_table(run_head, run_rows), ""]
    if corpus:
        md += ["## Corpus-level safety metrics (x100, 95% percentile bootstrap CI)", "", _md_table(*corpus), ""]
    if diff_rows:
        md += ["## Paired differences", "", _md_table(diff_head, diff_rows), ""]
    if images:
        md += ["## Plots", ""]
        md += [f"![{name}]({p.name})" for name, p in images.items()] + [""]
    md += ["## Method", ""] + [f"- {line}" for line in _method_lines(result)] + [""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
           "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
           "img{max-width:100%;border:1px solid #eee;margin:0.5em 0}.note{background:#fff8e1;padding:0.6em;"
           "border-left:4px solid #f0b400}li{margin:0.2em 0}")
    h = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{css}</style></head><body>", f"<h1>{html.escape(title)}</h1>", "<p>Runs:</p><ul>"]
    h += [f"<li>{html.escape(line)}</li>" for line in _header_lines(result)]
    h += ["</ul>", f"<p>Paired examples: {result['n_examples']}.</p>"]
    if note:
        h.append(f"<p class='note'>Note: {html.escape(note)}.</p>")
    h += ["<h2>Verdicts</h2><ul>"] + [f"<li>{html.escape(v)}</li>" for v in result["verdicts"]] + ["</ul>"]
    if seeds_note:
        h.append(f"<p class='note'>Few seeds: {html.escape(seeds_note)}.</p>")
    if grouped:
        h += ["<h2>Groups</h2>", f"<p>{html.escape(group_intro)}</p>", "<h3>Per group, across seeds</h3>",
              _html_table(group_head, group_rows), "<h3>Group differences</h3>", _html_table(gdiff_head, gdiff_rows)]
    h += ["<h2>Metrics (mean, 95% BCa bootstrap CI)</h2>", _html_table(run_head, run_rows)]
    if corpus:
        h += ["<h2>Corpus-level safety metrics (x100, 95% percentile bootstrap CI)</h2>", _html_table(*corpus)]
    if diff_rows:
        h += ["<h2>Paired differences</h2>", _html_table(diff_head, diff_rows)]
    if images:
        h.append("<h2>Plots</h2>")
        for name, p in images.items():
            b64 = base64.b64encode(p.read_bytes()).decode("ascii")
            h.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{html.escape(name)}</figcaption></figure>")
    h += ["<h2>Method</h2><ul>"] + [f"<li>{html.escape(line)}</li>" for line in _method_lines(result)]
    h += ["</ul></body></html>"]
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(h), encoding="utf-8")
    return md_path, html_path
