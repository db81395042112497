"""Samples in parallel for the JIT-compiled CPU engines (sequential-cpu, recurrent-cpu).

The generated loops treat one sample at a time and are called through ctypes, which releases the
GIL, so Python threads run them on several cores at once. A batch is cut into slices that depend
only on the batch size (never on the thread count); every slice accumulates its gradients into
its own buffers, and the buffers are added in slice order. So the results are the same, bit for
bit, whatever the number of threads.

    set_threads(n)           # n threads for the compiled engines (None: torch.get_num_threads())
    threads() -> int
    slices(B) -> [(b0, b1)]  # the fixed cut of a batch of B samples
    runs(parts, k)           # parts cut into k runs of consecutive parts
    spans(B) -> [(b0, b1)]   # those slices joined into one contiguous span per thread
    forward_parts(B)         # the parts of a forward (samples independent: any cut, same bits):
                             # the whole batch on 1 thread, else the slices (balanced on the pool)
    run(fn, parts)           # fn(part) for every part, on the pool; results in order

The torch engines are not affected: their many small ops run fastest on one intra-op thread
(runtime/train.py sets that), while these loops want one core each.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

SLICES = 8  # the most slices a batch is cut into: enough for 8 cores, few gradient buffers to add
_THREADS: Optional[int] = None
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_SIZE = 0
_LOCK = threading.Lock()


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(n: Optional[int]) -> None:
    """Threads for the compiled CPU engines: a positive number, or None to follow
    torch.get_num_threads()."""
    global _THREADS
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"engine threads must be a positive integer or None, got {n!r}")
    _THREADS = n


def threads() -> int:
    return _THREADS if _THREADS is not None else max(1, torch.get_num_threads())


def slices(B: int) -> list[tuple[int, int]]:
    """[b0, b1) slices of a batch: min(B, SLICES) parts of near-equal size, a function of B only."""
    k = max(1, min(B, SLICES))
    bounds = [B * i // k for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def runs(parts: Sequence[T], k: int) -> list[list[T]]:
    """parts cut into min(k, len(parts)) runs of consecutive parts of near-equal counts."""
    k = max(1, min(k, len(parts)))
    cuts = [len(parts) * i // k for i in range(k + 1)]
    return [list(parts[cuts[i]:cuts[i + 1]]) for i in range(k)]


def spans(B: int) -> list[tuple[int, int]]:
    """The slices of `slices(B)` joined into min(threads(), #slices) contiguous spans (one call
    each instead of one per slice)."""
    return [(r[0][0], r[-1][1]) for r in runs(slices(B), threads())]


def forward_parts(B: int) -> list[tuple[int, int]]:
    """The parts a forward pass runs as: one call on 1 thread (per-call overhead), the fixed
    slices on several (the pool hands them out as threads free up: samples differ in cost, and
    one fixed span per thread left a core idle at the end; measured 1.27x instead of 1.73x on 2)."""
    return [(0, B)] if threads() <= 1 or B <= 1 else slices(B)


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE != n:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=n, thread_name_prefix="spikescan-cpu"), n
        return _POOL


def run(fn: Callable[[T], R], parts: Sequence[T]) -> list[R]:
    """[fn(p) for p in parts], on min(threads(), len(parts)) threads; exceptions propagate."""
    n = min(threads(), len(parts))
    if n <= 1:
        return [fn(p) for p in parts]
    return list(_pool(n).map(fn, parts))
