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


# ----------------------------------------------------------------------------------------------
# Policy gradient (GRPO family). Per-token losses are (B, T); advantages broadcast as (B, 1).
# ----------------------------------------------------------------------------------------------


def _col(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1) if x.dim() == 1 else x


def pg_reinforce(advantages: torch.Tensor, policy_log_probs: torch.Tensor) -> torch.Tensor:
    """REINFORCE per-token loss: -A * logp. A: (B,) or (B, 1) (raw rewards for no baseline, advantages
    otherwise); logp: (B, T) -> (B, T)."""
    return -_col(advantages).to(policy_log_probs.dtype) * policy_log_probs


def pg_clip_asymmetric(advantages, policy_log_probs, old_log_probs, eps_low: float, eps_high: float):
    """Clip-higher (DAPO, arXiv:2503.14476): rho clipped to [1 - eps_low, 1 + eps_high]."""
    a = _col(advantages).to(policy_log_probs.dtype)
    ratio = torch.exp(policy_log_probs - old_log_probs)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a
    loss = -torch.minimum(unclipped, clipped)
    return loss, {"clipped": clipped < unclipped, "ratio": ratio.detach(),
                  "clipped_low": (ratio < 1 - eps_low) & (a < 0), "clipped_high": (ratio > 1 + eps_high) & (a > 0)}


def gspo_loss(advantages, policy_log_probs, old_log_probs, response_mask, eps_low: float, eps_high: float):
    """GSPO (arXiv:2507.18071), token form: the sequence ratio s_i = exp(mean_t(logp - old)) is
    clipped per sequence; token t carries s_i * pi_t / sg(pi_t), so the gradient equals GSPO's
    when aggregated with seq_mean."""
    a = _col(advantages).to(policy_log_probs.dtype)
    seq_log_ratio = masked_mean(policy_log_probs - old_log_probs, response_mask, dim=-1)  # (B,)
    s = torch.exp(seq_log_ratio.detach()[:, None] + policy_log_probs - policy_log_probs.detach())  # (B, T)
    unclipped = s * a
    clipped = torch.clamp(s, 1 - eps_low, 1 + eps_high) * a
    loss = -torch.minimum(unclipped, clipped)
    return loss, {"clipped": clipped < unclipped, "ratio": s.detach()}


def token_mean(per_token, mask, n_tokens, n_seqs, constant=None):
    """sum(mask * l) / n_tokens (DAPO; every token weighs the same)."""
    return masked_normalize(per_token, mask, normalize_constant=n_tokens)


def seq_mean(per_token, mask, n_tokens, n_seqs, constant=None):
    """sum_i masked_mean_t(per_token_i) / n_seqs (GRPO paper; every sequence weighs the same; an empty
    response adds 0)."""
    return masked_mean(per_token, mask, dim=-1).nan_to_num(0.0).sum() / n_seqs


def constant_normalize(per_token, mask, n_tokens, n_seqs, constant=None):
    """sum(mask * l) / (constant * n_seqs) (Dr. GRPO: a fixed length normaliser, e.g. max_new_tokens)."""
    if not constant:
        raise ValueError("aggregate mode 'constant' needs the constant (e.g. max_new_tokens)")
    return masked_normalize(per_token, mask, normalize_constant=constant * n_seqs)


