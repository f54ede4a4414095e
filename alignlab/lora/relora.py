"""ReLoRA (Lialin et al., arXiv 2307.05695): a sequence of LoRA cycles whose sum is a high-rank update.

Every `relora.reset_every` steps (the step-end action `ReLoRA.end_step`):
1. merge: W ← W + s·B·A for every adapted linear, in fp32 (`cycles.merge_into_base`);
2. re-init: A ~ Kaiming-uniform(a=√5) = U(−1/√in, 1/√in), B = 0, in place (same Parameter objects, so
   the optimizer keeps them); the draw comes from a generator seeded by (seed, reset index), so a
   resumed run re-draws the same A;
3. prune: in each LoRA parameter's exp_avg and exp_avg_sq separately, the entries whose magnitude is
   at or below the `relora.prune` quantile (linear interpolation) are zeroed, in place, and exp_avg is
   zeroed wherever exp_avg_sq was (`prune_optimizer_states` says why); Adam's step count is kept and no
   other parameter's state is touched;
4. the lr restarts from 0 and warms up linearly over `relora.restart_warmup_steps` back onto the
   schedule's envelope (`jagged_multiplier`, the official code's lambda).

Departs from the official implementation in:
- A starts random and B zero (the official wrapper zeroes both, so nothing but the non-LoRA parameters
  train in the first cycle: Guitaricet/relora issue 18);
- only the LoRA parameters train (peft freezes the rest), as in axolotl's port; the paper keeps
  embeddings, norms and the LM head training at full rank;
- the full-rank warm start is a separate run whose checkpoint is the ReLoRA run's model.path, as the
  official `--warmed_up_model` (docs/lora.md shows the pipeline);
- the schedule's envelope follows optim.schedule (cosine in the paper; linear and constant work too);
- a momentum entry whose second moment was pruned is pruned too (the official code prunes the two
  independently, which divides surviving momenta by Adam's ε right after a reset).
"""
from __future__ import annotations

import math

import torch

from ..optim import lr_multiplier
from . import cycles


def envelope(t: float, total: int, warmup: int, min_ratio: float, schedule: str = "cosine") -> float:
    """The schedule without restarts after the first warm-up: cosine (or linear) from 1 down to min_ratio
    (optim.lr_multiplier's decay, held at 1 through the warm-up)."""
    return lr_multiplier(max(t, warmup), total, warmup, schedule, min_ratio)


def jagged_multiplier(t: int, total: int, warmup: int, restart_warmup: int, cycle: int, min_ratio: float,
                      schedule: str = "cosine") -> float:
    """Multiplier of the peak lr for update t (0-based): Guitaricet/relora's
    `_get_cosine_schedule_with_multiple_warmups_lambda` with adjust_step 0.

        t < W0:                      t / W0
        c = t mod C < Wr, t >= C:    (c / Wr) · env(⌊t/C⌋·C + Wr)      (re-warm-up after each reset)
        otherwise:                   env(t)

    The update right after a reset (c = 0) runs at lr 0: it only refills Adam's moments, whose pruned
    second moment would otherwise make the first steps ~30x too large (β2 = 0.999)."""
    if t < warmup:
        return t / warmup
    c, n = t % cycle, t // cycle
    if restart_warmup > 0 and c < restart_warmup and t >= cycle:
        return c / restart_warmup * envelope(n * cycle + restart_warmup, total, warmup, min_ratio, schedule)
    return envelope(t, total, warmup, min_ratio, schedule)


