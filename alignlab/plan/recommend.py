"""Recommendations that explain themselves: micro-batch, accumulation, LR, schedule, precision, LoRA.

Every recommendation is a ``Rec(key, value, reason)``; the reason is one line a user can check.
The micro-batch is searched with the memory model of ``memory.py`` against a budget of
``margin x (device memory - framework overhead)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .arch import Arch, PlanError
from .hardware import GPU
from .memory import ALL_LINEAR, GiB, Estimate, Setup, estimate

# Starting learning rates at a reference batch (sequences per optimizer step), with the recipe
# they come from; scaled to the planned batch by the square-root (default) or linear rule.
BASE_LR: dict[tuple[str, str], tuple[float, int, str]] = {
    ("sft", "full"): (2e-5, 128, "Alpaca full fine-tuning recipe: 2e-5 at batch 128"),
    ("sft", "lora"): (2e-4, 16, "QLoRA paper (Dettmers et al. 2023), models <= 13B: 2e-4 at batch 16"),
    ("dpo", "full"): (1e-6, 64, "DPO paper (Rafailov et al. 2023): 1e-6 at batch 64"),
    ("dpo", "lora"): (5e-6, 64, "DPO 1e-6 at batch 64, x5 for adapters (heuristic)"),
    ("grpo", "full"): (1e-6, 1024, "DeepSeekMath GRPO (Shao et al. 2024): 1e-6 at 1024 samples per step"),
    ("grpo", "lora"): (1e-5, 1024, "GRPO 1e-6 at 1024 samples, x10 for adapters (heuristic)"),
    ("ppo", "full"): (1e-6, 512, "RLHF PPO practice: 1e-6 at 512 samples per step (heuristic)"),
    ("ppo", "lora"): (1e-5, 512, "PPO 1e-6, x10 for adapters (heuristic)"),
}
DEFAULT_BATCH = {"sft": 32, "dpo": 64, "grpo": 256, "ppo": 128}


@dataclass
class Rec:
    key: str
    value: Any
    reason: str


@dataclass
class Options:
    target_batch: int | None = None  # sequences (DPO: pairs) per optimizer step
    margin: float = 0.85
    micro_batch: int | None = None  # fix instead of searching
    grad_ckpt: str = "auto"  # auto | on | off
    lr_scaling: str = "sqrt"  # sqrt | linear
    base_lr: float | None = None
    base_batch: int | None = None
    dataset_size: int = 10_000
    epochs: float | None = None
    group_size: int | None = None  # GRPO completions per prompt
    max_micro_batch: int = 256
    vllm_util: float | None = None  # --rollout-backend vllm: fix gpu_memory_utilization instead of choosing it


@dataclass
class Plan:
    arch: Arch
    gpu: GPU
    setup: Setup
    est: Estimate
    budget: float
    fits: bool
    recs: list[Rec] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def rec(self, key: str) -> Any:
        for r in self.recs:
            if r.key == key:
                return r.value
        raise KeyError(key)


def choose_precision(gpu: GPU, requested: str, arch: Arch) -> tuple[str, str]:
    if requested == "auto":
        if gpu.device == "cpu":
            return "fp32", "CPU: fp32 (bf16 matmuls on most CPUs are emulated and slower)"
        if gpu.bf16:
            return "bf16", f"{gpu.name} supports bf16: same exponent range as fp32, no loss scaling needed"
        why = (f"{gpu.name} (compute capability {gpu.compute_capability}) has no bf16: fp16 autocast with a "
               "GradScaler")
        if arch.gemma:
            why += "; Gemma-3 was trained in bf16 and its activations can overflow fp16: watch for inf/NaN losses"
        return "fp16", why
    if requested == "bf16" and not gpu.bf16:
        raise PlanError(
            f"--precision bf16 is not supported on {gpu.name}"
            + (f" (compute capability {gpu.compute_capability} < 8.0)" if gpu.compute_capability else "")
            + "; use --precision fp16 or fp32 (or auto)")
    if requested == "fp16" and not gpu.fp16:
        raise PlanError(f"--precision fp16 is not supported on {gpu.name}; use bf16 or fp32")
    return requested, f"--precision {requested} as requested"


def _divisors_desc(n: int, cap: int) -> list[int]:
    return [d for d in range(min(n, cap), 0, -1) if n % d == 0]


def _fits(arch: Arch, setup: Setup, budget: float) -> tuple[bool, Estimate]:
    e = estimate(arch, setup)
    return e.peak <= budget, e


def search(arch: Arch, base: Setup, target: int, budget: float, opts: Options) -> tuple[Setup | None, Estimate, str]:
    """Largest micro-batch dividing ``target`` whose peak fits ``budget``; checkpointing when needed."""
    ckpt_choices = {"auto": (False, True), "on": (True,), "off": (False,)}[opts.grad_ckpt]
    last = None
    results: dict[bool, tuple[Setup, Estimate] | None] = {}
    for ck in ckpt_choices:
        cands = [opts.micro_batch] if opts.micro_batch else _divisors_desc(target, opts.max_micro_batch)
        found = None
        for m in cands:
            accum = max(1, math.ceil(target / m))
            s = replace(base, micro_batch=m, grad_accum=accum, grad_ckpt=ck)
            ok, e = _fits(arch, s, budget)
            last = (s, e)
            if ok:
                found = (s, e)
                break
        results[ck] = found
    no, yes = results.get(False), results.get(True)
    if opts.grad_ckpt == "auto":
        if no is not None and (yes is None or no[0].micro_batch >= 4 or yes[0].micro_batch < 2 * no[0].micro_batch):
            return no[0], no[1], (f"off: micro-batch {no[0].micro_batch} already fits without it "
                                  "(checkpointing costs ~1 extra forward, about +33% compute)")
        if yes is not None:
            why = ("on: without it not even micro-batch 1 fits" if no is None else
                   f"on: raises the micro-batch from {no[0].micro_batch} to {yes[0].micro_batch} "
                   "(recomputing each layer costs ~1 extra forward)")
            return yes[0], yes[1], why
    else:
        got = results[ckpt_choices[0]]
        if got is not None:
            return got[0], got[1], f"{opts.grad_ckpt}: as requested"
    assert last is not None
    return None, last[1], "nothing fits"


def make_plan(arch: Arch, gpu: GPU, setup: Setup, opts: Options, precision_reason: str = "") -> Plan:
    usable = gpu.memory_gib * GiB - gpu.overhead_gib * GiB
    budget = opts.margin * usable
    task = setup.task
    target = opts.target_batch or DEFAULT_BATCH[task]
    if task == "grpo":
        g = opts.group_size or 8
        if target % g:
            raise PlanError(f"--target-batch {target} is not a multiple of the group size {g}")
        if (target // g) % setup.gpus:
            raise PlanError(f"--target-batch {target} is {target // g} prompts, which do not split over "
                            f"--gpus {setup.gpus} (each GPU samples whole groups)")
    if target % setup.gpus:
        raise PlanError(f"--target-batch {target} does not split over --gpus {setup.gpus}")
    per_device = target // setup.gpus  # each rank's share of the step: micro-batches and accumulation are per rank
    rl = task in ("grpo", "ppo")
    engine = None
    if rl and setup.rollout_backend == "vllm":
        engine = _vllm_engine(arch, gpu, setup, per_device, budget, opts)
        setup = replace(setup, vllm_engine_bytes=engine["bytes"])
    found, est, ck_reason = search(arch, replace(setup, rollout_batch=1) if rl else setup, per_device, budget, opts)
    fits = found is not None
    s = found or est.setup
    plan = Plan(arch=arch, gpu=gpu, setup=s, est=est, budget=budget, fits=fits)
    R = plan.recs.append
    peak = est.peak
    R(Rec("precision", s.precision, precision_reason or s.precision))
    if fits:
        R(Rec("micro_batch", s.micro_batch,
              f"largest divisor of the {'per-GPU share of the ' if s.gpus > 1 else ''}target batch {per_device} "
              f"whose peak {peak / GiB:.2f} GiB fits "
              f"{opts.margin:.0%} of {usable / GiB:.1f} GiB usable ({est.peak_phase.name})"))
    else:
        R(Rec("micro_batch", None,
              f"does not fit: micro-batch 1 peaks at {peak / GiB:.2f} GiB > budget {budget / GiB:.2f} GiB "
              f"({est.peak_phase.name}); {_alternatives(arch, setup, budget)}"))
        plan.warnings.append("the configuration does not fit on this device")
    gpus = f" x {s.gpus} GPUs ({s.strategy})" if s.gpus > 1 or s.strategy == "fsdp2" else ""
    R(Rec("grad_accum_steps", s.grad_accum,
          f"{s.micro_batch} x {s.grad_accum}{gpus} = {s.micro_batch * s.grad_accum * s.gpus} "
          f"{'pairs' if task == 'dpo' else 'sequences'} per optimizer step (target {target})"))
    R(Rec("gradient_checkpointing", s.grad_ckpt, ck_reason))
    eff = s.micro_batch * s.grad_accum * s.gpus  # the global batch: the lr and the step count follow it
    eff_device = s.micro_batch * s.grad_accum
    # learning rate
    meth = "full" if s.method == "full" else "lora"
    lr0, b0, src = BASE_LR[(task, meth)]
    if opts.base_lr is not None:
        lr0, src = opts.base_lr, "--base-lr"
    if opts.base_batch is not None:
        b0 = opts.base_batch
    factor = (eff / b0) ** (0.5 if opts.lr_scaling == "sqrt" else 1.0)
    lr = lr0 * factor
    rule = "square-root rule (Adam; Malladi et al. 2022)" if opts.lr_scaling == "sqrt" else "linear rule (Goyal et al. 2017)"
    R(Rec("lr", float(f"{lr:.3g}"), f"{lr0:g} x ({eff}/{b0})^{0.5 if opts.lr_scaling == 'sqrt' else 1} = {lr:.3g}: "
                                    f"{rule}; base from {src}"))
    # schedule and steps
    epochs = opts.epochs if opts.epochs is not None else {"sft": 3, "dpo": 1, "grpo": 1, "ppo": 1}[task]
    if task in ("grpo", "ppo"):
        group = (opts.group_size or 8) if task == "grpo" else 1
        prompts_per_step = eff // group
        steps_per_epoch = max(1, math.ceil(opts.dataset_size / prompts_per_step))
        unit = f"{opts.dataset_size:,} prompts / {prompts_per_step} prompts per step"
    else:
        steps_per_epoch = max(1, math.ceil(opts.dataset_size / eff))
        unit = f"{opts.dataset_size:,} {'pairs' if task == 'dpo' else 'examples'} / {eff} per step"
    total = max(1, math.ceil(steps_per_epoch * epochs))
    R(Rec("steps_per_epoch", steps_per_epoch, unit + " (last partial step kept)"))
    R(Rec("total_steps", total, f"{steps_per_epoch} x {epochs:g} epochs"))
    warm = 0.1 if total < 1000 else 0.03
    R(Rec("warmup_ratio", warm, f"{'short run (< 1000 steps): 10%' if warm == 0.1 else 'long run: 3%'} "
                                f"= {max(1, round(warm * total))} steps of linear warmup while Adam's moments settle"))
    R(Rec("schedule", "cosine", "cosine decay after warmup: smooth, no decay milestones to tune"))
    R(Rec("min_lr_ratio", 0.1, "decay to 10% of peak, not 0: the last steps still learn"))
    R(Rec("adam_betas", [0.9, 0.999], "AdamW defaults; beta2=0.999 averages the second moment over ~1000 steps"))
    R(Rec("adam_eps", 1e-8, "default; states in fp32 (or bf16 with bf16 weights) represent it"))
    wd = 0.01 if s.method == "full" else 0.0
    R(Rec("weight_decay", wd, "0.01 on matrices (not norms/biases) for full fine-tuning" if wd else
          "0 for adapters: decay pulls B*A toward zero (back to the base) rather than regularising; dropout does that"))
    R(Rec("max_grad_norm", 1.0, "clip the global norm at 1.0: one bad batch cannot wreck the weights"))
    if s.method in ("lora", "qlora"):
        lp = plan.est.params.get("lora_total", 0)
        R(Rec("lora_r", s.lora_r, f"r={s.lora_r}: {lp:,} trainable ({100 * lp / plan.est.params['total']:.2f}% of "
                                   f"{plan.est.params['total']:,}); raise for large domain shifts"))
        R(Rec("lora_alpha", s.lora_alpha, f"alpha = 2r keeps the update scale alpha/r = {s.lora_alpha / s.lora_r:g}"))
        R(Rec("lora_dropout", s.lora_dropout, "light regularisation; its masks are in the activation estimate"))
        R(Rec("lora_targets", list(s.lora_targets),
              "all 7 projections: adapting the MLP too tracks full fine-tuning closely (QLoRA paper)"
              if tuple(s.lora_targets) == ALL_LINEAR else "as requested"))
    if task == "grpo":
        g = opts.group_size or 8
        R(Rec("group_size", g, f"{g} completions per prompt: the group baseline needs several samples"))
        R(Rec("prompts_per_step", eff // g, f"{eff} sequences per step / group {g}"))
        R(Rec("kl_coef", 0.04 if s.ref_model else 0.0,
              "DeepSeekMath's 0.04, with the reference this memory plan includes" if s.ref_model else
              "--no-ref: no KL term (as in DAPO and Dr. GRPO), no reference in memory"))
    if engine is not None:
        _vllm_recs(plan, engine, s, eff_device, usable)
    if rl:
        rb, why = _rollout_batch(arch, s, budget, eff_device) if engine is None else (
            eff_device, f"vLLM: the step's {eff_device} sequences (per GPU) in one generate() call; its KV pool runs "
                 f"{engine['concurrency']} at a time")
        R(Rec("rollout_batch", rb, why))
        plan.numbers["rollout_batch"] = rb
        s = replace(s, rollout_batch=rb)
        plan.setup, plan.est = s, estimate(arch, s)
        est, peak = plan.est, plan.est.peak
    if task == "dpo":
        R(Rec("dpo_beta", 0.1, "DPO paper default: KL strength 0.1"))
    plan.numbers.update(target_batch=target, effective_batch=eff, budget_gib=budget / GiB, usable_gib=usable / GiB,
                        peak_gib=peak / GiB, peak_phase=est.peak_phase.name)
    return plan


VLLM_PROFILE_TOKENS = 8192  # tokens of the engine's profiling forward (its max_num_batched_tokens), assumed
VLLM_FIXED = 0.5 * GiB  # CUDA graphs, sampler and engine buffers, assumed


def _vllm_engine(arch: Arch, gpu: GPU, setup: Setup, target: int, budget: float, opts: Options) -> dict:
    """What a colocated vLLM engine needs, and the gpu_memory_utilization to give it: the largest
    share (in steps of 0.05) up to the one that runs all of a step's sequences at once, at which the
    training phases still fit next to it (with sleep mode only the rollout phase must)."""
    from .memory import _nograd_forward, BYTES

    total = gpu.memory_gib * GiB
    a = BYTES[setup.precision]  # vLLM runs in the compute dtype
    weights = estimate(arch, replace(setup, rollout_backend="hf")).params["total"] * a
    act = _nograd_forward(arch, VLLM_PROFILE_TOKENS, a, setup, logits_tokens=256)
    kv_seq = estimate(arch, replace(setup, rollout_backend="hf", rollout_batch=1)).terms["kv_cache"].bytes
    need = lambda n: weights + act + VLLM_FIXED + n * kv_seq  # noqa: E731
    lo = math.ceil(need(1) / total * 20) / 20
    hi = min(0.95, math.ceil(need(target) / total * 20) / 20)
    if opts.vllm_util is not None:
        utils = [opts.vllm_util]
    else:
        utils = [round(u / 20, 2) for u in range(round(hi * 20), round(lo * 20) - 1, -1)] or [lo]
    chosen = utils[-1]
    for u in utils:
        found, _, _ = search(arch, replace(setup, rollout_batch=1, vllm_engine_bytes=u * total), target, budget, opts)
        if found is not None:
            chosen = u
            break
    eng = chosen * total
    return {"util": chosen, "bytes": eng, "weights": weights, "act": act, "kv_seq": kv_seq,
            "concurrency": max(0, int((eng - weights - act - VLLM_FIXED) // kv_seq)), "need_all": need(target),
            "given": opts.vllm_util is not None}


def _vllm_recs(plan: "Plan", e: dict, s: Setup, eff: int, usable: float) -> None:
    Ltot = s.prompt_len + s.gen_len
    why = (f"engine {e['bytes'] / GiB:.1f} GiB = weights {e['weights'] / GiB:.1f} + activations ~{e['act'] / GiB:.1f} "
           f"+ fixed ~{VLLM_FIXED / GiB:.1f} + KV pool for {e['concurrency']} sequences of {Ltot} tokens "
           f"({eff} per step)" + ("; as requested" if e["given"] else
                                  "; the smallest share (0.05 steps) that runs them all at once" if e["concurrency"] >= eff
                                  else "; the largest share at which training still fits next to it"))
    plan.recs.append(Rec("vllm_gpu_memory_utilization", e["util"], why))
    plan.recs.append(Rec("vllm_sleep", s.vllm_sleep, "frees the engine while training: training gets its memory back, "
                         "each rollout re-pushes the weights" if s.vllm_sleep else
                         "engine stays resident: no re-push, but training shares the device with it"))
    if e["concurrency"] < 1:
        plan.warnings.append(f"vLLM's share {e['util']:.2f} cannot hold its weights plus one {Ltot}-token sequence; "
                             "raise --vllm-gpu-util, use --vllm-sleep, or shorten the sequences")
    elif e["concurrency"] < eff:
        plan.warnings.append(f"vLLM runs {e['concurrency']} of the step's {eff} sequences at a time; "
                             f"{e['need_all'] / GiB:.1f} GiB would run them all at once")
    startup = sum(plan.est.terms[k].bytes for k in ("weights", "lora_weights", "master") if k in plan.est.terms)
    if startup + e["bytes"] > usable:
        plan.warnings.append(f"vLLM checks free memory at start-up: the policy ({startup / GiB:.1f} GiB) plus the engine's "
                             f"{e['bytes'] / GiB:.1f} GiB exceed {usable / GiB:.1f} GiB usable, so it will refuse to start")


def _rollout_batch(arch: Arch, s: Setup, budget: float, eff: int) -> tuple[int, str]:
    best = 0
    r = 1
    while r <= eff:
        e = estimate(arch, replace(s, rollout_batch=r))
        if max(e.phase("rollout generation").total, e.phase("rollout prefill").total) > budget:
            break
        best = r
        r *= 2
    if best == 0:
        return 1, "even one sequence's KV cache does not fit next to the training state"
    kv = estimate(arch, replace(s, rollout_batch=best)).terms["kv_cache"].bytes
    return best, (f"largest power of two <= {eff} whose generation phase fits (KV cache {kv / GiB:.2f} GiB for "
                  f"{best} x {s.prompt_len + s.gen_len} tokens)")


def _alternatives(arch: Arch, setup: Setup, budget: float) -> str:
    tips = []
    one = dict(micro_batch=1, grad_accum=1, grad_ckpt=True)
    if setup.method == "full":
        for flag, change in (("--optim-impl fused", dict(optim_impl="fused")),
                             ("--optimizer adamw_8bit", dict(optimizer="adamw_8bit")),
                             ("--weights-dtype bf16 (pure bf16: weights, grads and AdamW states)",
                              dict(weight_dtype="bf16", precision="bf16"))):
            if (flag.startswith("--optimizer") and setup.device != "cuda") or (
                    "bf16" in flag and setup.precision != "bf16"):
                continue
            try:
                ok, _ = _fits(arch, replace(setup, **one, **change), budget)
            except PlanError:
                continue
            if ok:
                tips.append(f"{flag} fits")
    for method in ("lora", "qlora"):
        if method == setup.method or (method == "qlora" and setup.device != "cuda"):
            continue
        try:
            ok, _ = _fits(arch, replace(setup, method=method, **one), budget)
        except PlanError:
            continue
        if ok:
            tips.append(f"--method {method} with checkpointing fits")
    half = max(64, setup.seq_len // 2)
    if half < setup.seq_len:
        ok, _ = _fits(arch, replace(setup, seq_len=half, **one), budget)
        if ok:
            tips.append(f"--seq-len {half} fits")
    return "; ".join(tips) if tips else "try a larger GPU or a smaller model"
