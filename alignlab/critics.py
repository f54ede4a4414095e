"""PPO critics: where a value comes from, what the value loss trains, and how the critic is saved and
resumed. `CRITICS` maps `ppo.critic` to one class each; the PPO loop only calls the shared interface.

- `shared`: a scalar value head on the policy's own final hidden states; one forward serves both.
- `separate`: a second causal LM (`ppo.critic_path`, default model.path) + value head, on its own
  final hidden states (decoder only, no LM head); with lora.enabled it gets its own base copy and
  LoRA. Saved in `checkpoints/step_N/critic/`.
- `lora_adapters`: one frozen base, two peft adapters: "default" (the policy) and "value" (+ the
  head). The value adapter is active only inside `active_adapter`, so each loss reaches only its own
  adapter through the forward graph. Saved by peft in `checkpoints/step_N/value/`; the folder's root
  stays the policy adapter that `PeftModel.from_pretrained(base, step_N)` loads.

Every critic's head starts at zero (V = 0: the first advantages are the returns themselves) and is
saved in trainer_state.pt as `extra["value_head"]`. The head plus the critic's trunk or adapter form
the optimizer's critic groups (`ppo.critic_lr`, default optim.lr; one schedule scales both).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from . import checkpoint, models, optim
from .config import ConfigError, PPOConfig
from .logprobs import Packing, batch_log_probs

VALUE_ADAPTER = "value"  # lora_adapters: the critic's adapter; the policy's is peft's "default"
CRITIC_DIR = "critic"  # separate: the critic's model or adapter folder inside checkpoints/step_N/


def trunk_hidden(model, mb, packed: bool = False) -> torch.Tensor:
    """(B, T, H) final hidden states of a causal LM's decoder; the LM head is skipped (a value needs
    no logits). Positions count real tokens only, as in `logprobs`, so padding cannot move a value.
    `packed` (ppo.packing): the right-padded rows run padding-free (`logprobs.Packing`, as the policy's
    log-probs do), their states put back at their (B, T) places, zeros on padding."""
    base = model.get_base_model() if models.is_peft(model) else model
    if packed:
        p = Packing(mb["attention_mask"])
        return p.unpack(base.get_decoder()(input_ids=p.pack(mb["input_ids"]), position_ids=p.position_ids,
                                           use_cache=False).last_hidden_state)
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


def is_value_adapter(name: str) -> bool:
    """...lora_A.value.weight and the like: an adapter parameter of the value adapter."""
    parts = name.split(".")
    return any(a.startswith("lora_") and b == VALUE_ADAPTER for a, b in zip(parts, parts[1:]))


class SharedCritic:
    """The value head on the policy's own forward: no second trunk pass."""

    def __init__(self, model, head: torch.nn.Linear):
        self.model, self.head = model, head  # model: where the values' hidden states come from

    @staticmethod
    def load(cfg: PPOConfig, policy, tok, precision: str, resume_from: Path | None):
        return policy

    @staticmethod
    def saved_in(ckpt: Path) -> bool:
        return True  # the fallback when no other critic's folder is there

    def values(self, mb, policy_hidden, packed: bool = False) -> torch.Tensor:
        return self.head(policy_hidden).squeeze(-1).float()

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the value loss trains."""
        return list(self.head.parameters())

    def modules(self) -> dict[str, torch.nn.Module]:
        """Besides the policy, what the optimizer and the grad-norm clip cover."""
        return {"value": self.head}

    def backward(self, policy_loss, value_loss, scaler=None) -> None:
        loss = policy_loss + value_loss
        (scaler.scale(loss) if scaler else loss).backward()

    def after_reference(self) -> None:
        pass

    def submodels(self) -> dict | None:
        """Extra model folders inside checkpoints/step_N/."""
        return None


class SeparateCritic(SharedCritic):
    """A second causal LM: its own trunk, saved in critic/."""

    @staticmethod
    def load(cfg: PPOConfig, policy, tok, precision: str, resume_from: Path | None):
        model_cfg = cfg.model.model_copy(update={"path": cfg.ppo.critic_path or cfg.model.path})
        critic, critic_tok, *_ = models.load_policy(
            model_cfg, cfg.lora, precision, resume_from=None if resume_from is None else resume_from / CRITIC_DIR)
        if critic_tok.get_vocab() != tok.get_vocab():
            raise ConfigError(f"ppo.critic_path={model_cfg.path!r} has a different tokenizer from model.path="
                              f"{cfg.model.path!r}; the critic reads the policy's token ids, so it needs the same one")
        models.disable_dropout(critic)
        return critic

    @staticmethod
    def saved_in(ckpt: Path) -> bool:
        return (ckpt / CRITIC_DIR).is_dir()

    def values(self, mb, policy_hidden, packed: bool = False) -> torch.Tensor:
        return self.head(trunk_hidden(self.model, mb, packed)).squeeze(-1).float()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"value": self.head, "critic": self.model}

    def submodels(self) -> dict | None:
        return {CRITIC_DIR: self.model}


class AdapterCritic(SharedCritic):
    """A second LoRA adapter ("value") on the policy's frozen base; peft saves it in value/."""

    @staticmethod
    def load(cfg: PPOConfig, policy, tok, precision: str, resume_from: Path | None):
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

    @staticmethod
    def saved_in(ckpt: Path) -> bool:
        return (ckpt / VALUE_ADAPTER / "adapter_config.json").is_file()

    def values(self, mb, policy_hidden, packed: bool = False) -> torch.Tensor:
        with active_adapter(self.model, VALUE_ADAPTER):
            return self.head(trunk_hidden(self.model, mb, packed)).squeeze(-1).float()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if is_value_adapter(n)] + list(self.head.parameters())

    def backward(self, policy_loss, value_loss, scaler=None) -> None:
        """One backward pass per loss, each with its own adapter active. Activation checkpointing
        recomputes a layer's forward during backward with whichever adapter is active then; the two
        graphs share no trainable tensor, so the two passes add up to the gradient of the sum."""
        scale = scaler.scale if scaler is not None else (lambda x: x)
        scale(policy_loss).backward()
        with active_adapter(self.model, VALUE_ADAPTER):
            scale(value_loss).backward()

    def after_reference(self) -> None:
        train_both_adapters(self.model)  # leaving disable_adapter froze every adapter but the active one


