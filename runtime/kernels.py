"""Torch callables printed from a NeuronIR (the single source of truth for the formulas).

Every expression of the IR (Phi(D), phi(D), B per port, c, theta, R, r, t_ref, the isolation
chain, the cheap no-crossing rows) is lambdified once per IR into a plain Python function of
(D, *params) whose arithmetic is torch's, so it works on any broadcastable tensors and autograd
flows to the parameters. Structural zeros of the matrices are dropped at print time, so a
matrix-vector product only costs its non-zero entries (CubaLIF's Phi has 3 of 4).

States are passed around as lists of d tensors (component-major) rather than stacked [..., d]
tensors: that keeps broadcasting between shared [B, 1, K] propagators and per-neuron [B, N, K]
states free and skips the zero entries.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Optional, Sequence

import sympy
import torch

from spikescan.compiler.ir import DT, NeuronIR
from spikescan.compiler.backends.stable_exp import stabilize
from spikescan.compiler.special import numeric_exprel as _numeric_exprel

Tensor = torch.Tensor
Vec = list  # list of d entries, each a Tensor, a float, or None (structural zero)


# ----------------------------------------------------------------------------- special functions
# Torch versions of compiler/special.py. The unused branch of torch.where is evaluated at a safe
# argument, so neither value nor gradient can be NaN at z = 0.


def exprel(z):
    z = torch.as_tensor(z)
    small = z.abs() < 1e-6
    zs = torch.where(small, torch.ones_like(z), z)
    series = 1.0 + z * (0.5 + z / 6.0)
    return torch.where(small, series, torch.expm1(zs) / zs)


_PHI2_TERMS = 20  # sum_k z^k/(k+2)!, |z| <= 1: remainder < 1/22! ~ 1e-21


def phi2(z):
    z = torch.as_tensor(z)
    small = z.abs() <= 1.0
    zs = torch.where(small, torch.full_like(z, 2.0), z)
    coef = [1.0 / math.factorial(k + 2) for k in range(_PHI2_TERMS)]
    acc = torch.full_like(z, coef[-1])
    for ck in reversed(coef[:-1]):  # Horner
        acc = acc * z + ck
    return torch.where(small, acc, (torch.expm1(zs) - zs) / (zs * zs))


def _dexp2_shifted(x, y):
    """(p2, exp(-p2) exp[0, x, y]) with p2 = max(0, x, y): the shifted value never overflows."""
    x, y = torch.broadcast_tensors(torch.as_tensor(x), torch.as_tensor(y))
    zero = torch.zeros_like(x)
    p2 = torch.maximum(torch.maximum(x, y), zero)
    p0 = torch.minimum(torch.minimum(x, y), zero)
    p1 = x + y - p0 - p2
    u, v = p0 - p2, p1 - p2  # u <= v <= 0
    series = u > -1.0
    us = torch.where(series, u, zero - 1.0)  # safe arguments for each branch
    vs = torch.where(series, v, zero)
    m = 0.5 * torch.where(series, u, zero)
    a, b, c = torch.where(series, u, zero) - m, torch.where(series, v, zero) - m, -m
    total = torch.zeros_like(x)
    h2 = torch.zeros_like(x)
    h3 = torch.zeros_like(x)
    bn = torch.ones_like(x)
    fact = 2.0
    for n in range(26):
        h2 = a * h2 + bn
        h3 = h2 + c * h3
        total = total + h3 / fact
        bn = bn * b
        fact *= n + 3
    ser = torch.exp(m) * total
    uq = torch.where(series, zero - 1.0, u)
    vq = torch.where(series, zero, v)
    quot = (exprel(vq) - torch.exp(vq) * exprel(uq - vq)) / (-uq)
    del us, vs
    return p2, torch.where(series, ser, quot)


def dexp2(x, y):
    """exp[0, x, y] (compiler/special.numeric_dexp2, vectorised): shift by the largest node,
    midpoint Taylor series for a spread < 1, else the difference quotient over the widest gap."""
    p2, rest = _dexp2_shifted(x, y)
    return torch.exp(p2) * rest


# Products exp(p) * F(z...) over a long gap (compiler/backends/stable_exp.py): printed as
# expshift(p, z...) * ddshift(z...), whose factors never overflow (0 * inf = NaN lost spikes when
# run-time parameters reorder the rates). With max(0, z...) = 0 both equal the plain factors.


def _tensors(*args):
    ref = next((a for a in args if torch.is_tensor(a)), None)
    return [a if torch.is_tensor(a) else torch.as_tensor(a, dtype=ref.dtype if ref is not None else None,
                                                          device=ref.device if ref is not None else None)
            for a in args]


def expshift(p, *zs):
    """exp(p + max(0, z...))."""
    p, *zs = _tensors(p, *zs)
    m = torch.zeros_like(p)
    for z in zs:
        m = torch.maximum(m, z)
    return torch.exp(p + m)


def _ddshift(rel):
    def ddshift(*zs):
        """exp(-max(0, z...)) * exp[0, z...]: the special function with its nodes shifted <= 0."""
        # the phi2 case's first node is the literal 0 of stable_exp.special_nodes (no tensor:
        # tested here without a device sync on the solver's hot path)
        phi2_case = len(zs) == 2 and not torch.is_tensor(zs[0]) and zs[0] == 0
        zs = _tensors(*zs)
        if len(zs) == 1:  # exp(-max(0, z)) exprel(z) = exprel(-|z|)
            return rel(-zs[0].abs())
        if phi2_case:  # phi2(z) = exp[0, 0, z]
            z = zs[1]
            pos = z > 0
            shifted = _dexp2_shifted(torch.zeros_like(z), z.clamp(min=0.0))[1]
            return torch.where(pos, shifted, phi2(z.clamp(max=0.0)))
        if len(zs) == 2:
            return _dexp2_shifted(*zs)[1]
        return _no_dexpn(*zs)
    return ddshift


def _no_dexpn(*args):
    raise NotImplementedError("dexpn (higher divided differences of exp) is not implemented in the "
                              "torch kernels; propagators should only use exprel/phi2/dexp2")


def exprel_fast(z):
    """exprel for the no-grad solver iterations: expm1(z)/z is accurate to ~1 ulp for every
    finite z != 0 (expm1 is), and the only NaN is 0/0 at z = 0, which is the value 1: 3 ops
    instead of ~10. No autograd use (its derivative at z = 0 would be wrong; `exprel` has the
    series for that)."""
    if not torch.is_tensor(z):
        return _numeric_exprel(float(z))
    return torch.nan_to_num(torch.expm1(z) / z, nan=1.0)


def log1prel(z):
    """log1p(z)/z, 1 at z = 0 (NaN for z < -1: callers mask it)."""
    r = torch.log1p(z) / z
    return torch.where(z == 0, 1.0, r)


def _scalar_ok(fn, mfn):
    """Torch function that also takes Python floats (shared, constant parameters are passed as
    floats so that parameter-only subexpressions cost no torch op)."""
    def f(*args):
        if any(torch.is_tensor(a) for a in args):
            return fn(*[torch.as_tensor(a) if not torch.is_tensor(a) and fn in (torch.maximum, torch.minimum)
                        else a for a in args])
        return mfn(*args)
    return f


_TORCH_NS = {
    "dexp2": dexp2,
    "dexpn": _no_dexpn,
    "exp": _scalar_ok(torch.exp, math.exp),
    "expm1": _scalar_ok(torch.expm1, math.expm1),
    "log": _scalar_ok(torch.log, math.log),
    "sqrt": _scalar_ok(torch.sqrt, math.sqrt),
    "Abs": _scalar_ok(torch.abs, abs),
    "exprel": exprel,
    "phi2": phi2,
    "expshift": expshift,
    "ddshift": _ddshift(exprel),
    "Max": _scalar_ok(torch.maximum, max),
    "Min": _scalar_ok(torch.minimum, min),
}


_FAST_NS = dict(_TORCH_NS, exprel=exprel_fast, ddshift=_ddshift(exprel_fast))


def _lambdify(args, exprs, fast: bool = False):
    return sympy.lambdify(args, exprs, modules=[_FAST_NS if fast else _TORCH_NS], cse=True)


# ----------------------------------------------------------------------------- small vector algebra


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _mul(a, b):
    if a is None or b is None:
        return None
    return a * b


def matvec(M: list, v: Vec) -> Vec:
    """M (d x d nested list with None zeros) times v (list of d)."""
    out = []
    for row in M:
        acc = None
        for mij, vj in zip(row, v):
            acc = _add(acc, _mul(mij, vj))
        out.append(acc)
    return out


def rowvec(row: list, v: Vec):
    acc = None
    for lj, vj in zip(row, v):
        acc = _add(acc, _mul(lj, vj))
    return acc


def vadd(a: Vec, b: Vec) -> Vec:
    return [_add(x, y) for x, y in zip(a, b)]


def vsub(a: Vec, b: Vec) -> Vec:
    return [_add(x, None if y is None else -y) for x, y in zip(a, b)]


def densify(v: Vec, like: Tensor) -> list[Tensor]:
    """Replace None/float entries by tensors broadcast to `like`'s shape."""
    out = []
    for e in v:
        if e is None:
            out.append(torch.zeros_like(like))
        elif not torch.is_tensor(e):
            out.append(torch.full_like(like, float(e)))
        else:
            out.append(e.expand_as(like) if e.shape != like.shape else e)
    return out


