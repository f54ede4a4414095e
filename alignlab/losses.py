"""Losses and masked reductions: pure tensor functions, torch only, no config objects.

Normalisers are explicit arguments. A loss summed over tokens and divided by the token count of
the whole optimizer step (not of one micro-batch) gives the same gradient however the step is
split into micro-batches: that is the invariant the tests prove.
"""
from __future__ import annotations

import torch


def masked_normalize(
    tensor: torch.Tensor, mask: torch.Tensor, dim: int | None = None, normalize_constant: float = 1.0
) -> torch.Tensor:
    """sum(tensor * mask, dim) / normalize_constant. Masked-out entries contribute exactly 0
    (even when they hold inf/nan)."""
    masked = torch.where(mask.bool(), tensor, torch.zeros_like(tensor))
    total = masked.sum() if dim is None else masked.sum(dim=dim)
    return total / normalize_constant


def masked_mean(tensor: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(tensor * mask, dim) / sum(mask, dim). A row with an empty mask gives nan (0/0)."""
    masked = torch.where(mask.bool(), tensor, torch.zeros_like(tensor))
    m = mask.to(tensor.dtype)
    if dim is None:
        return masked.sum() / m.sum()
    return masked.sum(dim=dim) / m.sum(dim=dim)


def sft_microbatch_train_step(
    policy_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    gradient_accumulation_steps: int,
    normalize_constant: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The plan's SFT micro-step: batch mean of -sum_t(mask * logp) / normalize_constant, divided by
    the accumulation steps; calls backward(). policy_log_probs, response_mask: (B, T)."""
    per_seq = -masked_normalize(policy_log_probs, response_mask, dim=-1, normalize_constant=normalize_constant)  # (B,)
    loss = per_seq.mean() / gradient_accumulation_steps
    loss.backward()
    return loss.detach(), {"per_sequence_loss": per_seq.detach(), "n_tokens": response_mask.sum().detach()}


def sft_nll(
    logps: torch.Tensor, response_mask: torch.Tensor, normalizer: str, n_tokens: float, n_seqs: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of response tokens for one micro-batch, normalised over the step.

    normalizer="tokens":    -sum(mask * logp) / n_tokens          (n_tokens: whole step's response tokens)
    normalizer="sequences": -sum_i mean_t(mask_i * logp_i) / n_seqs (n_seqs: whole step's sequences)
    Summing the returned losses over a step's micro-batches gives the step's loss exactly.
    logps, response_mask: (B, T).
    """
    if normalizer == "tokens":
        loss = -masked_normalize(logps, response_mask, normalize_constant=n_tokens)
    elif normalizer == "sequences":
        per_seq_mean = masked_normalize(logps, response_mask, dim=-1) / response_mask.sum(-1).clamp(min=1)
        loss = -per_seq_mean.sum() / n_seqs
    else:
        raise ValueError(f"normalizer must be 'tokens' or 'sequences', not {normalizer!r}")
    return loss, {"nll_sum": -masked_normalize(logps.detach(), response_mask), "n_tokens": response_mask.sum()}
