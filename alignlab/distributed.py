"""Data-parallel (`ddp`) and fully sharded (`fsdp2`) training on torch.distributed, launched by torchrun.

    torchrun --nproc-per-node 4 -m alignlab.cli sft -c sft_tiny     # or: alignlab sft -c sft_tiny --nproc 4

Every loop makes the same few calls; in a plain single process each of them does nothing:

    dist = distributed.setup(cfg)       the process group from torchrun's RANK / WORLD_SIZE / LOCAL_RANK
                                        (gloo on CPU, nccl on CUDA), checks of the config against the ranks
    policy = dist.wrap(policy)          ddp: the same start everywhere (trainable weights broadcast from
                                        rank 0); fsdp2: `fully_shard` per decoder layer, then the model
    mine = dist.shard(items)            this rank's contiguous block of the step's examples (prompts)
    n = dist.sum(local_count)           a normaliser (tokens, sequences) of the whole optimizer step
    optim.step(...)                     sums gradients over ranks, clips by the global norm (below)
    stats = dist.sum(...) / dist.cat()  the whole step's statistics, the same on every rank

What makes N ranks take the update one process takes on the same global batch:
- The config's batch sizes stay global (`global_batch_seqs`, `prompts_per_step`, ...). Each rank takes
  a contiguous block of the step's examples (a GRPO prompt with its whole group); micro-batches are
  per rank.
- Every loss is a sum over the rank's examples divided by a count of the whole step, so the sum of the
  ranks' gradients is the one-process gradient. `reduce_gradients` (called by `optim.step`) sums them:
  one bucketed all-reduce per optimizer step for replicated parameters (ddp), and FSDP2's own
  reduce-scatter, set to sum, for sharded ones. The grad norm is the global one on every rank.
- Rollouts are seeded per prompt (`rollout.request_seeds` by the prompt's index in the whole step), so a
  prompt draws the same samples on whichever rank samples it.

Why `ddp` is not the `DistributedDataParallel` wrapper: the loops run the decoder and the LM head
directly (chunked log-probs, PPO's value trunk, peft's adapter switching, generate), so a wrapper's
forward, which arms its gradient hooks, would be bypassed. The gradients are instead summed once, after
the step's last micro-batch (no `no_sync` bookkeeping; no overlap of that all-reduce with backward).

Only rank 0 writes: metrics, samples, config, checkpoints (fsdp2: every rank writes its optimizer
shard through torch.distributed.checkpoint). Every rank evaluates (the same numbers: with fsdp2 every
forward is a collective) and rank 0's evaluation metrics are broadcast, so the watchdog decides the
same on every rank. A rank that fails writes its message to the rendezvous store; a watcher thread on
every other rank prints it and ends that rank, so the job stops with the failing rank's message instead
of waiting in a collective; the process-group timeout (`parallel.timeout_s`) is the backstop.
"""
from __future__ import annotations

import datetime
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .errors import ConfigError

FAILED_KEY = "alignlab/failed"
OPTIM_DIR = "optimizer_dcp"  # fsdp2: the sharded optimizer state inside checkpoints/step_N/


