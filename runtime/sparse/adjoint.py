"""The hand-written adjoint of the sparse event loop: the same exact gradients as autodiff.py
(backpropagation through the event sequence, the SparseProp / EventProp adjoint), without an
autograd graph.

The forward is autodiff.simulate without autograd, recording per spike k the spiking neuron j,
its offset D_k, how it spiked (a solved crossing, the end of its refractory period, or at the
interval start after a jump) and the state of all neurons at t_k before the reset. The backward
walks the spikes in reverse with the adjoint lam [N, d] of the state, mu of the clock t and rho
[N] of the refractory ends; per spike, in the reverse order of the forward's operations:

- jumps x_tgt += B w: dL/dw_s += lam_tgt . B (lam passes through);
- ref_end_j = t_k + t_ref: mu += rho_j, rho_j = 0; the loss: mu += dL/dt_k;
- reset x_j = R x_j^- + r: lam_j = R^T lam_j;
- t_k = t_{k-1} + D_k, x = Phi(D_k) x + phi(D_k): dL/dD_k = mu + sum_i lam_i . (A x_i^- + a0),
  then lam = Phi(D_k)^T lam;
- the spike offset: a solved crossing D_k = D*(x_j) adds dL/dD_k * (-(c^T Phi(D_k)) / u') to lam_j
  (the implicit function theorem, u' = c^T (A x_j^- + a0)); a refractory end D_k = ref_end_j -
  t_{k-1} adds dL/dD_k to rho_j and subtracts it from mu; a spike at the interval start (D_k = 0)
  adds nothing.

Gradients: the connection weights (per synapse or tied) and x0. The neuron params need the
derivatives of Phi and phi in the params: use autodiff.simulate for those (NotImplementedError
here). Memory: the states at every spike, N d floats per spike (small networks).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from spikescan.runtime.kernels import NeuronKernels, densify

from .autodiff import DiffSpikes, default_weights, simulate
from .model import SparseModel

Tensor = torch.Tensor


def _rows(M: list, like: Tensor) -> list:
    """A d x d nested list (None zeros, floats, tensors) with every entry a tensor like `like`."""
    return [densify(row, like) for row in M]


def adjoint_backward(model: SparseModel, tape: list, weights: Sequence[Tensor], g_times: Tensor,
                     params: Optional[Tensor] = None) -> tuple[list, Tensor]:
    """(dL/dweights (each shaped like its weight tensor), dL/dx0 [N, d]) from the recorded spikes
    `tape` (simulate(..., tape=...)) and dL/dt_k `g_times` [S]."""
    nir = model.neuron
    kern = NeuronKernels.from_ir(nir)
    N, d, f64 = model.n, nir.d, torch.float64
    params = torch.from_numpy(model.params.copy()) if params is None else params.detach()
    pop = torch.from_numpy(model.pop_ids().astype(np.int64))
    P = tuple(params[:, q][pop] for q in range(len(nir.params)))
    like = torch.zeros(N, dtype=f64)
    A = _rows(kern.A(P), like)
    a0 = densify(kern.a0(P), like)
    R = _rows(kern.R(*P), like)
    c = densify(kern.c(P), like)
    Bs = {p: densify(kern.B(p, P), like) for p in nir.ports}
    g_times = g_times.detach().to(f64)
    lam = [torch.zeros(N, dtype=f64) for _ in range(d)]
    rho = torch.zeros(N, dtype=f64)
    mu = 0.0
    gw = [torch.zeros(c_.n_synapses, dtype=f64) for c_ in model.csr]
    rows = [(c_, torch.from_numpy(c_.targets.astype(np.int64))) for c_ in model.csr]
    for k in range(len(tape) - 1, -1, -1):
        j, D, kind, xm = tape[k]
        for ci, (c_, tgts) in enumerate(rows):
            local = j - c_.src_offset
            if not 0 <= local < c_.n_src:
                continue
            a, b = int(c_.indptr[local]), int(c_.indptr[local + 1])
            tgt = tgts[a:b]
            B = Bs[c_.port]
            gw[ci][a:b] += sum(lam[q][tgt] * B[q][tgt] for q in range(d))
        mu += float(rho[j]) + float(g_times[k])
        rho[j] = 0.0
        lj = [float(sum(R[r][q][j] * lam[r][j] for r in range(d))) for q in range(d)]  # R^T lam_j
        for q in range(d):
            lam[q][j] = lj[q]
        gD = mu
        y = [sum(A[q][r] * xm[r] for r in range(d)) + a0[q] for q in range(d)]  # dx/dt at t_k-
        if D > 0:
            gD += float(sum((lam[q] * y[q]).sum() for q in range(d)))
            Phi = _rows(kern.Phi(torch.tensor(D, dtype=f64), P), like)
            lam = [sum(Phi[r][q] * lam[r] for r in range(d)) for q in range(d)]  # Phi^T lam
        if kind == 0:  # IFT: dD/dx_j = -(c^T Phi(D)) / (c^T y_j)
            Phi = Phi if D > 0 else _rows(kern.Phi(torch.tensor(D, dtype=f64), P), like)
            du = float(sum(c[q][j] * y[q][j] for q in range(d)))
            for q in range(d):
                cPhi = float(sum(c[r][j] * Phi[r][q][j] for r in range(d)))
                lam[q][j] = lam[q][j] - gD * cPhi / du
        elif kind == 1:  # D = ref_end_j - t_{k-1}
            rho[j] += gD
            mu -= gD
    gx0 = torch.stack(lam, 1)
    out = []
    for g, w in zip(gw, weights):
        out.append(g if w.dim() else g.sum())
    return out, gx0


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, model, duration_ms, max_spikes, params, holder, x0, *weights):
        tape: list = []
        with torch.no_grad():
            s = simulate(model, duration_ms, [w.detach() for w in weights], x0.detach(), params,
                         max_spikes, tape=tape)
        ctx.model, ctx.tape, ctx.params = model, tape, params
        ctx.save_for_backward(*weights)
        holder.append(s)
        return s.times.clone()

    @staticmethod
    def backward(ctx, g):
        weights = ctx.saved_tensors
        gw, gx0 = adjoint_backward(ctx.model, ctx.tape, weights, g, ctx.params)
        return (None, None, None, None, None, gx0, *gw)


def simulate_adjoint(model: SparseModel, duration_ms: float, weights: Optional[Sequence[Tensor]] = None,
                     x0: Optional[Tensor] = None, params: Optional[Tensor] = None,
                     max_spikes: int = 100_000) -> DiffSpikes:
    """autodiff.simulate with the hand-written adjoint as the backward: the same spikes, gradients to
    `weights` and `x0`; `params` may be given but gets no gradient (use autodiff.simulate)."""
    if params is not None and params.requires_grad:
        raise NotImplementedError("simulate_adjoint: no gradients to the neuron params; "
                                  "use runtime.sparse.autodiff.simulate (autograd) for them")
    weights = default_weights(model) if weights is None else list(weights)
    x0 = torch.from_numpy(model.x0.copy()) if x0 is None else x0
    holder: list = []
    times = _Adjoint.apply(model, float(duration_ms), max_spikes, params, holder, x0, *weights)
    s = holder[0]
    return DiffSpikes(times, s.neurons, s.immediate, s.t_end)
