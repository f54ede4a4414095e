"""Per-device memory of data-parallel training: `alignlab plan ... --gpus N --strategy ddp|fsdp2` (no torch).

The estimate of one device is made as for one GPU, with the micro-batch and accumulation of one rank
(the target batch is split over the N GPUs by the search), then adjusted here the way
alignlab/distributed.py runs (docs/distributed.md):

- ddp: every device holds the whole model, its gradients and its optimizer states. After the step's
  last micro-batch the gradients are summed over ranks in buckets of `parallel.bucket_mb` (25 MiB):
  one bucket's flat copy is alive, with every gradient, before the optimizer step.
- fsdp2: `fully_shard` divides every parameter on dim 0, so weights, gradients and optimizer states
  (and a frozen reference's weights) are divided by N. On top, while forward and backward run: the root
  group gathered (embeddings, final norm, an untied LM head: kept from forward to backward) and two
  decoder layers' full weights (the one computed and the one prefetched), and in backward one layer's
  full gradient before its reduce-scatter.
"""

from __future__ import annotations

from .activations import BYTES
from .arch import Arch, PlanError

BUCKET_BYTES = 25 * 2**20
STRATEGIES = ("ddp", "fsdp2")
SHARDED = ("weights", "lora_weights", "master", "grads", "optimizer", "ref_weights")


def validate(s) -> None:
    if s.gpus < 1:
        raise PlanError(f"--gpus {s.gpus}: give the number of GPUs (>= 1)")
    if s.strategy not in STRATEGIES:
        raise PlanError(f"unknown --strategy {s.strategy!r}; valid: {', '.join(STRATEGIES)}")
    if s.gpus > 1 and s.device != "cuda":
        raise PlanError("--gpus > 1 plans CUDA devices; use --gpu with a GPU name")
    if s.strategy == "fsdp2":  # what alignlab.distributed.check refuses at run time
        if s.method == "qlora":
            raise PlanError("--strategy fsdp2 with --method qlora: 4-bit weights cannot be sharded; use ddp")
        if s.task == "ppo":
            raise PlanError("--strategy fsdp2 is not supported by PPO (its critic is not sharded); use ddp")
        if s.rollout_backend == "vllm":
            raise PlanError("--strategy fsdp2 with --rollout-backend vllm is not supported; use ddp or hf")


def apply(est, arch: Arch, s) -> None:
    """Adjust a one-device estimate (terms and phases, in place) to one of `s.gpus` devices under
    `s.strategy`."""
    t, N = est.terms, s.gpus
    weight_bytes = t["weights"].bytes / est.params["total"]  # per stored weight: the gathered copies' dtype
    from .memory import Term

    if s.strategy == "ddp":
        if N == 1:
            return
        bucket = min(BUCKET_BYTES, t["grads"].bytes)
        t["dp_bucket"] = Term("dp_bucket", "ddp: one gradient bucket being all-reduced", bucket,
                              f"min(parallel.bucket_mb = 25 MiB, all gradients) on each of {N} devices", "transient")
        for ph in est.phases:
            if ph.name == "optimizer step":
                ph.parts["dp_bucket"] = bucket
        return
    for key in SHARDED:
        if key in t and t[key].bytes:
            t[key].bytes /= N
            t[key].label += f" / {N} (fsdp2 shard)"
            t[key].formula = f"({t[key].formula}) / {N} devices"
    pc = arch.param_counts()
    root = pc["embedding"] + pc["final_norm"] + pc["lm_head"]
    layer = pc["per_layer"]
    gathered = (root + 2 * layer) * weight_bytes
    full = s.method == "full"
    grad_layer = layer * BYTES[est.resolved["trainable"]] if full else (est.params["trainable"] / arch.layers) * 4
    t["fsdp_gathered"] = Term("fsdp_gathered", "fsdp2: gathered root group + 2 layers' weights", gathered,
                              f"(embedding + norm + untied head {root:,} + 2 x layer {layer:,}) x {weight_bytes:.3g} B",
                              "transient")
    t["fsdp_grad_layer"] = Term("fsdp_grad_layer", "fsdp2: one layer's full gradient before reduce-scatter",
                                grad_layer, "one decoder layer's trainable parameters x gradient bytes", "transient")
    for ph in est.phases:
        for key in SHARDED:
            if key in ph.parts:
                ph.parts[key] /= N
        if ph.name != "optimizer step":  # the step itself works on the shards only
            ph.parts["fsdp_gathered"] = gathered
        if ph.name.startswith("backward"):
            ph.parts["fsdp_grad_layer"] = grad_layer
