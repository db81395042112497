"""The event-outer adjoint of a recurrent layer on the CPU (DESIGN.md 6b): what the compiled kernel
(compiler/backends/mlir/adjoint_events_rec.py) needs, prepared in a few vectorised torch ops, and
the call. The feed-forward one (adjoint_events.py) supplies the conditions and the per-spike
matrices; the recurrent forward (mlir/recurrent_vec.py) records the state at each spike before
its reset (xrec).

Applies where the feed-forward one does (parameters shared by the layer, no delays, refractory
period 0, c^T B = 0 on the port, no parameter gradient: adjoint_events.applicable), to calls of
the vectorised recurrent loop; recurrent_cpu's replaying backward does the rest. A spike dropped
by the cap is not recorded and sends nothing, and its neuron never spikes again: nothing depends
on that neuron's state after its last recorded spike (its lam stays 0 there), so the drop needs
no term of its own.

A recorded spike of neuron j at s is also an event of the layer (row w_rec[j] on the layer's port)
delivered to every neuron at s, after the resets of the spikes at s. Each sample's events are
merged in the forward's delivery order (docs/engines.md "Recurrent layers"): by time; at equal
times the recurrent events first, lowest source first, then the external arrivals in their
sorted order (the horizon, a zero-weight arrival, last). Since c^T B = 0 an arrival never moves
the potential, so no spike sits at the instant of an arrival but for these recurrent events.
Walking backwards, lam passes through every jump; at each event

    dL/dw_e += lam . B,   dL/dt_e = -sum_k (lam_k . A B) w_e[k]     (w_e = W[c_e] or w_rec[j])

and, once all the events of a group of equal times s are done (so every jump at s saw lam(s+)),
each spike (j, s) of the group: lam_j(s-) = M lam_j(s+) - (c / u') (dL/ds + dL/dt_e), dL/dt_e its
own event's arrival term (the self-connection's included: the reset comes before the arrival),
M and c / u' from the pre-reset state (adjoint_events.spike_terms).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from spikescan.runtime.engines.adjoint_events import _phi_T, applicable as _applicable, spike_terms
from spikescan.runtime.kernels import NeuronKernels

Tensor = torch.Tensor


def applicable(kern: NeuronKernels, port: Optional[str], P: tuple, with_params: bool) -> bool:
    """The neuron's side of the conditions (the caller checks that the vectorised loop ran)."""
    return _applicable(kern, port, P, None, with_params)


def merged_events(key: Tensor, order: Tensor, chan: Tensor, nvalid: Tensor, spikes: Tensor,
                  counts: Tensor) -> tuple:
    """Each sample's external arrivals and recorded spikes in the forward's delivery order.

    key/order [B, L] (sorted arrival times, the horizon included, and their event index: n = the
    horizon), chan [B, n+1], nvalid [B], spikes [B, N, S], counts [B, N]. Returns (ts, code, spk,
    orig, nm, flat): [B, M] times (+inf past nm), code (channel, -1 no jump, -2 - j a spike of j),
    spk (the spike's index in the flat (b, j, m) order, else -1), orig (the input's column in
    times, else -1), nm [B] events per sample, flat = (bi, ji, mi) of the flat spikes."""
    Bn, L = key.shape
    N = counts.shape[1]
    n = chan.shape[1] - 1
    S = max(1, int(counts.max())) if counts.numel() else 1
    sp = spikes[:, :, :S]
    valid = torch.arange(S)[None, None, :] < counts[:, :, None]
    bi, ji, mi = valid.nonzero(as_tuple=True)
    flat = torch.full((Bn, N, S), -1, dtype=torch.int64)
    flat[bi, ji, mi] = torch.arange(bi.numel())
    inf = torch.full((), math.inf, dtype=key.dtype)
    rec_t = torch.where(valid, sp, inf).reshape(Bn, N * S)
    rec_code = (-2 - torch.arange(N)).reshape(1, N, 1).expand(Bn, N, S).reshape(Bn, N * S)
    live = torch.arange(L)[None, :] < nvalid[:, None]
    ext_t = torch.where(live, key, inf)
    real = live & (order < n)
    ext_code = torch.where(real, torch.gather(chan, 1, order.clamp(0, n)), torch.full_like(order, -1))
    m1 = torch.full((Bn, L), -1, dtype=torch.int64)
    # recurrent events first: a stable sort puts them before inputs at the same time, lowest source first
    t_all = torch.cat([rec_t, ext_t], 1)
    perm = torch.argsort(t_all, dim=1, stable=True)
    nm = nvalid.to(torch.int64) + counts.sum(1)
    M = max(1, int(nm.max())) if nm.numel() else 1
    perm = perm[:, :M]

    def pick(rec, ext):
        return torch.gather(torch.cat([rec, ext], 1), 1, perm)

    ts = torch.gather(t_all, 1, perm)
    code = pick(rec_code, ext_code)
    spk = pick(flat.reshape(Bn, N * S), m1)
    orig = pick(torch.full((Bn, N * S), -1, dtype=torch.int64), torch.where(real, order, m1))
    return ts, code, spk, orig, nm, (bi, ji, mi)


