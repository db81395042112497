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

from spikescan.runtime.engines import parallel
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


_CONSTS: dict = {}


def _constants(kern: NeuronKernels, P: tuple, names: tuple) -> tuple:
    """(A, R, a0, r, c, B of each port name) as float64 tensors, once per (neuron, parameters)."""
    key = (id(kern), P, names)
    hit = _CONSTS.get(key)
    if hit is None or hit[0] is not kern:
        A, R = _mat(kern.A(P)), _mat(kern.R(*P))
        a0 = torch.tensor([_num(v) for v in kern.a0(P)], dtype=torch.float64)
        r = torch.tensor([_num(row[0]) for row in kern.r(*P)], dtype=torch.float64)
        c = torch.tensor([_num(v) for v in kern.c(P)], dtype=torch.float64)
        Bp = torch.tensor([[_num(v) for v in kern.B(name, P)] for name in names], dtype=torch.float64)
        if len(_CONSTS) > 64:
            _CONSTS.clear()
        hit = _CONSTS[key] = (kern, (A, R, a0, r, c, Bp))  # kern kept: its id is not reused
    return hit[1]


def spike_terms(kern: NeuronKernels, port: Optional[str], P: tuple, xm: Tensor) -> tuple:
    """Per spike (pre-reset states xm [S, d]): (M [S, d, d], c / u' [S, d], A [d, d], B [d] or,
    for a PortMap, [C, d] per input channel), float64, as in the module docstring."""
    names = tuple(port.names) if is_multi(port) else (port,)
    A, R, a0, r, c, Bp = _constants(kern, P, names)
    Bv = Bp[port.index.cpu()] if is_multi(port) else Bp[0]  # [C, d]: the B of each channel's port
    xm = xm.to(torch.float64)

    def mv(X, Mat):  # X @ Mat.T, elementwise (a matmul's bits may depend on the number of rows)
        return (X[:, None, :] * Mat[None, :, :]).sum(-1)

    ym = mv(xm, A) + a0
    xp = mv(xm, R) + r
    yp = mv(xp, A) + a0
    v = mv(ym, R) - yp
    up = (ym * c).sum(-1)
    cu = c[None, :] / up[:, None]  # [S, d]
    M = R.T[None, :, :] - cu[:, :, None] * v[:, None, :]
    return M, cu, A, Bv


def _spike_arrays(kern, port, P, ts, nvalid, hz, spikes, counts, xrec, g, erec, dt) -> tuple:
    """For samples whose arrival times are ts [b, n] (+inf padding last) and whose spikes lie in
    the intervals erec (as the forward found them): the kernel's flat
    pointer per (sample, interval) [b*(n+1)+1], its groups [G, 3] and the per-spike matrices
    After, M, Before [S, d*d] and q [S, d] (module docstring). Elementwise per spike: the same bits
    for any cut of the batch."""
    n = ts.shape[1]
    Bn, N = counts.shape
    d = kern.d
    # the spikes, flat in (b, j, m) order, and the interval of each: #events before it
    valid = torch.arange(spikes.shape[2])[None, None, :] < counts[:, :, None]
    bi, ji, mi = valid.nonzero(as_tuple=True)
    s = spikes[bi, ji, mi]
    e = erec[bi, ji, mi]
    # the interval (T_{e-1}, T_e]: T_{-1} = 0, T_nv = the horizon
    t_end_iv = torch.where(e < nvalid[bi], ts[bi, e.clamp_max(n - 1)], hz[bi])
    t_start_iv = torch.where(e > 0, ts[bi, (e - 1).clamp_min(0)], torch.zeros((), dtype=dt))
    prev_s = torch.where(mi == 0, torch.full_like(s, -math.inf), spikes[bi, ji, (mi - 1).clamp_min(0)])
    before_from = torch.maximum(prev_s, t_start_iv)
    # After (interval end back to the spike) and Before (spike back to the previous one), one call
    ab = _phi_T(kern, torch.cat([t_end_iv - s, s - before_from]).clamp_min(0.0), P)
    aft, bef = ab[: s.numel()], ab[s.numel():]
    M, cu, A, Bv = spike_terms(kern, port, P, xrec[bi, ji, mi])
    q = -cu * g[bi, ji, mi].to(torch.float64)[:, None]

    # groups: the spikes of one neuron in one interval (consecutive in the flat order), sorted by
    # (b, e) with a flat pointer per (b, e): the kernel walks intervals backwards
    key = (bi * (n + 1) + e) * N + ji
    newg = torch.ones_like(key, dtype=torch.bool)
    if key.numel() > 1:
        newg[1:] = key[1:] != key[:-1]
    gstart = torch.arange(s.numel())[newg]
    gend = torch.cat([gstart[1:], torch.tensor([s.numel()])]) - 1 if gstart.numel() else gstart
    gkey = (bi * (n + 1) + e)[gstart]
    perm = torch.argsort(gkey, stable=True)
    grp = torch.stack([ji[gstart], gend, gstart], 1)[perm].to(torch.int64).contiguous()
    gptr = torch.zeros(Bn * (n + 1) + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(gkey, minlength=Bn * (n + 1)), 0, out=gptr[1:])

    empty = torch.zeros((1, d * d), dtype=dt)

    def dense(x, like=empty):
        return x.to(dt).reshape(-1, like.shape[1]).contiguous() if x.numel() else like

    return (gptr, grp if grp.numel() else torch.zeros((1, 3), dtype=torch.int64), dense(aft),
            dense(M.reshape(-1, d * d)), dense(bef), dense(q, torch.zeros((1, d), dtype=dt))), int(grp.shape[0])


