"""The event-outer adjoint of the sequential-cpu engine (DESIGN.md 6b): what the compiled kernel
(compiler/backends/mlir/adjoint_events.py) needs, prepared from the IR's printed formulas
(runtime/kernels.py) in a few vectorised torch ops, and the call.

Applies to a layer call whose neurons share their parameters, without delays, refractory period
0, whose input jumps do not move the potential (c^T B = 0: a spike is never the instant of an
arrival), when no parameter gradient is asked for; `applicable` says so, and the per-neuron
adjoint (mlir/adjoint.py) does the rest. The forward (mlir/shared.py) records the state at every
spike before its reset (xrec); from it, per spike s of neuron j:

    x+ = R x- + r,  u' = c . (A x- + a0),  v = R (A x- + a0) - (A x+ + a0)
    lam(s-) = M lam(s+) + q,  M = R^T - (c / u') v^T,  q = -(c / u') dL/ds

(the implicit function theorem at the crossing c . x = theta, and the reset's jump), with
After = Phi(T_e - s)^T from the interval's end to the last spike of j in it and
Before = Phi(s - s_prev)^T back to the previous spike or the interval's start.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from spikescan.runtime.engines.ports import is_multi
from spikescan.runtime.kernels import NeuronKernels, densify

Tensor = torch.Tensor


def _num(e) -> float:
    return 0.0 if e is None else float(e)


def _mat(rows: list) -> Tensor:
    return torch.tensor([[_num(e) for e in row] for row in rows], dtype=torch.float64)


def applicable(kern: NeuronKernels, port: Optional[str], P: tuple, delays, with_params: bool) -> bool:
    if delays is not None or with_params or not kern.spiking:
        return False
    if not all(torch.is_tensor(p) and p.dim() == 0 or not torch.is_tensor(p) for p in P):
        return False
    with torch.no_grad():
        if _num(kern.t_ref(P)) != 0.0:
            return False
        c = [_num(e) for e in kern.c(P)]
        for name in (port.names if is_multi(port) else [port]):  # every port used
            B = [_num(e) for e in kern.B(name, P)]
            if sum(a * b for a, b in zip(c, B)) != 0.0:
                return False
    return True


def _phi_T(kern: NeuronKernels, D: Tensor, P: tuple) -> Tensor:
    """Phi(D)^T as [..., d*d] (row-major: entry q*d + r is Phi[r][q])."""
    rows = kern.Phi(D, P)
    d = kern.d
    full = [densify(row, D) for row in rows]
    return torch.stack([full[r][q] for q in range(d) for r in range(d)], dim=-1)


def spike_terms(kern: NeuronKernels, port: Optional[str], P: tuple, xm: Tensor) -> tuple:
    """Per spike (pre-reset states xm [S, d]): (M [S, d, d], c / u' [S, d], A [d, d], B [d] or,
    for a PortMap, [C, d] per input channel), float64, as in the module docstring."""
    A, R = _mat(kern.A(P)), _mat(kern.R(*P))
    a0 = torch.tensor([_num(v) for v in kern.a0(P)], dtype=torch.float64)
    r = torch.tensor([_num(row[0]) for row in kern.r(*P)], dtype=torch.float64)
    c = torch.tensor([_num(v) for v in kern.c(P)], dtype=torch.float64)
    if is_multi(port):  # [C, d]: the B of each channel's port
        Bp = torch.tensor([[_num(v) for v in kern.B(name, P)] for name in port.names], dtype=torch.float64)
        Bv = Bp[port.index.cpu()]
    else:
        Bv = torch.tensor([_num(v) for v in kern.B(port, P)], dtype=torch.float64)
    xm = xm.to(torch.float64)
    ym = xm @ A.T + a0
    xp = xm @ R.T + r
    yp = xp @ A.T + a0
    v = ym @ R.T - yp
    up = ym @ c
    cu = c[None, :] / up[:, None]  # [S, d]
    M = R.T[None, :, :] - cu[:, :, None] * v[:, None, :]
    return M, cu, A, Bv


def backward(kern: NeuronKernels, port: Optional[str], P: tuple, t: Tensor, ch: Tensor, order: Tensor,
             nvalid: Tensor, horizon: Tensor, W: Tensor, spikes: Tensor, counts: Tensor, xrec: Tensor,
             g: Tensor, want_t: bool, gw: Tensor, gtimes: Tensor) -> None:
    """Gradients of one slice of samples: accumulate dL/dW into gw ([C, N], or [B, C, N] for
    per-sample weights) and write dL/dt into gtimes [B, n] (original event order).

    t [B, n] times, ch [B, n], order [B, n] (the forward's arrival order), nvalid [B], horizon [B],
    W [C, N] or [B, C, N], spikes/g [B, N, S] (spike times, dL/d spike time), counts [B, N],
    xrec [B, N, S, d] (the state at each spike, before its reset)."""
    from spikescan.compiler.backends.mlir.adjoint_events import LANES, events_backward

    dt = t.dtype
    d = kern.d
    Bn, n = t.shape
    N = counts.shape[1]
    with torch.no_grad():
        ts = torch.gather(t, 1, order)  # arrival order (padding last)
        chs = torch.gather(ch, 1, order).contiguous()
        # interval ends T_0..T_{nv-1}, then the horizon; starts 0, T_0, ...
        k = torch.arange(n + 1)
        ends = torch.cat([ts, horizon.reshape(Bn, 1).to(dt)], 1)
        ends = torch.where(k[None, :] < nvalid[:, None], ends, horizon.reshape(Bn, 1).to(dt))
        starts = torch.cat([torch.zeros((Bn, 1), dtype=dt), ends[:, :-1]], 1)
        phit = _phi_T(kern, (ends - starts).clamp_min(0.0), P).to(dt).contiguous()  # [B, n+1, d*d]

        # the spikes, flat in (b, j, m) order, and the interval of each: #events before it
        valid = torch.arange(spikes.shape[2])[None, None, :] < counts[:, :, None]
        bi, ji, mi = valid.nonzero(as_tuple=True)
        s = spikes[bi, ji, mi]
        fin_ts = torch.where(torch.arange(n)[None, :] < nvalid[:, None], ts, torch.full_like(ts, math.inf))
        # per sample: the number of events before each spike (padding +inf sorts last)
        e_all = torch.searchsorted(fin_ts.contiguous(), spikes.reshape(Bn, -1).contiguous(), side="left")
        e = e_all.reshape(spikes.shape)[bi, ji, mi]
        t_end_iv = ends[bi, e]
        t_start_iv = starts[bi, e]
        first = mi == 0
        prev_s = torch.where(first, torch.full_like(s, -math.inf), spikes[bi, ji, (mi - 1).clamp_min(0)])
        before_from = torch.maximum(prev_s, t_start_iv)
        aft = _phi_T(kern, (t_end_iv - s).clamp_min(0.0), P)
        bef = _phi_T(kern, (s - before_from).clamp_min(0.0), P)

        M, cu, A, Bv = spike_terms(kern, port, P, xrec[bi, ji, mi])
        q = -cu * g[bi, ji, mi].to(torch.float64)[:, None]

        # groups: the spikes of one neuron in one interval (consecutive in the flat order)
        flat = torch.arange(s.numel())
        key = (bi * (n + 1) + e) * N + ji
        newg = torch.ones_like(key, dtype=torch.bool)
        if key.numel() > 1:
            newg[1:] = key[1:] != key[:-1]
        gstart = flat[newg]
        gend = torch.cat([gstart[1:], torch.tensor([s.numel()])]) - 1 if gstart.numel() else gstart
        # the kernel walks intervals backwards: groups sorted by (b, e), pointer per (b, e)
        gkey = (bi * (n + 1) + e)[gstart]
        perm = torch.argsort(gkey, stable=True)
        grp = torch.stack([ji[gstart], gend, gstart], 1)[perm].to(torch.int64).contiguous()
        cnt = torch.bincount(gkey, minlength=Bn * (n + 1)).reshape(Bn, n + 1)
        gptr = torch.zeros((Bn, n + 2), dtype=torch.int64)
        gptr[:, 1:] = cnt.cumsum(1)
        gptr += torch.cat([torch.zeros(1, dtype=torch.int64), cnt.sum(1).cumsum(0)[:-1]])[:, None]

        # the neuron dimension padded to whole vectors (zero weights: padded lanes stay 0)
        V = LANES["f64" if dt == torch.float64 else "f32"]
        Np = -(-N // V) * V
        Wd = (W if W.dim() == 3 else W.unsqueeze(0)).to(dt)
        gw3 = gw if gw.dim() == 3 else gw.unsqueeze(0)
        if Np != N:
            Wd = torch.nn.functional.pad(Wd, (0, Np - N))
            gw_pad = torch.zeros((*gw3.shape[:2], Np), dtype=dt)
        else:
            gw_pad = gw3
        Wd = Wd.contiguous()
        bab = torch.cat([Bv, Bv @ A.T], -1).to(dt).contiguous()  # [2d], or [C, 2d] (several ports)
        gt_sorted = torch.zeros((Bn, n), dtype=dt)
        lam = torch.empty((d, Np), dtype=dt)
        tmp = torch.empty((max(int(grp.shape[0]), 1), d), dtype=dt)
        empty = torch.zeros((1, d * d), dtype=dt)

        def dense(x, like=empty):
            return x.to(dt).reshape(-1, like.shape[1]).contiguous() if x.numel() else like

        events_backward(d, [chs, nvalid.to(torch.int64).contiguous(), torch.tensor([int(bool(want_t))]),
                            phit, gptr.contiguous(), grp if grp.numel() else torch.zeros((1, 3), dtype=torch.int64),
                            dense(aft), dense(M.reshape(-1, d * d)), dense(bef), dense(q, torch.zeros((1, d), dtype=dt)),
                            Wd, bab, gw_pad, gt_sorted, lam, tmp])
        if gw_pad is not gw3:
            gw3 += gw_pad[:, :, :N]
        if want_t:
            gtimes.scatter_(1, order, gt_sorted)
