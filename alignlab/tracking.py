"""The run directory: resolved config, metrics.jsonl (the source of truth), samples, progress."""
from __future__ import annotations

import json
import math
import random
import resource
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .config import Strict, dump_config

console = Console(stderr=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


class Run:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.metrics_path = self.dir / "metrics.jsonl"

    def log(self, step: int, **metrics) -> dict:
        row = {"step": step, "time": round(time.time(), 3)}
        for k, v in metrics.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            row[k] = v if not isinstance(v, float) or math.isfinite(v) else str(v)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def samples(self, step: int, rows: list[dict]) -> Path:
        p = self.dir / "samples" / f"step_{step}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return p

    def truncate_after(self, step: int) -> None:
        """On resume from step N, forget rows logged after N (they will be logged again, identically)."""
        if not self.metrics_path.exists():
            return
        keep = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in keep))

    def due(self, step: int, every: int, total: int) -> bool:
        return step == total or (every > 0 and step % every == 0)


def start(cfg: Strict, run_dir: Path, fresh: bool) -> Run:
    """Create the run dir, write the resolved config, seed. A fresh run starts a new metrics file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    run = Run(run_dir)
    if fresh and run.metrics_path.exists():
        run.metrics_path.unlink()
    seed_everything(getattr(cfg, "seed", 0))
    return run


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # process peak RSS (KiB on Linux)
    return kb / (2**30 if sys.platform == "darwin" else 2**20)


class LineProgress:
    """Progress for logs and CI (no terminal): one plain line every ~5% of the steps, with loss,
    tokens/s and ETA, and messages printed as they happen (a live bar would hold them back)."""

    def __init__(self, total: int, start: int, description: str):
        self.total, self.done, self.description = total, start, description
        self.every = max(1, total // 20)
        self.t0, self.start = time.time(), start
        self.task_ids = [0]
        self.console = console

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, _task, advance: int = 1, loss: str = "-", tps: str = "-") -> None:
        self.done += advance
        if self.done % self.every and self.done != self.total:
            return
        rate = (self.done - self.start) / max(time.time() - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        console.print(f"{self.description} {self.done}/{self.total} loss {loss} {tps} tok/s "
                      f"elapsed {time.time() - self.t0:.0f}s ETA {eta:.0f}s", highlight=False)


def progress(total: int, start: int = 0, description: str = "train"):
    """A rich live bar on a terminal; plain periodic lines otherwise."""
    if not console.is_terminal:
        return LineProgress(total, start, description)
    p = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    p.add_task(description, total=total, completed=start, loss="-", tps="-")
    return p
