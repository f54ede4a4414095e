"""`alignlab eval` end to end on a tiny model: files, summary with CIs, failure breakdown, tasks."""
import json

import pytest

from alignlab import cli


def test_eval_arithmetic_writes_rows_and_summary(tmp_path, qwen_dir, capsys):
    rc = cli.main(["eval", "--model", str(qwen_dir), "--task", "arithmetic", "--max-examples", "12",
                   "--out", str(tmp_path), "--resamples", "200"])
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "eval/arithmetic.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"id", "prompt", "outputs", "reference", "metrics"} <= set(rows[0])
    summary = json.loads((tmp_path / "eval/arithmetic.summary.json").read_text())
    assert set(summary["failures"]) == {"correct", "answer_wrong", "format_wrong"}
    assert sum(summary["failures"].values()) == 12
    acc = summary["metrics"]["accuracy"]
    assert acc["n"] == 12 and acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
    assert "accuracy" in capsys.readouterr().err


def test_eval_with_samples_adds_pass_at_k_and_maj_at_k(tmp_path, qwen_dir):
    rc = cli.main(["eval", "--model", str(qwen_dir), "--task", "math", "--max-examples", "3", "--samples", "4",
                   "--max-new-tokens", "8", "--out", str(tmp_path), "--resamples", "200"])
    assert rc == 0
    summary = json.loads((tmp_path / "eval/math.summary.json").read_text())
    assert {"accuracy", "format_reward", "answer_reward", "maj@4", "pass@4"} <= set(summary["metrics"])
    rows = [json.loads(line) for line in (tmp_path / "eval/math.jsonl").read_text().splitlines()]
    assert all(len(r["outputs"]) == 4 for r in rows)
    assert rows[0]["prompt"].endswith("Assistant: <think>")  # r1_zero by default for math


def test_eval_is_deterministic_given_a_seed(tmp_path, qwen_dir):
    for name in ("a", "b"):
        assert cli.main(["eval", "--model", str(qwen_dir), "--task", "arithmetic", "--max-examples", "6", "--samples", "3",
                         "--out", str(tmp_path / name), "--resamples", "100", "--seed", "7"]) == 0
    assert (tmp_path / "a/eval/arithmetic.jsonl").read_text() == (tmp_path / "b/eval/arithmetic.jsonl").read_text()


def test_eval_safety_task_and_compare_two_runs(tmp_path, qwen_dir, tiny_dirs):
    for name, model in (("q", qwen_dir), ("l", tiny_dirs["llama"])):
        assert cli.main(["eval", "--model", str(model), "--task", "safety", "--max-examples", "10",
                         "--max-new-tokens", "6", "--out", str(tmp_path / name), "--resamples", "100"]) == 0
    rc = cli.main(["compare", str(tmp_path / "q"), str(tmp_path / "l"), "--task", "safety", "--out", str(tmp_path / "cmp"),
                   "--resamples", "200", "--no-plots"])
    assert rc == 0 and "Verdicts" in (tmp_path / "cmp/report.md").read_text()


def test_eval_run_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["eval", "--run", str(tmp_path), "--task", "arithmetic"]) == 2
    assert "no checkpoints" in capsys.readouterr().err


def test_eval_a_lora_run_loads_base_plus_adapter(tmp_path, qwen_dir):
    from conftest import sft_overrides

    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "lora", **{
        "lora.enabled": "true", "lora.r": 4, "data.eval": "null"})]) == 0
    assert (tmp_path / "lora/checkpoints/step_4/adapter_config.json").exists()
    assert cli.main(["eval", "--run", str(tmp_path / "lora"), "--task", "arithmetic", "--max-examples", "4",
                     "--resamples", "100"]) == 0
    summary = json.loads((tmp_path / "lora/eval/arithmetic.summary.json").read_text())
    assert summary["metrics"]["accuracy"]["n"] == 4


def test_eval_model_accepts_an_adapter_folder(tmp_path, qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.config import LoRAConfig
    from alignlab.models import apply_lora

    policy = apply_lora(AutoModelForCausalLM.from_pretrained(qwen_dir), LoRAConfig(enabled=True, r=4))
    policy.save_pretrained(tmp_path / "adapter")  # adapter_config.json + weights, no config.json
    AutoTokenizer.from_pretrained(qwen_dir).save_pretrained(tmp_path / "adapter")
    assert cli.main(["eval", "--model", str(tmp_path / "adapter"), "--task", "arithmetic", "--max-examples", "8",
                     "--max-new-tokens", "4", "--out", str(tmp_path / "ev"), "--resamples", "100"]) == 0
    assert (tmp_path / "ev/eval/arithmetic.summary.json").exists()
