"""Loading the held-out examples of a task (`alignlab.tasks.TASKS`, the one registry) for
evaluation, and their prompt formatting.

The tasks with held-out files, and the fields each example (one JSONL line) needs:

    safety         id, prompt; optional should_refuse (bool) for precision / recall / F1
    summarization  id, prompt, reference (the reference summary); optional document
    code           id, prompt (the intent), reference (the reference snippet); optional test
                   (assert statements), setup (code run before the candidate)
    math           id, prompt (the problem), reference (the final answer)

Built-in samples (written for alignlab, no downloads) live in ``alignlab/assets/``:
``builtin:safety`` and friends, or pass a path. ``builtin:math`` is the math task's held-out set,
the same one `alignlab eval --task math` and the RL loops evaluate on. Math prompts are wrapped in
the R1-Zero template (``alignlab.rewards.math.R1_ZERO_PROMPT``) by ``format_prompt``; other tasks
use the prompt as is.
"""
from __future__ import annotations

import os
from pathlib import Path

from alignlab import ASSETS
from alignlab.eval.io import EvalFileError, read_jsonl
from alignlab.tasks import ALIASES, TASKS as REGISTRY

TASKS = tuple(name for name, t in REGISTRY.items() if t.held_out)  # arithmetic is generated, not read


def canonical_task(task: str) -> str:
    t = ALIASES.get(task, task)
    if t not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)} "
                         f"(aliases: {', '.join(sorted(ALIASES))})")
    return t


def builtin_path(task: str) -> Path:
    return ASSETS / REGISTRY[canonical_task(task)].held_out


def load_examples(task: str, path: str | os.PathLike | None = None) -> list[dict]:
    """Validated examples of a task. ``path`` None or ``builtin:<task>`` -> the built-in sample."""
    t = canonical_task(task)
    if path is None or str(path).startswith("builtin:"):
        name = str(path).split(":", 1)[1] if path else t
        p = builtin_path(name or t)
    else:
        p = Path(path)
    required = REGISTRY[t].fields
    rows = read_jsonl(p, required=required)
    seen: dict = {}
    for r in rows:
        ln = r.pop("_line")
        if r["id"] in seen:
            raise EvalFileError(f"{p}:{ln}: duplicate id {r['id']!r} (first on line {seen[r['id']]})")
        seen[r["id"]] = ln
        if not isinstance(r["prompt"], str) or not r["prompt"].strip():
            raise EvalFileError(f"{p}:{ln}: 'prompt' must be a non-empty string")
        if "reference" in required and not isinstance(r["reference"], str):
            raise EvalFileError(f"{p}:{ln}: 'reference' must be a string")
        if "should_refuse" in r and not isinstance(r["should_refuse"], bool):
            raise EvalFileError(f"{p}:{ln}: 'should_refuse' must be true or false")
        for k in ("test", "setup"):
            if k in r and not isinstance(r[k], str):
                raise EvalFileError(f"{p}:{ln}: {k!r} must be a string of Python code")
    return rows


def format_prompt(task: str, example: dict) -> str:
    """The text given to the model for one example."""
    if canonical_task(task) == "math":
        from alignlab.rewards.math import R1_ZERO_PROMPT

        return R1_ZERO_PROMPT.format(question=example["prompt"])
    return example["prompt"]
