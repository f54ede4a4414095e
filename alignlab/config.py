"""Strict, typed configuration: pydantic v2 models, YAML instances, dotted CLI overrides.

Every section forbids unknown keys. Errors name the offending key (as a dotted path), the file it
came from, and the closest valid key for a typo, before any model is loaded.

    cfg = load_config(SFTConfig, "configs/sft_tiny.yaml", ["optim.lr=1e-4", "lora.r=8"])
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError  # noqa: F401  (re-exported: alignlab.config.ConfigError)

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ----------------------------------------------------------------------------------------------
# Shared sections
# ----------------------------------------------------------------------------------------------


class ModelConfig(Strict):
    path: str = Field(
        "tiny:qwen2",
        description="Local HF folder, hub id (online only), or tiny:<arch> to build a tiny model offline.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    kernels: Literal["torch", "liger"] = Field("torch", description=(
        "torch: the model's own PyTorch modules (every device); liger: Liger's Triton kernels for RMSNorm, "
        "SwiGLU/GeGLU and RoPE on CUDA (pip install liger-kernel; the log-prob head stays alignlab's fused one)"))
    compile: bool = Field(False, description=(
        "run the decoder of every log-prob forward (training, old-policy and reference passes) through "
        "torch.compile with dynamic shapes: fused elementwise kernels, one graph for every batch shape; the "
        "first step pays the compilation. Generation keeps its own decode loop"))
    trust_remote_code: bool = False


class LoRAConfig(Strict):
    enabled: bool = False
    r: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    qlora: bool = Field(False, description="Load the base in 4-bit NF4 (bitsandbytes, CUDA only).")


class FSDP2Config(Strict):
    """parallel.fsdp2: how `fully_shard` shards the model (docs/distributed.md)."""

    reshard_after_forward: bool = Field(True, description=(
        "free each decoder layer's gathered weights after its forward and gather them again in backward (less "
        "memory, one more all-gather per layer); false keeps them until backward"))
    mixed_precision: Literal["off", "bf16", "fp16"] = Field("off", description=(
        "gather weights in this dtype for forward/backward and reduce gradients in fp32 (MixedPrecisionPolicy); "
        "off: in the weights' own dtype"))
    cpu_offload: bool = Field(False, description=(
        "keep the sharded weights, gradients and optimizer states in CPU memory (CPUOffloadPolicy; CUDA only); "
        "the optimizer step runs on the CPU"))


class ParallelConfig(Strict):
    """parallel: data-parallel training over the ranks torchrun starts (docs/distributed.md). A plain
    single process ignores it; under torchrun the global batch stays the one the config names."""

    strategy: Literal["ddp", "fsdp2"] = Field("ddp", description=(
        "ddp: every rank holds the whole model, gradients are summed over ranks once per optimizer step; "
        "fsdp2: fully_shard per decoder layer, weights, gradients and optimizer states sharded over ranks"))
    timeout_s: int = Field(1800, gt=0, description=(
        "process-group timeout: a collective that waits this long fails instead of hanging"))
    bucket_mb: int = Field(25, gt=0, description="ddp: gradients are summed over ranks in buckets of this size (MiB)")
    fsdp2: FSDP2Config = Field(default_factory=FSDP2Config)

    @model_validator(mode="after")
    def _fsdp2_options(self) -> "ParallelConfig":
        if self.strategy != "fsdp2" and "fsdp2" in self.model_fields_set and self.fsdp2 != FSDP2Config():
            raise ValueError(f"parallel.fsdp2.* applies to parallel.strategy=fsdp2 (strategy is {self.strategy})")
        return self


class RunBase(Strict):
    """Fields every run config has: the run directory is out_dir/name."""

    name: str = "run"
    out_dir: str = "runs"
    seed: int = 0
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list, description=(
        "also send each metrics row to TensorBoard (run_dir/tensorboard) or W&B; metrics.jsonl stays the "
        "source of truth"))
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @model_validator(mode="after")
    def _compile(self) -> "RunBase":
        if self.model.compile and self.parallel.strategy == "fsdp2":
            raise ValueError("model.compile=true is not supported with parallel.strategy=fsdp2 (fully_shard's "
                             "per-layer hooks are not tested under torch.compile here); use parallel.strategy=ddp "
                             "or model.compile=false")
        return self


class OptimConfig(Strict):
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    max_grad_norm: float | None = Field(1.0, description="Clip the global grad norm; null disables.")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio when set.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1)


Action = Literal["warn", "skip", "rollback", "stop"]


class WatchCheck(Strict):
    """One health check of training.watchdog: on or off, and what to do when it fires."""

    enabled: bool = True
    action: Action = Field("warn", description=(
        "warn: log it and go on; skip: zero the step's gradients, no optimizer update; rollback: reload the last "
        "checkpoint's weights and optimizer state and multiply the lr by watchdog.rollback_lr_factor; "
        "stop: end the run with a diagnosis (exit code 3)"))


class NonFiniteCheck(WatchCheck):
    action: Action = "stop"


class GradSpikeCheck(WatchCheck):
    window: int = Field(20, gt=1, description="running median over the last N steps' grad/norm")
    factor: float = Field(10.0, gt=1, description="fires when grad/norm > factor x the running median")
    min_history: int = Field(5, gt=0, description="steps of history before the check can fire")


class BoundCheck(WatchCheck):
    """A metric of the step's row against fixed bounds (null: no bound on that side)."""

    min: float | None = None
    max: float | None = None


