"""Readout observables (max_potential, li_integral) of a layer whose spike times are already
known exactly (from the compiled sequential-cpu forward), or that has no threshold.

With the spikes known, nothing is searched: every lane's trajectory is a fixed sequence of
segments (input arrivals and its own spikes, merged in time order), and each segment ends with
an affine action (jump x + B w, or reset R x + r). So, per lane:

1. per-segment maps x_{k+1} = J_k x_k + c_k, all segments at once from the printed propagator
   (J = Phi(D) for an arrival, R Phi(D) for a spike), no Python loop over events;
2. the prefix states X_k by the compiled affine recurrence (compiler/backends/mlir/observe.py);
3. the observable per segment, vectorised: the closed-form integral, or the maximum of u on the
   segment (stationary points isolated by the IR's chain, spike_time.potential_max), then the
   sum / max over segments;
4. exact gradients by the adjoint method: lam_k = dG/dX_k from the reverse recurrence
   lam_k = h_k + J_k^T lam_{k+1} (compiled); the observable is returned as
   obs + (S - S.detach()) with
        S = sum_k lam_{k+1} . f_k(X_k fixed, D_k, w_k, params) + G(X fixed, D, params) + lam_0 . x_0,
   whose gradient is the total derivative of the observable (chain rule over the recurrence).
   With fixed neuron parameters (the usual training case) the local partials are closed forms
   (df/dD = A y + a0 or R (A y + a0), df/dw = B) and S is linear in D and w: no autograd
   through the propagator at all. With learnable parameters one autograd pass over f_k does it.
   Spike times enter f_k through D_k and carry their own IFT gradients (the compiled adjoint).
   For the max, only the maximising segment enters G (envelope theorem): an interior maximiser
   is held fixed, a maximiser at a segment end moves with that end (a spike time or an arrival).

Ties between a spike and an arrival at the same instant: if an arrival can move u (c^T B != 0,
e.g. LIF's v += w), the spike is the one the jump caused and comes after the arrival; otherwise
before it. The replay checks u >= theta (within tolerance) just before every recorded spike and
returns None if that fails, so the caller can fall back to the torch-sequential engine.
"""

from __future__ import annotations

import math
from typing import Optional

import sympy
import torch

from spikescan.runtime.events import LayerEvents
from spikescan.runtime.kernels import NeuronKernels, matvec, rowvec
from spikescan.runtime.engines.ports import event_ports, is_multi, jump_vectors
from spikescan.runtime.engines.spike_time import potential_max

Tensor = torch.Tensor
KINDS = ("max_potential", "li_integral")


def _dense(e, like: Tensor) -> Tensor:
    if e is None:
        return torch.zeros_like(like)
    if not torch.is_tensor(e):
        return torch.full_like(like, float(e))
    return e.expand_as(like)


_MOVES: dict = {}


def _jump_moves_u(kern: NeuronKernels, port: Optional[str]) -> bool:
    """Symbolically: does an arrival on `port` change the potential c^T x? (cached per kernel)"""
    key = (id(kern), port)
    hit = _MOVES.get(key)
    if hit is not None and hit[0] is kern:
        return hit[1]
    ir = kern.ir
    if not kern.spiking:
        moves = True  # no spikes: the tie rule is never used
    else:
        Bk = ir.ports[port if port is not None else kern.port_names[0]]
        moves = sympy.simplify((sympy.Matrix(ir.c).T * sympy.Matrix(Bk))[0, 0]) != 0
    _MOVES[key] = (kern, moves)
    return moves


def _lane_params(P: tuple, B: int, N: int) -> tuple:
    """Params as floats (shared, no grad), 0-d tensors, or [B*N, 1] columns per lane."""
    out = []
    for p in NeuronKernels.constants(P):
        if torch.is_tensor(p) and p.dim() == 1:
            p = p.view(1, N, 1).expand(B, N, 1).reshape(B * N, 1)
        out.append(p)
    return tuple(out)


