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
   over the minibatch. A rollout's remaining epochs are skipped when the approximate KL exceeds
   `early_stop_kl`.
5. Update kl_coef: fixed, or the adaptive controller towards `kl_target` (nats per sequence).

The critic (`ppo.critic`; `VALUES` below holds the three value functions):
- `shared`: a scalar value head on the policy's own final hidden states; one forward serves both.
- `separate`: a second causal LM (`ppo.critic_path`, default model.path) + value head, on its own
  final hidden states (decoder only, no LM head); with lora.enabled it gets its own base copy and
  LoRA. Saved in `checkpoints/step_N/critic/`.
- `lora_adapters`: one frozen base, two peft adapters: "default" (the policy) and "value" (+ the
  head). The value adapter is active only inside `active_adapter`, so each loss reaches only its own
  adapter through the forward graph. Saved by peft in `checkpoints/step_N/value/`; the folder's root
  stays the policy adapter that `PeftModel.from_pretrained(base, step_N)` loads.
The value head and the critic's trunk or adapter form the optimizer's critic groups (`ppo.critic_lr`,
default optim.lr; one schedule scales both). One global grad-norm clip covers policy and critic.

Defaults are the project plan's: clip 0.2, entropy 0.01, KL 0.1, 4 PPO epochs, rollout size 64.
Departs from the papers in:
- the default critic shares the policy's trunk (InstructGPT trains a separate value model, initialised
  from the reward model; `separate` starts from `ppo.critic_path`, a causal LM, with a zero head);
- dropout is off, so the first minibatch of the first epoch is exactly on-policy.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path

import torch

from .. import advantages as A
from .. import checkpoint, hooks as H, losses, models, optim, rollout, tasks, tracking
from ..config import ConfigError, PPOConfig
from ..logprobs import get_response_log_probs
from .sft import TrainingDiverged


def build_scorer(cfg: PPOConfig, task, device, tok):
    """-> score(examples, completions) -> (scores (B,), {component: mean}) for `reward.source`."""
    r = cfg.reward
    rm, encoder = None, None
    if r.rm_path:
        import json as _json

        from ..rewards import encoder_rm

        root, adapters = models.adapter_chain(r.rm_path)  # a LoRA reward model: its adapter(s) folded into the base
        kind = None if adapters else _json.loads((Path(r.rm_path) / "config.json").read_text()).get("model_type")
        if kind == encoder_rm.MODEL_TYPE:  # the small encoder RM, scored with the policy's tokenizer
            encoder = encoder_rm.EncoderRewardModel.load(r.rm_path, device)
        else:
            from transformers import AutoModelForSequenceClassification

            rm_tok = models.start_tokenizer(r.rm_path)
            rm = AutoModelForSequenceClassification.from_pretrained(models.resolve_model_path(root), num_labels=1)
            rm = models.fold_adapters(rm, adapters).to(device).eval()
            rm.config.pad_token_id = rm_tok.pad_token_id

    @torch.no_grad()
    def rm_scores(examples: list[dict], completions: list[str]) -> list[float]:
        if encoder is not None:
            return encoder.score(tok, [e["prompt"] for e in examples], completions).tolist()
        texts = [e["prompt"] + c for e, c in zip(examples, completions)]
        rm_tok.padding_side = "right"
        enc = rm_tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=1024).to(device)
        return rm(**enc).logits.squeeze(-1).float().tolist()

    hybrid = None
    if r.source in ("heuristic", "hybrid"):
        from ..rewards.hybrid import HybridReward

        alpha, beta = (r.alpha, r.beta) if r.source == "hybrid" else (1.0, 0.0)
        hybrid = HybridReward(alpha=alpha, beta=beta, normalize=r.normalize)

    def score(examples: list[dict], completions: list[str]):
        if r.source == "task":
            parts = [task.reward(c, e) for c, e in zip(completions, examples)]
            vals = [p["reward"] for p in parts]
            return torch.tensor(vals), {"reward/format": sum(p["format_reward"] for p in parts) / len(parts)}
        if r.source == "rm":
            vals = rm_scores(examples, completions)
            return torch.tensor(vals), {}
        model_scores = rm_scores(examples, completions) if r.rm_path else None
        out = hybrid(completions, model_scores)
        comps = {f"reward/{k}": sum(o[k] for o in out) / len(out) for k in out[0] if isinstance(out[0][k], (int, float))}
        return torch.tensor([o["reward"] for o in out]), comps

    return score


