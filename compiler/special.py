"""Special functions that closed-form propagators may use. Each is well conditioned everywhere,
so that equal (or nearly equal) time constants never produce 0/0 or cancellation.

    exprel(z) = (exp(z) - 1) / z          exprel(0) = 1
    phi2(z)   = (exp(z) - 1 - z) / z**2   phi2(0)  = 1/2

They are the divided differences of exp: for f(lam) = exp(lam D),
    f[a, b]    = D exp(b D) exprel((a - b) D)
    f[a, b, b] = D**2 exp(b D) phi2((a - b) D)

Three distinct rates need the second divided difference of exp at three nodes:

    dexp2(x, y) = exp[0, x, y]            (symmetric; dexp2(0, z) = phi2(z), dexp2(0, 0) = 1/2)
    f[a, b, c]  = D**2 exp(c D) dexp2((a - c) D, (b - c) D)

The analysis (compiler/propagator.py) puts the largest known rate in the exp() prefactor, so
the arguments of exprel/phi2/dexp2 are <= 0 for the usual models (synapse faster than the
membrane) and nothing overflows.

Every backend implements these once (torch: runtime/kernels.py, MLIR: compiler/backends,
Triton: generated @triton.jit helpers), following `numeric_*` below, which is the reference.
"""

from __future__ import annotations

import math

import sympy


class exprel(sympy.Function):
    """(exp(z) - 1)/z, continuous at 0."""

    nargs = 1

    @classmethod
    def eval(cls, z):
        if z.is_zero:
            return sympy.Integer(1)
        return None

    def fdiff(self, argindex=1):
        # d/dz exp[0, z] = exp[0, z, z]: non-singular at z = 0, no overflow (see dexp2)
        z = self.args[0]
        return dexp2(z, z)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return sympy.Piecewise((sympy.Integer(1), sympy.Eq(z, 0)), ((sympy.exp(z) - 1) / z, True))

    def _eval_is_real(self):
        return self.args[0].is_real


class phi2(sympy.Function):
    """(exp(z) - 1 - z)/z**2, continuous at 0."""

    nargs = 1

    @classmethod
    def eval(cls, z):
        if z.is_zero:
            return sympy.Rational(1, 2)
        return None

    def fdiff(self, argindex=1):
        # phi2 = exp[0, 0, z]; d/dz = exp[0, 0, z, z] (a node repeated), non-singular
        z = self.args[0]
        return dexpn(0, z, z)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return sympy.Piecewise(
            (sympy.Rational(1, 2), sympy.Eq(z, 0)), ((sympy.exp(z) - 1 - z) / z**2, True)
        )

    def _eval_is_real(self):
        return self.args[0].is_real


class dexp2(sympy.Function):
    """exp[0, x, y], the second divided difference of exp at the nodes 0, x, y (symmetric)."""

    nargs = 2

    @classmethod
    def eval(cls, x, y):
        if x.is_zero:
            return phi2(y)
        if y.is_zero:
            return phi2(x)
        return None

    def fdiff(self, argindex=1):
        # d/dx exp[0, x, y] = exp[0, x, x, y] (derivative in a node = that node repeated)
        x, y = self.args
        return dexpn(x, x, y) if argindex == 1 else dexpn(x, y, y)

    def _eval_rewrite_as_exp(self, x, y, **kwargs):
        return ((sympy.exp(y) - 1) / y - (sympy.exp(x) - 1) / x) / (y - x)

    def _eval_is_real(self):
        return self.args[0].is_real and self.args[1].is_real


class dexpn(sympy.Function):
    """exp[0, z_1, ..., z_k]: the divided difference of exp over the node 0 and the arguments
    (any k >= 1, nodes may repeat). Closed under differentiation (d/dz_i repeats z_i), so the
    symbolic derivatives of exprel, phi2 and dexp2 never contain 0/0. Only produced by
    differentiation; the propagators themselves use exprel, phi2 and dexp2."""

    @classmethod
    def eval(cls, *args):
        if len(args) == 1:
            return exprel(args[0])
        if len(args) == 2:
            return dexp2(args[0], args[1])
        if all(a.is_zero for a in args):
            return sympy.Rational(1, sympy.factorial(len(args)))
        return None

    def fdiff(self, argindex=1):
        return dexpn(*self.args, self.args[argindex - 1])

    def _eval_is_real(self):
        return all(a.is_real for a in self.args)


