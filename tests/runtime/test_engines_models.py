"""Hand-built NeuronIRs (independent of the compiler's analysis) for the engine tests, and
`get_ir(name)`: the compiler's IR from models/*.snn when the driver is available, else these.

Phi is written with compiler/special.exprel where time constants may coincide (CubaLIF), else
from sympy's matrix exponential (distinct time constants only)."""

from __future__ import annotations

import os

import pytest
import sympy

from spikescan.compiler.ir import DT, NeuronIR, ParamIR
from spikescan.compiler.special import exprel, phi2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_FILES = {"LIF": "lif.snn", "CubaLIF": "cuba_lif.snn", "AlphaLIF": "alpha_lif.snn",
          "AdaptiveLIF": "adaptive_lif.snn", "LI": "li_readout.snn"}


def _params(**defaults):
    out = []
    for name, val in defaults.items():
        dim = 1 if name.startswith("tau") or name == "t_ref" else 0
        out.append(ParamIR(name, float(val), dim, sympy.Symbol(name, real=True)))
    return tuple(out)


def _S(params):
    return {p.name: p.symbol for p in params}


def _finish(ir: NeuronIR, Phi=None) -> NeuronIR:
    A, a0 = ir.A, ir.a0
    if Phi is None:
        Phi = sympy.simplify((A * DT).exp())
    ir.Phi = Phi
    # phi(D) = int_0^D Phi(s) ds a0 (zero in these models unless a0 != 0)
    s = sympy.Symbol("s", nonnegative=True)
    ir.phi = sympy.simplify((Phi.subs(DT, s) * a0).integrate((s, 0, DT))) if any(a0) else sympy.zeros(ir.d, 1)
    ir.solver = "isolate"
    return ir


def hand_lif(**over) -> NeuronIR:
    P = _params(tau_m=20.0, v_th=1.0, v_reset=0.0, t_ref=0.0)
    S = _S(P)
    ir = NeuronIR(
        name="LIF", state=("v",), params=P, init=sympy.Matrix([0]), A=sympy.Matrix([[-1 / S["tau_m"]]]),
        a0=sympy.Matrix([0]), ports={"input": sympy.Matrix([1])}, c=sympy.Matrix([1]), theta=S["v_th"],
        R=sympy.Matrix([[0]]), r=sympy.Matrix([S["v_reset"]]), t_ref=S["t_ref"],
    )
    return _finish(ir, sympy.Matrix([[sympy.exp(-DT / S["tau_m"])]]))


def hand_cuba(subtractive=False, **over) -> NeuronIR:
    P = _params(tau_m=20.0, tau_s=5.0, v_th=1.0, v_reset=0.0, t_ref=0.0)
    S = _S(P)
    tm, ts = S["tau_m"], S["tau_s"]
    A = sympy.Matrix([[-1 / tm, 1 / tm], [0, -1 / ts]])
    Phi = sympy.Matrix([[sympy.exp(-DT / tm), DT / tm * sympy.exp(-DT / tm) * exprel(DT * (1 / tm - 1 / ts))],
                        [0, sympy.exp(-DT / ts)]])
    if subtractive:
        R, r = sympy.eye(2), sympy.Matrix([-S["v_th"], 0])
    else:
        R, r = sympy.Matrix([[0, 0], [0, 1]]), sympy.Matrix([S["v_reset"], 0])
    ir = NeuronIR(
        name="CubaLIF", state=("v", "i"), params=P, init=sympy.zeros(2, 1), A=A, a0=sympy.zeros(2, 1),
        ports={"input": sympy.Matrix([0, 1])}, c=sympy.Matrix([1, 0]), theta=S["v_th"], R=R, r=r,
        t_ref=S["t_ref"], reset_invariant=(1,),
        no_cross_rows=[(sympy.Matrix([[1, 0]]), sympy.Integer(0)), (sympy.Matrix([[0, 1]]), sympy.Integer(0))],
    )
    return _finish(ir, Phi)


