"""Built-in preference data sets, offline: {"id", "prompt", "chosen", "rejected", ...}. `data.load_pref_examples`
reads them as builtin:arithmetic and builtin:safety; the encoder reward model trains on them.

arithmetic_pairs(n, seed, split)   generated: "12+7=" -> chosen "19", rejected a plausible wrong answer.
                                   The split is the arithmetic task's own (alignlab.tasks.arithmetic
                                   .is_held_out on the problem text), so a held-out pair never shares
                                   its problem with a train pair, whatever n and seed are.
safety_pairs()                     hand-written, alignlab/assets/preferences_safety.jsonl (~60 pairs):
                                   harmful prompts (chosen: a refusal with a safe alternative;
                                   rejected: compliance or abuse) and benign prompts (chosen: a helpful
                                   answer; rejected: a needless refusal or an insult).
split_pairs(pairs, eval_fraction, seed)     a seeded train / held-out split of a pair list.
recombine_pairs(pairs, k, seed, group_by)   training-set augmentation for small hand-written sets.
"""
from __future__ import annotations

import random
from pathlib import Path

from .. import ASSETS
from ..jsonl import DataError, read_jsonl
from .arithmetic import _answer, problems

SAFETY_FILE = ASSETS / "preferences_safety.jsonl"

# Kinds of wrong answer, each a mistake a person or a weak model plausibly makes.
ERROR_KINDS = ("off_by_one", "off_by_small", "off_by_ten", "wrong_op", "digit_swap", "sign_flip")


def _wrong_candidates(a: int, op: str, b: int) -> dict[str, list[int]]:
    c = _answer(a, op, b)
    cands: dict[str, list[int]] = {
        "off_by_one": [c - 1, c + 1],
        "off_by_small": [c + d for d in (-5, -4, -3, -2, 2, 3, 4, 5)],
        "off_by_ten": [c - 10, c + 10],
        "wrong_op": [_answer(a, o, b) for o in ("+", "-", "*") if o != op],
        "digit_swap": [int(str(abs(c))[::-1]) * (1 if c >= 0 else -1)] if abs(c) >= 10 else [],
        "sign_flip": [-c] if op == "-" else [],
    }
    return {k: [w for w in v if w != c] for k, v in cands.items() if any(w != c for w in v)}


def arithmetic_pairs(n: int, seed: int = 0, split: str = "train", max_operand: int = 49,
                     ops: tuple[str, ...] | list[str] = ("+", "-")) -> list[dict]:
    """n preference pairs from the arithmetic task's `split` ("train" or "eval" = held out).

    Each: {"id", "prompt": "a<op>b=", "chosen": "<right answer>", "rejected": "<wrong answer>",
    "error": one of ERROR_KINDS}. The kind is drawn uniformly among those that apply to the
    problem (digit_swap needs a two-digit result, sign_flip a subtraction), then a wrong value
    uniformly within it. Problems are drawn without replacement while the pool lasts, then
    again (with a fresh wrong answer). Deterministic in (n, seed, split, max_operand, ops)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = problems(max_operand, list(ops), split)  # refuses a split other than train/eval
    rng = random.Random(f"prefs-{seed}-{split}-{max_operand}-{''.join(ops)}")
    out = []
    while len(out) < n:
        order = rng.sample(pool, len(pool))
        for p in order[: n - len(out)]:
            q = p["prompt"]
            a, op, b = _parse(q)
            cands = _wrong_candidates(a, op, b)
            kind = rng.choice(sorted(cands))
            wrong = rng.choice(cands[kind])
            out.append({"id": f"pref-arith-{q[:-1]}-{len(out)}", "prompt": q, "chosen": p["answer"],
                        "rejected": str(wrong), "error": kind})
    return out


def _parse(q: str) -> tuple[int, str, int]:
    body = q[:-1]
    for i, ch in enumerate(body):
        if i > 0 and ch in "+-*":
            return int(body[:i]), ch, int(body[i + 1:])
    raise ValueError(f"not an arithmetic prompt: {q!r}")


def safety_pairs(path: str | Path = SAFETY_FILE) -> list[dict]:
    """The hand-written safety preference set; every line is checked (id unique; prompt, chosen,
    rejected non-empty strings; chosen != rejected), errors name FILE:LINE."""
    rows, seen = [], set()
    for line, obj in read_jsonl(path, hint='each line must be {"id", "prompt", "chosen", "rejected", ...}'):
        for k in ("id", "prompt", "chosen", "rejected"):
            if not isinstance(obj.get(k), str) or not obj[k].strip():
                raise DataError(f"{path}:{line}: missing or empty '{k}' (a non-empty string)")
        if obj["id"] in seen:
            raise DataError(f"{path}:{line}: duplicate id {obj['id']!r}; ids must be unique")
        if obj["chosen"] == obj["rejected"]:
            raise DataError(f"{path}:{line}: chosen and rejected are identical")
        seen.add(obj["id"])
        rows.append(obj)
    return rows


def split_pairs(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded random split -> (train, held_out), each in the original order; the held-out part
    has round(len * eval_fraction) pairs."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(pairs)))
    random.Random(f"pair-split-{seed}").shuffle(order)
    held = set(order[: int(round(len(pairs) * eval_fraction))])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def recombine_pairs(pairs: list[dict], k: int, seed: int = 0, group_by: str = "kind") -> list[dict]:
    """The pairs plus, for each pair, k more with the same prompt and chosen response and the
    rejected response of another pair of the same group (pair[group_by], e.g. "benign"/"harmful").

    The idea: a needless refusal or an insult that is worse than the helpful answer to one benign
    prompt is also worse than the helpful answer to another; compliance with one harmful request
    is worse than refusing another. It multiplies a small hand-written set's training signal (the
    style of bad responses, separated from their topic). Apply it to the training part only, never
    to held-out pairs. The recombined rejected response is off-topic for its prompt, so these pairs
    are easier than the originals. Deterministic in (pairs, k, seed)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rng = random.Random(f"recombine-{seed}")
    out = list(pairs)
    for i, p in enumerate(pairs):
        others = [q for j, q in enumerate(pairs) if j != i and q.get(group_by) == p.get(group_by)
                  and q["rejected"] != p["chosen"]]
        for q in rng.sample(others, min(k, len(others))):
            out.append({**p, "id": f"{p.get('id', i)}+{q.get('id', '')}", "rejected": q["rejected"],
                        "recombined": True})
    return out