def _flat_params(Pl: tuple, M: int) -> tuple:
    """[L, 1] lane params expanded and flattened to [L*M] (for the 1-D solver helpers)."""
    return tuple(p.expand(p.shape[0], M).reshape(-1) if torch.is_tensor(p) and p.dim() == 2 else p for p in Pl)


def _segments(ev: LayerEvents, spikes: Optional[Tensor], spike_first: bool, B: int, N: int, pm=None):
    """Merged points per lane, sorted: times (with grad), is_spike, weight (with grad), valid,
    segment starts, and (pm: a PortMap, else None) the port index of each point (0 at spikes).
    All [L, M]. Segment k runs from point k-1 (time 0 for k = 0) to point k."""
    t, valid, w = ev.slice(0, ev.length)  # [B, Nd, K1], [B, Nd, K1], [B, N, K1]
    K1 = t.shape[-1]
    t = t.expand(B, N, K1)
    key_e = ev.key.expand(B, N, K1)
    pe = None if pm is None else event_ports(ev, pm, 0, ev.length).expand(B, N, K1)
    if spikes is None or spikes.shape[-1] == 0:
        tp, key, ws = t, key_e, w
        isp = torch.zeros((B, N, K1), dtype=torch.bool, device=t.device)
    else:
        S = spikes.shape[-1]
        sp = spikes.to(t.dtype)
        key_s = sp.detach()
        fs = torch.zeros((B, N, S), dtype=torch.bool, device=t.device)
        parts = [(sp, key_s, torch.zeros_like(key_s), ~fs, torch.zeros((B, N, S), dtype=torch.int64)),
                 (t, key_e, w, fs.new_zeros((B, N, K1)), pe)]
        if not spike_first:
            parts.reverse()
        tp = torch.cat([p[0] for p in parts], 2)
        key = torch.cat([p[1] for p in parts], 2)
        ws = torch.cat([p[2] for p in parts], 2)
        isp = torch.cat([p[3] for p in parts], 2)
        order = torch.sort(key, dim=2, stable=True).indices
        tp, key, ws, isp = (v.gather(2, order) for v in (tp, key, ws, isp))
        if pe is not None:
            pe = torch.cat([p[4].to(t.device) for p in parts], 2).gather(2, order)
    L = B * N
    M = tp.shape[-1]
    ok = torch.isfinite(key).reshape(L, M)
    tp = torch.where(ok, tp.reshape(L, M), torch.zeros((), dtype=tp.dtype))
    start = torch.cat([torch.zeros_like(tp[:, :1]), tp[:, :-1]], 1)
    D = torch.where(ok, tp - start, torch.zeros((), dtype=tp.dtype))
    return D, isp.reshape(L, M) & ok, ws.reshape(L, M), ok, start, None if pe is None else pe.reshape(L, M)


def _maps(kern: NeuronKernels, D: Tensor, isp: Tensor, w: Tensor, ok: Tensor, X: Optional[list], Pl: tuple,
          Bv: list, R: list, r: list):
    """Per-segment action. X None: the dense (J [L, M, d, d], c [L, M, d]) without grad.
    X given (d fixed start states): the differentiable end states f_k (list of d [L, M])."""
    d = kern.d
    Phi = kern.Phi(D, Pl)
    phi = kern.phi(D, Pl)
    if X is None:
        Jd = [[_dense(Phi[i][j], D) for j in range(d)] for i in range(d)]
        RJ = [[sum((_dense(R[i][m], D) * Jd[m][j] for m in range(d)), torch.zeros_like(D)) for j in range(d)]
              for i in range(d)]
        phid = [_dense(v, D) for v in phi]
        ce = [phid[i] + _dense(Bv[i], D) * w for i in range(d)]
        cs = [sum((_dense(R[i][m], D) * phid[m] for m in range(d)), torch.zeros_like(D)) + _dense(r[i], D)
              for i in range(d)]
        eye = torch.ones_like(D)
        J = torch.stack([torch.stack([torch.where(ok, torch.where(isp, RJ[i][j], Jd[i][j]),
                                                  eye if i == j else torch.zeros_like(D))
                                      for j in range(d)], -1) for i in range(d)], -2)
        c = torch.stack([torch.where(ok, torch.where(isp, cs[i], ce[i]), torch.zeros_like(D)) for i in range(d)], -1)
        return J, c
    y = [_dense(v, D) for v in kern.propagate(D, X, Pl, Phi=Phi)]
    ye = [y[i] + _dense(Bv[i], D) * w for i in range(d)]
    ys = [sum((_dense(R[i][m], D) * y[m] for m in range(d)), torch.zeros_like(D)) + _dense(r[i], D)
          for i in range(d)]
    return [torch.where(isp, ys[i], ye[i]) for i in range(d)]