# ----------------------------------------------------------------------------- compiled IR


class _Printed:
    """A sympy matrix printed to one function of `args`; zeros kept as None."""

    def __init__(self, M: sympy.Matrix, args, fast: bool = False):
        self.shape = M.shape
        flat = [stabilize(e) for e in M]  # exp(p) * F(z) products printed overflow-free
        self.nz = [k for k, e in enumerate(flat) if not (e == 0 or e.is_zero is True)]
        self.fn = _lambdify(args, [flat[k] for k in self.nz], fast) if self.nz else None

    def __call__(self, *args) -> list:
        vals: list = [None] * (self.shape[0] * self.shape[1])
        if self.fn is not None:
            for k, v in zip(self.nz, self.fn(*args)):
                vals[k] = v
        rows, cols = self.shape
        return [vals[i * cols:(i + 1) * cols] for i in range(rows)]


class NeuronKernels:
    """Torch callables for one NeuronIR. Build with `NeuronKernels.from_ir(ir)` (cached per IR)."""

    _cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
    _cache_by_id: dict = {}

    @classmethod
    def from_ir(cls, ir: NeuronIR) -> "NeuronKernels":
        try:
            hit = cls._cache.get(ir)
        except TypeError:  # unhashable dataclass: cache by identity
            hit = cls._cache_by_id.get(id(ir))
            if hit is not None and hit.ir is ir:
                return hit
            hit = None
            k = cls(ir)
            cls._cache_by_id[id(ir)] = k
            return k
        if hit is None:
            hit = cls(ir)
            cls._cache[ir] = hit
        return hit

    def __init__(self, ir: NeuronIR):
        if ir.Phi is None or ir.phi is None:
            raise ValueError(f"neuron {ir.name!r}: the IR has no propagator (run the analysis first)")
        self.ir = ir
        self.name = ir.name
        self.d = ir.d
        self.param_names = tuple(p.name for p in ir.params)
        self.defaults = {p.name: float(p.default) for p in ir.params}
        syms = list(ir.param_symbols)
        argsD = [DT] + syms
        self._Phi = _Printed(sympy.Matrix(ir.Phi), argsD)
        self._phi = _Printed(sympy.Matrix(ir.phi), argsD)
        self._A = _Printed(sympy.Matrix(ir.A), syms)
        self._a0 = _Printed(sympy.Matrix(ir.a0), syms)
        self._init = _Printed(sympy.Matrix(ir.init), syms)
        self._ports = {k: _Printed(sympy.Matrix(B), syms) for k, B in ir.ports.items()}
        self.port_names = tuple(ir.ports)
        self.R = _Printed(sympy.Matrix(ir.R), syms)
        self.r = _Printed(sympy.Matrix(ir.r), syms)
        self._tref = _Printed(sympy.Matrix([[ir.t_ref]]), syms)
        self.spiking = ir.c is not None and ir.theta is not None
        if self.spiking:
            c = sympy.Matrix(ir.c)
        elif getattr(ir, "potential", None) is not None:  # first *declared* state (IR order may differ)
            c = sympy.Matrix(ir.potential)
        else:
            c = sympy.Matrix([[1] + [0] * (self.d - 1)]).T
        self._c = _Printed(c.T, syms)  # potential functional (first state var if no threshold)
        self._theta = _Printed(sympy.Matrix([[ir.theta if self.spiking else 0]]), syms)
        rows, rates = self._chain_rows(ir, c)
        self._chain = [_Printed(sympy.Matrix(rw).reshape(1, self.d), syms) for rw in rows]
        # Solver-only (no autograd) prints: l_k Phi(D) for each chain row (row 0 = c^T, so
        # u(D) = (c^T Phi) x + c^T phi - theta, u' = (c^T Phi) y0, g_k = (l_k Phi) y0) and the
        # rates, with the cheap exprel. One fused CSE'd function each: few torch ops per solver
        # iteration (the engines are bound by per-op overhead, not flops).
        Phi_m, phi_m = sympy.Matrix(ir.Phi), sympy.Matrix(ir.phi)
        self._lPhi = [_Printed(sympy.Matrix(rw).reshape(1, self.d) * Phi_m, argsD, fast=True) for rw in rows]
        th = ir.theta if self.spiking else 0
        self._cphi = _Printed(sympy.Matrix([[(c.T * phi_m)[0, 0] - th]]), argsD, fast=True)
        self._rates = _Printed(sympy.Matrix([list(rates)]), syms) if rates else None
        # Closed form for the lowest chain level (spike_time._bottom_root): valid when the last
        # row is a left eigenvector of A with the last rate (checked here, not assumed).
        A_m = sympy.Matrix(ir.A)
        self.closed_bottom = False
        if len(rows) >= 2 and len(rates) >= len(rows):
            lm = sympy.Matrix(rows[-1]).reshape(1, self.d)
            res = (lm * (A_m - rates[len(rows) - 1] * sympy.eye(self.d))).applyfunc(sympy.simplify)
            self.closed_bottom = all(e == 0 for e in res)
        # Support of a reset's jump once propagated (delta = x_after - x_before): the components
        # the reset touches, closed under Phi's sparsity. Others (e.g. CubaLIF's i) are
        # reset-invariant, so propagating delta only needs these columns of Phi.
        R_m, r_m = sympy.Matrix(ir.R), sympy.Matrix(ir.r)
        supp = {i for i in range(self.d) if R_m.row(i) != sympy.eye(self.d).row(i) or r_m[i] != 0}
        grow = True
        while grow:
            grow = False
            for j in list(supp):
                for i in range(self.d):
                    if i not in supp and not (Phi_m[i, j] == 0 or Phi_m[i, j].is_zero is True):
                        supp.add(i)
                        grow = True
        self.delta_support = tuple(sorted(supp))
        PhiS = sympy.Matrix(self.d, self.d, lambda i, j: Phi_m[i, j] if j in supp else 0)
        self._PhiS = _Printed(PhiS, argsD)
        self._nocross = [
            (_Printed(sympy.Matrix(rw).reshape(1, self.d), syms), _Printed(sympy.Matrix([[off]]), syms))
            for rw, off in (ir.no_cross_rows or [])
        ]
        A = sympy.Matrix(ir.A)
        self._triangular = A.is_lower or A.is_upper
        self._Ainv = None
        try:
            if A.det() != 0:
                self._Ainv = _Printed(A.inv(), syms)
        except Exception:  # pragma: no cover - symbolic inverse failure: no li_integral
            self._Ainv = None

    # -- chain: from the IR, or derived here from A's eigenvalues when the IR has none
    def _chain_rows(self, ir: NeuronIR, c: sympy.Matrix):
        """(rows, rates) of the isolation chain of u = c^T x (compiler/structure.py conventions:
        rates[k] takes rows[k] to rows[k+1], the last used rate is the mode of the last row)."""
        if self.spiking and ir.chain is not None and ir.chain.rows:
            return list(ir.chain.rows), list(ir.chain.rates)
        A = sympy.Matrix(ir.A)
        if not (A.is_lower or A.is_upper):
            raise NotImplementedError(f"neuron {ir.name!r}: no isolation chain and A is not triangular")
        from spikescan.compiler.structure import isolation_chain

        ch = isolation_chain(ir, functional=c)
        return list(ch.rows), list(ch.rates)

    # ------------------------------------------------------------------ parameters
    def param_tensors(self, params: Optional[dict], n: int, dtype, device) -> tuple:
        """Tuple of parameter tensors in IR order: 0-d (shared) or [n] (per neuron)."""
        params = dict(params or {})
        unknown = set(params) - set(self.param_names)
        if unknown:
            raise KeyError(f"neuron {self.name!r}: unknown parameters {sorted(unknown)}; "
                           f"known: {list(self.param_names)}")
        out = []
        for name in self.param_names:
            v = params.get(name, self.defaults[name])
            t = torch.as_tensor(v, dtype=dtype, device=device)
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, n)):
                raise ValueError(f"parameter {name!r}: expected a scalar or [{n}] tensor, got {tuple(t.shape)}")
            if t.dim() == 1 and t.shape[0] == 1:
                t = t.reshape(())
            out.append(t)
        from spikescan.runtime.engines.validate import check_params

        check_params(self, out)
        return tuple(out)

    @staticmethod
    def constants(P: tuple) -> tuple:
        """P with shared parameters that need no gradient as Python floats (fewer torch ops:
        parameter-only subexpressions of the printed kernels become float arithmetic)."""
        return tuple(float(p) if torch.is_tensor(p) and p.dim() == 0 and not p.requires_grad else p
                     for p in P)

    @staticmethod
    def shared(P: tuple) -> bool:
        return all(p.dim() == 0 for p in P)

    # ------------------------------------------------------------------ evaluation
    def Phi(self, D, P) -> list:
        return self._Phi(D, *P)

    def phi(self, D, P) -> Vec:
        return [row[0] for row in self._phi(D, *P)]

    def A(self, P) -> list:
        return self._A(*P)

    def a0(self, P) -> Vec:
        return [row[0] for row in self._a0(*P)]

    def init(self, P) -> Vec:
        return [row[0] for row in self._init(*P)]

    def B(self, port: Optional[str], P) -> Vec:
        if port is None:
            port = self.port_names[0]
        if port not in self._ports:
            raise KeyError(f"neuron {self.name!r} has no input port {port!r}; ports: {list(self.port_names)}")
        return [row[0] for row in self._ports[port](*P)]

    def c(self, P) -> list:
        return self._c(*P)[0]

    def theta(self, P):
        return self._theta(*P)[0][0]

    def t_ref(self, P):
        return self._tref(*P)[0][0]

    def reset(self, x: Vec, P) -> Vec:
        return vadd(matvec(self.R(*P), x), [row[0] for row in self.r(*P)])

    def chain_rows(self, P) -> list:
        return [ch(*P)[0] for ch in self._chain]

    def rates(self, P) -> list:
        return self._rates(*P)[0] if self._rates is not None else []

    def lPhi(self, k: int, D, P) -> list:
        """Row l_k Phi(D) (no-autograd solver print; k = 0 gives c^T Phi(D))."""
        return self._lPhi[k](D, *P)[0]

    def cphi_minus_theta(self, D, P):
        """c^T phi(D) - theta (no-autograd solver print), a tensor, float or None."""
        return self._cphi(D, *P)[0][0]

    def PhiS(self, D, P) -> list:
        """Phi(D) restricted to the columns of `delta_support` (None elsewhere)."""
        return self._PhiS(D, *P)

    def no_cross(self, P) -> list:
        return [(rw(*P)[0], off(*P)[0][0]) for rw, off in self._nocross]

    def has_no_cross(self) -> bool:
        return bool(self._nocross)

    def propagate(self, D, x: Vec, P, Phi=None) -> Vec:
        """x(D) = Phi(D) x + phi(D)."""
        if Phi is None:
            Phi = self.Phi(D, P)
        return vadd(matvec(Phi, x), self.phi(D, P))

    def potential(self, x: Vec, P):
        return rowvec(self.c(P), x)

    def u_minus_theta(self, D, x: Vec, P):
        """u(D) - theta from the interval-start state x (used by the solver and the IFT)."""
        u = self.potential(self.propagate(D, x, P), P)
        th = self.theta(P)
        return u if th is None else u - th

    def derivative_state(self, x: Vec, P) -> Vec:
        """y = dx/dt = A x + a0."""
        return vadd(matvec(self.A(P), x), self.a0(P))

    def integral_state(self, D, x0: Vec, P) -> Vec:
        """int_0^D x(s) ds = A^{-1} (x(D) - x0 - a0 D) (A invertible)."""
        if self._Ainv is None:
            raise NotImplementedError(f"neuron {self.name!r}: li_integral needs an invertible A")
        xD = self.propagate(D, x0, P)
        a0 = self.a0(P)
        diff = vsub(xD, x0)
        diff = vsub(diff, [_mul(a, D) for a in a0])
        return matvec(self._Ainv(*P), diff)

    def slowest_tau(self, P) -> float:
        """1 / smallest non-zero |eigenvalue| of A over all neurons (the horizon unit)."""
        with torch.no_grad():
            A = self.A(P)
            d = self.d
            if self._triangular:
                lam = [A[i][i] for i in range(d)]
                rates = [torch.as_tensor(0.0 if v is None else v, dtype=torch.float64).abs().reshape(-1)
                         for v in lam]
                r = torch.cat(rates)
            else:
                Am = torch.stack([torch.stack(torch.broadcast_tensors(
                    *[torch.as_tensor(0.0 if e is None else e, dtype=torch.float64) for e in row]), -1)
                    for row in A], -2)
                r = torch.linalg.eigvals(Am).abs().reshape(-1)
            r = r[r > 0]
            return float(1.0 / r.min()) if r.numel() else 1.0
