"""The spike-time solver (DESIGN.md section 5) and its implicit-function-theorem gradient.

`first_crossing` finds, for a batch of lanes, the first D in [lo, hi] where the potential
u(D) = c^T x(D) from the interval-start state x reaches theta (u(lo) >= theta counts: that is a
jump crossing or the end of a refractory period). It runs without autograd:

1. isolation: with y0 = A x + a0, g_k(D) = l_k Phi(D) y0 for the chain rows l_k of the IR.
   The top row has one sign, and zeros of g_k are separated by zeros of g_{k+1} (Rolle), so
   walking the chain downwards splits [lo, hi] into pieces on which u is monotone (g_0 = u');
2. the first piece whose right end reaches theta holds the first crossing; it is bracketed and
   solved by safeguarded Newton (bisection fallback) to a few ulp of the spike time.

`SpikeTime.apply(kern, D, *x, *params)` returns D unchanged and differentiates it by the implicit
function theorem: dD/dp = -(du/dp) / (du/dD) at the root, p = interval-start state and params
(theta is a function of the params). The iterations are never differentiated.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from spikescan.runtime.kernels import NeuronKernels, matvec, rowvec

Tensor = torch.Tensor

MAX_ITER = 120
NEWTON_ITERS = 40


def _t(v, like: Tensor) -> Tensor:
    if v is None:
        return torch.zeros_like(like)
    if not torch.is_tensor(v):
        return torch.full_like(like, float(v))
    return v.expand_as(like) if v.shape != like.shape else v


def _sub(v, idx):
    """Select lanes idx of a per-lane tensor; shared (0-d) values and None pass through."""
    if torch.is_tensor(v) and v.dim() > 0:
        return v[idx]
    return v


class _Lanes:
    """Interval-start data of a batch of lanes: everything the solver evaluates repeatedly."""

    def __init__(self, kern: NeuronKernels, x: list, P: tuple):
        self.kern, self.x, self.P = kern, x, P
        self.y0 = kern.derivative_state(x, P)
        self.y1 = matvec(kern.A(P), self.y0)
        self.rows = kern.chain_rows(P)
        self.c = kern.c(P)
        self.theta = kern.theta(P)

    def subset(self, idx: Tensor) -> "_Lanes":
        new = object.__new__(_Lanes)
        new.kern = self.kern
        new.x = [_sub(v, idx) for v in self.x]
        new.P = tuple(_sub(p, idx) for p in self.P)
        new.y0 = [_sub(v, idx) for v in self.y0]
        new.y1 = [_sub(v, idx) for v in self.y1]
        new.rows = [[_sub(v, idx) for v in row] for row in self.rows]
        new.c = [_sub(v, idx) for v in self.c]
        new.theta = _sub(self.theta, idx)
        return new

    def u(self, D: Tensor):
        """(u - theta, u') at offsets D."""
        Phi = self.kern.Phi(D, self.P)
        x = matvec(Phi, self.x)
        phi = self.kern.phi(D, self.P)
        u = rowvec(self.c, [a if b is None else (b if a is None else a + b) for a, b in zip(x, phi)])
        u = _t(u, D)
        if self.theta is not None:
            u = u - self.theta
        up = _t(rowvec(self.c, matvec(Phi, self.y0)), D)
        return u, up

    def g(self, k: int, D: Tensor):
        """(g_k, g_k') at offsets D."""
        Phi = self.kern.Phi(D, self.P)
        return (_t(rowvec(self.rows[k], matvec(Phi, self.y0)), D),
                _t(rowvec(self.rows[k], matvec(Phi, self.y1)), D))


def bracket_solve(fn: Callable, a: Tensor, b: Tensor, fa: Tensor, fb: Tensor, scale: Tensor,
                  max_iter: int = MAX_ITER) -> Tensor:
    """Root of fn in [a, b] (fa, fb of opposite signs or one zero), per lane, vectorised.

    fn(D) -> (f, f'). Safeguarded Newton: a Newton step is taken when it stays inside the
    bracket and shrinks fast enough, else bisection. Stops at |step| <= 4 ulp of (scale + D)."""
    eps = torch.finfo(a.dtype).eps
    tiny = torch.finfo(a.dtype).tiny
    neg = torch.where(fa < 0, a, b)
    pos = torch.where(fa < 0, b, a)
    fneg = torch.where(fa < 0, fa, fb)
    fpos = torch.where(fa < 0, fb, fa)
    denom = fpos - fneg
    x = neg - fneg * (pos - neg) / torch.where(denom != 0, denom, torch.ones_like(denom))
    lo_b, hi_b = torch.minimum(neg, pos), torch.maximum(neg, pos)
    bad = ~torch.isfinite(x) | (x < lo_b) | (x > hi_b)
    x = torch.where(bad, 0.5 * (neg + pos), x)
    x = torch.where(fa == 0, a, torch.where(fb == 0, b, x))
    done = (fa == 0) | (fb == 0)
    dx_old = (hi_b - lo_b).abs()
    prev_newton = torch.zeros_like(done)
    for it in range(max_iter):
        if bool(done.all()):
            break
        f, fp = fn(x)
        neg = torch.where(f < 0, x, neg)
        pos = torch.where(f >= 0, x, pos)
        lo_b, hi_b = torch.minimum(neg, pos), torch.maximum(neg, pos)
        step = f / torch.where(fp != 0, fp, torch.ones_like(fp))
        newton = x - step
        # Newton is taken whenever it stays in the bracket (on a monotone piece it converges,
        # one-sidedly once u is convex/concave near the root); after NEWTON_ITERS tries the
        # rest is plain bisection, so the cap always brackets the root to ~ulp.
        ok = (fp != 0) & torch.isfinite(newton) & (newton >= lo_b) & (newton <= hi_b) & (it < NEWTON_ITERS)
        mid = 0.5 * (lo_b + hi_b)
        xn = torch.where(ok, newton, mid)
        tol = 4 * eps * (scale.abs() + xn.abs()) + 4 * tiny
        # Newton converges from one side, so the bracket need not shrink: a Newton correction
        # below tolerance also ends the iteration (at the corrected point, kept in the bracket)
        small = torch.isfinite(newton) & (step.abs() <= tol)
        xn = torch.where(small, newton.clamp(min=lo_b).minimum(hi_b), xn)
        # rounding floor: Newton corrections stop shrinking -> x is as good as f can tell
        floor = ok & prev_newton & (step.abs() >= dx_old) & (step.abs() <= 1e3 * tol)
        conv = ((xn - x).abs() <= tol) | (f == 0) | ((hi_b - lo_b) <= tol) | small | floor
        xn = torch.where(floor, x, xn)
        prev_newton = ok
        dx_old = torch.where(ok, step.abs(), 0.5 * (hi_b - lo_b))
        xn = torch.where(f == 0, x, xn)
        x = torch.where(done, x, xn)
        done = done | conv
    return x


def _sign_change(fa: Tensor, fb: Tensor) -> Tensor:
    return ((fa < 0) & (fb > 0)) | ((fa > 0) & (fb < 0))


def _solve_masked(fn_of_subset, lanes: _Lanes, mask: Tensor, a, b, fa, fb, scale, fill: Tensor):
    """bracket_solve on the lanes in mask only; other lanes get `fill`."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return fill
    sub = lanes.subset(idx)
    r = bracket_solve(lambda D: fn_of_subset(sub, D), a[idx], b[idx], fa[idx], fb[idx], scale[idx])
    return fill.index_put((idx,), r)


def monotone_pieces(lanes: _Lanes, lo: Tensor, hi: Tensor, scale: Tensor) -> list[Tensor]:
    """Sorted breakpoints lo = p_0 <= ... <= p_m = hi with u monotone between consecutive ones
    (empty pieces are repeated points)."""
    bps = [lo, hi]
    for k in range(len(lanes.rows) - 2, -1, -1):
        vals = [lanes.g(k, p)[0] for p in bps]
        new = [bps[0]]
        for q in range(len(bps) - 1):
            a, b, fa, fb = bps[q], bps[q + 1], vals[q], vals[q + 1]
            sc = _sign_change(fa, fb) & (b > a)
            r = _solve_masked(lambda s, D, k=k: s.g(k, D), lanes, sc, a, b, fa, fb, scale, a)
            new += [r, b]
        bps = new
    return bps


@torch.no_grad()
def first_crossing(kern: NeuronKernels, x: list, P: tuple, lo: Tensor, hi: Tensor,
                   scale: Optional[Tensor] = None) -> Tensor:
    """First D in [lo, hi] with u(D) >= theta for each lane, +inf if none.

    x: d tensors [M] (interval-start state); P: params, 0-d or [M]; lo <= hi finite [M];
    scale: |interval start time| (the tolerance is a few ulp of the spike time)."""
    x = [v.detach() if torch.is_tensor(v) else v for v in x]
    P = tuple(p.detach() for p in P)
    if scale is None:
        scale = torch.zeros_like(lo)
    lanes = _Lanes(kern, x, P)
    bps = monotone_pieces(lanes, lo, hi, scale)
    uv = [lanes.u(p)[0] for p in bps]
    imm = uv[0] >= 0
    found = torch.zeros_like(imm)
    a = lo.clone()
    b = lo.clone()
    fa = torch.zeros_like(lo)
    fb = torch.zeros_like(lo)
    for q in range(len(bps) - 1):
        take = ~found & ~imm & (uv[q + 1] >= 0) & (bps[q + 1] > bps[q])
        a = torch.where(take, bps[q], a)
        b = torch.where(take, bps[q + 1], b)
        fa = torch.where(take, uv[q], fa)
        fb = torch.where(take, uv[q + 1], fb)
        found = found | take
    out = torch.full_like(lo, float("inf"))
    out = torch.where(imm, lo, out)
    out = _solve_masked(lambda s, D: s.u(D), lanes, found, a, b, fa, fb, scale, out)
    return out


@torch.no_grad()
def potential_max(kern: NeuronKernels, x: list, P: tuple, length: Tensor) -> Tensor:
    """Location (offset) of the maximum of u on [0, length] per lane (no autograd: by the
    envelope theorem the caller evaluates u there with autograd)."""
    x = [v.detach() if torch.is_tensor(v) else v for v in x]
    P = tuple(p.detach() for p in P)
    lanes = _Lanes(kern, x, P)
    zero = torch.zeros_like(length)
    bps = monotone_pieces(lanes, zero, length, zero)
    vals = torch.stack([lanes.u(p)[0] for p in bps], 0)
    k = vals.argmax(0)
    return torch.stack(bps, 0).gather(0, k[None]).squeeze(0)


class SpikeTime(torch.autograd.Function):
    """Identity on the solved offset D, with IFT gradients to the interval-start state and params."""

    @staticmethod
    def forward(ctx, kern, D, d, *inputs):
        ctx.kern, ctx.d = kern, d
        ctx.save_for_backward(D, *inputs)
        return D.clone()

    @staticmethod
    def backward(ctx, gD):
        D, *inp = ctx.saved_tensors
        kern, d = ctx.kern, ctx.d
        with torch.enable_grad():
            Dv = D.detach().requires_grad_(True)
            iv = [t.detach().requires_grad_(True) for t in inp]
            f = kern.u_minus_theta(Dv, iv[:d], tuple(iv[d:]))
            f = _t(f, Dv)
            grads = torch.autograd.grad(f.sum(), [Dv] + iv, allow_unused=True)
        dudD = grads[0]
        if dudD is None:
            dudD = torch.zeros_like(D)
        nz = (gD != 0) & (dudD != 0)
        scale = torch.where(nz, -gD / torch.where(nz, dudD, torch.ones_like(dudD)), torch.zeros_like(gD))
        out = [None, None, None]
        for t, g in zip(inp, grads[1:]):
            out.append(None if g is None else (g * scale).reshape(t.shape) if g.shape == t.shape
                       else (g * scale).sum_to_size(t.shape))
        return tuple(out)


def spike_offset(kern: NeuronKernels, D_found: Tensor, x: list, P: tuple) -> Tensor:
    """Attach IFT gradients to solved offsets. x: d tensors [M]; P: params (0-d or [M])."""
    M = D_found.shape[0]
    xs = [_t(v, D_found) for v in x]
    ps = [p.expand(M) if p.dim() == 0 else p for p in P]
    return SpikeTime.apply(kern, D_found.detach(), len(xs), *xs, *ps)