@dataclass
class Dist:
    """Where this process stands: its rank among `world`, the strategy, and the helpers the loops call."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    strategy: str = "ddp"
    active: bool = False  # a process group exists (under torchrun always, even with one rank; fsdp2 always)
    cfg: object = None  # the ParallelConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live
    trained: object = None  # fsdp2: the model the optimizer trains (its optimizer state is saved with it)
    sharded: list = field(default_factory=list)  # fsdp2: every model wrapped with fully_shard
    mesh: object = None
    _watch: threading.Event | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def lockstep(self) -> bool:
        """fsdp2: every forward and backward is a collective, so every rank must run each of them."""
        return self.active and self.strategy == "fsdp2"

    # -- sharding ---------------------------------------------------------------------------------------

    def block(self, n: int) -> slice:
        """This rank's contiguous share of n items (the first n % world ranks get one more)."""
        per, extra = divmod(n, self.world)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (self.rank < extra))

    def shard(self, items: list) -> list:
        return items if self.world == 1 else items[self.block(len(items))]

    def seeds(self, seed: int, n_total: int, n: int) -> list[int]:
        """Per-prompt sampling seeds of this rank's block of a step's `n_total` prompts: the seeds a single
        process gives the same prompts (`rollout.request_seeds` by index in the whole step)."""
        from .rollout import request_seeds

        return self.shard(request_seeds(seed, n_total, n))

    def local_key(self, key: int) -> int:
        """A seed or data key this rank alone uses (draws that are per rank by nature, e.g. DAPO redraws);
        the key itself in one process."""
        return key * self.world + self.rank

    def map_sharded(self, fn, items: list):
        """fn(list) -> a tensor (or list) with one row per item, run over this rank's block of `items` and
        gathered in order on every rank. The blocks are padded to one size (the last item repeated, its
        rows dropped) so every rank runs as many forwards."""
        if self.world == 1 or not items:
            return fn(items)
        per = -(-len(items) // self.world)
        padded = items + items[-1:] * (per * self.world - len(items))
        mine = fn(padded[self.rank * per : (self.rank + 1) * per])
        if isinstance(mine, torch.Tensor):
            return self.cat(mine)[: len(items)]
        return [x for part in self.gather(mine) for x in part][: len(items)]

    # -- reductions -------------------------------------------------------------------------------------

    def sum(self, x):
        """A number, a tensor, a list of numbers or a dict of numbers summed over ranks (float64 for numbers;
        a dict's keys must be the same on every rank)."""
        if not self.active or self.world == 1:
            return x
        if isinstance(x, torch.Tensor):
            t = x.detach().to(self.device, copy=True)
            dist.all_reduce(t)
            return t.to(x.device)
        if isinstance(x, dict):
            keys = sorted(x)  # the same order on every rank
            total = dict(zip(keys, self.sum([float(x[k]) for k in keys])))
            return {k: total[k] for k in x}
        if isinstance(x, (list, tuple)):
            t = torch.tensor([float(v) for v in x], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            return t.tolist()
        v = self.sum([x])[0]
        return int(v) if isinstance(x, int) and not isinstance(x, bool) else v

    def cat(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor concatenated along dim 0, in rank order (first dims may differ)."""
        if not self.active or self.world == 1:
            return t
        if t.dtype == torch.bool:
            return self.cat(t.to(torch.uint8)).bool()
        n = torch.tensor([t.shape[0]], device=self.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        buf = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=self.device)
        buf[: t.shape[0]] = t.detach().to(self.device)
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(t.device)

    def gather(self, obj) -> list:
        """Every rank's picklable object, in rank order."""
        if not self.active or self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's picklable object on every rank."""
        if not self.active or self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn):
        """fn() on rank 0 only (it has side effects on shared files), its result or its exception on every rank."""
        if not self.active or self.world == 1:
            return fn()
        out = None
        if self.is_main:
            try:
                out = ("ok", fn())
            except Exception as exc:  # every rank raises it: one clear error, no rank left waiting
                out = ("error", exc)
        kind, val = self.broadcast(out)
        if kind == "error":
            raise val
        return val

    def barrier(self) -> None:
        if self.active and self.world > 1:
            dist.barrier()

    # -- models -------------------------------------------------------------------------------------------

    def wrap(self, model, train: bool = True):
        """ddp: the same trainable weights on every rank (broadcast from rank 0). fsdp2: `fully_shard` on each
        decoder layer, then on the whole model (embeddings, final norm, LM head: gathered from a forward to
        its backward). The loops' direct decoder call (`logprobs`) goes through `alignlab_decoder`, registered
        as an FSDP forward method, so it gathers and frees like `forward`. Gradients are reduced as sums (the
        losses are already divided by the whole step's counts). Call before building the optimizer."""
        if not self.active:
            return model
        if self.strategy == "ddp":
            if self.world > 1 and train:
                with torch.no_grad():
                    for p in model.parameters():
                        if p.requires_grad:
                            dist.broadcast(p.data, src=0)
            return model
        from torch.distributed.fsdp import (CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy,
                                            fully_shard, register_fsdp_forward_method)

        from .models import is_peft

        f = self.cfg.fsdp2
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(f.mixed_precision)
        kw = dict(mesh=self._mesh(),
                  mp_policy=MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32) if half
                  else MixedPrecisionPolicy(),
                  offload_policy=CPUOffloadPolicy(pin_memory=True) if f.cpu_offload else OffloadPolicy())
        base = model.get_base_model() if is_peft(model) else model
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, base.base_model_prefix)
        layers = getattr(decoder, "layers", None)
        if layers is None:
            raise ConfigError(f"parallel.strategy=fsdp2: {type(base).__name__} has no decoder.layers to shard one "
                              "by one; use parallel.strategy=ddp")
        for layer in layers:
            fully_shard(layer, reshard_after_forward=f.reshard_after_forward, **kw)
        fully_shard(base, **kw)
        base.alignlab_decoder = types.MethodType(_decoder_forward, base)
        register_fsdp_forward_method(base, "alignlab_decoder")
        for m in base.modules():
            if isinstance(m, FSDPModule):
                m.set_gradient_divide_factor(1.0)  # sum, not mean: the losses carry the global normaliser
                m.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
        if train:
            self.trained = model
        self.sharded.append(base)
        return model

    def reshard(self) -> None:
        """fsdp2: put every sharded model back in its sharded state. The root group stays gathered after a
        forward without gradients (evaluation, rollouts) until a backward frees it; the optimizer step and
        the state-dict functions must see the shards."""
        from torch.distributed.fsdp import FSDPModule

        for base in self.sharded:
            for m in base.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()

    def _mesh(self):
        if self.mesh is None:
            from torch.distributed.device_mesh import init_device_mesh

            self.mesh = init_device_mesh(self.device.type, (self.world,))
        return self.mesh


