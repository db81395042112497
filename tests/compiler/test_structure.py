"""Reset-invariant state, isolation chain, no-crossing test and solver choice."""

from __future__ import annotations

import functools

import astbuild
import numpy as np
import pytest
import sympy

from spikescan.compiler.analysis import analyze_neuron
from spikescan.compiler.driver import load_model
from spikescan.compiler.numeric import ir_numeric

FILES = {"LIF": "lif.snn", "CubaLIF": "cuba_lif.snn", "AlphaLIF": "alpha_lif.snn",
         "AdaptiveLIF": "adaptive_lif.snn", "LI": "li_readout.snn"}


@functools.lru_cache(maxsize=None)
def hand(name):
    return analyze_neuron(getattr(astbuild, name)())


def file_ir(models_dir, name):
    return load_model(models_dir / FILES[name]).neurons[name]


def names(ir, idx):
    return {ir.state[i] for i in idx}


def test_reset_invariant(models_dir):
    assert names(file_ir(models_dir, "CubaLIF"), file_ir(models_dir, "CubaLIF").reset_invariant) == {"i"}
    ir = file_ir(models_dir, "AdaptiveLIF")
    assert names(ir, ir.reset_invariant) == {"i"}  # v and a are both reset
    ir = file_ir(models_dir, "AlphaLIF")
    assert names(ir, ir.reset_invariant) == {"g", "i"}
    assert file_ir(models_dir, "LIF").reset_invariant == ()
    ir = file_ir(models_dir, "LI")
    assert names(ir, ir.reset_invariant) == {"i", "v"}  # no reset at all


def test_reset_invariant_excludes_dependents_of_reset_variables():
    # w depends on v, v is reset: w is not invariant even though the reset never touches it
    n = astbuild.neuron("Dep", {"tau": "10 ms", "v_th": "1.0"}, {"v": "0.0", "w": "0.0"},
                        {"v": "-v / tau", "w": "(v - w) / tau"}, inputs={"input": ("x", "v += x")},
                        threshold=("v", "v_th"), reset="v = 0")
    ir = analyze_neuron(n)
    assert ir.reset_invariant == ()


def test_reset_and_threshold_matrices(models_dir):
    ir = file_ir(models_dir, "AdaptiveLIF")
    i, v, a = (ir.state.index(n) for n in ("i", "v", "a"))
    beta, v_reset, v_th = (next(p.symbol for p in ir.params if p.name == n) for n in ("beta", "v_reset", "v_th"))
    assert ir.c[v] == 1 and ir.c[a] == -1 and ir.c[i] == 0 and ir.theta == v_th
    assert list(ir.R.row(v)) == [0, 0, 0] and ir.r[v] == v_reset
    assert ir.R[a, a] == 1 and ir.r[a] == beta
    sub = hand("three_rate")  # `v -= v_th`: R keeps v, r = -v_th
    vi = sub.state.index("v")
    assert sub.R == sympy.eye(3) and sub.r[vi] == -next(p.symbol for p in sub.params if p.name == "v_th")


ALL = ["LIF", "CubaLIF", "AlphaLIF", "AdaptiveLIF"]


@pytest.mark.parametrize("name", ALL + ["three_rate", "lif"])
def test_chain_rows_and_cayley_hamilton(name, models_dir):
    ir = file_ir(models_dir, name) if name in FILES else hand(name)
    ch = ir.chain
    I = sympy.eye(ir.d)
    assert ch.rows[0] == ir.c.T
    assert len(ch.rates) == len(ch.rows)
    for k in range(len(ch.rows) - 1):
        assert (ch.rows[k] * (ir.A - ch.rates[k] * I) - ch.rows[k + 1]).applyfunc(sympy.simplify) == sympy.zeros(1, ir.d)
    last = (ch.rows[-1] * (ir.A - ch.rates[-1] * I)).applyfunc(sympy.simplify)
    assert last == sympy.zeros(1, ir.d)
    # full Cayley-Hamilton: c^T prod_k (A - A_kk I) = 0
    full = ir.c.T
    for k in range(ir.d):
        full = full * (ir.A - ir.A[k, k] * I)
    assert full.applyfunc(sympy.simplify) == sympy.zeros(1, ir.d)


