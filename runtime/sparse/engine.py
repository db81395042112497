"""The compiled event-driven sparse engine (compiler/backends/mlir/sparse.py, JIT-compiled for the
CPU through torch-mlir's ExecutionEngine): O(K log N) per spike.

Memory: per neuron one record of 8 f64 (64 bytes, one cache line, for up to 4 state variables:
state, last update, refractory end, layer, heap position; 16 f64 beyond) and one heap entry
(key, neuron: 16 bytes), plus 8 bytes per neuron and outgoing connection (CSR row pointers); per
synapse 4 bytes (int32 target; 12 with per-synapse random weights). `memory_bytes(model)`
returns the exact figures.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch_mlir import execution_engine, passmanager

from spikescan.compiler.backends.mlir.cpu_jit import LOWER, ir_key, memref_of
from spikescan.compiler.backends.mlir.sparse import HEAP_PAD, build_sparse_module, record_layout
from spikescan.compiler.ir import NeuronIR

from .model import SparseModel, SparseModelError
from .result import SpikeTrain

_CACHE: dict[str, "_Compiled"] = {}
_LOCK = threading.Lock()
ZENO_FACTOR = 10  # spikes per neuron at a single instant beyond which a run is refused
CHUNK_SPIKES = 200_000  # spikes per call into the generated loop (the progress bar ticks between)


class _Compiled:
    def __init__(self, nir: NeuronIR, build=build_sparse_module, functions=("sparse_init", "sparse_run")):
        t0 = time.perf_counter()
        self.module = build(nir, "f64")
        with self.module.context:
            passmanager.PassManager.parse(LOWER).run(self.module.operation)
            self.engine = execution_engine.ExecutionEngine(self.module, opt_level=3)
            for name in functions:  # materialise now: the first call is not timed
                self.engine.lookup(name)
        self.t_compile = time.perf_counter() - t0

    def call(self, name: str, tensors: list) -> None:
        descs = [memref_of(t) for t in tensors]
        self.engine.invoke(name, *[ctypes.pointer(ctypes.pointer(d)) for d in descs])


def compiled(nir: NeuronIR) -> _Compiled:
    if nir.c is None or nir.theta is None:
        raise NotImplementedError(f"{nir.name}: the sparse engine needs a neuron with a threshold")
    key = "sparse:" + ir_key(nir, "f64", None)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _Compiled(nir)
        return _CACHE[key]


def search_window(model: SparseModel) -> float:
    """ms of each crossing search of the general solver (mlir_sparse.SparseEmitter.key_of): the
    smallest time constant of the network's layers (params of dimension time; +inf without one).
    Shorter windows let the exact quick test rule out most targets without solving; each
    neuron then needs at least one wake-up per window without input (CubaLIF, balanced_ei_cuba:
    1 ms 1.0 s, 2 ms 1.1 s, 5 ms 1.5 s, 10 ms 3.4 s, no window 7.2 s for the same 300 ms)."""
    taus = [model.params[:, q].min() for q, p in enumerate(model.neuron.params) if p.dim == 1]
    taus = [t for t in taus if np.isfinite(t) and t > 0]
    return float(min(taus)) if taus else float("inf")


def memory_bytes(model: SparseModel) -> dict:
    """Bytes of the engine's arrays: per neuron (state, times, heap) and per synapse (CSR)."""
    N, d = model.n, model.neuron.d
    per_neuron = 8 * record_layout(d)["width"] + 16  # the record and one heap entry (key, neuron)
    rows = sum(c.indptr.nbytes for c in model.csr)
    syn = sum(c.targets.nbytes + (0 if c.weights is None else c.weights.nbytes) for c in model.csr)
    S = max(model.n_synapses, 1)
    return {"neurons": N, "synapses": model.n_synapses, "state_bytes_per_neuron": per_neuron,
            "csr_row_bytes_per_neuron": rows / max(N, 1), "bytes_per_synapse": syn / S,
            "total_bytes": per_neuron * N + rows + syn}


