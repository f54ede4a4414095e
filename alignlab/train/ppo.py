"""PPO for language models (Ziegler et al. arXiv:1909.08593; Ouyang et al. arXiv:2203.02155).

Each rollout step:
1. Sample one completion for each of `ppo.rollout_size` prompts and score it. The score comes
   from the task's verifiable reward, a reward model (`alignlab rm`), the heuristic reward, or the
   hybrid `alpha * heuristic + beta * model` (`reward.source`).
2. Fold a per-token KL penalty to the reference into the rewards:
   r_t = -kl_coef * KL_t, with the score added at the last response token.
   The reference is the LoRA base with adapters disabled, or a frozen copy for full fine-tuning.
3. Compute the advantages with GAE (gamma, lambda) from the critic's values (`ppo.critic`, below),
   and whiten them.
4. Run `num_ppo_epochs` passes over shuffled minibatches, one optimizer step each:
   clipped policy loss + vf_coef * clipped value loss - entropy_coef * entropy, each a token mean
   over the minibatch. A minibatch runs in micro-batches of `training.micro_batch` sequences (default:
   the whole minibatch), also capped at `training.max_tokens_per_micro_batch` tokens when set (its
   sequences sorted by length); its token count is fixed first, so only memory depends on the
   micro-batch. `ppo.packing` runs every forward (old log-probs and values, reference, training)
   padding-free, the policy's and the critic's (logprobs.Packing), with the same results.
   A rollout's remaining epochs are skipped when the approximate KL exceeds `early_stop_kl`.
5. Update kl_coef: fixed, or the adaptive controller towards `kl_target` (nats per sequence).

The critic (`ppo.critic`: a value head on the policy, a separate critic LM, or a second LoRA adapter)
is one entry of `critics.CRITICS`; the loop sees only its interface (values, backward, save folders).
The value head and the critic's trunk or adapter train at `ppo.critic_lr` (default optim.lr); one
global grad-norm clip covers policy and critic.

Defaults are the project plan's: clip 0.2, entropy 0.01, KL 0.1, 4 PPO epochs, rollout size 64.
Departs from the papers in:
- the default critic shares the policy's trunk (InstructGPT trains a separate value model, initialised
  from the reward model; `separate` starts from `ppo.critic_path`, a causal LM, with a zero head);
- dropout is off, so the first minibatch of the first epoch is exactly on-policy.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import advantages as A
from .. import checkpoint, critics, data, distributed, losses, models, optim, rollout, tasks, tracking
from ..config import PPOConfig
from ..lora import actions as lora_actions
from ..rewards.scorer import build_scorer


def main(cfg: PPOConfig, hooks: list | None = None) -> Path:
    p, t, s = cfg.ppo, cfg.training, cfg.sampling
    dist = distributed.setup(cfg)  # torchrun ranks (docs/distributed.md); a no-op in one process
    task = tasks.load(cfg.task, cfg.seed)
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    critics.check_resume(resume_from, p.critic)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    policy = dist.wrap(policy)
    critic = critics.build(cfg, policy, tok, t.precision, resume_from, device)
    models.disable_dropout(policy)
    sampler = rollout.make_sampler(s, policy, tok, cfg.model, cfg.lora, prec, seed=cfg.seed)
    score = build_scorer(cfg.reward, task, device, tok)
    reference = None
    if p.kl_coef > 0 and (not cfg.lora.enabled or lora_actions.merges_into_base(cfg)):  # adapters-off base, unless merged into
        reference = models.load_frozen_reference(cfg.model, t.precision)
    per_rollout = p.num_ppo_epochs * (p.rollout_size // p.minibatch_seqs)
    trainable, opt, sched = critics.build_optimizer(policy, critic, cfg, t.total_steps * per_rollout)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    kl_coef = checkpoint.load_state(resume_from)["extra"]["kl_coef"] if resume_from is not None else p.kl_coef
    run.truncate_after(start)
    run.begin(cfg, policy, tok, opt, t.hooks, hooks, scheduler=sched, scaler=scaler)
    if start == 0:
        metrics, rows = tasks.evaluate_run(policy, tok, task, cfg, sampler)
        run.log(0, **metrics)
        run.samples(0, rows)

    with run.progress(t.total_steps, start, cfg.name, every=t.log_every):
        for step in range(start, t.total_steps):
            t0 = time.perf_counter()
            examples = dist.shard(task.sample_train(p.rollout_size, step))  # this rank's prompts
            ro = sampler.generate([e["prompt"] for e in examples], max_new_tokens=s.max_new_tokens, n=1,
                                  temperature=s.temperature, top_p=s.top_p, stop=s.stop or task.stop,
                                  return_logprobs=True, seed=dist.seeds(rollout.step_seed(cfg.seed, step), p.rollout_size, 1))
            t1 = time.perf_counter()
            scores, parts = score(examples, ro.completions)  # (B,)
            t2 = time.perf_counter()
            batch = {k: v.to(device) for k, v in ro.tensors(tok.pad_token_id).items()}
            mask = batch["response_mask"]
            with torch.no_grad():  # old log-probs and values, reference log-probs
                out, old_values = critics.forward(policy, critic, batch, s.temperature, prec, device, entropy=False,
                                                  packed=p.packing)
                old_logps = out["log_probs"]
                ref_logps = (critics.reference_logps(policy, reference, batch, s.temperature, critic, p.packing)
                             if p.kl_coef > 0 else old_logps)
            kl_tok = losses.kl_estimate(old_logps, ref_logps, p.kl_estimator) * mask  # (B, T)
            rewards_tok = -kl_coef * kl_tok
            last = (mask.long().cumsum(-1) * mask).argmax(-1)  # index of the last response token
            rewards_tok[torch.arange(len(last), device=device), last] += scores.to(device)
            adv, returns = A.gae(rewards_tok, old_values, mask, p.gamma, p.lam)
            if p.whiten_advantages:  # over every rank's response tokens
                adv = A.whiten(adv, mask, over=dist.cat(adv[mask.bool()]))
            agg = {"loss/policy": 0.0, "value/loss": 0.0, "entropy/mean": 0.0, "ppo/approx_kl": 0.0, "clip/frac": 0.0,
                   "value/clip_frac": 0.0}
            n_mb, epochs_run = 0, 0
            lengths = batch["attention_mask"].sum(-1).tolist()  # each sequence's tokens: what a token budget counts
            n_local, mb_local = len(examples), p.minibatch_seqs // dist.world  # each minibatch: an equal share per rank
            for epoch in range(p.num_ppo_epochs):
                g = torch.Generator().manual_seed(dist.local_key(cfg.seed * 1_000_003 + step * 101 + epoch))
                perm = torch.randperm(n_local, generator=g).tolist()
                epoch_kl = 0.0
                for i in range(0, n_local, mb_local):  # one optimizer step per minibatch; an equal share per rank
                    rows = perm[i : i + mb_local]
                    # the minibatch's tokens on every rank, fixed before its micro-batches
                    n_tok = max(dist.sum(int(mask[torch.tensor(rows, device=device)].sum())), 1)
                    step_loss, step_ent = 0.0, 0.0
                    for part in data.sequence_micro_batches(rows, lengths, t.micro_batch,
                                                            t.max_tokens_per_micro_batch, p.packing):
                        # every term is a sum / n_tok: they add up
                        cut = lambda x: data.take_rows(x, part, lengths)  # noqa: E731
                        mb = {k: cut(v) for k, v in batch.items()}
                        m = cut(mask)
                        out, values = critics.forward(policy, critic, mb, s.temperature, prec, device, entropy=True,
                                                      entropy_grad=p.entropy_coef > 0, packed=p.packing)
                        pg, meta = losses.pg_clip_asymmetric(cut(adv), out["log_probs"], cut(old_logps), p.clip, p.clip)
                        pg_loss = losses.masked_normalize(pg, m, normalize_constant=n_tok)
                        vf_loss, vstats = losses.value_loss_clipped(values, cut(old_values), cut(returns), m,
                                                                    p.value_clip, n_tok)
                        ent = losses.masked_normalize(out["token_entropy"], m, normalize_constant=n_tok)
                        loss = pg_loss + p.vf_coef * vf_loss - p.entropy_coef * ent
                        critic.backward(pg_loss - p.entropy_coef * ent, p.vf_coef * vf_loss, scaler)
                        step_loss, step_ent = step_loss + loss.item(), step_ent + ent.item()
                        approx_kl = losses.masked_normalize(losses.kl_estimate(cut(old_logps), out["log_probs"].detach(),
                                                                               "k3"), m, normalize_constant=n_tok).item()
                        epoch_kl += approx_kl
                        for k, v in (("loss/policy", pg_loss.item()), ("value/loss", vf_loss.item()),
                                     ("entropy/mean", ent.item()), ("ppo/approx_kl", approx_kl),
                                     ("value/clip_frac", vstats["value/clip_frac"].item()),
                                     ("clip/frac", losses.masked_normalize(meta["clipped"].float(), m,
                                                                           normalize_constant=n_tok).item())):
                            agg[k] += v
                    loss_all, ent_all = dist.sum([step_loss, step_ent])  # the minibatch's, over every rank
                    optim.step(trainable, opt, sched, cfg.optim.max_grad_norm, scaler,
                               guard=run.watchdog.guard(step + 1, loss_all, {"entropy/mean": ent_all}))
                    n_mb += 1
                epochs_run += 1
                if p.early_stop_kl and dist.sum(epoch_kl) / (p.rollout_size // p.minibatch_seqs) > p.early_stop_kl:
                    break
            sampler.sync()  # vLLM: push the new weights before the next rollout
            agg = dist.sum(agg)  # each minibatch term is divided by the minibatch's tokens on every rank
            kl_seq = dist.sum(kl_tok.sum().item()) / p.rollout_size  # nats per sequence, under the rollout policy
            if p.adaptive_kl:  # Ziegler et al.: proportional controller, error clipped to +-20%
                err = max(-0.2, min(0.2, kl_seq / p.kl_target - 1))
                kl_coef *= 1 + err * p.rollout_size / p.kl_horizon
            t3 = time.perf_counter()
            m_all = mask.bool()
            # the whole rollout's numbers for the log: every rank's sequences and response tokens
            returns_all, values_all, adv_all = (dist.cat(x[m_all].float()) for x in (returns, old_values, adv))
            scores, lengths = dist.cat(scores.float().cpu()), dist.cat(mask.sum(-1).float())
            parts = {k: v / dist.world for k, v in dist.sum(parts).items()}  # equal shares: the mean of the means
            var_r = returns_all.var()
            done = step + 1
            run.end_step(done, t.total_steps, {**{k: v / max(n_mb, 1) for k, v in agg.items()}, **parts, **{
                "reward/score": scores.mean().item(), "reward/score_std": scores.std().item() if len(scores) > 1 else 0.0,
                "returns/mean": returns_all.mean().item(), "adv/mean": adv_all.mean().item(),
                "value/explained_variance": (1 - (returns_all - values_all).var() / var_r).item()
                if var_r > 0 else 0.0,
                **rollout.mismatch_stats(*(dist.cat(x.flatten()) for x in (old_logps, batch["sampling_logps"], mask))),
                "kl/ref": kl_seq, "kl/coef": kl_coef, "ppo/epochs_run": epochs_run,
                "response/len_mean": lengths.mean().item(), "lr": sched.get_last_lr()[0],
                "time/rollout": t1 - t0, "time/score": t2 - t1, "time/train": t3 - t2,
                "tokens/per_s": dist.sum(batch["attention_mask"].sum().item()) * (1 + epochs_run) / (t3 - t0),
                "mem/peak_gb": tracking.peak_memory_gb(device)}}, shown=f"r={scores.mean().item():.3f}",
                evaluate=lambda: tasks.evaluate_run(policy, tok, task, cfg, sampler), eval_every=t.eval_every,
                # lora_adapters: peft writes the value adapter to value/ beside the policy adapter at the root
                save=lambda s: checkpoint.save(cfg.run_dir, s, policy, tok, opt, sched, t.keep_last, scaler=scaler,
                                               extra={"value_head": critic.head.state_dict(), "kl_coef": kl_coef},
                                               submodels=critic.submodels()),
                save_every=t.save_every)
    return cfg.run_dir
