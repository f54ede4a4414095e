"""Hybrid reward: reward = alpha * heuristic + beta * model_score, with optional running normalisation.

    hr = HybridReward(alpha=0.5, beta=0.5, normalize=True)
    rows = hr(completions, model_scores=rm_scores)      # one dict per text
    run.log(step, **HybridReward.summarize(rows))       # reward/mean, reward/heuristic, reward/model, ...
    trainer_state["hybrid_reward"] = hr.state_dict()     # exact resume of the running statistics

The heuristic part is `alignlab.rewards.heuristic.heuristic_reward` (range [-1, 1]); the model part
is whatever scalar a reward model gives (unbounded). Their scales differ, which is what
`normalize=True` is for: each component then goes through its own `RunningNorm` before mixing.
"""
from __future__ import annotations

import math
from typing import Iterable

from .heuristic import heuristic_reward


class RunningNorm:
    """Running mean and standard deviation (Welford's algorithm, one value at a time, float64).

    normalize(x) = clip((x - mean) / (std + eps), -clip, clip)   (no centring when center=False)

    std is the population standard deviation sqrt(M2 / count); before two values have been seen
    it is taken as 1 (and the mean as 0 before any), so early calls neither divide by zero nor
    blow up. state_dict() holds plain Python numbers; load_state_dict() restores them exactly, so a
    resumed run normalises bit-for-bit as an uninterrupted one."""

    def __init__(self, eps: float = 1e-8, clip: float | None = 5.0, center: bool = True):
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {clip}")
        self.eps, self.clip, self.center = float(eps), clip, bool(center)
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: float | Iterable[float]) -> None:
        for v in _floats(x):
            if not math.isfinite(v):
                raise ValueError(f"RunningNorm.update got a non-finite value {v}")
            self.count += 1
            delta = v - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (v - self.mean)

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count >= 2 else 1.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalize(self, x: float | Iterable[float]) -> float | list[float]:
        """Normalise one value (-> float) or several (-> list) with the current statistics."""
        def one(v: float) -> float:
            z = ((v - self.mean) if self.center else v) / (self.std + self.eps)
            return z if self.clip is None else max(-self.clip, min(self.clip, z))

        if isinstance(x, (int, float)):
            return one(float(x))
        return [one(v) for v in _floats(x)]

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "eps": self.eps, "clip": self.clip,
                "center": self.center}

    def load_state_dict(self, state: dict) -> None:
        missing = {"count", "mean", "m2"} - set(state)
        if missing:
            raise KeyError(f"RunningNorm state is missing {sorted(missing)}")
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.eps = float(state.get("eps", self.eps))
        self.clip = state.get("clip", self.clip)
        self.center = bool(state.get("center", self.center))


def _floats(x) -> list[float]:
    if hasattr(x, "tolist"):  # torch tensor / numpy array
        x = x.tolist()
    if isinstance(x, (int, float)):
        return [float(x)]
    return [float(v) for v in x]


class HybridReward:
    """reward = alpha * heuristic + beta * model, per text.

    `__call__(texts, model_scores)` returns one dict per text with
      heuristic, model          the two components as they enter the formula (after running
                                normalisation when normalize=True; raw otherwise), so
                                reward == alpha * heuristic + beta * model holds exactly;
      heuristic_raw, model_raw  before normalisation (heuristic_raw in [-1, 1]);
      toxicity, length_penalty, repetition_penalty   the heuristic's parts (see heuristic.py);
      reward.
    model_scores=None means "no reward model": model and model_raw are 0.0, so reward is
    alpha * heuristic alone (beta is not renormalised to 0 and alpha not to 1: set alpha=1 for a
    pure heuristic reward); the model component's running statistics are then left untouched.
    With normalize=True each call first updates each component's RunningNorm with the batch, then
    normalises the batch with the updated statistics (so the first batch is normalised by itself).
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, normalize: bool = False,
                 heuristic_weights: dict[str, float] | None = None, *, length_target: tuple[int, int] = (1, 128),
                 length_unit: str = "words", tokenizer=None, ngram: int = 3, norm_clip: float | None = 5.0):
        for name, v in (("alpha", alpha), ("beta", beta)):
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v}")
        self.alpha, self.beta, self.normalize = float(alpha), float(beta), bool(normalize)
        self.heuristic_kwargs = dict(weights=heuristic_weights, length_target=tuple(length_target),
                                     length_unit=length_unit, tokenizer=tokenizer, ngram=ngram)
        heuristic_reward("check the arguments", **self.heuristic_kwargs)  # refuse bad weights/units now
        self.heuristic_norm = RunningNorm(clip=norm_clip)
        self.model_norm = RunningNorm(clip=norm_clip)

    def __call__(self, texts: list[str], model_scores: list[float] | None = None) -> list[dict]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        parts = [heuristic_reward(t, **self.heuristic_kwargs) for t in texts]
        h_raw = [p["heuristic"] for p in parts]
        if model_scores is None:
            m_raw = [0.0] * len(texts)
        else:
            m_raw = _floats(model_scores)
            if len(m_raw) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(m_raw)} model scores")
            bad = [i for i, v in enumerate(m_raw) if not math.isfinite(v)]
            if bad:
                raise ValueError(f"model score(s) at index {bad[:5]} are not finite: {[m_raw[i] for i in bad[:5]]}")
        h, m = h_raw, m_raw
        if self.normalize and texts:
            self.heuristic_norm.update(h_raw)
            h = self.heuristic_norm.normalize(h_raw)
            if model_scores is not None:
                self.model_norm.update(m_raw)
                m = self.model_norm.normalize(m_raw)
        rows = []
        for p, hr, mr, hv, mv in zip(parts, h_raw, m_raw, h, m):
            rows.append({"reward": self.alpha * hv + self.beta * mv, "heuristic": hv, "model": mv,
                         "heuristic_raw": hr, "model_raw": mr, "toxicity": p["toxicity"],
                         "length_penalty": p["length_penalty"], "repetition_penalty": p["repetition_penalty"]})
        return rows

    @staticmethod
    def summarize(rows: list[dict], prefix: str = "reward/") -> dict[str, float]:
        """Per-component means for logging: {prefix}mean (of reward), {prefix}std, and
        {prefix}<component> for every other key. Empty rows -> {}."""
        if not rows:
            return {}
        n = len(rows)
        out = {}
        for k in rows[0]:
            mean = sum(r[k] for r in rows) / n
            out[f"{prefix}mean" if k == "reward" else f"{prefix}{k}"] = mean
        mu = out[f"{prefix}mean"]
        out[f"{prefix}std"] = math.sqrt(sum((r["reward"] - mu) ** 2 for r in rows) / n)
        return out

    def state_dict(self) -> dict:
        return {"heuristic_norm": self.heuristic_norm.state_dict(), "model_norm": self.model_norm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heuristic_norm.load_state_dict(state["heuristic_norm"])
        self.model_norm.load_state_dict(state["model_norm"])
