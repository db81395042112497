"""`spikescan.simulate`: exact simulation of one neuron type driven by weighted input events.

    res = spikescan.simulate("models/cuba_lif.snn", "CubaLIF", times, weights)
    res.times [B, S] (ms, +inf padded), res.counts [B]; with return_trace=True also
    res.trace_t [B, T] and res.trace_x [B, T, d] (exact state on a uniform grid, right limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines import get_engine
from spikescan.runtime.kernels import NeuronKernels, densify

Tensor = torch.Tensor


@dataclass
class SimulationResult:
    times: Tensor  # [B, S]
    counts: Tensor  # [B]
    overflow: Tensor  # [B]
    engine: str
    trace_t: Optional[Tensor] = None  # [B, T]
    trace_x: Optional[Tensor] = None  # [B, T, d]
    state_names: tuple = ()


def _resolve_ir(model, neuron: Optional[str]) -> NeuronIR:
    if isinstance(model, NeuronIR):
        return model
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        from spikescan.compiler.driver import load_model

        model = load_model(str(model))
    neurons = getattr(model, "neurons", None)
    if neurons is None:
        raise TypeError("model must be a .snn path, a CompiledModel or a NeuronIR")
    if neuron is None:
        if len(neurons) != 1:
            raise ValueError(f"the model defines several neurons {sorted(neurons)}; pass neuron=")
        return next(iter(neurons.values()))
    if neuron not in neurons:
        raise KeyError(f"no neuron {neuron!r} in the model; neurons: {sorted(neurons)}")
    return neurons[neuron]


def simulate(model, neuron: Optional[str] = None, times=None, weights=None, params: Optional[dict] = None,
             engine: str = "auto", dtype=torch.float64, chunk: int = 128, return_trace: bool = False,
             port: Optional[str] = None, t_end: Optional[float] = None, max_spikes: int = 1024,
             trace_points: int = 1001) -> SimulationResult:
    """Simulate one neuron per sample. times, weights: [B, n] or [n] (+inf padding, unsorted ok)."""
    ir = _resolve_ir(model, neuron)
    times = torch.as_tensor(times, dtype=dtype)
    weights = torch.as_tensor(weights, dtype=dtype)
    squeeze = times.dim() == 1
    if squeeze:
        times, weights = times[None], weights[None]
    if times.shape != weights.shape:
        raise ValueError(f"times {tuple(times.shape)} and weights {tuple(weights.shape)} differ")
    B, n = times.shape
    if n == 0:
        times = torch.full((B, 1), math.inf, dtype=dtype)
        weights = torch.zeros((B, 1), dtype=dtype)
        n = 1
    needs_grad = times.requires_grad or weights.requires_grad or any(
        torch.is_tensor(v) and v.requires_grad for v in (params or {}).values())
    if engine == "auto":
        from spikescan.runtime.engines import choose_auto

        engine = choose_auto(str(times.device), needs_grad)
    eng = get_engine(engine)
    channels = torch.arange(n).expand(B, n)
    W = weights.unsqueeze(-1)  # [B, C = n, N = 1]: each event is its own channel
    res = eng.run_layer(ir, params or {}, times, channels, W, None, port=port, chunk=chunk,
                        max_spikes=max_spikes, on_overflow="raise", t_end=t_end)
    out = SimulationResult(times=res.times[:, 0], counts=res.counts[:, 0], overflow=res.overflow,
                           engine=engine, state_names=tuple(ir.state))
    if return_trace:
        out.trace_t, out.trace_x = _trace(ir, params, times, weights, out.times, out.counts, port, t_end,
                                          trace_points)
    if squeeze:
        out.times, out.counts = out.times[0], out.counts[0]
        if return_trace:
            out.trace_t, out.trace_x = out.trace_t[0], out.trace_x[0]
    return out


@torch.no_grad()
def _trace(ir, params, times, weights, spikes, counts, port, t_end, T):
    """Exact state on a grid: replay inputs and the engine's spikes in time order (resets at
    spikes), evaluating the closed-form propagator from the last event before each grid point."""
    kern = NeuronKernels.from_ir(ir)
    dtype = times.dtype
    P = kern.param_tensors(params, 1, dtype, times.device)
    P = tuple(p.reshape(()) if p.dim() else p for p in P)
    Bv = densify(kern.B(port, P), torch.zeros((), dtype=dtype))
    B = times.shape[0]
    fin_t = times[torch.isfinite(times)]
    fin_s = spikes[torch.isfinite(spikes)]
    hi = t_end if t_end is not None else float(torch.cat([fin_t, fin_s, times.new_zeros(1)]).max()) + \
        5 * kern.slowest_tau(P)
    grid = torch.linspace(0.0, hi, T, dtype=dtype)
    xs = torch.zeros(B, T, kern.d, dtype=dtype)
    for b in range(B):
        ev = [(float(t), 0, float(w)) for t, w in zip(times[b], weights[b]) if math.isfinite(float(t))]
        ev += [(float(s), 1, 0.0) for s in spikes[b, : int(counts[b])]]
        ev.sort(key=lambda e: (e[0], e[1]))
        x = [float(v) for v in densify(kern.init(P), torch.zeros((), dtype=dtype))]
        tc, k = 0.0, 0
        for gi, tg in enumerate(grid.tolist()):
            while k < len(ev) and ev[k][0] <= tg:
                te, kind, w = ev[k]
                x = [float(v) for v in densify(kern.propagate(torch.tensor(te - tc, dtype=dtype),
                                                              [torch.tensor(v, dtype=dtype) for v in x], P),
                                               torch.zeros((), dtype=dtype))]
                if kind == 0:
                    x = [v + float(bv) * w for v, bv in zip(x, Bv)]
                else:
                    x = [float(v) for v in densify(kern.reset([torch.tensor(v, dtype=dtype) for v in x], P),
                                                   torch.zeros((), dtype=dtype))]
                tc, k = te, k + 1
            xg = densify(kern.propagate(torch.tensor(tg - tc, dtype=dtype), [torch.tensor(v, dtype=dtype) for v in x], P),
                         torch.zeros((), dtype=dtype))
            xs[b, gi] = torch.stack([v.reshape(()) for v in xg])
    return grid.expand(B, T), xs
