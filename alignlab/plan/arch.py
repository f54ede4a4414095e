"""Architecture numbers from a model's own config, and exact parameter counts from shapes.

No torch, no transformers: a config is a plain dict (a hub ``config.json``, a local model folder,
or an entry of ``alignlab/assets/model_configs.json``). Missing fields take the defaults of the
matching transformers config class (copied here so the planner starts in milliseconds).

Counts are per projection, from each weight's real shape: q is ``hidden x heads*head_dim``, k and
v are ``hidden x kv_heads*head_dim`` (grouped-query attention), the MLP is gated
(``gate``/``up``: ``hidden x intermediate``, ``down``: ``intermediate x hidden``), and biases and
norms are counted where the architecture has them. A LoRA adapter of rank r on a linear layer
``in -> out`` adds ``r * (in + out)`` parameters (A: ``r x in``, B: ``out x r``, no bias).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ASSETS

CATALOG_PATH = ASSETS / "model_configs.json"

SUPPORTED_MODEL_TYPES = ("gemma3_text", "gemma3", "qwen2", "qwen3", "llama", "mistral")

# transformers 5 defaults of each config class for the fields the planner reads
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": dict(
        vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=131_072, tie_word_embeddings=True, attention_bias=False,
        sliding_window=4096, sliding_window_pattern=6, final_logit_softcapping=None, attn_logit_softcapping=None,
        query_pre_attn_scalar=256,
    ),
    "qwen2": dict(
        vocab_size=151_936, hidden_size=4096, intermediate_size=22_016, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, hidden_act="silu", max_position_embeddings=32_768,
        tie_word_embeddings=False, attention_bias=True, use_sliding_window=False, sliding_window=None,
    ),
    "qwen3": dict(
        vocab_size=151_936, hidden_size=4096, intermediate_size=22_016, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu",
        max_position_embeddings=32_768, tie_word_embeddings=False, attention_bias=False,
        use_sliding_window=False, sliding_window=None,
    ),
    "llama": dict(
        vocab_size=32_000, hidden_size=4096, intermediate_size=11_008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
    ),
    "mistral": dict(
        vocab_size=32_000, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, hidden_act="silu", max_position_embeddings=32_768,
        tie_word_embeddings=False, sliding_window=4096,
    ),
}

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTN_PROJ = PROJECTIONS[:4]
MLP_PROJ = PROJECTIONS[4:]


class PlanError(ValueError):
    """Bad input to the planner; the message names the value and the valid choices."""


@dataclass(frozen=True)
class Linear:
    name: str
    d_in: int
    d_out: int
    bias: bool

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass(frozen=True)
class Arch:
    """Normalised architecture of a decoder-only causal LM."""

    name: str
    model_type: str  # gemma3_text | qwen2 | qwen3 | llama | mistral
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    act: str
    max_position: int
    layer_types: tuple[str, ...]
    sliding_window: int | None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    # -- family traits (what the activation model needs) -----------------------------------------
    @property
    def gemma(self) -> bool:
        return self.model_type == "gemma3_text"

    @property
    def qk_norm(self) -> bool:  # per-head RMSNorm on q and k (Qwen3, Gemma-3)
        return self.model_type in ("qwen3", "gemma3_text")

    @property
    def sandwich_norm(self) -> bool:  # extra norms on the attention and MLP outputs (Gemma-2/3)
        return self.gemma

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def n_sliding(self) -> int:
        return sum(t == "sliding_attention" for t in self.layer_types)

    # -- shapes ------------------------------------------------------------------------------
    def linears(self) -> list[Linear]:
        """The seven projections of one decoder layer, with their real shapes."""
        H, I = self.hidden, self.intermediate
        return [
            Linear("q_proj", H, self.q_dim, self.qkv_bias),
            Linear("k_proj", H, self.kv_dim, self.qkv_bias),
            Linear("v_proj", H, self.kv_dim, self.qkv_bias),
            Linear("o_proj", self.q_dim, H, self.o_bias),
            Linear("gate_proj", H, I, self.mlp_bias),
            Linear("up_proj", H, I, self.mlp_bias),
            Linear("down_proj", I, H, self.mlp_bias),
        ]

    def norms_per_layer(self) -> list[tuple[str, int]]:
        H = self.hidden
        out = [("input_layernorm", H), ("post_attention_layernorm", H)]
        if self.sandwich_norm:
            out += [("pre_feedforward_layernorm", H), ("post_feedforward_layernorm", H)]
        if self.qk_norm:
            out += [("q_norm", self.head_dim), ("k_norm", self.head_dim)]
        return out

    def params_per_layer(self) -> dict[str, int]:
        lin = {x.name: x.params for x in self.linears()}
        attn = sum(lin[n] for n in ATTN_PROJ)
        mlp = sum(lin[n] for n in MLP_PROJ)
        norms = sum(d for _, d in self.norms_per_layer())
        return {"attention": attn, "mlp": mlp, "norms": norms, "total": attn + mlp + norms}

    def param_counts(self) -> dict[str, int]:
        """Exact counts: embedding, one layer, all layers, final norm, untied head, total."""
        emb = self.vocab * self.hidden
        per = self.params_per_layer()
        head = 0 if self.tied else self.vocab * self.hidden
        layers = per["total"] * self.layers
        total = emb + layers + self.hidden + head
        return {
            "embedding": emb,
            "per_layer": per["total"],
            "per_layer_attention": per["attention"],
            "per_layer_mlp": per["mlp"],
            "per_layer_norms": per["norms"],
            "layers": layers,
            "final_norm": self.hidden,
            "lm_head": head,
            "total": total,
            "non_embedding": total - emb - head,
        }

    def largest_param(self) -> int:
        """Elements of the largest single parameter tensor (the embedding for every model here)."""
        return max(self.vocab * self.hidden, max(x.d_in * x.d_out for x in self.linears()))

    # -- LoRA ----------------------------------------------------------------------------------
    def module_names(self) -> list[str]:
        return list(PROJECTIONS) + ["embed_tokens", "lm_head"]

    def resolve_targets(self, targets: list[str] | str) -> list[str]:
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        out: list[str] = []
        for t in targets:
            if t in ("all-linear", "all_linear", "all"):
                out += list(PROJECTIONS)
            elif t in ("attn", "attention"):
                out += list(ATTN_PROJ)
            elif t == "mlp":
                out += list(MLP_PROJ)
            elif t in self.module_names():
                out.append(t)
            else:
                raise PlanError(
                    f"unknown LoRA target {t!r} for {self.model_type}; valid: {', '.join(self.module_names())}, "
                    "all-linear, attn, mlp"
                )
        return list(dict.fromkeys(out))

    def lora_params(self, r: int, targets: list[str] | str) -> dict[str, int]:
        """Trainable LoRA parameters per target module (summed over layers) and in total."""
        names = self.resolve_targets(targets)
        lin = {x.name: x for x in self.linears()}
        per: dict[str, int] = {}
        for n in names:
            if n in lin:
                per[n] = r * (lin[n].d_in + lin[n].d_out) * self.layers
            elif n in ("embed_tokens", "lm_head"):  # peft: A r x vocab, B hidden x r (or the transpose)
                per[n] = r * (self.vocab + self.hidden)
        per["total"] = sum(per.values())
        return per

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "model_type": self.model_type, "hidden_size": self.hidden,
            "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "vocab_size": self.vocab, "tie_word_embeddings": self.tied, "sliding_window": self.sliding_window,
            "sliding_layers": self.n_sliding, "source": self.source,
        }


# ----------------------------------------------------------------------------------------------
# Loading configs
# ----------------------------------------------------------------------------------------------


def load_catalog() -> dict[str, dict]:
    data = json.loads(CATALOG_PATH.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def catalog_names() -> list[str]:
    return list(load_catalog())


def _catalog_lookup(name: str) -> tuple[str, dict] | None:
    cat = load_catalog()
    low = name.lower()
    for key, entry in cat.items():
        names = [key, key.replace(" (text part)", "")] + list(entry.get("aliases", []))
        if any(low == n.lower() for n in names):
            return key, entry
    return None


def arch_from_config(cfg: dict[str, Any], name: str = "", source: str = "") -> Arch:
    """An ``Arch`` from a config dict (hub config.json layout, or a catalog entry)."""
    notes: list[str] = []
    mt = cfg.get("model_type")
    if mt == "gemma3" or (mt is None and "text_config" in cfg):
        text = dict(cfg.get("text_config") or {})
        text.setdefault("model_type", "gemma3_text")
        if "tie_word_embeddings" in cfg and "tie_word_embeddings" not in text:
            text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
        notes.append("multimodal checkpoint: planning the language model only (vision tower not counted)")
        cfg, mt = text, "gemma3_text"
    if mt not in _DEFAULTS:
        raise PlanError(
            f"unsupported model_type {mt!r}{f' in {source}' if source else ''}; the planner models: "
            + ", ".join(SUPPORTED_MODEL_TYPES)
        )
    d = {**_DEFAULTS[mt], **{k: v for k, v in cfg.items() if v is not None or k in ("sliding_window",)}}
    H, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
    kv = d.get("num_key_value_heads") or heads
    head_dim = d.get("head_dim") or H // heads
    L = int(d["num_hidden_layers"])
    act = d.get("hidden_activation") or d.get("hidden_act") or "silu"
    if mt == "gemma3_text":
        lt = d.get("layer_types")
        pattern = int(d.get("sliding_window_pattern") or 6)
        if not isinstance(lt, list) or len(lt) != L:
            lt = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(L)]
        window = d.get("sliding_window")
        qkv_bias = o_bias = bool(d.get("attention_bias", False))
        mlp_bias = False
    else:
        use_sw = bool(d.get("use_sliding_window", mt == "mistral"))
        window = d.get("sliding_window") if use_sw else None
        lt = d.get("layer_types")
        if not isinstance(lt, list) or len(lt) != L:
            if mt in ("qwen2", "qwen3") and use_sw and window:
                mwl = int(d.get("max_window_layers", L))
                lt = ["sliding_attention" if i >= mwl else "full_attention" for i in range(L)]
            else:
                lt = ["sliding_attention" if window else "full_attention"] * L
        if mt == "qwen2":
            qkv_bias, o_bias = True, False
        else:
            qkv_bias = o_bias = bool(d.get("attention_bias", False))
        mlp_bias = bool(d.get("mlp_bias", False))
    if d.get("final_logit_softcapping") or d.get("attn_logit_softcapping"):
        notes.append("logit softcapping: attention runs in eager mode (not modelled exactly)")
    return Arch(
        name=name or cfg.get("_name_or_path", "") or mt,
        model_type=mt,
        hidden=H,
        intermediate=int(d["intermediate_size"]),
        layers=L,
        heads=heads,
        kv_heads=int(kv),
        head_dim=int(head_dim),
        vocab=int(d["vocab_size"]),
        tied=bool(d.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=mlp_bias,
        act=str(act),
        max_position=int(d.get("max_position_embeddings") or 0),
        layer_types=tuple(lt),
        sliding_window=int(window) if window else None,
        source=source,
        notes=tuple(notes),
    )


def load_arch(model: str) -> Arch:
    """A catalog name (or alias), a local model folder, or a path to a config.json."""
    p = Path(model).expanduser()
    if p.is_dir():
        cfg_path = p / "config.json"
        if not cfg_path.is_file():
            raise PlanError(f"model folder {str(p)!r} has no config.json")
        return arch_from_config(_read_json(cfg_path), name=p.name, source=str(cfg_path))
    if p.suffix == ".json" or model.endswith("config.json"):
        if not p.is_file():
            raise PlanError(f"config file {str(p)!r} does not exist")
        return arch_from_config(_read_json(p), name=p.parent.name or p.stem, source=str(p))
    hit = _catalog_lookup(model)
    if hit is not None:
        key, entry = hit
        return arch_from_config(entry, name=key, source=f"alignlab/assets/model_configs.json[{key!r}]")
    raise PlanError(
        f"unknown model {model!r}: not a local folder with config.json, not a config.json file, and not in the "
        f"catalog; catalog models: {', '.join(catalog_names())}"
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected a JSON object")
    return data
