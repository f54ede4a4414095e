"""Evaluation tasks, their example files and prompt formatting.

Tasks and the fields each example (one JSONL line) needs:

    safety         id, prompt; optional should_refuse (bool) for precision / recall / F1
    summarization  id, prompt, reference (the reference summary); optional document
    code           id, prompt (the intent), reference (the reference snippet); optional test
                   (assert statements), setup (code run before the candidate)
    math           id, prompt (the problem), reference (the final answer)

Built-in samples (written for alignlab, no downloads) live in ``alignlab/assets/``:
``builtin:safety`` and friends, or pass a path. Math prompts are wrapped in the R1-Zero template
(``alignlab.rewards.math.R1_ZERO_PROMPT``) by ``format_prompt``; other tasks use the prompt as is.
"""
from __future__ import annotations

import os
from pathlib import Path

from alignlab import ASSETS
from alignlab.eval.io import EvalFileError, read_jsonl

DATA_DIR = ASSETS

TASKS = ("safety", "summarization", "code", "math")
ALIASES = {"harmlessness": "safety", "clinical_summarization": "summarization", "summarisation": "summarization",
           "summary": "summarization", "code_qa": "code", "conala": "code", "gsm8k": "math",
           "math500": "math"}
BUILTIN = {"safety": "safety_prompts.jsonl", "summarization": "summarization_sample.jsonl",
           "code": "code_qa_sample.jsonl", "math": "math_sample.jsonl"}
REQUIRED = {"safety": ("id", "prompt"), "summarization": ("id", "prompt", "reference"),
            "code": ("id", "prompt", "reference"), "math": ("id", "prompt", "reference")}


def canonical_task(task: str) -> str:
    t = ALIASES.get(task, task)
    if t not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)} "
                         f"(aliases: {', '.join(sorted(ALIASES))})")
    return t


def builtin_path(task: str) -> Path:
    return DATA_DIR / BUILTIN[canonical_task(task)]


def load_examples(task: str, path: str | os.PathLike | None = None) -> list[dict]:
    """Validated examples of a task. ``path`` None or ``builtin:<task>`` -> the built-in sample."""
    t = canonical_task(task)
    if path is None or str(path).startswith("builtin:"):
        name = str(path).split(":", 1)[1] if path else t
        p = builtin_path(name or t)
    else:
        p = Path(path)
    rows = read_jsonl(p, required=REQUIRED[t])
    seen: dict = {}
    for r in rows:
        ln = r.pop("_line")
        if r["id"] in seen:
            raise EvalFileError(f"{p}:{ln}: duplicate id {r['id']!r} (first on line {seen[r['id']]})")
        seen[r["id"]] = ln
        if not isinstance(r["prompt"], str) or not r["prompt"].strip():
            raise EvalFileError(f"{p}:{ln}: 'prompt' must be a non-empty string")
        if "reference" in REQUIRED[t] and not isinstance(r["reference"], str):
            raise EvalFileError(f"{p}:{ln}: 'reference' must be a string")
        if "should_refuse" in r and not isinstance(r["should_refuse"], bool):
            raise EvalFileError(f"{p}:{ln}: 'should_refuse' must be true or false")
        for k in ("test", "setup"):
            if k in r and not isinstance(r[k], str):
                raise EvalFileError(f"{p}:{ln}: {k!r} must be a string of Python code")
    return rows


def format_prompt(task: str, example: dict) -> str:
    """The text given to the model for one example."""
    t = canonical_task(task)
    if t == "math":
        from alignlab.rewards.math import R1_ZERO_PROMPT

        return R1_ZERO_PROMPT.format(question=example["prompt"])
    return example["prompt"]
