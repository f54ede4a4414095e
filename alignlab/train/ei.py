"""Expert iteration: sample, keep what the verifier accepts, fine-tune on it, repeat.

Each of `training.total_steps` rounds samples `group_size` completions for `questions_per_round`
training questions (temperature from `sampling`). It keeps the correct ones (each distinct completion of a question
once, with `dedupe`) and runs `sft_epochs` passes of SFT over them, using the SFT loop's own
step (`step.accumulate_step`: response-token NLL normalised over the optimizer step). It logs how
many questions had at least one correct sample, then evaluates greedy held-out accuracy every
`training.eval_every` rounds (default 1; 0: after the last round only).
One optimizer and one schedule span all rounds. A checkpoint after round N is `step_N`.
Reference: Anthony et al. 2017 (arXiv:1705.08439); STaR (arXiv:2203.14465) for LMs.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from .. import checkpoint, data, distributed, models, optim, rollout, tasks, tracking
from ..config import EIConfig
from ..step import accumulate_step


def kept_examples(examples: list[dict], ro: rollout.Rollout, scores: list[dict], dedupe: bool) -> list[data.Encoded]:
    """The correct samples as SFT examples (prompt ids + completion ids, completion trained)."""
    out, seen = [], set()
    for i, (sc, pid, cid) in enumerate(zip(scores, ro.prompt_ids, ro.completion_ids)):
        ex = examples[i // ro.n]
        key = (ex["id"], tuple(cid))
        if sc["reward"] < 1.0 or not cid or (dedupe and key in seen):
            continue
        seen.add(key)
        out.append(data.Encoded(pid + cid, len(pid), {"id": ex["id"], "answer": ex["answer"]}))
    return out


def main(cfg: EIConfig, hooks: list | None = None) -> Path:
    e, t, s = cfg.ei, cfg.training, cfg.sampling
    dist = distributed.setup(cfg)  # torchrun ranks (docs/distributed.md); a no-op in one process
    task = tasks.load(cfg.task, cfg.seed)
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    policy = dist.wrap(policy)
    sampler = rollout.make_sampler(s, policy, tok, cfg.model, cfg.lora, prec, seed=cfg.seed)
    # An upper bound on updates (every sample correct) sizes the schedule.
    max_updates = t.total_steps * e.sft_epochs * math.ceil(e.questions_per_round * e.group_size / e.global_batch_seqs)
    opt, sched = optim.build(policy, cfg.optim, max_updates)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    run.truncate_after(start)
    run.begin(cfg, policy, tok, opt, t.hooks, hooks)
    if start == 0:
        metrics, rows = tasks.evaluate_run(policy, tok, task, cfg, sampler)
        run.log(0, **metrics)
        run.samples(0, rows)

    with run.progress(t.total_steps, start, cfg.name, every=t.log_every) as bar:
        for rnd in range(start, t.total_steps):
            t0 = time.perf_counter()
            examples = dist.shard(task.sample_train(e.questions_per_round, rnd))  # this rank's questions
            ro = sampler.generate([x["prompt"] for x in examples], max_new_tokens=s.max_new_tokens, n=e.group_size,
                                  temperature=s.temperature, top_p=s.top_p, stop=s.stop or task.stop,
                                  seed=dist.seeds(rollout.step_seed(cfg.seed, rnd), e.questions_per_round, e.group_size))
            scores = [task.reward(c, examples[i // e.group_size]) for i, c in enumerate(ro.completions)]
            per_q = dist.cat(torch.tensor([x["reward"] for x in scores]).view(-1, e.group_size))
            # every rank's kept samples, in question order: the round's SFT data is the same everywhere
            items = [x for part in dist.gather(kept_examples(examples, ro, scores, e.dedupe)) for x in part]
            t1 = time.perf_counter()
            losses_, n_updates, n_seen = [], 0, 0
            for epoch in range(e.sft_epochs):
                order = list(range(len(items)))
                random.Random(f"{cfg.seed}-{rnd}-{epoch}").shuffle(order)
                for b in range(0, len(order), e.global_batch_seqs):
                    batch = [items[i] for i in order[b : b + e.global_batch_seqs]]
                    loss, seen = accumulate_step(policy, dist.shard(batch), tok.pad_token_id, device, prec,
                                                 micro_batch_seqs=t.micro_batch, normalizer=e.loss_normalizer,
                                                 scaler=scaler, max_tokens=t.max_tokens_per_micro_batch, step_items=batch,
                                                 packing_len=max(len(x.ids) for x in batch) if e.packing else None)
                    loss, seen = dist.sum([loss, seen])
                    optim.step(policy, opt, sched, cfg.optim.max_grad_norm, scaler, guard=run.watchdog.guard(rnd + 1, loss))
                    losses_.append(loss)
                    n_updates += 1
                    n_seen += seen
            sampler.sync()  # vLLM: push the new weights before evaluating and the next round
            t2 = time.perf_counter()
            done = rnd + 1
            # a round's held-out evaluation joins the round's row (one metrics row per round)
            evaluated = (tasks.evaluate_run(policy, tok, task, cfg, sampler)
                         if run.due(done, t.eval_every, t.total_steps) else None)
            found = (per_q.max(1).values > 0).float().mean().item()
            train_loss = sum(losses_) / max(len(losses_), 1)
            bar.console.print(f"round {done}: kept {len(items)} samples, {100 * found:.0f}% of questions had a correct one"
                              + (f", held-out accuracy {evaluated[0]['eval/accuracy']:.3f}" if evaluated else ""))
            run.end_step(done, t.total_steps, {
                "ei/questions_with_correct_frac": found, "ei/kept_samples": len(items), "ei/updates": n_updates,
                "reward/mean": per_q.mean().item(), "loss/train": train_loss,
                "lr": sched.get_last_lr()[0], "time/rollout": t1 - t0, "time/train": t2 - t1,
                "tokens/per_s": n_seen / max(t2 - t1, 1e-9), "mem/peak_gb": tracking.peak_memory_gb(device)},
                shown=f"{train_loss:.4f}", evaluated=evaluated,
                save=lambda s: checkpoint.save(cfg.run_dir, s, policy, tok, opt, sched, t.keep_last, scaler=scaler),
                save_every=t.save_every)
    return cfg.run_dir
