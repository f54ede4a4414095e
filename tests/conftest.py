"""Shared fixtures: tiny models of every architecture, built once per session, offline."""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARCHS = ("gemma3_text", "qwen2", "qwen3", "llama")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run where CUDA exists and are skipped (with the reason) everywhere else."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """tiny:<arch> model specs resolve into a per-session cache, never the user's."""
    os.environ["ALIGNLAB_CACHE"] = str(tmp_path_factory.mktemp("alignlab-cache"))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    from alignlab.tiny import make_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {a: make_tiny(a, root / a) for a in ARCHS}


@pytest.fixture(scope="session")
def qwen_dir(tiny_dirs):
    return tiny_dirs["qwen2"]


def sft_overrides(tmp_path, model_dir, name="run", **extra) -> list[str]:
    """A few-second SFT run on the tiny model."""
    base = {
        "name": name, "out_dir": str(tmp_path), "model.path": str(model_dir),
        "training.total_steps": 4, "training.global_batch_seqs": 8, "training.micro_batch": 4,
        "training.eval_every": 0, "training.save_every": 0, "optim.lr": 1e-3, "optim.warmup_ratio": 0.25,
        "data.arithmetic.n_train": 64, "data.arithmetic.n_eval": 8, "eval.max_examples": 8,
        "eval.max_new_tokens": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def load_sft(tmp_path, model_dir, name="run", **extra):
    from alignlab.config import SFTConfig, load_config

    return load_config(SFTConfig, "sft_tiny", sft_overrides(tmp_path, model_dir, name, **extra))


class StopAt:
    """A lifecycle hook that simulates an interruption (Ctrl-C) right after the checkpoint of `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, ctx, step, path):
        if step == self.step:
            raise KeyboardInterrupt


@pytest.fixture(scope="session")
def ragged_questions(tmp_path_factory):
    """Math questions (GSM8K style), four short and four long, so short sequences share a packed row (the
    arithmetic task's prompts are all about as long, so a packer that misplaces positions goes unnoticed)."""
    p = tmp_path_factory.mktemp("ragged") / "q.jsonl"
    long = "A farmer has {a} sheep and buys {b} more at the market, then sells half of all of them; how many are left?"
    rows = [{"question": f"{a}+{b}?", "answer": f"#### {a + b}"} for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))]
    rows += [{"question": long.format(a=a, b=b), "answer": f"#### {(a + b) // 2}"}
             for a, b in ((2, 4), (6, 8), (10, 2), (1, 3))]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p
