"""`alignlab eval`: generate on a task's examples, grade, write the eval files, print a summary.

    alignlab eval --model tiny:qwen2 --task arithmetic
    alignlab eval --run runs/grpo_tiny --task math --data data/math500.jsonl --samples 4
    alignlab eval --model runs/x/checkpoints/step_100 --task safety      # an adapter folder works too

Writes `<out>/eval/<task>.jsonl` (one row per example: id, prompt, outputs, reference, metrics)
and `<out>/eval/<task>.summary.json` (each metric's mean with a 95% bootstrap CI), the files
`alignlab compare` reads. `--out` defaults to the run directory (with --run) or runs/eval-<model>.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..tasks import TASKS


def resolve_model(model: str | None, run: str | None) -> str:
    """--run DIR -> its latest checkpoint; a folder -> itself; tiny:<arch> / hub ids via models."""
    from ..checkpoint import list_checkpoints
    from ..models import adapter_base, resolve_model_path

    if run:
        ckpts = list_checkpoints(Path(run))
        if not ckpts:
            raise FileNotFoundError(f"--run {run}: no checkpoints/step_N folder inside; evaluate a model with --model")
        return str(ckpts[-1][1])
    if adapter_base(model):  # a LoRA adapter folder: its base is read when loading
        return str(Path(model))
    return resolve_model_path(model)


def load_for_inference(path: str):
    """A full model folder, or a LoRA adapter folder (its base is read from adapter_config.json)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ..models import adapter_chain, fold_adapters, pick_device, resolve_model_path, start_tokenizer

    device = pick_device("auto")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    root, chain = adapter_chain(path)  # an adapter trained on an earlier adapter: fold those, keep the last
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(root), dtype=dtype)
    if chain:
        model = PeftModel.from_pretrained(fold_adapters(model, chain[:-1]), chain[-1])
    return model.to(device).eval(), start_tokenizer(path)


def make_eval_sampler(path: str, args):
    """hf: the model loaded with transformers. vllm: an engine on the folder (an adapter folder: its base,
    with the adapter merged in and pushed once)."""
    from .. import rollout

    if args.backend == "hf":
        model, tok = load_for_inference(path)
        return rollout.HFSampler(model, tok)
    import torch

    from ..config import LoRAConfig, ModelConfig, VLLMConfig
    from ..models import adapter_base, load_tokenizer
    from ..rollout.vllm import VLLMSampler, check_available

    check_available()  # before loading anything
    model, tok = load_for_inference(path) if adapter_base(path) else (None, load_tokenizer(path))
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return VLLMSampler(model, tok, VLLMConfig(gpu_memory_utilization=args.gpu_memory_utilization),
                       model_cfg=ModelConfig(path=path), lora_cfg=LoRAConfig(), dtype=dtype, seed=args.seed)


def rl_task_rows(task, outputs: list[list[str]], ks: tuple[int, ...]) -> list[dict]:
    """Rows for arithmetic / math, graded by the task's own reward (math: r1_zero with math-verify)."""
    from .metrics.math import score_math_samples
    from ..rewards.math import extract_answer

    extract = (lambda o: extract_answer(o) if "<answer>" in o else o.strip()) if task.name == "arithmetic" else None
    rows = []
    for ex, outs in zip(task.eval, outputs):
        metrics, details = score_math_samples(outs, ex["answer"], ks, reward_fn=task.reward_fn, extract=extract)
        rows.append({"id": ex["id"], "prompt": ex["prompt"], "outputs": outs, "reference": ex["answer"],
                     "metrics": metrics, "details": details})
    return rows


