"""A task = prompts + a reward + evaluation. `TASKS` is the one registry of tasks; `load(cfg.task, seed)`
returns a `Task` of a trainable one.

    task = tasks.load(TaskConfig(name="arithmetic"), seed=0)
    batch = task.sample_train(16, step=3)          # deterministic per (seed, step): exact resume
    task.reward(completion, batch[0])               # {"format_reward", "answer_reward", "reward"}

Trainable tasks (arithmetic, math) have a verifiable reward: the RL loops train on them and
`alignlab eval` grades them with it. The others (safety, summarization, code) are evaluated only,
their generations scored by `eval.scoring`; `eval.data.load_examples` reads their held-out files.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from ..config import TaskConfig
from ..rewards.math import R1_ZERO_PROMPT

QUESTION_ONLY_PROMPT = "{question}"


@dataclass(frozen=True)
class TaskInfo:
    """A task of the registry: can the RL loops train on it, and its built-in files (in alignlab/assets/)."""

    trainable: bool                # tasks.load builds a Task (prompts + reward) for ei, grpo, ppo and eval
    held_out: str | None           # built-in held-out examples; None: generated (arithmetic)
    train: str | None = None       # built-in training examples
    fields: tuple[str, ...] = ()   # what each line of a held-out file needs (eval.data.load_examples)


# Every task, written once. tasks.load, `alignlab eval --task`, eval.data and eval.scoring read it;
# TaskConfig.name lists the trainable ones (tests/test_rl_loops.py checks that they agree).
TASKS = {
    "arithmetic": TaskInfo(trainable=True, held_out=None),
    "math": TaskInfo(trainable=True, held_out="math_sample.jsonl", train="math_train_sample.jsonl",
                     fields=("id", "prompt", "reference")),
    "safety": TaskInfo(trainable=False, held_out="safety_prompts.jsonl", fields=("id", "prompt")),
    "summarization": TaskInfo(trainable=False, held_out="summarization_sample.jsonl",
                              fields=("id", "prompt", "reference")),
    "code": TaskInfo(trainable=False, held_out="code_qa_sample.jsonl", fields=("id", "prompt", "reference")),
}
ALIASES = {"harmlessness": "safety", "clinical_summarization": "summarization", "summarisation": "summarization",
           "summary": "summarization", "code_qa": "code", "conala": "code", "gsm8k": "math", "math500": "math"}


@dataclass
class Task:
    name: str
    train: list[dict]                          # each: id, question, answer (+ prompt after formatting)
    eval: list[dict]
    reward_fn: Callable[[str, str], dict]      # (completion, ground truth) -> reward dict
    stop: list[str] = field(default_factory=list)
    seed: int = 0

    def sample_train(self, n: int, step: int) -> list[dict]:
        rng = random.Random(f"{self.seed}-train-{step}")
        if n <= len(self.train):
            return rng.sample(self.train, n)
        return [rng.choice(self.train) for _ in range(n)]

    def reward(self, completion: str, example: dict) -> dict:
        return self.reward_fn(completion, example["answer"])


def format_prompt(question: str, style: str) -> str:
    if style == "r1_zero":
        return R1_ZERO_PROMPT.format(question=question)
    if style in ("question_only", "plain"):
        return QUESTION_ONLY_PROMPT.format(question=question)
    raise ValueError(f"unknown prompt style {style!r}")


def load(cfg: TaskConfig, seed: int = 0) -> Task:
    if not TASKS[cfg.name].trainable:
        raise ValueError(f"task {cfg.name!r} has no reward to train on; trainable: "
                         + ", ".join(n for n, t in TASKS.items() if t.trainable))
    if cfg.name == "arithmetic":
        from . import arithmetic

        return arithmetic.task(cfg, seed)
    from . import math as math_task

    return math_task.task(cfg, seed)


def evaluate(policy, tokenizer, task: Task, *, max_examples: int, max_new_tokens: int, batch_size: int = 64,
             stop: list[str] | None = None, sampler=None) -> tuple[dict, list[dict]]:
    """Greedy generations on the held-out examples, graded by the task's reward; on the loop's
    sampler when given (e.g. vLLM), else with transformers on `policy`.
    -> ({"eval/accuracy", "eval/format_rate"}, one row per example)."""
    from .. import rollout

    items = task.eval[:max_examples]
    sampler = sampler or rollout.HFSampler(policy, tokenizer)
    ro = sampler.generate([e["prompt"] for e in items], max_new_tokens=max_new_tokens, stop=stop or task.stop,
                          batch_size=batch_size)
    scores = [task.reward(c, e) for c, e in zip(ro.completions, items)]
    rows = [{"id": e["id"], "prompt": e["prompt"], "completion": c, "reference": e["answer"], **sc}
            for e, c, sc in zip(items, ro.completions, scores)]
    n = max(len(items), 1)
    return {"eval/accuracy": sum(x["reward"] for x in scores) / n,
            "eval/format_rate": sum(x["format_reward"] for x in scores) / n}, rows


def evaluate_run(policy, tokenizer, task: Task, cfg, sampler=None) -> tuple[dict, list[dict]]:
    """`evaluate` with an RL config's settings (cfg.eval, cfg.sampling.stop): what GRPO, EI and PPO run."""
    return evaluate(policy, tokenizer, task, max_examples=cfg.eval.max_examples, max_new_tokens=cfg.eval.max_new_tokens,
                    batch_size=cfg.eval.batch_size, stop=cfg.sampling.stop, sampler=sampler)
