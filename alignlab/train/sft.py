"""Supervised fine-tuning: next-token NLL on response tokens only.

Variant: the loss of an optimizer step is the sum of response-token NLL over all of the step's
micro-batches divided by the number of response tokens in the whole step (`loss_normalizer=tokens`,
default) or the mean over the step's sequences of each sequence's mean token NLL
(`loss_normalizer=sequences`). Either way the normaliser is fixed before the micro-batch loop, so
8 micro-batches of 1 and 2 of 4 give the same update (tested). AdamW with decoupled weight decay
(not on biases/norms), global grad-norm clipping, warmup + cosine/linear/constant schedule.
Evaluation: held-out token NLL (teacher forced) and exact match of greedy generations.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import checkpoint, data, distributed, losses, models, optim, rollout, tracking
from ..config import SFTConfig
from ..errors import TrainingDiverged  # noqa: F401  (raised by the watchdog: training.watchdog.nonfinite)
from ..step import accumulate_step, make_batch, micro_logps, to_device


@torch.no_grad()
def evaluate(model, tok, eval_set: list[data.Encoded], cfg: SFTConfig, device, prec) -> tuple[dict, list[dict]]:
    """Held-out NLL per response token, and exact match of greedy completions."""
    model.eval()
    items = eval_set[: cfg.eval.max_examples]
    nll, n_tok = 0.0, 0
    for mb in data.micro_batches(items, cfg.training.micro_batch, bucket=True,
                                 max_tokens=cfg.training.max_tokens_per_micro_batch, packed=cfg.data.packing):
        batch = to_device(make_batch(mb, tok.pad_token_id, cfg.data.pack_len), device)
        logps = micro_logps(model, batch, device, prec)
        nll += float(-losses.masked_normalize(logps, batch["response_mask"]))
        n_tok += int(batch["response_mask"].sum())
    prompts = [tok.decode(e.ids[: e.n_prompt], skip_special_tokens=False) for e in items]
    with prec.autocast_ctx(device):
        ro = rollout.generate(model, tok, prompts, max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    rows, correct = [], 0
    for e, p, c in zip(items, prompts, ro.completions):
        ref = e.example.get("answer", e.example.get("response", ""))
        ok = c.strip() == str(ref).strip()
        correct += ok
        rows.append({"id": e.example.get("id"), "prompt": p, "completion": c, "reference": ref, "exact_match": ok})
    model.train()
    return {"eval/loss": nll / max(n_tok, 1), "eval/exact_match": correct / max(len(items), 1)}, rows


def main(cfg: SFTConfig, hooks: list | None = None) -> Path:
    t = cfg.training
    dist = distributed.setup(cfg)  # torchrun ranks (docs/distributed.md); a no-op in one process
    # Data first: bad lines and over-long examples fail before any model is loaded.
    tok = models.start_tokenizer(cfg.model.path)
    train_set = data.encode(data.load_examples(cfg.data.train, cfg.data, "train", cfg.seed), tok, cfg.data)
    eval_set = (data.encode(data.load_examples(cfg.data.eval, cfg.data, "eval", cfg.seed), tok, cfg.data)
                if cfg.data.eval else [])
    total_steps = t.total_steps or max(1, math.ceil(t.epochs * len(train_set) / t.global_batch_seqs))

    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    policy = dist.wrap(policy)
    opt, sched = optim.build(policy, cfg.optim, total_steps)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    run.truncate_after(start)
    if resume_from is not None:
        tracking.console.print(f"[green]resumed from {resume_from} (step {start})")
    run.begin(cfg, policy, tok, opt, t.hooks, hooks, scheduler=sched, scaler=scaler)
    trainable, total = models.count_parameters(policy)
    tracking.console.print(f"{cfg.name}: {trainable:,} trainable / {total:,} parameters on {device}, "
                           f"{len(train_set)} train examples, {total_steps} steps x {t.global_batch_seqs} seqs "
                           f"({-(-t.global_batch_seqs // (dist.world * t.micro_batch))} micro-batches of "
                           f"{t.micro_batch}{f' per rank, {dist.world} ranks' if dist.world > 1 else ''})")

    if start == 0 and eval_set:  # the "before" row of every comparison
        metrics, rows = evaluate(policy, tok, eval_set, cfg, device, prec)
        run.log(0, **metrics)
        run.samples(0, rows)

    sampler = data.StepSampler(len(train_set), t.global_batch_seqs, cfg.seed)
    policy.train()
    with run.progress(total_steps, start, cfg.name, every=t.log_every):
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            items = [train_set[i] for i in sampler.indices(step)]
            step_loss, n_seen = accumulate_step(  # this rank's share, normalised by the whole step's counts
                policy, dist.shard(items), tok.pad_token_id, device, prec, micro_batch_seqs=t.micro_batch,
                normalizer=t.loss_normalizer, bucket=cfg.data.length_bucketing,
                packing_len=cfg.data.pack_len, scaler=scaler,
                max_tokens=t.max_tokens_per_micro_batch, step_items=items)
            step_loss, n_seen = dist.sum([step_loss, n_seen])
            grad_norm = optim.step(policy, opt, sched, cfg.optim.max_grad_norm, scaler,
                                   guard=run.watchdog.guard(step + 1, step_loss))
            done = step + 1
            dt = time.perf_counter() - t0
            run.end_step(done, total_steps, {
                "loss/train": step_loss, "lr": sched.get_last_lr()[0], "grad/norm": grad_norm,
                "tokens/response": sum(e.n_response for e in items), "tokens/per_s": n_seen / dt, "time/step": dt,
                "mem/peak_gb": tracking.peak_memory_gb(device)}, shown=f"{step_loss:.4f}",
                evaluate=(lambda: evaluate(policy, tok, eval_set, cfg, device, prec)) if eval_set else None,
                eval_every=t.eval_every,
                save=lambda s: checkpoint.save(cfg.run_dir, s, policy, tok, opt, sched, t.keep_last, scaler=scaler),
                save_every=t.save_every)
    return cfg.run_dir
