"""What the side-by-side benchmark scripts share: a fresh process per measurement, the SFT start
point, and the TRL availability check. Scripts run as `python bench/<name>.py`, so this folder is
on sys.path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_child(code: str, spec: dict, timeout: float | None = None) -> dict:
    """Run `code` in a fresh Python process with `spec` as JSON argv[1]; its last stdout line is JSON.
    Past `timeout` seconds the child is killed and subprocess.TimeoutExpired raised."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("TRL is not installed: pip install -e '.[bench]'") from None


def sft_start(work: Path, steps: int, device: str) -> Path:
    """A briefly SFT-trained tiny Qwen2 (so rewards and preferences carry signal), built once per folder."""
    start = work / f"sft/checkpoints/step_{steps}"
    if not start.exists():
        subprocess.run([sys.executable, "-m", "alignlab.cli", "sft", "-c", "sft_tiny", f"out_dir={work}", "name=sft",
                        f"training.total_steps={steps}", "training.eval_every=0", "training.save_every=0",
                        f"model.device={device}"], check=True, capture_output=True)
    return start
