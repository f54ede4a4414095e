"""`alignlab analyze memory -c CONFIG [key=value ...]`: peak memory per phase of one real training step.

The config's own model is loaded as its loop loads it (`models.load_policy`: weights, LoRA, dtype,
device), and one step of its shape runs: micro-batch x max sequence length of random tokens, the
last sequence right-padded as in plan --measure. Phases:
- sft: forward, backward, optimizer;
- dpo: reference (a no-grad forward: LoRA adapters disabled, or the same weights for a copy),
  forward, backward, optimizer, on chosen + rejected (2 x training.micro_batch sequences);
- grpo: rollout (generate() of training.micro_batch completions of sampling.max_new_tokens after a
  16-token prompt), reference when rl.kl_coef > 0, then forward, backward, optimizer.
One untracked step runs first so that the optimizer states exist. Measured as `plan --measure`
measures (plan/measure.py): live tensor bytes per phase on CPU and MPS, torch.cuda.max_memory_allocated
per phase on CUDA. The planner's prediction for the same setup is printed alongside.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from . import common as C

PROMPT_TOKENS = 16


def load_any_config(path: str, overrides: list[str]):
    """The first training schema the YAML validates against -> (task, cfg)."""
    from .. import config as K

    errors = []
    for task, schema in (("sft", K.SFTConfig), ("dpo", K.DPOConfig), ("grpo", K.GRPOConfig)):
        try:
            return task, K.load_config(schema, path, overrides)
        except K.ConfigError as exc:
            errors.append(f"{task}: {str(exc).splitlines()[0]}")
    raise C.AnalysisError(f"{path}: not an SFT, DPO or GRPO config ({'; '.join(errors)}); analyze memory measures "
                          "those three loops (PPO, EI and RM: measure the matching SFT/GRPO shape)")


@dataclass
class Shape:
    task: str
    batch: int  # sequences per forward/backward
    seq_len: int
    gen: int = 0  # rollout tokens (grpo)
    reference: bool = False


def shape_of(task: str, cfg) -> Shape:
    if task == "sft":
        return Shape("sft", cfg.training.micro_batch, cfg.data.max_seq_len)
    if task == "dpo":
        return Shape("dpo", 2 * cfg.training.micro_batch, cfg.data.max_seq_len, reference=True)
    gen = cfg.sampling.max_new_tokens
    return Shape("grpo", cfg.training.micro_batch, PROMPT_TOKENS + gen, gen=gen, reference=cfg.rl.kl_coef > 0)


def planner_setup(task: str, cfg, shape: Shape, device: str):
    """The planner's Setup for the same step (method, dtypes, batch, sequence, LoRA) on this device."""
    from ..plan.memory import Setup

    prec = {"auto": "fp32" if device == "cpu" else "bf16"}.get(cfg.training.precision, cfg.training.precision)
    lora = cfg.lora
    targets = tuple(lora.target_modules) if lora.target_modules != ["all-linear"] else Setup().lora_targets
    micro = shape.batch // 2 if task == "dpo" else shape.batch
    return Setup(method="lora" if lora.enabled else "full", task="sft" if task == "grpo" else task, device=device,
                 precision=prec, micro_batch=micro, seq_len=shape.seq_len, lora_r=lora.r, lora_alpha=lora.alpha,
                 lora_dropout=lora.dropout, lora_targets=targets, loss_impl="chunked", padded=True,
                 ref_model=shape.reference, ref_precomputed=False)


