"""Math word problems with the r1_zero reward: MATH-style and GSM8K-style JSONL, validated.

Accepted lines (one JSON object each):
  MATH:   {"problem": str, "solution": str with \\boxed{...}, "answer": str (optional if boxed)}
  GSM8K:  {"question": str, "answer": "reasoning ... #### 42"}
  eval:   {"prompt": str, "reference": str}
The built-in samples (the files of tasks.TASKS["math"] in alignlab/assets/) are small hand-written
sets so that everything runs offline; real data sets come from local files.
"""
from __future__ import annotations

import random
from pathlib import Path

from .. import ASSETS
from ..data import DataError, read_jsonl

SHAPES = ('a math line is {"problem", "solution"/"answer"} (MATH), {"question", "answer": "... #### N"} (GSM8K) '
          'or {"prompt", "reference"}')


def parse_example(obj: dict, where: str) -> dict:
    """-> {"id", "question", "answer", "solution"?}; raises DataError naming FILE:LINE."""
    from ..rewards.math import extract_boxed

    def need_str(key):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise DataError(f"{where}: {key!r} must be a non-empty string; {SHAPES}")
        return obj[key]

    if "problem" in obj:
        q = need_str("problem")
        ans = obj.get("answer")
        if ans is None:
            sol = obj.get("solution")
            ans = extract_boxed(sol) if isinstance(sol, str) else None
            if ans is None:
                raise DataError(f"{where}: MATH line has no 'answer' and its 'solution' has no \\boxed{{...}}")
        return {"id": obj.get("id", where), "question": q, "answer": str(ans), "solution": obj.get("solution")}
    if "question" in obj:
        q, a = need_str("question"), need_str("answer")
        if "####" not in a:
            raise DataError(f"{where}: GSM8K 'answer' must end with '#### <final answer>'")
        reasoning, final = a.rsplit("####", 1)
        return {"id": obj.get("id", where), "question": q, "answer": final.strip().replace(",", ""),
                "solution": reasoning.strip()}
    if "prompt" in obj:
        return {"id": obj.get("id", where), "question": need_str("prompt"), "answer": need_str("reference")}
    raise DataError(f"{where}: unrecognised line (keys: {', '.join(sorted(obj)) or 'none'}); {SHAPES}")


def load_file(path: str | Path) -> list[dict]:
    return [parse_example(obj, f"{path}:{n}") for n, obj in read_jsonl(path)]


def task(cfg, seed: int):
    from ..rewards.math import r1_zero_reward
    from . import TASKS, Task, format_prompt

    def shape(rows):
        return [{**r, "prompt": format_prompt(r["question"], cfg.prompt if cfg.prompt != "plain" else "question_only")}
                for r in rows]

    builtin = TASKS["math"]
    train = shape(load_file(cfg.train or ASSETS / builtin.train))
    held = shape(load_file(cfg.eval or ASSETS / builtin.held_out))
    random.Random(seed).shuffle(held)
    reward = r1_zero_reward if cfg.prompt == "r1_zero" else _answer_only_reward
    return Task("math", train, held, reward, stop=["</answer>"] if cfg.prompt == "r1_zero" else [], seed=seed)


def _answer_only_reward(completion: str, answer: str) -> dict:
    """question_only prompts have no format to follow: grade a boxed answer, else the last number."""
    import re

    from ..rewards.math import extract_boxed, grade_answer

    pred = extract_boxed(completion)
    if pred is None:
        nums = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", completion)
        pred = nums[-1] if nums else None
    ok = pred is not None and grade_answer(pred, answer)
    return {"format_reward": float(pred is not None), "answer_reward": float(ok), "reward": float(ok)}
