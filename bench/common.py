"""Shared benchmark harness: JSON-lines output, timing, peak memory, the SHD-like workload.

Every benchmark script prints one JSON object per measurement on stdout (and appends it to
`--out`). Each object carries the environment (date, torch version, device, CPU/GPU name, git
commit) so that docs/benchmarks.md can be regenerated from the raw lines alone.

Time is in ms (simulation time); wall-clock durations are reported in seconds (`*_s`).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

ENGINES = ("torch", "torch-sequential", "sequential-cpu", "triton-scan", "triton-sequential")


# ----------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_ENV_CACHE: dict | None = None


def env_info(device: str) -> dict:
    """Machine and software description attached to every record."""
    global _ENV_CACHE
    if _ENV_CACHE is None:
        _ENV_CACHE = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "commit": _git_commit(),
            "host": platform.node(),
        }
    env = dict(_ENV_CACHE)
    # read at every record: the thread count is set from --threads after import, and the load
    # of a shared machine changes during a run (timings under load are slower, say so)
    env["torch_threads"] = torch.get_num_threads()
    env["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    env["device"] = device
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


# ----------------------------------------------------------------------------- output


class Emitter:
    """Prints one JSON object per measurement; optionally appends the same line to a file."""

    def __init__(self, bench: str, device: str, out: str | None, quick: bool):
        self.bench = bench
        self.device = device
        self.quick = quick
        self.path = Path(out) if out else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")  # one run per file: the report reads a consistent set

    def emit(self, **fields) -> dict:
        rec = {"bench": self.bench, "quick": self.quick,
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        rec.update(env_info(self.device))
        rec.update(fields)
        line = json.dumps(rec, default=_json_default, allow_nan=True)
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(line + "\n")
        return rec

    def skip(self, reason: str, **fields) -> dict:
        """The agreed line for anything that could not be measured."""
        return self.emit(skipped=fields.pop("what", True), reason=reason, **fields)


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def base_parser(description: str, bench: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="small sizes and few repeats (under 2 minutes on a 2-core CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help=f"JSON-lines file (default bench/results/{bench}[-quick][-cuda].jsonl)")
    p.add_argument("--no-out", action="store_true", help="print only, write no file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the engines issue many small ops, and on "
                        "2 cores 2 threads made them ~10x slower; 0 keeps torch's default)")
    return p


def apply_threads(args) -> None:
    """torch.set_num_threads(--threads) before anything is timed (0: leave torch's default)."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def make_emitter(args, bench: str) -> Emitter:
    apply_threads(args)  # every script builds its emitter first: threads are set before timing
    if args.no_out:
        out = None
    elif args.out:
        out = args.out
    else:
        tag = ("-quick" if args.quick else "") + ("-cuda" if args.device.startswith("cuda") else "")
        out = str(RESULTS / f"{bench}{tag}.jsonl")
    return Emitter(bench, args.device, out, args.quick)


# ----------------------------------------------------------------------------- timing


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: str = "cpu", repeats: int = 5, warmup: int = 1,
            max_seconds: float | None = None) -> dict:
    """Median wall time of fn() over `repeats` runs after `warmup` runs (seconds).

    `max_seconds` stops repeating early once that much time was spent (at least one timed run),
    so that a slow engine cannot blow a --quick budget; the record says how many runs were made.
    """
    for _ in range(warmup):
        fn()
        synchronize(device)
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if max_seconds is not None and spent > max_seconds:
            break
    return {"median_s": statistics.median(times), "min_s": min(times),
            "runs": len(times), "all_s": times}


# ----------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    # Give freed heap pages back to the OS so that the RSS baseline is not inflated by earlier
    # runs (otherwise a new peak can hide inside already-mapped but free memory).
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> dict:
    """Peak extra memory used while fn() runs, in bytes.

    GPU: torch.cuda.max_memory_allocated above the allocation before the call.
    CPU: the largest of (a) resident-set growth sampled every ~0.5 ms by a thread (torch's CPU
    allocator is invisible to tracemalloc), (b) the ru_maxrss increase, (c) tracemalloc's peak
    of Python-level allocations. All three are lower bounds of the true peak; their max is
    reported as `peak_bytes`, each one separately too.
    """
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        return {"peak_bytes": int(peak), "method": "cuda.max_memory_allocated"}
    _malloc_trim()
    base = _rss_bytes()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    th.start()
    try:
        fn()
    finally:
        stop.set()
        th.join()
        _, tm_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    peak[0] = max(peak[0], _rss_bytes())
    maxrss_delta = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - maxrss0)
    rss_delta = peak[0] - base
    return {"peak_bytes": int(max(rss_delta, maxrss_delta, tm_peak)), "rss_delta": int(rss_delta),
            "maxrss_delta": int(maxrss_delta), "tracemalloc_peak": int(tm_peak),
            "method": "rss-sampler/ru_maxrss/tracemalloc"}


