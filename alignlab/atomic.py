"""Write a folder so that a reader sees the old folder or the complete new one, never half of one.

    with atomic_dir("runs/x/checkpoints/step_4") as tmp:
        model.save_pretrained(tmp)

The content is written into `.tmp-<name>-XXXX` beside the target, fsynced, and renamed into place
(an existing target is swapped out through `.old-<name>-XXXX`). A process killed before the rename
leaves the target untouched and a `.tmp-` folder that `checkpoint.clean_temporaries` removes.
"""
from __future__ import annotations

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
def atomic_dir(out: str | os.PathLike):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if out.exists():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
