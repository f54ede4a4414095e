"""Load policies, references and tokenizers; LoRA / QLoRA through peft; save, merge, unload.

Models always load through `AutoModelForCausalLM.from_pretrained` from a local folder (or a hub id
when the machine is online), so a tiny model and a real Gemma-3 go through the same code path.
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError, LoRAConfig, ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device=cuda but no CUDA device is visible; use model.device=auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device=mps but MPS is not available; use model.device=auto or cpu")
    return torch.device(requested)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "mps"


@dataclass(frozen=True)
class Precision:
    """How a step runs: weights' storage dtype, autocast dtype (None = off), grad scaler on/off."""

    weights: torch.dtype
    autocast: torch.dtype | None
    scaler: bool

    def autocast_ctx(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)


def pick_precision(model_dtype: str, precision: str, device: torch.device, lora: bool) -> Precision:
    """fp32 on CPU by default; bf16 autocast where supported; fp16 + GradScaler where bf16 is not.

    Full fine-tuning keeps fp32 master weights under autocast. A LoRA base is frozen, so it is stored
    in the half dtype to save memory while the adapters train in fp32.
    """
    if precision == "auto":
        precision = "fp32" if device.type == "cpu" else ("bf16" if bf16_supported(device) else "fp16")
    if precision == "bf16" and not bf16_supported(device) and device.type != "cpu":
        raise ConfigError(f"training.precision=bf16 but {device} has no bf16 support; use fp16 or auto")
    half = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if model_dtype != "auto":
        weights = _DTYPES[model_dtype]
    else:
        weights = half if (lora and half is not None) else torch.float32
    return Precision(weights=weights, autocast=half, scaler=precision == "fp16")


def resolve_model_path(path: str) -> str:
    """tiny:<arch> builds offline; a local folder is used as is; a hub id needs the network."""
    if path.startswith("tiny:"):
        from .tiny import resolve_tiny

        return str(resolve_tiny(path))
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ConfigError(f"model.path={path!r} is a folder without config.json (not a Hugging Face model folder)")
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ConfigError(f"model.path={path!r} does not exist (expected a local folder, a hub id like "
                          f"google/gemma-3-270m, or tiny:qwen2)")
    if _in_hf_cache(path):
        return path
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ConfigError(
            f"model.path={path!r} is not a local folder, not in the Hugging Face cache, and the hub cannot be "
            f"reached from this machine. Download it on a machine that is online and pass model.path=/its/folder, "
            f"or use a tiny model built offline: model.path=tiny:qwen2 (see `alignlab make-tiny`)."
        )
    return path


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def adapter_base(path: str) -> str | None:
    """The base model a LoRA adapter folder (adapter_config.json, no config.json) was trained on;
    None for anything else."""
    import json

    p = Path(path).expanduser()
    if not (p / "adapter_config.json").is_file() or (p / "config.json").is_file():
        return None
    base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{p / 'adapter_config.json'} names no base_model_name_or_path; merge the adapter into its "
                          "base with `alignlab merge-lora --base BASE` and start from the merged folder")
    return base


def adapter_chain(path: str) -> tuple[str, list[str]]:
    """(the full model at the root, the LoRA adapter folders folded into it, in order) of a starting
    model. A plain model folder, hub id or tiny:<arch> is its own root with no adapters. An adapter
    trained on top of an earlier adapter (LoRA SFT, then LoRA DPO) names that adapter folder as its
    base, so the chain can be several folders long."""
    chain: list[str] = []
    cur = path
    while (base := adapter_base(cur)) is not None:
        here = str(Path(cur).expanduser().resolve())
        if here in chain:
            raise ConfigError(f"{here}/adapter_config.json: base_model_name_or_path leads back to itself")
        chain.append(here)
        cur = base
    return cur, chain[::-1]


def fold_adapters(model, adapters: list[str]):
    """Merge each LoRA adapter folder into `model`, in order: the plain model they describe."""
    from peft import PeftConfig, PeftModel

    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    for a in adapters:
        conf = PeftConfig.from_pretrained(a)
        conf.task_type = None  # a causal-LM adapter also folds into the same trunk under a reward head
        model = PeftModel.from_pretrained(model, a, config=conf).merge_and_unload()
    for n, p in model.named_parameters():  # peft froze the base; full fine-tuning from here must train it
        p.requires_grad_(trainable.get(n, True))
    return model


