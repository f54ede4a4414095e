"""What ReLoRA and rank-1 merging share: a peft model whose adapters are merged into its base
every few steps.

- `lora_layers(model)`: the LoRA-wrapped linears of the active adapter.
- `merge_into_base(layer)`: W ← W + s·B·A, in place, refusing a base that is not fp32 (a bf16 weight
  of 0.02 has a spacing of 1.2e-4 and rounds increments below 6.1e-5 away: per-step merges vanish).
- `use_fp32_masters(layers)`: the adapted linears' base weights stored in fp32 (autocast still
  computes in half precision; a half-precision copy cast up and down again is unchanged).
- Checkpoints: `save` writes the *merged* model at the root of checkpoints/step_N (an ordinary HF folder
  that transformers, vLLM, `alignlab eval` and `analyze` load: W + s·B·A folded), and in
  `lora_cycle/` the current adapter (a peft folder) plus `base_linears.safetensors`, the exact fp32
  base weights of the adapted linears. `models.load_policy(resume_from=)` puts those back, so a resume
  continues bit for bit; the root alone is the model that was trained.
"""
from __future__ import annotations

from pathlib import Path

import torch

CYCLE_DIR = "lora_cycle"
BASE_FILE = "base_linears.safetensors"
ADAPTER = "default"  # the policy's adapter (peft's default name)


def lora_layers(model, adapter: str = ADAPTER) -> list[tuple[str, object]]:
    """[(module name, peft LoRA Linear)] of `adapter`, in module order (embedding LoRA is not included)."""
    from peft.tuners.lora import LoraLayer

    from ..models import is_peft

    base = model.get_base_model() if is_peft(model) else model
    return [(name, m) for name, m in base.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]


def factors(layer, adapter: str = ADAPTER) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """(A (r, in), B (out, r)) parameters of a layer."""
    return layer.lora_A[adapter].weight, layer.lora_B[adapter].weight


def use_fp32_masters(layers) -> None:
    for _, layer in layers:
        w = layer.get_base_layer().weight
        if w.element_size() < 4:
            w.data = w.data.float()


@torch.no_grad()
def merge_into_base(layer, adapter: str = ADAPTER) -> None:
    """W ← W + s·B·A in place (peft's get_delta_weight: B @ A times the scale, transposed for fan_in_fan_out)."""
    w = layer.get_base_layer().weight
    if w.element_size() < 4:  # fp16 / bf16 (fp64 is fine: the tests use it)
        raise RuntimeError(f"merging into a {w.dtype} base weight would round small updates away (bf16 spacing at "
                           "|w| = 0.02 is 1.2e-4); the base must be an fp32 master copy (cycles.use_fp32_masters)")
    w.add_(layer.get_delta_weight(adapter).to(w.dtype))


def mark(model) -> None:
    """From now on `models.save_model` writes this model in the merged layout (`save`)."""
    model.alignlab_merges_into_base = True


def is_marked(model) -> bool:
    return bool(getattr(model, "alignlab_merges_into_base", False))


def save(model, tokenizer, out_dir) -> None:
    """Root: the merged model, an ordinary HF folder. lora_cycle/: the adapter + the exact base linears."""
    from safetensors.torch import save_file

    from ..rollout.vllm import vllm_weights  # the effective weights W + s·B·A under HF names, computed in fp32

    out = Path(out_dir)
    merged = {name: w.contiguous() for name, w in vllm_weights(model)}
    model.get_base_model().save_pretrained(out, state_dict=merged)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out / CYCLE_DIR)  # peft: adapter_config.json + this cycle's A and B
    bases = {f"{name}.weight": layer.get_base_layer().weight.detach().contiguous() for name, layer in lora_layers(model)}
    save_file(bases, str(out / CYCLE_DIR / BASE_FILE))


def saved_in(ckpt) -> Path | None:
    """The lora_cycle/ folder of a checkpoint written by `save`, or None."""
    if ckpt is None:
        return None
    p = Path(ckpt) / CYCLE_DIR
    return p if (p / BASE_FILE).is_file() else None


@torch.no_grad()
def load_base(model, cycle_dir: Path) -> None:
    """Put the exact base weights of the adapted linears back (fp32 masters)."""
    from safetensors.torch import load_file

    saved = load_file(str(Path(cycle_dir) / BASE_FILE))
    layers = dict(lora_layers(model))
    missing = sorted(set(f"{n}.weight" for n in layers) - set(saved))
    if missing:
        raise RuntimeError(f"{cycle_dir / BASE_FILE} has no base weight for {missing[:3]}: it was written for other "
                           "lora.target_modules")
    for name, layer in layers.items():
        w = layer.get_base_layer().weight
        w.data = saved[f"{name}.weight"].to(w.device, torch.float32)
