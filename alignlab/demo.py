"""`alignlab demo`: build a tiny model offline, SFT it on arithmetic, print before/after, plot.

Everything is written under one folder (default runs/demo); a second run starts it afresh.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from rich.table import Table

from . import tracking
from .config import SFTConfig, load_config
from .tiny import make_tiny


def plot_sft(metrics: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(m["step"], m["loss/train"]) for m in metrics if "loss/train" in m]
    ev = [(m["step"], m["eval/loss"], m["eval/exact_match"]) for m in metrics if "eval/loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), lw=1, alpha=0.7, label="train loss (per response token)")
    ax.plot([e[0] for e in ev], [e[1] for e in ev], "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("NLL (nats / token)")
    ax2 = ax.twinx()
    ax2.plot([e[0] for e in ev], [100 * e[2] for e in ev], "s--", color="tab:green", label="held-out exact match")
    ax2.set_ylabel("exact match (%)")
    ax2.set_ylim(0, 100)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alignlab demo")
    ap.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")
    ap.add_argument("--arch", default="qwen2")
    ap.add_argument("overrides", nargs="*", help="SFT config overrides, e.g. training.total_steps=300")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    con = tracking.console
    t0 = time.time()
    con.rule("[bold]1. tiny model (built offline)")
    model_dir = make_tiny(args.arch, out / f"tiny-{args.arch}")
    con.print(f"{args.arch} model + tokenizer in {model_dir}")

    con.rule("[bold]2. SFT on synthetic arithmetic")
    cfg = load_config(SFTConfig, "sft_tiny", [f"model.path={model_dir}", f"out_dir={out}", "name=sft",
                                              "training.resume=never", *args.overrides])
    from .train import sft

    sft.main(cfg)
    metrics = tracking.read_metrics(cfg.run_dir)
    evals = [m for m in metrics if "eval/loss" in m]
    before, after = evals[0], evals[-1]

    table = Table(title=f"held-out arithmetic ({cfg.eval.max_examples} problems never seen in training)")
    table.add_column("model")
    table.add_column("step", justify="right")
    table.add_column("held-out loss", justify="right")
    table.add_column("exact match (greedy)", justify="right")
    table.add_row("untrained", str(before["step"]), f"{before['eval/loss']:.3f}", f"{100 * before['eval/exact_match']:.1f}%")
    table.add_row("after SFT", str(after["step"]), f"{after['eval/loss']:.3f}", f"{100 * after['eval/exact_match']:.1f}%")
    con.print(table)
    png = plot_sft(metrics, out / "sft_curve.png", f"SFT of tiny {args.arch} on arithmetic")
    con.print(f"plot: {png}\nrun directory: {cfg.run_dir} (config.yaml, metrics.jsonl, samples/, checkpoints/)")
    con.print(f"demo finished in {time.time() - t0:.0f} s")
    return 0
