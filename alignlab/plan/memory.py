"""Training memory by term and by phase (no torch).

Every quantity is in bytes. A *term* is one named allocation with its formula (weights,
gradients, optimizer states, activations per layer, logits, KV cache, ...). A *phase* is a
moment of the step (forward at the loss, each stage of backward, the optimizer step, the RL
rollout, ...); its live memory is the sum of the terms alive then. The peak is the largest
phase, never the sum of all terms.

Assumptions, shared with the measured step in ``measure.py`` and stated in docs/planner.md:
the loop keeps only the loss of a forward (not the output object with its logits); AdamW's
``zero_grad(set_to_none=True)`` frees gradients after each optimizer step; SDPA attention
(``attn_implementation="sdpa"``); ``use_cache=False`` in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

from .activations import BYTES, Ctx, Sym, Tape, forward_tapes
from .arch import Arch, PlanError

GiB = 1024**3
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OPTIMIZERS = ("adamw", "adamw_8bit", "sgd")
OPTIM_IMPLS = ("auto", "for-loop", "foreach", "fused")


@dataclass
class Setup:
    """One training configuration to estimate."""

    method: str = "lora"  # full | lora | qlora
    task: str = "sft"  # sft | dpo | grpo | ppo
    device: str = "cuda"  # cuda | cpu | mps
    precision: str = "bf16"  # compute: fp32 | bf16 | fp16 (half = autocast unless weights are half)
    weight_dtype: str = "auto"  # storage of the (base) weights: auto | fp32 | bf16 | fp16
    master_weights: bool = False  # keep an fp32 copy of half weights in the optimizer (full FT)
    optimizer: str = "adamw"
    optim_impl: str = "auto"
    micro_batch: int = 1  # sequences per forward/backward (DPO: pairs)
    seq_len: int = 1024  # tokens per sequence (RL: prompt + completion)
    grad_accum: int = 1
    grad_ckpt: bool = False
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ALL_LINEAR
    double_quant: bool = True
    loss_impl: str = "chunked"  # chunked (alignlab logprobs) | full (HF labels= / full log-softmax)
    chunk_tokens: int = 1024
    padded: bool = True  # batches carry padding -> an attention mask is materialised
    attn_impl: str = "sdpa"
    # RL / preference
    prompt_len: int = 256
    gen_len: int = 768
    rollout_batch: int = 64  # sequences generated at once
    ref_model: bool = True  # DPO/GRPO/PPO: a reference policy for the KL / the DPO ratio
    ref_precomputed: bool = False  # DPO: reference log-probs computed before training
    value_model: bool = True  # PPO: a separate value model of the same architecture
    reward_model: bool = False  # PPO/GRPO: a learned reward model of the same architecture
    rollout_backend: str = "hf"  # hf: generate() in the training process | vllm: a colocated vLLM engine
    vllm_engine_bytes: float = 0.0  # vllm: the engine's reservation (gpu_memory_utilization x device memory)
    vllm_sleep: bool = False  # vllm: the engine frees its memory while the policy trains (sleep level 2)
    gpus: int = 1  # data-parallel devices; micro_batch and grad_accum are per device (plan/parallel.py)
    strategy: str = "ddp"  # ddp | fsdp2 (alignlab parallel.strategy)

    def validate(self) -> None:
        _choice("method", self.method, ("full", "lora", "qlora"))
        _choice("task", self.task, ("sft", "dpo", "grpo", "ppo"))
        _choice("device", self.device, ("cuda", "cpu", "mps"))
        _choice("precision", self.precision, ("fp32", "bf16", "fp16"))
        _choice("weight_dtype", self.weight_dtype, ("auto", "fp32", "bf16", "fp16"))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("optim_impl", self.optim_impl, OPTIM_IMPLS)
        _choice("loss_impl", self.loss_impl, ("chunked", "full"))
        _choice("attn_impl", self.attn_impl, ("sdpa", "flash_attention_2"))
        _choice("rollout_backend", self.rollout_backend, ("hf", "vllm"))
        if self.rollout_backend == "vllm" and self.device != "cuda":
            raise PlanError("--rollout-backend vllm plans a CUDA device; use the hf backend on this device")
        if self.micro_batch < 1 or self.seq_len < 1 or self.grad_accum < 1:
            raise PlanError("micro_batch, seq_len and grad_accum must be >= 1")
        if self.method == "qlora" and self.device != "cuda":
            raise PlanError("QLoRA (bitsandbytes NF4) runs on CUDA only; use --method lora on this device")
        if self.optimizer == "adamw_8bit" and self.device != "cuda":
            raise PlanError("8-bit AdamW (bitsandbytes) runs on CUDA only; use --optimizer adamw")
        from .parallel import validate

        validate(self)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise PlanError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


@dataclass
class Term:
    key: str
    label: str
    bytes: float
    formula: str
    kind: str  # persistent | activation | transient

    def as_dict(self) -> dict:
        d = asdict(self)
        d["gib"] = self.bytes / GiB
        return d


@dataclass
class Phase:
    name: str
    parts: dict[str, float]  # term key -> bytes alive in this phase

    @property
    def total(self) -> float:
        return sum(self.parts.values())


@dataclass
class Estimate:
    setup: Setup
    terms: dict[str, Term] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)
    per_layer_token_bytes: dict[str, float] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)

    @property
    def peak(self) -> float:
        return self.peak_phase.total

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    def peak_of(self, prefix: str) -> float:
        """Largest total among phases whose name starts with ``prefix`` (e.g. 'backward')."""
        vals = [p.total for p in self.phases if p.name.startswith(prefix)]
        return max(vals) if vals else 0.0


# ----------------------------------------------------------------------------------------------
# Resolution of dtypes and implementations
# ----------------------------------------------------------------------------------------------


def resolve_dtypes(s: Setup) -> dict[str, str]:
    """Weight storage, autocast and trainable-parameter dtypes, as alignlab.models.pick_precision does."""
    half = None if s.precision == "fp32" else s.precision
    if s.method == "qlora":
        wd = "nf4"
    elif s.weight_dtype != "auto":
        wd = s.weight_dtype
    else:  # full FT keeps fp32 (master) weights under autocast; a frozen LoRA base is stored in half
        wd = half if (s.method == "lora" and half) else "fp32"
    if wd in ("bf16", "fp16") and half and wd != half:
        raise PlanError(f"weights stored in {wd} but compute precision is {half}; use the same half type")
    # autocast runs when compute is half, except for pure half-precision full fine-tuning (nothing to cast)
    autocast = None if half is None or (wd == half and s.method == "full") else half
    if s.method == "full":
        train_dtype = wd
    else:  # peft autocast_adapter_dtype: adapters in fp32 over a half base
        train_dtype = "fp32"
    if s.method == "full" and wd in ("bf16", "fp16"):
        compute = wd
    else:
        compute = autocast or (wd if wd != "nf4" else "bf16")
    impl = s.optim_impl
    if impl == "auto":
        impl = "fused" if s.device == "cuda" else "for-loop"  # as optim.build: fused AdamW on CUDA
    return {"weights": wd, "autocast": autocast or "none", "trainable": train_dtype, "compute": compute,
            "optim_impl": impl}


def _nf4_bytes_per_param(double_quant: bool) -> float:
    """bitsandbytes NF4, blocksize 64: 4-bit codes + one absmax per block; with double
    quantisation the absmax are 8-bit with one fp32 absmax per 256 of them (plus a 256-entry code)."""
    if double_quant:
        return 0.5 + 1 / 64 + 4 / (64 * 256)
    return 0.5 + 4 / 64


@lru_cache(maxsize=256)
def _tapes(arch: Arch, ctx_key: tuple) -> tuple[list[tuple[dict, dict]], tuple[dict, dict], str]:
    (device, autocast, wd, full, targets, ldt, drop, r, masked, attn, in_rg, seq_len) = ctx_key
    ctx = Ctx(device=device, autocast=autocast, weight_dtype=wd, full=full, lora_targets=frozenset(targets),
              lora_dtype=ldt, lora_dropout=drop, lora_r=r, masked=dict(masked), attn_impl=attn, seq_len=seq_len)
    h, tapes, tfin = forward_tapes(arch, ctx, input_requires_grad=in_rg)
    return [(t.per_token, t.fixed) for t in tapes], (tfin.per_token, tfin.fixed), h.dtype


def mask_layout(arch: Arch, s: Setup, seq_len: int) -> dict[str, bool]:
    """Layer type -> whether SDPA gets an explicit mask (padding, or a sliding window shorter than the sequence)."""
    out = {}
    for lt in set(arch.layer_types):
        window = arch.sliding_window if lt == "sliding_attention" else None
        out[lt] = s.attn_impl == "sdpa" and (s.padded or (window is not None and seq_len > window))
    return out


# ----------------------------------------------------------------------------------------------
# The estimate
# ----------------------------------------------------------------------------------------------


def estimate(arch: Arch, s: Setup) -> Estimate:
    s.validate()
    dt = resolve_dtypes(s)
    wd, ac, trd, comp = dt["weights"], (None if dt["autocast"] == "none" else dt["autocast"]), dt["trainable"], dt["compute"]
    a_c = BYTES[comp]
    est = Estimate(setup=s, resolved=dict(dt))
    T = s.seq_len if s.task in ("sft", "dpo") else s.prompt_len + s.gen_len
    pc = arch.param_counts()
    P = pc["total"]
    P_lin = sum(x.d_in * x.d_out for x in arch.linears()) * arch.layers  # projection matrices: what bnb quantises
    full = s.method == "full"
    targets = tuple(arch.resolve_targets(list(s.lora_targets))) if not full else ()
    lora = arch.lora_params(s.lora_r, list(targets)) if not full else {"total": 0}
    P_train = P if full else lora["total"]
    est.params = {**pc, "trainable": P_train, **({f"lora_{k}": v for k, v in lora.items()} if not full else {})}
    terms = est.terms

    def term(key, label, nbytes, formula, kind):
        terms[key] = Term(key, label, float(nbytes), formula, kind)

    # -- persistent state ---------------------------------------------------------------------------
    if wd == "nf4":
        nf4 = _nf4_bytes_per_param(s.double_quant)
        rest = P - P_lin
        # what is not quantised (embedding, norms, head) stays in the compute dtype (models.apply_lora)
        rb = BYTES[dt["compute"]]
        term("weights", f"weights (NF4 projections + {dt['compute']} embeddings/norms)",
             P_lin * nf4 + rest * rb,
             f"{P_lin:,} quantised x {nf4:.4f} B (4-bit + absmax{' double-quantised' if s.double_quant else ''})"
             f" + {rest:,} x {rb} B", "persistent")
    else:
        term("weights", f"weights ({wd})", P * BYTES[wd], f"{P:,} params x {BYTES[wd]} B", "persistent")
    if not full:
        term("lora_weights", "LoRA adapter weights (fp32)", P_train * 4,
             f"{P_train:,} = r x (in + out) per target x layers; x 4 B", "persistent")
    if s.master_weights and full and wd in ("bf16", "fp16"):
        term("master", "fp32 master weights", P_train * 4, f"{P_train:,} x 4 B", "persistent")
    g_bytes = BYTES[trd]
    term("grads", f"gradients ({trd})", P_train * g_bytes, f"{P_train:,} trainable x {g_bytes} B", "persistent")
    n_tensors = _n_param_tensors(arch, full, targets)
    state_dtype = "fp32" if (s.master_weights and full) else trd
    if s.optimizer == "adamw":
        sb = 2 * BYTES[state_dtype]
        opt_bytes = P_train * sb + (n_tensors * 4 if s.device == "cpu" or dt["optim_impl"] == "fused" else 0)
        formula = f"2 states (exp_avg, exp_avg_sq) x {P_train:,} x {BYTES[state_dtype]} B ({state_dtype}, the parameter dtype)"
    elif s.optimizer == "adamw_8bit":
        big, small = _split_8bit(arch, full, targets, s.lora_r)
        opt_bytes = big * 2 * (1 + 4 / 256) + small * 8
        formula = f"{big:,} x 2 x (1 B + fp32 absmax per 256) + {small:,} small-tensor params x 8 B (kept 32-bit)"
    else:
        opt_bytes = P_train * BYTES[state_dtype]
        formula = f"momentum: {P_train:,} x {BYTES[state_dtype]} B"
    term("optimizer", f"optimizer states ({s.optimizer})", opt_bytes, formula, "persistent")

    # -- one micro-batch of training --------------------------------------------------------------------
    seqs = s.micro_batch * (2 if s.task == "dpo" else 1)
    N = seqs * T
    term("batch", "batch tensors (input_ids, labels, masks)", N * 8 * 3, f"{N:,} tokens x 8 B x 3", "activation")
    masked = mask_layout(arch, s, T)
    in_rg = (not full) and s.grad_ckpt  # enable_input_require_grads for LoRA + checkpointing
    ctx_key = (s.device, ac, wd, full, targets, "fp32", float(s.lora_dropout), int(s.lora_r),
               tuple(sorted(masked.items())), s.attn_impl, in_rg, T if any(masked.values()) else 0)
    layer_tapes, (fin_pt, fin_fx), h_dtype = _tapes(arch, ctx_key)
    per_layer = [sum(pt.values()) * N + sum(fx.values()) for pt, fx in layer_tapes]
    by_term: dict[str, float] = {}
    for pt, _fx in layer_tapes:
        for k, v in pt.items():
            by_term[k] = by_term.get(k, 0.0) + v / arch.layers
    est.per_layer_token_bytes = by_term
    fixed_layers = sum(sum(fx.values()) for _pt, fx in layer_tapes)
    A_layers = sum(per_layer)
    resid_bytes = BYTES[h_dtype]
    if s.grad_ckpt:
        # non-reentrant checkpoint per decoder layer keeps only each layer's input hidden states
        A_kept = arch.layers * N * arch.hidden * resid_bytes
        term("act_layers", "activations: checkpointed layer inputs", A_kept,
             f"{arch.layers} layers x {N:,} tokens x hidden {arch.hidden} x {resid_bytes} B", "activation")
        recompute = max(per_layer)
        term("act_recompute", "activations: one layer recomputed in backward", recompute,
             f"{N:,} tokens x {max(sum(pt.values()) for pt, _ in layer_tapes):,.0f} B/token (see per-layer terms)",
             "transient")
    else:
        per_tok = sum(by_term.values())
        term("act_layers", "activations: decoder layers (saved for backward)", A_layers,
             f"{arch.layers} layers x {N:,} tokens x {per_tok:,.0f} B/token (+{fixed_layers:,.0f} B fixed)",
             "activation")
    fin = sum(fin_pt.values()) * N + sum(fin_fx.values())
    term("act_final_norm", "activations: final norm", fin, f"{N:,} x {sum(fin_pt.values()):,.0f} B/token", "activation")
    n_rope = len(set(arch.layer_types)) if arch.gemma else 1
    cos_b = BYTES[h_dtype]
    rope_b = n_rope * 2 * T * arch.head_dim * cos_b
    mask_b = sum((seqs if s.padded else 1) * T * T for lt, m in masked.items() if m)
    term("rope_mask", "rope cos/sin and attention masks", rope_b + mask_b,
         f"{n_rope} x 2 x {T} x {arch.head_dim} x {cos_b} B"
         + (f" + bool masks {'B x ' if s.padded else ''}T x T per masked layer type" if mask_b else ""), "activation")

    # -- loss head --------------------------------------------------------------------------------------
    V, H = arch.vocab, arch.hidden
    head_trains = full or ("lm_head" in targets)
    hfin = Sym(H, h_dtype, True)  # final norm output
    head_wd = dt["compute"] if wd == "nf4" else wd
    ht = Tape(Ctx(device=s.device, autocast=ac, weight_dtype=head_wd, full=full))
    logits = ht.dense(hfin, H, V, head_wd, head_trains, "LM head input")
    a_l = BYTES[logits.dtype]
    head_in = ht.bytes_per_token * N
    head_wcopy = sum(ht.fixed.values())  # autocast copy of the head weight, alive until backward
    if s.loss_impl == "full":
        saved_head = head_in + N * V * 4  # + log_softmax output (fp32)
        term("act_head", "activations: LM head input + log-softmax (fp32)", saved_head + head_wcopy,
             f"{N:,} x ({ht.bytes_per_token:,.0f} + vocab {V:,} x 4 B)" + (" + autocast head weight copy" if head_wcopy else ""),
             "activation")
        # the final hidden states stay referenced by the model's forward while the loss is computed
        local_h = 0 if head_in else N * H * BYTES[hfin.dtype]
        term("logits", "logits (+ fp32 upcast) at the loss", N * V * a_l + (N * V * 4 if a_l != 4 else 0) + local_h,
             f"{seqs} x {T} x vocab {V:,} x {a_l} B" + (" + same x 4 B fp32 copy" if a_l != 4 else "")
             + (" + final hidden states" if local_h else ""), "transient")
    else:
        c = min(s.chunk_tokens, N)
        saved_head = N * H * resid_bytes  # checkpoint keeps the final hidden states (views of one tensor)
        term("act_head", "activations: final hidden states kept for the chunked LM head", saved_head,
             f"{N:,} x {H} x {resid_bytes} B", "activation")
        # one chunk: logits (dtype of the head) -> fp32 copy -> fp32 log-softmax; the head's output is
        # freed once upcast, so at most two chunk-sized tensors live at once
        fwd_chunk = max(c * V * a_l + c * V * 4, 2 * c * V * 4) + head_wcopy
        term("logits", f"logits of one {c}-token chunk (+ fp32 log-softmax)", fwd_chunk,
             f"max({c} x vocab {V:,} x ({a_l} + 4) B, 2 x {c} x vocab x 4 B)"
             + (" + head weight copy" if head_wcopy else ""), "transient")

    # -- backward working set ------------------------------------------------------------------------------
    nV4 = N * V * 4
    head_grad = (V * H * g_bytes) if head_trains else 0
    grad_h = N * H * a_c
    if s.loss_impl == "full":
        # (1) nll/log-softmax backward: grad log-softmax + grad logits (fp32) while log-softmax lives;
        # (2) LM head matmul: log-softmax freed, grad logits (logits dtype) + head weight grad + grad hidden
        head_w_half = V * H * a_l if (head_trains and ac is not None and g_bytes != a_l) else 0
        bwd_head = max(2 * nV4, N * V * a_l - nV4 + head_grad + head_w_half + grad_h)
        bwd_head_detail = (f"max(2 x {N:,} x vocab x 4 B [grad log-softmax, grad logits], "
                           f"grad logits + head weight grad {head_grad:,.0f} B + grad hidden - freed log-softmax)")
    else:
        c = min(s.chunk_tokens, N)
        cV4 = c * V * 4
        # recomputed chunk: log-softmax (saved) + grad of the gather + grad of the logits (fp32);
        # then the head matmul: grad logits (head dtype) + a new head-weight gradient, added to the
        # one accumulated over the earlier chunks
        fused = "lm_head" not in targets and not getattr(arch, "final_logit_softcapping", None)
        if fused:
            # alignlab's fused head backward (logprobs._FusedHeadLogProbs): grad of the hidden states, the
            # head weight cast once to the compute dtype, and an fp32 head-weight accumulator live
            # throughout; per chunk, the recomputed logits (compute dtype) and softmax (fp32), then the
            # grad of the logits (compute dtype) and that chunk's head-weight product (compute dtype) that
            # is added into the accumulator; the accumulator is cast to the weight dtype once at the end
            acc32 = V * H * 4 if head_trains else 0
            cast = V * H * g_bytes if (head_trains and g_bytes != 4) else 0
            chunk_w = V * H * a_c if (head_trains and a_c != 4) else 0  # fp32 adds in place (addmm_)
            bwd_head = N * H * a_c + head_wcopy + acc32 + max(2 * cV4 + c * V * a_c, c * V * a_c + chunk_w, cast)
            bwd_head_detail = (f"grad of the final hidden states + head weight in the compute dtype + fp32 "
                               f"head-weight accumulator + max(2 x {c} x vocab x 4 B [recomputed softmax] + "
                               f"grad logits, grad logits + one chunk's head-weight product) (fused backward)")
        else:
            acc = head_grad if N > c else 0
            # each chunk's head-weight gradient is summed out of place into the running sum: old + new + sum
            bwd_head = N * H * a_c + head_wcopy + max(acc + 3 * cV4, acc + c * V * a_l + head_grad + c * H * a_c,
                                                      3 * head_grad if N > c else 0)
            bwd_head_detail = (f"grad of the final hidden states + max(3 x {c} x vocab x 4 B [log-softmax, its grad, "
                               "grad logits], 3 x head-weight grad [running sum + new + their sum]) + accumulated head grad")
    term("bwd_head", "backward: loss/LM-head gradient buffers", bwd_head, bwd_head_detail, "transient")
    # MLP backward (first in a layer): grad of the product, then grads of act and up, while gate/up/act
    # are still saved and the product is already freed: +2 x N x intermediate; plus the residual grad
    mlp_tr = 2 * N * arch.intermediate * a_c + N * H * 4
    term("bwd_layer", "backward: one layer's gradient buffers", mlp_tr,
         f"2 x {N:,} x intermediate {arch.intermediate} x {a_c} B + {N:,} x hidden x 4 B", "transient")
    if wd == "nf4":
        big = max(x.d_in * x.d_out for x in arch.linears())
        term("dequant", "QLoRA: one dequantised projection", big * a_c, f"{big:,} x {a_c} B", "transient")

    # -- optimizer step working set --------------------------------------------------------------------------
    impl = dt["optim_impl"]
    largest = arch.largest_param() if full else max(s.lora_r * max(x.d_in, x.d_out) for x in arch.linears())
    if s.optimizer != "adamw" or impl == "fused":
        opt_tmp, opt_formula = 0.0, f"{s.optimizer} ({impl}): updates in place"
    elif impl == "foreach":
        opt_tmp = P_train * BYTES[state_dtype]
        opt_formula = f"foreach: sqrt(exp_avg_sq) for all {P_train:,} params x {BYTES[state_dtype]} B"
    else:
        opt_tmp = 2 * largest * BYTES[state_dtype]
        opt_formula = f"for-loop: 2 temporaries of the largest tensor ({largest:,} x {BYTES[state_dtype]} B)"
    if s.master_weights and full and wd in ("bf16", "fp16"):
        opt_tmp += largest * 4
        opt_formula += " + fp32 copy of one half gradient"
    term("opt_tmp", "optimizer step temporaries", opt_tmp, opt_formula, "transient")

    _sft_phases(est, arch, s, dict(
        per_layer=per_layer, grad_h=grad_h, head_grad=head_grad, N=N, resid=resid_bytes, P_train=P_train,
        g_bytes=g_bytes, full=full, in_rg=in_rg))
    if s.task in ("dpo", "grpo", "ppo"):
        _rl_terms_and_phases(est, arch, s, dt)
    if s.gpus > 1 or s.strategy == "fsdp2":  # one of several devices
        from .parallel import apply

        apply(est, arch, s)
    return est


def _n_param_tensors(arch: Arch, full: bool, targets: tuple[str, ...]) -> int:
    if not full:
        return 2 * len([t for t in targets if t not in ("embed_tokens", "lm_head")]) * arch.layers + 2 * len(
            [t for t in targets if t in ("embed_tokens", "lm_head")])
    per = 7 + sum(1 for x in arch.linears() if x.bias) + len(arch.norms_per_layer())
    return per * arch.layers + 2 + (0 if arch.tied else 1)


def _split_8bit(arch: Arch, full: bool, targets: tuple[str, ...], r: int) -> tuple[int, int]:
    """bitsandbytes keeps tensors smaller than 4096 elements in 32-bit states."""
    sizes: list[int] = []
    if full:
        for x in arch.linears():
            sizes += [x.d_in * x.d_out] * arch.layers + ([x.d_out] * arch.layers if x.bias else [])
        sizes += [d for _, d in arch.norms_per_layer()] * arch.layers + [arch.hidden, arch.vocab * arch.hidden]
        if not arch.tied:
            sizes.append(arch.vocab * arch.hidden)
    else:
        lin = {x.name: x for x in arch.linears()}
        for t in targets:
            if t in lin:
                sizes += [r * lin[t].d_in, r * lin[t].d_out] * arch.layers
            else:
                sizes += [r * arch.vocab, r * arch.hidden]
    big = sum(n for n in sizes if n >= 4096)
    return big, sum(sizes) - big


def _sft_phases(est: Estimate, arch: Arch, s: Setup, v: dict) -> None:
    """Forward, backward stages and the optimizer step of one micro-batch."""
    t = {k: x.bytes for k, x in est.terms.items()}
    persistent = {k: t[k] for k in ("weights", "lora_weights", "master", "optimizer") if k in t}
    accum = s.grad_accum > 1  # from the 2nd micro-step the full gradients are alive throughout
    G = t["grads"]
    base = dict(persistent, batch=t["batch"], rope_mask=t["rope_mask"])
    if accum:
        base["grads"] = G
    acts = dict(act_layers=t["act_layers"], act_final_norm=t["act_final_norm"], act_head=t["act_head"])
    phases = est.phases
    phases.append(Phase("forward (at the loss)", {**base, **acts, "logits": t["logits"]}))
    phases.append(Phase("backward: loss and LM head", {**base, **acts, "bwd_head": t["bwd_head"]}))
    per_layer, L = v["per_layer"], arch.layers
    g_layer = arch.params_per_layer()["total"] * v["g_bytes"] if v["full"] else v["P_train"] * v["g_bytes"] / L
    g_mlp = (arch.params_per_layer()["mlp"] * v["g_bytes"]) if v["full"] else g_layer
    worst: tuple[float, int, dict] | None = None
    for l in range(L - 1, -1, -1):
        if s.grad_ckpt:
            saved = {"act_layers": (l + 1) * t["act_layers"] / L, "act_recompute": per_layer[l]}
        else:
            saved = {"act_layers": sum(per_layer[: l + 1])}
        # the MLP runs first in a layer's backward: its weight grads appear while the layer's
        # activations are still saved; attention grads come after most of them are freed
        grads = {} if accum else {"grads": v["head_grad"] + (L - 1 - l) * g_layer + g_mlp}
        parts = {**base, **saved, **grads, "bwd_layer": t["bwd_layer"]}
        if "dequant" in t:
            parts["dequant"] = t["dequant"]
        tot = sum(parts.values())
        if worst is None or tot > worst[0]:
            worst = (tot, l, parts)
    assert worst is not None
    phases.append(Phase(f"backward: layer {worst[1]} (largest of the layer stages)", worst[2]))
    end = {**base, "grads": G, "grad_embedding_output": v["grad_h"]}
    if v["full"]:
        VHg = arch.vocab * arch.hidden * v["g_bytes"]
        # tied: the LM head's contribution waits in autograd's input buffer; the embedding's new
        # gradient is added to it out of place (buffer + new + sum; G counts one of them)
        n_extra = (2 if arch.tied else 0) + (1 if accum else 0)
        if n_extra:
            end["embedding grad buffers"] = n_extra * VHg
    phases.append(Phase("backward: embedding (end)", end))
    phases.append(Phase("optimizer step", {**persistent, "batch": t["batch"], "grads": G, "opt_tmp": t["opt_tmp"]}))


def _rl_terms_and_phases(est: Estimate, arch: Arch, s: Setup, dt: dict) -> None:
    """Reference / value / reward models, rollout generation with a KV cache, log-prob scoring."""
    t = est.terms
    comp = dt["compute"]
    a = BYTES[comp]
    P = est.params["total"]
    V = arch.vocab
    full = s.method == "full"

    def add(key, label, nbytes, formula, kind):
        t[key] = Term(key, label, float(nbytes), formula, kind)

    extra_persistent: dict[str, float] = {}
    need_ref = s.ref_model and not (s.task == "dpo" and s.ref_precomputed)
    if need_ref and full:
        add("ref_weights", f"reference model weights ({comp})", P * a, f"{P:,} x {a} B (frozen copy)", "persistent")
        extra_persistent["ref_weights"] = t["ref_weights"].bytes
    elif need_ref:
        add("ref_weights", "reference model weights", 0, "LoRA: the base with adapters disabled (no copy)", "persistent")
    if s.task == "ppo" and s.value_model:
        vw = P * BYTES[dt["weights"]] if dt["weights"] != "nf4" else t["weights"].bytes
        vtrain = est.params["trainable"]
        add("value_model", "value model (weights + grads + optimizer states)",
            vw + (t.get("lora_weights").bytes if "lora_weights" in t else 0) + t["grads"].bytes + t["optimizer"].bytes,
            f"same architecture, same method: {vtrain:,} trainable", "persistent")
        extra_persistent["value_model"] = t["value_model"].bytes
    if s.reward_model:
        add("reward_model", f"reward model weights ({comp})", P * a, f"{P:,} x {a} B", "persistent")
        extra_persistent["reward_model"] = t["reward_model"].bytes
    for ph in est.phases:
        ph.parts.update(extra_persistent)
    if s.task == "dpo":
        if need_ref:
            nt = s.micro_batch * 2 * s.seq_len
            ref_fw = _nograd_forward(arch, nt, a, s)
            add("ref_forward", "reference forward (no grad) working set", ref_fw,
                f"{nt:,} tokens: one layer's temporaries + chunked logits", "transient")
            base = {k: t[k].bytes for k in ("weights", "lora_weights", "optimizer", "batch") if k in t}
            est.phases.append(Phase("reference log-probs", {**base, **extra_persistent, "ref_forward": ref_fw}))
        return
    if s.task not in ("grpo", "ppo"):
        return
    # rollout: KV cache of the generation batch; prefill (prompt cache + one forward over all prompt
    # tokens) and the end of decoding (full cache + one token per sequence) are separate moments
    R = s.rollout_batch
    Ltot = s.prompt_len + s.gen_len

    def kv_bytes(n_tok: int) -> float:
        out = 0.0
        for lt in arch.layer_types:
            w = arch.sliding_window if lt == "sliding_attention" and arch.sliding_window else n_tok
            out += 2 * R * min(n_tok, w) * arch.kv_dim * a
        return out

    base = {k: t[k].bytes for k in ("weights", "lora_weights", "master", "optimizer") if k in t}
    base.update(extra_persistent)
    store = R * Ltot * (8 * 2 + 4 * 3)
    add("rollout_store", "rollout buffers (ids, masks, old/ref log-probs, advantages)", store,
        f"{R} x {Ltot} x (2 x 8 + 3 x 4) B", "persistent")
    base["rollout_store"] = store
    for ph in est.phases:
        ph.parts["rollout_store"] = store
    if s.rollout_backend == "vllm":
        base = _vllm_phases(est, s, base, add)
    else:
        kv = kv_bytes(Ltot)
        add("kv_cache", f"KV cache ({R} sequences x {Ltot} tokens)", kv,
            f"sum over layers 2 x {R} x min({Ltot}, window) x kv_heads {arch.kv_heads} x head_dim {arch.head_dim} x {a} B",
            "transient")
        prefill = _nograd_forward(arch, R * s.prompt_len, a, s, logits_tokens=R)
        sampling = R * V * 20
        add("prefill", "prefill working set (one layer over all prompt tokens)", prefill,
            f"{R} x {s.prompt_len} prompt tokens: residual, q/k/v, 3 x intermediate; last-token logits", "transient")
        add("sampling", "sampling buffers", sampling, f"{R} x vocab x 20 B (fp32 logits, probs, top-p sort)", "transient")
        est.phases.append(Phase("rollout prefill", {**base, "kv_cache (prompt)": kv_bytes(s.prompt_len),
                                                    "prefill": prefill, "sampling": sampling}))
        est.phases.append(Phase("rollout generation", {**base, "kv_cache": kv, "sampling": sampling}))
    nt = s.micro_batch * Ltot
    score = _nograd_forward(arch, nt, a, s)
    add("score_forward", "old/ref log-prob scoring (no grad) working set", score, f"{nt:,} tokens per scoring micro-batch",
        "transient")
    est.phases.append(Phase("scoring old/ref log-probs", {**base, "score_forward": score}))


def _vllm_phases(est: Estimate, s: Setup, base: dict[str, float], add) -> dict[str, float]:
    """A colocated vLLM engine: its reservation (weights, activations and the KV-cache pool, all inside
    `gpu_memory_utilization`) is held for the whole run, or only while rolling out with sleep mode.
    The training process itself keeps no KV cache or sampling buffers. -> the parts alive after the
    rollout (the engine's, unless it sleeps)."""
    eng = s.vllm_engine_bytes
    add("vllm_engine", "vLLM engine (gpu_memory_utilization x device memory)", eng,
        "its own weights copy + activations + KV-cache pool" + ("; freed while training (sleep)" if s.vllm_sleep else ""),
        "transient" if s.vllm_sleep else "persistent")
    if not s.vllm_sleep:
        for ph in est.phases:
            ph.parts["vllm_engine"] = eng
    est.phases.append(Phase("rollout (vLLM engine)", {**base, "vllm_engine": eng}))
    return base if s.vllm_sleep else {**base, "vllm_engine": eng}


def _nograd_forward(arch: Arch, n_tokens: int, a: int, s: Setup, logits_tokens: int | None = None) -> float:
    """Working set of a forward under no_grad: the residual, one layer's widest temporaries,
    and the logits (all tokens in chunks, or only the last token per sequence in generation)."""
    H, I, V = arch.hidden, arch.intermediate, arch.vocab
    layer = n_tokens * (2 * H * a + H * 4 + (arch.q_dim + 2 * arch.kv_dim) * a + 3 * I * a)
    if logits_tokens is not None:
        head = logits_tokens * V * (a + 4)
    else:
        c = min(s.chunk_tokens, n_tokens) if s.loss_impl == "chunked" else n_tokens
        head = c * V * (a + 4 + 4)
    return layer + head


def weights_by_dtype(arch: Arch, double_quant: bool = True) -> dict[str, float]:
    """Bytes of the full model's weights in each storage format (informational)."""
    pc = arch.param_counts()
    P = pc["total"]
    P_lin = sum(x.d_in * x.d_out for x in arch.linears()) * arch.layers
    rest = P - P_lin
    int8 = P_lin * 1 + sum(x.d_out for x in arch.linears()) * arch.layers * 4 + rest * 2
    return {
        "fp32": P * 4.0,
        "bf16/fp16": P * 2.0,
        "int8 (LLM.int8: int8 projections + fp32 row scales, half rest)": float(int8),
        f"nf4 ({'double-quantised ' if double_quant else ''}absmax, half rest)": P_lin * _nf4_bytes_per_param(double_quant) + rest * 2.0,
    }


def gib(x: float) -> float:
    return x / GiB


__all__ = ["Setup", "Estimate", "Term", "Phase", "estimate", "resolve_dtypes", "weights_by_dtype", "gib", "GiB"]
