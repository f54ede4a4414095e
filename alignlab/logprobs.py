"""Token log-probs and entropy without materialising a full fp32 log-softmax over the vocabulary.

For a 262k-vocabulary model, logits for a (8, 1024) batch are 8*1024*262144*4 B = 8 GiB in fp32,
and a log-softmax doubles it. Here the decoder's final hidden states go through the LM head a chunk
of tokens at a time; each chunk's logits live only inside that chunk (recomputed in backward with
activation checkpointing when gradients are needed).
"""
from __future__ import annotations

import functools
import weakref

import torch
from torch.utils.checkpoint import checkpoint

from .data import first_fit_decreasing

CHUNK_BYTES = 2**28  # ~256 MiB of fp32 logits per chunk: 256 tokens at a 262k vocabulary


def default_chunk_tokens(vocab_size: int) -> int:
    return max(16, CHUNK_BYTES // (4 * vocab_size))


def compute_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy in nats over the last dim: H = -sum softmax(z) * log_softmax(z).
    logits: (..., V) -> (...). Uses the fused, max-shifted log_softmax: no overflow, no cancellation."""
    return _entropy(torch.log_softmax(logits.float(), dim=-1))


def _entropy(logsm: torch.Tensor) -> torch.Tensor:
    p = logsm.exp()
    return -torch.where(p > 0, p * logsm, torch.zeros_like(logsm)).sum(-1)  # p == 0 adds 0 even at -inf


def _final_logit_transform(config, temperature: float = 1.0):
    """Post-processing some architectures apply to the LM head's output (softcapping, scaling)."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None) or None
    div = getattr(config, "logits_scaling", None) or None

    def f(z: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            z = z * scale
        if div is not None:
            z = z / div
        if cap is not None:
            z = torch.tanh(z / cap) * cap
        if temperature != 1.0:  # RL: log-probs under the distribution the rollout was sampled from
            z = z / temperature
        return z

    return f


def _chunk_logps(head, transform, h: torch.Tensor, labels: torch.Tensor, want_entropy: bool):
    logsm = torch.log_softmax(transform(head(h)).float(), dim=-1)  # (n, V) for this chunk only
    logp = logsm.gather(-1, labels[:, None]).squeeze(-1)
    return logp, (_entropy(logsm) if want_entropy else None)


def _head_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the head matmuls run in: the autocast dtype where autocast is on (as nn.Linear would),
    else the wider of the two operands' dtypes."""
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(h.dtype, weight.dtype)


class _FusedHeadLogProbs(torch.autograd.Function):
    """log_softmax(h W^T / T)[y] per token, chunk by chunk, with a hand-written backward.

    Forward keeps only h, W and y. Backward recomputes one chunk's logits at a time and forms the
    softmax gradient in place, g (onehot(y) - p) / T. So nothing vocabulary-sized outlives a chunk, and
    autograd's gather and log-softmax buffers never exist. Entropy, when asked, is returned without
    gradient.

    Precision: a custom Function does not inherit autocast in its backward, so the matmul dtype is fixed
    once (`cdt`, the autocast dtype under autocast) and used explicitly in forward and backward: the
    three head matmuls (logits, dh, dW) run on tensor cores in bf16/fp16, while the log-sum-exp, the
    softmax gradient and the accumulation of dW over chunks stay in fp32.
    """

    @staticmethod
    def forward(ctx, h, weight, labels, inv_temp: float, chunk: int, want_entropy: bool, cdt: torch.dtype):
        logps, ents = [], []
        with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
            w = weight.to(cdt)  # one cast per call (autocast would cast per chunk)
            for s in range(0, h.shape[0], chunk):
                # (n, V) logits in cdt; log_softmax reads them and writes fp32 (no separate upcast pass)
                logsm = _log_softmax_fp32(h[s : s + chunk].to(cdt) @ w.T, inv_temp)
                logps.append(logsm.gather(-1, labels[s : s + chunk, None]).squeeze(-1))
                if want_entropy:
                    ents.append(_entropy(logsm))
            del w
        ctx.save_for_backward(h, weight, labels)
        ctx.inv_temp, ctx.chunk, ctx.cdt = inv_temp, chunk, cdt
        ent = torch.cat(ents) if want_entropy else h.new_zeros(0, dtype=torch.float32)
        ctx.mark_non_differentiable(ent)
        return torch.cat(logps), ent

    @staticmethod
    def backward(ctx, g, _g_ent):
        h, weight, labels = ctx.saved_tensors
        cdt = ctx.cdt
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dh = torch.empty_like(h) if need_h else None
        dw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # fp32 accumulator
        w = weight.to(cdt)
        fp32_accumulate = need_w and cdt != dw.dtype and _addmm_fp32_out(h.device)
        for s in range(0, h.shape[0], ctx.chunk):
            hc, gc = h[s : s + ctx.chunk].to(cdt), g[s : s + ctx.chunk].float()
            p = _softmax_fp32(hc @ w.T, ctx.inv_temp)  # (n, V) fp32
            p.mul_(-gc[:, None])
            p[torch.arange(len(gc), device=p.device), labels[s : s + ctx.chunk]] += gc
            gz = (p.mul_(ctx.inv_temp) if ctx.inv_temp != 1.0 else p).to(cdt)  # d loss / d logits
            del p  # or the next chunk's logits are built while this still lives
            if need_h:
                dh[s : s + ctx.chunk] = gz @ w
            if need_w:
                if gz.dtype == dw.dtype:
                    dw.addmm_(gz.T, hc)  # fp32: in place, no weight-sized temporary
                elif fp32_accumulate:  # CUDA: a cdt GEMM that adds into the fp32 accumulator in its epilogue
                    torch.addmm(dw, gz.T, hc, out_dtype=torch.float32, out=dw)
                else:
                    dw.add_(gz.T @ hc)  # this chunk's product in cdt, summed over chunks in fp32
            del gz
        return dh, (dw.to(weight.dtype) if need_w else None), None, None, None, None, None


def _log_softmax_fp32(z: torch.Tensor, inv_temp: float) -> torch.Tensor:
    """fp32 log_softmax(z * inv_temp) of half-precision logits in one kernel (the softmax kernels read
    bf16/fp16 and compute and write fp32), so no fp32 copy of the logits is made first."""
    if inv_temp != 1.0:
        return torch.log_softmax(z.float() * inv_temp, dim=-1)
    return torch.log_softmax(z, dim=-1, dtype=torch.float32)


def _softmax_fp32(z: torch.Tensor, inv_temp: float) -> torch.Tensor:
    if inv_temp != 1.0:
        return torch.softmax(z.float() * inv_temp, dim=-1)
    return torch.softmax(z, dim=-1, dtype=torch.float32)


_ADDMM_FP32_OUT: dict[str, bool] = {}


def _addmm_fp32_out(device: torch.device) -> bool:
    """Whether `torch.addmm(C32, A16, B16, out_dtype=torch.float32, out=C32)` works here: a half-precision
    GEMM accumulating into an fp32 matrix (torch >= 2.9, CUDA only). Probed once per device type on a
    small case and checked against the reference, so an older torch or another backend falls back to
    the separate add rather than failing a run."""
    key = device.type
    if key not in _ADDMM_FP32_OUT:
        ok = False
        if device.type == "cuda":
            try:
                a = torch.arange(6, device=device, dtype=torch.bfloat16).view(2, 3)
                c = torch.ones(2, 2, device=device, dtype=torch.float32)
                torch.addmm(c, a, a.T, out_dtype=torch.float32, out=c)
                ok = torch.equal(c, 1 + (a.float() @ a.float().T))
            except (TypeError, RuntimeError, NotImplementedError):
                ok = False
        _ADDMM_FP32_OUT[key] = ok
    return _ADDMM_FP32_OUT[key]


def _fusable(head, config) -> bool:
    """The fused path covers the common case: a plain bias-free Linear head (not LoRA-wrapped), no
    softcapping or logit scaling. Anything else takes the checkpointed generic path."""
    return (type(head) is torch.nn.Linear and head.bias is None
            and not getattr(config, "final_logit_softcapping", None) and not getattr(config, "logit_scale", None)
            and not getattr(config, "logits_scaling", None))


def _decoder_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # FSDP2 (alignlab.distributed.wrap) registers the decoder call as a forward of the sharded model, so the
    # model's weights (embeddings, head) are gathered for it as they would be for model(...)
    decoder = getattr(base, "alignlab_decoder", None) or base.get_decoder()
    return decoder, base.get_output_embeddings(), base.config


# model.compile: the decoders whose log-prob forwards run compiled (a weak set: a freed model leaves it)
_COMPILED_DECODERS: weakref.WeakSet = weakref.WeakSet()
COMPILE_SHAPES = 32  # recompile limit while a compiled forward runs: grad and no-grad passes, with and without an
# attention mask (packed rows have none), a sliding window shorter or longer than the batch, LoRA adapters on or
# off each take their own graph; past torch's default limit (8) it would silently run eagerly


def compile_decoder(model) -> None:
    """`model.compile=true`: every later `get_response_log_probs` on `model` (training, old-policy and
    reference passes) runs its decoder through `torch.compile` with dynamic batch and sequence sizes.
    The model's modules are not replaced, so checkpoints and generation are unchanged."""
    _COMPILED_DECODERS.add(_decoder_and_head(model)[0])


def _decoder_hidden(decoder, input_ids, attention_mask, position_ids) -> torch.Tensor:
    return decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).last_hidden_state


@functools.cache
def _decoder_hidden_compiled():
    """Made on first use: importing torch.compile's machinery costs seconds and ~110 MiB of host memory,
    which a run without model.compile should not pay."""
    return torch.compile(_decoder_hidden, dynamic=True)


def get_response_log_probs(
    model,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    return_token_entropy: bool = False,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
    temperature: float = 1.0,
    return_hidden: bool = False,
    entropy_grad: bool = True,
) -> dict[str, torch.Tensor]:
    """log p(labels[b, t] | input_ids[b, :t+1]) for every position: {"log_probs": (B, T)[, "token_entropy": (B, T)]}.

    input_ids, labels: (B, T) already shifted (labels[t] is the token after input_ids[t]).
    The LM head runs over `chunk_tokens` positions at a time (default: ~256 MiB of fp32 logits); values equal the naive
    `log_softmax(model(input_ids).logits.float())` gather to fp32 rounding. With gradients, a plain
    Linear head uses a fused backward (`_FusedHeadLogProbs`); other heads are checkpointed per chunk.
    `entropy_grad=False` returns the entropy detached (logging only), which keeps the fused path.
    """
    decoder, head, config = _decoder_and_head(model)
    if position_ids is None and attention_mask is not None:
        # Positions count real tokens only, so left and right padding give the same log-probs.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if decoder in _COMPILED_DECODERS:
        with torch._dynamo.config.patch(recompile_limit=COMPILE_SHAPES):
            hidden = _decoder_hidden_compiled()(decoder, input_ids, attention_mask, position_ids)  # (B, T, H)
    else:
        hidden = _decoder_hidden(decoder, input_ids, attention_mask, position_ids)  # (B, T, H)
    B, T, H = hidden.shape
    flat_h, flat_y = hidden.reshape(B * T, H), labels.reshape(B * T)
    transform = _final_logit_transform(config, temperature)
    chunk_tokens = chunk_tokens or default_chunk_tokens(head.weight.shape[0])
    grad = torch.is_grad_enabled() and (flat_h.requires_grad or head.weight.requires_grad)
    if grad and _fusable(head, config) and not (return_token_entropy and entropy_grad):
        lp, ent = _FusedHeadLogProbs.apply(flat_h, head.weight, flat_y, 1.0 / temperature, chunk_tokens,
                                           return_token_entropy, _head_dtype(flat_h, head.weight))
        result = {"log_probs": lp.view(B, T)}
        if return_token_entropy:
            result["token_entropy"] = ent.view(B, T)
        if return_hidden:
            result["hidden"] = hidden
        return result
    logps, ents = [], []
    for s in range(0, B * T, chunk_tokens):
        args = (head, transform, flat_h[s : s + chunk_tokens], flat_y[s : s + chunk_tokens], return_token_entropy)
        if torch.is_grad_enabled() and flat_h.requires_grad:
            lp, ent = checkpoint(_chunk_logps, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logps(*args)
        logps.append(lp)
        if return_token_entropy:
            ents.append(ent)
    result = {"log_probs": torch.cat(logps).view(B, T)}
    if return_token_entropy:
        result["token_entropy"] = torch.cat(ents).view(B, T)
    if return_hidden:  # PPO: a value head on the same forward
        result["hidden"] = hidden
    return result


class Packing:
    """Where the real tokens of a right-padded (B, T) batch go when packed padding-free: each row's real
    tokens (attention_mask == 1, a prefix of the row) are placed (`data.first_fit_decreasing`) into rows of at
    most `pack_len` tokens (default: the batch's width, so a packed row attends over no more than a
    padded one), with position_ids (R, W) restarting per sequence (transformers masks attention
    block-diagonally; flash_attention_2 runs variable-length kernels). `pack` moves a (B, T, ...) tensor
    into the (R, W, ...) rows, `unpack` moves results back, zeros on padding; gradients flow through both."""

    def __init__(self, attention_mask: torch.Tensor, pack_len: int | None = None):
        B, T = attention_mask.shape
        lengths = attention_mask.sum(-1).tolist()
        rows = first_fit_decreasing(lengths, pack_len or T)
        width = max(sum(lengths[b] for b in row) for row in rows)
        src_b, src_t, dst_r, dst_t = [], [], [], []
        pos = torch.zeros(len(rows), width, dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for b in members:
                n = lengths[b]
                src_b += [b] * n
                src_t += range(n)
                dst_r += [r] * n
                dst_t += range(at, at + n)
                pos[r, at : at + n] = torch.arange(n)
                at += n
            pos[r, at:] = torch.arange(width - at)  # the padding tail: a segment of its own, scattered nowhere
        dev = attention_mask.device
        self.padded, self.packed = (B, T), (len(rows), width)
        self.src = (torch.tensor(src_b, device=dev, dtype=torch.long), torch.tensor(src_t, device=dev, dtype=torch.long))
        self.dst = (torch.tensor(dst_r, device=dev, dtype=torch.long), torch.tensor(dst_t, device=dev, dtype=torch.long))
        self.position_ids = pos.to(dev)  # (R, W)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (R, W, ...), zeros after each row's last sequence."""
        return x.new_zeros(*self.packed, *x.shape[2:]).index_put(self.dst, x[self.src])

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """(R, W, ...) -> (B, T, ...), zeros on padding."""
        return y.new_zeros(*self.padded, *y.shape[2:]).index_put(self.src, y[self.dst])


def packed_response_log_probs(model, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                              pack_len: int | None = None, **kw) -> dict[str, torch.Tensor]:
    """`get_response_log_probs` of a right-padded batch without computing its padding (`Packing`): the
    results (hidden states too, with return_hidden) are put back at their (B, T) places, zeros on padding,
    so every caller's masks and losses stay as they are; gradients flow through."""
    p = Packing(attention_mask, pack_len)
    out = get_response_log_probs(model, p.pack(input_ids), p.pack(labels), position_ids=p.position_ids, **kw)
    return {k: p.unpack(v) for k, v in out.items()}


def batch_log_probs(model, batch: dict, packed: bool = False, **kw) -> dict[str, torch.Tensor]:
    """`get_response_log_probs` of a right-padded batch dict (input_ids, labels, attention_mask), padded or,
    with `packed`, padding-free (`packed_response_log_probs`); the same (B, T) results either way."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    if packed:
        return packed_response_log_probs(model, ids, labels, mask, **kw)
    return get_response_log_probs(model, ids, labels, attention_mask=mask, **kw)


def naive_response_log_probs(model, input_ids, labels, attention_mask=None, position_ids=None) -> torch.Tensor:
    """The straightforward reference: full logits, full fp32 log-softmax, gather. (B, T)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None]).squeeze(-1)