class LengthCheck(WatchCheck):
    window: int = Field(20, gt=1, description="running median of response/len_mean over the last N steps")
    factor: float = Field(3.0, gt=1, description="fires above factor x median (blow-up) or below median / factor (collapse)")
    min_history: int = Field(5, gt=0)
    min: float | None = Field(None, description="absolute lower bound on response/len_mean (tokens)")
    max: float | None = Field(None, description="absolute upper bound on response/len_mean (tokens)")


class RewardHackingCheck(WatchCheck):
    min_drop: float = Field(0.05, ge=0, description="held-out eval/accuracy falls by more than this between evaluations")
    min_rise: float = Field(0.0, ge=0, description="while training reward/mean (mean since the previous evaluation) "
                            "rose by more than this")

    @model_validator(mode="after")
    def _no_skip(self) -> "RewardHackingCheck":
        if self.action == "skip":
            raise ValueError("watchdog.reward_hacking.action=skip: this check fires at an evaluation, after the updates "
                             "were applied; use warn, rollback or stop")
        return self


class WatchdogConfig(Strict):
    """training.watchdog: per-step health checks and what each does (docs/watchdog.md)."""

    nonfinite: NonFiniteCheck = Field(default_factory=NonFiniteCheck, description="loss or grad norm NaN/inf")
    grad_spike: GradSpikeCheck = Field(default_factory=GradSpikeCheck)
    kl: BoundCheck = Field(default_factory=lambda: BoundCheck(max=1.0), description="kl/ref (RL loops) above max")
    entropy: BoundCheck = Field(default_factory=lambda: BoundCheck(min=0.01), description="entropy/mean below min")
    length: LengthCheck = Field(default_factory=LengthCheck, description="response/len_mean blow-up or collapse")
    reward_hacking: RewardHackingCheck = Field(default_factory=RewardHackingCheck)
    rollback_lr_factor: float = Field(0.5, gt=0, le=1, description="lr multiplier applied at each rollback")
    max_rollbacks: int = Field(3, ge=0, description="one more rollback than this stops the run instead")

    def uses_rollback(self) -> list[str]:
        return [n for n in ("nonfinite", "grad_spike", "kl", "entropy", "length", "reward_hacking")
                if getattr(self, n).enabled and getattr(self, n).action == "rollback"]


def _refuse_rollback(watchdog: WatchdogConfig, algo: str) -> None:
    names = watchdog.uses_rollback()
    if names:
        raise ValueError(f"training.watchdog.{names[0]}.action=rollback is not supported by {algo} (rollback is "
                         f"implemented for sft, dpo and grpo); use warn, skip or stop")


class TrainingConfig(Strict):
    """`training:` of every algorithm: how many steps, the micro-batch, and the run's bookkeeping
    (precision, evaluate, save, log, resume, hooks, watchdog). Steps are the loop's own: optimizer
    steps (SFT, DPO, RM), rollout steps (GRPO, PPO) or rounds (EI); eval/save/log counts are in them.
    Each loop subclasses it where it differs (SFT, EI, GRPO, PPO, DPO/RM)."""

    total_steps: int = Field(50, gt=0, description="the loop's steps (GRPO, PPO: rollout steps)")
    micro_batch: int = Field(16, gt=0, description=(
        "rows per forward/backward: sequences (SFT, EI, GRPO, PPO) or preference pairs (DPO, RM; chosen and "
        "rejected go through one forward). Only memory and speed depend on it: the step's normaliser is fixed "
        "before its micro-batches"))
    max_tokens_per_micro_batch: int | None = Field(None, gt=0, description=(
        "SFT, EI, DPO, GRPO and PPO: also cap each micro-batch's tokens (rows x longest; packed: the sum of lengths), so "
        "short examples share big micro-batches and long ones get small ones; null: training.micro_batch alone"))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int = Field(0, ge=0, description="evaluate every N steps; 0: only at the end")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps; 0: only at the end")
    keep_last: int = Field(2, gt=0)
    log_every: int | None = Field(None, gt=0, description=(
        "print a plain progress line (loss, tokens/s, ETA) every N steps, on a terminal too instead of the live bar; "
        "null: the live bar on a terminal, about 20 lines per run otherwise. metrics.jsonl gets every step either way"))
    resume: str = Field("auto", description="auto | never | path to a checkpoints/step_N folder")
    hooks: list[str] = Field(
        default_factory=list, description="'module:object' paths of objects with on_start/on_step_end/on_eval/on_save"
    )
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)


class SFTTrainingConfig(TrainingConfig):
    """SFT's `training:`: a step count or epochs, and the global batch the micro-batches add up to."""

    total_steps: int | None = Field(None, gt=0, description="Optimizer steps; or set epochs.")
    epochs: float | None = Field(None, gt=0)
    global_batch_seqs: int = Field(32, gt=0, description="Sequences per optimizer step.")
    micro_batch: int = Field(8, gt=0, description="Sequences per forward/backward.")
    loss_normalizer: Literal["tokens", "sequences"] = Field(
        "tokens",
        description="tokens: sum of response-token NLL / response tokens in the whole optimizer step; "
        "sequences: per-sequence mean NLL averaged over the step's sequences.",
    )

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> "SFTTrainingConfig":
        _check_multiple("global_batch_seqs", self.global_batch_seqs, "micro_batch", self.micro_batch)
        if self.total_steps is None and self.epochs is None:
            raise ValueError("set training.total_steps or training.epochs")
        return self


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)