def _sum_dense(terms, like: Tensor) -> Tensor:
    acc = None
    for t in terms:
        if t is None:
            continue
        acc = t if acc is None else acc + t
    return _dense(acc, like)


def observe_known_spikes(kern: NeuronKernels, P: tuple, port: Optional[str], ev: LayerEvents,
                         spikes: Optional[Tensor], kind: str, B: int, N: int) -> Optional[Tensor]:
    """Observable [B, N] of every lane over [0, horizon] (see the module docstring), with exact
    gradients to everything `ev` (times, weights, delays), `spikes` and `P` carry. Returns None
    if the recorded spikes do not replay consistently (the caller then falls back)."""
    from spikescan.compiler.backends.mlir.observe import affine_adjoint, affine_scan

    if kind not in KINDS:
        raise ValueError(f"observe must be one of {KINDS}, got {kind!r}")
    dt = ev.times_ext.dtype
    L = B * N
    pm = port if is_multi(port) else None
    moves = {_jump_moves_u(kern, p) for p in (pm.names if pm else [port])}
    if len(moves) > 1:  # ports that move u and ports that do not: no one tie rule; the caller falls back
        return None
    spike_first = not moves.pop()
    D, isp, w, ok, _, pe = _segments(ev, spikes, spike_first, B, N, pm)
    M = D.shape[1]
    Pl = _lane_params(P, B, N)
    Pd = tuple(p.detach() if torch.is_tensor(p) else p for p in Pl)
    d = kern.d
    zL = torch.zeros(L, dtype=dt)
    zero = torch.zeros((), dtype=dt)
    with torch.no_grad():
        Dd, wd = D.detach(), w.detach()
        Bv = jump_vectors(kern, port, Pd, pe, dt)  # several ports: per segment
        R = kern.R(*Pd)
        r = [row[0] for row in kern.r(*Pd)]
        J, c = _maps(kern, Dd, isp, wd, ok, None, Pd, Bv, R, r)
        x0 = torch.stack([_dense(v, zL) for v in kern.init(Pd)], -1)
        X = affine_scan(J, c, x0)  # [L, M+1, d]
        Xs = [X[:, :M, i] for i in range(d)]  # start state of each segment
        Phi = kern.Phi(Dd, Pd)
        y = kern.propagate(Dd, Xs, Pd, Phi=Phi)  # state at each segment's end, before its action
        cvec = kern.c(Pd)
        uend = _dense(rowvec(cvec, y), Dd)
        if spikes is not None and bool(isp.any()):
            # consistency: u just before each recorded spike must have reached theta
            th = _dense(kern.theta(Pd), Dd)
            tol = (1e-7 if dt == torch.float64 else 1e-3) * (1.0 + th.abs())
            if bool((isp & (uend < th - tol)).any()):
                return None
        if kind == "li_integral":
            g = _dense(rowvec(cvec, kern.integral_state(Dd, Xs, Pd)), Dd)
            obs = torch.where(ok, g, zero).sum(1)
        else:
            obs, kstar, loc = _segment_max(kern, Xs, y, uend, Dd, ok, Pd, L, M)

    needs = torch.is_grad_enabled() and (D.requires_grad or w.requires_grad or
                                         any(torch.is_tensor(p) and p.requires_grad for p in Pl))
    if not needs:
        return obs.reshape(B, N)
    lane = torch.arange(L)
    if any(torch.is_tensor(p) and p.requires_grad for p in Pl):
        S = _surrogate_autograd(kern, port, kind, D, isp, w, ok, Xs, J, Pl, L, M,
                                None if kind == "li_integral" else (kstar, loc), pe)
        return (obs + (S - S.detach())).reshape(B, N)

    # Parameters fixed: the local partials are closed forms (no autograd through Phi).
    # h_k = dG/dX_k (direct), gD_k = dG/dD_k (direct)
    h = torch.zeros((L, M + 1, d), dtype=dt)
    with torch.no_grad():
        if kind == "li_integral":
            # G_k = c^T A^{-1} (Phi(D) X + phi - X - a0 D): dG/dX = (Phi^T - I) A^{-T} c, dG/dD = c^T y
            q = rowvec_left(cvec, kern._Ainv(*Pd))
            for j in range(d):
                hj = _sum_dense([None if q[i] is None or Phi[i][j] is None else q[i] * Phi[i][j] for i in range(d)]
                                + [None if q[j] is None else -q[j] + torch.zeros_like(Dd)], Dd)
                h[:, :M, j] = torch.where(ok, hj, zero)
            gD = torch.where(ok, uend, zero)
        else:
            Pk = tuple(p[:, 0] if torch.is_tensor(p) and p.dim() == 2 else p for p in Pd)
            Dk = Dd[lane, kstar]
            at_end = (loc == Dk) & (Dk > 0)
            row = [_dense(v, loc) for v in rowvec_left(kern.c(Pk), kern.Phi(loc, Pk))]
            for j in range(d):
                h[lane, kstar, j] = row[j]
            yk = [_dense(v[lane, kstar] if torch.is_tensor(v) and v.dim() == 2 else v, loc) for v in y]
            du = _dense(rowvec(kern.c(Pk), kern.derivative_state(yk, Pk)), loc)
            gD = torch.zeros_like(Dd)
            gD[lane, kstar] = torch.where(at_end, du, torch.zeros_like(du))
        lam = affine_adjoint(J, h)[:, 1:]  # lam_{k+1}: total dObs/d(state after segment k)
        lamd = [lam[..., i] for i in range(d)]
        # d f_k / d D_k = A y + a0 (arrival), R (A y + a0) (spike); d f_k / d w_k = B
        yd = kern.derivative_state(y, Pd)
        ev_dot = _sum_dense([None if v is None else v * lamd[i] for i, v in enumerate(yd)], Dd)
        Ry = matvec(R, yd)
        sp_dot = _sum_dense([None if v is None else v * lamd[i] for i, v in enumerate(Ry)], Dd)
        gD = gD + torch.where(ok, torch.where(isp, sp_dot, ev_dot), zero)
        gw = torch.where(ok & ~isp, _sum_dense([None if b is None else b * lamd[i] for i, b in enumerate(Bv)], Dd), zero)
    S = (gD * D).sum(1) + (gw * w).sum(1)
    return (obs + (S - S.detach())).reshape(B, N)