def start_tokenizer(path: str):
    """The tokenizer of a starting model (`model.path`): its own folder's, or for an adapter folder
    saved without one, the nearest base's. Loops call it to validate data before loading weights."""
    root, chain = adapter_chain(path)
    for folder in chain[::-1]:
        if _has_tokenizer(folder):
            return load_tokenizer(folder)
    return load_tokenizer(resolve_model_path(root))


def _has_tokenizer(path: str) -> bool:
    return (Path(path).expanduser() / "tokenizer_config.json").is_file()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:  # many base models ship without one; eos is the usual stand-in
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, quantize_4bit: bool = False):
    from transformers import AutoModelForCausalLM

    kwargs: dict = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    if quantize_4bit:
        kwargs["quantization_config"] = qlora_quantization_config(dtype)
        kwargs["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not quantize_4bit:
        model.to(device)
    apply_kernels(model, cfg, device)
    return model


def apply_kernels(model, cfg: ModelConfig, device: torch.device) -> None:
    """`model.kernels=liger`: swap the model's RMSNorm, gated MLP and RoPE for Liger's Triton kernels
    (the same instance patching transformers' Trainer does with use_liger_kernel). Liger's fused
    linear cross-entropy is not used: alignlab's loops take per-token log-probs from their own fused
    head, which a mean loss cannot give."""
    if cfg.kernels == "torch":
        return
    if device.type != "cuda":
        raise ConfigError(f"model.kernels=liger needs a CUDA device (Liger's kernels are Triton GPU kernels), and "
                          f"this run is on {device.type}; use model.kernels=torch here")
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as e:
        raise ConfigError(f"model.kernels=liger needs liger-kernel ({e}); pip install 'alignlab[liger]' or set "
                          "model.kernels=torch") from e
    kind = getattr(model.config, "model_type", None)
    if kind not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ConfigError(f"model.kernels=liger: Liger has no kernels for model type {kind!r} (it has "
                          f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); use model.kernels=torch")
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, geglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)


