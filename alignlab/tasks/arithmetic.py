"""Synthetic arithmetic: `a op b =` -> result, with a train / held-out split that never overlaps.

The universe is every (a, op, b) with 0 <= a, b <= max_operand. A problem belongs to the held-out
pool when a hash of its text falls in the first 10% of buckets, so the split is fixed by the
problem itself (not by the sampling seed) and no held-out problem can ever appear in training.
"""
from __future__ import annotations

import hashlib
import random
import re

HELD_OUT_PERCENT = 10


def _answer(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def is_held_out(question: str) -> bool:
    h = int.from_bytes(hashlib.sha1(question.encode()).digest()[:4], "big")
    return h % 100 < HELD_OUT_PERCENT


def problems(max_operand: int, ops: list[str], split: str) -> list[dict]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be train or eval, not {split!r}")
    out = []
    for op in ops:
        for a in range(max_operand + 1):
            for b in range(max_operand + 1):
                q = f"{a}{op}{b}="
                if is_held_out(q) == (split == "eval"):
                    out.append({"id": f"arith-{a}{op}{b}", "prompt": q, "response": str(_answer(a, op, b)),
                                "answer": str(_answer(a, op, b))})
    return out


def sample(n: int, max_operand: int, ops: list[str], split: str, seed: int) -> list[dict]:
    """n problems from the split's pool (without replacement while the pool lasts)."""
    pool = problems(max_operand, ops, split)
    rng = random.Random(f"{seed}-{split}")
    if n <= len(pool):
        return rng.sample(pool, n)
    return [rng.choice(pool) for _ in range(n)]


def exact_match(completion: str, answer: str) -> bool:
    return completion.strip() == answer.strip()


def arithmetic_reward(completion: str, answer: str) -> dict:
    """Exact-answer reward. format: the completion (up to EOS) is one integer; answer: it is the
    right one. The r1_zero style (`... </think> <answer> 42 </answer>`) is graded on the tag content."""
    text = completion.strip()
    if "<answer>" in text:
        from ..rewards.math import extract_answer

        inner = extract_answer(text)
        if inner is None:
            return {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}
        text = inner.strip()
    well_formed = re.fullmatch(r"-?[0-9]+", text) is not None  # ASCII digits only
    right = well_formed and int(text) == int(answer)
    return {"format_reward": float(well_formed), "answer_reward": float(right), "reward": float(right)}


def task(cfg, seed: int):
    from . import Task, format_prompt

    a = cfg.arithmetic

    def shape(rows):
        out = []
        for r in rows:
            q = r["prompt"]
            prompt = q if cfg.prompt == "plain" else format_prompt(f"What is {q[:-1]}?", cfg.prompt)
            out.append({"id": r["id"], "question": q, "prompt": prompt, "answer": r["answer"]})
        return out

    train = shape(problems(a.max_operand, list(a.ops), "train"))
    held = shape(sample(a.n_eval, a.max_operand, list(a.ops), "eval", seed))
    stop = ["</answer>"] if cfg.prompt == "r1_zero" else []
    return Task("arithmetic", train, held, arithmetic_reward, stop=stop, seed=seed)
