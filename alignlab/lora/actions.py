"""The step-end actions every loop gets the same way: `tracking.Run.begin` builds them from the config,
`Run.end_step` runs them first, before the row is logged, evaluated and saved, and their values join
the step's row. Each is an object with `end_step(step, total) -> dict` whose state is a function of the
step, so a resumed run repeats them exactly.

- `relora.enabled`: `relora.ReLoRA` (resets every reset_every steps; installs the jagged schedule);
- `rank1.enabled`: `rank1.Rank1` (merges every merge_every steps);
- `analysis.rank_every`: `analysis.rank_track.RankTracker` (effective rank of ΔW).

The merges run before the tracker, so it measures the merged model (the same function, merged or not).
"""
from __future__ import annotations

from pathlib import Path


def build(cfg, model, optimizer, scheduler, run_dir: Path, fresh: bool) -> list:
    """[] for configs without these sections (EI, RM) or with all of them off."""
    actions: list = []
    relora, rank1, analysis = (getattr(cfg, k, None) for k in ("relora", "rank1", "analysis"))
    if relora is not None and relora.enabled:
        from .relora import ReLoRA

        actions.append(ReLoRA(cfg, model, optimizer, scheduler))
    if rank1 is not None and rank1.enabled:
        from .rank1 import Rank1

        actions.append(Rank1(cfg, model, optimizer, fresh))
    if analysis is not None and analysis.rank_every:
        from ..analysis.rank_track import RankTracker

        actions.append(RankTracker(cfg, model, run_dir, fresh))
    return actions


def merges_into_base(cfg) -> bool:
    """ReLoRA or rank-1 merging: the LoRA base trains too, so it is no longer the reference policy."""
    return any(getattr(getattr(cfg, k, None), "enabled", False) for k in ("relora", "rank1"))