def rowvec_left(row: list, Mx: list) -> list:
    """row^T M as a list (None-aware)."""
    d = len(Mx[0])
    out = []
    for j in range(d):
        acc = None
        for i, ri in enumerate(row):
            if ri is None or Mx[i][j] is None:
                continue
            t = ri * Mx[i][j]
            acc = t if acc is None else acc + t
        out.append(acc)
    return out


def _segment_max(kern: NeuronKernels, Xs: list, y: list, uend: Tensor, D: Tensor, ok: Tensor, Pd: tuple,
                 L: int, M: int):
    """Max of u over every lane's segments: (value [L], maximising segment [L], location [L]).
    Ends first (u at start and end of every segment), then the interior stationary points of
    the segments where u can peak inside (with at most one stationary point: u' > 0 at the
    start and u' < 0 at the end; every segment when the chain allows more)."""
    dt = D.dtype
    cvec = kern.c(Pd)
    ustart = _dense(rowvec(cvec, Xs), D)
    ninf = torch.full((), -math.inf, dtype=dt)
    vals = torch.where(ok, torch.maximum(ustart, uend), ninf)
    locs = torch.where(ustart >= uend, torch.zeros_like(D), D)
    cand = ok & (D > 0)
    if len(kern.chain_rows(Pd)) <= 2:  # u' has at most one zero per segment: a peak inside
        dstart = _dense(rowvec(cvec, kern.derivative_state(Xs, Pd)), D)  # needs u' from + to -
        dend = _dense(rowvec(cvec, kern.derivative_state(y, Pd)), D)
        cand = cand & (dstart > 0) & (dend < 0)
    idx = cand.reshape(-1).nonzero().squeeze(1)
    if idx.numel():
        Pf = _flat_params(Pd, M)
        Pc = tuple(p[idx] if torch.is_tensor(p) and p.dim() == 1 else p for p in Pf)
        xc = [v.reshape(-1)[idx] for v in Xs]
        Dc = D.reshape(-1)[idx]
        lc = potential_max(kern, xc, Pc, Dc)
        uc = _dense(rowvec(kern.c(Pc), kern.propagate(lc, xc, Pc)), Dc)
        vf, lf = vals.reshape(-1).clone(), locs.reshape(-1).clone()
        better = uc > vf[idx]
        vf[idx] = torch.where(better, uc, vf[idx])
        lf[idx] = torch.where(better, lc, lf[idx])
        vals, locs = vf.reshape(L, M), lf.reshape(L, M)
    obs, kstar = vals.max(1)
    loc = locs.gather(1, kstar[:, None])[:, 0]
    return obs, kstar, loc


