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
    def __init__(self, run_dir: Path, sinks: list | None = None, fresh: bool = True):
        from .distributed import current

        self.dir = Path(run_dir)
        self.fresh = fresh  # False: resumed from a checkpoint
        self.metrics_path = self.dir / "metrics.jsonl"
        self.sinks = sinks or []  # TensorBoard / W&B: copies of each row; metrics.jsonl is the truth
        self.watchdog = None  # set by begin(); every logged row passes through watchdog.record
        self.actions: list = []  # set by begin(): step-end actions (relora resets, rank1 merges, rank tracking)
        self.dist = current()  # data-parallel ranks: rank 0 writes, every rank's watchdog sees every row
        self.is_main = self.dist.is_main

    def log(self, step: int, **metrics) -> dict:
        row = {"step": step, "time": round(time.time(), 3)}
        for k, v in metrics.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            row[k] = v if not isinstance(v, float) or math.isfinite(v) else str(v)
        if self.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            scalars = {k: float(v) for k, v in row.items()
                       if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            for sink in self.sinks:
                sink.log(step, scalars)
        if self.watchdog is not None:
            self.watchdog.record(row)
        return row

    def samples(self, step: int, rows: list[dict]) -> Path:
        p = self.dir / "samples" / f"step_{step}.jsonl"
        if not self.is_main:
            return p
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return p

    def truncate_after(self, step: int) -> None:
        """On resume from step N, forget rows logged after N (they will be logged again, identically),
        and a last line torn by a kill in mid-write. (Rank 0 writes; the other ranks wait, then read it.)"""
        if self.is_main:
            self._truncate_after(step)
        self.dist.barrier()

    def _truncate_after(self, step: int) -> None:
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        self.metrics_path.write_text("".join(line + "\n" for line in keep))

    def due(self, step: int, every: int, total: int) -> bool:
        return step == total or (every > 0 and step % every == 0)

    # -- what every loop does around its steps -----------------------------------------------------

    def begin(self, cfg, model, tokenizer, optimizer, config_hooks: list[str], extra_hooks: list | None,
              scheduler=None, scaler=None) -> None:
        """Load the run's hooks (the config's import strings, then the objects passed to `main`), keep
        their context, and call on_start. Start the watchdog (training.watchdog), its running state
        rebuilt from the rows metrics.jsonl kept (on resume: those up to the checkpoint's step);
        `scheduler` and `scaler` are what its rollback restores besides model and optimizer."""
        from . import hooks as H
        from .lora import actions as lora_actions
        from .watchdog import Watchdog

        self.watchdog = None
        wd = Watchdog(getattr(cfg.training, "watchdog", None), log=self.log,
                      say=lambda text: console.print(f"[yellow]{text}", highlight=False, soft_wrap=True))
        wd.replay(read_metrics(self.dir))
        self.watchdog, self.scheduler, self.scaler = wd, scheduler, scaler

        self.hooks = H.load(config_hooks, extra_hooks)
        self.ctx = H.Context(cfg, self, model, tokenizer, optimizer)
        # relora / rank1 merges and analysis.rank_every: run first in every end_step (alignlab/lora/actions.py)
        self.actions = lora_actions.build(cfg, model, optimizer, scheduler, self.dir, self.fresh)
        H.call(self.hooks, "on_start", self.ctx)

    def progress(self, total: int, start: int, description: str, every: int | None = None):
        """The progress display `end_step` advances (a context manager)."""
        self.bar = progress(total, start, description, every)
        return self.bar

    def end_step(self, step: int, total: int, metrics: dict, *, shown: str, evaluate=None, eval_every: int = 0,
                 evaluated: tuple[dict, list] | None = None, save=None, save_every: int = 0) -> dict:
        """Every loop ends its step with this one call: log the step's row, advance the progress display
        (`shown`: its loss field), call on_step_end; when due, `evaluate() -> (metrics, sample rows)` is
        logged, its samples written, on_eval called and the metrics printed; when due, `save(step) -> path`
        and on_save. A loop that evaluated inside the step (expert iteration) passes `evaluated`, which
        joins the step's row. Hooks run in the same order in every loop. -> the step's row."""
        from . import hooks as H

        for action in self.actions:
            metrics = {**metrics, **action.end_step(step, total)}
        wd = self.watchdog
        metrics = {**metrics, **wd.end_step(step, metrics)}
        if evaluated is not None:
            evaluated = (self.dist.broadcast(evaluated[0]), evaluated[1])  # every rank's watchdog decides alike
            evaluated = ({**evaluated[0], **wd.on_eval(step, evaluated[0])}, evaluated[1])
        if wd.pending and wd.pending[0] == "rollback":
            metrics.update(self.rollback(step))
        row = self.log(step, **(evaluated[0] if evaluated else {}), **metrics)
        self.stop_if_asked(step)
        tps = row.get("tokens/per_s")
        self.bar.update(self.bar.task_ids[0], advance=1, loss=shown, tps=f"{tps:,.0f}" if tps is not None else "-")
        H.call(self.hooks, "on_step_end", self.ctx, step, row)
        if evaluated is None and evaluate is not None and self.due(step, eval_every, total):
            evaluated = evaluate()  # on every rank (fsdp2: each forward is a collective); rank 0's numbers count
            evaluated = (self.dist.broadcast(evaluated[0]), evaluated[1])
            watched = wd.on_eval(step, evaluated[0])
            rolled = self.rollback(step) if wd.pending and wd.pending[0] == "rollback" else {}
            self.log(step, **evaluated[0], **watched, **rolled)
            self.stop_if_asked(step)
            self.bar.console.print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in evaluated[0].items()))
        if evaluated is not None:
            if evaluated[1]:
                self.samples(step, evaluated[1])
            H.call(self.hooks, "on_eval", self.ctx, step, evaluated[0])
        if save is not None and self.due(step, save_every, total):
            H.call(self.hooks, "on_save", self.ctx, step, save(step))
        return row


    def rollback(self, step: int) -> dict:
        """The watchdog asked for a rollback: the last checkpoint's state, the lr lowered. -> row keys."""
        from . import checkpoint

        cfg = self.watchdog.cfg
        if self.scheduler is None:
            raise RuntimeError("watchdog rollback needs run.begin(..., scheduler=, scaler=)")
        ckpt = checkpoint.rollback(self.dir, self.ctx.model, self.ctx.optimizer, self.scheduler, self.scaler,
                                   cfg.rollback_lr_factor)
        if ckpt is None:
            self.watchdog.pending = ("stop", self.watchdog.pending[1] + "; rollback asked, but there is no "
                                     "checkpoint yet (set training.save_every)")
            return {"watchdog/action": "stop"}
        self.watchdog.pending = None
        console.print(f"[yellow]watchdog: rolled back to {ckpt.name}; lr x{cfg.rollback_lr_factor:g}", highlight=False)
        return {"watchdog/rollback_to": int(ckpt.name.split("_")[1]), "lr/after_rollback": self.scheduler.get_last_lr()[0]}

    def stop_if_asked(self, step: int) -> None:
        from .errors import WatchdogStop

        if self.watchdog.pending and self.watchdog.pending[0] == "stop":
            raise WatchdogStop(self.watchdog.diagnosis(step))