CRITICS = {"shared": SharedCritic, "separate": SeparateCritic, "lora_adapters": AdapterCritic}


def check_resume(resume_from: Path | None, mode: str) -> None:
    """A checkpoint written with another `ppo.critic` would fail later, less clearly (optimizer groups)."""
    if resume_from is None:
        return
    found = next(name for name in ("separate", "lora_adapters", "shared") if CRITICS[name].saved_in(resume_from))
    if found != mode:
        raise ConfigError(f"{resume_from} was written with ppo.critic={found}, this run has ppo.critic={mode}; "
                          f"resume with ppo.critic={found} or start a new run (name=<other>)")


def build(cfg: PPOConfig, policy, tok, precision: str, resume_from: Path | None, device) -> SharedCritic:
    """-> the critic of `ppo.critic`, its head zero (fresh) or read back from the checkpoint."""
    cls = CRITICS[cfg.ppo.critic]
    model = cls.load(cfg, policy, tok, precision, resume_from)
    head = torch.nn.Linear(model.get_output_embeddings().weight.shape[1], 1).to(device)
    torch.nn.init.zeros_(head.weight)  # V = 0 at start: early advantages are the returns themselves
    torch.nn.init.zeros_(head.bias)
    if resume_from is not None:
        head.load_state_dict(checkpoint.load_state(resume_from)["extra"]["value_head"])
    return cls(model, head)


def build_optimizer(policy, critic: SharedCritic, cfg: PPOConfig, total_updates: int):
    """-> (trainable, optimizer, scheduler): one AdamW and one schedule over policy and critic, the
    critic's groups at ppo.critic_lr. A shared head without its own lr keeps the original two groups,
    so older checkpoints resume."""
    trainable = torch.nn.ModuleDict({"policy": policy, **critic.modules()})
    o = cfg.optim
    if cfg.ppo.critic == "shared" and cfg.ppo.critic_lr is None:
        return (trainable, *optim.build(trainable, o, total_updates))
    critic_ids = {id(p) for p in critic.parameters()}
    policy_params = [p for p in trainable.parameters() if p.requires_grad and id(p) not in critic_ids]
    groups = optim.param_groups(torch.nn.ParameterList(policy_params), o.weight_decay) + [
        {**g, "lr": cfg.ppo.critic_lr or o.lr}
        for g in optim.param_groups(torch.nn.ParameterList(critic.parameters()), o.weight_decay)]
    return (trainable, *optim.build(None, o, total_updates, groups=groups))


def forward(policy, critic: SharedCritic, mb, temperature, prec, device, entropy: bool, entropy_grad: bool = True,
            packed: bool = False):
    """-> (log-prob outputs, values (B, T): the value of the state before label t). `packed` (ppo.packing):
    the policy's and the critic's forwards run padding-free; the same values at every real token."""
    with prec.autocast_ctx(device):
        out = batch_log_probs(policy, mb, packed, temperature=temperature, return_token_entropy=entropy,
                              return_hidden=type(critic) is SharedCritic, entropy_grad=entropy_grad)
        values = critic.values(mb, out.get("hidden"), packed)
    return out, values


def reference_logps(policy, reference, batch, temperature: float, critic: SharedCritic, packed: bool = False
                    ) -> torch.Tensor:
    """models.reference_logps, then the critic's adapters trainable again (lora_adapters)."""
    logps = models.reference_logps(policy, reference, batch, temperature, packed)
    if reference is None:
        critic.after_reference()
    return logps