@pytest.mark.parametrize("name", ["CubaLIF", "AlphaLIF", "AdaptiveLIF"])
def test_last_chain_row_has_constant_sign(name, models_dir):
    """l_m y(D) is a single exponential mode: it never changes sign along the interval."""
    ir = file_ir(models_dir, name)
    rng = np.random.default_rng(0)
    num = ir_numeric(ir, {"tau_m": 7.0, "tau_s": 3.0})
    A, a0 = num.A, num.a0.reshape(-1)
    last = np.array(ir.chain.rows[-1].subs({p.symbol: num.values[p.name] for p in ir.params}), float).reshape(-1)
    Ds = np.linspace(0, 60, 400)
    for _ in range(20):
        x0 = rng.normal(size=ir.d)
        vals = [last @ (A @ (num.Phi(D) @ x0 + num.phi(D)) + a0) for D in Ds]
        s = np.sign(vals)
        assert np.all(s == s[0]) or np.allclose(vals, 0)


def test_solver_choice(models_dir):
    assert file_ir(models_dir, "LIF").solver == "linear"
    assert file_ir(models_dir, "CubaLIF").solver == "peak2"
    assert file_ir(models_dir, "AlphaLIF").solver == "isolate"
    assert file_ir(models_dir, "LI").solver == "none"
    li = file_ir(models_dir, "LI")
    assert li.chain.rows[0] == li.potential.T  # chain of the readout potential v, not of state[0]
    assert len(li.chain.rows) == 2


def _rows_as_strings(ir):
    out = set()
    for row, off in ir.no_cross_rows:
        out.add((tuple(str(v) for v in row), str(off)))
    return out


def test_cuba_lif_no_cross_rows_are_v_i_and_zero(models_dir):
    ir = file_ir(models_dir, "CubaLIF")
    i, v = ir.state.index("i"), ir.state.index("v")
    e = lambda k: tuple("1" if j == k else "0" for j in range(2))  # noqa: E731
    assert _rows_as_strings(ir) == {(e(v), "0"), (e(i), "0"), (("0", "0"), "0")}


@pytest.mark.parametrize("name", ["CubaLIF", "AlphaLIF", "AdaptiveLIF", "lif"])
def test_no_cross_rows_are_sound(name, models_dir):
    """States that pass every row never reach theta before the next event (dense sampling);
    and the test is not vacuous: some states fail it and do cross."""
    ir = file_ir(models_dir, name) if name in FILES else hand(name)
    assert ir.no_cross_rows
    params = {"tau_m": 9.0, "tau_s": 4.0} if "tau_s" in ir.defaults() else {"tau_m": 9.0}
    if "v_rest" in ir.defaults():
        params["v_rest"] = 0.5
    num = ir_numeric(ir, params)
    subs = {p.symbol: num.values[p.name] for p in ir.params}
    rows = [(np.array(r.subs(subs), float).reshape(-1), float(o.subs(subs))) for r, o in ir.no_cross_rows]
    theta = num.theta
    rng = np.random.default_rng(1)
    Ds = np.concatenate([np.linspace(0, 5, 200), np.linspace(5, 120, 300)])
    P = np.stack([num.Phi(D) for D in Ds])
    p = np.stack([num.phi(D) for D in Ds])
    passed = crossed_failed = 0
    for _ in range(3000):
        x0 = rng.uniform(-1.5, 3.0, size=ir.d)
        ok = all(r @ x0 + o < theta for r, o in rows)
        u = (P @ x0 + p) @ num.c.reshape(-1)
        if ok:
            passed += 1
            assert u.max() < theta, (x0, u.max())
        elif u.max() >= theta:
            crossed_failed += 1
    assert passed > 50 and crossed_failed > 50


def test_no_cross_rows_refused_when_potential_can_overshoot():
    # v relaxes toward 2 i (not a convex combination): v < th and i < th do not prevent a spike
    n = astbuild.neuron("Gain", {"tau_m": "10 ms", "tau_s": "5 ms", "v_th": "1.0"}, {"v": "0.0", "i": "0.0"},
                        {"v": "(2 * i - v) / tau_m", "i": "-i / tau_s"}, threshold=("v", "v_th"), reset="v = 0")
    ir = analyze_neuron(n)
    assert ir.no_cross_rows == []
    assert any("convex" in note for note in ir.notes)
    num = ir_numeric(ir, {})
    x0 = np.full(2, 0.99)  # both below v_th = 1
    u = [num.c.reshape(-1) @ (num.Phi(D) @ x0) for D in np.linspace(0, 40, 200)]
    assert max(u) >= 1.0  # the counterexample really crosses
    assert hand("three_rate").no_cross_rows == []  # a bias drive breaks the max principle too
