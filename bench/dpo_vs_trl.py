"""alignlab DPO vs TRL's DPOTrainer: same tiny model, pairs, batch, steps, machine.

    pip install -e '.[bench]'        # TRL is needed only here
    python bench/dpo_vs_trl.py       # CPU; --device cuda on a GPU

Both start from the same briefly SFT-trained tiny Qwen2 checkpoint, train sigmoid DPO (beta 0.1)
on the same built-in arithmetic preference pairs in the same order, with the same batch of
`--pairs` pairs per step, constant lr, grad clip 1.0 and dropout off. The reference is the
initial policy. alignlab precomputes it in one pass (one model in memory); TRL is run both ways:
a second reference model (its default), and `precompute_ref_log_probs=True`. Each run is its own
process. Peak memory is the process's peak RSS on CPU, max_memory_allocated on CUDA. Step time
excludes the first step. The step-0 losses must agree (both log 2, the policy being the
reference).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from _common import require_trl, run_child, sft_start

OURS = r"""
import json, sys, time, resource, torch
from alignlab.config import DPOConfig, load_config
from alignlab import tracking
from alignlab.train import dpo
a = json.loads(sys.argv[1])
cfg = load_config(DPOConfig, "dpo_tiny", [f"model.path={a['model']}", f"out_dir={a['out']}", "name=ours",
    f"model.device={a['device']}", f"training.total_steps={a['steps']}", f"training.global_batch_pairs={a['pairs']}",
    f"training.micro_batch={a['pairs']}", f"optim.lr={a['lr']}", "optim.schedule=constant", "optim.warmup_ratio=0",
    "optim.weight_decay=0.0", "data.eval=null", f"data.train={a['data']}", "training.save_every=0", "training.resume=never",
    "dpo.reference=precomputed"])
t = time.time(); dpo.main(cfg); total = time.time() - t
rows = [r for r in tracking.read_metrics(cfg.run_dir) if "loss/train" in r]
peak = torch.cuda.max_memory_allocated() / 2**30 if a["device"] == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
times = [r["time/step"] for r in rows]
print(json.dumps({"step_s": sum(times[1:]) / max(1, len(times) - 1), "peak_gib": peak, "losses": [r["loss/train"] for r in rows],
                  "total_s": total}))
"""

THEIRS = r"""
import json, sys, time, resource, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer
a = json.loads(sys.argv[1])
rows = [json.loads(l) for l in open(a["data"])]
ds = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"] + "<|im_end|>", "rejected": r["rejected"] + "<|im_end|>"}
                        for r in rows])
class Timer(TrainerCallback):
    def __init__(self): self.t, self.steps = None, []
    def on_step_begin(self, args, state, control, **kw): self.t = time.time()
    def on_step_end(self, args, state, control, **kw): self.steps.append(time.time() - self.t)
tok = AutoTokenizer.from_pretrained(a["model"])
model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
args = DPOConfig(output_dir=a["out"] + "/trl", per_device_train_batch_size=a["pairs"], learning_rate=a["lr"],
    max_steps=a["steps"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.1,
    loss_type=["sigmoid"], max_length=32, precompute_ref_log_probs=a["precompute"], logging_steps=1, report_to=[],
    save_strategy="no", use_cpu=a["device"] == "cpu", bf16=False, fp16=False, disable_dropout=True, seed=0,
    dataloader_num_workers=0)
timer = Timer()
trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
t = time.time(); trainer.train(); total = time.time() - t
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
peak = torch.cuda.max_memory_allocated() / 2**30 if a["device"] == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"step_s": sum(timer.steps[1:]) / max(1, len(timer.steps) - 1), "peak_gib": peak, "losses": losses,
                  "total_s": total}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    require_trl()
    from rich.console import Console
    from rich.table import Table

    from alignlab.tasks.preferences import arithmetic_pairs

    work = Path(args.work or tempfile.mkdtemp(prefix="dpo-bench-"))
    start = sft_start(work, args.sft_steps, args.device)
    data = work / "pairs.jsonl"  # the same pairs in the same order for both (no shuffling: one epoch is enough)
    pairs = arithmetic_pairs(args.steps * args.pairs, seed=0, split="train")
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    for d in ("ours", "trl"):
        shutil.rmtree(work / d, ignore_errors=True)
    spec = dict(model=str(start), out=str(work), steps=args.steps, pairs=args.pairs, lr=args.lr, device=args.device,
                data=str(data), precompute=False)
    ours = run_child(OURS, spec)
    theirs = run_child(THEIRS, spec)
    theirs_pre = run_child(THEIRS, {**spec, "precompute": True})
    t = Table(title=f"sigmoid DPO, tiny Qwen2, {args.pairs} pairs/step, {args.steps} steps, {args.device}")
    for c in ("", "step time (s)", "peak memory (GiB)", "loss at step 1", "loss at last step"):
        t.add_column(c, justify="right")
    for name, r in (("alignlab (precomputed reference)", ours), ("TRL DPOTrainer (reference model)", theirs),
                    ("TRL DPOTrainer (precompute_ref_log_probs)", theirs_pre)):
        t.add_row(name, f"{r['step_s']:.3f}", f"{r['peak_gib']:.2f}", f"{r['losses'][0]:.6f}", f"{r['losses'][-1]:.4f}")
    t.add_row("ratio TRL / alignlab", f"{theirs['step_s'] / ours['step_s']:.2f}x / {theirs_pre['step_s'] / ours['step_s']:.2f}x",
              f"{theirs['peak_gib'] / ours['peak_gib']:.2f}x / {theirs_pre['peak_gib'] / ours['peak_gib']:.2f}x", "", "")
    Console(width=130).print(t)


if __name__ == "__main__":
    main()
