"""`alignlab plan`: will this fit, with which micro-batch, accumulation, learning rate and schedule, and why.

    alignlab plan --model google/gemma-3-1b-it --method lora --task sft --gpu T4 --seq-len 1024
    alignlab plan --model ./my-model-folder --method full --gpu A100-80GB --json
    alignlab plan --model Qwen/Qwen3-0.6B --method lora --gpu L4 --yaml configs/qwen3_lora.yaml
    alignlab plan --model path/to/config.json --method lora --gpu CPU --seq-len 256 --measure

Exit status: 0 it fits, 1 it does not fit even at micro-batch 1 with checkpointing, 2 bad input.
This module does not import torch; ``--measure`` imports it (alignlab.plan.measure).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .arch import PlanError, catalog_names, load_arch
from .hardware import gpu_names, lookup_gpu
from .memory import GiB, OPTIM_IMPLS, OPTIMIZERS, Setup, estimate
from .recommend import Options, choose_precision, make_plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alignlab plan",
        description="Plan memory and hyperparameters for post-training a causal LM on a given accelerator.",
        epilog="Catalog models: " + ", ".join(catalog_names()) + ". GPUs: " + ", ".join(gpu_names()) + ".",
    )
    p.add_argument("--model", required=True, help="catalog name, local model folder, or path to a config.json")
    p.add_argument("--method", default="lora", help="full | lora | qlora (default lora)")
    p.add_argument("--task", default="sft", help="sft | dpo | grpo | ppo (default sft)")
    p.add_argument("--gpu", required=True, help="accelerator name (see the list below), or CPU")
    p.add_argument("--gpu-memory", type=float, default=None, help="override the device memory, GiB")
    p.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs (torchrun ranks); memory is per GPU, "
                   "the target batch is split over them (docs/distributed.md)")
    p.add_argument("--strategy", default="ddp", help="ddp | fsdp2: replicated model, or weights, gradients and "
                   "optimizer states sharded over the GPUs")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence (SFT/DPO; default 1024). RL: prompt + completion")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (compute precision)")
    p.add_argument("--weights-dtype", default="auto",
                   help="auto | fp32 | bf16 | fp16: storage of the (base) weights. auto: fp32 master weights for "
                        "full fine-tuning, the half type for a frozen LoRA base")
    p.add_argument("--master-weights", action="store_true",
                   help="with half weights in full fine-tuning: the optimizer keeps fp32 master copies")
    p.add_argument("--optimizer", default="adamw", help="adamw | adamw_8bit | sgd")
    p.add_argument("--optim-impl", default="auto", help="auto | for-loop | foreach | fused (torch AdamW kernels)")
    p.add_argument("--target-batch", type=int, default=None,
                   help="sequences (DPO: pairs) per optimizer step; default sft 32, dpo 64, grpo 256, ppo 128")
    p.add_argument("--micro-batch", type=int, default=None, help="fix the micro-batch instead of searching")
    p.add_argument("--grad-ckpt", default="auto", help="auto | on | off")
    p.add_argument("--margin", type=float, default=0.85, help="fraction of usable memory to plan for (0.85)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=None, help="default 2 x r")
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--lora-targets", default="all-linear",
                   help="comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,embed_tokens,lm_head "
                        "or all-linear / attn / mlp")
    p.add_argument("--no-double-quant", action="store_true", help="QLoRA without double quantisation")
    p.add_argument("--lr-scaling", default="sqrt", help="sqrt | linear: how the LR follows the effective batch")
    p.add_argument("--base-lr", type=float, default=None, help="override the base learning rate")
    p.add_argument("--base-batch", type=int, default=None, help="batch the base learning rate refers to")
    p.add_argument("--dataset-size", type=int, default=10_000, help="examples (DPO: pairs; RL: prompts)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--loss-impl", default="chunked",
                   help="chunked: alignlab's chunked log-probs (default); full: model(labels=...) full log-softmax")
    p.add_argument("--chunk-tokens", type=int, default=1024)
    p.add_argument("--no-padding", action="store_true", help="batches are packed/unpadded: no attention mask")
    p.add_argument("--attn", default="sdpa", help="sdpa | flash_attention_2")
    p.add_argument("--prompt-len", type=int, default=256, help="RL: prompt tokens")
    p.add_argument("--gen-len", type=int, default=None, help="RL: generated tokens (default seq-len - prompt-len, or 768)")
    p.add_argument("--group-size", type=int, default=None, help="GRPO completions per prompt (default 8)")
    p.add_argument("--no-ref", action="store_true", help="DPO/GRPO/PPO without a reference model")
    p.add_argument("--ref-precomputed", action="store_true", help="DPO: reference log-probs computed beforehand")
    p.add_argument("--no-value-model", action="store_true", help="PPO without a separate value model")
    p.add_argument("--reward-model", action="store_true", help="RL with a learned reward model on the device")
    p.add_argument("--rollout-backend", default="hf", help="RL: hf (generate() in the training process) | vllm "
                   "(a colocated vLLM engine; its gpu_memory_utilization is recommended)")
    p.add_argument("--vllm-gpu-util", type=float, default=None, help="vllm: fix gpu_memory_utilization (0-1)")
    p.add_argument("--vllm-sleep", action="store_true", help="vllm: the engine frees its memory while training")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the plan as JSON")
    out.add_argument("--yaml", nargs="?", const="-", default=None, metavar="PATH",
                     help="write a ready-to-run config for the matching alignlab command (stdout if no PATH)")
    p.add_argument("--measure", action="store_true",
                   help="run real training steps of the planned configuration on the local device and compare")
    p.add_argument("--measure-device", default=None, help="cpu | cuda | mps (default: cuda if present, else cpu)")
    p.add_argument("--measure-layers", type=int, default=None,
                   help="measure a copy of the architecture with this many layers (prediction uses the same)")
    p.add_argument("--measure-steps", type=int, default=1)
    return p


def _setup_from_args(args, arch, gpu, precision: str) -> Setup:
    method, task = args.method, args.task
    for name, val, valid in (("method", method, ("full", "lora", "qlora")), ("task", task, ("sft", "dpo", "grpo", "ppo")),
                             ("grad-ckpt", args.grad_ckpt, ("auto", "on", "off")),
                             ("lr-scaling", args.lr_scaling, ("sqrt", "linear")),
                             ("optimizer", args.optimizer, OPTIMIZERS), ("optim-impl", args.optim_impl, OPTIM_IMPLS),
                             ("loss-impl", args.loss_impl, ("chunked", "full")),
                             ("attn", args.attn, ("sdpa", "flash_attention_2")),
                             ("weights-dtype", args.weights_dtype, ("auto", "fp32", "bf16", "fp16"))):
        if val not in valid:
            raise PlanError(f"unknown --{name} {val!r}; valid: {', '.join(valid)}")
    if not 0 < args.margin <= 1:
        raise PlanError(f"--margin {args.margin} must be in (0, 1]")
    seq = args.seq_len or 1024
    gen = args.gen_len if args.gen_len is not None else (max(1, seq - args.prompt_len) if args.seq_len else 768)
    targets = tuple(arch.resolve_targets(args.lora_targets))
    return Setup(
        method=method, task=task, device=gpu.device, precision=precision, weight_dtype=args.weights_dtype,
        master_weights=args.master_weights, optimizer=args.optimizer, optim_impl=args.optim_impl, seq_len=seq,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha if args.lora_alpha is not None else 2.0 * args.lora_r,
        lora_dropout=args.lora_dropout, lora_targets=targets, double_quant=not args.no_double_quant,
        loss_impl=args.loss_impl, chunk_tokens=args.chunk_tokens, padded=not args.no_padding, attn_impl=args.attn,
        prompt_len=args.prompt_len, gen_len=gen, ref_model=not args.no_ref, ref_precomputed=args.ref_precomputed,
        value_model=not args.no_value_model, reward_model=args.reward_model,
        rollout_backend=args.rollout_backend, vllm_sleep=args.vllm_sleep, gpus=args.gpus, strategy=args.strategy,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message
        return int(exc.code or 0)
    try:
        arch = load_arch(args.model)
        gpu = lookup_gpu(args.gpu, args.gpu_memory)
        precision, why = choose_precision(gpu, args.precision, arch)
        setup = _setup_from_args(args, arch, gpu, precision)
        opts = Options(target_batch=args.target_batch, margin=args.margin, micro_batch=args.micro_batch,
                       grad_ckpt=args.grad_ckpt, lr_scaling=args.lr_scaling, base_lr=args.base_lr,
                       base_batch=args.base_batch, dataset_size=args.dataset_size, epochs=args.epochs,
                       group_size=args.group_size, vllm_util=args.vllm_gpu_util)
        if args.vllm_gpu_util is not None and not 0 < args.vllm_gpu_util < 1:
            raise PlanError(f"--vllm-gpu-util {args.vllm_gpu_util} must be in (0, 1)")
        setup.validate()
        plan = make_plan(arch, gpu, setup, opts, why)
    except PlanError as exc:
        print(f"alignlab plan: error: {exc}", file=sys.stderr)
        return 2

    from . import render

    if args.json:
        print(render.to_json(plan))
    elif args.yaml is not None:
        text = render.to_yaml(plan, args.model)
        if args.yaml == "-":
            print(text, end="")
        else:
            from pathlib import Path

            Path(args.yaml).parent.mkdir(parents=True, exist_ok=True)
            Path(args.yaml).write_text(text)
            print(f"wrote {args.yaml} (predicted peak {plan.est.peak / GiB:.2f} GiB)", file=sys.stderr)
    else:
        render.print_rich(plan)
    if args.measure:
        try:
            return _measure(plan, args)
        except PlanError as exc:
            print(f"alignlab plan: error: {exc}", file=sys.stderr)
            return 2
    return 0 if plan.fits else 1


def _measure(plan, args) -> int:
    """Run the planned step locally; print predicted vs measured peak per phase."""
    if plan.setup.gpus > 1 or plan.setup.strategy == "fsdp2":
        raise PlanError("--measure runs one process on one device; measure without --gpus/--strategy")
    from rich.console import Console
    from rich.table import Table

    from . import measure as M
    from .hardware import _physical_memory_gib

    con = Console(stderr=bool(args.json or args.yaml))
    arch = plan.arch
    if args.measure_layers:
        from dataclasses import replace as dc_replace

        n = args.measure_layers
        arch = dc_replace(arch, layers=n, layer_types=tuple(arch.layer_types[:n]) if len(arch.layer_types) >= n
                          else tuple(arch.layer_types) + (arch.layer_types[-1],) * (n - len(arch.layer_types)))
    import torch

    dev = args.measure_device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = replace(plan.setup, device=dev)
    if dev != "cuda" and s.method == "qlora":
        raise PlanError("QLoRA needs CUDA; measure --method lora on this device")
    if dev == "cpu" and s.precision == "fp16":
        s = replace(s, precision="fp32")
        con.print("[yellow]note[/]: fp16 autocast is not measured on CPU; measuring fp32")
    if s.optimizer == "adamw_8bit" and dev != "cuda":
        s = replace(s, optimizer="adamw")
    if s.task in ("grpo", "ppo"):
        con.print("[yellow]note[/]: measuring the policy update step (forward, backward, optimizer) of the RL plan; "
                  "rollout phases are predicted only")
        s = replace(s, task="sft", seq_len=s.prompt_len + s.gen_len)
    pred = estimate(arch, s)
    avail = _physical_memory_gib() if dev == "cpu" else torch.cuda.get_device_properties(0).total_memory / GiB
    if avail and pred.peak / GiB > 0.8 * avail:
        raise PlanError(f"the planned step needs {pred.peak / GiB:.1f} GiB on {dev} (> 80% of {avail:.1f} GiB); "
                        f"use --measure-layers 2 (same architecture, fewer layers) or a smaller --micro-batch")
    con.print(f"measuring {arch.layers} layers, micro-batch {s.micro_batch} x {s.grad_accum}, seq {s.seq_len}, "
              f"{s.method}, {s.precision} on {dev} ...")
    m = M.measure(arch, s, device=dev, steps=args.measure_steps)
    unit, div = ("GiB", GiB) if pred.peak >= GiB else ("MiB", 1024**2)
    t = Table(title=f"predicted vs measured peak ({m.method} on {m.device})", title_justify="left")
    for c in ("phase", f"predicted {unit}", f"measured {unit}", "error"):
        t.add_column(c, justify="right" if c != "phase" else "left")
    worst = 0.0
    for ph, key in (("forward", "forward"), ("backward", "backward"), ("optimizer", "optimizer")):
        pv = pred.peak_of(key)
        mv = m.phases.get(ph, 0.0)
        err = (pv - mv) / mv if mv else 0.0
        worst = max(worst, abs(err))
        t.add_row(ph, f"{pv / div:.3f}", f"{mv / div:.3f}", f"{100 * err:+.1f}%")
    pk, mk = pred.peak, m.peak
    t.add_row("[bold]peak[/]", f"{pk / div:.3f}", f"{mk / div:.3f}", f"{100 * (pk - mk) / mk:+.1f}%")
    con.print(t)
    con.print(f"{m.seconds_per_step:.2f} s per optimizer step")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
