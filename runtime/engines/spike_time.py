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

from spikescan.runtime.kernels import NeuronKernels, log1prel, matvec, rowvec

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
    """Interval-start data of a batch of lanes: everything the solver evaluates repeatedly.
    Evaluations use the solver prints of the kernels (l_k Phi(D) rows, fused and CSE'd)."""

    def __init__(self, kern: NeuronKernels, x: list, P: tuple):
        self.kern, self.x, self.P = kern, x, P
        self.y0 = kern.derivative_state(x, P)
        self._y1 = None
        self.rows = kern.chain_rows(P)

    @property
    def y1(self):
        if self._y1 is None:
            self._y1 = matvec(self.kern.A(self.P), self.y0)
        return self._y1

    def subset(self, idx: Tensor) -> "_Lanes":
        new = object.__new__(_Lanes)
        new.kern = self.kern
        new.x = [_sub(v, idx) for v in self.x]
        new.P = tuple(_sub(p, idx) for p in self.P)
        new.y0 = [_sub(v, idx) for v in self.y0]
        new._y1 = None if self._y1 is None else [_sub(v, idx) for v in self._y1]
        new.rows = [[_sub(v, idx) for v in row] for row in self.rows]
        return new

    def u(self, D: Tensor):
        """(u - theta, u') at offsets D (D may carry extra leading dims: [..., M])."""
        cP = self.kern.lPhi(0, D, self.P)
        u = rowvec(cP, self.x)
        off = self.kern.cphi_minus_theta(D, self.P)
        if off is not None:
            u = off if u is None else u + off
        return _t(u, D), _t(rowvec(cP, self.y0), D)

    def u3(self, D: Tensor):
        """(u - theta, u', u'') at offsets D, for Halley's iteration."""
        cP = self.kern.lPhi(0, D, self.P)
        u = rowvec(cP, self.x)
        off = self.kern.cphi_minus_theta(D, self.P)
        if off is not None:
            u = off if u is None else u + off
        return _t(u, D), _t(rowvec(cP, self.y0), D), _t(rowvec(cP, self.y1), D)

    def g(self, k: int, D: Tensor):
        """(g_k, g_k') at offsets D."""
        lP = self.kern.lPhi(k, D, self.P)
        return _t(rowvec(lP, self.y0), D), _t(rowvec(lP, self.y1), D)


def bracket_solve(fn: Callable, a: Tensor, b: Tensor, fa: Tensor, fb: Tensor, scale: Tensor,
                  max_iter: int = MAX_ITER) -> Tensor:
    """Root of fn in [a, b] (fa, fb of opposite signs or one zero), per lane, vectorised.

    fn(D) -> (f, f'). Safeguarded Newton from the regula-falsi point (rtsafe, as the compiled
    solver in compiler/backends/mlir/ops.py): a Newton step is taken when it stays inside the
    bracket (kept as [neg, pos] with f(neg) < 0 <= f(pos)) and at most halves the previous move,
    else bisection. Stops per lane when a Newton step is below 4 ulp of (scale + D) or the
    bracket is that narrow. Near a tangent crossing (u peaks just above theta) Newton steps grow
    away from the peak; the halving rule turns them into bisection instead of stopping at the
    peak. Lean on purpose: on small lane counts the cost is the number of torch ops per iteration."""
    eps = torch.finfo(a.dtype).eps
    tiny = torch.finfo(a.dtype).tiny
    aneg = fa < 0
    neg = torch.where(aneg, a, b)
    pos = torch.where(aneg, b, a)
    fneg = torch.where(aneg, fa, fb)
    fpos = torch.where(aneg, fb, fa)
    x = neg - fneg * (pos - neg) / (fpos - fneg)
    # NaN/inf/outside -> midpoint (comparisons with NaN are False)
    x = torch.where((x - neg) * (x - pos) <= 0, x, 0.5 * (neg + pos))
    done = (fa == 0) | (fb == 0)
    x = torch.where(fa == 0, a, torch.where(fb == 0, b, x))
    # x stays in [min(a,b), max(a,b)]: one tolerance per lane for the whole solve
    tol = 4 * eps * (scale.abs() + torch.maximum(a.abs(), b.abs())) + 4 * tiny
    moved = (pos - neg).abs()  # the previous move (the whole bracket before the first step)
    for it in range(max_iter):
        if bool(done.all()):
            break
        fv = fn(x)
        f, fp = fv[0], fv[1]
        isneg = f < 0
        neg = torch.where(isneg, x, neg)
        pos = torch.where(isneg, pos, x)
        if len(fv) == 3:  # Halley (cubic convergence): f / (f' - f f'' / (2 f'))
            step = f * fp / (fp * fp - 0.5 * f * fv[2])
        else:
            step = f / fp
        xn = x - step
        astep = step.abs()
        # Newton while it stays in the bracket and converges (each move at most half the last);
        # after NEWTON_ITERS tries, plain bisection
        ok = ((xn - neg) * (xn - pos) <= 0) & (astep <= 0.5 * moved)
        if it >= NEWTON_ITERS:
            ok = torch.zeros_like(ok)
        xn = torch.where(ok, xn, 0.5 * (neg + pos))
        conv = (ok & (astep <= tol)) | ((pos - neg).abs() <= tol)
        moved = torch.where(done, moved, (xn - x).abs())
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