VALUE_ADAPTER = "value"  # lora_adapters: the critic's adapter; the policy's is peft's "default"
CRITIC_DIR = "critic"  # separate: the critic's model or adapter folder inside checkpoints/step_N/


def trunk_hidden(model, mb) -> torch.Tensor:
    """(B, T, H) final hidden states of a causal LM's decoder; the LM head is skipped (a value needs
    no logits). Positions count real tokens only, as in `logprobs`, so padding cannot move a value."""
    base = model.get_base_model() if models.is_peft(model) else model
    position_ids = (mb["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    return base.get_decoder()(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], position_ids=position_ids,
                              use_cache=False).last_hidden_state


@contextlib.contextmanager
def active_adapter(model, name: str):
    """Run with adapter `name` active, then return to the policy's ("default"). peft's set_adapter (and
    leaving disable_adapter) freezes every adapter but the active one; here both stay trainable, so which
    adapter a loss updates is decided by the forward graph alone: the inactive one is not in it."""
    model.set_adapter(name)
    train_both_adapters(model)
    try:
        yield model
    finally:
        model.set_adapter("default")
        train_both_adapters(model)


def train_both_adapters(model) -> None:
    model.set_requires_grad(["default", VALUE_ADAPTER], True)


def backward_by_adapter(model, policy_loss, value_loss, scaler=None) -> None:
    """lora_adapters: one backward pass per loss, each with its own adapter active. Activation checkpointing
    recomputes a layer's forward during backward with whichever adapter is active then; the two graphs share
    no trainable tensor, so the two passes add up to the gradient of the sum."""
    scale = scaler.scale if scaler is not None else (lambda x: x)
    scale(policy_loss).backward()
    with active_adapter(model, VALUE_ADAPTER):
        scale(value_loss).backward()


def values_shared(critic, value_head, mb, hidden):  # the policy's own forward: no second trunk pass
    return value_head(hidden).squeeze(-1).float()


def values_separate(critic, value_head, mb, hidden):  # the critic LM's own trunk
    return value_head(trunk_hidden(critic, mb)).squeeze(-1).float()


def values_lora_adapters(critic, value_head, mb, hidden):  # the shared base, value adapter on
    with active_adapter(critic, VALUE_ADAPTER):
        return value_head(trunk_hidden(critic, mb)).squeeze(-1).float()


VALUES = {"shared": values_shared, "separate": values_separate, "lora_adapters": values_lora_adapters}


def forward(policy, critic, value_head, mb, temperature, prec, device, entropy: bool, entropy_grad: bool = True,
            mode: str = "shared"):
    """-> (log-prob outputs, values (B, T): the value of the state before label t)."""
    with prec.autocast_ctx(device):
        out = get_response_log_probs(policy, mb["input_ids"], mb["labels"], attention_mask=mb["attention_mask"],
                                     temperature=temperature, return_token_entropy=entropy,
                                     return_hidden=mode == "shared", entropy_grad=entropy_grad)
        values = VALUES[mode](critic, value_head, mb, out.get("hidden"))
    return out, values


def check_resume_critic(resume_from: Path | None, mode: str) -> None:
    """A checkpoint written with another `ppo.critic` would fail later, less clearly (optimizer groups)."""
    if resume_from is None:
        return
    found = ("separate" if (resume_from / CRITIC_DIR).is_dir() else
             "lora_adapters" if (resume_from / VALUE_ADAPTER / "adapter_config.json").is_file() else "shared")
    if found != mode:
        raise ConfigError(f"{resume_from} was written with ppo.critic={found}, this run has ppo.critic={mode}; "
                          f"resume with ppo.critic={found} or start a new run (name=<other>)")


def reference_logps(policy, reference, batch, temperature: float, mode: str) -> torch.Tensor:
    """models.reference_logps, then both adapters trainable again (lora_adapters)."""
    logps = models.reference_logps(policy, reference, batch, temperature)
    if reference is None and mode == "lora_adapters":  # leaving disable_adapter froze every adapter but the active one
        train_both_adapters(policy)
    return logps


def load_critic(cfg: PPOConfig, policy, tok, precision: str, resume_from: Path | None):
    """-> the model the values come from: the policy itself (shared; lora_adapters, after adding the
    value adapter) or a second causal LM (separate). On resume, the critic is read back from the checkpoint."""
    mode = cfg.ppo.critic
    if mode == "shared":
        return policy
    if mode == "separate":
        model_cfg = cfg.model.model_copy(update={"path": cfg.ppo.critic_path or cfg.model.path})
        critic, critic_tok, *_ = models.load_policy(
            model_cfg, cfg.lora, precision, resume_from=None if resume_from is None else resume_from / CRITIC_DIR)
        if critic_tok.get_vocab() != tok.get_vocab():
            raise ConfigError(f"ppo.critic_path={model_cfg.path!r} has a different tokenizer from model.path="
                              f"{cfg.model.path!r}; the critic reads the policy's token ids, so it needs the same one")
        models.disable_dropout(critic)
        return critic
    if resume_from is None:  # the policy's own LoRA settings; B = 0, so the value adapter starts as the base
        policy.add_adapter(VALUE_ADAPTER, copy.deepcopy(policy.peft_config["default"]))
    else:
        policy.load_adapter(str(resume_from / VALUE_ADAPTER), adapter_name=VALUE_ADAPTER, is_trainable=True)
    for p in policy.parameters():  # adapters train in fp32, as in models.apply_lora
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    policy.set_adapter("default")
    train_both_adapters(policy)
    models.disable_dropout(policy)
    return policy


def critic_parameters(mode: str, critic, value_head) -> list[torch.nn.Parameter]:
    """The parameters the value loss trains: the head, plus the critic's trunk (or adapter)."""
    head = list(value_head.parameters())
    if mode == "shared":
        return head
    if mode == "separate":
        return [p for p in critic.parameters() if p.requires_grad] + head
    return [p for n, p in critic.named_parameters() if is_value_adapter(n)] + head


def is_value_adapter(name: str) -> bool:
    """...lora_A.value.weight and the like: an adapter parameter of the value adapter."""
    parts = name.split(".")
    return any(a.startswith("lora_") and b == VALUE_ADAPTER for a, b in zip(parts, parts[1:]))


def build_optimizer(trainable, critic_params, cfg: PPOConfig, total_updates: int):
    """One AdamW and one schedule over policy and critic; the critic's groups at ppo.critic_lr.
    A shared head without its own lr keeps the original two groups, so older checkpoints resume."""
    o = cfg.optim
    if cfg.ppo.critic == "shared" and cfg.ppo.critic_lr is None:
        return optim.build(trainable, o, total_updates)
    critic_ids = {id(p) for p in critic_params}
    policy_params = [p for p in trainable.parameters() if p.requires_grad and id(p) not in critic_ids]
    groups = optim.param_groups(torch.nn.ParameterList(policy_params), o.weight_decay) + [
        {**g, "lr": cfg.ppo.critic_lr or o.lr}
        for g in optim.param_groups(torch.nn.ParameterList(critic_params), o.weight_decay)]
    return optim.build(None, o, total_updates, groups=groups)


def main(cfg: PPOConfig, hooks: list | None = None) -> Path:
    p, t, s = cfg.ppo, cfg.training, cfg.sampling
    task = tasks.load(cfg.task, cfg.seed)
    resume_from = checkpoint.find_resume(cfg.run_dir, t.resume)
    check_resume_critic(resume_from, p.critic)
    run = tracking.start(cfg, cfg.run_dir, fresh=resume_from is None)
    policy, tok, device, prec = models.load_policy(cfg.model, cfg.lora, t.precision, resume_from=resume_from)
    critic = load_critic(cfg, policy, tok, t.precision, resume_from)  # `policy` itself unless ppo.critic=separate
    models.disable_dropout(policy)
    sampler = rollout.make_sampler(s, policy, tok, cfg.model, cfg.lora, prec, seed=cfg.seed)
    score = build_scorer(cfg, task, device, tok)
    hidden_size = critic.get_output_embeddings().weight.shape[1]
    value_head = torch.nn.Linear(hidden_size, 1).to(device)
    torch.nn.init.zeros_(value_head.weight)  # V = 0 at start: early advantages are the returns themselves
    torch.nn.init.zeros_(value_head.bias)
    reference = None
    if p.kl_coef > 0 and not cfg.lora.enabled:
        reference = models.load_frozen_reference(cfg.model, t.precision)
    trainable = torch.nn.ModuleDict({"policy": policy, "value": value_head})
    if critic is not policy:
        trainable["critic"] = critic
    per_rollout = p.num_ppo_epochs * (p.rollout_size // p.minibatch_seqs)
    opt, sched = build_optimizer(trainable, critic_parameters(p.critic, critic, value_head), cfg,
                                 t.total_steps * per_rollout)
    scaler = torch.amp.GradScaler(device.type) if prec.scaler else None
    start = checkpoint.restore(resume_from, opt, sched, scaler)
    kl_coef = p.kl_coef
    if resume_from is not None:
        extra = checkpoint.load_state(resume_from)["extra"]
        value_head.load_state_dict(extra["value_head"])
        kl_coef = extra["kl_coef"]
    run.truncate_after(start)
    hooks = H.load(t.hooks, hooks)
    ctx = H.Context(cfg, run, policy, tok, opt)
    H.call(hooks, "on_start", ctx)
    if start == 0:
        metrics, rows = tasks.evaluate_run(policy, tok, task, cfg, sampler)
        run.log(0, **metrics)
        run.samples(0, rows)

    with tracking.progress(t.total_steps, start, cfg.name, every=t.log_every) as bar:
        for step in range(start, t.total_steps):
            t0 = time.perf_counter()
            examples = task.sample_train(p.rollout_size, step)
            ro = sampler.generate([e["prompt"] for e in examples], max_new_tokens=s.max_new_tokens, n=1,
                                  temperature=s.temperature, top_p=s.top_p, stop=s.stop or task.stop,
                                  return_logprobs=True, seed=rollout.step_seed(cfg.seed, step))
            t1 = time.perf_counter()
            scores, parts = score(examples, ro.completions)  # (B,)
            t2 = time.perf_counter()
            batch = {k: v.to(device) for k, v in ro.tensors(tok.pad_token_id).items()}
            mask = batch["response_mask"]
            with torch.no_grad():  # old log-probs and values, reference log-probs
                out, old_values = forward(policy, critic, value_head, batch, s.temperature, prec, device, entropy=False,
                                          mode=p.critic)
                old_logps = out["log_probs"]
                ref_logps = reference_logps(policy, reference, batch, s.temperature, p.critic) if p.kl_coef > 0 else old_logps
            kl_tok = losses.kl_estimate(old_logps, ref_logps, p.kl_estimator) * mask  # (B, T)
            rewards_tok = -kl_coef * kl_tok
            last = (mask.long().cumsum(-1) * mask).argmax(-1)  # index of the last response token
            rewards_tok[torch.arange(len(last), device=device), last] += scores.to(device)
            adv, returns = A.gae(rewards_tok, old_values, mask, p.gamma, p.lam)
            if p.whiten_advantages:
                adv = A.whiten(adv, mask)
            agg = {"loss/policy": 0.0, "value/loss": 0.0, "entropy/mean": 0.0, "ppo/approx_kl": 0.0, "clip/frac": 0.0,
                   "value/clip_frac": 0.0}
            n_mb, epochs_run = 0, 0
            for epoch in range(p.num_ppo_epochs):
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + epoch)
                perm = torch.randperm(p.rollout_size, generator=g).tolist()
                epoch_kl = 0.0
                for i in range(0, p.rollout_size, p.minibatch_seqs):
                    idx = torch.tensor(perm[i : i + p.minibatch_seqs], device=device)
                    mb = {k: v[idx] for k, v in batch.items()}
                    m = mask[idx]
                    n_tok = max(int(m.sum()), 1)
                    out, values = forward(policy, critic, value_head, mb, s.temperature, prec, device, entropy=True,
                                          entropy_grad=p.entropy_coef > 0, mode=p.critic)
                    pg, meta = losses.pg_clip_asymmetric(adv[idx], out["log_probs"], old_logps[idx], p.clip, p.clip)
                    pg_loss = losses.masked_normalize(pg, m, normalize_constant=n_tok)
                    vf_loss, vstats = losses.value_loss_clipped(values, old_values[idx], returns[idx], m, p.value_clip, n_tok)
                    ent = losses.masked_normalize(out["token_entropy"], m, normalize_constant=n_tok)
                    loss = pg_loss + p.vf_coef * vf_loss - p.entropy_coef * ent
                    if not math.isfinite(loss.item()):
                        raise TrainingDiverged(f"loss is {loss.item()} at step {step + 1}; the update was not applied")
                    if p.critic == "lora_adapters":
                        backward_by_adapter(policy, pg_loss - p.entropy_coef * ent, p.vf_coef * vf_loss, scaler)
                    else:
                        (scaler.scale(loss) if scaler else loss).backward()
                    optim.step(trainable, opt, sched, cfg.optim.max_grad_norm, scaler)
                    approx_kl = losses.masked_normalize(losses.kl_estimate(old_logps[idx], out["log_probs"].detach(), "k3"),
                                                        m, normalize_constant=n_tok).item()
                    epoch_kl += approx_kl
                    n_mb += 1
                    for k, v in (("loss/policy", pg_loss.item()), ("value/loss", vf_loss.item()), ("entropy/mean", ent.item()),
                                 ("ppo/approx_kl", approx_kl), ("value/clip_frac", vstats["value/clip_frac"].item()),
                                 ("clip/frac", losses.masked_normalize(meta["clipped"].float(), m, normalize_constant=n_tok).item())):
                        agg[k] += v
                epochs_run += 1
                if p.early_stop_kl and epoch_kl / (p.rollout_size // p.minibatch_seqs) > p.early_stop_kl:
                    break
            sampler.sync()  # vLLM: push the new weights before the next rollout
            kl_seq = kl_tok.sum(-1).mean().item()  # nats per sequence, under the rollout policy
            if p.adaptive_kl:  # Ziegler et al.: proportional controller, error clipped to +-20%
                err = max(-0.2, min(0.2, kl_seq / p.kl_target - 1))
                kl_coef *= 1 + err * p.rollout_size / p.kl_horizon
            t3 = time.perf_counter()
            m_all = mask.bool()
            var_r = returns[m_all].var()
            done = step + 1
            row = run.log(done, **{k: v / max(n_mb, 1) for k, v in agg.items()}, **parts, **{
                "reward/score": scores.mean().item(), "reward/score_std": scores.std().item() if len(scores) > 1 else 0.0,
                "returns/mean": returns[m_all].mean().item(), "adv/mean": adv[m_all].mean().item(),
                "value/explained_variance": (1 - (returns[m_all] - old_values[m_all]).var() / var_r).item()
                if var_r > 0 else 0.0,
                **rollout.mismatch_stats(old_logps, batch["sampling_logps"], mask),
                "kl/ref": kl_seq, "kl/coef": kl_coef, "ppo/epochs_run": epochs_run,
                "response/len_mean": mask.sum(-1).float().mean().item(), "lr": sched.get_last_lr()[0],
                "time/rollout": t1 - t0, "time/score": t2 - t1, "time/train": t3 - t2,
                "tokens/per_s": batch["attention_mask"].sum().item() * (1 + epochs_run) / (t3 - t0),
                "mem/peak_gb": tracking.peak_memory_gb(device)})
            bar.update(bar.task_ids[0], advance=1, loss=f"r={row['reward/score']:.3f}", tps=f"{row['tokens/per_s']:,.0f}")
            H.call(hooks, "on_step_end", ctx, done, row)
            if run.due(done, t.eval_every, t.total_steps):
                metrics, rows = tasks.evaluate_run(policy, tok, task, cfg, sampler)
                run.log(done, **metrics)
                run.samples(done, rows)
                H.call(hooks, "on_eval", ctx, done, metrics)
                bar.console.print(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if run.due(done, t.save_every, t.total_steps):
                # lora_adapters: peft writes the value adapter to value/ beside the policy adapter at the root
                path = checkpoint.save(cfg.run_dir, done, policy, tok, opt, sched, t.keep_last, scaler=scaler,
                                       extra={"value_head": value_head.state_dict(), "kl_coef": kl_coef},
                                       submodels={CRITIC_DIR: critic} if p.critic == "separate" else None)
                H.call(hooks, "on_save", ctx, done, path)
    return cfg.run_dir
