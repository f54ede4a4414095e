"""The per-micro-batch functions of Stanford CS336's alignment assignment, by the names and signatures
the plan asks for. They are public API for readers following that assignment, and each is a thin
composition of the one real implementation in `alignlab.losses`; alignlab's loops call `losses`
directly (normalisers fixed over the whole optimizer step, see `losses.aggregate`).
"""
from __future__ import annotations

import torch

from . import losses


def sft_microbatch_train_step(
    policy_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    gradient_accumulation_steps: int,
    normalize_constant: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The SFT micro-step: batch mean of -sum_t(mask * logp) / normalize_constant, divided by the
    accumulation steps; calls backward(). policy_log_probs, response_mask: (B, T)."""
    per_seq = -losses.masked_normalize(policy_log_probs, response_mask, dim=-1,
                                       normalize_constant=normalize_constant)  # (B,)
    loss = per_seq.mean() / gradient_accumulation_steps
    loss.backward()
    return loss.detach(), {"per_sequence_loss": per_seq.detach(), "n_tokens": response_mask.sum().detach()}


def compute_naive_policy_gradient_loss(raw_rewards_or_advantages: torch.Tensor, policy_log_probs: torch.Tensor) -> torch.Tensor:
    """REINFORCE per-token loss: -A * logp (`losses.pg_reinforce`). A: (B,) or (B, 1); logp: (B, T)."""
    return losses.pg_reinforce(raw_rewards_or_advantages, policy_log_probs)


def compute_grpo_clip_loss(advantages: torch.Tensor, policy_log_probs: torch.Tensor, old_log_probs: torch.Tensor,
                           cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate per token (arXiv:1707.06347): -min(rho A, clip(rho, 1-eps, 1+eps) A),
    rho = exp(logp - old_logp) (`losses.pg_clip_asymmetric` with eps_low = eps_high).
    metadata["clipped"] marks tokens where the clipped term is the min."""
    return losses.pg_clip_asymmetric(advantages, policy_log_probs, old_log_probs, cliprange, cliprange)


def _no_baseline(logps, raw_rewards, advantages, old_log_probs, cliprange):
    if raw_rewards is None:
        raise ValueError("no_baseline needs raw_rewards")
    return compute_naive_policy_gradient_loss(raw_rewards, logps), {}


def _with_baseline(logps, raw_rewards, advantages, old_log_probs, cliprange):
    if advantages is None:
        raise ValueError("reinforce_with_baseline needs advantages")
    return compute_naive_policy_gradient_loss(advantages, logps), {}


def _grpo_clip(logps, raw_rewards, advantages, old_log_probs, cliprange):
    if advantages is None or old_log_probs is None or cliprange is None:
        raise ValueError("grpo_clip needs advantages, old_log_probs and cliprange")
    return compute_grpo_clip_loss(advantages, logps, old_log_probs, cliprange)


POLICY_GRADIENT_LOSSES = {"no_baseline": _no_baseline, "reinforce_with_baseline": _with_baseline,
                          "grpo_clip": _grpo_clip}


def compute_policy_gradient_loss(policy_log_probs, loss_type: str, raw_rewards=None, advantages=None,
                                 old_log_probs=None, cliprange=None) -> tuple[torch.Tensor, dict]:
    """loss_type: no_baseline (-R logp), reinforce_with_baseline (-A logp), grpo_clip. -> ((B, T), meta)."""
    if loss_type not in POLICY_GRADIENT_LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}: {', '.join(POLICY_GRADIENT_LOSSES)}")
    return POLICY_GRADIENT_LOSSES[loss_type](policy_log_probs, raw_rewards, advantages, old_log_probs, cliprange)


def grpo_microbatch_train_step(policy_log_probs, response_mask, gradient_accumulation_steps: int, loss_type: str,
                               raw_rewards=None, advantages=None, old_log_probs=None, cliprange=None):
    """The GRPO micro-step: per-token loss, masked mean per sequence, mean over the batch, divided by
    the accumulation steps; calls backward(). Returns (loss, metadata)."""
    per_token, meta = compute_policy_gradient_loss(policy_log_probs, loss_type, raw_rewards, advantages,
                                                   old_log_probs, cliprange)
    loss = losses.masked_mean(per_token, response_mask, dim=-1).mean() / gradient_accumulation_steps
    loss.backward()
    return loss.detach(), meta