# How a (B, T) per-token loss becomes the micro-batch's share of the step's loss; the counts are the
# whole optimizer step's, so micro-batching cannot change the update.
AGGREGATIONS = {"token_mean": token_mean, "seq_mean": seq_mean, "constant": constant_normalize}


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, n_tokens: float, n_seqs: float,
              constant: float | None = None) -> torch.Tensor:
    """AGGREGATIONS[mode]; per_token, mask: (B, T) -> scalar."""
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}: {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[mode](per_token, mask, n_tokens, n_seqs, constant)


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimators of KL(pi || ref) from samples of pi (Schulman, "Approximating KL
    divergence"), with log r = ref_logp - logp:  k1 = -log r;  k2 = (log r)^2 / 2;
    k3 = r - 1 - log r (unbiased, always >= 0; the GRPO paper's choice)."""
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}: {', '.join(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[kind](ref_logps - logps)


# Per-token KL(pi || ref) estimators of log r = ref_logp - logp, for samples drawn from pi.
KL_ESTIMATORS = {"k1": lambda log_r: -log_r, "k2": lambda log_r: 0.5 * log_r**2,
                 "k3": lambda log_r: torch.exp(log_r) - 1 - log_r}


def truncated_is_weights(train_logps: torch.Tensor, sampler_logps: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings
    you off-policy RL training"): the per-token weight min(p_train(y) / p_sampler(y), cap), no grad.

    Multiplying the policy-gradient loss by it corrects for a sampler (vLLM kernels, half precision)
    that does not draw from exactly the distribution the trainer computes; the cap bounds the
    variance. `train_logps` are the trainer's log-probs of the sampled tokens before the update."""
    if cap <= 0:
        raise ValueError(f"truncated_is_weights needs cap > 0, got {cap}")
    return torch.exp(train_logps.detach() - sampler_logps.detach()).clamp(max=cap)


# ----------------------------------------------------------------------------------------------
# Preferences: the DPO family and Bradley-Terry. Inputs are per-sequence log-probs (B,) summed over
# response tokens (SimPO: averaged). Each returns (per-pair loss (B,), stats).
# ----------------------------------------------------------------------------------------------


def _logratio_margin(pi_c, pi_r, ref_c, ref_r):
    """h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)), (B,)."""
    return (pi_c - ref_c) - (pi_r - ref_r)


def dpo_sigmoid(pi_c, pi_r, ref_c, ref_r, beta: float, label_smoothing: float = 0.0):
    """DPO (arXiv:2305.18290): -log sigmoid(beta h); with label_smoothing eps, conservative DPO
    (cDPO): -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). At pi == ref the loss is log 2."""
    h = beta * _logratio_margin(pi_c, pi_r, ref_c, ref_r)
    loss = -(1 - label_smoothing) * torch.nn.functional.logsigmoid(h) - label_smoothing * torch.nn.functional.logsigmoid(-h)
    return loss, _pref_stats(pi_c, pi_r, ref_c, ref_r, beta)


def dpo_ipo(pi_c, pi_r, ref_c, ref_r, beta: float, n_chosen, n_rejected):
    """IPO (arXiv:2310.12036, eq. 17): (h - 1/(2 beta))^2, a squared loss that does not saturate, with
    h = (pi_c - ref_c) / n_chosen - (pi_r - ref_r) / n_rejected. All (B,); n_* are each completion's
    token count (the form the paper's results use, as in TRL), or 1 for the token-summed margin."""
    pi_c, ref_c, pi_r, ref_r = pi_c / n_chosen, ref_c / n_chosen, pi_r / n_rejected, ref_r / n_rejected
    h = _logratio_margin(pi_c, pi_r, ref_c, ref_r)
    return (h - 1 / (2 * beta)) ** 2, _pref_stats(pi_c, pi_r, ref_c, ref_r, beta)


def dpo_hinge(pi_c, pi_r, ref_c, ref_r, beta: float, label_smoothing: float = 0.0):
    """Hinge (SLiC, arXiv:2305.10425): max(0, 1 - beta h)."""
    h = beta * _logratio_margin(pi_c, pi_r, ref_c, ref_r)
    return torch.relu(1 - h), _pref_stats(pi_c, pi_r, ref_c, ref_r, beta)


def simpo(avg_c, avg_r, beta: float, gamma: float):
    """SimPO (arXiv:2405.14734), reference-free: -log sigmoid(beta (avg_logp_c - avg_logp_r) - gamma),
    with per-token average log-probs (length normalised)."""
    h = beta * (avg_c - avg_r) - gamma
    loss = -torch.nn.functional.logsigmoid(h)
    rc, rr = (beta * avg_c).detach(), (beta * avg_r).detach()
    return loss, {"rewards/chosen": rc, "rewards/rejected": rr, "rewards/margin": rc - rr,
                  "rewards/accuracy": (rc > rr).float()}


def _pref_stats(pi_c, pi_r, ref_c, ref_r, beta):
    rc, rr = (beta * (pi_c - ref_c)).detach(), (beta * (pi_r - ref_r)).detach()
    return {"rewards/chosen": rc, "rewards/rejected": rr, "rewards/margin": rc - rr, "rewards/accuracy": (rc > rr).float()}


def bradley_terry(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, center_coef: float = 0.0):
    """Reward-model loss: -log sigmoid(r_c - r_r), plus center_coef * (r_c + r_r)^2 to keep rewards
    centred at 0 (Eisenstein et al., arXiv:2312.09244). Mean over pairs. -> (loss, stats)."""
    loss = -torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards)
    if center_coef:
        loss = loss + center_coef * (chosen_rewards + rejected_rewards) ** 2
    return loss.mean(), {"accuracy": (chosen_rewards > rejected_rewards).float().mean().detach(),
                         "margin": (chosen_rewards - rejected_rewards).mean().detach()}


def value_loss_clipped(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float, n_tokens: float) -> tuple[torch.Tensor, dict]:
    """PPO value loss with clipping (arXiv:1707.06347 as in OpenAI baselines):
    0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2), summed over masked tokens / n_tokens."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    frac = masked_normalize(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask, normalize_constant=n_tokens)
    return masked_normalize(per_token, mask, normalize_constant=n_tokens), {"value/clip_frac": frac.detach()}