def _bottom_root(lanes: _Lanes, lo: Tensor, hi: Tensor) -> Tensor:
    """Zero of g_{m-1} = l_{m-1} y(D) in (lo, hi) in closed form, else lo (an empty piece).

    With l_m y(D) = exp(lam_m D) l_m y0 (checked at print time: kern.closed_bottom),
    exp(-lam_{m-1} D) g_{m-1}(D) = G + H D exprel(delta D), G = l_{m-1} y0, H = l_m y0,
    delta = lam_m - lam_{m-1}; its only zero is D* = log1p(delta q)/delta, q = -G/H, which needs
    q > 0 and 1 + delta q > 0 (the delta -> 0 limit D* = q via log1prel)."""
    m = len(lanes.rows) - 1
    G = _t(rowvec(lanes.rows[m - 1], lanes.y0), lo)
    H = _t(rowvec(lanes.rows[m], lanes.y0), lo)
    rates = lanes.kern.rates(lanes.P)
    delta = _t(rates[m], lo) - _t(rates[m - 1], lo)
    q = -G / H
    z = delta * q
    r = q * log1prel(z)
    ok = (q > 0) & (z > -1) & (r > lo) & (r < hi)  # NaN (H = 0, z <= -1) -> False
    return torch.where(ok, r, lo)


def monotone_pieces(lanes: _Lanes, lo: Tensor, hi: Tensor, scale: Tensor) -> list[Tensor]:
    """Sorted breakpoints lo = p_0 <= ... <= p_m = hi with u monotone between consecutive ones
    (empty pieces are repeated points). The lowest chain level is closed-form when the kernels
    allow it (no iterative solve at all for two-mode neurons such as CubaLIF)."""
    bps = [lo, hi]
    m = len(lanes.rows) - 1
    for k in range(m - 1, -1, -1):
        if k == m - 1 and lanes.kern.closed_bottom:
            bps = [lo, _bottom_root(lanes, lo, hi), hi]
            continue
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
def crossing_bracket(kern: NeuronKernels, x: list, P: tuple, lo: Tensor, hi: Tensor,
                     scale: Optional[Tensor] = None):
    """Exact crossing decision without solving u = theta.

    Returns (imm, found, a, b, fa, fb, lanes): imm = u(lo) >= theta (spike at lo); found = u
    reaches theta inside (lo, hi], first on the monotone increasing piece [a, b] with
    fa = u(a) - theta < 0 <= fb = u(b) - theta."""
    x = [v.detach() if torch.is_tensor(v) else v for v in x]
    P = tuple(p.detach() if torch.is_tensor(p) else p for p in P)
    if scale is None:
        scale = torch.zeros_like(lo)
    lanes = _Lanes(kern, x, P)
    bps = torch.stack(monotone_pieces(lanes, lo, hi, scale), 0)  # [nb, M]
    uv = lanes.u(bps)[0]  # one evaluation for all breakpoints
    imm = uv[0] >= 0
    reach = (uv[1:] >= 0) & (bps[1:] > bps[:-1])  # [nb-1, M]
    # first reaching piece, last to first (reductions over dim 0 are slow in torch on CPU)
    nb = bps.shape[0]
    a, b, fa, fb, found = bps[nb - 2], bps[nb - 1], uv[nb - 2], uv[nb - 1], reach[nb - 2]
    for j in range(nb - 3, -1, -1):
        r = reach[j]
        a, b = torch.where(r, bps[j], a), torch.where(r, bps[j + 1], b)
        fa, fb = torch.where(r, uv[j], fa), torch.where(r, uv[j + 1], fb)
        found = found | r
    return imm, found & ~imm, a, b, fa, fb, lanes


