"""`alignlab compare` on tiny runs: report files, verdicts, pairing rules and refusals."""
import json
import re

import numpy as np
import pytest
from scipy import stats as sps

from alignlab.eval.compare import CompareError, main, run_compare
from alignlab.eval.io import write_jsonl

VERDICT_WIN = re.compile(
    r"^(\S+) beats (\S+) on ([\w@ -]+) by (-?\d+\.\d) points, 95% CI \[(-?\d+\.\d), (-?\d+\.\d)\], d=(\d+\.\d\d)")


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
    assert float(lo) < float(diff) < float(hi)
    assert c["t_pvalue"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    # The noise metrics differ by chance only.
    assert "not significant on" in line and "noise" in line
    # Holm: the adjusted p is at least the raw one.
    assert all(x["pvalue_holm"] >= x["pvalue"] for x in res["comparisons"])
    exact = next(c for c in res["comparisons"] if c["metric"] == "exact")
    assert exact["binary"] and exact["test"] == "mcnemar"


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