def qlora_quantization_config(compute_dtype: torch.dtype):
    """4-bit NF4 with double quantisation (QLoRA, arXiv:2305.14314). CUDA + bitsandbytes only."""
    if not torch.cuda.is_available():
        raise ConfigError("lora.qlora=true needs a CUDA GPU (bitsandbytes 4-bit kernels); on this machine use "
                          "lora.qlora=false (plain LoRA) or run on a GPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("lora.qlora=true needs bitsandbytes: pip install 'alignlab[bitsandbytes]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def apply_lora(model, lora: LoRAConfig):
    from peft import LoraConfig, get_peft_model

    # QLoRA: no peft.prepare_model_for_kbit_training. It casts every non-4-bit parameter (embeddings, LM
    # head, norms) to fp32, so the residual stream and every activation saved for backward become fp32:
    # on a Gemma-3-1B shape that made QLoRA take 1.33x plain LoRA's memory. The base stays frozen in
    # its compute dtype (get_peft_model freezes it); only the adapters are fp32, as for plain LoRA.
    targets = lora.target_modules
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if targets != ["all-linear"] and not set(targets) & present:
        raise ConfigError(f"lora.target_modules={targets} matches no module of this model; "
                          f"linear layers here include: {', '.join(sorted(n for n in present if 'proj' in n))}")
    peft_cfg = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets, task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    for p in model.parameters():  # adapters train in fp32 even when the frozen base is half precision
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


class _CastUnlessAutocast:
    """peft's `cast_input_dtype_enabled` switch on a LoRA layer: false while autocast is on.

    A LoRA layer casts its input to the adapter's dtype (fp32) before `lora_A`. Under autocast that
    matmul casts it straight back to half precision, so the cast only adds work: a full fp32 copy of
    the layer's input for every target (7 per decoder layer), the adapter's dropout run in fp32, and a
    half copy saved for backward next to the input the base layer already saved. Skipping it gives the
    same values and gradients (the fp32 round trip of a half tensor is exact). Without autocast the
    cast still runs, so a half input to an fp32 adapter keeps working."""

    def __bool__(self) -> bool:
        return not any(torch.is_autocast_enabled(d) for d in ("cuda", "cpu", "mps"))


def skip_lora_input_cast_under_autocast(model) -> None:
    """Every LoRA layer of `model` skips peft's input cast while autocast is on (`_CastUnlessAutocast`)."""
    for m in model.modules():
        if hasattr(m, "cast_input_dtype_enabled") and hasattr(m, "lora_A"):
            m.cast_input_dtype_enabled = _CastUnlessAutocast()


def load_policy(model_cfg: ModelConfig, lora_cfg: LoRAConfig, precision: str = "auto", resume_from=None):
    """-> (model, tokenizer, device, Precision). `resume_from` (a checkpoints/step_N folder) holds the
    full weights for full fine-tuning, or the adapter to put back on the base for LoRA."""
    from peft import PeftModel

    from .lora import cycles

    adapter_dir = None
    cycle_dir = cycles.saved_in(resume_from) if lora_cfg.enabled else None  # relora / rank1: the base trained too
    if resume_from is not None:
        if cycle_dir is not None:  # the merged model at the root; this cycle's adapter and exact base in lora_cycle/
            model_cfg = model_cfg.model_copy(update={"path": str(resume_from)})
            adapter_dir = str(cycle_dir)
        elif lora_cfg.enabled:
            adapter_dir = str(resume_from)
        else:
            model_cfg = model_cfg.model_copy(update={"path": str(resume_from)})
    device = pick_device(model_cfg.device)
    prec = pick_precision(model_cfg.dtype, precision, device, lora_cfg.enabled)
    root, start_adapters = adapter_chain(model_cfg.path)  # e.g. a LoRA SFT checkpoint as the start of DPO
    path = resolve_model_path(root)
    tok = start_tokenizer(model_cfg.path)
    if lora_cfg.qlora and not lora_cfg.enabled:
        raise ConfigError("lora.qlora=true needs lora.enabled=true")
    if lora_cfg.qlora and start_adapters:
        raise ConfigError(f"model.path={model_cfg.path!r} is a LoRA adapter folder, which cannot be merged into a 4-bit "
                          f"base; merge it first (alignlab merge-lora --adapter {model_cfg.path} --out DIR) and start "
                          "from DIR")
    model = load_causal_lm(path, model_cfg, device, prec.weights, quantize_4bit=lora_cfg.qlora)
    if start_adapters:  # the starting model is base + adapter(s), folded in: new adapters / the reference start there
        model = fold_adapters(model, start_adapters)
        _record_base(model, start_adapters[-1])
    if model_cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x renamed it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora_cfg.enabled:
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
            if cycle_dir is not None:
                cycles.load_base(model, cycle_dir)
        else:
            model = apply_lora(model, lora_cfg)
        skip_lora_input_cast_under_autocast(model)
        if model_cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    if model_cfg.compile:
        from .logprobs import compile_decoder

        compile_decoder(model)
    # Training mode: from_pretrained returns eval mode, where transformers skips gradient checkpointing.
    # (RL loops disable dropout afterwards, so their forward stays deterministic.)
    model.train()
    return model, tok, device, prec


def _record_base(model, adapter_dir: str) -> None:
    """A new adapter on a folded start records the start folder, not the bare root, as its base
    (peft reads `name_or_path`), so the checkpoint loads as the model that was trained."""
    model.name_or_path = adapter_dir
    model.config._name_or_path = adapter_dir


def load_reward_model(model_cfg: ModelConfig, lora_cfg: LoRAConfig, precision: str = "auto", resume_from=None):
    """An LM backbone with a scalar head (AutoModelForSequenceClassification, num_labels=1): the score
    of a sequence is the head's output at its last non-padding token. -> (model, tokenizer, device, Precision)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification

    device = pick_device(model_cfg.device)
    prec = pick_precision(model_cfg.dtype, precision, device, lora_cfg.enabled)
    if resume_from is not None and not lora_cfg.enabled:
        path, start_adapters, tok = str(resume_from), [], load_tokenizer(str(resume_from))
    else:
        root, start_adapters = adapter_chain(model_cfg.path)  # a LoRA SFT checkpoint: folded into its base
        path, tok = resolve_model_path(root), start_tokenizer(model_cfg.path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=prec.weights)
    if start_adapters:
        model = fold_adapters(model, start_adapters)
        _record_base(model, start_adapters[-1])
    model.config.pad_token_id = tok.pad_token_id
    if lora_cfg.enabled:
        if resume_from is not None:
            model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                                                     target_modules=lora_cfg.target_modules, task_type="SEQ_CLS"))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        skip_lora_input_cast_under_autocast(model)
    return model.to(device), tok, device, prec


def disable_dropout(model) -> None:
    """RL: dropout would make the training forward differ from the sampling policy (ratio != 1)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # copied from the config at init
            m.attention_dropout = 0.0
    for attr in ("attention_dropout", "hidden_dropout", "dropout"):
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, attr):
            setattr(cfg, attr, 0.0)


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def reference_mode(model):
    """The reference policy of a LoRA model is its base with adapters disabled: no second copy."""
    if not is_peft(model):
        raise ValueError("reference_mode needs a LoRA (peft) model; full fine-tuning keeps a frozen copy instead")
    with model.disable_adapter():
        yield model


