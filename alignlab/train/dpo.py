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

from .. import checkpoint, data, distributed, losses, models, optim, tracking
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


def pair_logps(model, pairs: list[tuple[data.Encoded, data.Encoded]], pad_id: int, device, prec,
               pack_len: int | None = None):
    """Summed response log-probs of chosen and rejected in one forward: ({"c": (B,), "r": (B,)}, lengths).
    `pack_len` (data.packing): the 2B sequences are packed into rows of at most that many tokens, with
    position_ids restarting per sequence, and summed per sequence: no padding is computed."""
    items = [c for c, _ in pairs] + [r for _, r in pairs]
    B = len(pairs)
    if pack_len:
        batch = to_device(data.collate_packed(items, pad_id, pack_len), device)
        logps = micro_logps(model, batch, device, prec)  # (rows, width)
        mask, seg = batch["response_mask"], batch["segment"]
        seq = data.segment_sums(logps, mask, seg, 2 * B)  # (2B,)
        n = data.segment_sums(mask.float(), mask, seg, 2 * B)
    else:
        batch = to_device(data.collate(items, pad_id), device)
        logps = micro_logps(model, batch, device, prec)  # (2B, T)
        seq = losses.masked_normalize(logps, batch["response_mask"], dim=-1)  # (2B,)
        n = batch["response_mask"].sum(-1).float()
    return {"c": seq[:B], "r": seq[B:]}, {"c": n[:B], "r": n[B:]}


def micro_batches(pairs, idx: list[int], micro: int, max_tokens: int | None, packed: bool) -> list[list[int]]:
    """The step's pair indices cut into micro-batches (`data.budget_micro_batches`)."""
    return data.budget_micro_batches(idx, [(len(pairs[i][0].ids), len(pairs[i][1].ids)) for i in idx], micro,
                                     max_tokens, packed)


@torch.no_grad()
def reference_logps(model, pairs, pad_id, device, prec, micro: int, use_adapter_off: bool,
                    pack_len: int | None = None, max_tokens: int | None = None) -> torch.Tensor:
    """(N, 2) reference log-probs (chosen, rejected) for every pair."""
    out = torch.zeros(len(pairs), 2)
    for idx in micro_batches(pairs, list(range(len(pairs))), micro, max_tokens, pack_len is not None):
        chunk = [pairs[i] for i in idx]
        if use_adapter_off:
            with models.reference_mode(model):
                lp, _ = pair_logps(model, chunk, pad_id, device, prec, pack_len)
        else:
            lp, _ = pair_logps(model, chunk, pad_id, device, prec, pack_len)
        out[idx] = torch.stack([lp["c"], lp["r"]], dim=1).float().cpu()
    return out


def main(cfg: DPOConfig, hooks: list | None = None) -> Path:
    t, d = cfg.training, cfg.dpo
    dist = distributed.setup(cfg)  # torchrun ranks (docs/distributed.md); a no-op in one process
    tok = models.start_tokenizer(cfg.model.path)
    train = data.encode_pairs(data.load_pref_examples(cfg.data.train, "train", cfg.seed, cfg.data.n_train), tok, cfg.data)
    held = (data.encode_pairs(data.load_pref_examples(cfg.data.eval, "eval", cfg.seed, cfg.data.n_eval), tok, cfg.data)
            if cfg.data.eval else [])
    total_steps = t.total_steps or max(1, math.ceil(t.epochs * len(train) / t.global_batch_pairs))
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    models.disable_dropout(policy)
    pack = cfg.data.pack_len
    policy = dist.wrap(policy)
    # relora / rank1 merge the adapters into the base: adapters-off is no longer the reference
    adapter_ref = cfg.lora.enabled and not lora_actions.merges_into_base(cfg)
    mode = d.reference if d.reference != "auto" else ("adapter" if adapter_ref else "precomputed")
    if d.loss in REFERENCE_FREE:
        mode = "none"
    ref_model = None
    if mode == "copy":
        ref_model = dist.wrap(models.load_frozen_reference(cfg.model, t.precision), train=False)
    cache = {}
    if mode == "precomputed":
        path = cfg.run_dir / "reference_logps.pt"
        if dist.broadcast(path.exists()):  # written before step 1 of this run: a resume must not recompute it
            cache = torch.load(path)
        else:  # each rank computes its block of the pairs; every rank gets them all
            ref = lambda pairs: reference_logps(policy, pairs, tok.pad_token_id, device, prec, t.micro_batch, False,  # noqa: E731
                                                pack, t.max_tokens_per_micro_batch)
            cache = {"train": dist.map_sharded(ref, train), "eval": dist.map_sharded(ref, held)}
            if dist.is_main:
                torch.save(cache, path.with_suffix(".tmp"))  # renamed when complete: a kill mid-write leaves no torn cache
                path.with_suffix(".tmp").replace(path)
            dist.barrier()

    def ref_for(split: str, idx: list[int], pairs):
        if mode == "none":
            return {"c": None, "r": None}
        if mode == "precomputed":
            r = cache[split][idx].to(device)
            return {"c": r[:, 0], "r": r[:, 1]}
        with torch.no_grad():
            if mode == "adapter":
                with models.reference_mode(policy):
                    lp, _ = pair_logps(policy, pairs, tok.pad_token_id, device, prec, pack)
            else:
                lp, _ = pair_logps(ref_model, pairs, tok.pad_token_id, device, prec, pack)
        return lp

    @torch.no_grad()
    def evaluate() -> dict:
        policy.eval()
        sums: dict[str, float] = {}
        for idx in micro_batches(held, list(range(len(held))), t.micro_batch, t.max_tokens_per_micro_batch, bool(pack)):
            pairs = [held[j] for j in idx]
            lp, n = pair_logps(policy, pairs, tok.pad_token_id, device, prec, pack)
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
            mine = dist.shard(idx_all)  # this rank's pairs; the micro-batches are per rank
            agg: dict[str, float] = {}
            for idx in micro_batches(train, mine, t.micro_batch, t.max_tokens_per_micro_batch, bool(pack)):
                pairs = [train[j] for j in idx]
                lp, n = pair_logps(policy, pairs, tok.pad_token_id, device, prec, pack)
                per_pair, stats = LOSSES[d.loss](lp, ref_for("train", idx, pairs), n, d)
                loss = per_pair.sum() / n_pairs
                (scaler.scale(loss) if scaler else loss).backward()
                agg["loss/train"] = agg.get("loss/train", 0.0) + loss.item()
                stats = {**stats, "logps/chosen": lp["c"].detach(), "logps/rejected": lp["r"].detach()}
                for k, v in stats.items():
                    agg[k] = agg.get(k, 0.0) + v.sum().item() / n_pairs
            agg = dist.sum(agg)  # the whole step's loss and statistics, on every rank
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
