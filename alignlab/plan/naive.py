"""The original plan's formulas (../shared/plan/001), kept only as a baseline for the accuracy bench.

    model memory       = params x 2 B (FP16)
    LoRA params        = 2 x r x d_model x layers x n_targets       (one d_model for every projection)
    optimizer memory   = trainable x 8 B
    activations        = seq_len x layers x 12 B per example        (x micro-batch)
    total              = model + optimizer + activations

They ignore gradients, the real shapes of GQA and MLP projections, the logits, and under-count
activations by orders of magnitude; see docs/planner_accuracy.md for the measured comparison.
"""

from __future__ import annotations

from .arch import Arch


def naive_lora_params(arch: Arch, r: int, n_targets: int = 7) -> int:
    return 2 * r * arch.hidden * arch.layers * n_targets


def naive_total_bytes(arch: Arch, method: str, micro_batch: int, seq_len: int, r: int = 16,
                      n_targets: int = 7) -> float:
    params = arch.param_counts()["total"]
    model = params * 2
    trainable = params if method == "full" else naive_lora_params(arch, r, n_targets)
    optimizer = trainable * 8
    activations = micro_batch * seq_len * arch.layers * 12
    return float(model + optimizer + activations)
