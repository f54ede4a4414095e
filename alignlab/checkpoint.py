"""Atomic checkpoints and exact resume.

`checkpoints/step_N/` holds an ordinary HF model (or adapter) folder plus `trainer_state.pt`
(optimizer, scheduler, RNG states, step). It is written into `checkpoints/.tmp-step_N-XXXX/` and
renamed into place (`atomic.atomic_dir`), so a process killed at any moment leaves either the previous checkpoints or the
new complete one; half-written temporaries are removed on the next start.

`checksums.json` (sha256 and size of every file) is written last, inside the temporary folder. On
resume the newest checkpoint whose files still match is used; one that was corrupted or truncated
afterwards (a bad disk, a copy cut short) is set aside as `.corrupt-step_N` and the run says it falls
back to the one before. A full disk during a save (ENOSPC) leaves the previous checkpoints as they
were and stops the run with a `CheckpointError` that says so.
"""
from __future__ import annotations

import errno
import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import torch

from .errors import CheckpointError  # noqa: F401  (re-exported: alignlab.checkpoint.CheckpointError)

from .atomic import atomic_dir
from .models import save_model

STATE_FILE = "trainer_state.pt"
CHECKSUMS = "checksums.json"



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
    `submodels` (e.g. PPO's separate critic) in a subfolder of its name, and trainer_state.pt.

    Data-parallel ranks (docs/distributed.md): every rank calls this; rank 0 writes the folder. ddp: the
    optimizer state is the same on every rank and goes into trainer_state.pt. fsdp2: the weights are
    gathered to rank 0 for the HF folder, and every rank writes its optimizer shard with
    torch.distributed.checkpoint into step_N/optimizer_dcp/. Each rank's RNG state is kept."""
    from . import distributed

    dist = distributed.current()
    root = checkpoints_dir(run_dir)
    final = root / f"step_{step}"
    full = distributed.full_state_dict(model)  # fsdp2: gathered on rank 0 (every rank takes part)
    staged = root / f".dcp-step_{step}"
    if dist.lockstep:  # written by every rank, moved into the checkpoint by rank 0
        if dist.is_main:
            shutil.rmtree(staged, ignore_errors=True)
        dist.barrier()
        distributed.save_optimizer(model, optimizer, staged)
    rngs = dist.gather(rng_state())
    if not dist.is_main:
        dist.barrier()  # rank 0 is writing; nobody goes on (or resumes) from a half-written checkpoint
        return final
    try:
        with atomic_dir(final) as tmp:
            if full is None:
                save_model(model, tokenizer, tmp)
            else:  # fsdp2: the weights gathered from the shards
                save_model(model, tokenizer, tmp, state_dict=full)
            for name, sub in (submodels or {}).items():
                save_model(sub, tokenizer, tmp / name)
            state = {"step": step, "scheduler": scheduler.state_dict(), "rng": rngs[0], "extra": extra or {},
                     "world_size": dist.world}
            if dist.world > 1:
                state["rng_per_rank"] = rngs
            if dist.lockstep:
                staged.rename(tmp / distributed.OPTIM_DIR)
            else:
                state["optimizer"] = optimizer.state_dict()
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            torch.save(state, tmp / STATE_FILE)
            (tmp / CHECKSUMS).write_text(json.dumps(checksums(tmp), indent=1))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        kept = list_checkpoints(run_dir)
        raise CheckpointError(
            f"no space left on the device while writing checkpoint {final} ({exc.strerror}); the half-written copy "
            f"was removed and " + (f"the previous checkpoint {kept[-1][1]} is intact" if kept else "no earlier "
            "checkpoint exists") + ". Free some space (or lower training.keep_last) and run the same command again: "
            "training.resume=auto continues from the last intact checkpoint") from None
    prune(root, keep_last)
    dist.barrier()
    return final


def checksums(folder: Path) -> dict[str, list]:
    """{relative path: [size, sha256]} of every file under `folder` (but the checksum file itself)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name != CHECKSUMS:
            h = hashlib.sha256()
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[str(p.relative_to(folder))] = [p.stat().st_size, h.hexdigest()]
    return out


def verify(ckpt: Path) -> str | None:
    """None when every file matches checksums.json (or the checkpoint predates checksums);
    otherwise what is wrong, in words."""
    listed = Path(ckpt) / CHECKSUMS
    if not listed.is_file():
        return None
    try:
        want = json.loads(listed.read_text())
    except (OSError, ValueError) as exc:
        return f"{CHECKSUMS} is unreadable ({exc})"
    for rel, (size, digest) in want.items():
        p = Path(ckpt) / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != size:
            return f"{rel} has {p.stat().st_size} bytes, {size} were written (truncated)"
    have = checksums(ckpt)
    for rel, (size, digest) in want.items():
        if have[rel][1] != digest:
            return f"{rel} does not match its checksum (corrupted)"
    return None


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
            if p.name.startswith((".tmp-", ".old-", ".dcp-")):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """resume=auto: the latest complete checkpoint, if any; never: None (and refuse to overwrite
    a run that has checkpoints); a path: that checkpoint. Data-parallel ranks: rank 0 looks (it may
    clean temporaries and set damaged checkpoints aside), every rank gets its answer or its error."""
    from .distributed import current

    return current().on_main(lambda: _find_resume(run_dir, resume))


def _find_resume(run_dir: Path, resume: str) -> Path | None:
    if resume == "never":
        if list_checkpoints(run_dir):
            raise FileExistsError(
                f"{run_dir} already has checkpoints; continue it with training.resume=auto, or start a new run "
                f"with name=<other>; nothing was overwritten"
            )
        return None
    if resume == "auto":
        clean_temporaries(run_dir)
        return _newest_intact(run_dir)
    p = Path(resume)
    if not (p / STATE_FILE).is_file():
        raise FileNotFoundError(f"training.resume={resume!r} is not a checkpoint folder (no {STATE_FILE} inside)")
    problem = verify(p)
    if problem:
        raise CheckpointError(f"training.resume={resume!r}: {problem}; resume from another checkpoint "
                              "(training.resume=auto takes the newest intact one)")
    return p


def _newest_intact(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files match their checksums; a damaged one is set aside as
    .corrupt-step_N (kept for inspection, never resumed from) and the run says so."""
    from .tracking import console

    ckpts = list_checkpoints(run_dir)
    for i in range(len(ckpts) - 1, -1, -1):
        path = ckpts[i][1]
        problem = verify(path)
        if problem is None:
            return path
        aside = path.parent / f".corrupt-{path.name}"
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
        to = f"falling back to {ckpts[i - 1][1].name}" if i > 0 else "no earlier checkpoint: starting from step 0"
        console.print(f"[yellow]checkpoint {path} is damaged: {problem}. Set aside as {aside.name}; {to}.",
                      highlight=False, soft_wrap=True)
    return None


def load_state(ckpt: Path) -> dict:
    return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=False)