def _check_multiple(total_name: str, total: int, part_name: str, part: int) -> None:
    """A step of `total` sequences (pairs) is run in pieces of `part`: it must divide, and the message
    proposes the largest piece that does."""
    if total % part:
        raise ValueError(f"{total_name}={total} is not a multiple of {part_name}={part}; gradient accumulation "
                         f"needs a whole number of micro-batches (e.g. {part_name}={_largest_divisor(total, part)})")


class ArithmeticConfig(Strict):
    n_train: int = Field(4000, gt=0)
    n_eval: int = Field(200, gt=0)
    max_operand: int = Field(49, gt=0)
    ops: list[Literal["+", "-", "*"]] = Field(default_factory=lambda: ["+", "-"])


class _PackedRows:
    """What DataConfig and PrefDataConfig share about packing (both have max_seq_len and packing)."""

    @property
    def pack_len(self) -> int | None:
        """data.packing: the length of the rows examples are packed into (max_seq_len); None: padded batches."""
        return self.max_seq_len if self.packing else None


class DataConfig(Strict, _PackedRows):
    train: str = Field("builtin:arithmetic", description="JSONL path, builtin:arithmetic, or hf:<path>[:split]")
    eval: str | None = Field("builtin:arithmetic", description="Held-out set (same forms); null disables eval.")
    format: Literal["auto", "plain", "chat"] = Field(
        "auto", description="auto: conversational data (message lists) through the tokenizer's chat template, text "
        "as it is; plain: text only; chat: the chat template for text too (prompt = user, response = assistant).")
    max_seq_len: int = Field(128, gt=0)
    on_too_long: Literal["error", "truncate", "drop"] = "error"
    packing: bool = False
    length_bucketing: bool = True
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)


class EvalConfig(Strict):
    """`eval:` of every loop that generates (SFT, EI, GRPO, PPO): the held-out examples, greedy.
    DPO and RM score held-out pairs (data.eval, data.n_eval) and generate nothing, so they have none."""

    max_examples: int = Field(200, gt=0)
    max_new_tokens: int = Field(16, gt=0)
    batch_size: int = Field(64, gt=0)


# ----------------------------------------------------------------------------------------------
# Beyond plain LoRA: ReLoRA, rank-1 merging, effective-rank tracking (docs/lora.md)
# ----------------------------------------------------------------------------------------------


class ReLoRAConfig(Strict):
    """relora: ReLoRA (arXiv 2307.05695) on top of lora.enabled=true. Every `reset_every` steps s·B·A is
    merged into the (fp32) base, A is re-drawn (Kaiming uniform) and B zeroed, the LoRA parameters' Adam
    states are magnitude-pruned in place, and the lr restarts from 0 (the jagged cosine schedule)."""

    enabled: bool = False
    reset_every: int = Field(100, gt=0, description="loop steps between resets (merge, re-init, optimizer pruning)")
    restart_warmup_steps: int = Field(10, ge=0, description=(
        "loop steps of linear lr re-warm-up after each reset, back onto the schedule's envelope; must be < reset_every"))
    prune: float = Field(0.9, ge=0, le=1, description=(
        "share of the smallest-magnitude entries of each LoRA parameter's exp_avg and exp_avg_sq zeroed at a reset "
        "(1: zero them all; Adam's step count is kept); other parameters' states are untouched"))


class Rank1Config(Strict):
    """rank1: dynamic rank-1 merging on top of lora.enabled=true lora.r=1. Every `merge_every` steps the
    rank-1 adapter (b·a, scale s = lora.alpha) is merged into the fp32 base, a fresh one is drawn
    (a ~ N(0, I/in), b = 0) and its optimizer state is dropped."""

    enabled: bool = False
    merge_every: int = Field(1, gt=0, description="loop steps between merges (1: a fresh rank-1 adapter every step)")
    init: Literal["gaussian", "greedy"] = Field("gaussian", description=(
        "gaussian: a ~ N(0, I/in); greedy: at the first update after a merge, a is the top right-singular vector "
        "of that step's weight gradient G (power iterations; the base weights then get gradients too)"))
    power_iters: int = Field(3, gt=0, description="greedy: power iterations on GᵀG")


class RankTrackingConfig(Strict):
    """analysis: measurements taken during training."""

    rank_every: int = Field(0, ge=0, description=(
        "every N steps, the effective rank of ΔW = W_t − W_0 of every weight matrix (erank, stable rank, k90, "
        "numerical rank): means per module type into metrics.jsonl as rank/<module>/<measure>, every matrix into "
        "analysis/rank/steps/step_N.json; 0: off"))
    rank_max_dim: int = Field(8192, gt=0, description=(
        "matrices with a side longer than this (a 262k-row embedding) are skipped, or measured approximately "
        "with rank_lowrank"))
    rank_lowrank: int = Field(0, ge=0, description=(
        "> 0: measure the matrices over rank_max_dim from their top rank_lowrank singular values "
        "(randomized SVD; erank and k90 are then lower bounds); 0: skip them"))