def backward(kern: NeuronKernels, port: Optional[str], P: tuple, t: Tensor, ch: Tensor, order: Tensor,
             nvalid: Tensor, horizon: Tensor, W: Tensor, spikes: Tensor, counts: Tensor, xrec: Tensor,
             g: Tensor, want_t: bool, gw: Tensor, gtimes: Tensor, phit: Tensor, erec: Tensor,
             parts: Optional[list] = None, run=None, threads: int = 1) -> list:
    """Gradients of a batch: dL/dt into gtimes [B, n] (original event order), and dL/dW into gw
    ([B, C, N], per-sample weights) or, for shared weights, into one [C, N] buffer per part (the
    list returned, for the caller to add in part order).

    t [B, n] times, ch [B, n], order [B, n] (the forward's arrival order), nvalid [B], horizon [B],
    W [C, N] or [B, C, N], spikes/g [B, N, S] (spike times, dL/d spike time), counts [B, N],
    xrec [B, N, S, d] (the state at each spike, before its reset), phit [B, n+1, d*d] (the
    forward's Phi(D)^T of every interval), erec [B, N, S] (the interval of each spike, as the
    forward found it). The parts [b0, b1) of `parts`
    (default: one) are cut into runs of consecutive parts (1, or 2 per thread); `run(fn, runs)` (e.g.
    parallel.run) gives each run to a thread, which prepares its samples' spike matrices
    (vectorised torch ops) and calls the kernel on each of its parts. The results do not depend
    on `threads`."""
    from spikescan.compiler.backends.mlir.adjoint_events import LANES, events_backward

    dt = t.dtype
    d = kern.d
    Bn, n = t.shape
    N = counts.shape[1]
    parts = parts or [(0, Bn)]
    identity = order.stride(0) == 0 and bool(torch.equal(order[0], torch.arange(n)))  # already in time order
    with torch.no_grad():
        ts = t if identity else torch.gather(t, 1, order)  # arrival order (+inf padding last)
        chs = (ch if identity else torch.gather(ch, 1, order)).contiguous()
        hz = horizon.reshape(Bn).to(dt)
        phit = phit.contiguous()  # [B, n+1, d*d]
        A, _, _, _, _, Bp = _constants(kern, P, tuple(port.names) if is_multi(port) else (port,))
        Bv = Bp[port.index.cpu()] if is_multi(port) else Bp[0]
        # the neuron dimension padded to whole vectors (zero weights: padded lanes stay 0)
        V = LANES["f64" if dt == torch.float64 else "f32"]
        Np = -(-N // V) * V
        Wd = (W if W.dim() == 3 else W.unsqueeze(0)).to(dt)
        if Np != N:
            Wd = torch.nn.functional.pad(Wd, (0, Np - N))
        Wd = Wd.contiguous()
        bab = torch.cat([Bv, Bv @ A.T], -1).to(dt).contiguous()  # [2d], or [C, 2d] (several ports)
        gt_sorted = torch.zeros((Bn, n), dtype=dt)
        nv64 = nvalid.to(torch.int64).contiguous()
        flag = torch.tensor([int(bool(want_t))])
        C = Wd.shape[1]
    per_sample = W.dim() == 3

    def one_part(part, a0, spk, tmp):
        b0, b1 = part
        direct = per_sample and Np == N and gw.is_contiguous() and gw.dtype == dt
        gw_p = gw[b0:b1] if direct else torch.zeros(((b1 - b0) if per_sample else 1, C, Np), dtype=dt)
        lam = torch.empty((d, Np), dtype=dt)
        gptr_p = spk[0][(b0 - a0) * (n + 1):]  # the run's pointers are global to the run
        events_backward(d, [chs[b0:b1], nv64[b0:b1], flag, phit[b0:b1], gptr_p, *spk[1:],
                            Wd[b0:b1] if per_sample else Wd, bab, gw_p, gt_sorted[b0:b1], lam, tmp])
        if per_sample:
            if not direct:
                gw[b0:b1] += gw_p[:, :, :N]
            return None
        return gw_p[0, :, :N]

    def one_run(run_parts):
        a0, a1 = run_parts[0][0], run_parts[-1][1]
        with torch.no_grad():
            spk, G = _spike_arrays(kern, port, P, ts[a0:a1], nvalid[a0:a1], hz[a0:a1], spikes[a0:a1],
                                   counts[a0:a1], xrec[a0:a1], g[a0:a1], erec[a0:a1], dt)
        tmp = torch.empty((max(G, 1), d), dtype=dt)  # rows by group
        return [one_part(p, a0, spk, tmp) for p in run_parts]

    # one run on 1 thread; on several, two runs per thread, so that the pool balances samples of
    # unequal cost (one run per thread left a core idle at the end)
    runs = parallel.runs(parts, 1 if threads <= 1 else 2 * threads)
    out = [r for rs in (run or (lambda fn, ps: [fn(p) for p in ps]))(one_run, runs) for r in rs]
    if want_t:
        if identity:
            gtimes.copy_(gt_sorted)
        else:
            gtimes.scatter_(1, order, gt_sorted)
    return out
