"""Atomic checkpoints and exact resume.

`checkpoints/step_N/` holds an ordinary HF model (or adapter) folder plus `trainer_state.pt`
(optimizer, scheduler, RNG states, step). It is written into `checkpoints/.tmp-step_N-XXXX/` and
renamed into place (`atomic.atomic_dir`), so a process killed at any moment leaves either the previous checkpoints or the
new complete one; half-written temporaries are removed on the next start.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import torch

from .atomic import atomic_dir
from .models import save_model

STATE_FILE = "trainer_state.pt"
_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, keep_last: int, extra: dict | None = None,
         scaler=None, submodels: dict | None = None) -> Path:
    """One atomic step_N folder: the model at its root (loads with plain transformers / peft), each of
    `submodels` (e.g. PPO's separate critic) in a subfolder of its name, and trainer_state.pt."""
    root = checkpoints_dir(run_dir)
    final = root / f"step_{step}"
    with atomic_dir(final) as tmp:
        save_model(model, tokenizer, tmp)
        for name, sub in (submodels or {}).items():
            save_model(sub, tokenizer, tmp / name)
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng_state(), "extra": extra or {}}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        torch.save(state, tmp / STATE_FILE)
    prune(root, keep_last)
    return final


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune(root: Path, keep_last: int) -> None:
    ckpts = list_checkpoints(root.parent)
    for _, p in ckpts[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


def clean_temporaries(run_dir: Path) -> list[Path]:
    """Remove leftovers of a save that was killed before its rename."""
    root = checkpoints_dir(run_dir)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """resume=auto: the latest complete checkpoint, if any; never: None (and refuse to overwrite
    a run that has checkpoints); a path: that checkpoint."""
    if resume == "never":
        if list_checkpoints(run_dir):
            raise FileExistsError(
                f"{run_dir} already has checkpoints; continue it with training.resume=auto, or start a new run "
                f"with name=<other>; nothing was overwritten"
            )
        return None
    if resume == "auto":
        clean_temporaries(run_dir)
        ckpts = list_checkpoints(run_dir)
        return ckpts[-1][1] if ckpts else None
    p = Path(resume)
    if not (p / STATE_FILE).is_file():
        raise FileNotFoundError(f"training.resume={resume!r} is not a checkpoint folder (no {STATE_FILE} inside)")
    return p


def load_state(ckpt: Path) -> dict:
    return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=False)


def restore(ckpt: Path | None, optimizer, scheduler, scaler=None) -> int:
    """Load optimizer, scheduler, scaler and RNG state from a checkpoint; -> the step to continue
    from (0 when `ckpt` is None). The model itself is loaded by `models.load_policy(resume_from=)`."""
    if ckpt is None:
        return 0
    state = load_state(ckpt)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["step"]
