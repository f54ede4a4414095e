"""`alignlab compare` on tiny runs: report files, verdicts, pairing rules and refusals."""
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from alignlab.eval.compare import CompareError, main, run_compare
from alignlab.eval.io import write_jsonl

VERDICT_WIN = re.compile(
    r"^(\S+) beats (\S+) on ([\w@ -]+) by (-?\d+\.\d) points, 95% CI \[(-?\d+\.\d), (-?\d+\.\d)\], d_z=(\d+\.\d\d)")


def make_run(root, name, task, metrics_by_id, prompt="p"):
    rows = [{"id": i, "prompt": f"{prompt}{i}", "outputs": ["o"], "reference": f"r{i}", "metrics": m}
            for i, m in metrics_by_id.items()]
    write_jsonl(root / name / "eval" / f"{task}.jsonl", rows)
    return root / name


@pytest.fixture
def two_runs(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    base = rng.beta(4, 6, n)
    a = {f"ex{i}": {"rougeL": float(base[i]), "noise": float(rng.random()), "exact": float(rng.random() < 0.3)}
         for i in range(n)}
    b = {f"ex{i}": {"rougeL": float(min(1, base[i] + 0.05 + rng.normal(0, 0.03))), "noise": float(rng.random()),
                    "exact": float(rng.random() < 0.3)} for i in range(n)}
    return make_run(tmp_path, "base", "summarization", a), make_run(tmp_path, "sft", "summarization", b)


def test_compare_two_tiny_runs_writes_report(tmp_path, two_runs, capsys):
    out = tmp_path / "report"
    rc = main([str(two_runs[0]), str(two_runs[1]), "--task", "summarization", "--out", str(out),
               "--resamples", "2000"])
    assert rc == 0
    for f in ["report.md", "report.html", "comparison.json", "distributions.png", "diff_base_vs_sft.png"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Verdicts" in md and "| ROUGE-L (x100) |" in md and "![distributions](distributions.png)" in md
    assert "data:image/png;base64," in html and "<table>" in html
    res = json.loads((out / "comparison.json").read_text())
    assert res["n_examples"] == 60 and res["family_size"] == 3
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] in md


def test_verdict_numbers_match_statistics(tmp_path, two_runs):
    res = run_compare([str(p) for p in two_runs], "summarization", tmp_path / "r", n_resamples=2000, plots=False)
    line = res["verdicts"][0]
    m = VERDICT_WIN.match(line)
    assert m, line
    winner, loser, metric, diff, lo, hi, d = m.groups()
    assert (winner, loser, metric) == ("sft", "base", "ROUGE-L")
    c = next(c for c in res["comparisons"] if c["metric"] == "rougeL")
    a, b = np.array(c["a_values"]), np.array(c["b_values"])
    assert float(diff) == pytest.approx(100 * (b - a).mean(), abs=0.051)
    assert float(d) == pytest.approx((b - a).mean() / (b - a).std(ddof=1), abs=0.006)
    # The CI is the deciding test's own interval: scipy's paired t-interval.
    ref = sps.ttest_rel(b, a)
    ci = ref.confidence_interval()
    assert (float(lo), float(hi)) == pytest.approx((100 * ci.low, 100 * ci.high), abs=0.051)
    assert c["ci_method"] == "t" and c["t_pvalue"] == pytest.approx(ref.pvalue)
    # The noise metrics differ by chance only.
    assert "not significant on" in line and "noise" in line
    # Holm: the adjusted p is at least the raw one.
    assert all(x["pvalue_holm"] >= x["pvalue"] for x in res["comparisons"])
    exact = next(c for c in res["comparisons"] if c["metric"] == "exact")
    assert exact["binary"] and exact["test"] == "mcnemar" and exact["ci_method"] == "Tango score"
    assert "d_z" not in exact and "g" in exact


def test_float_noise_is_not_significant_through_compare(tmp_path):
    # Issue 14: BERTScores equal up to the last bit came out as "X beats Y on BERTScore by 0.0 points,
    # 95% CI [-0.0, 0.0], d=0.14" with Holm p = 0. One-ulp differences, all of one sign, are the worst case.
    x = np.random.default_rng(2).uniform(0.6, 0.9, 40)
    y = np.nextafter(x, 2.0)
    a = make_run(tmp_path, "x", "summarization", {i: {"bertscore_f1": float(x[i])} for i in range(40)})
    b = make_run(tmp_path, "y", "summarization", {i: {"bertscore_f1": float(y[i])} for i in range(40)})
    res = run_compare([str(a), str(b)], "summarization", tmp_path / "r", n_resamples=200, plots=False)
    c = res["comparisons"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy itself warns that the data are nearly identical
        assert sps.ttest_rel(y, x).pvalue < 1e-10  # what a raw t-test on the noise says
    assert not c["significant"] and c["pvalue"] == 1.0 and c["diff"] == 0.0
    assert res["verdicts"] == ["y vs x: not significant on BERTScore"]


def test_binary_effect_size_is_mcnemars_and_never_inf(tmp_path):
    # Every discordant pair favours b: d_z and the odds ratio would be infinite. The verdict shows Cohen's
    # g (= 0.5 here) and the table the odds ratio's lower bound only.
    n = 60
    a = make_run(tmp_path, "base", "math", {i: {"accuracy": 0.0 if i < 15 else float(i % 2)} for i in range(n)})
    b = make_run(tmp_path, "sft", "math", {i: {"accuracy": 1.0 if i < 15 else float(i % 2)} for i in range(n)})
    out = tmp_path / "r"
    res = run_compare([str(a), str(b)], "math", out, n_resamples=200, plots=False)
    c = res["comparisons"][0]
    assert (c["mcnemar_b01"], c["mcnemar_b10"]) == (15, 0) and c["significant"]
    assert res["verdicts"][0].startswith("sft beats base on accuracy by 25.0 points, 95% CI [")
    assert res["verdicts"][0].endswith("g=0.50")
    md = (out / "report.md").read_text()
    assert "inf" not in md.lower().replace("information", "")
    assert "OR > " in md and "Tango score" in md and "p <= alpha" in md
    assert c["ci_low"] > 0 and c["ci_high"] < 1


def test_refuses_different_example_sets(tmp_path, capsys):
    a = make_run(tmp_path, "a", "math", {f"q{i}": {"accuracy": float(i % 2)} for i in range(10)})
    b = make_run(tmp_path, "b", "math", {f"q{i}": {"accuracy": 1.0} for i in range(2, 12)})
    with pytest.raises(CompareError, match="different example sets.*--intersection"):
        run_compare([str(a), str(b)], "math", tmp_path / "r", n_resamples=200, plots=False)
    assert main([str(a), str(b), "--task", "math", "--out", str(tmp_path / "r")]) == 2
    assert "different example sets" in capsys.readouterr().err
    res = run_compare([str(a), str(b)], "math", tmp_path / "r", intersection=True, n_resamples=200, plots=False)
    assert res["n_examples"] == 8 and res["ids_dropped"] == {"a": 2, "b": 2}


def test_refuses_same_ids_with_different_prompts(tmp_path):
    a = make_run(tmp_path, "a", "math", {i: {"accuracy": 1.0} for i in range(5)}, prompt="p")
    b = make_run(tmp_path, "b", "math", {i: {"accuracy": 0.0} for i in range(5)}, prompt="other")
    with pytest.raises(CompareError, match="different prompt or reference"):
        run_compare([str(a), str(b)], "math", tmp_path / "r", n_resamples=200, plots=False)


def test_three_runs_eval_files_labels_and_baseline(tmp_path):
    runs = [make_run(tmp_path, f"r{k}", "math", {i: {"accuracy": float((i + k) % 3 == 0)} for i in range(30)})
            for k in range(3)]
    files = [str(r / "eval" / "math.jsonl") for r in runs]
    res = run_compare(files, "math", tmp_path / "all", n_resamples=200, labels=["base", "sft", "grpo"])
    assert list(res["runs"]) == ["base", "sft", "grpo"]
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {("base", "sft"), ("base", "grpo"), ("sft", "grpo")}
    assert (tmp_path / "all" / "diff_sft_vs_grpo.png").is_file()
    res = run_compare(files, "math", tmp_path / "bl", n_resamples=200, baseline_only=True, plots=False)
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {("r0", "r1"), ("r0", "r2")}


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    a = make_run(tmp_path, "a", "math", {0: {"accuracy": 1.0}, 1: {"accuracy": 0.0}})
    assert main([str(a), str(tmp_path / "missing"), "--task", "math"]) == 2
    assert "neither a run directory nor an eval file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(a), str(tmp_path / "empty"), "--task", "math"]) == 2
    assert "no eval file" in capsys.readouterr().err
    bad = tmp_path / "bad" / "eval"
    bad.mkdir(parents=True)
    (bad / "math.jsonl").write_text('{"id": 0, "metrics": {"accuracy": 1}}\n{oops\n')
    assert main([str(a), str(tmp_path / "bad"), "--task", "math"]) == 2
    assert "math.jsonl:2: not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(a), "--task"])  # argparse usage error


def test_refusal_rate_is_reported_as_higher_not_beats(tmp_path):
    a = make_run(tmp_path, "base", "safety", {i: {"refused": 0.0, "refusal_correct": float(i % 2)} for i in range(40)})
    b = make_run(tmp_path, "sft", "safety", {i: {"refused": 1.0, "refusal_correct": 1.0} for i in range(40)})
    res = run_compare([str(a), str(b)], "safety", tmp_path / "r", n_resamples=500, plots=False)
    line = res["verdicts"][0]
    assert line.startswith("sft is higher than base on refusal rate by 100.0 points")
    assert "; sft beats base on refusal accuracy by 50.0 points" in line


# ---------------------------------------------------------------------------- groups of seeds


def _seed_runs(root, group, k, n, p_correct, rng, task="math"):
    """k seed runs of one method: a 0/1 accuracy and a continuous score per example."""
    paths = []
    for s in range(k):
        p_seed = float(np.clip(p_correct + rng.normal(0, 0.02), 0, 1))
        acc = (rng.random(n) < p_seed).astype(float)
        score = np.clip(0.5 * acc + rng.normal(0.2, 0.1, n), 0, 1)
        paths.append(make_run(root, f"{group}-seed{s}", task,
                              {f"q{i}": {"accuracy": float(acc[i]), "score": float(score[i])} for i in range(n)}))
    return paths


@pytest.fixture
def seed_groups(tmp_path):
    """base (3 seeds), good (3 seeds, much better), same (base's runs copied, seeds reordered)."""
    rng = np.random.default_rng(7)
    base = _seed_runs(tmp_path, "base", 3, 80, 0.35, rng)
    good = _seed_runs(tmp_path, "good", 3, 80, 0.85, rng)
    same = []
    for s, src in enumerate(reversed(base)):
        dst = tmp_path / f"same-seed{s}" / "eval"
        dst.mkdir(parents=True)
        (dst / "math.jsonl").write_text((src / "eval" / "math.jsonl").read_text())
        same.append(dst.parent)
    return {"base": [str(p) for p in base], "good": [str(p) for p in good], "same": [str(p) for p in same]}


def _run_means(paths, metric):
    out = []
    for p in paths:
        rows = [json.loads(line) for line in (p / "eval" / "math.jsonl").read_text().splitlines()]
        out.append(np.mean([r["metrics"][metric] for r in rows]))
    return np.array(out)


def test_groups_match_scipy_and_apply_holm(tmp_path, seed_groups):
    res = run_compare([], "math", tmp_path / "r", n_resamples=1000, plots=False, groups=seed_groups)
    assert res["mode"] == "groups" and res["comparisons"] == []
    paths = {g: [Path(p) for p in ps] for g, ps in seed_groups.items()}
    for g in ("base", "good"):
        for m in ("accuracy", "score"):
            x = _run_means(paths[g], m)
            s = res["groups"][g]["metrics"][m]
            assert list(s["seed_means"].values()) == pytest.approx(x)
            assert s["n_seeds"] == 3
            assert s["mean"] == pytest.approx(x.mean()) and s["std"] == pytest.approx(x.std(ddof=1))
            lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
            assert (s["ci_low"], s["ci_high"]) == pytest.approx((lo, hi))
    # One method per group verdict: stats.group_ttest gives both the p and the CI.
    from alignlab.eval import stats

    gc = {(c["a"], c["b"], c["metric"]): c for c in res["group_comparisons"]}
    assert len(gc) == 6 and res["family_size"] == 6  # 3 group pairs x 2 metrics
    c = gc[("base", "good", "accuracy")]
    a, b = _run_means(paths["base"], "accuracy"), _run_means(paths["good"], "accuracy")
    ya, yb = (np.array([[json.loads(line)["metrics"]["accuracy"]
                         for line in (q / "eval" / "math.jsonl").read_text().splitlines()] for q in paths[g]])
              for g in ("base", "good"))
    ref = stats.group_ttest(ya, yb)
    assert c["test"] == "t over seeds + examples"
    assert (c["pvalue"], c["df"], c["ci_low"], c["ci_high"]) == pytest.approx((ref.pvalue, ref.df, ref.ci_low, ref.ci_high))
    assert c["diff"] == pytest.approx(b.mean() - a.mean()) and c["ci_low"] < c["diff"] < c["ci_high"]
    for x in res["group_comparisons"]:  # the verdict and the CI shown cannot disagree
        assert (x["pvalue"] <= 0.05) == (not x["ci_low"] <= 0 <= x["ci_high"])
    # Holm across every group comparison (brute-force definition).
    p = np.array([c["pvalue"] for c in res["group_comparisons"]])
    order = np.argsort(p)
    ref, running = np.empty(p.size), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        ref[i] = running
    assert [c["pvalue_holm"] for c in res["group_comparisons"]] == pytest.approx(ref)
    assert all(c["significant"] == (c["pvalue_holm"] <= 0.05 and c["diff"] != 0) for c in res["group_comparisons"])
    # A clearly better group is significant; a group of the same runs is not.
    assert c["significant"] and c["diff"] > 0 and c["ci_low"] > 0
    same = gc[("base", "same", "accuracy")]
    assert same["diff"] == pytest.approx(0, abs=1e-12) and same["pvalue"] == pytest.approx(1.0)
    assert not same["significant"] and not gc[("base", "same", "score")]["significant"]
    lines = res["verdicts"]
    assert lines[0].startswith("good beats base on accuracy by ") and ", p=" in lines[0] and "(Holm)" in lines[0]
    assert lines[0].endswith("[seeds: good 3, base 3]")
    assert lines[1] == "same vs base: not significant on accuracy, score [seeds: same 3, base 3]"


def test_group_report_cli(tmp_path, seed_groups, capsys):
    out = tmp_path / "rep"
    argv = ["--task", "math", "--out", str(out), "--resamples", "500", "--baseline"]
    for g, ps in seed_groups.items():
        argv += ["--group", f"{g}={','.join(ps)}"]
    assert main(argv) == 0
    md = (out / "report.md").read_text()
    assert "## Groups" in md and "### Group differences" in md and "SE examples" in md and "group_ttest" in md
    # 3 seeds: the report says plainly how little that supports, and the CLI prints it.
    assert "> Few seeds: a group here has only 3 seeds" in md and "no evidence that the methods are equal" in md
    assert "| base | accuracy (x100) | 3 |" in md and "![groups](groups.png)" in md
    assert "## Paired differences" not in md  # single runs are not tested against each other
    assert "<h2>Groups</h2>" in (out / "report.html").read_text()
    assert (out / "groups.png").stat().st_size > 0
    js = json.loads((out / "comparison.json").read_text())
    assert "run_values" not in js and js["family_size"] == 4  # --baseline: good-base, same-base x 2 metrics
    assert {(c["a"], c["b"]) for c in js["group_comparisons"]} == {("base", "good"), ("base", "same")}
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("good beats base on accuracy") and "note: a group here has only 3" in printed


def test_seed_note_only_with_few_seeds(tmp_path):
    rng = np.random.default_rng(9)
    groups = {"a": [str(p) for p in _seed_runs(tmp_path, "a", 5, 40, 0.4, rng)],
              "b": [str(p) for p in _seed_runs(tmp_path, "b", 5, 40, 0.6, rng)]}
    res = run_compare([], "math", tmp_path / "r", n_resamples=200, plots=False, groups=groups)
    assert res["seed_note"] is None and "Few seeds" not in (tmp_path / "r" / "report.md").read_text()
    groups["b"] = groups["b"][:4]
    res = run_compare([], "math", tmp_path / "r", n_resamples=200, plots=False, groups=groups)
    assert res["seed_note"].startswith("a group here has only 4 seeds, so its seed variance rests on 3 degrees")


def test_group_with_one_seed_is_refused(tmp_path, seed_groups, capsys):
    argv = ["--task", "math", "--group", f"base={seed_groups['base'][0]}",
            "--group", "good=" + ",".join(seed_groups["good"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--group base has 1 run" in err and "at least 2 seed runs" in err
    with pytest.raises(CompareError, match="--group good has 1 run"):
        run_compare([], "math", tmp_path / "r", groups={"base": seed_groups["base"], "good": seed_groups["good"][:1]})


@pytest.mark.parametrize("groups,message", [
    (["sft"], r"--group 'sft': expected NAME=RUN1,RUN2"),
    (["=A,B"], r"--group '=A,B': expected NAME=RUN1,RUN2"),
    (["x=A,,B", "y=C,D"], r"--group 'x=A,,B': empty run name"),
    (["x=A,B", "x=C,D"], r"--group x is given twice"),
    (["x=A,B"], r"--group: comparing groups needs at least two groups, got 1"),
    (["x=A,MISSING", "y=C,D"], r"--group x: .*MISSING: neither a run directory nor an eval file"),
    (["x=A,B", "y=B,C"], r"is in both --group x and --group y"),
    (["x=A,B,A", "y=C,D"], r"is twice in --group x"),
])
def test_group_bad_inputs_name_the_argument(tmp_path, capsys, monkeypatch, groups, message):
    for name in "ABCD":
        make_run(tmp_path, name, "math", {i: {"accuracy": float(i % 2)} for i in range(4)})
    monkeypatch.chdir(tmp_path)  # run names A..D are relative paths
    argv = ["--task", "math", "--out", "r", "--no-plots", "--resamples", "100"]
    for g in groups:
        argv += ["--group", g]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_groups_refuse_positional_runs_labels_and_different_examples(tmp_path, seed_groups):
    with pytest.raises(CompareError, match="--group: give the runs inside --group"):
        run_compare([seed_groups["base"][0]], "math", tmp_path / "r", groups=seed_groups)
    with pytest.raises(CompareError, match="--labels names single runs"):
        run_compare([], "math", tmp_path / "r", groups=seed_groups, labels=["a", "b"])
    short = make_run(tmp_path, "good-seed9", "math", {f"q{i}": {"accuracy": 1.0, "score": 0.5} for i in range(70)})
    groups = {"base": seed_groups["base"], "good": seed_groups["good"][:2] + [str(short)]}
    with pytest.raises(CompareError, match="different example sets.*--intersection"):
        run_compare([], "math", tmp_path / "r", groups=groups, n_resamples=200, plots=False)
    res = run_compare([], "math", tmp_path / "r", groups=groups, intersection=True, n_resamples=200, plots=False)
    assert res["n_examples"] == 70 and res["ids_dropped"]["base-seed0"] == 10
