"""Numeric references of the special functions against mpmath (50 digits)."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy

from spikescan.compiler.numeric import mp_dexp2, mp_exprel, mp_phi2
from spikescan.compiler.special import dexp2, exprel, numeric_dexp2, numeric_exprel, numeric_phi2, phi2

mpmath.mp.dps = 50
POINTS = sorted(set(np.concatenate([np.linspace(-4, 4, 401), [0.0, 1e-300, 1e-12, -1e-12, 1e-6, -1e-6, 1e-5, 1.1e-5,
                                                              -1e-2, 1e-2, 0.011, -0.5, 0.5, -1.0, 1.0, -30.0,
                                                              40.0, -700.0, 700.0]])))


def _rel(got, ref):
    ref = mpmath.mpf(ref)
    return float(abs((mpmath.mpf(got) - ref) / ref))


def _simplex_integral(x, y):
    """exp[0, x, y] = int_{s, t >= 0, s + t <= 1} exp(s x + t y): an independent definition."""
    x, y = mpmath.mpf(x), mpmath.mpf(y)
    inner = (lambda s: mpmath.expm1(y * (1 - s)) / y) if y != 0 else (lambda s: 1 - s)
    return mpmath.quad(lambda s: mpmath.exp(s * x) * inner(s), [0, 1])


@pytest.mark.parametrize("z", POINTS)
def test_exprel_phi2(z):
    assert _rel(numeric_exprel(z), mp_exprel(z)) < 3e-16
    assert _rel(numeric_phi2(z), mp_phi2(z)) < 4e-16


def test_mp_reference_dexp2_matches_simplex_integral():
    for x, y in [(-0.3, -0.2), (-2.0, 1.0), (-5.0, -5.0), (0.7, 0.0), (-1e-3, 2e-3), (3.0, -7.0)]:
        assert _rel(mp_dexp2(x, y), _simplex_integral(x, y)) < 1e-30


def test_dexp2_accuracy_and_symmetry():
    rng = np.random.default_rng(3)
    pts = [(0.0, 0.0), (1e-9, -1e-9), (-0.5, -0.49999), (-0.6, 0.1), (-5, -5), (-50, -49.99999), (3, -2),
           (-700, -1), (1, 1), (-1e-12, 2e-12), (-0.25, -0.25), (-1e3, -1e3 + 1e-9), (-0.5, 0.0), (0.0, -0.5)]
    pts += [tuple(rng.uniform(-12, 3, 2)) for _ in range(300)]
    pts += [(a, a * (1 + 1e-9)) for a in rng.uniform(-20, 2, 50)]  # near-equal nodes
    for x, y in pts:
        got = numeric_dexp2(x, y)
        assert got == numeric_dexp2(y, x)
        assert _rel(got, mp_dexp2(x, y)) < 8e-16, (x, y)


def test_dexp2_reduces_to_phi2_and_symbolic_identities():
    z = sympy.Symbol("z", real=True)
    assert dexp2(0, z) == phi2(z) and dexp2(z, 0) == phi2(z) and dexp2(0, 0) == sympy.Rational(1, 2)
    assert exprel(0) == 1 and phi2(0) == sympy.Rational(1, 2)
    for x, y in [(0.3, -1.2), (-2.0, 0.5)]:
        val = dexp2(sympy.Float(x), sympy.Float(y)).rewrite(sympy.exp)
        assert abs(float(val) - numeric_dexp2(x, y)) < 1e-14


def _mp_divdiff(nodes):
    """exp[nodes] via Opitz: the top-right entry of exp(bidiagonal(nodes, ones)), high precision
    (handles repeated nodes without special cases)."""
    k = len(nodes)
    with mpmath.workdps(120):
        M = mpmath.zeros(k, k)
        for i, n in enumerate(nodes):
            M[i, i] = mpmath.mpf(n)
            if i + 1 < k:
                M[i, i + 1] = 1
        return mpmath.expm(M)[0, k - 1]


def test_dexpn_matches_opitz_reference():
    from spikescan.compiler.special import numeric_dexpn

    rng = np.random.default_rng(5)
    cases = [(0.0, 0.0, 0.0), (-0.3, -0.3, -0.3), (-2.0, -2.0, 0.5), (1e-9, -1e-9, 0.0), (-40.0, -1.0, -1.0, -0.5)]
    for k in (1, 2, 3, 4):
        for _ in range(60):
            base = rng.uniform(-8, 1, k)
            if rng.random() < 0.4:
                base[-1] = base[0] * (1 + 1e-8 * rng.normal())
            cases.append(tuple(base))
    for args in cases:
        got = numeric_dexpn(*args)
        ref = _mp_divdiff([0.0] + list(args))
        assert _rel(got, ref) < (1.2e-15 if len(args) <= 3 else 3e-15), (args, got, ref)
    for x, y in [(-0.4, -0.1), (-3.0, 0.2)]:
        assert numeric_dexpn(x, y) == pytest.approx(numeric_dexp2(x, y), rel=1e-15)
        assert numeric_dexpn(x) == pytest.approx(numeric_exprel(x), rel=1e-15)


def test_symbolic_derivatives_are_non_singular_at_equal_rates():
    """d/dtau of exprel/phi2/dexp2 at repeated nodes: finite, equal to a finite difference."""
    from spikescan.compiler.numeric import lambdify

    t = sympy.Symbol("t", positive=True)
    for expr in (exprel(-3 / t), phi2(-3 / t), dexp2(-3 / t, -3 / t), dexp2(-3 / t, -2 / t), phi2(-3 / t + 3 / t)):
        der = sympy.diff(expr, t)
        assert not der.has(sympy.nan, sympy.zoo)
        f, df = lambdify(expr, [t]), lambdify(der, [t])
        for tv in (0.7, 2.0, 9.0):
            h = 1e-5 * tv
            fd = (f(tv + h) - f(tv - h)) / (2 * h)
            assert float(df(tv)) == pytest.approx(float(fd), rel=1e-8, abs=1e-12)
