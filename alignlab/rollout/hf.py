"""The Hugging Face backend (`sampling.backend=hf`, everywhere): `generate()` and `HFSampler`.

Prompts are batched by length and left-padded. The decode loop is transformers' `generate` with its
dynamic KV cache, or alignlab's own loop over a static KV cache, optionally in CUDA graphs
(`sampling.hf_decode`, `decode_static`).

Sampling log-probs: the HF backend applies temperature and top-p in its own logits processor,
and tells `generate` to add no warpers of its own, so the distribution it records is exactly
the one tokens were drawn from. The processor keeps one (B, V) tensor at a time: it reads the
log-prob of the token drawn at step t when it is called at step t+1, so nothing vocabulary-sized
piles up.
"""
from __future__ import annotations

import contextlib
import weakref

import torch

from .common import Rollout, cut, request_seeds, starts_with_bos


class _SampleAndRecord:
    """The only warper in the chain: temperature, top-p; records the sampled tokens' log-probs.

    With `uniforms` (rows, max_new_tokens), it also draws each row's token itself, by the inverse CDF at
    that row's uniform for the step, and hands `generate` a distribution with all its mass on that token:
    each row's samples then depend on its own seed only, not on the batch it shares (`generate(seeds=)`)."""

    def __init__(self, temperature: float, top_p: float, uniforms: torch.Tensor | None = None):
        self.temperature, self.top_p, self.uniforms = temperature, top_p, uniforms
        self.prev: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.steps.append(self.prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        z = scores.float() / self.temperature
        if self.top_p < 1.0:
            z = top_p_filter(z, self.top_p)
        self.prev = torch.log_softmax(z, dim=-1)
        if self.uniforms is not None:
            tok = inverse_cdf(self.prev.exp(), self.uniforms[:, len(self.steps)])
            return torch.full_like(z, float("-inf")).scatter_(-1, tok[:, None], 0.0)
        return z

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_new) log-probs of the generated tokens."""
        if self.prev is not None:
            self.steps.append(self.prev.gather(-1, last_tokens[:, None]).squeeze(-1))
            self.prev = None
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros(len(last_tokens), 0)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, V) probabilities and (B,) uniforms in (0, 1] -> (B,) tokens: the first token whose cumulative
    probability reaches u (scaled by the row's total, so float rounding cannot step past the last one)."""
    cdf = probs.float().cumsum(-1)
    tok = torch.searchsorted(cdf, (u.to(cdf) * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return tok.clamp(max=probs.shape[-1] - 1)


def row_uniforms(seeds: list[int], n: int, steps: int) -> torch.Tensor:
    """(len(seeds) * n, steps) uniforms in (0, 1]: row (i, k) from its own generator seeded seeds[i] + k."""
    return torch.stack([1.0 - torch.rand(steps, generator=torch.Generator().manual_seed(s + k), dtype=torch.float64)
                        for s in seeds for k in range(n)]).float()


def top_p_filter(z: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering (arXiv:1904.09751): keep the smallest set of tokens whose probability
    reaches top_p (always at least the most likely one); the rest get -inf."""
    sorted_z, idx = torch.sort(z, descending=True, dim=-1)
    probs = torch.softmax(sorted_z, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above this one
    remove_sorted = before >= top_p
    remove = torch.zeros_like(remove_sorted).scatter(-1, idx, remove_sorted)
    return z.masked_fill(remove, float("-inf"))


DECODERS = ("generate", "static", "cuda_graphs")
FINISH_CHECK_EVERY = 8  # decode steps between host syncs that ask whether every sequence is done
PROMPT_BUCKET = 16  # static loop: prompts are left-padded to a multiple of this (fewer distinct prefill shapes)
CACHE_BUCKET = 128  # static loop: the KV cache's length is rounded up to a multiple of this, so the per-token
# step sees few (rows, cache length) shapes: each new one is a torch.compile recompilation and a graph capture,
# and past torch._dynamo.config.recompile_limit (default 8) torch.compile silently falls back to eager
GRAPH_SHAPES = 64  # cuda_graphs: the recompile limit while decoding (each (rows, cache length, dtype) needs one)


def _pick(logits: torch.Tensor, temperature: float, top_p: float,
          u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step's choice from (B, V) logits -> (tokens (B,), their log-probs (B,)) under the
    distribution drawn from (temperature, top-p; greedy records temperature-1 log-probs, as
    `_SampleAndRecord` does for `generate`). `u` (B,): each row's uniform for this step (seeded rows)."""
    if temperature > 0:
        z = logits.float() / temperature
        if top_p < 1.0:
            z = top_p_filter(z, top_p)
        logp = torch.log_softmax(z, dim=-1)
        tok = torch.multinomial(logp.exp(), 1).squeeze(-1) if u is None else inverse_cdf(logp.exp(), u)
    else:
        logp = torch.log_softmax(logits.float(), dim=-1)
        tok = logits.argmax(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def _stop_checker(tokenizer, stop: list[str] | None):
    if not stop:
        return None
    return lambda rows: [any(x in tokenizer.decode(r, skip_special_tokens=False) for x in stop) for r in rows]


# cuda_graphs: one static KV cache and one compiled step per (model, rows, cache length, autocast dtype).
# A fresh cache or a freshly compiled closure per call would make torch.compile trace and capture the
# graphs again for every batch; reusing both, with the cache zeroed, replays the captured graphs.
_GRAPHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _decode_step(model, cache, tok, position_ids, cache_position, mask):
    return model(input_ids=tok, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                 cache_position=cache_position, use_cache=True).logits[:, -1]


def _static_cache(model, length: int):
    """A static KV cache of `length` positions in every layer, sliding-window layers included.
    transformers' StaticCache gives sliding layers a rolling window whose fill level is a Python int;
    torch.compile guards on it, so every decode step would recompile (and after the recompile limit, run
    eagerly). A full-length layer is exact for them too: the model's sliding-window mask is computed from
    absolute positions, so keys older than the window are masked rather than evicted."""
    from transformers.cache_utils import Cache, StaticLayer

    n = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(n)])


def _static_cache_and_step(model, batch: int, length: int, graphs: bool):
    if not graphs:
        return _static_cache(model, length), _decode_step
    dev = next(model.parameters()).device.type
    key = (batch, length, torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None)
    per_model = _GRAPHED.setdefault(model, {})
    if key not in per_model:
        per_model[key] = (_static_cache(model, length),
                          torch.compile(_decode_step, mode="reduce-overhead", fullgraph=False, dynamic=False))
    cache, step = per_model[key]
    cache.reset()
    return cache, step


@torch.no_grad()
def decode_static(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, n: int = 1,
                  temperature: float = 0.0, top_p: float = 1.0, eos_id: int, pad_id: int, stop_hit=None,
                  graphs: bool = False, uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode over a static KV cache: every tensor of the per-token step has a fixed shape and address,
    so the step can be captured in CUDA graphs (`graphs=True`: torch.compile, mode reduce-overhead)
    and replayed without per-kernel launch cost. The same code runs eagerly on CPU and MPS.

    input_ids, attention_mask: (P, S) left-padded prompts; each is repeated n times (consecutively).
    -> (new tokens (P*n, max_new_tokens), their sampling log-probs (P*n, max_new_tokens)). A finished row
    (EOS, or a stop string seen by `stop_hit(rows) -> [bool]`) continues with `pad_id`. The host asks
    whether all rows are done every FINISH_CHECK_EVERY steps, not every step."""
    if graphs and input_ids.device.type != "cuda":
        raise ValueError("decode=cuda_graphs needs a CUDA device; use decode=static (same loop, no graphs)")
    extra = -input_ids.shape[1] % PROMPT_BUCKET  # more left padding: masked out, positions unchanged
    ids = torch.nn.functional.pad(input_ids, (extra, 0), value=pad_id).repeat_interleave(n, 0)
    am = torch.nn.functional.pad(attention_mask.long(), (extra, 0), value=0).repeat_interleave(n, 0)
    B, S = ids.shape
    dev = ids.device
    L = -(-(S + max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET  # unused tail positions stay masked out
    cache, step = _static_cache_and_step(model, B, L, graphs)
    mask = torch.zeros(B, L, dtype=torch.long, device=dev)  # the one (B, L) mask every step reads
    mask[:, :S] = am
    pos = (am.cumsum(-1) - 1).clamp(min=0)  # positions count real tokens, as in training
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                cache_position=torch.arange(S, device=dev), use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1]  # (B, V)
    next_pos = pos[:, -1:] + 1  # (B, 1)
    # every step's cache position, made once: a tensor built from a Python int each step would be a
    # blocking host-to-device copy, which on CUDA waits for all queued work and stalls the launch pipeline
    cache_pos = torch.arange(S, L, device=dev)

    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    logps = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    shapes = torch._dynamo.config.patch(recompile_limit=GRAPH_SHAPES) if graphs else contextlib.nullcontext()
    with shapes:
        for i in range(max_new_tokens):
            tok, lp = _pick(logits, temperature, top_p, None if uniforms is None else uniforms[:, i])
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            tokens[:, i], logps[:, i] = tok, lp
            done |= tok == eos_id
            if i == max_new_tokens - 1:
                break
            if (i + 1) % FINISH_CHECK_EVERY == 0:
                if stop_hit is not None:  # one device-to-host copy for all rows
                    so_far, finished = tokens[:, : i + 1].tolist(), done.tolist()
                    live = [j for j in range(B) if not finished[j]]
                    hits = stop_hit([so_far[j] for j in live])
                    done[[j for j, h in zip(live, hits) if h]] = True
                if bool(done.all()):
                    break
            mask[:, S + i] = 1
            logits = step(model, cache, tok[:, None], next_pos, cache_pos[i : i + 1], mask)
            next_pos = next_pos + 1
    return tokens, logps


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
             top_p: float = 1.0, stop: list[str] | None = None, batch_size: int = 64,
             return_logprobs: bool = False, decode: str = "generate", seeds: list[int] | None = None) -> Rollout:
    """Sample `n` completions per prompt (greedy when temperature == 0). Output order follows the
    input; completion ids end at EOS or at the token that completes a stop string.

    seeds: one per prompt (`request_seeds`): sample k of prompt i draws from its own generator seeded
    seeds[i] + k, so what a prompt gets does not depend on the other prompts, their batching, or the rank
    that samples it (data-parallel runs). None: the global torch RNG, one stream for the whole batch.

    decode: one of DECODERS. "generate" is transformers' `generate` with its dynamic KV cache;
    "static" is alignlab's own loop over a static KV cache (`decode_static`); "cuda_graphs" is that
    loop with its per-token step captured in CUDA graphs (CUDA only)."""
    if decode not in DECODERS:
        raise ValueError(f"decode={decode!r}; choose one of {', '.join(DECODERS)}")
    was_training = model.training
    model.eval()
    from ..distributed import current

    dist = current()
    synced = dist.lockstep  # FSDP2: every rank runs each decode step, until all ranks are done
    # FSDP2: the compute device (the shards may sit in CPU memory with parallel.fsdp2.cpu_offload)
    device = dist.device if synced else next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    per_prompt: list[list[tuple]] = [[] for _ in prompts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            texts = [prompts[i] for i in idx]
            enc = tokenizer(texts, return_tensors="pt", padding=True,
                            add_special_tokens=not starts_with_bos(tokenizer, texts[0])).to(device)
            kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, synced_gpus=synced)
            uniforms = (row_uniforms([seeds[i] for i in idx], n, max_new_tokens).to(device)
                        if seeds is not None and temperature > 0 else None)
            if stop:
                kwargs.update(stop_strings=stop, tokenizer=tokenizer)
            recorder = None
            if temperature > 0:
                recorder = _SampleAndRecord(temperature, top_p, uniforms)
                kwargs.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, logits_processor=[recorder])
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                if return_logprobs:
                    recorder = _SampleAndRecord(1.0, 1.0)
                    kwargs.update(logits_processor=[recorder])
            if decode == "generate":
                out = model.generate(**enc, **kwargs)
                new = out[:, enc["input_ids"].shape[1] :]
                logps = recorder.finish(new[:, -1]) if recorder is not None else None
            else:
                new, logps = decode_static(
                    model, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens, n=n,
                    temperature=temperature, top_p=top_p, eos_id=tokenizer.eos_token_id,
                    pad_id=tokenizer.pad_token_id, stop_hit=_stop_checker(tokenizer, stop),
                    graphs=decode == "cuda_graphs", uniforms=uniforms)
            for j, row in enumerate(new.tolist()):
                i = idx[j // n]
                ids = cut(row, tokenizer, stop)
                pid = enc["input_ids"][j // n][enc["attention_mask"][j // n].bool()].tolist()
                lp = logps[j, : len(ids)].tolist() if logps is not None and return_logprobs else None
                per_prompt[i].append((tokenizer.decode(ids, skip_special_tokens=True), pid, ids, lp))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    flat = [x for group in per_prompt for x in group]
    return Rollout(prompts=list(prompts), completions=[x[0] for x in flat], prompt_ids=[x[1] for x in flat],
                   completion_ids=[x[2] for x in flat],
                   sampling_logps=[x[3] for x in flat] if return_logprobs else None, n=n)


class HFSampler:
    """`generate()` on the policy itself with transformers: nothing to sync after an update.
    `seed` (the step's, `step_seed`) gives every prompt its own seed (`request_seeds`), as the vLLM backend
    does; a list is the prompts' own seeds (a data-parallel rank's share of the step's). Without a seed it
    samples from the global torch RNG."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64, decode: str = "generate"):
        self.model, self.tokenizer, self.batch_size, self.decode = model, tokenizer, batch_size, decode

    def sync(self) -> None:
        pass

    def generate(self, prompts: list[str], *, seed: int | list[int] | None = None, batch_size: int | None = None,
                 **kw) -> Rollout:
        seeds = seed if isinstance(seed, list) else (
            None if seed is None else request_seeds(seed, len(prompts), kw.get("n", 1)))
        return generate(self.model, self.tokenizer, prompts, batch_size=batch_size or self.batch_size,
                        decode=self.decode, seeds=seeds, **kw)