# ----------------------------------------------------------------------------- numeric reference


def numeric_exprel(z: float) -> float:
    if z == 0.0:
        return 1.0
    if abs(z) < 1e-5:  # expm1(z)/z is accurate here too, but the series avoids any doubt
        return 1.0 + z / 2.0 + z * z / 6.0
    return math.expm1(z) / z


def numeric_phi2(z: float) -> float:
    if abs(z) < 1.0:
        # Taylor series sum z^k/(k+2)! (Horner); the closed form cancels ~log10(2/|z|) digits
        # here (1e-14 relative at |z| = 1e-2), the series is exact to rounding
        total = 0.0
        for k in range(21, -1, -1):
            total = total * z / (k + 3) + 1.0
        return total / 2.0
    return (math.expm1(z) - z) / (z * z)


def numeric_dexp2(x: float, y: float) -> float:
    """exp[0, x, y] for any real x, y, to about 1e-15 relative, never 0/0, no spurious overflow.

    Shift the nodes by their maximum p2 (exp[p0,p1,p2] = e^p2 exp[u, v, 0], u <= v <= 0) so that
    nothing overflows. For a spread -u < 1, sum the Taylor series centred at the midpoint m = u/2
    (nodes a, b, c in [-1/2, 1/2]):  e^m sum_n h_n(a, b, c) / (n+2)!  with h_n the complete
    homogeneous polynomials; otherwise take the difference quotient over the widest gap,
    (exp[v, 0] - exp[u, v]) / (0 - u), whose cancellation costs at most a factor ~e then.
    """
    p0, p1, p2 = sorted((0.0, float(x), float(y)))
    u, v = p0 - p2, p1 - p2  # u <= v <= 0
    scale = math.exp(p2)
    if u > -1.0:
        m = 0.5 * u
        a, b, c = u - m, v - m, -m
        total, h2, h3, bn, fact = 0.0, 0.0, 0.0, 1.0, 2.0  # fact = (n+2)!
        for n in range(0, 26):
            h2 = a * h2 + bn  # h_n(a, b)
            h3 = h2 + c * h3  # h_n(a, b, c)
            total += h3 / fact
            bn *= b
            fact *= n + 3
        return scale * math.exp(m) * total
    e_v0 = numeric_exprel(v)  # exp[v, 0]
    e_uv = math.exp(v) * numeric_exprel(u - v)  # exp[u, v]
    return scale * (e_v0 - e_uv) / (-u)


def numeric_dexpn(*args: float) -> float:
    """exp[0, z_1, ..., z_k] for real nodes (repeats allowed): ~1e-15 relative for k <= 3,
    ~2e-15 for k = 4 (measured against a 120-digit reference).

    Spread < 2: Taylor series centred at the midpoint m of the nodes,
    exp[n] = e^m sum_j h_j(n - m) / (j + k)!  (h_j the complete homogeneous polynomials, updated
    node by node, 40 terms). Otherwise the difference quotient over the widest gap, recursively,
    each part shifted by its largest node so that nothing overflows.
    """
    nodes = sorted([0.0] + [float(a) for a in args])
    k = len(nodes) - 1
    if k == 0:
        return math.exp(nodes[0])
    lo, hi = nodes[0], nodes[-1]
    if hi - lo < 2.0:
        m = 0.5 * (lo + hi)
        a = [n - m for n in nodes]
        terms = 40
        h = [a[0] ** j for j in range(terms)]  # h_j over the first node
        for node in a[1:]:  # h_j(..., node) = h_j(...) + node * h_{j-1}(..., node)
            for j in range(1, terms):
                h[j] = h[j] + node * h[j - 1]
        total, fact = 0.0, float(math.factorial(k))
        for j in range(terms):
            total += h[j] / fact
            fact *= j + k + 1
        return math.exp(m) * total
    return (_dd(nodes[1:]) - _dd(nodes[:-1])) / (hi - lo)


def _dd(nodes: list[float]) -> float:
    """exp[nodes] for sorted nodes: shift by the largest (exp[n] = e^p exp[n - p]) so the shifted
    nodes are <= 0 and nothing overflows."""
    if len(nodes) == 1:
        return math.exp(nodes[0])
    p = nodes[-1]
    return math.exp(p) * numeric_dexpn(*[n - p for n in nodes[:-1]])