def install_schedule(scheduler, fn) -> None:
    """Make a LambdaLR follow `fn(update)` from now on, the current lr included. `fn` is a plain function,
    so the scheduler's state_dict (and an exact resume) is unchanged by it."""
    opt = scheduler.optimizer
    scheduler.lr_lambdas = [fn] * len(opt.param_groups)
    for g, base in zip(opt.param_groups, scheduler.base_lrs):
        g["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in opt.param_groups]


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile with linear interpolation (torch.quantile's default), for tensors of any size
    (torch.quantile refuses more than 2^24 elements)."""
    v = torch.sort(values.flatten().float()).values
    pos = q * (v.numel() - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, v.numel() - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


@torch.no_grad()
def magnitude_prune_(state: torch.Tensor, ratio: float) -> None:
    """Zero the entries with |x| ≤ quantile(|x|, ratio), in place: about the smallest `ratio` share
    (1..1000 at 0.9: the threshold is 900.1 and the 100 largest stay)."""
    if ratio <= 0 or state.numel() == 0:
        return
    if ratio >= 1:
        state.zero_()
        return
    mag = state.abs()
    state.mul_(mag > quantile(mag, ratio).to(mag.dtype))


def prune_optimizer_states(optimizer, params, ratio: float) -> None:
    """Magnitude-prune exp_avg and exp_avg_sq of `params` only, each by its own quantile, in place; then
    zero exp_avg wherever exp_avg_sq was zeroed. The step count and other parameters' states stay.

    The last rule is not in the official code. Without it an entry whose momentum survives while its
    second moment is pruned updates by m̂ / (√v̂ + ε) with v̂ ≈ 0: right after a reset B = 0, so A's
    gradient is exactly 0 and v̂ stays 0, and that A entry moves by about lr·m̂/ε. Measured on the tiny
    model (bench/lora_study.py, lr 3e-3, prune 0.9): the grad norm went from 0.7 to 2e3 three steps after
    the first reset and the run never recovered its loss."""
    for p in params:
        st = optimizer.state.get(p)
        for key in ("exp_avg", "exp_avg_sq"):
            if st and key in st:
                magnitude_prune_(st[key], ratio)
        if st and "exp_avg" in st and "exp_avg_sq" in st:
            st["exp_avg"].mul_(st["exp_avg_sq"] != 0)


@torch.no_grad()
def reinit_(layer, generator: torch.Generator, adapter: str = cycles.ADAPTER) -> None:
    """A ← Kaiming-uniform(a=√5) (= U(−1/√in, 1/√in)), B ← 0, in place."""
    a, b = cycles.factors(layer, adapter)
    fresh = torch.empty(a.shape, dtype=torch.float32)
    torch.nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
    a.copy_(fresh)
    b.zero_()


def reset(layers, optimizer, prune: float, generator: torch.Generator) -> None:
    """One ReLoRA reset of every layer: merge, re-init, prune the LoRA parameters' optimizer states."""
    for _, layer in layers:
        cycles.merge_into_base(layer)
        reinit_(layer, generator)
    prune_optimizer_states(optimizer, [p for _, layer in layers for p in cycles.factors(layer)], prune)


class ReLoRA:
    """The step-end action of `relora.enabled`: installs the jagged schedule, resets every reset_every steps."""

    def __init__(self, cfg, model, optimizer, scheduler):
        from ..errors import ConfigError
        from ..optim import warmup_steps

        self.cfg, self.optimizer, self.seed = cfg.relora, optimizer, cfg.seed
        self.layers = cycles.lora_layers(model)
        if not self.layers:
            raise ConfigError("relora.enabled=true but the model has no LoRA linear layers (lora.target_modules)")
        if scheduler is None:
            raise RuntimeError("relora needs the scheduler: run.begin(..., scheduler=sched)")
        cycles.use_fp32_masters(self.layers)
        cycles.mark(model)
        ups, o, r = cfg.updates_per_step(), cfg.optim, cfg.relora
        total = cfg.training.total_steps * ups
        warm = warmup_steps(o, total)

        def multiplier(u: int) -> float:
            return jagged_multiplier(u, total, warm, r.restart_warmup_steps * ups, r.reset_every * ups,
                                     o.min_lr_ratio, o.schedule)

        install_schedule(scheduler, multiplier)

    def end_step(self, step: int, total: int) -> dict:
        if step % self.cfg.reset_every:
            return {}
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step // self.cfg.reset_every)
        reset(self.layers, self.optimizer, self.cfg.prune, g)
        return {"relora/reset": step // self.cfg.reset_every}
