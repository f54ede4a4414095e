"""Shared caches survive several processes writing them at once.

A sweep of seven CLI runs once lost two to `OSError: [Errno 39] Directory not empty: '.tmp-qwen2-...'
-> 'qwen2-...'`: each process built the same tiny model and the losers' rename failed.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each worker imports everything first, then waits for the start signal, so the builds overlap.
WORKER = """
import sys, time, pathlib
from alignlab.tiny import resolve_tiny
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
out = resolve_tiny("tiny:qwen2?hidden_size=64&intermediate_size=128&num_hidden_layers=1")
time.sleep(1.0)  # others may still be finishing: the folder this process was given must stay the same one
print(out, (out / "config.json").stat().st_ino)
"""


def test_processes_building_the_same_tiny_model_at_once_all_succeed(tmp_path):
    env = {**os.environ, "ALIGNLAB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(8)  # let every worker finish its imports and wait at the start line
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    # one folder, never swapped for another copy under a process already reading it (one build, same inode)
    seen = {tuple(out.split()) for out, _ in outs}
    assert len(seen) == 1, seen
    folder = Path(seen.pop()[0])
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_atomic_dir_keeps_a_folder_another_writer_finished_first(tmp_path):
    from alignlab.atomic import atomic_dir

    out = tmp_path / "cache" / "thing"
    with atomic_dir(out, exist_ok=True) as tmp:
        (tmp / "a").write_text("first")
        out.mkdir(parents=True)  # another process renames its identical copy into place meanwhile
        (out / "a").write_text("other")
    assert (out / "a").read_text() == "other"
    assert [p.name for p in out.parent.iterdir()] == ["thing"]
