"""alignlab GRPO vs TRL's GRPOTrainer: same tiny model, prompts, group size, steps, machine.

    pip install -e '.[bench]'        # TRL is needed only here
    python bench/grpo_vs_trl.py      # CPU; --device cuda on a GPU

Both start from the same briefly SFT-trained tiny Qwen2 checkpoint (so rewards vary), sample
`--prompts` prompts x `--group` completions per step from the arithmetic task with the same
exact-answer reward, and use the matching GRPO settings: seq-mean aggregation ("grpo" in TRL),
std-normalised group advantages, one on-policy pass, no KL, temperature 1, no top-k/top-p,
dropout off. Each trainer runs in its own process; peak memory is the process's peak RSS on
CPU (max_memory_allocated on CUDA). Step time excludes the first (warm-up) step.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import require_trl, run_child, sft_start

OURS = r"""
import json, sys, time, resource, torch
from alignlab.config import GRPOConfig, load_config
from alignlab import tracking
from alignlab.train import grpo
a = json.loads(sys.argv[1])
torch.manual_seed(0)
cfg = load_config(GRPOConfig, "grpo_tiny", [f"model.path={a['model']}", f"out_dir={a['out']}", "name=ours",
    f"model.device={a['device']}", f"training.total_steps={a['steps']}", f"rl.prompts_per_step={a['prompts']}",
    f"rl.group_size={a['group']}", f"training.micro_batch={a['prompts'] * a['group']}", f"optim.lr={a['lr']}",
    "optim.max_grad_norm=1.0", "sampling.max_new_tokens=6", "training.eval_every=0", "training.save_every=0",
    "eval.max_examples=1", "training.resume=never", "rl.loss_type=grpo_clip", "rl.aggregation=seq_mean"])
t = time.time(); grpo.main(cfg); total = time.time() - t
rows = [r for r in tracking.read_metrics(cfg.run_dir) if "reward/mean" in r]
step_times = [r["time/rollout"] + r["time/score"] + r["time/train"] for r in rows]
peak = torch.cuda.max_memory_allocated() / 2**30 if a["device"] == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"step_s": sum(step_times[1:]) / max(1, len(step_times) - 1), "peak_gib": peak,
                  "rewards": [r["reward/mean"] for r in rows], "total_s": total}))
"""

THEIRS = r"""
import json, sys, time, resource, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from alignlab.config import TaskConfig
from alignlab import tasks
from alignlab.tasks.arithmetic import arithmetic_reward
a = json.loads(sys.argv[1])
torch.manual_seed(0)
task = tasks.load(TaskConfig(name="arithmetic"), seed=0)
rows = [ex for step in range(a["steps"]) for ex in task.sample_train(a["prompts"], step)]
ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
def reward(completions, answer, **kw):
    return [arithmetic_reward(c.replace("<|im_end|>", ""), g)["reward"] for c, g in zip(completions, answer)]
class Timer(TrainerCallback):
    def __init__(self): self.t, self.steps = None, []
    def on_step_begin(self, args, state, control, **kw): self.t = time.time()
    def on_step_end(self, args, state, control, **kw): self.steps.append(time.time() - self.t)
tok = AutoTokenizer.from_pretrained(a["model"]); tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
args = GRPOConfig(output_dir=a["out"] + "/trl", per_device_train_batch_size=a["prompts"] * a["group"],
    num_generations=a["group"], max_completion_length=6, learning_rate=a["lr"], max_steps=a["steps"],
    lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0, beta=0.0, loss_type="grpo",
    scale_rewards="group", num_iterations=1, temperature=1.0, top_p=1.0, top_k=0, logging_steps=1, report_to=[],
    save_strategy="no", use_cpu=a["device"] == "cpu", bf16=False, fp16=False, disable_dropout=True, seed=0,
    shuffle_dataset=False, dataloader_num_workers=0)
timer = Timer()
trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
t = time.time(); trainer.train(); total = time.time() - t
hist = [h["reward"] for h in trainer.state.log_history if "reward" in h]
peak = torch.cuda.max_memory_allocated() / 2**30 if a["device"] == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"step_s": sum(timer.steps[1:]) / max(1, len(timer.steps) - 1), "peak_gib": peak, "rewards": hist,
                  "total_s": total}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="folder for the SFT start point and outputs (default: a temp dir)")
    args = ap.parse_args()
    require_trl()
    from rich.console import Console
    from rich.table import Table

    work = Path(args.work or tempfile.mkdtemp(prefix="grpo-bench-"))
    start = sft_start(work, args.sft_steps, args.device)
    spec = dict(model=str(start), out=str(work), steps=args.steps, prompts=args.prompts, group=args.group, lr=args.lr,
                device=args.device)
    import shutil

    shutil.rmtree(work / "ours", ignore_errors=True)  # the benchmark owns these folders
    shutil.rmtree(work / "trl", ignore_errors=True)
    ours, theirs = run_child(OURS, spec), run_child(THEIRS, spec)
    last = lambda r: sum(r[-5:]) / len(r[-5:])  # noqa: E731
    t = Table(title=f"GRPO, tiny Qwen2, {args.prompts} prompts x {args.group} samples, {args.steps} steps, {args.device}")
    for c in ("", "step time (s)", "peak memory (GiB)", "mean reward, last 5 steps", "total (s)"):
        t.add_column(c, justify="right")
    for name, r in (("alignlab", ours), ("TRL GRPOTrainer", theirs)):
        t.add_row(name, f"{r['step_s']:.3f}", f"{r['peak_gib']:.2f}", f"{last(r['rewards']):.3f}", f"{r['total_s']:.1f}")
    t.add_row("ratio (TRL / alignlab)", f"{theirs['step_s'] / ours['step_s']:.2f}x", f"{theirs['peak_gib'] / ours['peak_gib']:.2f}x", "", "")
    Console(width=120).print(t)


if __name__ == "__main__":
    main()