def _flush(ts: Tensor, nm: Tensor) -> Tensor:
    """[B, M] i64: at the first event of each group of equal times, the group's last event; else -1."""
    Bn, M = ts.shape
    k = torch.arange(M)[None, :]
    ok = k < nm[:, None]
    first = torch.ones_like(ok)
    first[:, 1:] = ts[:, 1:] != ts[:, :-1]
    last = torch.ones_like(ok)
    last[:, :-1] = ts[:, :-1] != ts[:, 1:]
    gid = torch.cumsum(first.to(torch.int64), 1) - 1
    last_of = torch.zeros((Bn, M + 1), dtype=torch.int64)
    last_of.scatter_(1, torch.where(last & ok, gid, torch.full_like(gid, M)), k.expand(Bn, M).contiguous())
    return torch.where(first & ok, torch.gather(last_of, 1, gid), torch.full_like(gid, -1))


def backward(kern: NeuronKernels, port: Optional[str], P: tuple, key: Tensor, order: Tensor, chan: Tensor,
             nvalid: Tensor, W: Tensor, wrec: Tensor, spikes: Tensor, counts: Tensor, xrec: Tensor, g: Tensor,
             want_t: bool, gw: Tensor, gwrec: Tensor, gtimes: Tensor) -> None:
    """Gradients of one slice of samples: accumulate dL/dW into gw ([C, N], or [B, C, N] with
    per-sample weights W [B, C, N]) and dL/dw_rec into gwrec [N, N]; write dL/dt into gtimes
    [B, n+1] (columns of the input times). key, order, chan, nvalid as merged_events; spikes/g
    [B, N, S] (spike times, dL/d spike time), counts [B, N], xrec [B, N, S, d]."""
    from spikescan.compiler.backends.mlir.adjoint_events_rec import LANES, rec_events_backward

    dt = key.dtype
    d = kern.d
    Bn = key.shape[0]
    N = counts.shape[1]
    with torch.no_grad():
        ts, code, spk, orig, nm, (bi, ji, mi) = merged_events(key, order, chan, nvalid, spikes, counts)
        ok = torch.arange(ts.shape[1])[None, :] < nm[:, None]
        prev = torch.cat([torch.zeros((Bn, 1), dtype=dt), ts[:, :-1]], 1)
        D = torch.where(ok, ts - prev, torch.zeros((), dtype=dt)).clamp_min(0.0)
        phit = _phi_T(kern, D, P).to(dt).contiguous()  # [B, M, d*d]
        flush = _flush(ts, nm)

        Mx, cu, A, Bv = spike_terms(kern, port, P, xrec[bi, ji, mi])
        nS = bi.numel()
        mm = Mx.reshape(-1, d * d).to(dt).contiguous() if nS else torch.zeros((1, d * d), dtype=dt)
        cq = (-cu).to(dt).contiguous() if nS else torch.zeros((1, d), dtype=dt)
        gs = g[bi, ji, mi].to(dt).contiguous() if nS else torch.zeros((1,), dtype=dt)

        # the neuron dimension padded to whole vectors (zero weights: padded lanes stay 0)
        V = LANES["f64" if dt == torch.float64 else "f32"]
        Np = -(-N // V) * V
        pad = torch.nn.functional.pad
        Wd = (W if W.dim() == 3 else W.unsqueeze(0)).to(dt)
        gw3 = gw if gw.dim() == 3 else gw.unsqueeze(0)
        Wd = pad(Wd, (0, Np - N)).contiguous() if Np != N else Wd.contiguous()
        wr = pad(wrec.to(dt), (0, Np - N)).contiguous()
        gw_pad = torch.zeros((*gw3.shape[:2], Np), dtype=dt) if Np != N or not gw3.is_contiguous() else gw3
        gwr_pad = torch.zeros((N, Np), dtype=dt)
        bab = torch.cat([Bv, A @ Bv]).to(dt).contiguous()
        gt = torch.zeros(ts.shape, dtype=dt)
        lam = torch.empty((d, Np), dtype=dt)
        rec_events_backward(d, [code.contiguous(), nm.contiguous(), flush.contiguous(), spk.contiguous(), phit,
                                mm, cq, gs, Wd, wr, bab, gw_pad, gwr_pad, gt, lam])
        if gw_pad is not gw3:
            gw3 += gw_pad[:, :, :N]
        gwrec += gwr_pad[:, :N]
        if want_t:
            b_, e_ = (orig >= 0).nonzero(as_tuple=True)
            gtimes[b_, orig[b_, e_]] = gt[b_, e_]