def reference_logps(policy, reference, batch: dict, temperature: float = 1.0, packed: bool = False) -> torch.Tensor:
    """(B, T) log-probs of batch["labels"] under the reference policy: the frozen copy when there is
    one (full fine-tuning), else the LoRA policy with its adapters disabled. `packed`: padding-free
    (logprobs.packed_response_log_probs), the same values."""
    from .logprobs import batch_log_probs

    if reference is not None:
        return batch_log_probs(reference, batch, packed, temperature=temperature)["log_probs"]
    with reference_mode(policy):
        return batch_log_probs(policy, batch, packed, temperature=temperature)["log_probs"]


def load_frozen_reference(model_cfg: ModelConfig, precision: str = "auto"):
    """The reference for full fine-tuning: a second copy of the starting model, eval mode, no grads.
    (A LoRA policy needs none: `reference_mode` disables its adapters.)"""
    ref, *_ = load_policy(model_cfg, LoRAConfig(enabled=False), precision)
    return ref.eval().requires_grad_(False)


def save_model(model, tokenizer, out_dir: str | os.PathLike, state_dict: dict | None = None) -> None:
    """A normal HF folder: adapter_config.json + adapter weights for LoRA, full weights otherwise; for
    relora / rank1 the merged model, with lora_cycle/ for an exact resume (lora/cycles.py).
    `state_dict`: the weights to write instead of the model's own (fsdp2: gathered from the shards)."""
    from .lora import cycles

    if cycles.is_marked(model):
        return cycles.save(model, tokenizer, out_dir)
    model.save_pretrained(out_dir, state_dict=state_dict)
    tokenizer.save_pretrained(out_dir)


def remove_adapter(model):
    """Drop the LoRA layers without merging: the original base model back, unchanged."""
    if not is_peft(model):
        raise ValueError("remove_adapter needs a LoRA (peft) model")
    return model.unload()


def merge_adapter(adapter_dir: str, out_dir: str, base_path: str | None = None) -> Path:
    """Fold LoRA weights into the base and save a plain model folder (loads without peft)."""
    from transformers import AutoModelForCausalLM

    if not adapter_base(adapter_dir):
        raise ConfigError(f"{adapter_dir} is not a LoRA adapter folder (adapter_config.json without config.json)")
    root, chain = (base_path, [adapter_dir]) if base_path else adapter_chain(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(root), dtype=torch.float32)
    fold_adapters(model, chain).save_pretrained(out_dir)
    tok = load_tokenizer(adapter_dir) if _has_tokenizer(adapter_dir) else start_tokenizer(base_path or adapter_dir)
    tok.save_pretrained(out_dir)
    return Path(out_dir)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
