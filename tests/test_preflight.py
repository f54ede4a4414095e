"""`alignlab preflight`: masks, accumulation invariance, the memory probe, time; go/no-go and exit codes."""
from __future__ import annotations

import json

import pytest

from alignlab import cli, data, losses, preflight

from conftest import sft_overrides


def _run(capsys, cfg: str, overrides: list[str], *flags: str) -> tuple[int, dict]:
    rc = preflight.main(["-c", cfg, *overrides, "--json", "--steps", "1", *flags])
    return rc, json.loads(capsys.readouterr().out)


def _sft(tmp_path, qwen_dir) -> list[str]:
    return sft_overrides(tmp_path, qwen_dir, name="pf", **{"data.arithmetic.n_train": 32})


@pytest.fixture(scope="module")
def sft_report(qwen_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pf")
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        rc = preflight.main(["-c", "sft_tiny", *_sft(tmp, qwen_dir), "--json", "--steps", "1"])
    finally:
        capture.undo()
    return rc, json.loads(buf.getvalue()), tmp


def test_good_sft_config_is_go_and_json_parses(sft_report):
    rc, rep, tmp = sft_report
    assert rc == 0 and rep["go"] is True
    assert [rep["checks"][k]["status"] for k in ("masks", "memory", "gradient", "time")] == ["ok"] * 4
    assert len(rep["examples"]) == 3 and all("[[" in e["text"] and e["trained_tokens"] > 0 for e in rep["examples"])
    t = rep["checks"]["time"]["data"]
    assert t["per_step_s"] > 0 and t["total_steps"] == 4 and t["total_s"] == pytest.approx(4 * t["per_step_s"])
    assert not list(tmp.iterdir()), "preflight must not write a run directory"


def test_memory_probe_reports_measured_and_predicted(sft_report):
    mem = sft_report[1]["checks"]["memory"]["data"]
    assert mem["measured_bytes"] > 0 and mem["predicted_bytes"] > 0
    assert mem["micro_batch"] == 4 and mem["seq_len"] >= 8  # the longest examples, at the configured micro-batch
    assert "MiB measured" in sft_report[1]["checks"]["memory"]["reason"]


def test_gradient_check_compares_two_real_splits(sft_report):
    g = sft_report[1]["checks"]["gradient"]["data"]
    assert g["micro_batches"] == [4, 1] and g["grad_norm"] > 0 and g["max_rel_diff"] <= g["tolerance"] == 1e-5


def test_all_zero_response_mask_is_refused_naming_the_example(tmp_path, qwen_dir, capsys, monkeypatch):
    render = data.render

    def template_swallows_response(example, tokenizer, fmt):  # a chat template that puts the reply in the prompt
        prompt, response = render(example, tokenizer, fmt)
        return (prompt + response, "") if example["where"].endswith("#5") else (prompt, response)

    monkeypatch.setattr(data, "render", template_swallows_response)
    rc, rep = _run(capsys, "sft_tiny", _sft(tmp_path, qwen_dir), "--examples", "1")
    assert rc == 1 and rep["go"] is False
    masks = rep["checks"]["masks"]
    assert masks["status"] == "fail" and len(masks["data"]["empty"]) == 1  # #5: not among the shown
    assert "builtin:arithmetic#5" in masks["reason"] and "chat template" in masks["reason"]
    assert rep["checks"]["gradient"]["status"] == "skipped"


def test_empty_response_in_a_data_file_is_refused_with_file_and_line(tmp_path, qwen_dir, capsys):
    f = tmp_path / "train.jsonl"
    f.write_text('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": ""}\n')
    rc = cli.main(["preflight", "-c", "sft_tiny", *_sft(tmp_path, qwen_dir), f"data.train={f}", "data.eval=null"])
    assert rc == 2 and f"{f}:2" in capsys.readouterr().err


def test_gradient_check_catches_broken_accumulation(tmp_path, qwen_dir, capsys, monkeypatch):
    sft_nll = losses.sft_nll

    def per_micro_batch_mean(logps, mask, normalizer, n_tokens, n_seqs):  # the classic bug: each micro-batch's own count
        return sft_nll(logps, mask, normalizer, int(mask.sum()), logps.shape[0])

    monkeypatch.setattr(losses, "sft_nll", per_micro_batch_mean)
    rc, rep = _run(capsys, "sft_tiny", _sft(tmp_path, qwen_dir), "--examples", "0")
    g = rep["checks"]["gradient"]
    assert rc == 1 and g["status"] == "fail" and g["data"]["max_rel_diff"] > 1e-3, g
    assert "not normalised over the whole step" in g["reason"]


def test_dpo_config_is_go(tmp_path, qwen_dir, capsys):
    over = [f"model.path={qwen_dir}", f"out_dir={tmp_path}", "data.n_train=16", "data.n_eval=4",
            "training.global_batch_pairs=4", "training.micro_batch=2", "training.total_steps=3"]
    rc, rep = _run(capsys, "dpo_tiny", over, "--examples", "1")
    assert rc == 0 and rep["go"] is True, rep["checks"]
    assert [e["side"] for e in rep["examples"]] == ["chosen", "rejected"]
    assert rep["checks"]["gradient"]["data"]["micro_batches"] == [2, 1]
    assert rep["checks"]["memory"]["data"]["predicted_bytes"] > 0
    assert not list(tmp_path.iterdir())


def test_unsupported_algorithm_and_bad_config_exit_2(capsys):
    assert cli.main(["preflight", "-c", "grpo_tiny"]) == 2
    assert "preflight supports sft, dpo" in capsys.readouterr().err
    assert cli.main(["preflight", "-c", "sft_tiny", "optim.lrr=1"]) == 2
    assert preflight.main(["-c", "sft_tiny", "optim.lrr=1", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["go"] is False


def test_plain_report_marks_trained_tokens(capsys):
    report = {"algorithm": "sft", "config": "x", "examples": [
        {"where": "f:1", "side": None, "runs": [("1+1=", False), ("2</s>", True)], "text": "1+1=[[2</s>]]",
         "trained_tokens": 2, "tokens": 5}], "checks": [preflight.Check("masks", "ok", "fine")]}
    preflight.print_report(report)
    out = capsys.readouterr().out
    assert "1+1=[[2</s>]]" in out and "GO" in out and "NO-GO" not in out
