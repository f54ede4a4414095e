"""`alignlab analyze weights --base A --tuned B`: what fine-tuning changed, per layer and module.

For every weight matrix W₀ (base) and W₁ (tuned), ΔW = W₁ − W₀:
- rel_frob = ‖ΔW‖_F / ‖W₀‖_F; cosine = ⟨W₀, W₁⟩ / (‖W₀‖‖W₁‖) (flattened);
- effective rank of ΔW (Roy–Vetterli erank, stable rank, k90, numerical rank; see rank.py).
A layer's change is ‖ΔW‖_F / ‖W₀‖_F over all its matrices together; layers are ranked by it.
Embedding matrices larger than `--max-rank-dim` rows get norms only (an SVD of a 262k-row Gemma
embedding is slow and its untouched rows say little).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import common as C
from .rank import rank_measures


def weight_deltas(base_sd: dict, tuned_sd: dict, max_rank_dim: int = 8192) -> list[dict]:
    """One row per matrix present in both state dicts: layer, module, rel_frob, cosine, rank measures.
    A tied weight (embedding = LM head) appears under two names but is measured once."""
    rows, seen = [], set()
    for name, w0 in base_sd.items():
        if name not in tuned_sd or w0.dim() != 2 or not w0.is_floating_point() or w0.data_ptr() in seen:
            continue
        seen.add(w0.data_ptr())
        w1 = tuned_sd[name]
        if w1.shape != w0.shape:
            raise C.AnalysisError(f"{name}: shape {tuple(w0.shape)} in the base but {tuple(w1.shape)} in the tuned model")
        w0d, w1d = w0.double(), w1.double()
        delta = w1d - w0d
        n0, n1, nd = w0d.norm().item(), w1d.norm().item(), delta.norm().item()
        layer, module = C.layer_and_module(name)
        row = {"name": name, "layer": layer, "module": module, "shape": list(w0.shape),
               "base_norm": n0, "delta_norm": nd, "rel_frob": nd / n0 if n0 else float("inf") if nd else 0.0,
               "cosine": float((w0d * w1d).sum() / (n0 * n1)) if n0 and n1 else float("nan")}
        if max(w0.shape) <= max_rank_dim and nd > 0:
            row.update(rank_measures(delta, noise_scale=max(n0, n1), dtype=w0.dtype))
        rows.append(row)
    return rows


def layer_summary(rows: list[dict], types: list[str]) -> list[dict]:
    """Per decoder layer: ‖ΔW‖/‖W₀‖ over all its matrices, ranked (1 = changed most)."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        if r["layer"] is None:
            continue
        a = acc.setdefault(r["layer"], [0.0, 0.0])
        a[0] += r["delta_norm"] ** 2
        a[1] += r["base_norm"] ** 2
    out = [{"layer": k, "layer_type": types[k] if k < len(types) else "", "rel_change": (d ** 0.5) / (b ** 0.5) if b else 0.0}
           for k, (d, b) in sorted(acc.items())]
    for rank, row in enumerate(sorted(out, key=lambda r: -r["rel_change"]), 1):
        row["rank"] = rank
    return out


def by_layer_type(rows: list[dict], types: list[str]) -> dict[str, dict]:
    """Mean rel_frob and erank of ΔW over sliding vs global layers (Gemma-3) for the attention and MLP matrices."""
    out: dict[str, dict] = {}
    for t in sorted(set(types)):
        sel = [r for r in rows if r["layer"] is not None and types[r["layer"]] == t]
        if not sel:
            continue
        out[t] = {"layers": sorted({r["layer"] for r in sel}),
                  "mean_rel_frob": sum(r["rel_frob"] for r in sel) / len(sel),
                  "mean_erank_frac": sum(r.get("erank_frac", 0.0) for r in sel) / len(sel)}
    return out


def heatmap(rows: list[dict], key: str, n_layers: int, types: list[str], title: str):
    plt = C.pyplot()
    modules = sorted({r["module"] for r in rows if r["layer"] is not None})
    grid = torch.full((n_layers, len(modules)), float("nan"))
    for r in rows:
        if r["layer"] is not None and r.get(key) is not None:
            grid[r["layer"], modules.index(r["module"])] = float(r[key])
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(modules), 1.2 + 0.35 * n_layers))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(modules)), modules, rotation=45, ha="right")
    ax.set_yticks(range(n_layers), [f"{i} {'G' if types[i] == 'full_attention' else 'L'}" for i in range(n_layers)])
    ax.set_ylabel("layer (G global, L local/sliding)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return fig


def analyze(base: str, tuned: str, out: Path, max_rank_dim: int = 8192) -> dict:
    bc, tc = C.load_config(base), C.load_config(tuned)
    C.check_same_arch(bc, tc, f"--base {base}", f"--tuned {tuned}")
    base_sd = C.load_model(base).state_dict()
    tuned_sd = C.load_model(tuned).state_dict()
    rows = weight_deltas(base_sd, tuned_sd, max_rank_dim)
    types = C.layer_types(bc)
    layers = layer_summary(rows, types)
    result = {"base": base, "tuned": tuned, "model_type": bc.model_type, "layer_types": types,
              "layers": layers, "by_layer_type": by_layer_type(rows, types), "matrices": rows,
              "ranking": [r["layer"] for r in sorted(layers, key=lambda r: r["rank"])]}
    C.write_json(out, "weights.json", result)
    n = bc.num_hidden_layers
    C.figure(out, "weights_rel_frob.png", heatmap(rows, "rel_frob", n, types, "relative ‖ΔW‖_F / ‖W₀‖_F"))
    C.figure(out, "weights_erank.png", heatmap(rows, "erank_frac", n, types, "effective rank of ΔW / min(out, in)"))
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab analyze weights", description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="model folder the fine-tuning started from")
    ap.add_argument("--tuned", required=True, help="fine-tuned model folder or LoRA adapter folder (folded via peft)")
    ap.add_argument("--out", help="output folder (default: RUN/analysis/weights for a run checkpoint)")
    ap.add_argument("--max-rank-dim", type=int, default=8192, help="skip the SVD of matrices with more rows/cols")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else C.default_out("weights", args.tuned)
    res = analyze(args.base, args.tuned, out, args.max_rank_dim)
    print(f"{'layer':>5} {'type':<18} {'rel change':>10} {'rank':>4}")
    for r in res["layers"]:
        print(f"{r['layer']:>5} {r['layer_type']:<18} {r['rel_change']:>10.3e} {r['rank']:>4}")
    print(f"wrote {out}/weights.json and 2 figures")
    return 0
