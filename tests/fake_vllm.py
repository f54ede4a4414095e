"""A CPU stand-in for the slice of vLLM's API that `alignlab.rollout.vllm` uses, for tests only.

It checks what a real engine would reject and behaves the way that matters to the integration:
- keyword names are checked against vLLM 0.33's `LLM`/`EngineArgs` and `SamplingParams` fields
  (a misspelt or removed option fails here as it would there);
- the engine holds its **own copy** of the model, loaded from the folder, so a weight push that
  is missing, late or misnamed shows up as a log-prob mismatch in the loop's metrics;
- `load_weights` rejects names the HF model does not have; `sleep(level=2)` wipes the weights
  (NaN) and generating while asleep raises;
- sampling goes through alignlab's HF `generate` on that copy, seeded per request when asked.
What it cannot check: vLLM's kernels, its real log-prob mode, memory. That needs a GPU.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

# vLLM 0.33.0: vllm/entrypoints/llm.py LLM.__init__ and vllm/engine/arg_utils.py EngineArgs (the subset we pass)
LLM_KWARGS = {"model", "tokenizer", "dtype", "seed", "gpu_memory_utilization", "max_model_len", "enforce_eager",
              "enable_sleep_mode", "enable_prefix_caching", "logprobs_mode", "distributed_executor_backend",
              "trust_remote_code", "tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens"}
# vLLM 0.33.0: vllm/sampling_params.py SamplingParams.from_optional
SAMPLING_KWARGS = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
                   "min_p", "seed", "stop", "stop_token_ids", "bad_words", "include_stop_str_in_output", "ignore_eos",
                   "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
                   "spaces_between_special_tokens", "output_kind", "structured_outputs", "logit_bias",
                   "allowed_token_ids", "extra_args"}

instances: list["LLM"] = []


class SamplingParams:
    def __init__(self, **kw):
        unknown = set(kw) - SAMPLING_KWARGS
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword(s) {sorted(unknown)}")
        self.n, self.temperature, self.top_p = kw.get("n", 1), kw.get("temperature", 1.0), kw.get("top_p", 1.0)
        self.max_tokens, self.stop, self.seed = kw.get("max_tokens", 16), kw.get("stop"), kw.get("seed")
        self.logprobs, self.kw = kw.get("logprobs"), kw


class _Engine:
    """The worker-side model: `reload_weights` streams (name, tensor) pairs into it by HF name."""

    def __init__(self, model):
        self.model = model

    def load_weights(self, weights):
        own = dict(self.model.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if name not in own:
                raise KeyError(f"vLLM model has no parameter {name!r}")
            own[name].data.copy_(tensor.to(own[name].dtype))
            loaded.add(name)
        return loaded


class LLM:
    def __init__(self, **kw):
        unknown = set(kw) - LLM_KWARGS
        if unknown:
            raise TypeError(f"LLM got unexpected keyword(s) {sorted(unknown)}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.kw = kw
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[kw["dtype"]]
        self.model = AutoModelForCausalLM.from_pretrained(kw["model"], dtype=dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(kw["tokenizer"])
        self.engine = _Engine(self.model)
        self.events: list[str] = []
        self.sleeping: set[str] = set()
        instances.append(self)

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        assert method == "reload_weights" and set(kwargs) == {"weights_iterator", "is_checkpoint_format"}
        if "weights" in self.sleeping:
            raise RuntimeError("reload_weights while the weights are asleep writes to unmapped memory")
        self.events.append("push")
        return [self.engine.load_weights(kwargs["weights_iterator"])]

    def apply_model(self, fn):
        return [fn(self.model)]

    def reset_prefix_cache(self):
        self.events.append("reset_prefix_cache")
        return True

    def sleep(self, level: int = 1):
        assert level == 2
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(float("nan"))  # level 2 discards the weights
        self.sleeping = {"weights", "kv_cache"}
        self.events.append("sleep")

    def wake_up(self, tags=None):
        self.sleeping -= set(tags or {"weights", "kv_cache"})
        self.events.append(f"wake:{','.join(tags or [])}")
        return not self.sleeping

    def generate(self, prompts, params, use_tqdm=True):
        from alignlab import rollout

        if self.sleeping:
            raise RuntimeError("generate() on a sleeping engine")
        params = params if isinstance(params, list) else [params] * len(prompts)
        self.events.append("generate")
        outs = []
        for prompt, sp in zip(prompts, params):
            ids = prompt["prompt_token_ids"]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            if sp.seed is not None:
                torch.manual_seed(sp.seed)
            ro = rollout.generate(self.model, self.tokenizer, [text], max_new_tokens=sp.max_tokens, n=sp.n,
                                  temperature=sp.temperature, top_p=sp.top_p, stop=sp.stop,
                                  return_logprobs=sp.logprobs is not None)
            assert ro.prompt_ids[0] == list(ids), "the prompt did not round-trip through the tokenizer"
            samples = []
            for k in reversed(range(sp.n)):  # vLLM may finish them in any order; `index` says which is which
                lp = None
                if ro.sampling_logps is not None:
                    lp = [{t: SimpleNamespace(logprob=v)} for t, v in zip(ro.completion_ids[k], ro.sampling_logps[k])]
                samples.append(SimpleNamespace(index=k, token_ids=tuple(ro.completion_ids[k]), logprobs=lp))
            outs.append(SimpleNamespace(outputs=samples))
        return outs