def hand_alpha(**over) -> NeuronIR:
    P = _params(tau_m=20.0, tau_s=5.0, v_th=1.0, v_reset=0.0, t_ref=0.0)
    S = _S(P)
    tm, ts = S["tau_m"], S["tau_s"]
    A = sympy.Matrix([[-1 / tm, 1 / tm, 0], [0, -1 / ts, 1 / ts], [0, 0, -1 / ts]])
    ir = NeuronIR(
        name="AlphaLIF", state=("v", "i", "g"), params=P, init=sympy.zeros(3, 1), A=A, a0=sympy.zeros(3, 1),
        ports={"input": sympy.Matrix([0, 0, 1])}, c=sympy.Matrix([1, 0, 0]), theta=S["v_th"],
        R=sympy.diag(0, 1, 1), r=sympy.Matrix([S["v_reset"], 0, 0]), t_ref=S["t_ref"],
    )
    # divided differences of exp (compiler/special.py): v from i0 is f[a, b]/tau_m, v from g0 is
    # f[a, b, b]/(tau_m tau_s), with a = -1/tau_m, b = -1/tau_s
    es = sympy.exp(-DT / ts)
    z = DT * (1 / ts - 1 / tm)
    Phi = sympy.Matrix([
        [sympy.exp(-DT / tm), DT * es * exprel(z) / tm, DT**2 * es * phi2(z) / (tm * ts)],
        [0, es, DT / ts * es],
        [0, 0, es]])
    return _finish(ir, Phi)


def hand_adaptive(**over) -> NeuronIR:
    P = _params(tau_m=20.0, tau_s=5.0, tau_a=100.0, beta=0.2, v_th=1.0, v_reset=0.0, t_ref=0.0)
    S = _S(P)
    tm, ts, ta = S["tau_m"], S["tau_s"], S["tau_a"]
    A = sympy.Matrix([[-1 / tm, 1 / tm, 0], [0, -1 / ts, 0], [0, 0, -1 / ta]])
    ir = NeuronIR(
        name="AdaptiveLIF", state=("v", "i", "a"), params=P, init=sympy.zeros(3, 1), A=A, a0=sympy.zeros(3, 1),
        ports={"input": sympy.Matrix([0, 1, 0])}, c=sympy.Matrix([1, 0, -1]), theta=S["v_th"],
        R=sympy.diag(0, 1, 1), r=sympy.Matrix([S["v_reset"], 0, S["beta"]]), t_ref=S["t_ref"],
    )
    Phi = sympy.Matrix([
        [sympy.exp(-DT / tm), DT / tm * sympy.exp(-DT / tm) * exprel(DT * (1 / tm - 1 / ts)), 0],
        [0, sympy.exp(-DT / ts), 0],
        [0, 0, sympy.exp(-DT / ta)]])
    return _finish(ir, Phi)


def hand_li(**over) -> NeuronIR:
    P = _params(tau_m=20.0, tau_s=5.0)
    S = _S(P)
    tm, ts = S["tau_m"], S["tau_s"]
    A = sympy.Matrix([[-1 / tm, 1 / tm], [0, -1 / ts]])
    Phi = sympy.Matrix([[sympy.exp(-DT / tm), DT / tm * sympy.exp(-DT / tm) * exprel(DT * (1 / tm - 1 / ts))],
                        [0, sympy.exp(-DT / ts)]])
    ir = NeuronIR(
        name="LI", state=("v", "i"), params=P, init=sympy.zeros(2, 1), A=A, a0=sympy.zeros(2, 1),
        ports={"input": sympy.Matrix([0, 1])}, c=None, theta=None, R=sympy.eye(2), r=sympy.zeros(2, 1),
        t_ref=sympy.Integer(0),
    )
    return _finish(ir, Phi)


_HAND_RAW = {"LIF": hand_lif, "CubaLIF": hand_cuba, "AlphaLIF": hand_alpha, "AdaptiveLIF": hand_adaptive,
        "LI": hand_li}

_hand_cache: dict = {}


class _Hand(dict):
    """Builders cached per (name, options): the IR objects are reused, so are their kernels."""

    def __getitem__(self, name):
        def build(**kw):
            key = (name, tuple(sorted(kw.items())))
            if key not in _hand_cache:
                _hand_cache[key] = _HAND_RAW[name](**kw)
            return _hand_cache[key]
        return build


HAND = _Hand(_HAND_RAW)

_loaded: dict = {}


def compiled_ir(name: str):
    """The compiler's NeuronIR for a model of models/, or None if the driver is not there yet."""
    try:
        from spikescan.compiler.driver import load_model
    except ImportError:
        return None
    path = os.path.join(ROOT, "models", _FILES[name])
    if path not in _loaded:
        _loaded[path] = load_model(path)
    neurons = _loaded[path].neurons
    return neurons.get(name) or next(iter(neurons.values()))


def get_ir(name: str, source: str = "hand") -> NeuronIR:
    if source == "compiled":
        ir = compiled_ir(name)
        if ir is None:
            pytest.skip("compiler driver not available yet")
        return ir
    return HAND[name]()
