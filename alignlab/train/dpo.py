"""Direct preference optimisation and its variants, on prompt/chosen/rejected pairs.

The loss is picked from LOSSES by `dpo.loss`:
- `sigmoid`: DPO (arXiv:2305.18290);
- `cdpo`: label smoothing;
- `ipo` (arXiv:2310.12036), on the per-token mean log-ratio margin (`dpo.ipo_margin=mean`, the
  paper's results and TRL) or the token-summed one (`sum`);
- `hinge`: SLiC;
- `simpo`: reference-free and length-normalised (arXiv:2405.14734).

Chosen and rejected go through one forward (a concatenated batch). The step's loss is the mean over
its pairs, so micro-batching cannot change it.

The reference (`dpo.reference`):
- `adapter`: the LoRA base with adapters disabled (no second model);
- `precomputed`: one pass over every pair before training, cached in the run directory, so
  training holds one model;
- `copy`: a frozen second model;
- `auto`: adapter for LoRA, precomputed otherwise.

At step 0 the policy is the reference, so sigmoid DPO's loss is exactly log 2 (tested).
Metrics: implicit rewards of chosen and rejected (beta * log ratio), margin, accuracy, log-probs.
Evaluation: the same on held-out pairs.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import checkpoint, data, losses, models, optim, tracking
from ..config import DPOConfig
from ..lora import actions as lora_actions
from ..step import micro_logps, to_device


def _sigmoid(lp, ref, n, cfg):
    return losses.dpo_sigmoid(lp["c"], lp["r"], ref["c"], ref["r"], cfg.beta)


def _cdpo(lp, ref, n, cfg):
    return losses.dpo_sigmoid(lp["c"], lp["r"], ref["c"], ref["r"], cfg.beta, cfg.label_smoothing)


def _ipo(lp, ref, n, cfg):
    # ipo_margin=mean: log-ratios per completion token (the paper's results; TRL); sum: summed over tokens
    per = (n["c"], n["r"]) if cfg.ipo_margin == "mean" else (1.0, 1.0)
    return losses.dpo_ipo(lp["c"], lp["r"], ref["c"], ref["r"], cfg.beta, *per)


def _hinge(lp, ref, n, cfg):
    return losses.dpo_hinge(lp["c"], lp["r"], ref["c"], ref["r"], cfg.beta)


def _simpo(lp, ref, n, cfg):
    return losses.simpo(lp["c"] / n["c"], lp["r"] / n["r"], cfg.beta, cfg.simpo_gamma)


# (sequence log-probs, reference log-probs, response lengths, dpo config) -> (per-pair loss, stats)
LOSSES = {"sigmoid": _sigmoid, "cdpo": _cdpo, "ipo": _ipo, "hinge": _hinge, "simpo": _simpo}
REFERENCE_FREE = {"simpo"}  # losses that read no reference log-probs: no reference is built or run


def pair_logps(model, pairs: list[tuple[data.Encoded, data.Encoded]], pad_id: int, device, prec):
    """Summed response log-probs of chosen and rejected in one forward: ({"c": (B,), "r": (B,)}, lengths)."""
    items = [c for c, _ in pairs] + [r for _, r in pairs]
    batch = to_device(data.collate(items, pad_id), device)
    logps = micro_logps(model, batch, device, prec)  # (2B, T)
    seq = losses.masked_normalize(logps, batch["response_mask"], dim=-1)  # (2B,)
    n = batch["response_mask"].sum(-1).float()
    B = len(pairs)
    return {"c": seq[:B], "r": seq[B:]}, {"c": n[:B], "r": n[B:]}


@torch.no_grad()
def reference_logps(model, pairs, pad_id, device, prec, micro: int, use_adapter_off: bool) -> torch.Tensor:
    """(N, 2) reference log-probs (chosen, rejected) for every pair."""
    out = []
    for i in range(0, len(pairs), micro):
        if use_adapter_off:
            with models.reference_mode(model):
                lp, _ = pair_logps(model, pairs[i : i + micro], pad_id, device, prec)
        else:
            lp, _ = pair_logps(model, pairs[i : i + micro], pad_id, device, prec)
        out.append(torch.stack([lp["c"], lp["r"]], dim=1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def main(cfg: DPOConfig, hooks: list | None = None) -> Path:
    t, d = cfg.training, cfg.dpo
    tok = models.start_tokenizer(cfg.model.path)
    train = data.encode_pairs(data.load_pref_examples(cfg.data.train, "train", cfg.seed, cfg.data.n_train), tok, cfg.data)
    held = (data.encode_pairs(data.load_pref_examples(cfg.data.eval, "eval", cfg.seed, cfg.data.n_eval), tok, cfg.data)
            if cfg.data.eval else [])
    total_steps = t.total_steps or max(1, math.ceil(t.epochs * len(train) / t.global_batch_pairs))
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    models.disable_dropout(policy)
    # relora / rank1 merge the adapters into the base: adapters-off is no longer the reference
    adapter_ref = cfg.lora.enabled and not lora_actions.merges_into_base(cfg)
    mode = d.reference if d.reference != "auto" else ("adapter" if adapter_ref else "precomputed")
    if d.loss in REFERENCE_FREE:
        mode = "none"
    ref_model = None
    if mode == "copy":
        ref_model = models.load_frozen_reference(cfg.model, t.precision)
    cache = {}
    if mode == "precomputed":
        path = cfg.run_dir / "reference_logps.pt"
        if path.exists():  # written before step 1 of this run: a resume must not recompute from the trained policy
            cache = torch.load(path)
        else:
            cache = {"train": reference_logps(policy, train, tok.pad_token_id, device, prec, t.micro_batch_pairs, False),
                     "eval": reference_logps(policy, held, tok.pad_token_id, device, prec, t.micro_batch_pairs, False)}
            torch.save(cache, path.with_suffix(".tmp"))  # renamed when complete: a kill mid-write leaves no torn cache
            path.with_suffix(".tmp").replace(path)

    def ref_for(split: str, idx: list[int], pairs):
        if mode == "none":
            return {"c": None, "r": None}
        if mode == "precomputed":
            r = cache[split][idx].to(device)
            return {"c": r[:, 0], "r": r[:, 1]}
        with torch.no_grad():
            if mode == "adapter":
                with models.reference_mode(policy):
                    lp, _ = pair_logps(policy, pairs, tok.pad_token_id, device, prec)
            else:
                lp, _ = pair_logps(ref_model, pairs, tok.pad_token_id, device, prec)
        return lp

    @torch.no_grad()
    def evaluate() -> dict:
        policy.eval()
        sums: dict[str, float] = {}
        for i in range(0, len(held), t.micro_batch_pairs):
            idx = list(range(i, min(i + t.micro_batch_pairs, len(held))))
            pairs = [held[j] for j in idx]
            lp, n = pair_logps(policy, pairs, tok.pad_token_id, device, prec)
            loss, stats = LOSSES[d.loss](lp, ref_for("eval", idx, pairs), n, d)
            sums["eval/loss"] = sums.get("eval/loss", 0.0) + loss.sum().item()
            for k, v in stats.items():
                sums[f"eval/{k}"] = sums.get(f"eval/{k}", 0.0) + v.sum().item()
            # does the policy itself rank chosen above rejected? (meaningful from step 0, unlike the implicit reward)
            sums["eval/policy_prefers_chosen"] = sums.get("eval/policy_prefers_chosen", 0.0) + (lp["c"] > lp["r"]).sum().item()
        policy.train()
        return {k: v / max(len(held), 1) for k, v in sums.items()}

    opt, sched = optim.build(policy, cfg.optim, total_steps)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    run.truncate_after(start)
    run.begin(cfg, policy, tok, opt, t.hooks, hooks, scheduler=sched, scaler=scaler)
    if start == 0 and held:
        run.log(0, **evaluate())
    sampler = data.StepSampler(len(train), t.global_batch_pairs, cfg.seed)
    policy.train()
    with run.progress(total_steps, start, cfg.name, every=t.log_every):
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            idx_all = sampler.indices(step)
            n_pairs = len(idx_all)  # the step's normaliser, fixed before the micro-batches
            agg: dict[str, float] = {}
            for i in range(0, n_pairs, t.micro_batch_pairs):
                idx = idx_all[i : i + t.micro_batch_pairs]
                pairs = [train[j] for j in idx]
                lp, n = pair_logps(policy, pairs, tok.pad_token_id, device, prec)
                per_pair, stats = LOSSES[d.loss](lp, ref_for("train", idx, pairs), n, d)
                loss = per_pair.sum() / n_pairs
                (scaler.scale(loss) if scaler else loss).backward()
                agg["loss/train"] = agg.get("loss/train", 0.0) + loss.item()
                stats = {**stats, "logps/chosen": lp["c"].detach(), "logps/rejected": lp["r"].detach()}
                for k, v in stats.items():
                    agg[k] = agg.get(k, 0.0) + v.sum().item() / n_pairs
            grad_norm = optim.step(policy, opt, sched, cfg.optim.max_grad_norm, scaler,
                                   guard=run.watchdog.guard(step + 1, agg["loss/train"]))
            done, dt = step + 1, time.perf_counter() - t0
            n_tok = sum(len(a.ids) + len(b.ids) for a, b in (train[j] for j in idx_all))
            run.end_step(done, total_steps, {
                **agg, "grad/norm": grad_norm, "lr": sched.get_last_lr()[0], "time/step": dt, "tokens/per_s": n_tok / dt,
                "mem/peak_gb": tracking.peak_memory_gb(device)}, shown=f"{agg['loss/train']:.4f}",
                evaluate=(lambda: (evaluate(), None)) if held else None, eval_every=t.eval_every,
                save=lambda s: checkpoint.save(cfg.run_dir, s, policy, tok, opt, sched, t.keep_last, scaler=scaler),
                save_every=t.save_every)
    return cfg.run_dir
