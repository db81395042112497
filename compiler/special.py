"""Special functions that closed-form propagators may use. Each is well conditioned everywhere,
so that equal (or nearly equal) time constants never produce 0/0 or cancellation.

    exprel(z) = (exp(z) - 1) / z          exprel(0) = 1
    phi2(z)   = (exp(z) - 1 - z) / z**2   phi2(0)  = 1/2

They are the divided differences of exp: for f(lam) = exp(lam D),
    f[a, b]    = D exp(b D) exprel((a - b) D)
    f[a, b, b] = D**2 exp(b D) phi2((a - b) D)

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
        z = self.args[0]
        # d/dz (e^z - 1)/z = (e^z - exprel(z)) / z = phi2(z) * ... ; use exprel' = e^z/z - (e^z-1)/z^2
        # = (z e^z - e^z + 1)/z^2 = phi2(z) + (e^z - 1 - z)... keep it in terms of phi2 and exp:
        # z e^z - e^z + 1 = e^z (z - 1) + 1 ; note exprel'(z) = exp(z) * phi2(-z)
        return sympy.exp(z) * phi2(-z)

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
        z = self.args[0]
        # phi2'(z) = (exprel(z) - 2 phi2(z)) / z  -- singular form; use the series-safe identity
        # phi2'(z) = phi3-like; we express it via exp and exprel for symbolic use only.
        return (exprel(z) - 2 * phi2(z)) / z

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return sympy.Piecewise(
            (sympy.Rational(1, 2), sympy.Eq(z, 0)), ((sympy.exp(z) - 1 - z) / z**2, True)
        )

    def _eval_is_real(self):
        return self.args[0].is_real


# ----------------------------------------------------------------------------- numeric reference


def numeric_exprel(z: float) -> float:
    if z == 0.0:
        return 1.0
    if abs(z) < 1e-5:  # expm1(z)/z is accurate here too, but the series avoids any doubt
        return 1.0 + z / 2.0 + z * z / 6.0
    return math.expm1(z) / z


def numeric_phi2(z: float) -> float:
    if abs(z) < 1e-2:
        # Taylor series: sum z^k/(k+2)!, enough terms for double precision at |z| < 1e-2
        term, total = 0.5, 0.5
        for k in range(1, 8):
            term *= z / (k + 2)
            total += term
        return total
    return (math.expm1(z) - z) / (z * z)
