"""What both rollout backends and the loops share: the `Rollout` they return, how a completion is
cut (at EOS or at the token completing a stop string), how a prompt's BOS is detected, each step's
sampling seed, and the sampler-vs-trainer log-prob mismatch the loops log."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data import pad_and_shift


@dataclass
class Rollout:
    prompts: list[str]                        # P prompts
    completions: list[str]                    # P * n texts, the n samples of a prompt consecutive
    prompt_ids: list[list[int]] = field(default_factory=list)       # P * n (repeated per sample)
    completion_ids: list[list[int]] = field(default_factory=list)   # P * n, up to and including EOS/stop
    sampling_logps: list[list[float]] | None = None                  # P * n, one per completion token
    n: int = 1

    def tensors(self, pad_id: int) -> dict[str, torch.Tensor]:
        """Right-padded training tensors, each (B, T): input_ids, labels, response_mask,
        attention_mask, and sampling_logps aligned with the response positions of `labels`."""
        seqs = [p + c for p, c in zip(self.prompt_ids, self.completion_ids)]
        masks = [[False] * len(p) + [True] * len(c) for p, c in zip(self.prompt_ids, self.completion_ids)]
        out = pad_and_shift(seqs, masks, pad_id)
        if self.sampling_logps is not None:
            lp = torch.zeros(out["labels"].shape, dtype=torch.float32)
            for i, (p, vals) in enumerate(zip(self.prompt_ids, self.sampling_logps)):
                lp[i, len(p) - 1 : len(p) - 1 + len(vals)] = torch.tensor(vals, dtype=torch.float32)
            out["sampling_logps"] = lp
        return out


def starts_with_bos(tokenizer, text: str) -> bool:
    return bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)


def cut(row: list[int], tokenizer, stop: list[str] | None) -> list[int]:
    """Up to and including EOS; else up to the token that completes a stop string; else drop the
    padding generate() appends after a finished sequence."""
    eos = tokenizer.eos_token_id
    if eos in row:
        return row[: row.index(eos) + 1]
    if stop and any(s in tokenizer.decode(row, skip_special_tokens=False) for s in stop):
        lo, hi = 1, len(row)  # smallest prefix containing a stop string (containment is monotone)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(row[:mid], skip_special_tokens=False) for s in stop):
                hi = mid
            else:
                lo = mid + 1
        return row[:lo]
    pad = tokenizer.pad_token_id
    while row and row[-1] == pad:
        row = row[:-1]
    return row


def mismatch_stats(train_logps: torch.Tensor, sampling_logps: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the sampler's log-probs are from the trainer's recompute, over response tokens:
    exactly 0 on-policy with the HF backend at top_p=1; nonzero with top-p, half precision or vLLM."""
    d = (train_logps.float() - sampling_logps.float())[mask.bool()]
    if d.numel() == 0:
        return {}
    return {"mismatch/logp_abs_mean": d.abs().mean().item(), "mismatch/logp_abs_max": d.abs().max().item(),
            "mismatch/ratio_mean": d.exp().mean().item()}


def request_seeds(seed: int | None, n_prompts: int, n: int) -> list[int | None]:
    """One seed per prompt; the k-th of its n samples uses seed + k (vLLM's rule), so prompts get disjoint ranges."""
    if seed is None:
        return [None] * n_prompts
    return [(seed * 1_000_003 + i * n) % (2**62) for i in range(n_prompts)]


def step_seed(run_seed: int, step: int, draw: int = 0) -> int:
    """The sampling seed of a loop's step (and of a redraw within it): rollouts are a function of
    (run seed, step), so a resumed run samples what the uninterrupted one did (vLLM backend)."""
    return run_seed * 7919 + step * 31 + draw
