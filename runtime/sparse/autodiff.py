"""The exact event loop of a sparse network with autograd: exact gradients by backpropagation
through the event sequence (issue 13, item 5).

It is the O(N) reference loop (reference.py) step for step, with the same kernels, solver and
order of floating-point operations, so its spikes equal the reference's bit for bit (one
difference: a neuron whose refractory period outlasts the horizon does not spike at the horizon
here, as in the compiled engine); on top of it every quantity the loss can see is a
differentiable function of the learnable tensors:

- the weights of every sparse connection (one per synapse on the stored CSR, or one tied scalar
  per connection), the initial state x0 [N, d] and the per-layer neuron params [L, n_params]
  (the constant drive, time constants, threshold, ...);
- each spike time t* = t + D*, with D* from the exact solver (no autograd) and its gradient from
  the implicit function theorem at the crossing (spike_time.SpikeTime: dD*/dp = -(du/dp)/(du/dD),
  never differentiating the solver's iterations);
- a spike that happens at the start of its interval (an input jump lifted u over theta, or the
  refractory period ended above theta) takes the interval start's time and its gradient;
- between spikes all neurons advance with the IR's propagator Phi(D) x + phi(D), a spike resets
  its neuron and jumps B w on its K targets, all as torch ops, so autograd carries the adjoint
  (the EventProp / SparseProp backward pass) through the recorded event order.

Which neuron fires next (the argmin) is piecewise constant in the parameters and has no gradient:
the gradients are exact as long as a perturbation keeps the event order (check with
`DiffSpikes.order_key` in finite-difference tests; chaotic networks need short horizons).
Cost: O(N) per spike forward and backward, memory O(N d) per spike: small networks
(10^2 - 10^3 neurons, 10^2 - 10^4 spikes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from spikescan.runtime.engines.spike_time import first_crossing, spike_offset
from spikescan.runtime.kernels import NeuronKernels, densify

from .model import SparseModel

Tensor = torch.Tensor


class SpikeBudgetExceeded(RuntimeError):
    """More spikes than `max_spikes`: a truncated event sequence would give wrong gradients."""


@dataclass
class DiffSpikes:
    """Spikes of a differentiable run: times [S] (ms, autograd graph attached), neurons [S]
    (global index, int64 numpy), immediate [S] (spiked at its interval start), t_end (ms)."""

    times: Tensor
    neurons: np.ndarray
    immediate: np.ndarray
    t_end: float

    def __len__(self) -> int:
        return int(self.neurons.shape[0])

    def order_key(self) -> tuple:
        """The event order (neuron sequence): equal keys <=> same piecewise-smooth branch."""
        return tuple(int(n) for n in self.neurons)

    def of(self, neuron: int) -> Tensor:
        """Spike times of one neuron (with gradient), increasing."""
        return self.times[torch.from_numpy(np.nonzero(self.neurons == neuron)[0])]


def default_weights(model: SparseModel, per_synapse: bool = True) -> list[Tensor]:
    """The model's connection weights as float64 tensors, one per CSR: [n_synapses] per synapse,
    or 0-d tied (only for `constant(...)` weights)."""
    out = []
    for c in model.csr:
        if c.weights is not None:
            if not per_synapse:
                raise ValueError("tied (per_synapse=False) weights need a constant(...) init; this connection "
                                 "draws a random weight per synapse: use per_synapse=True")
            out.append(torch.from_numpy(c.weights.copy()))
        elif per_synapse:
            out.append(torch.full((c.n_synapses,), c.weight, dtype=torch.float64))
        else:
            out.append(torch.tensor(c.weight, dtype=torch.float64))
    return out


def simulate(model: SparseModel, duration_ms: float, weights: Optional[Sequence[Tensor]] = None,
             x0: Optional[Tensor] = None, params: Optional[Tensor] = None,
             max_spikes: int = 100_000, tape: Optional[list] = None,
             inputs: Optional[tuple] = None, in_weights: Optional[Sequence[Tensor]] = None) -> DiffSpikes:
    """Spikes in [0, duration_ms] of `model`, differentiable w.r.t. `weights` (list over model.csr of
    [n_synapses] or 0-d tensors; default the model's), `x0` ([N, d], default model.x0) and `params`
    ([L, n_params] in IR order, ms for times; default model.params). Raises SpikeBudgetExceeded
    past max_spikes (a silently truncated sequence would give wrong gradients).

    tape: a list that receives, per spike, (neuron, D, kind, state of all neurons at the spike
    before the reset (d tensors [N])), kind 0 = solved crossing, 1 = at the end of the refractory
    period, 2 = at the interval start otherwise; the hand-written adjoint (adjoint.py) reads it.

    inputs: (times [M] tensor (may require grad), channels [M]) of one sample's input events, for a
    network with input populations, merged as in reference.run_reference (ties: the input first);
    in_weights: list over model.in_csr like `weights` (default the model's). The tape does not
    record input events: the hand-written adjoint refuses inputs."""
    nir = model.neuron
    kern = NeuronKernels.from_ir(nir)
    N, f64 = model.n, torch.float64
    if nir.c is None or nir.theta is None:
        raise NotImplementedError(f"{nir.name}: the sparse autodiff loop needs a neuron with a threshold")
    weights = default_weights(model) if weights is None else list(weights)
    if len(weights) != len(model.csr):
        raise ValueError(f"weights: expected {len(model.csr)} tensors (one per connection), got {len(weights)}")
    for w, c in zip(weights, model.csr):
        if w.dim() != 0 and tuple(w.shape) != (c.n_synapses,):
            raise ValueError(f"connection weights must be 0-d or [{c.n_synapses}], got {tuple(w.shape)}")
    params = torch.from_numpy(model.params.copy()) if params is None else params
    if tuple(params.shape) != model.params.shape:
        raise ValueError(f"params must be {model.params.shape}, got {tuple(params.shape)}")
    x0 = torch.from_numpy(model.x0.copy()) if x0 is None else x0
    if tuple(x0.shape) != model.x0.shape:
        raise ValueError(f"x0 must be {model.x0.shape}, got {tuple(x0.shape)}")

    if inputs is not None and tape is not None:
        raise NotImplementedError("the hand-written sparse adjoint has no input events: use autograd "
                                  "(runtime.sparse.autodiff.simulate without a tape)")
    in_t, in_ch, in_rows = _input_tensors(model, inputs, in_weights, duration_ms)
    in_tv = in_t.detach().tolist()  # the clock's float values (the tensor keeps the gradient)
    m = 0
    pop = torch.from_numpy(model.pop_ids().astype(np.int64))
    P = tuple(params[:, q][pop] for q in range(len(nir.params)))
    Pd = tuple(p.detach() for p in P)
    like = torch.zeros(N, dtype=f64)
    x = [x0[:, q] for q in range(nir.d)]
    t_ref = densify([kern.t_ref(P)], like)[0]
    Bs = {p: densify(kern.B(p, P), like) for p in nir.ports}
    rows = [(c, torch.from_numpy(c.targets.astype(np.int64)), w) for c, w in zip(model.csr, weights)]
    ref_end = torch.full((N,), -float("inf"), dtype=f64)  # with gradient (spike time + t_ref)
    t, tg = 0.0, torch.zeros((), dtype=f64)  # the clock as the reference has it, and with gradient
    times, neurons, immediate = [], [], []
    while True:
        lo = torch.clamp(ref_end.detach() - t, min=0.0)
        hi = torch.full((N,), duration_ms - t, dtype=f64)
        still_refractory = lo > hi  # at the horizon: no spike (the solver would see u(hi) >= theta)
        lo = torch.minimum(lo, hi)
        D = first_crossing(kern, [v.detach() for v in x], Pd, lo, hi, torch.full((N,), abs(t), dtype=f64))
        D = torch.where(still_refractory, torch.full_like(D, float("inf")), D)
        j = int(torch.argmin(D))
        Dj = float(D[j])
        if m < len(in_ch) and (not Dj <= duration_ms - t or in_tv[m] <= t + Dj):
            # the next input event first (reference.run_reference): advance all, jump its targets
            Din = in_tv[m] - t
            if Din > 0:
                x = densify(kern.propagate(in_t[m] - tg, x, P), like)
            t, tg = in_tv[m], in_t[m]
            ch = int(in_ch[m])
            m += 1
            for c, tgts, w in in_rows:
                local = ch - c.src_offset
                if not 0 <= local < c.n_src:
                    continue
                a, b = int(c.indptr[local]), int(c.indptr[local + 1])
                ws = w[a:b] if w.dim() else w.expand(b - a)
                x = [v.index_add(0, tgts[a:b], Bs[c.port][q][tgts[a:b]] * ws) for q, v in enumerate(x)]
            continue
        if not Dj <= duration_ms - t:
            break
        if len(times) >= max_spikes:
            raise SpikeBudgetExceeded(f"more than max_spikes={max_spikes} spikes before {duration_ms} ms "
                                      f"(at t = {t:.6g} ms): shorten the horizon or raise max_spikes")
        imm = Dj == float(lo[j])
        if imm:  # at the interval start: the start's time (refractory end or the jump's time)
            Dg = torch.minimum(torch.clamp(ref_end[j] - tg, min=0.0), hi[j])
        else:
            Dg = spike_offset(kern, D[j:j + 1], [v[j:j + 1] for v in x], tuple(p[j:j + 1] for p in P))[0]
        if Dj > 0:
            x = densify(kern.propagate(Dg, x, P), like)
        if tape is not None:
            kind = 0 if not imm else 1 if float(lo[j]) > 0 and float(lo[j]) < float(hi[j]) else 2
            tape.append((j, Dj, kind, [v.detach() for v in x]))
        t = t + Dj
        tg = tg + Dg
        times.append(tg)
        neurons.append(j)
        immediate.append(imm)
        xj = kern.reset([v[j] for v in x], tuple(p[j] for p in P))
        jj = torch.tensor([j])
        x = [v.index_put((jj,), torch.as_tensor(xj[q] if xj[q] is not None else 0.0, dtype=f64).reshape(1))
             for q, v in enumerate(x)]
        ref_end = ref_end.index_put((jj,), (tg + t_ref[j]).reshape(1))
        for c, tgts, w in rows:
            local = j - c.src_offset
            if not 0 <= local < c.n_src:
                continue
            a, b = int(c.indptr[local]), int(c.indptr[local + 1])
            tgt = tgts[a:b]
            ws = w[a:b] if w.dim() else w.expand(b - a)
            x = [v.index_add(0, tgt, Bs[c.port][q][tgt] * ws) for q, v in enumerate(x)]
    tt = torch.stack(times) if times else torch.zeros(0, dtype=f64)
    return DiffSpikes(tt, np.array(neurons, dtype=np.int64), np.array(immediate, dtype=bool), float(duration_ms))


def default_in_weights(model: SparseModel) -> list[Tensor]:
    """The input connections' weights, one float64 tensor [n_synapses] per model.in_csr."""
    return [torch.from_numpy(c.weights.copy()) if c.weights is not None
            else torch.full((c.n_synapses,), c.weight, dtype=torch.float64) for c in model.in_csr]


def _input_tensors(model: SparseModel, inputs, in_weights, duration_ms: float):
    """Sorted input times (a tensor, gradient kept), channels (numpy) and the input CSR rows."""
    if inputs is None:
        return torch.zeros(0, dtype=torch.float64), np.zeros(0, np.int64), []
    from .inputs import input_events

    t, ch = inputs
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    ch_np = ch.detach().cpu().numpy() if isinstance(ch, Tensor) else np.asarray(ch)
    ch_np = ch_np.reshape(-1)
    # the order and the kept events from the values; the times themselves keep their graph
    _, _ = input_events(model, t.detach().cpu().numpy(), ch_np, duration_ms)  # validates
    tv = t.detach().cpu().numpy()
    chv = np.nan_to_num(ch_np.astype(np.float64), nan=-1.0).astype(np.int64)
    keep = np.nonzero((chv >= 0) & np.isfinite(tv) & (tv <= duration_ms))[0]
    keep = keep[np.argsort(tv[keep], kind="stable")]
    in_weights = default_in_weights(model) if in_weights is None else list(in_weights)
    if len(in_weights) != len(model.in_csr):
        raise ValueError(f"in_weights: expected {len(model.in_csr)} tensors (one per input connection), "
                         f"got {len(in_weights)}")
    rows = [(c, torch.from_numpy(c.targets.astype(np.int64)), w) for c, w in zip(model.in_csr, in_weights)]
    return t[torch.from_numpy(keep)], chv[keep], rows
