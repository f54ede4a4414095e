"""Exact live-tensor accounting on any device, by phase (imports torch: only for ``--measure``).

``LiveTensorTracker`` is a ``TorchDispatchMode``: every tensor an operator returns is looked at
once per underlying storage, its ``nbytes`` is added to the live total, and a weak reference on
the storage subtracts it again when the storage is freed. The peak of that total is kept per
phase (``forward``, ``backward``, ``optimizer``). Storages that exist before tracking starts
(weights, optimizer states, inputs) are registered with ``track_existing``.

What this counts: every storage produced by an operator that goes through the dispatcher,
which in eager PyTorch is every tensor Python or autograd can see (parameters, gradients,
optimizer states, activations saved for backward, temporaries, gradient buffers). What it does
not count: scratch memory a kernel allocates and frees inside one operator without returning it
(e.g. a BLAS or attention kernel's workspace), allocator rounding and fragmentation, and the
Python/C++ runtime itself. On CUDA the same phases are read from
``torch.cuda.max_memory_allocated`` instead, which does include kernel scratch and rounding.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    try:
        return [t.untyped_storage()]
    except (RuntimeError, NotImplementedError):  # e.g. sparse or meta-only wrappers
        return []


class LiveTensorTracker(TorchDispatchMode):
    """Live tensor bytes and their peak per phase, at operator granularity."""

    def __init__(self, record_timeline: bool = False) -> None:
        super().__init__()
        self.live = 0
        self.phase = "setup"
        self.peaks: dict[str, int] = {}
        self.phase_start: dict[str, int] = {}
        self._refs: dict[int, tuple[weakref.ref, int]] = {}
        self.record_timeline = record_timeline
        self.timeline: list[tuple[str, str, int]] = []  # (phase, op, live bytes after op)

    # -- bookkeeping -------------------------------------------------------------------------
    def _add(self, st: torch.UntypedStorage) -> None:
        key = id(st)
        if key in self._refs:
            return
        nbytes = st.nbytes()
        if st.device.type == "meta":
            return

        def _freed(_ref, key=key, nbytes=nbytes, tracker=weakref.ref(self)):
            tr = tracker()
            if tr is not None and key in tr._refs:
                del tr._refs[key]
                tr.live -= nbytes

        self._refs[key] = (weakref.ref(st, _freed), nbytes)
        self.live += nbytes
        if self.live > self.peaks.get(self.phase, 0):
            self.peaks[self.phase] = self.live

    def track_existing(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                for st in _storages(t):
                    self._add(st)
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.live)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phase_start[phase] = self.live
        self.peaks[phase] = max(self.peaks.get(phase, 0), self.live)

    # -- dispatch ----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat, _ = tree_flatten(out)
        for t in flat:
            if isinstance(t, torch.Tensor):
                for st in _storages(t):
                    self._add(st)
        if self.record_timeline:
            self.timeline.append((self.phase, str(func), self.live))
        return out