class LowRankRun(RunBase):
    """A run config whose loop gets the step-end actions of `alignlab.lora.actions` (SFT, DPO, GRPO, PPO)."""

    relora: ReLoRAConfig = Field(default_factory=ReLoRAConfig)
    rank1: Rank1Config = Field(default_factory=Rank1Config)
    analysis: RankTrackingConfig = Field(default_factory=RankTrackingConfig)

    def updates_per_step(self) -> int:
        """Optimizer updates in one loop step: the factor between reset/merge intervals (in steps) and the
        lr schedule (in updates)."""
        return 1

    @model_validator(mode="after")
    def _low_rank(self):
        r, k = self.relora, self.rank1
        if r.enabled and k.enabled:
            raise ValueError("relora.enabled and rank1.enabled are exclusive (rank-1 merging every k steps is already "
                             "ReLoRA with r=1); enable one")
        for name, sec in (("relora", r), ("rank1", k)):
            if not sec.enabled:
                continue
            if not self.lora.enabled:
                raise ValueError(f"{name}.enabled=true merges LoRA adapters into the base: it needs lora.enabled=true")
            if self.lora.qlora:
                raise ValueError(f"{name}.enabled=true with lora.qlora=true is not supported: merging into a 4-bit "
                                 "base would dequantise and requantise it at every merge; use lora.qlora=false")
            rollback = self.training.watchdog.uses_rollback()
            if rollback:
                raise ValueError(f"training.watchdog.{rollback[0]}.action=rollback cannot undo a {name} merge into the "
                                 "base; use warn, skip or stop")
        if k.enabled and self.lora.r != 1:
            raise ValueError(f"rank1.enabled=true trains a rank-1 adapter: set lora.r=1 (it is {self.lora.r})")
        if r.enabled:
            if r.restart_warmup_steps >= r.reset_every:
                raise ValueError(f"relora.restart_warmup_steps={r.restart_warmup_steps} must be smaller than "
                                 f"relora.reset_every={r.reset_every}: the lr must get back to the schedule before the "
                                 "next reset")
            total = self.training.total_steps
            if total is None:
                raise ValueError("relora.enabled=true needs training.total_steps (the length of the jagged schedule)")
            ups, o = self.updates_per_step(), self.optim
            warm = o.warmup_steps if o.warmup_steps is not None else int(round(o.warmup_ratio * total * ups))  # optim.warmup_steps
            if warm > r.reset_every * ups:
                raise ValueError(f"relora.reset_every={r.reset_every} steps ({r.reset_every * ups} updates) is shorter "
                                 f"than the lr warm-up ({warm} updates, from optim.warmup_"
                                 f"{'steps' if o.warmup_steps is not None else 'ratio'}): the first reset must come after "
                                 "the warm-up; raise relora.reset_every or lower the warm-up")
        return self


class SFTConfig(LowRankRun):
    name: str = "sft"
    optim: OptimConfig = Field(default_factory=OptimConfig)
    training: SFTTrainingConfig = Field(default_factory=lambda: SFTTrainingConfig(total_steps=100))
    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------------
# RL: tasks, sampling, GRPO / expert iteration
# ----------------------------------------------------------------------------------------------


class TaskConfig(Strict):
    name: Literal["arithmetic", "math"] = "arithmetic"
    prompt: Literal["plain", "r1_zero", "question_only"] = Field(
        "plain", description="plain: 'a+b=' (arithmetic); r1_zero: think/answer tags; question_only: the bare question")
    train: str | None = Field(None, description="math: JSONL (MATH or GSM8K style); default the built-in sample")
    eval: str | None = Field(None, description="math: held-out JSONL; default the built-in sample")
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)


class VLLMConfig(Strict):
    """The vLLM engine of `sampling.backend=vllm`: one engine on the training GPU (colocated)."""

    gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description=(
        "share of GPU memory vLLM takes for its weights and KV cache; the rest is left to training"))
    max_model_len: int | None = Field(None, gt=0, description="longest prompt + completion; default: the model's")
    enforce_eager: bool = Field(False, description="no CUDA graphs: slower decoding, faster start, less memory")
    sleep: bool = Field(False, description=(
        "free vLLM's GPU memory while training (sleep level 2) and wake it for each rollout"))


class SamplingConfig(Strict):
    backend: Literal["hf", "vllm"] = Field("hf", description="hf: transformers generate (anywhere); vllm: CUDA only")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)
    stop: list[str] = Field(default_factory=list, description="stop strings, kept in the output (e.g. '</answer>')")
    batch_size: int = Field(64, gt=0, description="prompts per generate() call (hf backend)")
    hf_decode: Literal["auto", "generate", "static", "cuda_graphs"] = Field("auto", description=(
        "hf backend's decode loop: auto (cuda_graphs on CUDA, generate elsewhere); generate (transformers, dynamic "
        "KV cache); static (alignlab's loop over a static KV cache); cuda_graphs (that loop, its per-token step "
        "in CUDA graphs; CUDA only; the first batch of each shape pays a one-off compile)"))
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)

    @model_validator(mode="after")
    def _decode_is_for_hf(self):
        if self.backend != "hf" and self.hf_decode not in ("auto", "generate"):
            raise ValueError(f"hf_decode={self.hf_decode} applies to backend=hf only; with backend={self.backend} "
                             "remove sampling.hf_decode")
        return self