class SparseSimulation:
    """A running simulation: the state persists between `run` calls (continue a run)."""

    def __init__(self, model: SparseModel, duration_ms: float, engine: Optional[_Compiled] = None):
        self.model, self.t_end = model, float(duration_ms)
        nir = model.neuron
        self.engine = compiled(nir) if engine is None else engine  # engine: one with more functions
        N, d = model.n, nir.d
        f64, i64 = torch.float64, torch.int64
        col = record_layout(d)
        # one record per neuron (a cache line for d <= 4): state, last update, refractory end,
        # layer, heap position
        S = np.zeros((N, col["width"]), dtype=np.float64)
        S[:, :d] = model.x0
        S[:, col["ref"]] = -np.inf
        S[:, col["pop"]] = model.pop_ids()
        self.S = torch.from_numpy(S)
        self.params = torch.from_numpy(np.ascontiguousarray(model.params))
        shared = bool(np.all(model.params == model.params[:1]))
        ports = list(nir.ports)
        info, cw, ptrs, tgts, ws = [], [], [], [], []
        pbase = tbase = wbase = 0
        for c in model.csr:
            info.append([c.src_offset, c.n_src, pbase, tbase, ports.index(c.port)])
            ptrs.append(c.indptr)
            tgts.append(c.targets)
            if c.weights is not None:
                if wbase != tbase:  # per-synapse weights share the targets' numbering
                    ws.append(np.zeros(tbase - wbase))
                ws.append(c.weights)
                wbase = tbase + c.n_synapses
                cw.append(float("nan"))
            else:
                cw.append(c.weight)
            pbase += c.indptr.shape[0]
            tbase += c.n_synapses
        self.cinfo = torch.tensor(info, dtype=i64).reshape(-1, 5)
        self.cw = torch.tensor(cw, dtype=f64)
        self.indptr = torch.from_numpy(np.concatenate(ptrs) if ptrs else np.zeros(1, np.int64))
        self.targets = torch.from_numpy(np.concatenate(tgts) if tgts else np.zeros(1, np.int32))
        self.weights = torch.from_numpy(np.concatenate(ws)) if ws else torch.zeros(1, dtype=f64)
        self.ctl = torch.tensor([self.t_end, 1.0 if shared else 0.0, search_window(model)], dtype=f64)
        keys = torch.empty((N, 2), dtype=f64)
        t0 = time.perf_counter()
        self.engine.call("sparse_init", [self.S, self.params, keys, self.ctl])
        # a sorted array is a valid heap: order by (key, neuron index); slot = position + HEAP_PAD
        kt = keys.numpy()
        order = np.lexsort((kt[:, 1], kt[:, 0]))
        H = np.full((N + HEAP_PAD, 2), np.nan)
        H[HEAP_PAD:] = kt[order]
        self.H = torch.from_numpy(H)
        S[order, col["hpos"]] = np.arange(N)
        self.t_init = time.perf_counter() - t0
        self.times: list[np.ndarray] = []
        self.neurons: list[np.ndarray] = []
        self.count = 0

    @property
    def next_time(self) -> float:
        return float(self.H[HEAP_PAD, 0])

    def step(self, max_spikes: int) -> int:
        """Simulate up to max_spikes more spikes (fewer if t_end comes first); returns how many."""
        out_t = torch.empty(max(max_spikes, 1), dtype=torch.float64)
        out_n = torch.empty(max(max_spikes, 1), dtype=torch.int32)
        cnt = torch.tensor([0, max_spikes], dtype=torch.int64)
        self.engine.call("sparse_run", [self.S, self.H, self.params, self.cinfo, self.cw, self.indptr,
                                        self.targets, self.weights, out_t, out_n, self.ctl, cnt])
        n = int(cnt[0])
        self.times.append(out_t[:n].numpy().copy())
        self.neurons.append(out_n[:n].numpy().astype(np.int64))
        self.count += n
        return n

    def result(self, wall_s: float, complete: bool = True) -> SpikeTrain:
        times = np.concatenate(self.times) if self.times else np.zeros(0)
        neurons = np.concatenate(self.neurons) if self.neurons else np.zeros(0, np.int64)
        t_end = self.t_end if complete else (float(times[-1]) if len(times) else 0.0)
        return SpikeTrain(times, neurons, self.model, wall_s=wall_s, complete=complete, t_end=t_end,
                          stats={"t_compile_s": self.engine.t_compile, "t_init_s": self.t_init})


def run_compiled(model: SparseModel, duration_ms: float, max_spikes: Optional[int] = None,
                 time_limit_s: Optional[float] = None,
                 progress: Optional[Callable[[float, int], None]] = None,
                 chunk: int = CHUNK_SPIKES) -> SpikeTrain:
    """Spikes in [0, duration_ms] (at most max_spikes: then SpikeTrain.complete is False unless
    the run ended anyway); the wall time excludes compiling the engine (cached per neuron)."""
    compiled(model.neuron)
    t0 = time.perf_counter()
    sim = SparseSimulation(model, duration_ms)
    complete = True
    same, last = 0, None  # spikes at the latest instant (a zero-delay avalanche that never ends)
    while True:
        want = chunk if max_spikes is None else min(chunk, max_spikes - sim.count)
        if want <= 0:
            complete = not sim.next_time <= sim.t_end
            break
        n = sim.step(want)
        if progress is not None:
            progress(float(sim.times[-1][-1]) if n else sim.t_end, sim.count)
        if n:
            ts = sim.times[-1]
            tail = int(n - np.searchsorted(ts, ts[-1]))  # spikes of this chunk at its last instant
            same = same + tail if last == ts[-1] and tail == n else tail
            last = float(ts[-1])
            if same > ZENO_FACTOR * model.n + 1000:
                raise SparseModelError(
                    f"{same} spikes at t = {last!r} ms and counting: the network fires without end at one "
                    "instant (zero-delay excitation, or a reset above threshold, without a refractory "
                    "period); give the neuron a `refractory` period or weaken the excitation")
        if n < want:
            break
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            complete = not sim.next_time <= sim.t_end
            break
    return sim.result(time.perf_counter() - t0, complete)
