"""What every `alignlab analyze` command shares: loading a model folder (or a LoRA adapter folded into
its base), refusing mismatched or incomplete inputs, prompts, and writing JSON and figures."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import AnalysisError  # noqa: F401  (torch-free: `report` and `analyze --help` load no torch)


BUILTIN_PROMPTS = [
    "Question: what is 12 plus 30? Answer: 42. Question: what is 7 times 6? Answer: 42.",
    "The quick brown fox jumps over the lazy dog. A language model predicts the next token from the ones before it.",
    "def add(a, b):\n    return a + b\nprint(add(2, 3))",
    "Fine-tuning adapts a pretrained model to a task with supervised examples; reinforcement learning improves it.",
]

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def layer_and_module(name: str) -> tuple[int | None, str]:
    """'model.layers.3.self_attn.q_proj.weight' -> (3, 'q_proj'); 'model.embed_tokens.weight' -> (None, 'embed_tokens')."""
    m = _LAYER_RE.search(name)
    parts = name.split(".")
    module = parts[-2] if parts[-1] in ("weight", "bias") and len(parts) > 1 else parts[-1]
    return (int(m.group(1)) if m else None), module


def resolve(path: str) -> tuple[str, list[str]]:
    """-> (model folder, the LoRA adapter folders folded into it, in order: models.adapter_chain, so an
    adapter trained on an earlier adapter works too). Refuses paths that are neither."""
    from ..config import ConfigError
    from ..models import adapter_chain, resolve_model_path

    p = Path(path).expanduser()
    if not p.exists() and not path.startswith("tiny:") and path.count("/") != 1:
        raise AnalysisError(f"{path}: no such folder (expected a Hugging Face model folder or a LoRA adapter folder)")
    try:
        root, chain = adapter_chain(path)
        return resolve_model_path(root), chain
    except ConfigError as exc:
        raise AnalysisError(str(exc)) from None


def load_config(path: str):
    from transformers import AutoConfig

    folder, _ = resolve(path)
    return AutoConfig.from_pretrained(folder)


def load_model(path: str, attn: str | None = None, dtype=None):
    """A causal LM in eval mode on CPU (fp32 unless `dtype`); LoRA adapter folders are folded into their
    base (models.fold_adapters)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..models import fold_adapters

    folder, adapters = resolve(path)
    kw = {"dtype": dtype or torch.float32}
    if attn:
        kw["attn_implementation"] = attn
    return fold_adapters(AutoModelForCausalLM.from_pretrained(folder, **kw), adapters).eval()


def load_tokenizer(path: str):
    """The tokenizer saved with the model (or with the adapter, else its base); refuse when there is none."""
    from ..models import load_tokenizer as _load

    folder, adapters = resolve(path)
    for cand in (*adapters[::-1], folder):
        if cand and (Path(cand) / "tokenizer_config.json").is_file():
            return _load(cand)
    if not Path(folder).exists():  # a hub id in the cache: let transformers find it
        return _load(folder)
    raise AnalysisError(f"{path}: no tokenizer (tokenizer_config.json) in {folder}; save the tokenizer with the "
                        "model (tokenizer.save_pretrained(folder)) or analyse the folder it was trained from")


ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size")


def check_same_arch(a_cfg, b_cfg, a_name: str, b_name: str) -> None:
    """Comparing two models only makes sense for one architecture: refuse otherwise, naming the field."""
    diffs = [f"{k}: {getattr(a_cfg, k, None)} vs {getattr(b_cfg, k, None)}" for k in ARCH_KEYS
             if getattr(a_cfg, k, None) != getattr(b_cfg, k, None)]
    if diffs:
        raise AnalysisError(f"{a_name} and {b_name} have different architectures ({'; '.join(diffs)}); "
                            "compare a fine-tuned model with the base it was trained from")


def layer_types(cfg) -> list[str]:
    """Per layer 'sliding_attention' or 'full_attention' (Gemma-3's 5:1 pattern); 'full_attention' elsewhere."""
    n = cfg.num_hidden_layers
    types = getattr(cfg, "layer_types", None)
    if types and len(types) == n:
        return list(types)
    return ["full_attention"] * n


def read_prompts(data: str | None, limit: int = 8) -> list[str]:
    """Prompts from a JSONL file (field prompt, text, or prompt+response) or a plain text file (one per
    line); the built-in prompts when no file is given."""
    if not data:
        return list(BUILTIN_PROMPTS[:limit])
    p = Path(data)
    if not p.is_file():
        raise AnalysisError(f"--data {data}: no such file")
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AnalysisError(f"{data}:{i}: not valid JSON ({exc}); fix or delete this line") from None
            text = row.get("text") or ((row.get("prompt") or "") + (row.get("response") or ""))
            if not text:
                raise AnalysisError(f"{data}:{i}: needs a 'text' or 'prompt' field")
            out.append(text)
        else:
            out.append(line)
        if len(out) >= limit:
            break
    if not out:
        raise AnalysisError(f"--data {data}: no prompts in the file")
    return out


def default_out(kind: str, model_path: str | None) -> Path:
    """A run's checkpoint (runs/x/checkpoints/step_N) -> runs/x/analysis/<kind>, where `report` finds it."""
    if model_path:
        p = Path(model_path).expanduser().resolve()
        if p.parent.name == "checkpoints":
            return p.parent.parent / "analysis" / kind
    return Path("runs") / "analysis" / kind


def write_json(out: Path, name: str, obj) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    path.write_text(json.dumps(clean(obj), indent=1))
    return path


def figure(out: Path, name: str, fig) -> Path:
    """Save a matplotlib figure as a small PNG and close it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
