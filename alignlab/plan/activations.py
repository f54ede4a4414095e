"""Activation memory of one training forward, derived from the architecture (no torch).

The forward of each decoder layer is written out op by op below, as transformers 5 runs it
(`modeling_{gemma3,qwen2,qwen3,llama}.py`, `integrations/sdpa_attention.py`, peft's
`lora.Linear.forward`), and a tiny symbolic autograd decides which tensors are *saved for
backward*, with the same rules as PyTorch's derivative formulas:

    linear  saves its input if the weight trains, the weight (or its autocast copy) if the input
            needs a gradient;   mul  saves each operand the other one needs;   pow  saves its
            input;   rsqrt  saves its output;   silu/gelu  save their input;   sdpa  saves q, k,
            v, the output and the log-sum-exp;   dropout  saves its mask (bool on CUDA, a noise
            tensor of the input dtype on CPU/MPS);   add, casts, views  save nothing.

A tensor is memory only while something holds it; after the forward the live set is exactly
the saved set (plus the loss-head tensors, modelled in ``memory.py``). Each saved tensor is a
per-token size (elements x bytes) tagged with the term it belongs to, so the planner prints the
formula per term instead of one opaque number. Casts follow torch autocast (linear inputs and
weights cast to the half dtype; norms, softmax and the loss kept in fp32) and the model's own
upcasts (RMSNorm computes in fp32; the loss upcasts logits to fp32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .arch import Arch

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "bool": 1, "int64": 8}


def promote(a: str, b: str) -> str:
    if a == b:
        return a
    if "fp32" in (a, b):
        return "fp32"
    return a  # bf16 x fp16 does not happen in these models


@dataclass(eq=False)
class Sym:
    """A symbolic activation: ``numel`` elements per token of ``dtype``; ``rg`` = requires grad."""

    numel: float
    dtype: str
    rg: bool

    @property
    def nbytes(self) -> float:
        return self.numel * BYTES[self.dtype]


@dataclass
class Ctx:
    """How a layer runs: which weights train, dtypes, device, LoRA, attention masks."""

    device: str  # cuda | cpu | mps
    autocast: str | None  # bf16 | fp16 | None
    weight_dtype: str  # storage dtype of the (base) weights: fp32 | bf16 | fp16 | nf4
    full: bool  # all base weights train (full fine-tuning)
    lora_targets: frozenset[str] = frozenset()
    lora_dtype: str = "fp32"
    lora_dropout: float = 0.0
    lora_r: int = 8
    masked: dict[str, bool] = field(default_factory=dict)  # layer type -> attention mask present
    attn_impl: str = "sdpa"  # sdpa | flash_attention_2
    seq_len: int = 0  # needed for the additive float mask SDPA builds from a boolean one


@dataclass
class Tape:
    """Saved tensors of one layer (or of the head): per-token bytes by term, plus fixed bytes."""

    ctx: Ctx
    per_token: dict[str, float] = field(default_factory=dict)
    fixed: dict[str, float] = field(default_factory=dict)
    _seen: dict[int, Sym] = field(default_factory=dict)  # holds the objects so ids stay unique

    # -- bookkeeping -----------------------------------------------------------------------------
    def save(self, t: Sym, term: str) -> None:
        if id(t) in self._seen:
            return
        self._seen[id(t)] = t
        self.per_token[term] = self.per_token.get(term, 0.0) + t.nbytes

    def save_fixed(self, nbytes: float, term: str) -> None:
        self.fixed[term] = self.fixed.get(term, 0.0) + nbytes

    @property
    def bytes_per_token(self) -> float:
        return sum(self.per_token.values())

    # -- ops -------------------------------------------------------------------------------------
    @staticmethod
    def cast(x: Sym, dtype: str) -> Sym:
        return x if x.dtype == dtype else Sym(x.numel, dtype, x.rg)

    def mul(self, a: Sym, b: Sym, term: str) -> Sym:
        if b.rg:
            self.save(a, term)
        if a.rg:
            self.save(b, term)
        return Sym(max(a.numel, b.numel), promote(a.dtype, b.dtype), a.rg or b.rg)

    def add(self, a: Sym, b: Sym) -> Sym:
        return Sym(max(a.numel, b.numel), promote(a.dtype, b.dtype), a.rg or b.rg)

    def act(self, x: Sym, term: str) -> Sym:
        if x.rg:
            self.save(x, term)
        return Sym(x.numel, x.dtype, x.rg)

    def dropout(self, x: Sym, p: float, term: str) -> Sym:
        if p <= 0:
            return x
        if x.rg:
            if self.ctx.device == "cuda":  # native_dropout: bool mask
                self.save(Sym(x.numel, "bool", False), term)
            else:  # CPU/MPS: noise tensor of the input dtype, out = x * noise
                self.save(Sym(x.numel, x.dtype, False), term)
        return Sym(x.numel, x.dtype, x.rg)

    def dense(self, x: Sym, d_in: int, d_out: int, w_dtype: str, w_trains: bool, term: str,
              weight_term: str = "autocast weight copies") -> Sym:
        """``F.linear`` with a dense weight (autocast casts both input and weight)."""
        ac = self.ctx.autocast
        if ac is not None:
            xc = self.cast(x, ac)
            if w_dtype != ac and x.rg:  # the cast weight is saved for grad(input)
                self.save_fixed(d_in * d_out * BYTES[ac], weight_term)
            out_dtype = ac
        else:
            xc = x
            out_dtype = promote(x.dtype, w_dtype)
        if w_trains:
            self.save(xc, term)
        return Sym(d_out, out_dtype, x.rg or w_trains)

    def linear(self, x: Sym, name: str, d_in: int, d_out: int, term: str) -> Sym:
        """A base projection, 4-bit or dense, plus its LoRA branch when targeted (peft)."""
        c = self.ctx
        if c.weight_dtype == "nf4":
            # bnb Linear4bit: x.to(compute_dtype) (a copy per projection when x is fp32), MatMul4Bit keeps
            # that input in ctx.tensors whenever it needs a gradient; the output is cast back to x's dtype
            xc = self.cast(x, c.autocast or "bf16")
            if x.rg:
                self.save(xc, term)
            out = Sym(d_out, x.dtype, x.rg)
        else:
            out = self.dense(x, d_in, d_out, c.weight_dtype, c.full, term)
        if name not in c.lora_targets:
            return out
        # peft's _cast_input_dtype(x, lora_A.weight.dtype), which alignlab skips under autocast
        # (models.skip_lora_input_cast_under_autocast): lora_A then reads, and saves, x itself
        xl = x if c.autocast is not None else self.cast(x, c.lora_dtype)
        d = self.dropout(xl, c.lora_dropout, "LoRA dropout masks")
        a = self.dense(d, d_in, c.lora_r, c.lora_dtype, True, "LoRA inputs (x into lora_A)", "autocast LoRA copies")
        b = self.dense(a, c.lora_r, d_out, c.lora_dtype, True, "LoRA rank-r activations", "autocast LoRA copies")
        s = Sym(b.numel, b.dtype, True)  # * scaling: saves nothing (python float)
        res = self.add(out, s)
        return self.cast(res, out.dtype)  # result.to(torch_result_dtype)

    def rmsnorm(self, x: Sym, dim: int, rows: float, w_trains: bool, gemma: bool, term: str,
                input_term: str | None = None) -> Sym:
        """Llama/Qwen ``weight * (x.float() * rsqrt(mean(x^2)+eps)).to(dtype)`` or Gemma's
        ``(x.float() * rsqrt(...) * (1 + weight.float())).type_as(x)``."""
        x32 = self.cast(x, "fp32")
        if x32.rg:  # pow saves its input (the fp32 upcast, or x itself when x is fp32)
            self.save(x32, term if x32 is not x else (input_term or term))
            self.save(Sym(rows, "fp32", True), term)  # rsqrt saves its output (one per row)
        h = Sym(x.numel, "fp32", x32.rg)
        wdt = rest_dtype(self.ctx)
        if gemma:
            if h.rg:  # 1 + weight.float(): dim elements, saved for grad(h)
                self.save_fixed(dim * 4, term)
            if w_trains:
                self.save(h, term)
            out = Sym(x.numel, "fp32", h.rg or w_trains)
            return self.cast(out, x.dtype)
        hc = self.cast(h, x.dtype)
        if w_trains:
            self.save(hc, term)
        return Sym(x.numel, promote(wdt, hc.dtype), hc.rg or w_trains)

    def rope(self, x: Sym, cos_dtype: str) -> Sym:
        # q * cos + rotate_half(q) * sin: saves cos/sin (shared, counted once per model), not q
        return Sym(x.numel, promote(x.dtype, cos_dtype), x.rg)

    def attention(self, q: Sym, k: Sym, v: Sym, arch: Arch, masked: bool, term: str) -> Sym:
        c = self.ctx
        if masked and arch.kv_heads < arch.heads and c.attn_impl == "sdpa":
            # a mask disables SDPA's native GQA: transformers repeat_kv materialises k, v per head
            k = Sym(arch.q_dim, k.dtype, k.rg)
            v = Sym(arch.q_dim, v.dtype, v.rg)
        if c.autocast is not None:
            q, k, v = (self.cast(t, c.autocast) for t in (q, k, v))
        rg = q.rg or k.rg or v.rg
        out = Sym(arch.q_dim, q.dtype, rg)
        if rg:
            for t in (q, k, v, out):
                self.save(t, term)
            self.save(Sym(arch.heads, "fp32", False), term)  # log-sum-exp per head
            if masked and c.attn_impl == "sdpa":
                # SDPA turns the boolean mask into an additive one of the query dtype, (B, 1, T, T),
                # and the kernel keeps it for backward: T elements per token, in every masked layer
                self.save(Sym(c.seq_len, q.dtype, False), MASK)
        return out


def rest_dtype(ctx: Ctx) -> str:
    """dtype of the weights that are not projections (embedding, norms, head). With a 4-bit base,
    alignlab keeps them in the compute dtype (it does not call peft's ``prepare_model_for_kbit_training``,
    which would upcast them, and with them the residual stream, to fp32)."""
    return (ctx.autocast or "bf16") if ctx.weight_dtype == "nf4" else ctx.weight_dtype


# ------------------------------------------------------------------------------------------------
# The decoder layer, the embedding and the final norm
# ------------------------------------------------------------------------------------------------

ATTN = "attention: projections, q/k norm, rope, sdpa q/k/v/out/lse"
MLP = "MLP: gate, up, activation, product"
NORM = "norms: normalised x (fp32), rsqrt, scaled output"
RESID = "residual stream (saved by the next norm)"
MASK = "attention: additive float mask (B x T x T per masked layer)"


def embed(arch: Arch, ctx: Ctx, input_requires_grad: bool) -> Sym:
    """Embedding output (Gemma multiplies by sqrt(hidden): a new tensor, nothing saved)."""
    wdt = rest_dtype(ctx)
    return Sym(arch.hidden, wdt, ctx.full or input_requires_grad)


def layer(arch: Arch, ctx: Ctx, x: Sym, layer_type: str) -> tuple[Sym, Tape]:
    """One decoder layer's forward; returns its output and the tape of what it saved."""
    t = Tape(ctx)
    H, I, g = arch.hidden, arch.intermediate, arch.gemma
    wt = ctx.full  # base weights (and norm scales) train only in full fine-tuning
    cos_dtype = embed(arch, ctx, False).dtype
    residual = x
    h = t.rmsnorm(x, H, 1, wt, g, NORM, RESID)
    q = t.linear(h, "q_proj", H, arch.q_dim, ATTN)
    k = t.linear(h, "k_proj", H, arch.kv_dim, ATTN)
    v = t.linear(h, "v_proj", H, arch.kv_dim, ATTN)
    if arch.qk_norm:
        q = t.rmsnorm(q, arch.head_dim, arch.heads, wt, g, ATTN)
        k = t.rmsnorm(k, arch.head_dim, arch.kv_heads, wt, g, ATTN)
    q, k = t.rope(q, cos_dtype), t.rope(k, cos_dtype)
    o = t.attention(q, k, v, arch, ctx.masked.get(layer_type, False), ATTN)
    a = t.linear(o, "o_proj", arch.q_dim, H, ATTN)
    if arch.sandwich_norm:
        a = t.rmsnorm(a, H, 1, wt, g, NORM, ATTN)
    x = t.add(residual, a)
    residual = x
    h = t.rmsnorm(x, H, 1, wt, g, NORM, RESID)
    gate = t.linear(h, "gate_proj", H, I, MLP)
    up = t.linear(h, "up_proj", H, I, MLP)
    m = t.mul(t.act(gate, MLP), up, MLP)
    d = t.linear(m, "down_proj", I, H, MLP)
    if arch.sandwich_norm:
        d = t.rmsnorm(d, H, 1, wt, g, NORM, MLP)
    x = t.add(residual, d)
    return x, t


def final_norm(arch: Arch, ctx: Ctx, x: Sym) -> tuple[Sym, Tape]:
    t = Tape(ctx)
    out = t.rmsnorm(x, arch.hidden, 1, ctx.full, arch.gemma, NORM, RESID)
    return out, t


def forward_tapes(arch: Arch, ctx: Ctx, input_requires_grad: bool = False) -> tuple[Sym, list[Tape], Tape]:
    """Run the symbolic forward through every layer: (final hidden, per-layer tapes, final-norm tape)."""
    x = embed(arch, ctx, input_requires_grad)
    tapes = []
    for lt in arch.layer_types:
        x, tape = layer(arch, ctx, x, lt)
        tapes.append(tape)
    h, tfin = final_norm(arch, ctx, x)
    return h, tapes, tfin
