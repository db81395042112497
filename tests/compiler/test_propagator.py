"""Closed-form Phi(D), phi(D) against the matrix exponential (mpmath at >= 50 digits, scipy)."""

from __future__ import annotations

import random

import astbuild
import mpmath
import numpy as np
import pytest
import sympy

from refs import mp_expm_prop, scipy_prop
from spikescan.compiler.analysis import analyze_neuron
from spikescan.compiler.driver import load_model
from spikescan.compiler.numeric import ir_numeric
from spikescan.compiler.special import dexp2, exprel

FILE_MODELS = {
    "LIF": "lif.snn",
    "CubaLIF": "cuba_lif.snn",
    "AlphaLIF": "alpha_lif.snn",
    "AdaptiveLIF": "adaptive_lif.snn",
    "LI": "li_readout.snn",
}
HAND_MODELS = {"LIFrest": astbuild.lif, "ThreeRate": astbuild.three_rate}
DS = [0.0, 1e-7, 0.37, 25.0, 180.0]


_HAND_CACHE: dict = {}


def get_ir(name, models_dir):
    if name in FILE_MODELS:
        return load_model(models_dir / FILE_MODELS[name]).neurons[name]
    if name not in _HAND_CACHE:
        _HAND_CACHE[name] = analyze_neuron(HAND_MODELS[name]())
    return _HAND_CACHE[name]


def _random_params(ir, rng, mode):
    """mode: 'random' (independent), 'equal' (all time constants equal), 'near' (x(1+1e-9))."""
    vals = {}
    base = rng.uniform(2.0, 40.0)
    for k, p in enumerate(ir.params):
        if p.dim == 1:
            if mode == "random":
                vals[p.name] = rng.uniform(1.0, 50.0)
            elif mode == "equal":
                vals[p.name] = base
            else:
                vals[p.name] = base * (1.0 + 1e-9 * (k + 1))
        else:
            vals[p.name] = rng.uniform(-1.0, 1.0)
    return vals


def _check(ir, vals, D):
    num = ir_numeric(ir, vals)
    A, a0 = num.A, num.a0.reshape(-1)
    Phi, phi = num.Phi(D), num.phi(D)
    ref_Phi, ref_phi = mp_expm_prop(A, a0, D)
    stiff = float(np.max(np.abs(np.diag(A)))) * D
    tol = 2.5e-16 * (8.0 + stiff)  # exp(x) inherits the rounding of x = -D/tau: |x| eps
    d = ir.d
    worst = 0.0
    for i in range(d):
        for j in range(d):
            pairs = [(Phi[i, j], ref_Phi[i][j])]
            if j == 0:
                pairs.append((phi[i], ref_phi[i]))
            for got, ref in pairs:
                ref = mpmath.mpf(ref)
                if ref == 0:
                    assert got == 0.0, (ir.name, vals, D, i, j, got)
                    continue
                err = float(abs((mpmath.mpf(got) - ref) / ref))
                worst = max(worst, err)
                assert err <= tol, f"{ir.name} {vals} D={D} [{i},{j}] got {got!r} ref {mpmath.nstr(ref, 20)} rel {err:.2e}"
    return worst


@pytest.mark.parametrize("name", list(FILE_MODELS) + list(HAND_MODELS))
@pytest.mark.parametrize("mode", ["random", "equal", "near"])
def test_propagator_matches_mpmath_expm(name, mode, models_dir):
    ir = get_ir(name, models_dir)
    rng = random.Random(hash((name, mode)) % 2**32)
    for trial in range(2):
        vals = _random_params(ir, rng, mode)
        for D in DS:
            _check(ir, vals, D)