# ----------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class ShdLike:
    """Synthetic stand-in for one SHD batch: independent Poisson inputs.

    Default: 700 channels at 12 events/s each over 1 s -> ~8,400 events per sample, sorted by
    time, padded with +inf (channel 0 at padding), like `pad_collate` of the real data set.
    """

    batch: int = 32
    n_inputs: int = 700
    rate_hz: float = 12.0
    duration_ms: float = 1000.0
    seed: int = 0

    @property
    def mean_events(self) -> float:
        return self.n_inputs * self.rate_hz * self.duration_ms / 1000.0

    def events(self, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        lam = torch.full((self.batch, self.n_inputs), self.rate_hz * self.duration_ms / 1000.0,
                         dtype=torch.float64)
        counts = torch.poisson(lam, generator=g).long()  # [B, C]
        per_sample = counts.sum(1)
        n = int(per_sample.max().item()) if self.batch else 0
        times = torch.full((self.batch, max(n, 1)), math.inf, dtype=torch.float64)
        chans = torch.zeros((self.batch, max(n, 1)), dtype=torch.int64)
        for b in range(self.batch):
            ch = torch.repeat_interleave(torch.arange(self.n_inputs), counts[b])
            t = torch.rand(ch.numel(), generator=g, dtype=torch.float64) * self.duration_ms
            order = torch.argsort(t)
            times[b, : ch.numel()] = t[order]
            chans[b, : ch.numel()] = ch[order]
        return times.to(device=device, dtype=dtype), chans.to(device)


def shd_weights(n_in: int, n_out: int, seed: int = 1, gain: float = 1.0, dtype=torch.float64,
                device="cpu", mean: float = 0.02, std: float = 0.05) -> torch.Tensor:
    """Input->hidden weights for the SHD-like workload (CubaLIF tau_m 20 ms, tau_s 5 ms, v_th 1).

    With 8,400 input events/s the synaptic current has mean 8.4/ms * tau_s * mean = 42 * mean
    (0.84 for the default) plus shot noise; calibrated with bench/discrete.py at dt = 0.1 ms on
    4 samples: mean 4.4 Hz per hidden neuron, 13% silent, at most ~21 spikes in 1 s (checked in
    tests/bench). `gain` scales both; the benchmarks report the rate they measure.
    """
    g = torch.Generator().manual_seed(seed)
    w = mean + std * torch.randn(n_in, n_out, generator=g, dtype=torch.float64)
    return (gain * w).to(device=device, dtype=dtype)


def readout_weights(n_in: int, n_out: int, seed: int = 2, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_in, n_out, generator=g, dtype=torch.float64) / math.sqrt(max(n_in, 1))
    return w.to(device=device, dtype=dtype)


def spikes_to_events(times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerResult.times [B, N, S] (+inf padded) -> input events of the next layer, as the network
    passes them (runtime/network.py flatten_spikes: time-sorted, cut at the busiest sample)."""
    from spikescan.runtime.network import flatten_spikes

    return flatten_spikes(times, torch.isfinite(times).sum(2))


def bin_events(times: torch.Tensor, channels: torch.Tensor, n_channels: int, dt: float,
               n_steps: int, dtype=torch.float32) -> torch.Tensor:
    """Events -> dense [T, B, C] counts per time bin (the input of discrete-time frameworks).

    An event at t lands in bin floor(t / dt); events at or after n_steps * dt are dropped.
    """
    B = times.shape[0]
    ok = torch.isfinite(times)
    k = torch.where(ok, torch.floor(times / dt), torch.zeros_like(times)).long()
    ok = ok & (k < n_steps)
    dense = torch.zeros(n_steps * B * n_channels, dtype=dtype, device=times.device)
    bidx = torch.arange(B, device=times.device)[:, None].expand_as(k)
    flat = (k * B + bidx) * n_channels + channels
    dense.index_add_(0, flat[ok], torch.ones(int(ok.sum()), dtype=dtype, device=times.device))
    return dense.view(n_steps, B, n_channels)


def loglog_slope(xs, ys) -> float | None:
    """Least-squares exponent p of y ~ x^p (None with fewer than two usable points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


# ----------------------------------------------------------------------------- spikescan access


def load_neuron(model_file: str, name: str):
    """NeuronIR of a neuron in models/, through the compiler driver (fully analysed)."""
    from spikescan.compiler.driver import load_model

    return load_model(str(REPO / "models" / model_file)).neurons[name]


def get_engine(name: str, device: str):
    """(engine module, None) or (None, reason) when the engine is unavailable here."""
    if name.startswith("triton") and not str(device).startswith("cuda"):
        return None, "Triton engines run on CPU only in interpreter mode (TRITON_INTERPRET=1); " \
                     "not timed on CPU"
    if name == "sequential-cpu" and str(device).startswith("cuda"):
        return None, "sequential-cpu is a CPU engine"
    try:
        from spikescan.runtime.engines import get_engine as _get
        return _get(name), None
    except Exception as e:  # noqa: BLE001 - any failure to load means "skip with the reason"
        return None, f"{type(e).__name__}: {e}"


def add_repo_to_path() -> None:
    """tests/mpref.py is imported as `tests.mpref` / `mpref` from the repo root."""
    for p in (str(REPO), str(REPO / "tests")):
        if p not in sys.path:
            sys.path.insert(0, p)
