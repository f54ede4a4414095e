"""Accelerator catalog (``alignlab/assets/gpus.json``) and lookup by name or alias."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .. import ASSETS
from .arch import PlanError

GPU_PATH = ASSETS / "gpus.json"


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    bf16: bool
    fp16: bool
    device: str  # cuda | mps | cpu
    overhead_gib: float
    compute_capability: str | None = None

    @property
    def label(self) -> str:
        cc = f", sm {self.compute_capability}" if self.compute_capability else ""
        return f"{self.name} ({self.memory_gib:.1f} GiB{cc})"


def load_gpus() -> dict[str, dict]:
    data = json.loads(GPU_PATH.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def gpu_names() -> list[str]:
    return list(load_gpus())


def _physical_memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return None


def lookup_gpu(name: str, memory_gib: float | None = None) -> GPU:
    gpus = load_gpus()
    low = name.lower().replace("_", "-")
    for key, g in gpus.items():
        names = [key] + list(g.get("aliases", []))
        if any(low == n.lower().replace("_", "-") for n in names):
            mem = memory_gib
            if mem is None:
                mem = g["memory_gib"]
                if g["device"] == "cpu":
                    mem = _physical_memory_gib() or mem
            return GPU(key, float(mem), bool(g["bf16"]), bool(g["fp16"]), g["device"], float(g["overhead_gib"]),
                       g.get("compute_capability"))
    raise PlanError(f"unknown GPU {name!r}; valid: {', '.join(gpus)} (or pass --gpu-memory GiB with a known type)")
