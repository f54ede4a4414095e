"""The PPO loop's reward: one `score(examples, completions)` over the source `reward.source` names."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import RewardSection


def build_scorer(r: RewardSection, task, device, tok):
    """-> score(examples, completions) -> (scores (B,), {component: mean}) for `reward.source`:
    the task's verifiable reward, a reward model (an `alignlab rm` folder or the small encoder RM),
    the heuristic reward, or the hybrid alpha * heuristic + beta * model."""
    rm, encoder = None, None
    if r.rm_path:
        import json as _json

        from .. import models
        from . import encoder_rm

        root, adapters = models.adapter_chain(r.rm_path)  # a LoRA reward model: its adapter(s) folded into the base
        kind = None if adapters else _json.loads((Path(r.rm_path) / "config.json").read_text()).get("model_type")
        if kind == encoder_rm.MODEL_TYPE:  # the small encoder RM, scored with the policy's tokenizer
            encoder = encoder_rm.EncoderRewardModel.load(r.rm_path, device)
        else:
            from transformers import AutoModelForSequenceClassification

            rm_tok = models.start_tokenizer(r.rm_path)
            rm = AutoModelForSequenceClassification.from_pretrained(models.resolve_model_path(root), num_labels=1)
            rm = models.fold_adapters(rm, adapters).to(device).eval()
            rm.config.pad_token_id = rm_tok.pad_token_id

    @torch.no_grad()
    def rm_scores(examples: list[dict], completions: list[str]) -> list[float]:
        if encoder is not None:
            return encoder.score(tok, [e["prompt"] for e in examples], completions).tolist()
        texts = [e["prompt"] + c for e, c in zip(examples, completions)]
        rm_tok.padding_side = "right"
        enc = rm_tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=1024).to(device)
        return rm(**enc).logits.squeeze(-1).float().tolist()

    hybrid = None
    if r.source in ("heuristic", "hybrid"):
        from .hybrid import HybridReward

        alpha, beta = (r.alpha, r.beta) if r.source == "hybrid" else (1.0, 0.0)
        hybrid = HybridReward(alpha=alpha, beta=beta, normalize=r.normalize)

    def score(examples: list[dict], completions: list[str]):
        if r.source == "task":
            parts = [task.reward(c, e) for c, e in zip(completions, examples)]
            vals = [p["reward"] for p in parts]
            return torch.tensor(vals), {"reward/format": sum(p["format_reward"] for p in parts) / len(parts)}
        if r.source == "rm":
            vals = rm_scores(examples, completions)
            return torch.tensor(vals), {}
        model_scores = rm_scores(examples, completions) if r.rm_path else None
        out = hybrid(completions, model_scores)
        comps = {f"reward/{k}": sum(o[k] for o in out) / len(out) for k in out[0] if isinstance(out[0][k], (int, float))}
        return torch.tensor([o["reward"] for o in out]), comps

    return score
