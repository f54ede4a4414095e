"""`alignlab analyze activations --model M [--vs M2] [-c CONFIG --grad-steps N]`: the residual stream per layer.

For each decoder layer's output h (tokens x hidden, every prompt's tokens together):
- norm: mean over tokens of ‖h_t‖₂; mean and std over all elements;
- kurtosis: excess kurtosis E[(x−μ)⁴]/σ⁴ − 3 over all elements (0 for a Gaussian; large when a
  few channels carry outliers, as in LLM "massive activations");
- outlier_frac: the share of elements with |x − μ| > 6σ.
Gradient flow (`--grad-steps N`): N AdamW steps of next-token loss on the prompts, starting from the
model (or, with -c, the config's model, LoRA settings and learning rate); per step and layer, the
L2 norm of the gradient of that layer's trainable parameters.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import common as C


def residual_stats(h: torch.Tensor, outlier_sigma: float = 6.0) -> dict[str, float]:
    """h (tokens, hidden) -> norm, mean, std, kurtosis (excess), outlier_frac."""
    x = h.double()
    mu, sd = x.mean(), x.std(unbiased=False)
    z = (x - mu) / sd if sd > 0 else torch.zeros_like(x)
    return {"norm": float(x.norm(dim=-1).mean()), "mean": float(mu), "std": float(sd),
            "kurtosis": float((z ** 4).mean() - 3), "outlier_frac": float((z.abs() > outlier_sigma).double().mean())}


def decoder_layers(model):
    for path in ("model.layers", "model.model.layers", "transformer.h"):
        obj = model
        try:
            for a in path.split("."):
                obj = getattr(obj, a)
            return list(obj)
        except AttributeError:
            continue
    raise C.AnalysisError(f"{type(model).__name__}: cannot find the decoder layers (model.layers)")


@torch.no_grad()
def layer_outputs(model, tok, prompts: list[str], max_tokens: int) -> list[torch.Tensor]:
    """Per layer, (all tokens, hidden) outputs of that decoder layer."""
    layers = decoder_layers(model)
    acc: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [layer.register_forward_hook(lambda _m, _i, out, i=i: acc[i].append(
        (out[0] if isinstance(out, tuple) else out)[0].float())) for i, layer in enumerate(layers)]
    try:
        for text in prompts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
            model(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(a) for a in acc]


def analyze_model(path: str, prompts: list[str], max_tokens: int) -> dict:
    model, tok = C.load_model(path), C.load_tokenizer(path)
    types = C.layer_types(model.config)
    outs = layer_outputs(model, tok, prompts, max_tokens)
    return {"model": path, "layers": [{"layer": i, "layer_type": types[i], **residual_stats(h)} for i, h in enumerate(outs)]}


def grad_flow(model, tok, prompts: list[str], steps: int, lr: float, max_tokens: int) -> dict:
    """Per step, per layer: ‖∇‖₂ of the layer's trainable parameters under next-token loss on the prompts."""
    layers = decoder_layers(model)
    params = [[p for p in layer.parameters() if p.requires_grad] for layer in layers]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    batch = [tok(t, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"] for t in prompts]
    dev = next(model.parameters()).device
    model.train()
    per_step = []
    for _ in range(steps):
        loss_total = 0.0
        for ids in batch:
            ids = ids.to(dev)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss / len(batch)
            loss.backward()
            loss_total += loss.item()
        per_step.append({"loss": loss_total, "grad_norm": [
            float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ps if p.grad is not None) or torch.zeros(())))
            for ps in params]})
        opt.step()
        opt.zero_grad(set_to_none=True)
    n = len(layers)
    return {"steps": per_step, "lr": lr,
            "layers": [{"layer": i, "mean_grad_norm": sum(s["grad_norm"][i] for s in per_step) / steps} for i in range(n)]}


def figures(out: Path, res: dict) -> None:
    plt = C.pyplot()
    keys = ("norm", "std", "kurtosis", "outlier_frac")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.6))
    for ax, k in zip(axes, keys):
        for label in ("model", "vs"):
            if res.get(label):
                rows = res[label]["layers"]
                ax.plot([r["layer"] for r in rows], [r[k] for r in rows], marker="o", label=label)
        ax.set_title(k, fontsize=9), ax.set_xlabel("layer", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    C.figure(out, "activations.png", fig)
    if res.get("grad_flow"):
        fig, ax = plt.subplots(figsize=(4.5, 2.8))
        for s, step in enumerate(res["grad_flow"]["steps"]):
            ax.plot(range(len(step["grad_norm"])), step["grad_norm"], marker=".", label=f"step {s + 1}")
        ax.set_yscale("log"), ax.set_xlabel("layer"), ax.set_ylabel("‖grad‖₂"), ax.legend(fontsize=7)
        ax.set_title("gradient flow per layer", fontsize=9)
        C.figure(out, "grad_flow.png", fig)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab analyze activations", description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder or LoRA adapter folder (default: the config's model.path)")
    ap.add_argument("--vs", help="a second checkpoint, shown side by side")
    ap.add_argument("--data", help="JSONL (text / prompt[+response]) or .txt; default built-in prompts")
    ap.add_argument("--max-prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--config", "-c", help="training config whose model, LoRA and lr the gradient-flow steps use")
    ap.add_argument("--grad-steps", type=int, default=None, help="gradient-flow steps (default 3 with -c, else 0)")
    ap.add_argument("--lr", type=float, default=None, help="gradient-flow learning rate (default: the config's, or 1e-4)")
    ap.add_argument("--out", help="output folder (default: RUN/analysis/activations for a run checkpoint)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for -c")
    args = ap.parse_args(argv)
    cfg = None
    if args.config:
        from .memory import load_any_config

        _, cfg = load_any_config(args.config, args.overrides)
    elif args.overrides:
        raise C.AnalysisError(f"overrides {args.overrides} given without -c CONFIG")
    path = args.model or (cfg.model.path if cfg else None)
    if not path:
        raise C.AnalysisError("give --model M (or -c CONFIG, whose model.path is used)")
    prompts = C.read_prompts(args.data, args.max_prompts)
    if args.vs:
        C.check_same_arch(C.load_config(path), C.load_config(args.vs), f"--model {path}", f"--vs {args.vs}")
    out = Path(args.out) if args.out else C.default_out("activations", args.vs or path)
    res = {"prompts": prompts, "model": analyze_model(path, prompts, args.max_tokens),
           "vs": analyze_model(args.vs, prompts, args.max_tokens) if args.vs else None}
    steps = args.grad_steps if args.grad_steps is not None else (3 if cfg else 0)
    if steps > 0:
        if cfg:
            from ..models import load_policy

            model, tok, _, _ = load_policy(cfg.model.model_copy(update={"path": path}), cfg.lora, "fp32")
        else:
            model, tok = C.load_model(path), C.load_tokenizer(path)
        lr = args.lr or (cfg.optim.lr if cfg else 1e-4)
        res["grad_flow"] = grad_flow(model, tok, prompts, steps, lr, args.max_tokens)
    C.write_json(out, "activations.json", res)
    figures(out, res)
    print(f"{'layer':>5} {'type':<18} {'norm':>9} {'std':>8} {'kurtosis':>9} {'outliers':>9}")
    for r in res["model"]["layers"]:
        print(f"{r['layer']:>5} {r['layer_type']:<18} {r['norm']:>9.3f} {r['std']:>8.4f} {r['kurtosis']:>9.2f} "
              f"{r['outlier_frac']:>9.2e}")
    print(f"wrote {out}/activations.json")
    return 0
