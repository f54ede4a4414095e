"""Generation for evaluation and RL: one `Rollout`, two backends.

- `hf.py`: Hugging Face `generate` (or alignlab's static-cache loop) on the policy itself, anywhere;
- `vllm.py`: a vLLM engine colocated on the training GPU, following the policy's weights (CUDA);
- `common.py`: what both return and share (`Rollout`, `cut`, `starts_with_bos`) and what the loops
  use around them (`step_seed`, `mismatch_stats`).

A loop asks `make_sampler(cfg.sampling, ...)` for its sampler, calls `sampler.generate(...)` for a
`Rollout`, and `sampler.sync()` after each optimizer update. The backends import only public names
from `common`, never from each other.
"""
from __future__ import annotations

from ..config import ConfigError
from .common import Rollout, cut, mismatch_stats, request_seeds, starts_with_bos, step_seed
from .hf import DECODERS, HFSampler, decode_static, generate, top_p_filter

__all__ = ["DECODERS", "HFSampler", "Rollout", "cut", "decode_static", "generate", "make_sampler", "mismatch_stats", "request_seeds",
           "starts_with_bos", "step_seed", "top_p_filter"]


def make_sampler(sampling, policy, tokenizer, model_cfg, lora_cfg, precision, seed: int = 0):
    """The rollout engine a loop samples from: `sampling.backend` hf (anywhere) or vllm (CUDA).
    Both return the same `Rollout`; call `.sync()` after each optimizer update."""
    if sampling.backend == "hf":
        cuda = next(policy.parameters()).device.type == "cuda"
        if sampling.hf_decode == "cuda_graphs" and not cuda:
            raise ConfigError("sampling.hf_decode=cuda_graphs needs a CUDA device; use sampling.hf_decode=static "
                              "(the same static-cache loop without graphs) or generate")
        from ..distributed import current

        graphs = cuda and not current().lockstep  # fsdp2's synced decoding needs generate
        decode = sampling.hf_decode if sampling.hf_decode != "auto" else ("cuda_graphs" if graphs else "generate")
        return HFSampler(policy, tokenizer, sampling.batch_size, decode)
    from .vllm import VLLMSampler

    dtype = precision.autocast or precision.weights
    return VLLMSampler(policy, tokenizer, sampling.vllm, model_cfg=model_cfg, lora_cfg=lora_cfg, dtype=dtype, seed=seed)
