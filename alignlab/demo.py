"""`alignlab demo`: make-tiny -> SFT -> expert iteration -> GRPO on arithmetic, then evaluate and compare.

The story is the one these methods are used for. SFT sees a deliberately small labelled set
(1,000 problems). Expert iteration and GRPO then learn from the verifier alone, on prompts from
the whole training pool (about 4,500 problems); the held-out problems never appear in any stage.
Every stage is an ordinary run directory. Every model, the untrained base included, is
evaluated on the same 400 held-out problems by `alignlab eval`, and `alignlab compare` writes a
paired statistical report. Everything goes under one folder (default runs/demo), which a second
run starts afresh.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from rich.table import Table

from . import tracking
from .config import EIConfig, GRPOConfig, SFTConfig, load_config
from .tiny import make_tiny

N_EVAL = 400
# Calibrated on the 2-core CPU so that each stage visibly improves on the one before (docs/rl.md).
STAGES = {
    "sft": ["training.total_steps=800", "data.arithmetic.n_train=1000", "training.eval_every=200",
            "training.save_every=0"],
    "ei": ["optim.lr=1e-4", "training.total_steps=4", "ei.questions_per_round=1024", "ei.sft_epochs=2"],
    "grpo": ["optim.lr=5e-5", "training.total_steps=300", "training.eval_every=50", "training.save_every=0"],
}
FAST = {  # --fast: seconds, for the test suite; the numbers mean nothing
    "sft": ["training.total_steps=6", "training.eval_every=3", "data.arithmetic.n_train=64"],
    "ei": ["training.total_steps=1", "ei.questions_per_round=8", "ei.group_size=2"],
    "grpo": ["training.total_steps=2", "training.eval_every=1", "rl.prompts_per_step=4", "rl.group_size=2",
             "training.micro_batch=8"],
}


def plot_stages(runs: dict[str, Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    sft = tracking.read_metrics(runs["sft"])
    ax = axes[0]
    ax.plot([m["step"] for m in sft if "loss/train" in m], [m["loss/train"] for m in sft if "loss/train" in m], lw=0.8,
            label="train loss")
    ax.set_xlabel("SFT step")
    ax.set_ylabel("NLL / token")
    ax2 = ax.twinx()
    ev = [m for m in sft if "eval/exact_match" in m]
    ax2.plot([m["step"] for m in ev], [100 * m["eval/exact_match"] for m in ev], "s--", color="tab:green")
    ax2.set_ylabel("held-out accuracy (%)")
    ax.set_title("1. SFT on 1,000 labelled problems")
    ei = tracking.read_metrics(runs["ei"])
    ax = axes[1]
    ev = [m for m in ei if "eval/accuracy" in m]
    ax.plot([m["step"] for m in ev], [100 * m["eval/accuracy"] for m in ev], "s--", color="tab:green", label="held-out accuracy")
    kept = [m for m in ei if "ei/questions_with_correct_frac" in m]
    ax.plot([m["step"] for m in kept], [100 * m["ei/questions_with_correct_frac"] for m in kept], "o-",
            label="questions with a correct sample")
    ax.set_xlabel("EI round")
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    ax.set_title("2. expert iteration")
    gr = tracking.read_metrics(runs["grpo"])
    ax = axes[2]
    tr = [m for m in gr if "reward/mean" in m]
    r = [100 * m["reward/mean"] for m in tr]
    ax.plot([m["step"] for m in tr], r, lw=0.6, alpha=0.35, color="tab:blue")
    w = min(20, len(r))
    smooth = [sum(r[max(0, i - w + 1) : i + 1]) / len(r[max(0, i - w + 1) : i + 1]) for i in range(len(r))]
    ax.plot([m["step"] for m in tr], smooth, lw=1.5, color="tab:blue", label=f"sample reward (T=1), {w}-step mean")
    ev = [m for m in gr if "eval/accuracy" in m]
    ax.plot([m["step"] for m in ev], [100 * m["eval/accuracy"] for m in ev], "s--", color="tab:green",
            label="held-out accuracy (greedy)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    ax.set_title("3. GRPO")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alignlab demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")
    ap.add_argument("--arch", default="qwen2", choices=["gemma3_text", "qwen2", "qwen3", "llama"])
    ap.add_argument("--fast", action="store_true", help="a few steps per stage (for tests)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    con, t0 = tracking.console, time.time()
    extra = FAST if args.fast else STAGES
    n_eval = 16 if args.fast else N_EVAL
    common = [f"out_dir={out}", "training.resume=never"]

    con.rule("[bold]0. tiny model, built offline")
    base = make_tiny(args.arch, out / f"tiny-{args.arch}")
    con.print(f"{args.arch} model + tokenizer in {base}")

    from .train import ei, grpo, sft

    con.rule("[bold]1. SFT on a small labelled set")
    cfg_sft = load_config(SFTConfig, "sft_tiny", [f"model.path={base}", "name=sft", *common, f"eval.max_examples={n_eval}",
                                                  f"data.arithmetic.n_eval={n_eval}", *extra["sft"]])
    sft.main(cfg_sft)
    sft_ckpt = f"{cfg_sft.run_dir}/checkpoints/step_{cfg_sft.training.total_steps}"

    con.rule("[bold]2. expert iteration: sample, keep what the verifier accepts, SFT")
    cfg_ei = load_config(EIConfig, "ei_tiny", [f"model.path={sft_ckpt}", "name=ei", *common, f"eval.max_examples={n_eval}",
                                               f"task.arithmetic.n_eval={n_eval}", *extra["ei"]])
    ei.main(cfg_ei)
    ei_ckpt = f"{cfg_ei.run_dir}/checkpoints/step_{cfg_ei.training.total_steps}"

    con.rule("[bold]3. GRPO with the exact-answer reward")
    cfg_grpo = load_config(GRPOConfig, "grpo_tiny", [f"model.path={ei_ckpt}", "name=grpo", *common,
                                                     f"eval.max_examples={n_eval}", f"task.arithmetic.n_eval={n_eval}",
                                                     *extra["grpo"]])
    grpo.main(cfg_grpo)

    con.rule("[bold]4. evaluate every stage on the same held-out problems")
    from .eval import compare
    from .eval import run as eval_run

    runs = {"base": out / "base", "sft": cfg_sft.run_dir, "ei": cfg_ei.run_dir, "grpo": cfg_grpo.run_dir}
    for name, run_dir in runs.items():
        src = ["--model", str(base)] if name == "base" else ["--run", str(run_dir)]
        eval_run.main([*src, "--task", "arithmetic", "--max-examples", str(n_eval), "--out", str(run_dir),
                       "--resamples", "2000"])
    summaries = {n: json.loads((d / "eval/arithmetic.summary.json").read_text()) for n, d in runs.items()}

    table = Table(title=f"held-out arithmetic: {n_eval} problems never seen in any stage (greedy, 95% bootstrap CI)")
    for c in ("stage", "what it learned from", "accuracy", "95% CI"):
        table.add_column(c, justify="right" if c != "what it learned from" else "left")
    sources = {"base": "nothing (random init)", "sft": "1,000 labelled problems",
               "ei": "+ its own verified samples", "grpo": "+ verifier reward, group advantages"}
    for name, s in summaries.items():
        m = s["metrics"]["accuracy"]
        table.add_row(name, sources[name], f"{100 * m['mean']:.1f}%", f"[{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]")
    con.print(table)

    con.rule("[bold]5. paired comparison of the stages")
    compare.main([*map(str, runs.values()), "--task", "arithmetic", "--out", str(out / "compare"),
                  "--labels", ",".join(runs), "--resamples", "2000", "--metrics", "accuracy"])
    png = plot_stages(runs, out / "stages.png")
    con.print(f"\nplot: {png}\nreport: {out / 'compare' / 'report.md'} (and report.html)\n"
              f"run directories: {', '.join(str(p) for p in runs.values())}")
    con.print(f"demo finished in {time.time() - t0:.0f} s")
    return 0
