"""Run real training steps of a planned configuration and measure peak memory per phase.

Imported only for ``alignlab plan --measure`` and the accuracy bench (it imports torch).

The step is the one alignlab's loops run: forward (with ``labels=`` and the model's own cross
entropy for ``loss_impl="full"``, or alignlab's chunked log-probs for ``"chunked"``), backward,
``torch.optim.AdamW`` (torch's default for-loop/foreach/fused choice unless told), and
``zero_grad(set_to_none=True)``; ``grad_accum`` micro-batches per optimizer step. The model is a
real transformers architecture built from its config with random weights (nothing is
downloaded). One untracked step runs first so the optimizer states exist, as in steady state.

Measured on CPU (and MPS): the peak of live tensor bytes per phase from ``LiveTensorTracker``
(see ``_tracker.py``: every storage an operator returns, until it is freed). On CUDA:
``torch.cuda.max_memory_allocated`` per phase, reset at each phase start.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field, replace

import torch

from ._tracker import LiveTensorTracker
from .arch import Arch, PlanError
from .memory import Setup, resolve_dtypes

_DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Measurement:
    device: str
    phases: dict[str, float] = field(default_factory=dict)  # phase -> peak bytes
    seconds_per_step: float = 0.0
    method: str = ""

    @property
    def peak(self) -> float:
        return max(self.phases.values())


def hf_config(arch: Arch):
    """A transformers config object for an ``Arch`` (every field the planner reads, set explicitly)."""
    import transformers

    common = dict(
        vocab_size=arch.vocab, hidden_size=arch.hidden, intermediate_size=arch.intermediate,
        num_hidden_layers=arch.layers, num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
        head_dim=arch.head_dim, max_position_embeddings=max(arch.max_position, 8192), tie_word_embeddings=arch.tied,
        attention_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if arch.model_type == "gemma3_text":
        return transformers.Gemma3TextConfig(
            **common, hidden_activation=arch.act, sliding_window=arch.sliding_window or 4096,
            layer_types=list(arch.layer_types), attention_bias=arch.qkv_bias, query_pre_attn_scalar=arch.head_dim,
            final_logit_softcapping=None, attn_logit_softcapping=None,
        )
    if arch.model_type == "qwen2":
        return transformers.Qwen2Config(**common, hidden_act=arch.act, use_sliding_window=False)
    if arch.model_type == "qwen3":
        return transformers.Qwen3Config(**common, hidden_act=arch.act, attention_bias=arch.qkv_bias,
                                        use_sliding_window=False)
    if arch.model_type == "mistral":
        return transformers.MistralConfig(**common, hidden_act=arch.act, sliding_window=arch.sliding_window)
    return transformers.LlamaConfig(**common, hidden_act=arch.act, attention_bias=arch.qkv_bias,
                                    mlp_bias=arch.mlp_bias)


def build_model(arch: Arch, setup: Setup, device: torch.device, seed: int = 0):
    """Random-weight model of the architecture, prepared as the planned setup trains it."""
    from transformers import AutoModelForCausalLM

    dt = resolve_dtypes(setup)
    torch.manual_seed(seed)
    if dt["weights"] == "nf4":
        model = _random_4bit_model(arch, setup, device, _DT[dt["compute"]])
    else:
        model = AutoModelForCausalLM.from_config(hf_config(arch), attn_implementation=setup.attn_impl,
                                                 dtype=_DT[dt["weights"]])
        model.to(device)
    if setup.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if setup.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=setup.lora_r, lora_alpha=setup.lora_alpha, lora_dropout=setup.lora_dropout,
            target_modules=list(setup.lora_targets), task_type="CAUSAL_LM"))
        from alignlab.models import skip_lora_input_cast_under_autocast

        skip_lora_input_cast_under_autocast(model)  # as alignlab's loops train it
        if setup.grad_ckpt:
            model.enable_input_require_grads()
    model.train()
    return model


def _random_4bit_model(arch: Arch, setup: Setup, device: torch.device, compute: torch.dtype):
    """QLoRA: a random model saved once, then loaded 4-bit exactly as alignlab's training loads a base
    (models.load_causal_lm with the NF4 quantisation config), so the measured step is the trained one."""
    import importlib.util
    import tempfile

    from transformers import AutoModelForCausalLM

    if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        have = f"device {device.type}, bitsandbytes {'installed' if importlib.util.find_spec('bitsandbytes') else 'missing'}"
        raise PlanError(f"--measure with QLoRA needs a CUDA device and bitsandbytes ({have}); "
                        "measure --method lora instead, or run on a GPU with pip install bitsandbytes")
    from alignlab.models import qlora_quantization_config

    with tempfile.TemporaryDirectory(prefix="alignlab-measure-") as tmp:
        AutoModelForCausalLM.from_config(hf_config(arch), dtype=compute).save_pretrained(tmp)
        return AutoModelForCausalLM.from_pretrained(
            tmp, dtype=compute, attn_implementation=setup.attn_impl,
            quantization_config=qlora_quantization_config(compute), device_map={"": device.index or 0})


def _batch(arch: Arch, setup: Setup, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    B = setup.micro_batch * (2 if setup.task == "dpo" else 1)
    T = setup.seq_len
    ids = torch.randint(3, arch.vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if setup.padded:  # right padding on the last sequence: transformers materialises a mask
        n_pad = max(1, T // 8)
        mask[-1, -n_pad:] = 0
        ids[-1, -n_pad:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return ids.to(device), mask.to(device), labels.to(device)


def _loss(model, setup: Setup, ids, mask, labels):
    if setup.loss_impl == "full":
        return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    from alignlab.logprobs import get_response_log_probs

    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    valid = shifted != -100
    logps = get_response_log_probs(model, ids, shifted.clamp(min=0), attention_mask=mask,
                                   chunk_tokens=setup.chunk_tokens)["log_probs"]
    return -(logps * valid).sum() / valid.sum()


def measure(arch: Arch, setup: Setup, device: str | None = None, steps: int = 1, seed: int = 0,
            cpu_threads: int | None = 1) -> Measurement:
    """Peak memory per phase (forward, backward, optimizer) of real training steps.

    On CPU the step runs single-threaded by default: tensor allocations do not depend on the thread
    count, and a shared machine's oversubscribed OpenMP threads can slow a step 30-fold."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prev_threads = torch.get_num_threads()
    if dev.type == "cpu" and cpu_threads:
        torch.set_num_threads(cpu_threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers/peft deprecation chatter
            return _measure(arch, setup, dev, steps, seed)
    finally:
        torch.set_num_threads(prev_threads)


def _measure(arch: Arch, setup: Setup, dev: torch.device, steps: int, seed: int) -> Measurement:
    if setup.task != "sft" and setup.task != "dpo":
        raise PlanError("--measure runs the supervised/preference step (forward, backward, optimizer); "
                        "RL rollout phases are predicted only")
    setup = replace(setup, device=dev.type)
    dt = resolve_dtypes(setup)
    model = build_model(arch, setup, dev, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    impl = dt["optim_impl"] if setup.optim_impl != "auto" else None
    kw = {"foreach": impl == "foreach", "fused": impl == "fused"} if impl else {}
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, **kw)
    def autocast():
        if dt["autocast"] == "none":
            return contextlib.nullcontext()
        return torch.autocast(dev.type, dtype=_DT[dt["autocast"]])

    batches = [_batch(arch, setup, dev, seed + i) for i in range(setup.grad_accum)]

    def step(tracker=None):
        for ids, mask, labels in batches:
            mark_phase(tracker, dev, "forward")
            with autocast():
                loss = _loss(model, setup, ids, mask, labels)
            mark_phase(tracker, dev, "backward")
            (loss / setup.grad_accum).backward()
            del loss
        mark_phase(tracker, dev, "optimizer")
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark_phase(tracker, dev, "done")

    step()  # optimizer states now exist
    out = Measurement(device=str(dev))
    t0 = time.perf_counter()
    for _ in range(steps):
        peaks, out.method = peak_per_phase(step, dev, existing_tensors(model, opt, batches), ("forward", "backward", "optimizer"))
        for k, v in peaks.items():
            out.phases[k] = max(out.phases.get(k, 0.0), v)
    out.seconds_per_step = (time.perf_counter() - t0) / steps
    return out


def peak_per_phase(step, dev: torch.device, existing: list[torch.Tensor], names) -> tuple[dict[str, float], str]:
    """Run `step(tracker)` once (it marks its phases with `mark_phase(tracker, dev, name)`) and return the peak
    bytes of each phase in `names`, and how they were measured: on CUDA `max_memory_allocated`, reset at
    each phase start; elsewhere the live tensor bytes of `LiveTensorTracker`, counting `existing` (weights,
    optimizer states, batch) from the start. The one measurement behind plan --measure, the memory
    analysis and preflight."""
    if dev.type == "cuda":
        peaks, method = _cuda_step(step, dev), "max_memory_allocated"
    else:
        tr = LiveTensorTracker()
        tr.track_existing(existing)
        with tr:
            step(tr)
        peaks, method = tr.peaks, "live tensor bytes"
    return {k: float(v) for k, v in peaks.items() if k in names}, method


_CUDA_PEAKS: dict[str, float] = {}
_CUDA_CUR: list[str] = []


def mark_phase(tracker, dev, name: str) -> None:
    if tracker is not None:
        tracker.set_phase(name)
    elif dev.type == "cuda" and _CUDA_CUR:
        torch.cuda.synchronize(dev)
        prev = _CUDA_CUR[0]
        _CUDA_PEAKS[prev] = max(_CUDA_PEAKS.get(prev, 0.0), float(torch.cuda.max_memory_allocated(dev)))
        torch.cuda.reset_peak_memory_stats(dev)
        _CUDA_CUR[0] = name


def _cuda_step(step, dev) -> dict[str, float]:
    _CUDA_PEAKS.clear()
    _CUDA_CUR[:] = ["setup"]
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    step(None)
    _CUDA_CUR.clear()
    return dict(_CUDA_PEAKS)


def existing_tensors(model, opt, batches) -> list[torch.Tensor]:
    ts: list[torch.Tensor] = list(model.parameters()) + list(model.buffers())
    for st in opt.state.values():
        ts += [v for v in st.values() if torch.is_tensor(v)]
    for b in batches:
        ts += list(b)
    return ts
