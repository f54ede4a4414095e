"""Full fine-tuning vs LoRA vs ReLoRA vs rank-1 merging, and adapter blending, on the tiny arithmetic task.

    python bench/lora_study.py --out runs/lora_study   # ~10 min on an idle 2-core CPU (32 min measured on a loaded one)

One command, rerunnable (every run resumes or is skipped when complete; the numbers are seeded), all
through alignlab's own commands, in-process:

1. base: a tiny random Qwen2 (tiny:qwen2) fully fine-tuned on multiplication only ("a*b=") for
   --base-steps steps. It learns the format (digits, then end of text), not addition or subtraction.
2. methods: from the base, the same --steps steps on "+" and "-" (same data order, batch, seed), each with
   analysis.rank_every: full fine-tuning; LoRA r=8; ReLoRA r=8 (4 resets); rank-1 merging (a fresh
   rank-1 adapter every step). Held-out accuracy (200 problems, greedy) with `alignlab eval`, then
   `alignlab compare` of the five (base included): McNemar + Tango CIs, Holm-corrected.
3. the effective rank of ΔW over steps: `alignlab analyze rank` (erank and numerical rank figures).
4. blending: a LoRA r=8 adapter trained on "+" only and one on "-" only (same steps), blended by every
   `alignlab blend` method (weights 1, 1), each scored on "+" and on "-" next to each adapter alone and
   the base, with `alignlab compare` per task.

Writes OUT/summary.md (the tables of docs/lora.md) and OUT/summary.json. Learning rates are fixed per
method (below), not tuned: the comparison is at one setting. (One pilot only: rank-1 at lr 3e-3 was far
behind lr 1e-2, loss 3.8 vs 2.3 after about 100 steps.)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alignlab import cli  # noqa: E402

METHODS = {  # name -> overrides on top of the shared ones
    "full": ["lora.enabled=false", "optim.lr=1e-3"],
    "lora_r8": ["lora.enabled=true", "lora.r=8", "lora.alpha=16", "optim.lr=3e-3"],
    "relora_r8": ["lora.enabled=true", "lora.r=8", "lora.alpha=16", "optim.lr=3e-3", "relora.enabled=true",
                  "relora.reset_every={cycle}", "relora.restart_warmup_steps=5", "relora.prune=0.9"],
    "rank1": ["lora.enabled=true", "lora.r=1", "lora.alpha=1", "optim.lr=1e-2", "rank1.enabled=true",
              "rank1.merge_every=1"],
}
BLENDS = {"linear": [], "cat": [], "svd": ["--rank", "8"], "ties": ["--density", "0.5"],
          "dare": ["--density", "0.5", "--seed", "0"], "magnitude": ["--density", "0.5"]}


def call(args: list[str]) -> None:
    print("$ alignlab " + " ".join(args), flush=True)
    rc = cli.main(args)
    if rc != 0:
        raise SystemExit(f"alignlab {args[0]} failed with exit code {rc}")


def sft(out: Path, name: str, steps: int, overrides: list[str]) -> Path:
    ckpt = out / name / "checkpoints" / f"step_{steps}"
    if not ckpt.is_dir():
        call(["sft", "-c", "sft_tiny", f"out_dir={out}", f"name={name}", f"training.total_steps={steps}",
              "training.eval_every=0", "training.save_every=0", "data.eval=null", "training.log_every=50", *overrides])
    return ckpt


def evaluate(model: Path, out: Path, ops: list[str], n: int) -> dict:
    summary = out / "eval" / "arithmetic.summary.json"
    if not summary.is_file():
        call(["eval", "--model", str(model), "--task", "arithmetic", "--ops", *ops, "--max-examples", str(n),
              "--out", str(out), "--resamples", "2000"])
    return json.loads(summary.read_text())["metrics"]["accuracy"]


def fmt(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lora_study")
    ap.add_argument("--base-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=400, help="steps of every method and of each blending adapter")
    ap.add_argument("--eval-examples", type=int, default=200)
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()  # adapters record their base's path: absolute, so any folder can load them
    t0 = time.time()
    n = args.eval_examples

    base = sft(out, "base", args.base_steps, ["data.arithmetic.ops=['*']"])
    shared = [f"model.path={base}", "data.arithmetic.ops=['+','-']", f"analysis.rank_every={max(1, args.steps // 10)}"]
    cycle = max(1, args.steps // 4)
    runs = {}
    for name, extra in METHODS.items():
        sft(out, name, args.steps, shared + [x.format(cycle=cycle) for x in extra])
        runs[name] = out / name
    acc = {"base": evaluate(base, out / "eval_base", ["+", "-"], n)}
    for name in METHODS:
        acc[name] = evaluate(out / name / "checkpoints" / f"step_{args.steps}", out / name, ["+", "-"], n)
    call(["compare", str(out / "eval_base"), *(str(runs[m]) for m in METHODS), "--task", "arithmetic",
          "--labels", ",".join(["base", *METHODS]), "--out", str(out / "compare_methods"), "--resamples", "2000"])
    for measure in ("erank", "numerical_rank"):
        call(["analyze", "rank", *(str(runs[m]) for m in METHODS), "--labels", ",".join(METHODS), "--measure", measure,
              "--out", str(out / "figures" / measure)])

    # blending: one adapter per operation, then every method
    lora = shared[:1] + ["lora.enabled=true", "lora.r=8", "lora.alpha=16", "optim.lr=3e-3"]
    adapters = {"add": sft(out, "adapter_add", args.steps, lora + ["data.arithmetic.ops=['+']"]),
                "sub": sft(out, "adapter_sub", args.steps, lora + ["data.arithmetic.ops=['-']"])}
    models = {"base": base, "add only": adapters["add"], "sub only": adapters["sub"]}
    for method, extra in BLENDS.items():
        folder = out / "blend" / method
        if not (folder / "adapter_config.json").is_file():
            call(["blend", "--adapters", str(adapters["add"]), str(adapters["sub"]), "--method", method, *extra,
                  "--out", str(folder)])
        models[f"blend {method}"] = folder
    blend_acc: dict[str, dict] = {}
    for task, ops in (("add", ["+"]), ("sub", ["-"])):
        dirs = []
        for label, model in models.items():
            d = out / f"eval_{task}" / label.replace(" ", "_")
            blend_acc.setdefault(label, {})[task] = evaluate(model, d, ops, n)
            dirs.append(d)
        call(["compare", *map(str, dirs), "--task", "arithmetic", "--labels", ",".join(models), "--out",
              str(out / f"compare_blend_{task}"), "--resamples", "2000", "--no-plots"])

    ranks = {}
    for name in METHODS:
        rows = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
        last = [r for r in rows if "rank/q_proj/erank" in r][-1]
        ranks[name] = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("rank/")}
    lines = [f"# LoRA study ({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s, python {platform.python_version()},"
             f" torch {__import__('torch').__version__}, {args.steps} steps, {n} held-out problems)", "",
             "| method | held-out accuracy (+ and -) [95% CI] | erank q_proj | erank down_proj | numerical rank q_proj |",
             "|---|---|---|---|---|"]
    for name, m in acc.items():
        r = ranks.get(name, {})
        lines.append(f"| {name} | {fmt(m)} | {r.get('q_proj/erank', 0):.1f} | {r.get('down_proj/erank', 0):.1f} | "
                     f"{r.get('q_proj/numerical_rank', 0):.0f} |")
    lines += ["", "| model | accuracy on + [95% CI] | accuracy on - [95% CI] |", "|---|---|---|"]
    for label, m in blend_acc.items():
        lines.append(f"| {label} | {fmt(m['add'])} | {fmt(m['sub'])} |")
    lines += ["", f"comparisons: {out / 'compare_methods' / 'report.md'}, {out / 'compare_blend_add' / 'report.md'}, "
              f"{out / 'compare_blend_sub' / 'report.md'}; figures: {out / 'figures'}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"methods": acc, "ranks": ranks, "blends": blend_acc,
                                                  "seconds": time.time() - t0}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
