"""The plain exact O(N) event loop: the correctness oracle of the sparse engines.

All N neurons share one clock. At every step the next threshold crossing of every neuron is
solved from the current state (runtime/engines/spike_time.first_crossing, the same exact solver
as the dense engines), the earliest one (ties: the smallest neuron index) fires, every neuron is
advanced to that time with the IR's propagator Phi(D), phi(D), the spiking neuron is reset and
its targets receive their jumps B w at once (sparse connections have no delays). Cost O(N) per
spike; float64 torch on the CPU. It is deliberately simple: no heap, no laziness.

Inputs (docs/sparse.md, "Networks with inputs"): sorted input events (time, channel) are merged
into the same loop. When the next input event comes no later than the next crossing (ties: the
input first, as in the compiled engine), every neuron advances to its time and the channel's
targets jump by B w; input events are not recorded as spikes. A neuron still refractory at the
horizon does not spike there (as in the compiled engine and the autodiff loop).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch

from spikescan.runtime.engines.spike_time import first_crossing
from spikescan.runtime.kernels import NeuronKernels, densify

from .model import SparseModel
from .result import SpikeTrain


@torch.no_grad()
def run_reference(model: SparseModel, duration_ms: float, max_spikes: Optional[int] = None,
                  time_limit_s: Optional[float] = None,
                  progress: Optional[Callable[[float, int], None]] = None,
                  inputs: Optional[tuple] = None) -> SpikeTrain:
    """Spikes in [0, duration_ms]; stops early at max_spikes or after time_limit_s of wall time
    (SpikeTrain.complete tells which). inputs: (times, channels) of one sample's input events
    (inputs.input_events checks and sorts them), for a network with input populations."""
    nir = model.neuron
    kern = NeuronKernels.from_ir(nir)
    N = model.n
    f64 = torch.float64
    pop = torch.from_numpy(model.pop_ids().astype(np.int64))
    P = tuple(torch.from_numpy(model.params[:, q].copy())[pop] for q in range(len(nir.params)))
    like = torch.zeros(N, dtype=f64)
    x = [torch.from_numpy(model.x0[:, q].copy()) for q in range(nir.d)]
    t_ref = densify([kern.t_ref(P)], like)[0]
    Bs = {p: densify(kern.B(p, P), like) for p in nir.ports}
    rows = [(c, torch.from_numpy(c.indptr), torch.from_numpy(c.targets.astype(np.int64)),
             None if c.weights is None else torch.from_numpy(c.weights)) for c in model.csr]
    ref_end = torch.full((N,), -float("inf"), dtype=f64)
    in_t, in_ch = _inputs(model, inputs, duration_ms)
    in_rows = [(torch.from_numpy(c.targets.astype(np.int64)),
                None if c.weights is None else torch.from_numpy(c.weights), c) for c in model.in_csr]
    m = 0
    t = 0.0
    times, neurons = [], []
    t0 = time.perf_counter()
    complete = True
    while True:
        if max_spikes is not None and len(times) >= max_spikes:
            break
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            complete = False
            break
        lo = torch.clamp(ref_end - t, min=0.0)
        hi = torch.full((N,), duration_ms - t, dtype=f64)
        still_refractory = lo > hi  # at the horizon: no spike (the solver would see u(hi) >= theta)
        lo = torch.minimum(lo, hi)
        D = first_crossing(kern, x, P, lo, hi, torch.full((N,), abs(t), dtype=f64))
        D = torch.where(still_refractory, torch.full_like(D, float("inf")), D)
        j = int(torch.argmin(D))  # the first index among equal minima
        Dj = float(D[j])
        if m < len(in_t) and (not Dj <= duration_ms - t or in_t[m] <= t + Dj):
            # the next input event comes first: advance everyone to it, jump its targets
            Din = float(in_t[m]) - t
            if Din > 0:
                x = densify(kern.propagate(torch.tensor(Din, dtype=f64), x, P), like)
            t = float(in_t[m])
            ch = int(in_ch[m])
            m += 1
            for tg, ws, c in in_rows:
                local = ch - c.src_offset
                if not 0 <= local < c.n_src:
                    continue
                a, b = int(c.indptr[local]), int(c.indptr[local + 1])
                w = ws[a:b] if ws is not None else torch.full((b - a,), c.weight, dtype=f64)
                for q in range(nir.d):
                    x[q].index_add_(0, tg[a:b], Bs[c.port][q][tg[a:b]] * w)
            continue
        if not Dj <= duration_ms - t:
            break
        if Dj > 0:
            x = densify(kern.propagate(torch.tensor(Dj, dtype=f64), x, P), like)
        t = t + Dj
        times.append(t)
        neurons.append(j)
        xj = kern.reset([v[j] for v in x], tuple(p[j] for p in P))
        for q in range(nir.d):
            x[q][j] = xj[q] if xj[q] is not None else 0.0
        ref_end[j] = t + t_ref[j]
        for c, indptr, tg, ws in rows:
            local = j - c.src_offset
            if not 0 <= local < c.n_src:
                continue
            a, b = int(indptr[local]), int(indptr[local + 1])
            tgt = tg[a:b]
            w = ws[a:b] if ws is not None else torch.full((b - a,), c.weight, dtype=f64)
            for q in range(nir.d):
                x[q].index_add_(0, tgt, Bs[c.port][q][tgt] * w)
        if progress is not None:
            progress(t, len(times))
    return SpikeTrain(np.array(times), np.array(neurons, dtype=np.int64), model,
                      wall_s=time.perf_counter() - t0, complete=complete, t_end=t if not complete else duration_ms)


def _inputs(model: SparseModel, inputs: Optional[tuple], duration_ms: float) -> tuple:
    if inputs is None:
        return np.zeros(0), np.zeros(0, np.int64)
    from .inputs import input_events

    return input_events(model, inputs[0], inputs[1], duration_ms)
