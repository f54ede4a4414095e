"""Where an alignlab training step spends its GPU time: torch.profiler over a few SFT steps.

    python3 bench/gpu.py --only sft_full                 # builds the model and data in --work
    python3 bench/gpu_profile.py                         # then: the kernel table of full SFT
    python3 bench/gpu_profile.py --lora --out prof.txt   # LoRA r=16, the table also written to a file
    python3 bench/gpu_profile.py --smoke                 # tiny, CPU: checks the script

It reuses bench/gpu.py's model (Gemma-3-1B shape) and data, runs alignlab SFT for `--warmup` steps,
then profiles `--steps` steps and prints the kernels by total GPU time, plus the share of GPU time
in four groups (matmuls, attention, the optimizer, everything else), so a slow step names its cause.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, torch
from torch.profiler import ProfilerActivity, profile
a = json.loads(sys.argv[1])
from alignlab import checkpoint
from alignlab.config import SFTConfig, load_config
from alignlab.train import sft
checkpoint.save = lambda *x, **k: None
dev = a["device"]
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
prof = profile(activities=acts)
class Hook:
    def on_step_end(self, ctx, step, row):
        if step == a["warmup"]:
            if dev == "cuda": torch.cuda.synchronize()
            prof.start()
        elif step == a["warmup"] + a["steps"]:
            if dev == "cuda": torch.cuda.synchronize()
            prof.stop()
lora = ["lora.enabled=true", "lora.r=16", "lora.alpha=32", "lora.dropout=0.0"] if a["lora"] else []
cfg = load_config(SFTConfig, "sft_tiny", [
    f"model.path={a['model']}", f"out_dir={a['out']}", "name=profile", f"model.device={dev}",
    "training.precision=bf16", "training.eval_every=0", "training.save_every=0", "training.resume=never",
    "optim.schedule=constant", "optim.warmup_ratio=0", "optim.max_grad_norm=1.0", f"data.train={a['data']}",
    "data.eval=null", f"data.max_seq_len={a['seq']}", "data.format=plain",
    f"training.total_steps={a['warmup'] + a['steps']}", f"training.global_batch_seqs={a['batch']}",
    f"training.micro_batch={a['batch']}", "optim.lr=1e-5"] + lora)
sft.main(cfg, hooks=[Hook()])
ev = list(prof.key_averages())
if dev == "cuda":  # the kernels themselves (device events); else every op's own device time
    kern = [e for e in ev if str(getattr(e, "device_type", "")).endswith("CUDA")]
    ev = kern or ev
attr = "self_device_time_total" if dev == "cuda" else "self_cpu_time_total"
def t(e): return getattr(e, attr, 0) or 0
rows = sorted(((e.key, t(e), e.count) for e in ev), key=lambda r: -r[1])
total = sum(r[1] for r in rows) or 1
def group(name):
    n = name.lower()
    if any(s in n for s in ("gemm", "cutlass", "sm90_xmma", "nvjet", "matmul", "addmm", "mm", "cublas")): return "matmul"
    if any(s in n for s in ("flash", "fmha", "attention", "sdpa", "efficient")): return "attention"
    if any(s in n for s in ("adam", "fused_", "multi_tensor")): return "optimizer"
    return "other"
groups = {}
for name, us, _ in rows:
    groups[group(name)] = groups.get(group(name), 0) + us
print(json.dumps({"steps": a["steps"], "total_ms_per_step": total / 1000 / a["steps"],
                  "groups_ms_per_step": {g: v / 1000 / a["steps"] for g, v in sorted(groups.items(), key=lambda x: -x[1])},
                  "top": [[n[:110], round(us / 1000 / a["steps"], 3), c // a["steps"]] for n, us, c in rows[:30]]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="bench/gpu.py's --work folder (default as gpu.py)")
    ap.add_argument("--smoke", action="store_true", help="bench/gpu.py --smoke's tiny model, CPU")
    ap.add_argument("--lora", action="store_true", help="LoRA r=16 instead of full fine-tuning")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the result (JSON) here")
    args = ap.parse_args()
    work = Path(args.work or f"/tmp/alignlab-gpu-bench{'-smoke' if args.smoke else ''}")
    if not (work / "model-gemma" / "config.json").exists():
        raise SystemExit(f"no model in {work}/model-gemma: run `python3 bench/gpu.py --only sft_full"
                         f"{' --smoke' if args.smoke else ''}` first")
    import torch

    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    spec = {"model": str(work / "model-gemma"), "data": str(work / "sft.jsonl"), "out": str(work / "runs"),
            "device": dev, "lora": args.lora, "warmup": args.warmup, "steps": args.steps,
            "seq": 128 if args.smoke else 1024, "batch": 2 if args.smoke else 8}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"{'LoRA' if args.lora else 'full'} SFT on {dev}: {res['total_ms_per_step']:.1f} ms of "
          f"{'GPU' if dev == 'cuda' else 'CPU'} time per step; by group: "
          + ", ".join(f"{g} {ms:.1f} ms" for g, ms in res["groups_ms_per_step"].items()))
    print(f"{'ms/step':>9} {'calls':>6}  kernel")
    for name, ms, calls in res["top"]:
        print(f"{ms:9.3f} {calls:6d}  {name}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
