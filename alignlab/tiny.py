"""Offline tiny-model factory: a real tokenizer and a randomly initialised real architecture.

`make_tiny("gemma3_text", "runs/tiny-gemma")` trains a byte-level BPE tokenizer with `tokenizers` on
built-in text (digits split one per token, so arithmetic is learnable), adds pad/eos and a chat
template, builds the architecture with every config field set explicitly, and saves a normal HF
folder that `transformers` loads without alignlab:

    AutoTokenizer.from_pretrained(d); AutoModelForCausalLM.from_pretrained(d)
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ARCHS = ("gemma3_text", "qwen2", "qwen3", "llama")

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>"]
# Reasoning-format markers are ordinary (non-special) added tokens: decode keeps them in text.
MARKER_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Small defaults: a few hundred thousand parameters, fast on two CPU cores.
DEFAULT_SIZE = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=512,
)

_BUILTIN_TEXT = """\
The quick brown fox jumps over the lazy dog. A language model predicts the next token from the ones
before it. Fine-tuning adapts a pretrained model to a task with supervised examples; reinforcement
learning improves it further with rewards. The assistant answers the user's question clearly and
politely, and refuses requests that could cause harm. Think step by step, then give the answer.
Patients were given 5 mg of the medication twice daily; no adverse events were reported.
def add(a, b):
    return a + b
print(add(2, 3))
Question: what is 12 plus 30? Answer: 42. Question: what is 7 times 6? Answer: 42.
<think> 3 + 4 = 7 </think> <answer> 7 </answer>
"""


def _training_corpus() -> list[str]:
    lines = _BUILTIN_TEXT.splitlines()
    lines += [f"{a}+{b}={a + b} {a}-{b}={a - b} {a}*{b}={a * b}" for a in range(0, 100, 7) for b in range(0, 100, 11)]
    return lines


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE `PreTrainedTokenizerFast` with pad/eos/bos, markers and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(MARKER_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<bos>",
        unk_token=None,
        padding_side="right",
        model_max_length=DEFAULT_SIZE["max_position_embeddings"],
    )
    fast.add_tokens(MARKER_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(arch: str, **overrides):
    """A transformers config for `arch` with every field that matters set explicitly."""
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    s = {**DEFAULT_SIZE, **overrides}
    special = dict(pad_token_id=0, bos_token_id=4, eos_token_id=3)
    common = dict(
        vocab_size=s["vocab_size"],
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"],
        head_dim=s["head_dim"],
        max_position_embeddings=s["max_position_embeddings"],
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        attention_dropout=0.0,
        use_cache=True,
        **special,
    )
    if arch == "gemma3_text":
        n = s["num_hidden_layers"]
        # Gemma-3's 5:1 local:global pattern; the last layer is global when the depth allows.
        layer_types = ["full_attention" if (i + 1) % 6 == 0 or i == n - 1 else "sliding_attention" for i in range(n)]
        return Gemma3TextConfig(
            **common,
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=s["head_dim"],  # Gemma-3 scales q by head_dim ** -0.5
            sliding_window=s.get("sliding_window", 64),
            layer_types=layer_types,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            },
            attention_bias=False,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            tie_word_embeddings=True,
        )
    rope = {"rope_type": "default", "rope_theta": 10_000.0}
    if arch == "qwen2":
        return Qwen2Config(
            **common, hidden_act="silu", rope_parameters=rope, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=None,
        )
    if arch == "qwen3":
        return Qwen3Config(
            **common, hidden_act="silu", rope_parameters=rope, tie_word_embeddings=True, attention_bias=False,
            use_sliding_window=False, sliding_window=None,
        )
    return LlamaConfig(
        **common, hidden_act="silu", rope_parameters=rope, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False,
    )


def make_tiny(arch: str, out_dir: str | os.PathLike, *, seed: int = 0, exist_ok: bool = False, **overrides) -> Path:
    """Build and save a tiny model + tokenizer as a normal HF folder. Atomic: written then renamed.
    exist_ok=True keeps a folder another process finished first (the cache: same spec, same model)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from .atomic import atomic_dir

    out = Path(out_dir)
    vocab = overrides.get("vocab_size", DEFAULT_SIZE["vocab_size"])
    tok = build_tokenizer(min(vocab, 512) if vocab >= 300 else vocab)
    if len(tok) > vocab:
        raise ValueError(f"vocab_size={vocab} is smaller than the tokenizer ({len(tok)} tokens)")
    cfg = tiny_config(arch, **overrides)
    ids = {"pad": tok.pad_token_id, "eos": tok.eos_token_id, "bos": tok.bos_token_id}
    assert (ids["pad"], ids["eos"], ids["bos"]) == (cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id), ids
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id, bos_token_id=cfg.bos_token_id,
        do_sample=False,
    )
    with atomic_dir(out, exist_ok=exist_ok) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "alignlab_tiny.json").write_text(json.dumps({"arch": arch, "seed": seed, **overrides}, indent=1))
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNLAB_CACHE", Path.home() / ".cache" / "alignlab"))


def resolve_tiny(spec: str) -> Path:
    """`tiny:qwen2` (or `tiny:llama?hidden_size=256`) -> a cached tiny model folder, built once."""
    body = spec.split(":", 1)[1]
    arch, _, query = body.partition("?")
    overrides = {}
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        overrides[k] = int(v)
    key = hashlib.sha1(json.dumps([arch, sorted(overrides.items())]).encode()).hexdigest()[:10]
    out = cache_dir() / "tiny" / f"{arch}-{key}"
    if not (out / "config.json").exists():
        from .atomic import file_lock

        # a sweep starts many processes at once: one builds, the others wait and find it built
        with file_lock(out.parent / f".{out.name}.lock"):
            if not (out / "config.json").exists():
                make_tiny(arch, out, exist_ok=True, **overrides)
    return out
