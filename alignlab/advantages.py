"""Advantages and reward baselines: pure tensor functions.

Rollouts of one prompt are consecutive: rewards of shape (B,) with B = n_prompts * group_size are
viewed as (n_prompts, group_size).
"""
from __future__ import annotations

from typing import Callable

import torch


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


def group_normalize(rewards: torch.Tensor, group_size: int, normalize_by_std: bool = True,
                    advantage_eps: float = 1e-6) -> torch.Tensor:
    """GRPO (arXiv:2402.03300): A_i = (r_i - mean_g) / (std_g + eps), std unbiased (torch default);
    without std (Dr. GRPO, arXiv:2503.20783): A_i = r_i - mean_g. (B,) -> (B,)."""
    g = _groups(rewards.float(), group_size)
    adv = g - g.mean(dim=1, keepdim=True)
    if normalize_by_std:
        adv = adv / (g.std(dim=1, keepdim=True) + advantage_eps)
    return adv.reshape(-1)


def leave_one_out(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (arXiv:2402.14740): A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g). (B,) -> (B,)."""
    if group_size < 2:
        raise ValueError("leave-one-out needs group_size >= 2")
    g = _groups(rewards.float(), group_size)
    others = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)


def compute_group_normalized_rewards(
    reward_fn: Callable[[str, str], dict],
    rollout_responses: list[str],
    repeated_ground_truths: list[str],
    group_size: int,
    advantage_eps: float,
    normalize_by_std: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The plan's interface: score every response, then group-normalise.
    Returns (advantages (B,), raw_rewards (B,), metadata)."""
    if len(rollout_responses) != len(repeated_ground_truths):
        raise ValueError(f"{len(rollout_responses)} responses but {len(repeated_ground_truths)} ground truths")
    scores = [reward_fn(r, gt) for r, gt in zip(rollout_responses, repeated_ground_truths)]
    raw = torch.tensor([float(s["reward"]) for s in scores])
    adv = group_normalize(raw, group_size, normalize_by_std, advantage_eps)
    g = _groups(raw, group_size)
    meta = {
        "reward/mean": raw.mean().item(),
        "reward/std": raw.std().item() if raw.numel() > 1 else 0.0,
        "reward/max": raw.max().item(),
        "reward/min": raw.min().item(),
        "groups/no_signal_frac": (g.max(1).values == g.min(1).values).float().mean().item(),
    }
    for part in ("format_reward", "answer_reward"):
        if scores and part in scores[0]:
            meta[f"reward/{part}"] = sum(float(s[part]) for s in scores) / len(scores)
    return adv, raw, meta


def zero_signal_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(n_prompts,) bool: groups whose rewards are all equal give every member advantage 0."""
    g = _groups(rewards, group_size)
    return g.max(dim=1).values == g.min(dim=1).values


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           over: torch.Tensor | None = None) -> torch.Tensor:
    """(x - mean) / std over masked entries (PPO advantage whitening); shift_mean=False keeps the mean.
    `over` (1-D): the entries the mean and std are taken over, when not values[mask] (data-parallel
    ranks: every rank's masked values)."""
    m = mask.bool()
    over = values[m] if over is None else over.to(values)
    mean = over.mean()
    var = ((over - mean) ** 2).mean()
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (arXiv:1506.02438) over response tokens.

    rewards, values, mask: (B, T); mask marks response tokens (a contiguous span per row). The value
    after the last response token is 0 (the episode ends). Returns (advantages, returns), (B, T),
    zero outside the mask. delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lam A_{t+1}."""
    m = mask.float()
    B, T = rewards.shape
    adv = torch.zeros_like(rewards, dtype=torch.float32)
    last = torch.zeros(B, dtype=torch.float32, device=rewards.device)
    next_value = torch.zeros(B, dtype=torch.float32, device=rewards.device)
    for t in reversed(range(T)):
        mt = m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mt
        adv[:, t] = last
        # outside the response (padding after it) the next value stays 0 and nothing accumulates
        next_value = torch.where(mt.bool(), values[:, t].float(), next_value * 0)
    returns = (adv + values.float()) * m
    return adv, returns
