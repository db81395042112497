"""The compiled sparse engine with input events (compiler/backends/mlir/sparse_inputs.py): one
sample's sorted input events are merged into the engine's event queue inside the generated loop
(func @sparse_run_inputs), each delivered to its targets like a network spike. O(K log N) per
network spike plus O(fan-out log N) per input event.

    train = run_compiled_inputs(model, 100.0, times, channels)   # SpikeTrain, as run_compiled
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Sequence

import numpy as np
import torch

from spikescan.compiler.backends.mlir.cpu_jit import ir_key
from spikescan.compiler.backends.mlir.sparse_inputs import build_sparse_inputs_module
from spikescan.compiler.ir import NeuronIR

from .engine import CHUNK_SPIKES, ZENO_FACTOR, SparseSimulation, _Compiled
from .inputs import input_events
from .model import SparseModel, SparseModelError
from .result import SpikeTrain

_CACHE: dict[str, _Compiled] = {}
_LOCK = threading.Lock()
FUNCTIONS = ("sparse_init", "sparse_run", "sparse_run_inputs")


def compiled_inputs(nir: NeuronIR) -> _Compiled:
    if nir.c is None or nir.theta is None:
        raise NotImplementedError(f"{nir.name}: the sparse engine needs a neuron with a threshold")
    key = "sparse-inputs:" + ir_key(nir, "f64", None)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _Compiled(nir, build_sparse_inputs_module, FUNCTIONS)
        return _CACHE[key]


class InputCSR:
    """The input connections' CSR as the engine's arrays (weights: the model's, or given ones)."""

    def __init__(self, model: SparseModel, in_weights: Optional[Sequence] = None):
        ports = list(model.neuron.ports)
        info, cw, ptrs, tgts, ws = [], [], [], [], []
        pbase = tbase = 0
        for ci, c in enumerate(model.in_csr):
            info.append([c.src_offset, c.n_src, pbase, tbase, ports.index(c.port)])
            ptrs.append(c.indptr)
            tgts.append(c.targets)
            if in_weights is not None:
                w = in_weights[ci]
                w = w.detach().cpu().double().numpy() if isinstance(w, torch.Tensor) else np.asarray(w, np.float64)
                ws.append(np.broadcast_to(w, (c.n_synapses,)))
            elif c.weights is not None:
                ws.append(c.weights)
            else:
                ws.append(np.full(c.n_synapses, c.weight))
            cw.append(float("nan"))  # always per synapse: the module's weights are learnable
            pbase += c.indptr.shape[0]
            tbase += c.n_synapses
        self.cinfo = torch.tensor(info, dtype=torch.int64).reshape(-1, 5)
        self.cw = torch.tensor(cw, dtype=torch.float64)
        self.indptr = torch.from_numpy(np.concatenate(ptrs) if ptrs else np.zeros(1, np.int64))
        self.targets = torch.from_numpy(np.concatenate(tgts) if tgts else np.zeros(1, np.int32))
        self.weights = torch.from_numpy(np.ascontiguousarray(np.concatenate(ws)) if ws else np.zeros(1))


def run_compiled_inputs(model: SparseModel, duration_ms: float, times, channels,
                        in_weights: Optional[Sequence] = None, max_spikes: Optional[int] = None,
                        csr: Optional[InputCSR] = None, chunk: int = CHUNK_SPIKES) -> SpikeTrain:
    """Network spikes in [0, duration_ms] driven by one sample's input events (times in ms,
    channels global over the input populations; unsorted is fine, channel < 0 pads)."""
    eng = compiled_inputs(model.neuron)
    in_t, in_ch = input_events(model, times, channels, duration_ms)
    csr = InputCSR(model, in_weights) if csr is None else csr
    t0 = time.perf_counter()
    sim = SparseSimulation(model, duration_ms, engine=eng)
    tin = torch.from_numpy(np.ascontiguousarray(in_t, dtype=np.float64).reshape(-1))
    chin = torch.from_numpy(np.ascontiguousarray(in_ch, dtype=np.int64).reshape(-1))
    if tin.numel() == 0:  # memrefs of size 0 are fine, but keep one valid element to read
        tin, chin = torch.full((1,), float("inf"), dtype=torch.float64), torch.zeros(1, dtype=torch.int64)
    icnt = torch.zeros(1, dtype=torch.int64)
    complete, same, last = True, 0, None
    while True:
        want = chunk if max_spikes is None else min(chunk, max_spikes - sim.count)
        if want <= 0:
            complete = not (sim.next_time <= sim.t_end or int(icnt[0]) < len(in_t))
            break
        out_t = torch.empty(want, dtype=torch.float64)
        out_n = torch.empty(want, dtype=torch.int32)
        cnt = torch.tensor([0, want], dtype=torch.int64)
        eng.call("sparse_run_inputs", [sim.S, sim.H, sim.params, sim.cinfo, sim.cw, sim.indptr, sim.targets,
                                       sim.weights, out_t, out_n, sim.ctl, cnt, tin, chin, csr.cinfo,
                                       csr.cw, csr.indptr, csr.targets, csr.weights, icnt])
        n = int(cnt[0])
        sim.times.append(out_t[:n].numpy().copy())
        sim.neurons.append(out_n[:n].numpy().astype(np.int64))
        sim.count += n
        if n:
            ts = sim.times[-1]
            tail = int(n - np.searchsorted(ts, ts[-1]))
            same = same + tail if last == ts[-1] and tail == n else tail
            last = float(ts[-1])
            if same > ZENO_FACTOR * model.n + 1000:
                raise SparseModelError(f"{same} spikes at t = {last!r} ms and counting: the network fires "
                                       "without end at one instant; give the neuron a `refractory` period")
        if n < want:
            break
    return sim.result(time.perf_counter() - t0, complete)
