"""`alignlab <command>`: a thin dispatcher. Each command parses its own arguments and calls a
`main()` that takes a typed config (training) or an argv list (tools)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .config import ALGORITHMS

# Commands implemented in their own modules, imported only when used (fast start, no torch for `plan`).
TOOLS = {
    "plan": ("alignlab.plan.cli", "hyperparameter and memory planner (no GPU needed)"),
    "eval": ("alignlab.eval.run", "generate on a task, grade, write eval files with bootstrap CIs"),
    "compare": ("alignlab.eval.compare", "paired statistical comparison of evaluated runs"),
    "analyze": ("alignlab.analysis.cli", "see inside a model: weights, activations, attention, capacity, memory"),
    "preflight": ("alignlab.preflight", "before spending GPU hours: masks, gradient accumulation, memory, time; go/no-go"),
    "report": ("alignlab.analysis.report", "one self-contained HTML page of a run (curves, samples, analyses)"),
    "blend": ("alignlab.lora.blend", "combine LoRA adapters on their weight deltas (linear, cat, svd, ties, dare, magnitude)"),
}
TRAIN = ALGORITHMS  # one table for the commands, the pipeline's stage kinds and StageConfig.kind


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def run_training(algo: str, argv: list[str]) -> int:
    from . import config as C

    module, schema_name, desc = TRAIN[algo]
    ap = argparse.ArgumentParser(prog=f"alignlab {algo}", description=desc,
                                 epilog="overrides: dotted key=value pairs, e.g. optim.lr=1e-4 lora.enabled=true")
    ap.add_argument("--config", "-c", help="YAML file, or the name of a packaged config (e.g. sft_tiny)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument("--nproc", type=int, metavar="N", help=(
        "train on N processes of this machine: runs `torchrun --nproc-per-node N -m alignlab.cli` with the same "
        "arguments (one per GPU; gloo processes on CPU). docs/distributed.md"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    schema = getattr(C, schema_name)
    cfg = C.load_config(schema, args.config, args.overrides)  # a bad config fails here, before torchrun starts
    if args.nproc is not None and not args.print_config:
        return exec_torchrun(args.nproc, [algo, *_without_nproc(argv)])
    if args.print_config:
        print(C.dump_config(cfg), end="")
        return 0
    _quiet_libraries()
    if getattr(getattr(cfg, "sampling", None), "backend", "hf") == "vllm":  # fail before any model loads
        from .rollout.vllm import check_available

        check_available()
    run_dir = importlib.import_module(module).main(cfg)
    d = _distributed()
    if d is None or d.current().is_main:
        print(f"run directory: {run_dir}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def exec_torchrun(nproc: int, argv: list[str]) -> int:
    """`--nproc N`: replace this process with torchrun (PyTorch's launcher, `python -m torch.distributed.run`)
    starting N copies of this command on this machine. Inside torchrun it is an error: torchrun's own
    --nproc-per-node already decided."""
    if nproc < 1:
        print(f"error: --nproc {nproc}: give a number of processes >= 1", file=sys.stderr)
        return 2
    if "LOCAL_RANK" in os.environ:
        print("error: --nproc inside torchrun: torchrun already started the processes; drop --nproc",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "alignlab.cli", *argv]
    print("running: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


def make_tiny(argv: list[str]) -> int:
    from .tiny import ARCHS, DEFAULT_SIZE

    ap = argparse.ArgumentParser(prog="alignlab make-tiny", description="build a tiny random model + tokenizer offline")
    ap.add_argument("--arch", choices=ARCHS, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    for k, v in DEFAULT_SIZE.items():
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=v)
    args = ap.parse_args(argv)
    _quiet_libraries()
    from .tiny import make_tiny as build

    sizes = {k: getattr(args, k) for k in DEFAULT_SIZE}
    out = build(args.arch, args.out, seed=args.seed, **sizes)
    print(f"wrote {out} ({args.arch}); load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def merge_lora(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab merge-lora", description="fold a LoRA adapter into its base model")
    ap.add_argument("--adapter", required=True, help="adapter folder (e.g. runs/x/checkpoints/step_100)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", help="base model path (default: the one recorded in adapter_config.json)")
    args = ap.parse_args(argv)
    _quiet_libraries()
    from .models import merge_adapter

    print(f"wrote {merge_adapter(args.adapter, args.out, args.base)}")
    return 0


def demo(argv: list[str]) -> int:
    _quiet_libraries()
    from .demo import main as demo_main

    return demo_main(argv)


def pipeline(argv: list[str]) -> int:
    _quiet_libraries()
    from .pipeline import main as pipeline_main

    return pipeline_main(argv)


BUILTIN = {"make-tiny": (make_tiny, "build a tiny model offline"), "merge-lora": (merge_lora, "merge a LoRA adapter"),
           "pipeline": (pipeline, "chain stages: SFT -> RM -> PPO / DPO / GRPO, resumable stage by stage"),
           "demo": (demo, "the end-to-end demo on a tiny model")}


def usage() -> str:
    lines = ["usage: alignlab <command> [args]", "", "commands:"]
    for name, (_, _, desc) in TRAIN.items():
        lines.append(f"  {name:<12} {desc}")
    for name, (_, desc) in {**BUILTIN, **TOOLS}.items():
        lines.append(f"  {name:<12} {desc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    # quiet transformers / hub progress bars without importing them (`plan` must stay torch-free)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .errors import CheckpointError, ConfigError, DataError, TrainingDiverged

    try:
        if cmd in TRAIN:
            return _finished(run_training(cmd, rest))
        if cmd in BUILTIN:
            return _finished(BUILTIN[cmd][0](rest))
        if cmd in TOOLS:
            return int(importlib.import_module(TOOLS[cmd][0]).main(rest) or 0)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {_on_rank(exc)}", file=sys.stderr)
        return _failed(exc, 2)
    except (TrainingDiverged, CheckpointError) as exc:  # and WatchdogStop, a TrainingDiverged: "watchdog stopped..."
        print(f"error: {_on_rank(exc)}", file=sys.stderr)
        return _failed(exc, 3)
    except BaseException as exc:
        if _distributed() is None:
            raise
        import traceback

        traceback.print_exc()
        return _failed(exc, 1)
    print(f"unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
    return 2


def _distributed():
    """alignlab.distributed when this process is one of several ranks (never imported by `plan`)."""
    mod = sys.modules.get("alignlab.distributed")
    return mod if mod is not None and mod.current().active else None


def _on_rank(exc) -> str:
    d = _distributed()
    return f"(rank {d.current().rank}) {exc}" if d is not None and d.current().world > 1 else str(exc)


def _finished(code: int) -> int:
    d = _distributed()
    if d is not None:
        d.teardown()
    return code


def _failed(exc, code: int) -> int:
    """A rank's error: tell the other ranks (they print it and stop), then leave at once."""
    d = _distributed()
    if d is None or d.current().world == 1:
        return code
    d.report_failure(exc)
    d.exit_failed(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