@pytest.mark.parametrize("name", ["CubaLIF", "AlphaLIF", "ThreeRate"])
def test_equal_and_near_equal_tau_relative_error_1e15(name, models_dir):
    """tau_m == tau_s and tau_m = tau_s (1 + 1e-9): full precision, not 1e-7 (no cancellation)."""
    ir = get_ir(name, models_dir)
    for eps in (0.0, 1e-9, -1e-9, 1e-12, 3e-6):
        vals = {"tau_s": 5.0, "tau_m": 5.0 * (1 + eps)}
        if name == "ThreeRate":
            vals["tau_r"] = 5.0 * (1 - eps)
        for D in (1e-4, 0.8, 3.0, 12.0):
            worst = _check(ir, vals, D)
            assert worst < 4e-15, (vals, D, worst)


@pytest.mark.parametrize("name", list(FILE_MODELS) + list(HAND_MODELS))
def test_propagator_matches_scipy_expm(name, models_dir):
    ir = get_ir(name, models_dir)
    rng = random.Random(7)
    for _ in range(4):
        vals = _random_params(ir, rng, "random")
        num = ir_numeric(ir, vals)
        for D in (0.01, 2.0, 30.0):
            P, p = scipy_prop(num.A, num.a0.reshape(-1), D)
            np.testing.assert_allclose(num.Phi(D), P, rtol=1e-12, atol=1e-14 * np.abs(P).max())
            np.testing.assert_allclose(num.phi(D), p, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(p).max()))


def test_cuba_lif_closed_form_is_exprel_not_difference(models_dir):
    ir = load_model(models_dir / "cuba_lif.snn").neurons["CubaLIF"]
    assert ir.state == ("i", "v")
    pv = ir.Phi[1, 0]
    assert pv.has(exprel)
    # no raw 1/(tau_m - tau_s) anywhere: substituting tau_m = tau_s symbolically stays finite
    tau_m, tau_s = (p.symbol for p in ir.params[:2])
    same = pv.subs(tau_m, tau_s)
    assert same.is_finite is not False and not same.has(sympy.zoo, sympy.nan)
    D = sympy.Symbol("D", nonnegative=True)
    assert sympy.simplify(same - D * sympy.exp(-D / tau_s) / tau_s) == 0


def test_structurally_equal_rates_simplify_to_polynomial_times_exp(models_dir):
    """AlphaLIF: g -> i share tau_s: Phi[i, g] = D/tau_s exp(-D/tau_s) exactly."""
    ir = load_model(models_dir / "alpha_lif.snn").neurons["AlphaLIF"]
    assert ir.state == ("g", "i", "v")
    tau_s = next(p.symbol for p in ir.params if p.name == "tau_s")
    D = sympy.Symbol("D", nonnegative=True)
    assert sympy.simplify(ir.Phi[1, 0] - D / tau_s * sympy.exp(-D / tau_s)) == 0
    assert ir.Phi[2, 0].has(dexp2)


def test_special_function_arguments_are_nonpositive_for_usual_models(models_dir):
    """The largest rate sits in the exp prefactor: exprel/dexp2 arguments <= 0 when tau_s < tau_m,
    so nothing overflows even at D = 1e5 ms."""
    for name in ["CubaLIF", "AlphaLIF", "LIFrest", "ThreeRate", "slow"]:
        ir = analyze_neuron(astbuild.slow_synapse()) if name == "slow" else get_ir(name, models_dir)
        vals = ir.defaults()
        num = ir_numeric(ir, vals)
        P, p = num.Phi(1e5), num.phi(1e5)
        assert np.all(np.isfinite(P)) and np.all(np.isfinite(p)), name


def test_slow_synapse_prefactor_follows_defaults():
    ir = analyze_neuron(astbuild.slow_synapse())
    tau_s = next(p.symbol for p in ir.params if p.name == "tau_s")
    D = sympy.Symbol("D", nonnegative=True)
    assert ir.Phi[1, 0].has(sympy.exp(-D / tau_s))  # the slower (synaptic) rate is the prefactor
    for D_ in (0.5, 40.0, 1000.0):  # beyond ~1400 ms exp(-D/tau_m) underflows (true value < 1e-308)
        _check(ir, {}, D_)