def _surrogate_autograd(kern, port, kind, D, isp, w, ok, Xs, J, Pl, L, M, mx, pe=None):
    """General gradient (parameters need gradients too): lam from the compiled adjoint, the
    local partials by one autograd pass over the per-segment maps."""
    from spikescan.compiler.backends.mlir.observe import affine_adjoint

    dt = D.dtype
    d = kern.d
    zero = torch.zeros((), dtype=dt)
    lane = torch.arange(L)
    zL = torch.zeros(L, dtype=dt)
    Xleaf = [v.detach().clone().requires_grad_(True) for v in Xs]
    with torch.enable_grad():
        if kind == "li_integral":
            g = _dense(rowvec(kern.c(Pl), kern.integral_state(D, Xleaf, Pl)), D)
            G = torch.where(ok, g, zero).sum(1)
        else:
            kstar, loc = mx
            Dk = D[lane, kstar]
            Pk = tuple(p[:, 0] if torch.is_tensor(p) and p.dim() == 2 else p for p in Pl)
            at_end = (loc == Dk.detach()) & (Dk.detach() > 0)
            lk = torch.where(at_end, Dk, loc)
            xk = [v[lane, kstar] for v in Xleaf]
            G = _dense(rowvec(kern.c(Pk), kern.propagate(lk, xk, Pk)), lk)
        hx = torch.autograd.grad(G.sum(), Xleaf, retain_graph=True, allow_unused=True)
    h = torch.zeros((L, M + 1, d), dtype=dt)
    for i, gi in enumerate(hx):
        if gi is not None:
            h[:, :M, i] = gi.detach()
    lam = affine_adjoint(J, h)
    Xfix = [v.detach() for v in Xs]
    f = _maps(kern, D, isp, w, ok, Xfix, Pl, jump_vectors(kern, port, Pl, pe, dt), kern.R(*Pl),
              [row[0] for row in kern.r(*Pl)])
    S = G
    for i in range(d):
        S = S + torch.where(ok, f[i], zero).mul(lam[:, 1:, i]).sum(1)
    x0g = kern.init(Pl)
    for i in range(d):
        if torch.is_tensor(x0g[i]) and x0g[i].requires_grad:
            S = S + _dense(x0g[i], zL) * lam[:, 0, i]
    return S
