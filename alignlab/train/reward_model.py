"""Reward models trained on preference pairs with the Bradley-Terry loss.

`rm.kind=lm`: an LM backbone with a scalar head (`AutoModelForSequenceClassification`, the score
read at the last non-padding token), full or LoRA; saved as a normal HF folder that
`transformers` loads without alignlab. `rm.kind=encoder`: the plan's small trainable component, a
3-layer transformer encoder over the policy tokenizer's ids (`alignlab/rewards/encoder_rm.py`),
for when a second LM is too expensive.

Loss: -log sigmoid(r_c - r_r) (+ center_coef * (r_c + r_r)^2, arXiv:2312.09244), mean over the
step's pairs. Metrics: loss, pairwise accuracy, margin; held-out pairwise accuracy at eval steps.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import checkpoint, data, distributed, losses, models, optim, tracking
from ..config import RMConfig
from ..step import to_device


def pair_scores(model, pairs, pad_id: int, device, prec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar rewards of chosen and rejected in one forward: ((B,), (B,))."""
    items = [c for c, _ in pairs] + [r for _, r in pairs]
    seqs = [e.ids for e in items]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):  # right padding: the head reads the last real token
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    b = to_device({"input_ids": ids, "attention_mask": mask}, device)
    with prec.autocast_ctx(device):
        scores = model(**b).logits.squeeze(-1).float()  # (2B,)
    return scores[: len(pairs)], scores[len(pairs) :]


def main(cfg: RMConfig, hooks: list | None = None) -> Path:
    t = cfg.training
    dist = distributed.setup(cfg)  # torchrun ranks (docs/distributed.md); a no-op in one process
    if cfg.rm.kind == "encoder":
        return train_encoder(cfg)
    tok = models.start_tokenizer(cfg.model.path)
    train = data.encode_pairs(data.load_pref_examples(cfg.data.train, "train", cfg.seed, cfg.data.n_train), tok, cfg.data)
    held = (data.encode_pairs(data.load_pref_examples(cfg.data.eval, "eval", cfg.seed, cfg.data.n_eval), tok, cfg.data)
            if cfg.data.eval else [])
    total_steps = t.total_steps or max(1, math.ceil(t.epochs * len(train) / t.global_batch_pairs))
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    model, tok, device, prec = models.load_reward_model(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    model = dist.wrap(model)
    opt, sched = optim.build(model, cfg.optim, total_steps)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    run.truncate_after(start)
    run.begin(cfg, model, tok, opt, t.hooks, hooks)

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        right, margin = 0.0, 0.0
        for i in range(0, len(held), t.micro_batch):
            rc, rr = pair_scores(model, held[i : i + t.micro_batch], tok.pad_token_id, device, prec)
            right += (rc > rr).sum().item()
            margin += (rc - rr).sum().item()
        model.train()
        return {"eval/pairwise_accuracy": right / max(len(held), 1), "eval/margin": margin / max(len(held), 1)}

    if start == 0 and held:
        run.log(0, **evaluate())
    sampler = data.StepSampler(len(train), t.global_batch_pairs, cfg.seed)
    model.train()
    with run.progress(total_steps, start, cfg.name, every=t.log_every):
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            idx_all = sampler.indices(step)
            n_pairs = len(idx_all)
            agg = {"loss/train": 0.0, "accuracy": 0.0, "margin": 0.0}
            mine = dist.shard(idx_all)  # this rank's pairs; the micro-batches are per rank
            for i in range(0, len(mine), t.micro_batch):
                pairs = [train[j] for j in mine[i : i + t.micro_batch]]
                rc, rr = pair_scores(model, pairs, tok.pad_token_id, device, prec)
                loss, stats = losses.bradley_terry(rc, rr, cfg.rm.center_coef)
                loss = loss * len(pairs) / n_pairs  # mean over the step's pairs, whatever the micro-batching
                (scaler.scale(loss) if scaler else loss).backward()
                agg["loss/train"] += loss.item()
                agg["accuracy"] += stats["accuracy"].item() * len(pairs) / n_pairs
                agg["margin"] += stats["margin"].item() * len(pairs) / n_pairs
            agg = dist.sum(agg)  # the whole step's, on every rank
            grad_norm = optim.step(model, opt, sched, cfg.optim.max_grad_norm, scaler,
                                   guard=run.watchdog.guard(step + 1, agg["loss/train"]))
            done, dt = step + 1, time.perf_counter() - t0
            n_tok = sum(len(a.ids) + len(b.ids) for a, b in (train[j] for j in idx_all))
            run.end_step(done, total_steps, {
                **agg, "grad/norm": grad_norm, "lr": sched.get_last_lr()[0], "time/step": dt, "tokens/per_s": n_tok / dt,
                "mem/peak_gb": tracking.peak_memory_gb(device)}, shown=f"{agg['loss/train']:.4f}",
                evaluate=(lambda: (evaluate(), None)) if held else None, eval_every=t.eval_every,
                save=lambda s: checkpoint.save(cfg.run_dir, s, model, tok, opt, sched, t.keep_last, scaler=scaler),
                save_every=t.save_every)
    return cfg.run_dir


def train_encoder(cfg: RMConfig) -> Path:
    """The small encoder reward model (`alignlab/rewards/encoder_rm.py`), trained with the same
    Bradley-Terry loss on the same pairs; saved to `<run>/encoder_rm/` (config.json + safetensors),
    which `reward.rm_path` accepts in PPO. Epochs: training.epochs, or total_steps worth of batches."""
    from ..rewards import encoder_rm

    t = cfg.training
    tok = models.start_tokenizer(cfg.model.path)
    train = data.load_pref_examples(cfg.data.train, "train", cfg.seed, cfg.data.n_train)
    held = data.load_pref_examples(cfg.data.eval, "eval", cfg.seed, cfg.data.n_eval) if cfg.data.eval else None
    run = tracking.start(cfg, cfg.run_dir, fresh=True)
    epochs = math.ceil(t.epochs) if t.epochs else max(1, math.ceil(t.total_steps * t.global_batch_pairs / len(train)))
    t0 = time.perf_counter()
    model, metrics = encoder_rm.train_encoder_rm(
        train, tok, eval_pairs=held, eval_fraction=0.2 if held is None else 0.0, epochs=epochs, lr=cfg.optim.lr,
        batch_size=t.global_batch_pairs, weight_decay=cfg.optim.weight_decay, center_coef=cfg.rm.center_coef,
        seed=cfg.seed, d_model=cfg.rm.encoder_d_model, n_heads=cfg.rm.encoder_heads, n_layers=cfg.rm.encoder_layers,
        max_len=cfg.data.max_seq_len)
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    run.log(epochs, **flat, **{"time/total": time.perf_counter() - t0})
    out = model.save(cfg.run_dir / "encoder_rm")
    tracking.console.print(f"encoder reward model: {out}; " + ", ".join(f"{k} {v:.3f}" for k, v in flat.items()
                                                                         if "accuracy" in k))
    return cfg.run_dir