class TensorBoardSink:
    """Scalars to run_dir/tensorboard (`tensorboard --logdir runs`)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()


class WandbSink:
    """One W&B run per run directory: its id is derived from the folder, so a resumed run continues
    the same W&B run. Project from WANDB_PROJECT (default alignlab); WANDB_MODE=offline works offline."""

    def __init__(self, cfg: Strict, run_dir: Path):
        import hashlib
        import os

        import wandb

        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "alignlab"), name=getattr(cfg, "name", None),
                              id=run_id, resume="allow", dir=str(run_dir), config=cfg.model_dump(mode="json"),
                              reinit="finish_previous")  # pipelines: one W&B run per stage
        import atexit

        atexit.register(self.run.finish)  # before wandb's own teardown (atexit is LIFO): the summary gets written

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)


def check_report_to(cfg: Strict) -> None:
    """A report_to destination whose package is missing is a ConfigError saying what to install."""
    import importlib.util

    from .config import ConfigError

    for name in getattr(cfg, "report_to", []):
        if importlib.util.find_spec(name) is None:  # the package is named as the destination
            raise ConfigError(f"report_to=[{name}] needs the {name} package, which is not installed; "
                              f"`pip install -e '.[{name}]'`, or drop {name} from report_to")


def start(cfg: Strict, run_dir: Path, fresh: bool) -> Run:
    """Create the run dir, write the resolved config, seed. A fresh run starts a new metrics file."""
    from .distributed import current

    check_report_to(cfg)  # before anything is written
    main = current().is_main  # data-parallel ranks: rank 0 owns the run directory's files
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    sinks = [TensorBoardSink(run_dir) if name == "tensorboard" else WandbSink(cfg, run_dir)
             for name in getattr(cfg, "report_to", [])] if main else []
    run = Run(run_dir, sinks, fresh)
    if fresh and main and run.metrics_path.exists():
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

    def __init__(self, total: int, start: int, description: str, every: int | None = None):
        self.total, self.done, self.description = total, start, description
        self.every = every or max(1, total // 20)
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


def progress(total: int, start: int = 0, description: str = "train", every: int | None = None):
    """A rich live bar on a terminal; plain periodic lines otherwise (about 20 a run). `every`
    (training.log_every): a plain line every that many steps, on a terminal too."""
    if every is not None or not console.is_terminal:
        return LineProgress(total, start, description, every)
    p = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    p.add_task(description, total=total, completed=start, loss="-", tps="-")
    return p
