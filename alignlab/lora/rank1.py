"""Dynamic rank-1 merging: every `rank1.merge_every` steps the rank-1 adapter s·b·a is merged into the
fp32 base and a fresh one starts (docs/lora.md; research note lora-analysis-decoding.md §2, no paper).

Per adapted linear W (out × in), with s = lora.alpha (r = 1):
1. a ~ N(0, I/in) (E[aᵀa] = I/in; peft's Kaiming uniform would give I/(3·in)), b = 0;
2. forward with W + s·b·a: ∇b = s·G·aᵀ and ∇a = s·bᵀG = 0 at the first update (G = ∂L/∂W);
3. the optimizer updates b (and a after the first update when merge_every > 1) from a *fresh* state;
4. merge W ← W + s·b·a in fp32, drop a, b and their optimizer state, draw the next a.

Closed forms of one merged update (tested): plain SGD gives ΔW = −η s²·G aᵀa (rank 1, E = −η s² G/in);
a fresh Adam's first step is −η·sign(∇b), so ΔW = −η s·sign(s·G aᵀ)·a: projected sign-SGD. Its size does
not depend on |∇b|, so gradient clipping cannot change it.

`rank1.init=greedy`: at the first update after a merge, a is replaced by the top right-singular vector of
that step's G (unit norm, `power_iters` power iterations on GᵀG), the best rank-1 direction. Since
b = 0, G does not depend on a, so ∇b can be recomputed exactly for the new a: ∇b ← c·s·G·aᵀ, with c the
factor (clip, grad-scaler) the optimizer step already applied to the old ∇b. The base weights of the
adapted linears need gradients for this (memory: one more gradient of those matrices); they are not in
the optimizer, but `grad/norm` then includes them.

When the adapter gets a single update (merge_every = 1, one update per step) a never trains (∇a = 0
then), so it is frozen: weight decay would otherwise shrink it.
"""
from __future__ import annotations

import torch

from . import cycles


@torch.no_grad()
def gaussian_(layer, generator: torch.Generator) -> None:
    """a ~ N(0, I/in), b = 0, in place."""
    a, b = cycles.factors(layer)
    fresh = torch.randn(a.shape, generator=generator) / a.shape[1] ** 0.5
    a.copy_(fresh)
    b.zero_()


@torch.no_grad()
def top_right_singular(g: torch.Tensor, start: torch.Tensor, iters: int) -> torch.Tensor:
    """(1, in) unit vector: `iters` power iterations on GᵀG from `start` (1, in); `start` when G = 0."""
    a = start / start.norm().clamp_min(1e-30)
    for _ in range(iters):
        nxt = (g.T @ (g @ a.T)).T  # (1, in)
        n = nxt.norm()
        if n == 0:
            return a
        a = nxt / n
    return a


class Rank1:
    """The step-end action of `rank1.enabled` (and, for init=greedy, an optimizer step pre-hook)."""

    def __init__(self, cfg, model, optimizer, fresh: bool):
        from ..errors import ConfigError

        self.cfg, self.optimizer, self.seed = cfg.rank1, optimizer, cfg.seed
        self.layers = cycles.lora_layers(model)
        if not self.layers:
            raise ConfigError("rank1.enabled=true but the model has no LoRA linear layers (lora.target_modules)")
        cycles.use_fp32_masters(self.layers)
        cycles.mark(model)
        self.params = [p for _, layer in self.layers for p in cycles.factors(layer)]
        if fresh:  # on resume a and b come from the checkpoint
            g = self._generator(0)
            for _, layer in self.layers:
                gaussian_(layer, g)
        if self.cfg.merge_every * cfg.updates_per_step() == 1:  # ∇a = 0 at the adapter's only update
            for _, layer in self.layers:
                cycles.factors(layer)[0].requires_grad_(False)
        if self.cfg.init == "greedy":
            for _, layer in self.layers:
                layer.get_base_layer().weight.requires_grad_(True)
            optimizer.register_step_pre_hook(self._greedy)

    def _generator(self, k: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * k + 1)

    @torch.no_grad()
    def _greedy(self, optimizer, args, kwargs) -> None:
        for _, layer in self.layers:
            w = layer.get_base_layer().weight
            g, w.grad = w.grad, None
            a, b = cycles.factors(layer)
            if g is None or b.grad is None or torch.count_nonzero(b):
                continue  # not the first update after a merge: a stays
            s, g = layer.scaling[cycles.ADAPTER], g.to(a.dtype)
            old = s * (g @ a.T)  # the raw ∇b of the a the forward used, (out, 1)
            c = b.grad.norm() / old.norm() if old.norm() > 0 else old.new_zeros(())
            best = top_right_singular(g, a.detach(), self.cfg.power_iters)
            a.copy_(best)
            b.grad.copy_(c * s * (g @ best.T))

    def end_step(self, step: int, total: int) -> dict:
        for _, layer in self.layers:  # greedy: a skipped update (watchdog, fp16 overflow) left its G behind
            layer.get_base_layer().weight.grad = None
        if step % self.cfg.merge_every:
            return {}
        g = self._generator(step // self.cfg.merge_every)
        for _, layer in self.layers:
            cycles.merge_into_base(layer)
            gaussian_(layer, g)
        for p in self.params:  # a fresh optimizer state for the fresh adapter
            self.optimizer.state.pop(p, None)
        return {"rank1/merges": step // self.cfg.merge_every}
