"""Write a folder so that a reader sees the old folder or the complete new one, never half of one.

    with atomic_dir("runs/x/checkpoints/step_4") as tmp:
        model.save_pretrained(tmp)

The content is written into `.tmp-<name>-XXXX` beside the target, fsynced, and renamed into place
(an existing target is swapped out through `.old-<name>-XXXX`). A process killed before the rename
leaves the target untouched and a `.tmp-` folder that `checkpoint.clean_temporaries` removes.

Shared caches (the tiny-model cache, written by every process of a sweep) take `file_lock` around
"build if absent", and `atomic_dir(out, exist_ok=True)`: a target another writer finished first is
kept as it is, never swapped out under a process that is already reading it.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                os.fsync(fh.fileno())


@contextmanager
def file_lock(path: str | os.PathLike):
    """An exclusive lock between processes (fcntl.flock on `path`, created if absent), held for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: rely on atomic_dir(exist_ok=True) alone
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def atomic_dir(out: str | os.PathLike, exist_ok: bool = False):
    """exist_ok=False: an existing target is replaced. True (a cache whose content is fixed by its
    name): an existing target, or one another process renames into place first, is kept and ours dropped."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if exist_ok:
            try:
                os.replace(tmp, out)
            except OSError as exc:  # another writer won the race: its folder stays
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not out.is_dir():
                    raise
        elif out.exists():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