def _decoder_forward(self, **kw):
    """The decoder alone (no LM head): what `logprobs.get_response_log_probs` runs, as an FSDP forward."""
    return self.get_decoder()(**kw)


_current = Dist()


def current() -> Dist:
    return _current


def launched() -> bool:
    """Started by torchrun (or any launcher that sets the env:// variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(cfg) -> Dist:
    """The process group of this run (created once per process: a pipeline's stages share it), and the
    config's batch sizes and options checked against the number of ranks. Under torchrun: one group,
    gloo for CPU models, nccl for CUDA (the device is cuda:LOCAL_RANK). A single process without
    torchrun: no group with ddp; a one-rank group with fsdp2 (fully_shard needs a mesh)."""
    global _current
    p = cfg.parallel
    d = _current
    if not d.active and (launched() or p.strategy == "fsdp2"):
        d = _init(cfg)
    d.strategy, d.cfg, d.trained, d.sharded = p.strategy, p, None, []
    _current = d
    check(cfg, d)
    return d


def _init(cfg) -> Dist:
    from .models import pick_device

    p = cfg.parallel
    env = os.environ
    rank, world, local = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    kind = pick_device(cfg.model.device).type
    if kind == "mps":
        raise ConfigError("torch.distributed has no backend for MPS; run with model.device=cpu, or without torchrun")
    if kind == "cuda":
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    timeout = datetime.timedelta(seconds=p.timeout_s)
    if launched():
        dist.init_process_group(backend, timeout=timeout, device_id=device if kind == "cuda" else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    d = Dist(rank=rank, world=world, local_rank=local, active=True, device=device)
    if world > 1:
        d._watch = threading.Event()
        threading.Thread(target=_watch_for_failures, args=(d.rank, d._watch), daemon=True,
                         name="alignlab-failure-watch").start()
    if rank != 0:
        from .tracking import console

        console.quiet = True  # progress, resume notes, evaluations: rank 0 speaks for the job
    return d


def check(cfg, d: Dist) -> None:
    """Refuse, before any model loads, what cannot run on these ranks, naming the key."""
    p = cfg.parallel
    algo = type(cfg).__name__.removesuffix("Config").lower()
    if d.world > 1:
        for key in ("training.global_batch_seqs", "training.global_batch_pairs", "rl.prompts_per_step",
                    "ei.questions_per_round", "ppo.rollout_size", "ppo.minibatch_seqs"):
            value = _get(cfg, key)
            if isinstance(value, int) and value % d.world:
                raise ConfigError(f"{key}={value} does not split over {d.world} ranks: it is the global size, each "
                                  f"rank takes an equal share; use a multiple of {d.world}")
        for sec in ("relora", "rank1"):  # merges into the base at step ends: not yet checked across ranks
            x = getattr(cfg, sec, None)
            if x is not None and x.enabled:
                raise ConfigError(f"{sec}.enabled=true runs in one process for now (its merges into the base are not "
                                  f"yet tested across ranks); run it without torchrun")
        rm = getattr(cfg, "rm", None)
        if rm is not None and rm.kind == "encoder":
            raise ConfigError("rm.kind=encoder trains in one process (a few seconds); run it without torchrun")
    if p.strategy != "fsdp2":
        return
    refuse = {
        "ei": "expert iteration's kept samples split unevenly over ranks, and fsdp2 needs every rank in every forward",
        "ppo": "PPO's critic (value head, second trunk) is not sharded",
    }
    if algo in refuse:
        raise ConfigError(f"parallel.strategy=fsdp2 is not supported by {algo}: {refuse[algo]}; use "
                          "parallel.strategy=ddp")
    if cfg.lora.qlora:
        raise ConfigError("parallel.strategy=fsdp2 with lora.qlora=true: 4-bit weights cannot be sharded by "
                          "fully_shard; use parallel.strategy=ddp")
    sampling = getattr(cfg, "sampling", None)
    if sampling is not None and sampling.backend == "vllm":
        raise ConfigError("parallel.strategy=fsdp2 with sampling.backend=vllm is not supported (the engine needs the "
                          "whole weights on each rank); use parallel.strategy=ddp or sampling.backend=hf")
    if sampling is not None and sampling.hf_decode not in ("auto", "generate"):  # auto is generate under fsdp2
        raise ConfigError(f"parallel.strategy=fsdp2 needs sampling.hf_decode=generate (its synced decoding keeps every "
                          f"rank in each decode step); {sampling.hf_decode} stops each rank on its own")
    if _get(cfg, "training.max_tokens_per_micro_batch") is not None:
        raise ConfigError("parallel.strategy=fsdp2 with training.max_tokens_per_micro_batch: ranks would run different "
                          "numbers of micro-batches, and fsdp2 needs every rank in every forward; remove it")
    wd = getattr(cfg.training, "watchdog", None)
    if wd is not None and wd.uses_rollback():
        raise ConfigError(f"training.watchdog.{wd.uses_rollback()[0]}.action=rollback is not supported with "
                          "parallel.strategy=fsdp2 (it reloads unsharded weights); use warn, skip or stop")
    if p.fsdp2.cpu_offload and d.device.type != "cuda":
        raise ConfigError("parallel.fsdp2.cpu_offload=true offloads from a GPU; this run is on the CPU already")


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


# -- gradients (optim.step) -------------------------------------------------------------------------------


def _is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


@torch.no_grad()
def reduce_gradients(params: list) -> None:
    """Sum the step's gradients over ranks: replicated parameters (all of them with ddp; with fsdp2 those
    outside `fully_shard`, e.g. PPO's value head) in buckets of `parallel.bucket_mb`; fsdp2's sharded ones
    are reduce-scattered by FSDP already. A parameter that has a gradient on some rank only gets zeros on
    the others, so every rank reduces the same tensors; one that has none anywhere keeps None, as in one
    process (AdamW skips it)."""
    d = _current
    if not d.active:
        return
    if d.lockstep:
        d.reshard()
    plain = [p for p in params if not _is_sharded(p)]
    if not plain:
        return
    has = torch.tensor([p.grad is not None for p in plain], dtype=torch.float32, device=d.device)
    if d.world > 1:
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads = []
    for p, h in zip(plain, has.tolist()):
        if h and p.grad is None:
            p.grad = torch.zeros_like(p)
        if h:
            grads.append(p.grad)
    limit = d.cfg.bucket_mb * 2**20
    bucket: list[torch.Tensor] = []
    size = 0  # the open bucket's bytes
    for g in grads:
        nbytes = g.numel() * g.element_size()
        if bucket and (g.dtype != bucket[0].dtype or g.device != bucket[0].device or size + nbytes > limit):
            _all_reduce_bucket(bucket, d)
            bucket, size = [], 0
        bucket.append(g)
        size += nbytes
    if bucket:
        _all_reduce_bucket(bucket, d)


def _all_reduce_bucket(grads: list[torch.Tensor], d: Dist) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    on = flat.to(d.device)
    dist.all_reduce(on)
    flat = on.to(flat.device)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def clip_grad_norm_(params: list, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_, with the norm over the whole model when some gradients are fsdp2
    shards: the shards' squares summed over ranks, the replicated ones counted once."""
    grads = [p.grad for p in params if p.grad is not None]
    if not any(_is_sharded(g) for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    d = _current
    sq_sharded = torch.zeros((), dtype=torch.float32, device=d.device)
    sq_plain = torch.zeros((), dtype=torch.float32, device=d.device)
    for g in grads:
        if _is_sharded(g):
            sq_sharded += g.to_local().float().pow(2).sum().to(d.device)
        else:
            sq_plain += g.float().pow(2).sum().to(d.device)
    if d.world > 1:
        dist.all_reduce(sq_sharded)
    total = (sq_sharded + sq_plain).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.to_local().device if _is_sharded(g) else g.device))
    return total


