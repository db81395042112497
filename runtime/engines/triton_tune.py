"""Tile-size autotune of the Triton engines: the block of neurons per program (`block_n`).

`autotune(...)` times a few configurations (forward, and the adjoint when `backward`) on a given
workload, checks that each gives the same spikes as the first, and caches the fastest under the
generated module's name (neuron, dtype and a hash of the code generated from the IR), the mode
and the GPU name, in <cache>/triton_tune.json (next to gpu_measured.json). The engine then
uses the cached `block_n` (`lookup`) when none is given; untuned, it keeps its default (32 on
CUDA, 64 under the interpreter). bench/gpu_check.py runs the autotune on the SHD-like workload.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch

from spikescan.runtime.engines.gpu_measured import cache_dir, gpu_name, read_json, write_json

CONFIGS = (16, 32, 64)


def tune_path():
    return cache_dir() / "triton_tune.json"


def key(mod_name: str, mode: str, device) -> str:
    return f"{mod_name}|{mode}|{gpu_name(device)}"


def lookup(mod_name: str, mode: str, device) -> Optional[int]:
    """The tuned block_n for this module, mode and GPU, or None."""
    try:
        v = read_json(tune_path()).get("entries", {}).get(key(mod_name, mode, device), {}).get("block_n")
    except Exception:  # noqa: BLE001 - no device name: untuned
        return None
    return int(v) if isinstance(v, int) and v > 0 and (v & (v - 1)) == 0 else None


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def autotune(ir, params, times, channels, weight, delays=None, *, mode: str = "scan",
             configs: Sequence[int] = CONFIGS, backward: bool = True, repeats: int = 3, **kw) -> dict:
    """Time `configs` (block_n values, powers of two) on this workload, store and return
    {"key", "block_n", "timings_s": {block_n: median seconds}}. ValueError when two
    configurations disagree on the spikes (then nothing is stored)."""
    from spikescan.runtime.engines.triton_engine import _TORCH_DTYPES, _module, run_layer

    dev = times.device
    mod = _module(ir, _TORCH_DTYPES[times.dtype])
    ref, timings = None, {}
    for bn in configs:
        if bn <= 0 or bn & (bn - 1):
            raise ValueError(f"block_n {bn} is not a power of two")

        def once():
            w = weight.detach().clone().requires_grad_(backward)
            res = run_layer(ir, params, times, channels, w, delays, mode=mode, block_n=bn, **kw)
            if backward:
                fin = torch.isfinite(res.times)
                torch.where(fin, res.times, torch.zeros((), dtype=res.times.dtype, device=dev)).sum().backward()
            return res

        res = once()  # compile and warm up
        if ref is None:
            ref = res
        elif not torch.equal(res.counts, ref.counts) or not _close(res.times, ref.times):
            raise ValueError(f"block_n {bn} gives other spikes than block_n {configs[0]}: not tuning")
        samples = []
        for _ in range(max(1, repeats)):
            _sync(dev)
            t0 = time.perf_counter()
            once()
            _sync(dev)
            samples.append(time.perf_counter() - t0)
        timings[bn] = sorted(samples)[len(samples) // 2]
    best = min(timings, key=timings.get)
    k = key(mod.__name__, mode, dev)
    data = read_json(tune_path())
    data.setdefault("entries", {})[k] = dict(block_n=best, timings_s={str(b): t for b, t in timings.items()})
    write_json(tune_path(), data)
    return dict(key=k, block_n=best, timings_s=timings)


def _close(a, b) -> bool:
    if a.shape != b.shape:
        return False
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb):
        return False
    if not bool(fa.any()):
        return True
    err = float((a[fa] - b[fb]).abs().max())
    scale = float(a[fa].abs().max())
    return err <= 64 * torch.finfo(a.dtype).eps * max(scale, 1.0) or math.isclose(err, 0.0)