class RLConfig(Strict):
    prompts_per_step: int = Field(16, gt=0)
    group_size: int = Field(8, gt=0, description="samples per prompt")
    epochs_per_rollout_batch: int = Field(1, gt=0, description="1: on-policy; >1: off-policy passes with clipping")
    loss_type: Literal["no_baseline", "reinforce_with_baseline", "grpo_clip", "gspo"] = "grpo_clip"
    advantage: Literal["group", "rloo"] = "group"
    normalize_by_std: bool = True
    advantage_eps: float = Field(1e-6, gt=0)
    eps_low: float = Field(0.2, ge=0, description="clip range below 1 (cliprange)")
    eps_high: float = Field(0.2, ge=0, description="clip range above 1; > eps_low is DAPO clip-higher")
    aggregation: Literal["seq_mean", "token_mean", "constant"] = Field(
        "seq_mean", description="seq_mean = masked_mean per sequence (GRPO); token_mean (DAPO); "
        "constant = masked_normalize by max_new_tokens (Dr. GRPO)")
    kl_coef: float = Field(0.0, ge=0, description="KL(policy || reference) penalty in the loss; 0 disables")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.0, ge=0)
    tis_cap: float = Field(0.0, ge=0, description=(
        "truncated importance sampling: weight each token's loss by min(p_train / p_sampler, tis_cap), "
        "correcting for a sampler that differs from the trainer (vLLM, half precision); 0 disables"))
    packing: bool = Field(False, description=(
        "run the training passes padding-free: each micro-batch's sequences are packed into rows no wider than "
        "its longest, with position_ids restarting per sequence (logprobs.packed_response_log_probs)"))
    dynamic_sampling: bool = Field(False, description="DAPO: resample groups whose rewards are all equal")
    max_resample_rounds: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _groups(self) -> "RLConfig":
        if self.advantage == "rloo" and self.group_size < 2:
            raise ValueError("advantage=rloo needs group_size >= 2")
        if self.normalize_by_std and self.group_size < 2:
            raise ValueError("normalize_by_std needs group_size >= 2 (a std of one sample is undefined)")
        return self


class GRPOConfig(LowRankRun):
    name: str = "grpo"
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_ratio=0.0, schedule="constant"))
    task: TaskConfig = Field(default_factory=TaskConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def updates_per_step(self) -> int:
        return self.rl.epochs_per_rollout_batch

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> "GRPOConfig":
        _check_multiple("rl.prompts_per_step * rl.group_size", self.rl.prompts_per_step * self.rl.group_size,
                        "training.micro_batch", self.training.micro_batch)
        return self


class EIRoundConfig(Strict):
    questions_per_round: int = Field(256, gt=0)
    group_size: int = Field(8, gt=0, description="samples per question (G)")
    sft_epochs: int = Field(1, gt=0, description="passes over each round's kept samples")
    global_batch_seqs: int = Field(32, gt=0, description="sequences per optimizer step of a round's SFT")
    loss_normalizer: Literal["tokens", "sequences"] = "tokens"
    dedupe: bool = Field(True, description="keep each distinct correct completion of a question once")
    packing: bool = Field(False, description=(
        "run a round's SFT padding-free: each micro-batch's kept samples are packed into rows no wider than the "
        "step's longest, with position_ids restarting per sample (data.collate_packed)"))


class EITrainingConfig(TrainingConfig):
    """EI's `training:`: its steps are rounds of sample -> filter -> SFT; a round's SFT steps in
    micro-batches like SFT's (so a token cap applies too)."""

    total_steps: int = Field(3, gt=0, description="rounds of sample -> filter -> SFT")
    eval_every: int = Field(1, ge=0, description="evaluate held-out accuracy every N rounds; 0: only after the last")


class EIConfig(RunBase):
    name: str = "ei"
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_ratio=0.0, schedule="constant"))
    task: TaskConfig = Field(default_factory=TaskConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    ei: EIRoundConfig = Field(default_factory=EIRoundConfig)
    training: EITrainingConfig = Field(default_factory=EITrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check(self) -> "EIConfig":
        _check_multiple("ei.global_batch_seqs", self.ei.global_batch_seqs, "training.micro_batch", self.training.micro_batch)
        _refuse_rollback(self.training.watchdog, "ei")
        return self


# ----------------------------------------------------------------------------------------------
# Preferences: DPO and reward models
# ----------------------------------------------------------------------------------------------


class PrefDataConfig(Strict, _PackedRows):
    train: str = Field("builtin:arithmetic", description="JSONL of prompt/chosen/rejected, builtin:arithmetic or builtin:safety")
    eval: str | None = Field("builtin:arithmetic", description="held-out pairs (same forms); null disables")
    n_train: int = Field(1024, gt=0, description="pairs drawn from builtin:arithmetic (other sets use every line)")
    n_eval: int = Field(256, gt=0)
    format: Literal["auto", "plain", "chat"] = Field("auto", description="as data.format of SFT")
    max_seq_len: int = Field(128, gt=0)
    on_too_long: Literal["error", "truncate", "drop"] = "error"
    packing: bool = Field(False, description=(
        "DPO: pack each micro-batch's chosen and rejected sequences into rows of <= max_seq_len tokens (position_ids "
        "restart per sequence, no padding computed; log-probs summed per sequence); RM: refused"))


class PrefTrainingConfig(TrainingConfig):
    """DPO's and RM's `training:`: a step count or epochs, and the pairs per optimizer step."""

    total_steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    global_batch_pairs: int = Field(32, gt=0, description="preference pairs per optimizer step")
    micro_batch: int = Field(8, gt=0, description="pairs per forward/backward (chosen and rejected in one batch)")

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> "PrefTrainingConfig":
        _check_multiple("global_batch_pairs", self.global_batch_pairs, "micro_batch", self.micro_batch)
        if self.total_steps is None and self.epochs is None:
            raise ValueError("set training.total_steps or training.epochs")
        return self


class DPOSection(Strict):
    loss: Literal["sigmoid", "cdpo", "ipo", "hinge", "simpo"] = "sigmoid"
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO's eps: the share of labels assumed flipped")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target margin")
    ipo_margin: Literal["mean", "sum"] = Field("mean", description=(
        "IPO's log-ratio margin: mean = per completion token (the form the paper's results use, as in TRL); "
        "sum = summed over the completion's tokens (a different objective at the same beta)"))
    reference: Literal["auto", "precomputed", "copy", "adapter"] = Field(
        "auto", description="auto: adapter-disabled base for LoRA, precomputed log-probs otherwise; "
        "copy: a frozen second model; precomputed: one pass before training, cached in the run dir")

    @model_validator(mode="after")
    def _check(self) -> "DPOSection":
        if self.loss == "cdpo" and self.label_smoothing == 0:
            raise ValueError("dpo.loss=cdpo needs dpo.label_smoothing > 0 (e.g. 0.1); with 0 it is plain sigmoid DPO")
        if self.loss != "cdpo" and self.label_smoothing > 0:
            raise ValueError("dpo.label_smoothing only applies to dpo.loss=cdpo")
        if self.loss != "ipo" and self.ipo_margin != "mean":
            raise ValueError("dpo.ipo_margin only applies to dpo.loss=ipo")
        return self


class DPOConfig(LowRankRun):
    name: str = "dpo"
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-6))
    data: PrefDataConfig = Field(default_factory=PrefDataConfig)
    dpo: DPOSection = Field(default_factory=DPOSection)
    training: PrefTrainingConfig = Field(default_factory=lambda: PrefTrainingConfig(total_steps=100))

    @model_validator(mode="after")
    def _reference(self) -> "DPOConfig":
        if self.dpo.reference == "adapter" and not self.lora.enabled:
            raise ValueError("dpo.reference=adapter needs lora.enabled=true (the reference is the base, adapters off)")
        return self

    @model_validator(mode="after")
    def _merged_reference(self) -> "DPOConfig":
        if self.dpo.reference == "adapter" and (self.relora.enabled or self.rank1.enabled):
            raise ValueError("dpo.reference=adapter is the base with adapters off, but relora/rank1 merge the adapters into "
                             "the base, so it stops being the reference after the first merge; use dpo.reference=auto "
                             "(precomputed) or copy")
        return self