# -- checkpoints (checkpoint.save / restore) ---------------------------------------------------------------


def full_state_dict(model) -> dict | None:
    """fsdp2: the whole model's weights gathered on rank 0's CPU (a collective: every rank calls it; the
    others get {}). Otherwise None: the model saves its own."""
    if not _current.lockstep:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    _current.reshard()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_optimizer(model, optimizer, path) -> None:
    """fsdp2: every rank writes its shard of the optimizer state to `path` (torch.distributed.checkpoint)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    _current.reshard()
    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(path))


def load_optimizer(optimizer, path) -> None:
    """fsdp2: the optimizer state of `path`, resharded to this run's ranks by torch.distributed.checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    model = _current.trained
    if model is None:
        raise RuntimeError("load_optimizer: no model was wrapped for training (distributed.wrap)")
    _current.reshard()
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(path))
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


# -- failures and the end of a run (cli) ------------------------------------------------------------------


def _store():
    return dist.distributed_c10d._get_default_store()


def report_failure(exc: BaseException) -> None:
    """Tell the other ranks that this one failed, and why (the first failure is kept)."""
    d = _current
    if not d.active or d.world == 1:
        return
    msg = f"rank {d.rank}: {type(exc).__name__}: {exc}"
    try:
        store = _store()
        if not store.check([FAILED_KEY]):
            store.set(FAILED_KEY, msg)
    except Exception:  # the store is gone: the launcher is already stopping the job
        pass


def _watch_for_failures(rank: int, stop: threading.Event) -> None:
    store = _store()
    while not stop.wait(0.2):
        try:
            if not store.check([FAILED_KEY]):
                continue
            msg = store.get(FAILED_KEY).decode()
        except Exception:
            return
        if msg.startswith(f"rank {rank}:"):
            return
        print(f"error: {msg}\n(rank {rank} stops too: a failed rank leaves the others waiting in a collective)",
              file=sys.stderr, flush=True)
        os._exit(1)


def teardown() -> None:
    """The end of a run that went well: wait for every rank, then close the process group."""
    global _current
    d = _current
    if not d.active:
        return
    if d._watch is not None:
        d.barrier()
        d._watch.set()
    dist.destroy_process_group()
    _current = Dist()


def exit_failed(code: int) -> None:
    """A rank failed: its message was printed and reported; leave without waiting for the others. The
    short pause lets their watchers relay the message before this rank's exit breaks their collectives
    (gloo then raises "connection closed"; NCCL would only time out)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(1.0)
    os._exit(code)
