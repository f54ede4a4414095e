"""The ddp and fsdp2 code paths on CUDA with NCCL, at world size 1 (one GPU), behind the `gpu` marker.

    pytest -q -m gpu tests/test_gpu_distributed.py        # about a minute on one GPU

One `torchrun --nproc-per-node 1` runs a pipeline of short stages on the tiny model: SFT with ddp and
with fsdp2 in fp32 (their weights must agree), SFT with fsdp2's bf16 mixed precision and CPU offload
(the options only a GPU exercises), DPO with fsdp2 (reference log-probs precomputed through the shards),
and GRPO with fsdp2 (synced generation, a frozen reference). NCCL, `fully_shard` on CUDA, the gradient
all-reduce, torch.distributed.checkpoint's optimizer shards and the gathered HF export all run; what
stays untested on one GPU (several ranks on NCCL, several nodes) is listed in docs/distributed.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent


def test_ddp_and_fsdp2_run_on_nccl_at_world_size_one(tmp_path, qwen_dir):
    prefs = tmp_path / "p.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}) + "\n"
                             for a, b in [(1, 2), (13, 29), (7, 40), (3, 3)]))
    common = [f"model.path={qwen_dir}", "model.device=cuda", "training.total_steps=3", "training.save_every=0",
              "optim.lr=1e-3"]
    sft = ["training.global_batch_seqs=8", "training.micro_batch=4", "data.arithmetic.n_train=64",
           "data.eval=null", "optim.warmup_ratio=0", "training.eval_every=0"]
    fp32 = ["training.precision=fp32"]
    stages = [
        ("sft_ddp", "sft", common + sft + fp32 + ["parallel.strategy=ddp"]),
        ("sft_fsdp2", "sft", common + sft + fp32 + ["parallel.strategy=fsdp2"]),
        ("sft_fsdp2_bf16_offload", "sft", common + sft + [
            "training.precision=bf16", "parallel.strategy=fsdp2", "parallel.fsdp2.mixed_precision=bf16",
            "parallel.fsdp2.cpu_offload=true", "parallel.fsdp2.reshard_after_forward=false"]),
        ("dpo_fsdp2", "dpo", common + [f"data.train={prefs}", "data.eval=null", "training.global_batch_pairs=4",
                                        "training.micro_batch=2", "data.max_seq_len=32", "training.eval_every=0",
                                        "parallel.strategy=fsdp2"]),
        ("grpo_fsdp2", "grpo", common + ["rl.prompts_per_step=4", "rl.group_size=4", "training.micro_batch=8",
                                          "rl.kl_coef=0.05", "sampling.max_new_tokens=8", "eval.max_examples=8",
                                          "eval.max_new_tokens=4", "task.arithmetic.n_eval=8",
                                          "parallel.strategy=fsdp2"]),
    ]
    spec = {"name": "g", "stages": [{"name": n, "kind": k, "config": f"{k}_tiny", "overrides": o} for n, k, o in stages]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                          "-m", "alignlab.cli", "pipeline", "-c", str(tmp_path / "p.yaml"), f"out_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    root = tmp_path / "g"
    from safetensors.torch import load_file

    a = load_file(root / "sft_ddp/checkpoints/step_3/model.safetensors")
    b = load_file(root / "sft_fsdp2/checkpoints/step_3/model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=lambda m: f"{k}: {m}")
    for name in ("sft_fsdp2", "sft_fsdp2_bf16_offload", "dpo_fsdp2", "grpo_fsdp2"):
        ckpt = root / name / "checkpoints/step_3"
        assert (ckpt / "optimizer_dcp" / ".metadata").is_file(), name
        rows = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
        norms = [r["grad/norm"] for r in rows if "grad/norm" in r]
        assert len(norms) == 3 and all(isinstance(x, float) and x == x for x in norms), (name, norms)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(root / "grpo_fsdp2/checkpoints/step_3")