class RMSection(Strict):
    kind: Literal["lm", "encoder"] = Field(
        "lm", description="lm: the LM backbone with a scalar head (AutoModelForSequenceClassification); "
        "encoder: the small 3-layer transformer encoder over the policy tokenizer's ids")
    center_coef: float = Field(0.0, ge=0, description="reward centring: + coef * (r_c + r_r)^2")
    encoder_d_model: int = Field(128, gt=0)
    encoder_layers: int = Field(3, gt=0)
    encoder_heads: int = Field(4, gt=0)


class RMConfig(RunBase):
    name: str = "rm"
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5))
    data: PrefDataConfig = Field(default_factory=PrefDataConfig)
    rm: RMSection = Field(default_factory=RMSection)
    training: PrefTrainingConfig = Field(default_factory=lambda: PrefTrainingConfig(total_steps=100))

    @model_validator(mode="after")
    def _refusals(self) -> "RMConfig":
        if self.training.max_tokens_per_micro_batch is not None:  # every other loop reads it
            raise ValueError("max_tokens_per_micro_batch is read by sft, ei, dpo, grpo and ppo only; this loop cuts its "
                             "micro-batches by rows: remove it and size them with training.micro_batch")
        if self.data.packing:  # a scalar score per sequence is read at its last token: one sequence per row
            raise ValueError("data.packing=true is not supported by reward models (the score is read at each "
                             "sequence's last token, one sequence per row); remove data.packing")
        if self.model.compile:  # its forward is the sequence-classification model's, not the log-prob decoder's
            raise ValueError("model.compile=true applies to the log-prob forward of sft, ei, dpo, grpo and ppo; a "
                             "reward model's scoring forward is not compiled: remove model.compile")
        _refuse_rollback(self.training.watchdog, "rm")
        return self


# ----------------------------------------------------------------------------------------------
# PPO
# ----------------------------------------------------------------------------------------------


class RewardSection(Strict):
    source: Literal["task", "rm", "heuristic", "hybrid"] = Field(
        "task", description="task: the task's verifiable reward; rm: a reward-model folder (alignlab rm); "
        "heuristic: toxicity/length/repetition; hybrid: alpha * heuristic + beta * rm score")
    rm_path: str | None = Field(None, description="reward model folder (checkpoints/step_N of an alignlab rm run)")
    alpha: float = 0.5
    beta: float = 0.5
    normalize: bool = Field(False, description="running mean/std normalisation of the reward components")

    @model_validator(mode="after")
    def _needs_rm(self) -> "RewardSection":
        if self.source in ("rm",) and not self.rm_path:
            raise ValueError("reward.source=rm needs reward.rm_path (a folder written by `alignlab rm`)")
        return self


