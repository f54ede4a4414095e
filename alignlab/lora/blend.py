"""`alignlab blend`: combine LoRA adapters of one base on their weight deltas, into a new peft adapter.

    alignlab blend --adapters runs/add/checkpoints/step_200 runs/sub/checkpoints/step_200 \\
        --method ties --density 0.2 --out runs/blend_ties

Every method acts on the task vectors ΔW_i = s_i·B_i·A_i of each adapted matrix (s = alpha/r, or
alpha/√r for rsLoRA), with weights w_i (default 1), never on the factors: A and B are not identifiable
(BA = (BR)(R⁻¹A)), so trimming or sign votes on factors (peft's non-SVD ties/dare) have no TIES meaning.

| method | merged ΔW of a matrix | output |
|---|---|---|
| `linear` | Σ w_i ΔW_i (task arithmetic) | SVD at rank Σr_i: exact |
| `cat` | Σ w_i ΔW_i | the factors concatenated, A' = [w_i s_i A_i], B' = [B_i]: exact, no SVD |
| `svd` | Σ w_i ΔW_i | the best rank-k approximation (Eckart–Young), k = --rank (default max r_i) |
| `ties` | trim each ΔW_i to its top `density` by magnitude, elect γ = sign(Σ trimmed) (`--majority total`) or sign(Σ sign) (`frequency`), then Σ_i w_i ΔŴ_i [sign = γ] / #agreeing (a count, not a sum of weights) | SVD at --rank (default Σr_i) |
| `dare` | keep each entry with probability `density`, rescale by 1/density (E = ΔW_i), then Σ w_i | SVD at --rank |
| `dare_ties` | the DARE drop, then TIES' election and disjoint mean | SVD at --rank |
| `magnitude` | trim each ΔW_i to its top `density`, then Σ w_i | SVD at --rank |

Conventions follow peft's merge_utils (research note §3.2; the golden values are tests): the vote counts
the trimmed tensors unweighted, a tie goes to +1, zeros never agree, k = int(density·numel). Trimming
scope (`--scope`): `tensor` (default, as peft and mergekit: each matrix keeps its own top share) or
`global` (as the TIES paper's code: one threshold over every matrix of an adapter).

The output is an ordinary peft LoRA folder: adapter_config.json with r = lora_alpha = R (scale 1; every
source scale, rsLoRA's included, is folded into the weights, and use_rslora is off: peft 0.21.2's own
merge keeps it and comes out √R too large), R the largest rank over the matrices (smaller ones padded
with zeros, which is exact), target_modules the union. blend.json records, per matrix, the relative
Frobenius error of the written adapter against the merged ΔW (0 for linear/cat; what a truncation lost
otherwise). peft loads it with `PeftModel.from_pretrained(base, out)`; so do `alignlab eval`, `merge-lora`
and vLLM (up to its max_lora_rank). No method here needs equal ranks: they all act on ΔW.

Refused before any computation: adapters of different bases (base_model_name_or_path), a matrix with
different shapes, DoRA, embedding LoRA, fan_in_fan_out, modules_to_save, alpha_pattern, a missing
--density for the trimming methods, a non-empty --out.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

METHODS = ("linear", "cat", "svd", "ties", "dare", "dare_ties", "magnitude")
NEEDS_DENSITY = ("ties", "dare", "dare_ties", "magnitude")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt")


class BlendError(ValueError):
    pass


# -- the numerics on task vectors (peft merge_utils conventions) ----------------------------------


def magnitude_mask(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top k = int(density·numel) entries by |t| (bool mask of t's shape)."""
    k = int(density * t.numel())
    mask = torch.zeros(t.numel(), dtype=torch.bool)
    if k > 0:
        mask[torch.topk(t.abs().flatten(), k).indices] = True
    return mask.view(t.shape)


