"""`alignlab analyze {weights,activations,attention,capacity,memory,rank} ...`: see docs/analysis.md."""
from __future__ import annotations

import importlib
import sys

from .common import AnalysisError

COMMANDS = {
    "weights": ("alignlab.analysis.weights", "what fine-tuning changed per layer and module (ΔW norms, effective rank)"),
    "activations": ("alignlab.analysis.activations", "residual-stream statistics per layer; gradient flow"),
    "attention": ("alignlab.analysis.attention", "attention entropy, distance, window mass per layer and head"),
    "capacity": ("alignlab.analysis.capacity", "memorised bits per parameter on random sequences; membership gap"),
    "memory": ("alignlab.analysis.memory", "peak memory per phase of one real training step vs the planner"),
    "rank": ("alignlab.analysis.rank_track", "effective rank of ΔW over training steps, per module type (analysis.rank_every)"),
}


def usage() -> str:
    return "usage: alignlab analyze <what> [args]\n\n" + "\n".join(f"  {k:<12} {d}" for k, (_, d) in COMMANDS.items())


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"alignlab analyze: unknown analysis {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0)
    except AnalysisError as exc:
        print(f"alignlab analyze {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