def failure_breakdown(rows: list[dict]) -> dict:
    """Per sample: correct; format right but answer wrong; format wrong (then the answer is not graded)."""
    cats = {"correct": 0, "answer_wrong": 0, "format_wrong": 0}
    for r in rows:
        for rw in r["details"]["rewards"]:
            key = "correct" if rw["reward"] >= 1 else ("answer_wrong" if rw["format_reward"] >= 1 else "format_wrong")
            cats[key] += 1
    return cats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alignlab eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder, adapter folder, hub id (online) or tiny:<arch>")
    src.add_argument("--run", help="run directory: evaluates its latest checkpoint, writes into it")
    ap.add_argument("--task", required=True, choices=list(TASKS))
    ap.add_argument("--data", help="JSONL file (default: the task's built-in held-out set)")
    ap.add_argument("--prompt", choices=["plain", "r1_zero", "question_only"], default=None,
                    help="prompt style for arithmetic/math (default: plain / r1_zero)")
    ap.add_argument("--samples", type=int, default=1, help="samples per example (k); k > 1 adds pass@k and maj@k")
    ap.add_argument("--temperature", type=float, default=None, help="default: 0 (greedy) for k=1, else 1.0")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--ops", nargs="+", choices=["+", "-", "*"], default=["+", "-"],
                    help="arithmetic: the operations of the held-out problems (default + and -)")
    ap.add_argument("--out", help="folder that receives eval/<task>.jsonl (default: the run, or runs/eval-<model>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                    help="generation engine: hf (transformers, anywhere) or vllm (CUDA, pip install -e '.[vllm]')")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vllm: share of GPU memory it may take")
    ap.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples for the CIs")
    ap.add_argument("--unsafe-no-sandbox", action="store_true",
                    help="code task only: run model-written code WITHOUT the bubblewrap sandbox (it can then read "
                         "your files, use the network and leave processes behind); default: refuse when bwrap is missing")
    args = ap.parse_args(argv)
    if args.task == "code" and not args.unsafe_no_sandbox:  # refuse before any model loads
        from ..eval.sandbox import sandbox_status

        ok, why = sandbox_status()
        if not ok:
            ap.error(why)

    import torch

    from .. import rollout, tasks
    from ..config import ArithmeticConfig, TaskConfig
    from ..eval.io import eval_paths, write_json, write_jsonl
    from ..eval.scoring import summarize, write_eval

    torch.manual_seed(args.seed)
    path = resolve_model(args.model, args.run)
    out = Path(args.out or args.run or Path("runs") / f"eval-{Path(path).name}")
    k = args.samples
    temperature = args.temperature if args.temperature is not None else (0.0 if k == 1 else 1.0)
    ks = tuple(sorted({1, k}))
    con = Console(stderr=True)

    trainable = TASKS[args.task].trainable  # graded by the task's own reward; else scored by eval.scoring
    if trainable:  # examples and grading first: bad data fails before the model loads
        prompt = args.prompt or ("plain" if args.task == "arithmetic" else "r1_zero")
        data = None if (args.data or "").startswith("builtin:") else args.data  # builtin: the task's own held-out set
        tcfg = TaskConfig(name=args.task, prompt=prompt, eval=data,
                          arithmetic=ArithmeticConfig(n_eval=args.max_examples or 200, ops=args.ops))
        task = tasks.load(tcfg, args.seed)
        task.eval = task.eval[: args.max_examples] if args.max_examples else task.eval
        prompts = [e["prompt"] for e in task.eval]
        max_new = args.max_new_tokens or (8 if args.task == "arithmetic" else 1024)
        stop = task.stop
    else:
        from .data import format_prompt, load_examples

        examples = load_examples(args.task, args.data)[: args.max_examples]
        prompts = [format_prompt(args.task, e) for e in examples]
        max_new, stop = args.max_new_tokens or 256, None

    sampler = make_eval_sampler(path, args)
    con.print(f"evaluating {path} on {len(prompts)} {args.task} examples, {k} sample(s) each, temperature {temperature}, "
              f"{args.backend} backend")
    ro = sampler.generate(prompts, max_new_tokens=max_new, n=k, temperature=temperature, stop=stop, seed=args.seed)
    outputs = [ro.completions[i * k : (i + 1) * k] for i in range(len(prompts))]

    if trainable:
        rows = rl_task_rows(task, outputs, ks)
        summary = summarize(rows, args.seed, n_resamples=args.resamples)
        summary.update(task=args.task, failures=failure_breakdown(rows))
        rows_path, summary_path = eval_paths(out, args.task)
        write_jsonl(rows_path, rows)
        summary["rows_file"] = str(rows_path)
        write_json(summary_path, summary)
    else:
        summary = write_eval(out, args.task, examples, outputs, seed=args.seed, ks=ks, n_resamples=args.resamples,
                             unsafe_no_sandbox=args.unsafe_no_sandbox)
        rows_path, summary_path = eval_paths(out, args.task)
    summary["model"] = path

    table = Table(title=f"{args.task}: {path}")
    for c in ("metric", "mean", "95% CI", "n"):
        table.add_column(c, justify="right")
    for name, m in summary["metrics"].items():
        table.add_row(name, f"{m['mean']:.4f}", f"[{m['ci_low']:.4f}, {m['ci_high']:.4f}]", str(m["n"]))
    con.print(table)
    if "failures" in summary:
        f = summary["failures"]
        total = max(sum(f.values()), 1)
        con.print("samples: " + ", ".join(f"{k_} {v} ({100 * v / total:.1f}%)" for k_, v in f.items()))
    con.print(f"wrote {rows_path} and {summary_path}")
    return 0
