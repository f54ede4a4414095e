"""AdamW with decoupled weight decay (not on biases and norms), schedules, one optimizer step."""
from __future__ import annotations

import math
import warnings

import torch

from .config import OptimConfig


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices (dim >= 2: linear and embedding weights); never biases or norm scales."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_ratio * total_steps))


def lr_multiplier(step: int, total_steps: int, warmup: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr for the update that follows `step` completed updates.

    Linear warmup from 1/warmup to 1; then cosine (or linear) decay to min_lr_ratio at total_steps,
    or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    raise ValueError(f"unknown schedule {schedule!r}")


def build(model, cfg: OptimConfig, total_steps: int, groups: list[dict] | None = None):
    """-> (AdamW, LambdaLR) over `model`'s parameters, or over explicit `groups` (e.g. PPO's critic at
    its own lr); one schedule scales every group. On CUDA the fused kernel (one launch for all
    parameters, as TRL's default adamw_torch_fused); elsewhere torch's default (foreach), so CPU
    numbers stay bit-identical."""
    from .distributed import current

    current().reshard()  # fsdp2: the optimizer holds the shards, even after a forward left some gathered
    groups = groups if groups is not None else param_groups(model, cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)
    warm = warmup_steps(cfg, total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_multiplier(s, total_steps, warm, cfg.schedule, cfg.min_lr_ratio)
    )
    return opt, sched


def step(model, opt, sched, max_grad_norm: float | None, scaler=None, guard=None) -> float:
    """Sum gradients over data-parallel ranks, unscale (fp16), clip, step, schedule, zero. Returns the
    pre-clip global grad norm.

    `guard(grad_norm, amp_scaled) -> skip?` (the watchdog's, `run.watchdog.guard(...)`) decides after
    the clip and before the update: on skip the gradients are dropped and the optimizer does not step;
    the schedule still advances, so the lr stays a function of the step index."""
    from .distributed import clip_grad_norm_, reduce_gradients

    params = [p for p in model.parameters() if p.requires_grad]
    reduce_gradients(params)  # data-parallel ranks: the sum of every rank's gradients (no-op in one process)
    if scaler is not None:
        scaler.unscale_(opt)
    limit = max_grad_norm if max_grad_norm is not None else float("inf")
    norm = float(clip_grad_norm_(params, limit))
    skip = guard is not None and guard(norm, scaler is not None)
    if skip:
        if scaler is not None:
            scaler.update()
    elif scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if skip:
        with warnings.catch_warnings():  # torch warns of a schedule stepped before any optimizer step: intended
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
    else:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return norm
