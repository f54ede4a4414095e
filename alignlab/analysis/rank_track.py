"""Effective rank of the accumulated update ΔW = W_t − W_0 during training, and its plot.

`analysis.rank_every=N` (SFT, DPO, GRPO, PPO): every N steps (and at the last) the step-end action
`RankTracker` takes every weight matrix's *effective* weight (for LoRA: W + s·B·A, the same names as a
plain checkpoint), subtracts the starting model's, and measures ΔW with `rank.rank_measures`
(Roy–Vetterli erank, stable rank, k90 of the squared singular values, numerical rank with the
stored matrices' rounding, eps·max(σ₁, ‖W₀‖_F)·max(out, in), as the floor). W_0 is copied to CPU
memory at the start (fp32, one copy of the model); a resumed run reloads it from model.path.

- metrics.jsonl: `rank/<module>/<measure>`, the mean over the layers of that module type (q_proj, ...),
  and `time/rank`;
- analysis/rank/steps/step_N.json: every matrix's values.
Matrices with a side above `analysis.rank_max_dim` (a 262k-row embedding) are skipped, or, with
`analysis.rank_lowrank=q`, measured from their top q singular values (torch.svd_lowrank): the stable
rank uses the exact ‖ΔW‖_F, erank and k90 are then lower bounds (`approx: true` in the step file).

`alignlab analyze rank RUN [RUN ...]` plots a measure over steps, one panel per module type and one line
per run: rank_trajectory.png and rank_trajectory.json (default out: the first run's analysis/rank/).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import common as C

MEASURES = ("erank", "stable_rank", "k90", "numerical_rank")


def effective_weights(model) -> dict:
    """{HF name: fp32 CPU copy} of every floating 2-D weight, LoRA deltas folded in (tied weights once)."""
    import torch

    from ..rollout.vllm import vllm_weights  # W + s·B·A under checkpoint names, computed in fp32

    return {n: w.detach().to("cpu", torch.float32, copy=True) for n, w in vllm_weights(model)
            if w.dim() == 2 and w.is_floating_point()}


def lowrank_measures(delta, q: int, noise_scale: float = 0.0) -> dict:
    """The measures from the top q singular values (randomized SVD); erank and k90 are lower bounds."""
    import torch

    from .rank import energy_rank_from_sv, erank_from_sv, numerical_rank_from_sv

    sv = torch.svd_lowrank(delta, q=min(q, min(delta.shape)), niter=4)[1].double()
    fro2 = float((delta.double() ** 2).sum())
    top = float(sv.max()) if sv.numel() else 0.0
    k90 = energy_rank_from_sv(torch.cat([sv, (fro2 - (sv ** 2).sum()).clamp_min(0).sqrt().reshape(1)]), 0.9)
    return {"erank": erank_from_sv(sv), "stable_rank": fro2 / top ** 2 if top > 0 else 0.0, "k90": min(k90, sv.numel()),
            "numerical_rank": numerical_rank_from_sv(sv, tuple(delta.shape), torch.float32, noise_scale),
            "n": min(delta.shape), "approx": True}


def measure(start: dict, now: dict, max_dim: int, lowrank: int) -> list[dict]:
    """One row per matrix present in both: layer, module, shape and the rank measures of ΔW."""
    from .rank import rank_measures

    rows = []
    for name, w in now.items():
        w0 = start.get(name)
        if w0 is None or w0.shape != w.shape:
            continue
        layer, module = C.layer_and_module(name)
        row = {"name": name, "layer": layer, "module": module, "shape": list(w.shape)}
        delta = w.double() - w0.double()
        noise = float(w0.double().norm())
        if max(w.shape) <= max_dim:
            row.update(rank_measures(delta, noise_scale=noise, dtype=w0.dtype))
        elif lowrank > 0:
            row.update(lowrank_measures(delta, lowrank, noise))
        else:
            row["skipped"] = f"a side is longer than analysis.rank_max_dim={max_dim}"
        rows.append(row)
    return rows


def by_module(rows: list[dict]) -> dict[str, float]:
    """rank/<module>/<measure>: means over the layers of each module type."""
    out: dict[str, float] = {}
    for module in sorted({r["module"] for r in rows if "erank" in r}):
        sel = [r for r in rows if r["module"] == module and "erank" in r]
        for m in MEASURES:
            out[f"rank/{module}/{m}"] = sum(r[m] for r in sel) / len(sel)
    return out


class RankTracker:
    """The step-end action of `analysis.rank_every`."""

    def __init__(self, cfg, model, run_dir: Path, fresh: bool):
        from ..distributed import current

        self.cfg, self.model = cfg.analysis, model
        self.dir = Path(run_dir) / "analysis" / "rank" / "steps"
        # data-parallel ranks hold the same weights and only rank 0 logs and writes: measure there alone
        self.main = current().is_main
        if not self.main:
            self.start = {}
        elif fresh:
            self.start = effective_weights(model)
        else:  # the starting model, as a plain model (adapters of a chain folded)
            self.start = {n: p.detach().float().clone() for n, p in C.load_model(cfg.model.path).named_parameters()
                          if p.dim() == 2}

    def end_step(self, step: int, total: int) -> dict:
        if not self.main or not (step == total or step % self.cfg.rank_every == 0):
            return {}
        t0 = time.perf_counter()
        rows = measure(self.start, effective_weights(self.model), self.cfg.rank_max_dim, self.cfg.rank_lowrank)
        C.write_json(self.dir, f"step_{step}.json", {"step": step, "matrices": rows})
        return {**by_module(rows), "time/rank": time.perf_counter() - t0}


# -- the plot -------------------------------------------------------------------------------------


def trajectories(run: Path, measure_name: str) -> dict[str, list[tuple[int, float]]]:
    """{module: [(step, value)]} from a run's metrics.jsonl."""
    from ..tracking import read_metrics

    if not (Path(run) / "metrics.jsonl").is_file():
        raise C.AnalysisError(f"{run}: no metrics.jsonl (expected a run directory)")
    out: dict[str, list] = {}
    for row in read_metrics(run):
        for k, v in row.items():
            parts = k.split("/")
            if len(parts) == 3 and parts[0] == "rank" and parts[2] == measure_name and isinstance(v, (int, float)):
                out.setdefault(parts[1], []).append((row["step"], float(v)))
    return out