def restore(ckpt: Path | None, optimizer, scheduler, scaler=None) -> int:
    """Load optimizer, scheduler, scaler and RNG state from a checkpoint; -> the step to continue
    from (0 when `ckpt` is None). The model itself is loaded by `models.load_policy(resume_from=)`."""
    if ckpt is None:
        return 0
    from . import distributed

    dist = distributed.current()
    state = load_state(ckpt)
    if "optimizer" in state and dist.lockstep:
        raise CheckpointError(f"{ckpt} holds a whole optimizer state (written without parallel.strategy=fsdp2); "
                              "resume it with parallel.strategy=ddp, or start a new run (name=<other>)")
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    elif dist.lockstep:
        distributed.load_optimizer(optimizer, Path(ckpt) / distributed.OPTIM_DIR)
    else:
        raise CheckpointError(f"{ckpt} holds a sharded optimizer state ({distributed.OPTIM_DIR}/, written with "
                              "parallel.strategy=fsdp2); resume it with parallel.strategy=fsdp2")
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    # each rank continues its own RNG stream when the rank count is the same; otherwise rank 0's
    per_rank = state.get("rng_per_rank")
    same = per_rank is not None and len(per_rank) == dist.world
    set_rng_state(per_rank[dist.rank] if same else state["rng"])
    return state["step"]


def load_weights(ckpt: Path, model) -> None:
    """Put a checkpoint's weights (full model, or LoRA adapter) into `model` in place."""
    from safetensors.torch import load_file

    from .models import is_peft

    ckpt = Path(ckpt)
    if is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))
        return
    sd: dict = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        sd.update(load_file(f))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {k for k in missing if "lm_head" in k} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise CheckpointError(f"{ckpt}: its weights do not fit the model (missing {sorted(set(missing) - tied)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]})")


def rollback(run_dir: Path, model, optimizer, scheduler, scaler, lr_factor: float) -> Path | None:
    """The watchdog's rollback: the newest intact checkpoint's weights and optimizer (and scaler) state,
    in place, and every lr times `lr_factor` from now on (the schedule's peak is lowered; its position,
    the step count, goes on). -> the checkpoint, or None when there is none yet."""
    from .distributed import current

    ckpt = current().on_main(lambda: _newest_intact(run_dir))
    if ckpt is None:
        return None
    load_weights(ckpt, model)
    now = [g["lr"] for g in optimizer.param_groups]
    state = load_state(ckpt)
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    scheduler.base_lrs = [b * lr_factor for b in scheduler.base_lrs]  # saved with the scheduler: resume keeps it
    for g, lr, base in zip(optimizer.param_groups, now, scheduler.base_lrs):
        g["lr"], g["initial_lr"] = lr * lr_factor, base
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    return ckpt
