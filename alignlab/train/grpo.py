"""GRPO on a task with a verifiable reward (DeepSeekMath, arXiv:2402.03300), with the usual variants.

Each step: sample `prompts_per_step` prompts and `group_size` completions for each. Score them
and compute advantages from each prompt's group (`rl.advantage`: `group` z-score, or mean-only
when `normalize_by_std=false`, i.e. Dr. GRPO; or `rloo` leave-one-out). Compute the old
log-probs with the same micro-batches as training. Then run `epochs_per_rollout_batch` passes,
one optimizer step each.

The per-token loss is picked from LOSSES (`rl.loss_type`):
- REINFORCE without or with a baseline;
- the clipped surrogate with eps_low/eps_high (DAPO clip-higher when they differ);
- GSPO's sequence-level ratio.
An optional KL to the reference (k1/k2/k3) is added in the loss, and an optional entropy bonus
is subtracted. The loss is reduced by `rl.aggregation` (seq_mean = masked_mean per sequence;
token_mean; constant = masked_normalize by max_new_tokens), with the counts of the whole step,
so micro-batching cannot change the update.

Departs from the paper in:
- the KL term is optional (default 0), as in DAPO and Dr. GRPO;
- dropout is disabled, so the first pass is exactly on-policy (ratio = 1, tested);
- groups whose rewards are all equal are counted, and with `dynamic_sampling` they are
  resampled (DAPO).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import advantages as A
from .. import checkpoint, data, distributed, losses, models, optim, rollout, tasks, tracking
from ..config import GRPOConfig
from ..lora import actions as lora_actions
from ..logprobs import batch_log_probs


def _no_baseline(logps, mb, rl):
    return losses.pg_reinforce(mb["rewards"], logps), {}


def _with_baseline(logps, mb, rl):
    return losses.pg_reinforce(mb["advantages"], logps), {}


def _clip(logps, mb, rl):
    return losses.pg_clip_asymmetric(mb["advantages"], logps, mb["old_logps"], rl.eps_low, rl.eps_high)


def _gspo(logps, mb, rl):
    return losses.gspo_loss(mb["advantages"], logps, mb["old_logps"], mb["response_mask"], rl.eps_low, rl.eps_high)


# The variants, visible in one place: each is (logps, micro-batch, rl config) -> (per-token loss, metadata).
LOSSES = {"no_baseline": _no_baseline, "reinforce_with_baseline": _with_baseline, "grpo_clip": _clip, "gspo": _gspo}

# Advantages from each prompt's group of rewards (B,) -> (B,) (`rl.advantage`).
ADVANTAGES = {
    "group": lambda r, rl: A.group_normalize(r, rl.group_size, rl.normalize_by_std, rl.advantage_eps),
    "rloo": lambda r, rl: A.leave_one_out(r, rl.group_size),
}
AGGREGATE = losses.AGGREGATIONS  # how the per-token loss is reduced (`rl.aggregation`)
KL = losses.KL_ESTIMATORS  # KL(policy || reference) per token (`rl.kl_estimator`)


def sample_groups(sampler, task, cfg: GRPOConfig, step: int):
    """Rollouts + rewards for one step; with dynamic sampling, zero-signal groups are redrawn.
    Data-parallel ranks: this rank's block of the step's prompts, each with its whole group, sampled with
    the seeds one process gives them; redraws are this rank's own."""
    s, rl = cfg.sampling, cfg.rl
    dist = distributed.current()
    examples = dist.shard(task.sample_train(rl.prompts_per_step, step))
    gen = dict(max_new_tokens=s.max_new_tokens, n=rl.group_size, temperature=s.temperature, top_p=s.top_p,
               stop=s.stop or task.stop, batch_size=s.batch_size, return_logprobs=True)
    ro = sampler.generate([e["prompt"] for e in examples], **gen,
                          seed=dist.seeds(rollout.step_seed(cfg.seed, step), rl.prompts_per_step, rl.group_size))
    scores = [task.reward(c, examples[i // rl.group_size]) for i, c in enumerate(ro.completions)]
    rounds = 0
    while rl.dynamic_sampling and rounds < rl.max_resample_rounds:
        dead = A.zero_signal_groups(torch.tensor([x["reward"] for x in scores]), rl.group_size).nonzero().flatten().tolist()
        if not dead:
            break
        rounds += 1
        fresh = task.sample_train(len(dead), dist.local_key(step * 1000 + rounds))
        ro2 = sampler.generate([e["prompt"] for e in fresh], seed=dist.local_key(rollout.step_seed(cfg.seed, step, rounds)),
                               **gen)
        for k, g in enumerate(dead):  # replace group g by fresh group k
            examples[g] = fresh[k]
            sl = slice(g * rl.group_size, (g + 1) * rl.group_size)
            new = slice(k * rl.group_size, (k + 1) * rl.group_size)
            for name in ("completions", "prompt_ids", "completion_ids", "sampling_logps"):
                getattr(ro, name)[sl] = getattr(ro2, name)[new]
            scores[sl] = [task.reward(c, fresh[k]) for c in ro2.completions[new]]
    return examples, ro, scores, rounds


def main(cfg: GRPOConfig, hooks: list | None = None) -> Path:
    rl, t = cfg.rl, cfg.training
    dist = distributed.setup(cfg)  # torchrun ranks (docs/distributed.md); a no-op in one process
    task = tasks.load(cfg.task, cfg.seed)
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    models.disable_dropout(policy)
    policy = dist.wrap(policy)
    sampler = rollout.make_sampler(cfg.sampling, policy, tok, cfg.model, cfg.lora, prec, seed=cfg.seed)
    reference = None
    # LoRA: the reference is the base, adapters disabled; unless relora / rank1 merge into that base
    if rl.kl_coef > 0 and (not cfg.lora.enabled or lora_actions.merges_into_base(cfg)):
        reference = dist.wrap(models.load_frozen_reference(cfg.model, t.precision), train=False)
    n_updates = t.total_steps * rl.epochs_per_rollout_batch
    opt, sched = optim.build(policy, cfg.optim, n_updates)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    run.truncate_after(start)
    run.begin(cfg, policy, tok, opt, t.hooks, hooks, scheduler=sched, scaler=scaler)
    if start == 0:
        metrics, rows = tasks.evaluate_run(policy, tok, task, cfg, sampler)
        run.log(0, **metrics)
        run.samples(0, rows)
    n_seqs = rl.prompts_per_step * rl.group_size  # the whole step's, over all ranks

    def log_probs(model, mb, **kw):  # per-token log-probs (B, T); rl.packing: computed without the padding
        return batch_log_probs(model, mb, rl.packing, temperature=cfg.sampling.temperature, **kw)

    with run.progress(t.total_steps, start, cfg.name, every=t.log_every):
        for step in range(start, t.total_steps):
            t0 = time.perf_counter()
            examples, ro, scores, resampled = sample_groups(sampler, task, cfg, step)
            t1 = time.perf_counter()
            rewards = torch.tensor([x["reward"] for x in scores])  # (B,)
            adv = ADVANTAGES[rl.advantage](rewards, rl)  # (B,)
            batch = ro.tensors(tok.pad_token_id)
            batch.update(rewards=rewards, advantages=adv)
            # the whole step's rewards, advantages and lengths (every rank's groups) for the logs
            rewards_all, adv_all, resp_len = dist.cat(torch.stack(
                [rewards, adv, batch["response_mask"].sum(-1).float()], 1)).unbind(1)
            t2 = time.perf_counter()
            n_local = len(rewards)  # this rank's sequences (all of them with one process)
            lengths = batch["attention_mask"].sum(-1).tolist()
            mbs = [{k: data.take_rows(v, idx, lengths).to(device) for k, v in batch.items()}
                   for idx in data.sequence_micro_batches(list(range(n_local)), lengths, t.micro_batch,
                                                          t.max_tokens_per_micro_batch, rl.packing)]
            # Old log-probs need their own pass only when later epochs go off-policy; on-policy, the
            # sampling policy is the policy of the training forward itself (ratio == 1 by construction).
            off_policy = rl.epochs_per_rollout_batch > 1
            with torch.no_grad():
                for mb in mbs:
                    with prec.autocast_ctx(device):
                        if off_policy:  # same micro-batches as training, so epoch 0 is exactly on-policy
                            mb["old_logps"] = log_probs(policy, mb)["log_probs"]
                        if rl.kl_coef > 0:  # the frozen copy, or the LoRA policy with adapters off
                            mb["ref_logps"] = models.reference_logps(policy, reference, mb, cfg.sampling.temperature,
                                                                     packed=rl.packing)
            mask_all = batch["response_mask"]
            n_tokens = dist.sum(int(mask_all.sum()))  # response tokens of the whole step
            stats: dict[str, float] = {}
            for epoch in range(rl.epochs_per_rollout_batch):
                agg = {"loss/policy": 0.0, "clip/frac": 0.0, "clip/low_frac": 0.0, "clip/high_frac": 0.0,
                       "ratio/mean": 0.0, "kl/ref": 0.0, "entropy/mean": 0.0}
                for mb in mbs:
                    m = mb["response_mask"]
                    with prec.autocast_ctx(device):
                        out = log_probs(policy, mb, return_token_entropy=True, entropy_grad=rl.entropy_coef > 0)
                    logps = out["log_probs"]
                    if "old_logps" not in mb:
                        mb["old_logps"] = logps.detach()
                    per_token, meta = LOSSES[rl.loss_type](logps, mb, rl)
                    if rl.tis_cap > 0:  # the sampler is not exactly the trainer: reweight its tokens
                        w = losses.truncated_is_weights(mb["old_logps"], mb["sampling_logps"], rl.tis_cap)
                        per_token = per_token * w
                        for name, v in (("tis/weight_mean", w), ("tis/capped_frac", (w >= rl.tis_cap).float())):
                            agg[name] = agg.get(name, 0.0) + losses.masked_normalize(v, m, normalize_constant=n_tokens).item()
                    if rl.kl_coef > 0:
                        kl = KL[rl.kl_estimator](mb["ref_logps"] - logps)
                        per_token = per_token + rl.kl_coef * kl
                        agg["kl/ref"] += losses.masked_normalize(kl.detach(), m, normalize_constant=n_tokens).item()
                    if rl.entropy_coef > 0:
                        per_token = per_token - rl.entropy_coef * out["token_entropy"]
                    loss = AGGREGATE[rl.aggregation](per_token, m, n_tokens, n_seqs, constant=cfg.sampling.max_new_tokens)
                    (scaler.scale(loss) if scaler else loss).backward()
                    agg["loss/policy"] += loss.item()
                    agg["entropy/mean"] += losses.masked_normalize(out["token_entropy"].detach(), m, normalize_constant=n_tokens).item()
                    for key, name in (("clipped", "clip/frac"), ("clipped_low", "clip/low_frac"), ("clipped_high", "clip/high_frac"),
                                      ("ratio", "ratio/mean")):
                        if key in meta:
                            agg[name] += losses.masked_normalize(meta[key].float(), m, normalize_constant=n_tokens).item()
                agg = dist.sum(agg)  # each term is already divided by the whole step's counts
                grad_norm = optim.step(policy, opt, sched, cfg.optim.max_grad_norm, scaler, guard=run.watchdog.guard(
                    step + 1, agg["loss/policy"], {**agg, "response/len_mean": resp_len.mean().item()}))
                if epoch == 0:
                    stats.update(agg)  # epoch 0 is on-policy: ratio/mean is exactly 1 there
                else:
                    stats.update({"loss/policy_last_epoch": agg["loss/policy"], "clip/frac_last_epoch": agg["clip/frac"]})
            sampler.sync()  # vLLM: push the new weights before the next rollout
            t3 = time.perf_counter()
            # training-side log-probs vs the sampler's: nonzero with top-p, half precision, or another engine
            stats.update(rollout.mismatch_stats(*(dist.cat(torch.cat([mb[k].flatten() for mb in mbs]))
                                                  for k in ("old_logps", "sampling_logps", "response_mask"))))
            rewards, adv = rewards_all, adv_all
            g = rewards.view(-1, rl.group_size)
            parts = dist.sum({k: sum(x[k] for x in scores) for k in ("format_reward", "answer_reward")})
            done = step + 1
            run.end_step(done, t.total_steps, {**stats, **{
                "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item(),
                "reward/format": parts["format_reward"] / len(rewards), "reward/answer": parts["answer_reward"] / len(rewards),
                "adv/mean": adv.mean().item(), "adv/std": adv.std().item(), "adv/max": adv.max().item(), "adv/min": adv.min().item(),
                "groups/no_signal_frac": (g.max(1).values == g.min(1).values).float().mean().item(),
                "groups/resample_rounds": resampled, "response/len_mean": resp_len.mean().item(),
                "grad/norm": grad_norm, "lr": sched.get_last_lr()[0],
                "time/rollout": t1 - t0, "time/score": t2 - t1, "time/train": t3 - t2,
                "tokens/per_s": dist.sum(batch["attention_mask"].sum().item()) / (t3 - t0),
                "mem/peak_gb": tracking.peak_memory_gb(device)}}, shown=f"r={rewards.mean().item():.3f}",
                evaluate=lambda: tasks.evaluate_run(policy, tok, task, cfg, sampler), eval_every=t.eval_every,
                save=lambda s: checkpoint.save(cfg.run_dir, s, policy, tok, opt, sched, t.keep_last, scaler=scaler),
                save_every=t.save_every)
    return cfg.run_dir
