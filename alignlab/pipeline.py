"""`alignlab pipeline -c staged_tiny`: chain stages (SFT -> reward model -> PPO, SFT -> DPO, SFT -> GRPO).

Each stage is an ordinary run directory `<out_dir>/<pipeline name>/<stage name>` made by the stage's
own loop and config. `model_from` makes an earlier stage's final checkpoint this stage's
`model.path`; `reward_from` makes an earlier reward-model stage this PPO stage's reward. Every stage
runs with `training.resume=auto`, so running the pipeline again continues where it stopped: a
finished stage is recognised and skipped, and an interrupted one resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from . import config as C
from . import tracking
from .checkpoint import list_checkpoints

KINDS = C.ALGORITHMS  # stage kind -> (loop module, config class, description)


def final_checkpoint(run_dir: Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"{run_dir} has no checkpoint; the stage did not finish")
    return ckpts[-1][1]


def stage_configs(cfg: C.PipelineConfig) -> list:
    """Every stage's typed config, validated up front: a typo in stage 3 fails before stage 1 runs."""
    root = Path(cfg.out_dir) / cfg.name
    out = []
    for st in cfg.stages:
        wiring = [f"out_dir={root}", f"name={st.name}", "training.resume=auto"]
        if st.model_from:
            wiring.append(f"model.path={root / st.model_from / 'checkpoints' / 'LATEST'}")
        if st.reward_from:
            wiring += ["reward.source=rm", f"reward.rm_path={root / st.reward_from / 'checkpoints' / 'LATEST'}"]
        schema = getattr(C, KINDS[st.kind][1])
        try:
            out.append(C.load_config(schema, st.config, wiring + st.overrides))
        except C.ConfigError as exc:
            raise C.ConfigError(f"stage {st.name!r} ({st.kind}): {exc}") from None
    return out


def _resolve_latest(cfg_obj, root: Path):
    """Swap the LATEST placeholders for the real final checkpoints, now that earlier stages ran."""
    updates = {}
    if "LATEST" in cfg_obj.model.path:
        updates["model"] = cfg_obj.model.model_copy(update={"path": str(final_checkpoint(Path(cfg_obj.model.path).parent.parent))})
    reward = getattr(cfg_obj, "reward", None)
    if reward is not None and reward.rm_path and "LATEST" in reward.rm_path:
        updates["reward"] = reward.model_copy(update={"rm_path": str(final_checkpoint(Path(reward.rm_path).parent.parent))})
    return cfg_obj.model_copy(update=updates)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alignlab pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", required=True)
    ap.add_argument("--print-config", action="store_true")
    ap.add_argument("overrides", nargs="*", help="pipeline-level overrides (name=..., out_dir=...)")
    args = ap.parse_args(argv)
    cfg = C.load_config(C.PipelineConfig, args.config, args.overrides)
    configs = stage_configs(cfg)
    if args.print_config:
        print(C.dump_config(cfg), end="")
        return 0
    root = Path(cfg.out_dir) / cfg.name
    for st, st_cfg in zip(cfg.stages, configs):
        tracking.console.rule(f"[bold]stage {st.name} ({st.kind})")
        st_cfg = _resolve_latest(st_cfg, root)
        module = importlib.import_module(KINDS[st.kind][0])
        module.main(st_cfg)
        tracking.console.print(f"stage {st.name}: {final_checkpoint(root / st.name)}")
    tracking.console.print(f"pipeline {cfg.name} done: {root}")
    return 0