class PPOSection(Strict):
    rollout_size: int = Field(64, gt=0, description="sequences per rollout batch (one sample per prompt)")
    minibatch_seqs: int = Field(16, gt=0, description=(
        "sequences per optimizer step inside a PPO epoch, run in micro-batches of training.micro_batch"))
    num_ppo_epochs: int = Field(4, gt=0)
    clip: float = Field(0.2, gt=0, description="policy ratio clip")
    value_clip: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.5, ge=0)
    entropy_coef: float = Field(0.01, ge=0)
    kl_coef: float = Field(0.1, ge=0, description="per-token KL penalty folded into the rewards")
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    adaptive_kl: bool = Field(False, description="Ziegler et al. controller towards kl_target")
    kl_target: float = Field(6.0, gt=0, description="target KL (nats per sequence) for the adaptive controller")
    kl_horizon: int = Field(10000, gt=0)
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_advantages: bool = True
    early_stop_kl: float | None = Field(None, gt=0, description="stop a rollout's epochs when approx KL exceeds it")
    critic: Literal["shared", "separate", "lora_adapters"] = Field(
        "shared", description="shared: a value head on the policy's own trunk; separate: a second causal LM "
        "(ppo.critic_path) + value head, with its own LoRA when lora.enabled; lora_adapters: one frozen base, "
        "a 'value' LoRA adapter beside the policy's (needs lora.enabled=true)")
    critic_path: str | None = Field(None, description="ppo.critic=separate: the critic's starting model "
                                    "(a local folder or tiny:<arch>); null: model.path. Must share the policy's tokenizer")
    critic_lr: float | None = Field(None, gt=0, description="lr of the value head and critic trunk / value adapter; "
                                    "null: optim.lr (one schedule scales both)")
    packing: bool = Field(False, description=(
        "run every PPO pass padding-free (old log-probs and values, reference, training micro-batches; the policy's "
        "and every critic's forward): sequences packed into rows no wider than the batch's longest, with position_ids "
        "restarting per sequence (logprobs.Packing); the same log-probs and values"))

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> "PPOSection":
        _check_multiple("rollout_size", self.rollout_size, "minibatch_seqs", self.minibatch_seqs)
        if self.critic_path is not None and self.critic != "separate":
            raise ValueError(f"ppo.critic_path only applies to ppo.critic=separate (ppo.critic is {self.critic})")
        return self


