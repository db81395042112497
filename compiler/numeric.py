"""Numeric evaluation of a NeuronIR's closed forms (for tests, explain output and simple engines).

    num = ir_numeric(ir, {"tau_m": 20.0}, backend="numpy")   # or backend="mpmath" (dps digits)
    num.Phi(0.5) -> (d, d) ndarray      num.phi(0.5) -> (d,) ndarray
    num.A, num.a0, num.B["input"], num.c, num.theta, num.R, num.r, num.t_ref  (numbers)
    num.potential(x0, D) -> c^T x(D) without inputs

The special functions map to the float64 references of compiler/special.py (numpy backend) or
to mpmath formulas evaluated with extra working precision (mpmath backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import mpmath
import numpy as np
import sympy

from .ir import DT, NeuronIR
from .special import numeric_dexp2, numeric_dexpn, numeric_exprel, numeric_phi2


# ----------------------------------------------------------------------------- mpmath versions
def mp_exprel(z):
    z = mpmath.mpf(z)
    return mpmath.mpf(1) if z == 0 else mpmath.expm1(z) / z


def _extra_digits(*vals) -> int:
    """Working digits to add so a difference quotient over these (small) numbers keeps dps digits."""
    out = 40
    for v in vals:
        if v != 0:
            out += max(0, int(-mpmath.log10(abs(v))) + 1)
    return min(out, 5000)


def mp_phi2(z):
    z = mpmath.mpf(z)
    if z == 0:
        return mpmath.mpf(1) / 2
    with mpmath.workdps(mpmath.mp.dps + _extra_digits(z, z)):  # (e^z - 1 - z)/z^2 cancels
        return (mpmath.expm1(z) - z) / z**2


def mp_dexp2(x, y):
    x, y = mpmath.mpf(x), mpmath.mpf(y)
    if x == y:
        if x == 0:
            return mpmath.mpf(1) / 2
        with mpmath.workdps(mpmath.mp.dps + _extra_digits(x, x)):
            return (x * mpmath.exp(x) - mpmath.expm1(x)) / x**2  # d/dx exprel(x)
    if x == 0:
        return mp_phi2(y)
    if y == 0:
        return mp_phi2(x)
    with mpmath.workdps(mpmath.mp.dps + _extra_digits(x, y, x - y)):
        return (mp_exprel(y) - mp_exprel(x)) / (y - x)


_NUMPY_FUNCS = {
    "exprel": np.vectorize(numeric_exprel, otypes=[float]),
    "phi2": np.vectorize(numeric_phi2, otypes=[float]),
    "dexp2": np.vectorize(numeric_dexp2, otypes=[float]),
    "dexpn": np.vectorize(numeric_dexpn, otypes=[float]),
}
def mp_dexpn(*args):
    """exp[0, args] via Opitz (top-right entry of exp of the bidiagonal node matrix)."""
    nodes = [mpmath.mpf(0)] + [mpmath.mpf(a) for a in args]
    k = len(nodes)
    with mpmath.workdps(mpmath.mp.dps + 60):
        M = mpmath.zeros(k, k)
        for i, n in enumerate(nodes):
            M[i, i] = n
            if i + 1 < k:
                M[i, i + 1] = 1
        return mpmath.expm(M)[0, k - 1]


_MP_FUNCS = {"exprel": mp_exprel, "phi2": mp_phi2, "dexp2": mp_dexp2, "dexpn": mp_dexpn}


def lambdify(expr, args, backend: str = "numpy") -> Callable:
    """sympy.lambdify with the project's special functions."""
    if backend == "numpy":
        return sympy.lambdify(args, expr, modules=[_NUMPY_FUNCS, "numpy"])
    if backend == "mpmath":
        return sympy.lambdify(args, expr, modules=[_MP_FUNCS, "mpmath"])
    raise ValueError(f"unknown backend {backend!r} (numpy|mpmath)")


@dataclass
class NumericNeuron:
    ir: NeuronIR
    backend: str
    values: dict
    A: object
    a0: object
    B: dict
    c: Optional[object]
    theta: Optional[object]
    R: object
    r: object
    t_ref: object
    init: object
    _Phi: Callable
    _phi: Callable

    def Phi(self, D):
        return self._conv(self._Phi(D))

    def phi(self, D):
        return self._conv(self._phi(D)).reshape(-1)

    def potential(self, x0, D):
        x = self.Phi(D) @ self._conv(x0).reshape(-1) + self.phi(D)
        return (self.c.reshape(-1) @ x) if self.c is not None else x[0]

    def _conv(self, m):
        if self.backend == "numpy":
            return np.asarray(m, dtype=float)
        return mpmath.matrix(m) if not isinstance(m, mpmath.matrix) else m


def param_values(ir: NeuronIR, params: dict | None = None) -> dict:
    """Defaults merged with `params` (unknown names are an error: catches typos in tests)."""
    vals = ir.defaults()
    for k, v in (params or {}).items():
        if k not in vals:
            raise KeyError(f"{ir.name} has no parameter {k!r}; parameters: {sorted(vals)}")
        vals[k] = v
    return vals


_COMPILED: dict = {}  # (id(ir), backend) -> (ir, {key: lambdified function})


def _compiled(ir: NeuronIR, backend: str) -> dict:
    """Lambdify every closed form of the IR once (lambdify is slow) and reuse it."""
    key = (id(ir), backend)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is ir:
        return hit[1]
    syms = [p.symbol for p in ir.params]
    exprs = {n: getattr(ir, n) for n in ("A", "a0", "c", "theta", "R", "r", "t_ref", "init")}
    exprs.update({("port", k): v for k, v in ir.ports.items()})
    fns = {k: lambdify(sympy.sympify(v), syms, backend) for k, v in exprs.items() if v is not None}
    fns["Phi"] = lambdify(ir.Phi, [DT] + syms, backend)
    fns["phi"] = lambdify(ir.phi, [DT] + syms, backend)
    _COMPILED[key] = (ir, fns)
    return fns


def ir_numeric(ir: NeuronIR, params: dict | None = None, backend: str = "numpy", dps: int = 50) -> NumericNeuron:
    vals = param_values(ir, params)
    if backend == "mpmath":
        mpmath.mp.dps = dps
    if ir.Phi is None or ir.phi is None:
        raise ValueError(f"{ir.name}: the IR has no closed-form propagator (analysis not run?)")
    # parameters stay arguments (substituting floats into sympy would print them with 15 digits)
    args = [vals[p.name] for p in ir.params]
    if backend == "mpmath":
        args = [mpmath.mpf(a) for a in args]

    fns = _compiled(ir, backend)

    def const(key):
        expr = ir.ports[key[1]] if isinstance(key, tuple) else getattr(ir, key)
        v = fns[key](*args)
        is_mat = isinstance(expr, sympy.MatrixBase)
        if backend == "numpy":
            return np.array(v, dtype=float) if is_mat else float(v)
        return mpmath.matrix(v) if is_mat else mpmath.mpf(v)

    Phi_f = lambda D: fns["Phi"](D, *args)  # noqa: E731
    phi_f = lambda D: fns["phi"](D, *args)  # noqa: E731
    return NumericNeuron(
        ir=ir,
        backend=backend,
        values=vals,
        A=const("A"),
        a0=const("a0"),
        B={k: const(("port", k)) for k in ir.ports},
        c=const("c") if ir.c is not None else None,
        theta=const("theta") if ir.theta is not None else None,
        R=const("R"),
        r=const("r"),
        t_ref=const("t_ref"),
        init=const("init"),
        _Phi=Phi_f,
        _phi=phi_f,
    )