def plot(runs: list[Path], measure_name: str, labels: list[str] | None = None, title: str | None = None):
    """-> (figure, {label: {module: [[step, value]]}}): one panel per module type, one line per run."""
    labels = labels or [Path(r).name for r in runs]
    data = {lab: trajectories(r, measure_name) for lab, r in zip(labels, runs)}
    modules = sorted({m for d in data.values() for m in d})
    if not modules:
        raise C.AnalysisError(f"no rank/<module>/{measure_name} values in {', '.join(map(str, runs))}: train with "
                              "analysis.rank_every=N")
    plt = C.pyplot()
    cols = min(4, len(modules))
    rows = -(-len(modules) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, module in zip(axes.flat, modules):
        for lab in labels:
            pts = data[lab].get(module)
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", label=lab)
        ax.set_title(module, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(f"{measure_name} of ΔW", fontsize=8)
    for ax in list(axes.flat)[len(modules):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or f"{measure_name} of ΔW = W_t − W_0 (mean over layers)", fontsize=10)
    fig.tight_layout()
    return fig, {lab: {m: [list(p) for p in pts] for m, pts in d.items()} for lab, d in data.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab analyze rank", description=(
        "plot the effective rank of ΔW over steps (runs trained with analysis.rank_every=N)"))
    ap.add_argument("runs", nargs="+", help="run directories")
    ap.add_argument("--measure", choices=MEASURES, default="erank")
    ap.add_argument("--labels", help="comma-separated names for the runs (default: folder names)")
    ap.add_argument("--out", help="output folder (default: FIRST_RUN/analysis/rank)")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(runs):
        raise C.AnalysisError(f"--labels has {len(labels)} names for {len(runs)} runs")
    out = Path(args.out) if args.out else runs[0] / "analysis" / "rank"
    fig, data = plot(runs, args.measure, labels)
    C.figure(out, "rank_trajectory.png", fig)
    C.write_json(out, "rank_trajectory.json", {"measure": args.measure, "runs": data})
    print(f"wrote {out}/rank_trajectory.png and rank_trajectory.json")
    return 0
