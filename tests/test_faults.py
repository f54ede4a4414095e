"""Fault injection, a handful of trials: SIGKILL at random moments (inside checkpoint saves too)
during tiny SFT, DPO and GRPO runs; each resumes, completes, and ends bit-identical to an
uninterrupted run. bench/faults.py runs the full 50 (docs/reliability.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from alignlab import tracking

ROOT = Path(__file__).resolve().parent.parent


def test_killed_runs_resume_to_the_same_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "faults.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/faults.py"), "--trials", "3", "--seed", "1",
                           "--out", str(tmp_path / "work"), "--json", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["trials"] == summary["completed"] == summary["identical"] == 3
    assert summary["kills_landed"] >= 3  # the kills happened: these are not three undisturbed runs
    assert set(summary["per_loop"]) == {"sft", "dpo", "grpo"}


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(tmp_path):
    run = tracking.Run(tmp_path)
    run.log(1, loss=1.0)
    run.log(2, loss=0.5)
    with run.metrics_path.open("a") as f:
        f.write('{"step": 3, "lo')  # killed in mid-write
    run.truncate_after(2)
    assert [r["step"] for r in tracking.read_metrics(tmp_path)] == [1, 2]
