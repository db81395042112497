"""Exact ties in the chunked scan ("torch" engine): decide u == theta at an interval start as
the sequential engines do.

After a reset the scan writes the true state of interval k as X_k + Phi(t_k - t*) delta (X: the
chunk's no-spike trajectory, delta: the reset jump). That equals the sequential engines' state
Phi(D_k) (... x_reset ...) + B w_k in exact arithmetic but not to the last bit: the correction
cancels most of X, leaving a residue of a few ulp of |X|. An input that lands exactly on theta
after a reset to 0 (w = v_th, or two inputs of v_th / 2 at one time) would then be missed. So:

- the state right after the first event past a restart is always computed sequentially
  (`after_event`), and
- every later interval start whose potential lies within the cancellation bound of theta is
  recomputed sequentially from the restart state (`sequential_starts`), on those lanes only.

Decisions then match the sequential engines whenever the restart state does; the values that
carry gradients keep the scan's form (the same function, so the same gradients)."""

from __future__ import annotations

import torch

from spikescan.runtime.engines.common import lane_params
from spikescan.runtime.engines.ports import apply_jump, jump_vectors
from spikescan.runtime.kernels import densify

Tensor = torch.Tensor


def take(T: Tensor, lanes: Tensor, k: Tensor, N: int) -> Tensor:
    """T[b, n, k] for flat lanes (b*N + n) from a [B, Nd, K] tensor (Nd = 1: shared order)."""
    if T.shape[1] == 1:
        return T[lanes // N, 0, k]
    return T[lanes // N, lanes % N, k]


def jump(kern, port, D, x, te, w, P, pe=None):
    """Propagate x by D, then apply the input jump B w (the sequential engines' step; with a
    PortMap, pe: the events' port indices, like w)."""
    x = densify(kern.propagate(D, x, P), te)
    return apply_jump(x, jump_vectors(kern, port, P, pe, te.dtype), w)


def after_event(kern, port, t, w, idx, p, x_cur, t_cur, Pl, N, pe=None):
    """State right after event p of each restarted lane, computed sequentially."""
    te_p = take(t, idx, p, N)
    return jump(kern, port, te_p - t_cur, x_cur, te_p, take(w, idx, p, N), Pl,
                None if pe is None else take(pe, idx, p, N))


def at_next(kk, p, x_next, start):
    """start [M, K] with interval p+1 (right after event p) taken from x_next [M]."""
    nxt = kk[None, :] == (p + 1)[:, None]
    return [torch.where(nxt, xn[:, None], sc) for xn, sc in zip(x_next, start)]


@torch.no_grad()
def sequential_starts(kern, port, start, scan_part, corr, ok, kk, p, x_cur, t_cur, te_a, w_a, Pl, Plk, pe_a=None):
    """start [M, K] (scan_part + corr, interval p+1 already exact) with the interval starts k >= p+2
    whose potential is within the cancellation bound of theta replaced by the sequential values
    from the restart state (x_cur at t_cur). Rare: a Python loop over events on those lanes."""
    eps = torch.finfo(te_a.dtype).eps
    theta = kern.theta(Plk)
    c = kern.c(Plk)
    u = kern.potential(start, Plk)
    size = _size(c, scan_part, te_a) + _size(c, corr, te_a)
    bound = 16 * eps * size + 4 * eps * (theta.abs() if torch.is_tensor(theta) else abs(theta))
    amb = ok & (kk[None, :] >= (p + 2)[:, None]) & ((u - theta).abs() <= bound)
    if not bool(amb.any()):
        return start
    la = amb.any(1).nonzero().squeeze(1)
    kmax = torch.where(amb[la], kk[None, :], torch.full_like(amb[la], -1, dtype=kk.dtype)).amax(1)
    seq = _chain(kern, port, [v[la] for v in x_cur], t_cur[la], p[la], kmax, te_a[la], w_a[la],
                 lane_params(Pl, la), [v[la].clone() for v in start], None if pe_a is None else pe_a[la])
    out = []
    for v, s_ in zip(start, seq):
        v = v.clone()
        v[la] = s_
        out.append(v)
    return out


def _size(c, parts, like):
    return sum(((ci * v).abs() for ci, v in zip(c, parts) if ci is not None and v is not None),
               torch.zeros_like(like))


@torch.no_grad()
def exact_end(kern, port, xe, scan_end, corr_end, x_cur, t_cur, p, te_a, w_a, Pl, pe_a=None):
    """The chunk-end state xe (d tensors [F], scan_end + corr_end, with autograd) of lanes that
    restarted at interval p < K - 1: where its potential is within the cancellation bound of
    theta, the value becomes the sequential one from the restart state (the gradient keeps the
    scan's form: xe + (sequential - xe).detach())."""
    K = te_a.shape[1]
    eps = torch.finfo(te_a.dtype).eps
    P1 = tuple(v if not torch.is_tensor(v) or v.dim() == 0 else v for v in Pl)
    theta, c = kern.theta(P1), kern.c(P1)
    xd = [v.detach() for v in xe]
    size = _size(c, [v.detach() if torch.is_tensor(v) else v for v in scan_end], xd[0]) + \
        _size(c, [None if v is None else v.detach() for v in corr_end], xd[0])
    tha = theta.abs() if torch.is_tensor(theta) else abs(theta)
    amb = (p < K - 1) & ((kern.potential(xd, P1) - theta).abs() <= 16 * eps * size + 4 * eps * tha)
    if not bool(amb.any()):
        return xe
    la = amb.nonzero().squeeze(1)
    kmax = torch.full_like(la, K)
    end = [v[la].unsqueeze(1).expand(-1, K + 1).clone() for v in xd]
    seq = _chain(kern, port, [v.detach()[la] for v in x_cur], t_cur.detach()[la], p[la], kmax, te_a[la],
                 w_a[la], lane_params(P1, la), end, None if pe_a is None else pe_a[la])
    out = []
    for v, s_ in zip(xe, seq):
        fix = torch.zeros_like(v.detach()).index_put((la,), s_[:, K] - v.detach()[la])
        out.append(v + fix)
    return out


def _chain(kern, port, x, tprev, pa, kmax, te, w, Pa, seq, pe=None):
    """Sequential steps over events pa..kmax-1 of each lane (state after event e -> seq[:, e+1])."""
    for e in range(int(pa.min()), int(kmax.max())):
        act = (e >= pa) & (e < kmax)  # event e lies between the restart and the last start needed
        t_e = te[:, e]
        xn = jump(kern, port, (t_e - tprev).clamp(min=0), x, t_e, w[:, e], Pa, None if pe is None else pe[:, e])
        x = [torch.where(act, a, b) for a, b in zip(xn, x)]
        tprev = torch.where(act, t_e, tprev)
        for s_, xv in zip(seq, x):
            s_[:, e + 1] = torch.where(act, xv, s_[:, e + 1])
    return seq