@torch.no_grad()
def solve_bracketed(lanes: _Lanes, a: Tensor, b: Tensor, fa: Tensor, fb: Tensor, scale: Tensor) -> Tensor:
    """The spike offset on a bracket from crossing_bracket (lanes already selected)."""
    return bracket_solve(lanes.u3, a, b, fa, fb, scale)


@torch.no_grad()
def first_crossing(kern: NeuronKernels, x: list, P: tuple, lo: Tensor, hi: Tensor,
                   scale: Optional[Tensor] = None) -> Tensor:
    """First D in [lo, hi] with u(D) >= theta for each lane, +inf if none.

    x: d tensors [M] (interval-start state); P: params, 0-d or [M]; lo <= hi finite [M];
    scale: |interval start time| (the tolerance is a few ulp of the spike time)."""
    if scale is None:
        scale = torch.zeros_like(lo)
    imm, found, a, b, fa, fb, lanes = crossing_bracket(kern, x, P, lo, hi, scale)
    out = torch.full_like(lo, float("inf"))
    out = torch.where(imm, lo, out)
    return _solve_masked(lambda s, D: s.u3(D), lanes, found, a, b, fa, fb, scale, out)


@torch.no_grad()
def potential_max(kern: NeuronKernels, x: list, P: tuple, length: Tensor) -> Tensor:
    """Location (offset) of the maximum of u on [0, length] per lane (no autograd: by the
    envelope theorem the caller evaluates u there with autograd)."""
    x = [v.detach() if torch.is_tensor(v) else v for v in x]
    P = tuple(p.detach() if torch.is_tensor(p) else p for p in P)
    lanes = _Lanes(kern, x, P)
    zero = torch.zeros_like(length)
    bps = torch.stack(monotone_pieces(lanes, zero, length, zero), 0)
    vals = lanes.u(bps)[0]
    best, loc = vals[0], bps[0]
    for j in range(1, bps.shape[0]):
        up = vals[j] > best
        best, loc = torch.where(up, vals[j], best), torch.where(up, bps[j], loc)
    return loc


class SpikeTime(torch.autograd.Function):
    """Identity on the solved offset D, with IFT gradients to the interval-start state and the
    tensor params (`pconst` holds the params that are plain floats: no gradient, no input)."""

    @staticmethod
    def forward(ctx, kern, D, d, pconst, *inputs):
        ctx.kern, ctx.d, ctx.pconst = kern, d, pconst
        ctx.save_for_backward(D, *inputs)
        return D.clone()

    @staticmethod
    def backward(ctx, gD):
        D, *inp = ctx.saved_tensors
        kern, d, pconst = ctx.kern, ctx.d, ctx.pconst
        with torch.enable_grad():
            Dv = D.detach().requires_grad_(True)
            iv = [t.detach().requires_grad_(True) for t in inp]
            it = iter(iv[d:])
            P = tuple(next(it) if c is None else c for c in pconst)
            f = kern.u_minus_theta(Dv, iv[:d], P)
            f = _t(f, Dv)
            grads = torch.autograd.grad(f.sum(), [Dv] + iv, allow_unused=True)
        dudD = grads[0]
        if dudD is None:
            dudD = torch.zeros_like(D)
        nz = (gD != 0) & (dudD != 0)
        scale = torch.where(nz, -gD / torch.where(nz, dudD, torch.ones_like(dudD)), torch.zeros_like(gD))
        out = [None, None, None, None]
        for t, g in zip(inp, grads[1:]):
            out.append(None if g is None else (g * scale).reshape(t.shape) if g.shape == t.shape
                       else (g * scale).sum_to_size(t.shape))
        return tuple(out)


def spike_offset(kern: NeuronKernels, D_found: Tensor, x: list, P: tuple) -> Tensor:
    """Attach IFT gradients to solved offsets. x: d tensors [M]; P: params (floats, 0-d or [M])."""
    M = D_found.shape[0]
    xs = [_t(v, D_found) for v in x]
    pconst = tuple(None if torch.is_tensor(p) else p for p in P)
    ps = [p.expand(M) if p.dim() == 0 else p for p in P if torch.is_tensor(p)]
    return SpikeTime.apply(kern, D_found.detach(), len(xs), pconst, *xs, *ps)