def profile(task: str, cfg, seed: int = 0) -> dict:
    """Run one tracked step of the config; -> {"device", "method", "phases": {phase: peak bytes}}."""
    from ..models import is_peft, load_policy
    from ..plan import measure as M

    shape = shape_of(task, cfg)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # allocations do not depend on threads; oversubscription slows a shared CPU
    try:
        model, tok, dev, prec = load_policy(cfg.model, cfg.lora, cfg.training.precision)
        model.config.use_cache = False
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)
        g = torch.Generator().manual_seed(seed)
        vocab = model.get_input_embeddings().weight.shape[0]
        ids = torch.randint(5, vocab, (shape.batch, shape.seq_len), generator=g)
        mask = torch.ones_like(ids)
        n_pad = max(1, shape.seq_len // 8)
        mask[-1, -n_pad:] = 0
        ids[-1, -n_pad:] = 0
        ids, mask = ids.to(dev), mask.to(dev)
        labels = ids.masked_fill(mask == 0, -100)
        setup = planner_setup(task, cfg, shape, dev.type)

        def ref_ctx():
            return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()

        def step(tr=None):
            if shape.gen:
                M.mark_phase(tr, dev, "rollout")
                with torch.no_grad():
                    model.config.use_cache = True
                    model.generate(input_ids=ids[:, :PROMPT_TOKENS], attention_mask=torch.ones_like(ids[:, :PROMPT_TOKENS]),
                                   max_new_tokens=shape.gen, min_new_tokens=shape.gen, do_sample=True,
                                   pad_token_id=tok.pad_token_id)
                    model.config.use_cache = False
            if shape.reference:
                M.mark_phase(tr, dev, "reference")
                with torch.no_grad(), ref_ctx():
                    M._loss(model, setup, ids, mask, labels)
            M.mark_phase(tr, dev, "forward")
            with prec.autocast_ctx(dev):
                loss = M._loss(model, setup, ids, mask, labels)
            M.mark_phase(tr, dev, "backward")
            loss.backward()
            del loss
            M.mark_phase(tr, dev, "optimizer")
            opt.step()
            opt.zero_grad(set_to_none=True)
            M.mark_phase(tr, dev, "done")

        step()
        peaks, method = M.peak_per_phase(step, dev, M.existing_tensors(model, opt, [(ids, mask, labels)]),
                                         ("rollout", "reference", "forward", "backward", "optimizer"))
        return {"device": str(dev), "method": method, "task": task, "shape": shape.__dict__, "phases": peaks,
                "setup": setup}
    finally:
        torch.set_num_threads(prev_threads)


def predict(cfg, setup) -> dict[str, float]:
    from ..models import adapter_chain, resolve_model_path
    from ..plan.arch import load_arch
    from ..plan.memory import estimate

    arch = load_arch(resolve_model_path(adapter_chain(cfg.model.path)[0]))
    est = estimate(arch, setup)
    return {ph: est.peak_of(ph) for ph in ("forward", "backward", "optimizer")}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab analyze memory", description=__doc__.splitlines()[0])
    ap.add_argument("--config", "-c", required=True, help="YAML or packaged config name (sft_tiny, dpo_tiny, grpo_tiny)")
    ap.add_argument("--out", help="output folder (default runs/analysis/memory)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for training")
    args = ap.parse_args(argv)
    task, cfg = load_any_config(args.config, args.overrides)
    res = profile(task, cfg)
    pred = predict(cfg, res.pop("setup"))
    rows = []
    for ph, v in res["phases"].items():
        p = pred.get(ph)
        rows.append({"phase": ph, "measured_mib": v / 2**20, "predicted_mib": p / 2**20 if p is not None else None,
                     "error": (p - v) / v if p is not None and v else None})
    res["phases"] = rows
    out = Path(args.out) if args.out else C.default_out("memory", None)
    C.write_json(out, "memory.json", res)
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["measured_mib"] for r in rows], 0.4, label=f"measured ({res['method']})")
    ax.bar([x + 0.2 for x in xs], [r["predicted_mib"] or 0 for r in rows], 0.4, label="planner")
    ax.set_xticks(list(xs), [r["phase"] for r in rows]), ax.set_ylabel("peak MiB"), ax.legend(fontsize=7)
    ax.set_title(f"{task} step on {res['device']}", fontsize=9)
    C.figure(out, "memory.png", fig)
    print(f"{'phase':<10} {'measured MiB':>13} {'planner MiB':>12} {'error':>8}")
    for r in rows:
        pm = f"{r['predicted_mib']:.2f}" if r["predicted_mib"] is not None else "-"
        err = f"{100 * r['error']:+.1f}%" if r["error"] is not None else "-"
        print(f"{r['phase']:<10} {r['measured_mib']:>13.2f} {pm:>12} {err:>8}")
    print(f"wrote {out}/memory.json")
    return 0
