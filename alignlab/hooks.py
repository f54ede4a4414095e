"""Lifecycle hooks: plain objects whose methods the loops call, when present.

    on_start(ctx) · on_step_end(ctx, step, row) · on_eval(ctx, step, metrics) · on_save(ctx, step, path)

Name them in a config (`training.hooks: ["mypkg.hooks:Logger"]`; a class is instantiated) or pass
them to a loop's `main(cfg, hooks=[...])`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass
class Context:
    """What hooks receive: read anything, change at your own risk."""

    cfg: object
    run: object
    model: object
    tokenizer: object
    optimizer: object


def load(paths: list[str], extra: list | None = None) -> list:
    hooks = list(extra or [])
    for spec in paths:
        mod, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        hooks.append(obj() if isinstance(obj, type) else obj)
    return hooks


def call(hooks: list, event: str, *args) -> None:
    for h in hooks:
        fn = getattr(h, event, None)
        if fn is not None:
            fn(*args)