def global_magnitude_masks(tensors: dict[str, torch.Tensor], density: float) -> dict[str, torch.Tensor]:
    """One top-k over every tensor of one adapter together (the TIES paper's scope)."""
    names = list(tensors)
    flat = torch.cat([tensors[n].abs().flatten() for n in names])
    keep = magnitude_mask(flat, density)
    out, i = {}, 0
    for n in names:
        m = tensors[n].numel()
        out[n] = keep[i : i + m].view(tensors[n].shape)
        i += m
    return out


def dare_drop(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density` and rescale by 1/density (Yu et al., arXiv 2311.03099)."""
    keep = torch.rand(t.shape, generator=generator, dtype=torch.float64) < density
    return t * keep / density


def elect_sign(tensors: list[torch.Tensor], majority: str = "total") -> torch.Tensor:
    """γ = sign(Σ_t T_t) ("total", mass) or sign(Σ_t sign T_t) ("frequency"), ties to +1, unweighted."""
    stacked = torch.stack(tensors)
    votes = stacked.sum(0) if majority == "total" else stacked.sign().sum(0)
    return torch.where(votes >= 0, 1.0, -1.0).to(stacked.dtype)


def disjoint_mean(tensors: list[torch.Tensor], weights: list[float], gamma: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t T_t [sign T_t = γ] / max(1, #{t : sign T_t = γ})."""
    agree = torch.stack([t.sign() == gamma for t in tensors])
    weighted = torch.stack([w * t for w, t in zip(weights, tensors)])
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)


def ties_merge(tensors, weights, density: float, majority: str = "total") -> torch.Tensor:
    """TIES-merging of one tensor (Yadav et al., arXiv 2306.01708): trim per tensor, elect, disjoint mean."""
    trimmed = [t * magnitude_mask(t, density) for t in tensors]
    return disjoint_mean(trimmed, weights, elect_sign(trimmed, majority))


def magnitude_merge(tensors, weights, density: float) -> torch.Tensor:
    return sum(w * t * magnitude_mask(t, density) for w, t in zip(weights, tensors))


def combine(deltas: list[dict[str, torch.Tensor]], weights: list[float], method: str, density: float | None = None,
            majority: str = "total", scope: str = "tensor", seed: int = 0) -> dict[str, torch.Tensor]:
    """{matrix: merged ΔW} from each adapter's {matrix: ΔW_i}; a matrix an adapter lacks is 0 for it."""
    names = sorted(set().union(*deltas))
    shape = {n: next(d[n] for d in deltas if n in d) for n in names}
    full = [{n: d.get(n, torch.zeros_like(shape[n])) for n in names} for d in deltas]
    if method in ("ties", "magnitude"):
        if scope == "global":
            masks = [global_magnitude_masks(d, density) for d in full]
        else:
            masks = [{n: magnitude_mask(d[n], density) for n in names} for d in full]
        full = [{n: d[n] * m[n] for n in names} for d, m in zip(full, masks)]
    elif method in ("dare", "dare_ties"):
        g = torch.Generator().manual_seed(seed)
        full = [{n: dare_drop(d[n], density, g) for n in names} for d in full]
    out = {}
    for n in names:
        ts = [d[n] for d in full]
        if method in ("ties", "dare_ties"):
            out[n] = disjoint_mean(ts, weights, elect_sign(ts, majority))
        else:  # linear, svd, cat, dare, magnitude: task arithmetic on the (pruned) deltas
            out[n] = sum(w * t for w, t in zip(weights, ts))
    return out


def low_rank(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (out, k), A (k, in)) with B·A the best rank-k approximation of m (Eckart–Young), split √S each way."""
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


# -- adapter folders ---------------------------------------------------------------------------------


@dataclass
class Adapter:
    path: Path
    config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module key prefix -> (A (r, in), B (out, r))

    def scale(self, module: str) -> float:
        r = self.factors[module][0].shape[0]
        alpha = self.config["lora_alpha"]
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def delta(self, module: str) -> torch.Tensor:
        a, b = self.factors[module]
        return self.scale(module) * b.double() @ a.double()


def global_threshold(adapter: Adapter, density: float) -> float:
    """The k-th largest |ΔW| entry over every matrix of an adapter, k = int(density·numel)."""
    mags = torch.cat([adapter.delta(m).abs().float().flatten() for m in adapter.factors])
    k = int(density * mags.numel())
    return float(torch.topk(mags, k).values[-1]) if k > 0 else float("inf")


def read_adapter(path: str | Path) -> Adapter:
    from safetensors.torch import load_file

    p = Path(path)
    cfg_file, weights = p / "adapter_config.json", p / "adapter_model.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise BlendError(f"{p}: not a peft LoRA adapter folder (needs adapter_config.json and adapter_model.safetensors)")
    cfg = json.loads(cfg_file.read_text())
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {cfg.get('peft_type')}")
    if cfg.get("use_dora"):
        problems.append("use_dora=true (DoRA's magnitude vector is not a low-rank delta)")
    if cfg.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out=true")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save={cfg['modules_to_save']} (fully trained modules, not deltas)")
    if cfg.get("alpha_pattern"):
        problems.append("alpha_pattern (per-module alphas)")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg['bias']}")
    factors: dict[str, list] = {}
    for key, t in load_file(str(weights)).items():
        for part, i in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if key.endswith(part):
                factors.setdefault(key[: -len(part)], [None, None])[i] = t
                break
        else:
            problems.append(f"tensor {key} (embedding LoRA or another kind of adapter weight)")
    if problems:
        raise BlendError(f"{p}: cannot blend an adapter with " + "; ".join(dict.fromkeys(problems)))
    broken = [m for m, (a, b) in factors.items() if a is None or b is None]
    if broken:
        raise BlendError(f"{p}: {broken[0]} has only one of lora_A / lora_B")
    return Adapter(p, cfg, {m: (a, b) for m, (a, b) in factors.items()})


def check_compatible(adapters: list[Adapter]) -> None:
    bases = {str(a.config.get("base_model_name_or_path")) for a in adapters}
    if len(bases) > 1:
        raise BlendError("the adapters were trained on different base models (" + "; ".join(
            f"{a.path}: {a.config.get('base_model_name_or_path')}" for a in adapters) + "); deltas of different bases "
            "do not add up to a model. Blend adapters of one base")
    shapes: dict[str, tuple] = {}
    for a in adapters:
        for m, (fa, fb) in a.factors.items():
            shape = (fb.shape[0], fa.shape[1])
            if shapes.setdefault(m, shape) != shape:
                raise BlendError(f"{m}: ΔW is {shapes[m]} in one adapter and {shape} in {a.path}")


def blend(adapter_paths: list[str], out: str | Path, method: str, weights: list[float] | None = None,
          density: float | None = None, majority: str = "total", scope: str = "tensor", rank: int | None = None,
          seed: int = 0) -> dict:
    """Write the blended adapter to `out`; -> the report (also written to out/blend.json)."""
    from safetensors.torch import save_file

    if method not in METHODS:
        raise BlendError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    weights = list(weights) if weights is not None else [1.0] * len(adapter_paths)
    if len(weights) != len(adapter_paths):
        raise BlendError(f"{len(weights)} weights for {len(adapter_paths)} adapters")
    if method in NEEDS_DENSITY and density is None:
        raise BlendError(f"--method {method} needs --density, the share of each ΔW kept (e.g. 0.2 for TIES as in its "
                         "paper, 0.1 for DARE's 90 % drop)")
    if density is not None and not 0 < density <= 1:
        raise BlendError(f"--density={density} must be in (0, 1]")
    if rank is not None and rank < 1:
        raise BlendError(f"--rank={rank} must be at least 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BlendError(f"--out {out} exists and is not empty; choose a new folder")
    adapters = [read_adapter(p) for p in adapter_paths]
    check_compatible(adapters)

    modules = sorted(set().union(*(a.factors for a in adapters)))
    ranks = {m: [a.factors[m][0].shape[0] for a in adapters if m in a.factors] for m in modules}
    # one matrix at a time (a few float64 copies of one matrix in memory, not of every adapter); a global
    # trimming scope first finds each adapter's threshold over all its matrices, then trims with it
    global_trim = scope == "global" and method in ("ties", "magnitude")
    tau = [global_threshold(a, density) for a in adapters] if global_trim else None
    new: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rows = []
    for i, m in enumerate(modules):
        deltas = []
        for j, a in enumerate(adapters):
            d = a.delta(m) if m in a.factors else None
            if d is not None and global_trim:
                d = d * (d.abs() >= tau[j])
            deltas.append({} if d is None else {m: d})
        target = combine(deltas, weights, method, 1.0 if global_trim else density, majority, "tensor",
                         seed * 1_000_003 + i)[m]
        if method == "cat":
            parts = [(w * a.scale(m) * a.factors[m][0].double(), a.factors[m][1].double())
                     for w, a in zip(weights, adapters) if m in a.factors]
            b, a = torch.cat([b for _, b in parts], 1), torch.cat([fa for fa, _ in parts], 0)
        else:
            b, a = low_rank(target, rank or (max(ranks[m]) if method == "svd" else sum(ranks[m])))
        new[m] = (b, a)
        err = float((b @ a - target).norm() / target.norm()) if target.norm() > 0 else 0.0
        rows.append({"module": m, "source_ranks": ranks[m], "rank": int(b.shape[1]), "rel_error": err})
    width = max(b.shape[1] for b, _ in new.values())
    tensors = {}
    for m, (b, a) in new.items():  # zero padding to one rank R: exact
        pad = width - b.shape[1]
        tensors[f"{m}.lora_A.weight"] = torch.cat([a, a.new_zeros(pad, a.shape[1])], 0).float().contiguous()
        tensors[f"{m}.lora_B.weight"] = torch.cat([b, b.new_zeros(b.shape[0], pad)], 1).float().contiguous()

    cfg = dict(adapters[0].config)
    suffixes = sorted({m.rsplit(".", 1)[-1] for m in modules})
    cfg.update(r=width, lora_alpha=width, use_rslora=False, rank_pattern={}, alpha_pattern={}, target_modules=suffixes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:  # so `alignlab eval` finds a tokenizer beside the adapter, as in a checkpoint
        src = adapters[0].path / name
        if src.is_file():
            shutil.copy(src, out / name)
    report = {"method": method, "adapters": [str(a.path) for a in adapters], "weights": weights, "density": density,
              "majority": majority, "scope": scope, "seed": seed, "rank": width, "matrices": rows,
              "max_rel_error": max((r["rel_error"] for r in rows), default=0.0)}
    (out / "blend.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab blend", description=__doc__.split("\n\n")[0],
                                 epilog="methods and conventions: docs/lora.md")
    ap.add_argument("--adapters", nargs="+", required=True, help="peft LoRA adapter folders of one base")
    ap.add_argument("--weights", nargs="+", type=float, help="one per adapter (default 1 each)")
    ap.add_argument("--method", choices=METHODS, required=True)
    ap.add_argument("--density", type=float, help="ties/dare/dare_ties/magnitude: share of each ΔW kept")
    ap.add_argument("--majority", choices=("total", "frequency"), default="total", help="ties sign election")
    ap.add_argument("--scope", choices=("tensor", "global"), default="tensor", help="ties/magnitude trimming scope")
    ap.add_argument("--rank", type=int, help="rank of the written adapter (svd: default max r_i; others: sum r_i)")
    ap.add_argument("--seed", type=int, default=0, help="dare's random drop")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        rep = blend(args.adapters, args.out, args.method, args.weights, args.density, args.majority, args.scope,
                    args.rank, args.seed)
    except BlendError as exc:
        print(f"alignlab blend: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({rep['method']}, rank {rep['rank']}, {len(rep['matrices'])} matrices, "
          f"largest relative error of the written adapter vs the merged ΔW {rep['max_rel_error']:.2e})")
    return 0
