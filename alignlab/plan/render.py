"""Output of a plan: a rich table, a JSON document, or a ready-to-run YAML config."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .memory import GiB, weights_by_dtype
from .recommend import Plan


def _g(x: float) -> str:
    return f"{x / GiB:.2f}"


def plan_dict(plan: Plan) -> dict[str, Any]:
    e, s = plan.est, plan.setup
    return {
        "model": plan.arch.summary(),
        "gpu": {"name": plan.gpu.name, "memory_gib": plan.gpu.memory_gib, "overhead_gib": plan.gpu.overhead_gib,
                "bf16": plan.gpu.bf16, "device": plan.gpu.device},
        "setup": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
        "resolved": e.resolved,
        "params": e.params,
        "fits": plan.fits,
        "budget_gib": plan.budget / GiB,
        "peak_gib": e.peak / GiB,
        "peak_phase": e.peak_phase.name,
        "terms": {k: t.as_dict() for k, t in e.terms.items()},
        "phases": [{"name": p.name, "gib": p.total / GiB, "parts_gib": {k: v / GiB for k, v in p.parts.items()}}
                   for p in e.phases],
        "activation_bytes_per_token_per_layer": e.per_layer_token_bytes,
        "weights_by_dtype_gib": {k: v / GiB for k, v in weights_by_dtype(plan.arch, s.double_quant).items()},
        "recommendations": [{"key": r.key, "value": r.value, "reason": r.reason} for r in plan.recs],
        "warnings": plan.warnings,
        "notes": list(plan.arch.notes),
    }


def to_json(plan: Plan) -> str:
    return json.dumps(plan_dict(plan), indent=2, default=str)


def to_yaml(plan: Plan, model_path: str) -> str:
    """A config that the matching alignlab command loads as it is (`alignlab <task> -c FILE`).

    The planner's sequences per forward are training.micro_batch in every schema; its sequences per
    optimizer step map onto sft training.global_batch_seqs, dpo training.global_batch_pairs, grpo
    rl.prompts_per_step x rl.group_size, and ppo ppo.rollout_size with ppo.minibatch_seqs = the
    micro-batch (one forward per optimizer step). The rollout batch becomes the prompts per
    generate() call (sampling.batch_size)."""
    import yaml

    s = plan.setup
    lora = s.method in ("lora", "qlora")
    dtype = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[s.weight_dtype]
    name = f"{model_path.rstrip('/').split('/')[-1]}-{s.task}-{s.method}".replace(" ", "_").replace("(", "").replace(")", "")
    eff = s.micro_batch * s.grad_accum * s.gpus  # global sizes; micro-batches are per GPU
    cfg: dict[str, Any] = {
        "name": name,
        "model": {"path": model_path, "dtype": dtype, "gradient_checkpointing": bool(s.grad_ckpt),
                  "attn_implementation": s.attn_impl},
        "lora": {"enabled": lora, "r": s.lora_r, "alpha": float(s.lora_alpha), "dropout": float(s.lora_dropout),
                 "target_modules": list(s.lora_targets), "qlora": s.method == "qlora"},
        "optim": {"lr": plan.rec("lr"), "weight_decay": plan.rec("weight_decay"), "betas": plan.rec("adam_betas"),
                  "eps": plan.rec("adam_eps"), "max_grad_norm": plan.rec("max_grad_norm"), "schedule": "cosine",
                  "warmup_ratio": plan.rec("warmup_ratio"), "min_lr_ratio": plan.rec("min_lr_ratio")},
    }
    training: dict[str, Any] = {"total_steps": plan.rec("total_steps"), "precision": s.precision}
    if s.task == "sft":
        training.update(global_batch_seqs=eff)
        cfg["data"] = {"max_seq_len": s.seq_len}
    elif s.task == "dpo":
        training.update(global_batch_pairs=eff)
        cfg["data"] = {"max_seq_len": s.seq_len}
        cfg["dpo"] = {"beta": plan.rec("dpo_beta"), "reference": "precomputed" if s.ref_precomputed else "auto"}
    else:
        rb = plan.rec("rollout_batch")
        group = plan.rec("group_size") if s.task == "grpo" else 1
        cfg["sampling"] = {"max_new_tokens": s.gen_len, "batch_size": max(1, rb // group)}
        if s.rollout_backend == "vllm":
            cfg["sampling"].update(backend="vllm", vllm={"gpu_memory_utilization": plan.rec("vllm_gpu_memory_utilization"),
                                                         "sleep": bool(s.vllm_sleep),
                                                         "max_model_len": s.prompt_len + s.gen_len})
        if s.task == "grpo":
            cfg["rl"] = {"prompts_per_step": plan.rec("prompts_per_step"), "group_size": group,
                         "kl_coef": plan.rec("kl_coef")}
        else:
            cfg["ppo"] = {"rollout_size": eff, "minibatch_seqs": s.micro_batch,
                          "critic": "separate" if s.value_model else "shared"}
            if not s.ref_model:
                cfg["ppo"]["kl_coef"] = 0.0
    training["micro_batch"] = s.micro_batch  # rows per forward in every schema
    cfg["training"] = training
    several = s.gpus > 1 or s.strategy == "fsdp2"
    if several:
        cfg["parallel"] = {"strategy": s.strategy}
    run = (f"torchrun --nproc-per-node {s.gpus} -m alignlab.cli {s.task} -c FILE" if several
           else f"alignlab {s.task} -c FILE")
    head = (f"# alignlab {s.task} config written by `alignlab plan` for {f'{s.gpus} x ' if several else ''}"
            f"{plan.gpu.name}: predicted peak {plan.est.peak / GiB:.2f} GiB of a {plan.budget / GiB:.2f} GiB budget"
            f"{' per GPU' if several else ''} ({plan.est.peak_phase.name}).\n"
            f"# Run it with: {run} (add task/data keys for your dataset).\n")
    if s.task in ("grpo", "ppo"):
        head += (f"# Prompts are assumed <= {s.prompt_len} tokens; the planner sized the KV cache for "
                 f"{s.prompt_len} + {s.gen_len} tokens per sequence.\n")
    return head + yaml.safe_dump(cfg, sort_keys=False)


def _show(v: Any) -> str:
    from .memory import ALL_LINEAR

    if isinstance(v, list) and tuple(v) == ALL_LINEAR:
        return "all 7 projections"
    if isinstance(v, float) and v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return str(v)


def print_rich(plan: Plan, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    a, e, s = plan.arch, plan.est, plan.setup
    pc = e.params
    several = s.gpus > 1 or s.strategy == "fsdp2"
    con.print(f"[bold]alignlab plan[/]: {a.name} | {s.method} | {s.task} | "
              f"{f'{s.gpus} x ' if several else ''}{plan.gpu.label}{f' ({s.strategy}, memory per GPU)' if several else ''} | "
              f"seq {s.seq_len if s.task in ('sft', 'dpo') else s.prompt_len + s.gen_len} | {s.precision}")
    con.print(f"  {a.model_type}: {a.layers} layers, hidden {a.hidden}, heads {a.heads}/{a.kv_heads} kv x {a.head_dim}, "
              f"MLP {a.intermediate}, vocab {a.vocab:,}{', tied' if a.tied else ''}"
              + (f", sliding window {a.sliding_window} on {a.n_sliding}/{a.layers} layers" if a.n_sliding else ""))
    con.print(f"  parameters: {pc['total']:,} total = embedding {pc['embedding']:,} + {a.layers} x {pc['per_layer']:,} "
              f"per layer + norm {pc['final_norm']:,}" + (f" + head {pc['lm_head']:,}" if pc["lm_head"] else "")
              + f"; trainable {pc['trainable']:,} ({100 * pc['trainable'] / pc['total']:.2f}%)")
    for n in a.notes:
        con.print(f"  [yellow]note[/]: {n}")

    t = Table(title="memory terms", show_lines=False, title_justify="left")
    t.add_column("term")
    t.add_column("GiB", justify="right")
    t.add_column("formula", overflow="fold")
    for kind in ("persistent", "activation", "transient"):
        for term in e.terms.values():
            if term.kind == kind and (term.bytes > 0 or term.key == "ref_weights"):
                t.add_row(term.label, _g(term.bytes), term.formula)
    con.print(t)

    per_tok = e.per_layer_token_bytes
    if per_tok:
        pt = Table(title="activations per layer per token (average over layers)", title_justify="left")
        pt.add_column("term")
        pt.add_column("bytes", justify="right")
        for k, v in sorted(per_tok.items(), key=lambda kv: -kv[1]):
            pt.add_row(k, f"{v:,.0f}")
        pt.add_row("[bold]total[/]", f"[bold]{sum(per_tok.values()):,.0f}[/]")
        con.print(pt)

    ph = Table(title=f"peak by phase (budget {plan.budget / GiB:.2f} GiB = {plan.gpu.memory_gib:.1f} GiB - "
                     f"{plan.gpu.overhead_gib} GiB framework overhead, x margin)", title_justify="left")
    ph.add_column("phase")
    ph.add_column("GiB", justify="right")
    ph.add_column("of budget", justify="right")
    peak = e.peak_phase
    for p in e.phases:
        style = "bold red" if (p is peak and not plan.fits) else ("bold" if p is peak else "")
        ph.add_row(f"[{style}]{p.name}[/]" if style else p.name, _g(p.total), f"{100 * p.total / plan.budget:.0f}%")
    con.print(ph)

    rt = Table(title="recommendations", title_justify="left")
    rt.add_column("setting")
    rt.add_column("value")
    rt.add_column("why", overflow="fold")
    for r in plan.recs:
        rt.add_row(r.key, _show(r.value), r.reason)
    con.print(rt)
    for w in plan.warnings:
        con.print(f"[yellow]warning[/]: {w}")
    verdict = ("[green]fits[/]" if plan.fits else "[red]does not fit[/]")
    con.print(f"{verdict}: peak {e.peak / GiB:.2f} GiB{' per GPU' if several else ''} in '{peak.name}' of "
              f"{plan.budget / GiB:.2f} GiB budget")
