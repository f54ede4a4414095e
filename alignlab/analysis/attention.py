"""`alignlab analyze attention --model M [--vs M2]`: attention per layer and head.

For each head and query position q ≥ 1 (query 0 has one key to choose), with a_qk the attention
probabilities of one sequence:
- entropy H_q = −Σ_k a_qk ln a_qk (nats; 0 when one key takes all the mass);
- mean distance D_q = Σ_k a_qk (q − k) (1 for a previous-token head, 0 for attend-to-self);
- window mass M_q = Σ_{q−W<k≤q} a_qk, W = the model's sliding window (HF semantics: W keys
  including q itself), i.e. how much a global layer looks beyond what a local layer could see.
Averaged over queries, then sequences. Gemma-3's sliding and global layers are reported apart.

Weights come from eager attention (sdpa and flash attention never materialise them); the model is
run one sequence at a time with no padding, so transformers builds its own additive float masks (a
boolean custom mask is silently wrong under eager attention, research note §4.5). Every map is
checked: rows sum to 1, no mass above the diagonal, and on sliding layers none outside the window.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import common as C


def attention_stats(attn: torch.Tensor, window: int | None = None) -> dict[str, torch.Tensor]:
    """attn (H, T, T) probabilities, rows = queries -> per-head (H,) entropy, mean_distance, window_mass,
    averaged over queries q ≥ 1."""
    H, T, _ = attn.shape
    a = attn.double()[:, 1:, :]  # (H, T-1, T)
    q = torch.arange(1, T, dtype=torch.float64)[:, None]
    k = torch.arange(T, dtype=torch.float64)[None, :]
    dist = (q - k).clamp(min=0)  # (T-1, T)
    plogp = torch.where(a > 0, a * a.clamp(min=1e-300).log(), torch.zeros_like(a))
    out = {"entropy": (-plogp.sum(-1)).mean(-1), "mean_distance": (a * dist).sum(-1).mean(-1)}
    if window:
        inside = ((q - k) < window) & ((q - k) >= 0)
        out["window_mass"] = (a * inside).sum(-1).mean(-1)
    else:
        out["window_mass"] = torch.ones(H, dtype=torch.float64)
    return out


def check_attention(attn: torch.Tensor, layer: int, layer_type: str, window: int | None) -> None:
    """Catch wrong masks: rows must sum to 1, with no weight on future keys (or outside a sliding window)."""
    T = attn.shape[-1]
    rows = attn.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-3):
        raise C.AnalysisError(f"layer {layer}: attention rows do not sum to 1 (max error "
                              f"{(rows - 1).abs().max():.2e}); the attention weights are not probabilities")
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    if attn[..., future].abs().max() > 1e-5 if future.any() else False:
        raise C.AnalysisError(f"layer {layer}: attention weight on future tokens; the causal mask was not applied "
                              "(a boolean custom mask under eager attention does this)")
    if layer_type == "sliding_attention" and window and T > window:
        i = torch.arange(T)
        outside = (i[:, None] - i[None, :]) >= window
        if attn[..., outside].abs().max() > 1e-5:
            raise C.AnalysisError(f"layer {layer}: sliding layer attends outside its window of {window}")


@torch.no_grad()
def model_attention(model, tok, prompts: list[str], max_tokens: int):
    """-> per prompt: (token strings, list over layers of (H, T, T) attention)."""
    out = []
    for text in prompts:
        ids = tok(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
        res = model(input_ids=ids, output_attentions=True, use_cache=False)
        if res.attentions is None or any(a is None for a in res.attentions):
            raise C.AnalysisError("the model returned no attention weights; load it with attn_implementation='eager'")
        out.append((tok.convert_ids_to_tokens(ids[0]), [a[0].float() for a in res.attentions]))
    return out


def analyze_model(path: str, prompts: list[str], max_tokens: int) -> dict:
    cfg = C.load_config(path)
    tok = C.load_tokenizer(path)
    model = C.load_model(path, attn="eager")
    types = C.layer_types(cfg)
    window = getattr(cfg, "sliding_window", None) if any(t == "sliding_attention" for t in types) else None
    runs = model_attention(model, tok, prompts, max_tokens)
    per_layer = []
    for li, lt in enumerate(types):
        acc = None
        for _, maps in runs:
            check_attention(maps[li], li, lt, window)
            s = attention_stats(maps[li], window)
            acc = s if acc is None else {k: acc[k] + s[k] for k in s}
        per_layer.append({"layer": li, "layer_type": lt,
                          **{k: (v / len(runs)).tolist() for k, v in acc.items()}})
    return {"model": path, "layer_types": types, "sliding_window": window, "layers": per_layer,
            "by_layer_type": _by_type(per_layer), "maps": runs}


def _by_type(per_layer: list[dict]) -> dict:
    out = {}
    for t in sorted({r["layer_type"] for r in per_layer}):
        sel = [r for r in per_layer if r["layer_type"] == t]
        heads = [h for r in sel for h in range(len(r["entropy"]))]
        out[t] = {k: sum(sum(r[k]) for r in sel) / len(heads) for k in ("entropy", "mean_distance", "window_mass")}
        out[t]["layers"] = [r["layer"] for r in sel]
    return out


def _grid(res: dict, key: str) -> torch.Tensor:
    return torch.tensor([r[key] for r in res["layers"]])  # (L, H)


def figures(out: Path, a: dict, b: dict | None) -> None:
    plt = C.pyplot()
    types = a["layer_types"]
    ylab = [f"{i} {'G' if t == 'full_attention' else 'L'}" for i, t in enumerate(types)]
    keys = ("entropy", "mean_distance", "window_mass")
    cols = [(a, "base" if b else "")] + ([(b, "tuned")] if b else [])
    fig, axes = plt.subplots(len(cols), 3, figsize=(10, 0.6 + (1.2 + 0.3 * len(types)) * len(cols)), squeeze=False)
    for row, (res, label) in enumerate(cols):
        for j, k in enumerate(keys):
            ax = axes[row][j]
            im = ax.imshow(_grid(res, k).numpy(), aspect="auto", cmap="magma")
            ax.set_title(f"{label} {k}".strip(), fontsize=9)
            ax.set_yticks(range(len(types)), ylab, fontsize=7)
            if row == len(cols) - 1:
                ax.set_xlabel("head", fontsize=8)
            fig.colorbar(im, ax=ax)
    fig.suptitle("attention per layer x head (G global, L local/sliding)", fontsize=10)
    fig.tight_layout()
    C.figure(out, "attention_heads.png", fig)
    # attention maps of the first prompt: the first local and the first global layer (and the last layer)
    toks, maps = a["maps"][0]
    show = sorted({types.index(t) for t in set(types)} | {len(types) - 1})
    fig, axes = plt.subplots(1, len(show), figsize=(3.2 * len(show), 3.2), squeeze=False)
    for ax, li in zip(axes[0], show):
        ax.imshow(maps[li].mean(0).numpy(), cmap="Blues", vmin=0)
        ax.set_title(f"layer {li} ({'global' if types[li] == 'full_attention' else 'local'}), head mean", fontsize=8)
        ax.set_xlabel("key"), ax.set_ylabel("query")
    C.figure(out, "attention_maps.png", fig)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab analyze attention", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder or LoRA adapter folder")
    ap.add_argument("--vs", help="a second model (e.g. the fine-tuned one) to compare: before vs after")
    ap.add_argument("--data", help="JSONL (text / prompt[+response]) or .txt, one prompt a line; default built-in")
    ap.add_argument("--max-prompts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--attn", default="eager", help="attention implementation; only eager returns weights")
    ap.add_argument("--out", help="output folder (default: RUN/analysis/attention for a run checkpoint)")
    args = ap.parse_args(argv)
    if args.attn != "eager":
        raise C.AnalysisError(f"--attn {args.attn}: attention weights are only returned by eager attention "
                              "(sdpa and flash attention never materialise them); use --attn eager")
    prompts = C.read_prompts(args.data, args.max_prompts)
    if args.vs:
        C.check_same_arch(C.load_config(args.model), C.load_config(args.vs), f"--model {args.model}", f"--vs {args.vs}")
    out = Path(args.out) if args.out else C.default_out("attention", args.vs or args.model)
    a = analyze_model(args.model, prompts, args.max_tokens)
    b = analyze_model(args.vs, prompts, args.max_tokens) if args.vs else None
    figures(out, a, b)
    strip = lambda r: {k: v for k, v in r.items() if k != "maps"}  # noqa: E731
    result = {"prompts": prompts, "base": strip(a), "tuned": strip(b) if b else None}
    if b:
        result["delta_by_layer_type"] = {t: {k: b["by_layer_type"][t][k] - v for k, v in s.items() if k != "layers"}
                                         for t, s in a["by_layer_type"].items()}
    C.write_json(out, "attention.json", result)
    for label, res in (("model", a), ("vs", b)):
        if res:
            for t, s in res["by_layer_type"].items():
                print(f"{label:<5} {t:<18} entropy {s['entropy']:.3f}  distance {s['mean_distance']:.2f}  "
                      f"window mass {s['window_mass']:.3f}  layers {s['layers']}")
    print(f"wrote {out}/attention.json and 2 figures")
    return 0