class PPOConfig(LowRankRun):
    name: str = "ppo"
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_ratio=0.0, schedule="constant"))
    task: TaskConfig = Field(default_factory=TaskConfig)
    reward: RewardSection = Field(default_factory=RewardSection)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    ppo: PPOSection = Field(default_factory=PPOSection)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _micro_batch_default(cls, data: Any) -> Any:
        """training.micro_batch left out: the whole minibatch in one forward (one forward per optimizer
        step, as before micro-batching existed here); the resolved config shows the number."""
        if isinstance(data, dict):
            training = data.get("training")
            if training is None or (isinstance(training, dict) and "micro_batch" not in training):
                ppo = data.get("ppo") if isinstance(data.get("ppo"), dict) else {}
                minibatch = ppo.get("minibatch_seqs", PPOSection.model_fields["minibatch_seqs"].default)
                if isinstance(minibatch, int) and minibatch > 0:  # a bad value is reported once, under ppo.
                    data = {**data, "training": {**(training or {}), "micro_batch": minibatch}}
        return data

    @model_validator(mode="after")
    def _critic(self) -> "PPOConfig":
        _check_multiple("ppo.minibatch_seqs", self.ppo.minibatch_seqs, "training.micro_batch", self.training.micro_batch)
        _refuse_rollback(self.training.watchdog, "ppo")
        if self.ppo.critic == "lora_adapters" and not self.lora.enabled:
            raise ValueError("ppo.critic=lora_adapters needs lora.enabled=true (policy and value are two LoRA adapters "
                             "on one frozen base); without LoRA use ppo.critic=shared or ppo.critic=separate")
        return self

    def updates_per_step(self) -> int:
        return self.ppo.num_ppo_epochs * (self.ppo.rollout_size // self.ppo.minibatch_seqs)

    @model_validator(mode="after")
    def _merges(self) -> "PPOConfig":
        name = "relora" if self.relora.enabled else "rank1" if self.rank1.enabled else None
        if name and self.ppo.critic == "lora_adapters":
            raise ValueError(f"{name} with ppo.critic=lora_adapters is not supported: policy and value adapters share one "
                             "base, so merging the policy's adapter into it would change the critic too; use "
                             "ppo.critic=shared or separate")
        if name and self.ppo.early_stop_kl:
            raise ValueError(f"{name} with ppo.early_stop_kl is not supported: merges and the lr schedule count a fixed "
                             "number of updates per rollout step, which early stopping breaks; remove ppo.early_stop_kl")
        return self


# ----------------------------------------------------------------------------------------------
# Staged pipelines
# ----------------------------------------------------------------------------------------------


# The training algorithms, written once: command -> (loop module, config class, one-line description).
# The CLI's commands, the pipeline's stage kinds and StageConfig.kind all read this table.
ALGORITHMS = {
    "sft": ("alignlab.train.sft", "SFTConfig", "supervised fine-tuning"),
    "ei": ("alignlab.train.ei", "EIConfig", "expert iteration: sample, keep the correct, SFT, repeat"),
    "grpo": ("alignlab.train.grpo", "GRPOConfig", "GRPO and variants with a verifiable reward"),
    "dpo": ("alignlab.train.dpo", "DPOConfig", "DPO, cDPO, IPO, hinge, SimPO on preference pairs"),
    "ppo": ("alignlab.train.ppo", "PPOConfig", "PPO with GAE, a value head, KL to the reference"),
    "rm": ("alignlab.train.reward_model", "RMConfig", "Bradley-Terry reward model (LM + scalar head, or small encoder)"),
}
Algorithm = Literal[tuple(ALGORITHMS)]


class StageConfig(Strict):
    name: str
    kind: Algorithm
    config: str = Field(description="a YAML file or a packaged config name (sft_tiny, rm_tiny, ...)")
    overrides: list[str] = Field(default_factory=list)
    model_from: str | None = Field(None, description="an earlier stage whose final checkpoint is this stage's model.path")
    reward_from: str | None = Field(None, description="ppo only: an earlier rm stage, used as reward.rm_path")


class PipelineConfig(Strict):
    name: str = "pipeline"
    out_dir: str = "runs"
    stages: list[StageConfig]

    @model_validator(mode="after")
    def _wiring(self) -> "PipelineConfig":
        seen: dict[str, str] = {}
        for st in self.stages:
            if st.name in seen:
                raise ValueError(f"stage name {st.name!r} is used twice")
            for key in ("model_from", "reward_from"):
                ref = getattr(st, key)
                if ref is not None and ref not in seen:
                    raise ValueError(f"stage {st.name!r}: {key}={ref!r} is not an earlier stage "
                                     f"(earlier: {', '.join(seen) or 'none'})")
            if st.reward_from is not None:
                if st.kind != "ppo":
                    raise ValueError(f"stage {st.name!r}: reward_from only applies to kind=ppo")
                if seen[st.reward_from] != "rm":
                    raise ValueError(f"stage {st.name!r}: reward_from={st.reward_from!r} is a {seen[st.reward_from]} stage, not rm")
            seen[st.name] = st.kind
        return self


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

C = TypeVar("C", bound=Strict)

# Keys renamed after alignlab 0.1.0: old dotted key -> (new dotted key, why). A YAML file or an override
# that still uses an old key is refused with a message naming the new one, for one release; after
# that the table goes and the old key is an ordinary unknown key.
RENAMED_AFTER = "0.1.0"
RENAMED = {
    "training.micro_batch_seqs": ("training.micro_batch", "every loop sizes its micro-batches under one key"),
    "training.micro_batch_pairs": ("training.micro_batch", "every loop sizes its micro-batches under one key; "
                                   "for DPO and RM it counts pairs"),
    "rl.micro_batch_seqs": ("training.micro_batch", "every loop sizes its micro-batches under one key"),
    "ei.micro_batch_seqs": ("training.micro_batch", "every loop sizes its micro-batches under one key"),
    "ei.n_ei_steps": ("training.total_steps", "every loop counts its steps under one key; EI's steps are rounds"),
}


def _refuse_renamed(dotted: str, value: Any, where: str, in_file: bool) -> None:
    if dotted in RENAMED:
        new, why = RENAMED[dotted]
        shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        section, _, leaf = new.rpartition(".")
        fix = f"put {leaf}: {shown} under {section}:" if in_file else f"write {new}={shown}"
        raise ConfigError(f"{where}: {dotted} was renamed {new} after alignlab {RENAMED_AFTER} ({why}); {fix}")


def _dotted_items(data: dict, prefix: str = ""):
    for k, v in data.items():
        key = f"{prefix}{k}"
        yield key, v
        if isinstance(v, dict):
            yield from _dotted_items(v, key + ".")


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A file path, or a bare name of a packaged config (`sft_tiny` -> alignlab/configs/sft_tiny.yaml)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (PACKAGE_CONFIGS / p.name, PACKAGE_CONFIGS / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    known = sorted(f.stem for f in PACKAGE_CONFIGS.glob("*.yaml"))
    raise ConfigError(f"config file {str(path)!r} not found (packaged configs: {', '.join(known)})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-4` -> (['optim', 'lr'], 1e-4). Values are parsed as YAML (lists, null, bools)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    if not key or any(not k for k in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string; numbers should be numbers
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str], schema: type[Strict]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        _refuse_renamed(".".join(keys), value, f"override {text!r}", in_file=False)
        node, model = data, schema
        for i, k in enumerate(keys):
            fields = model.model_fields if model is not None else None
            if fields is not None and k not in fields:
                where = ".".join(keys[:i]) or "top level"
                raise ConfigError(
                    f"override {text!r}: unknown key {'.'.join(keys[: i + 1])!r} in {where}"
                    + _suggest(k, list(fields))
                )
            sub = _submodel(model, k) if model is not None else None
            if i == len(keys) - 1:
                node[k] = value
            else:
                if not isinstance(node.get(k), dict):
                    node[k] = {}
                node, model = node[k], sub
    return data


def _submodel(model: type[Strict], key: str) -> type[Strict] | None:
    ann = model.model_fields[key].annotation
    return ann if isinstance(ann, type) and issubclass(ann, Strict) else None


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def format_validation_error(exc: ValidationError, schema: type[Strict], source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = schema
            for part in loc[:-1]:
                parent = _submodel(parent, part) if parent is not None and part in parent.model_fields else None
            valid = list(parent.model_fields) if parent is not None else []
            msg = "unknown key" + (_suggest(loc[-1], valid) if valid else "")
        elif "input" in err and err["type"] != "value_error":
            msg += f" (got {err['input']!r})"
        lines.append(f"  {dotted}: {msg}")
    return "\n".join(lines)


def load_config(schema: type[C], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> C:
    data: dict = {}
    source = "defaults"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark else str(p)
            raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections (model:, optim:, ...)")
        for key, value in _dotted_items(loaded):
            _refuse_renamed(key, value, str(p), in_file=True)
        data = loaded
    if overrides:
        data = apply_overrides(data, list(overrides), schema)
        source += " + overrides " + " ".join(overrides)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, schema, source)) from None


def dump_config(cfg: Strict) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
