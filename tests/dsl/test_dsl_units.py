"""Units, dimensions and the sympy conversion the compiler relies on."""

from fractions import Fraction

import pytest
import sympy

import spikescan.dsl as dsl
from spikescan.dsl import ast
from spikescan.dsl.sym import UnknownFunction, UnknownName, evaluate, number, to_sympy
from spikescan.dsl.units import UnitError, dim_of


def _expr(text: str) -> ast.Expr:
    module, diags = dsl.check_source(f"neuron N {{ params {{ p = {text} }} }}", "u.snn")
    return module.neurons[0].params[0].default


@pytest.mark.parametrize("text,value", [
    ("20 ms", sympy.Integer(20)), ("0.02 s", sympy.Integer(20)), ("500 us", sympy.Rational(1, 2)),
    ("2ms", sympy.Integer(2)), ("0.1", sympy.Rational(1, 10)), ("1.5e-3 s", sympy.Rational(3, 2)),
    ("1 s / 4", sympy.Integer(250)), (".5 ms", sympy.Rational(1, 2)), ("3e2 us", sympy.Rational(3, 10)),
])
def test_numbers_convert_to_ms_exactly(text, value):
    got = to_sympy(_expr(text), {})
    assert got == value and isinstance(got, sympy.Rational)


def test_names_and_functions():
    e = _expr("exp(-a / b) * sqrt(c)^2 - log(a)")
    a, b, c = sympy.symbols("a b c", positive=True)
    got = to_sympy(e, {"a": a, "b": b, "c": c})
    assert sympy.simplify(got - (sympy.exp(-a / b) * c - sympy.log(a))) == 0
    # values can be substituted directly
    assert to_sympy(_expr("a * 2 s"), {"a": sympy.Integer(3)}) == 6000
    with pytest.raises(UnknownName) as ei:
        to_sympy(e, {"a": a})
    assert ei.value.name == "b" and isinstance(ei.value, KeyError)
    with pytest.raises(UnknownFunction):
        to_sympy(_expr("sin(1)"), {})


def test_evaluate_and_nonfinite():
    assert evaluate(_expr("0.015 s + a"), {"a": 5.0}) == pytest.approx(20.0, rel=1e-15)
    assert number(float("inf")) == sympy.oo


@pytest.mark.parametrize("text,dims,want", [
    ("20 ms", {}, 1), ("2", {}, 0), ("-v / tau", {"v": 0, "tau": 1}, -1),
    ("(i - v) / tau", {"i": 0, "v": 0, "tau": 1}, -1), ("tau^2", {"tau": 1}, 2),
    ("sqrt(tau)", {"tau": 1}, Fraction(1, 2)), ("abs(-tau) / tau^3", {"tau": 1}, -2), ("v - 0", {"v": 1}, 1), ("exp(-t / tau)", {"t": 1, "tau": 1}, 0),
])
def test_dimensions(text, dims, want):
    dims = {k: Fraction(v) for k, v in dims.items()}
    assert dim_of(_expr(text), dims) == want


@pytest.mark.parametrize("text,code", [("1 ms + 1", "E030"), ("exp(1 ms)", "E030"), ("2 ^ p", "E035")])
def test_dimension_errors(text, code):
    with pytest.raises(UnitError) as ei:
        dim_of(_expr(text), {"p": Fraction(0)})
    assert ei.value.code == code


def test_identifiers_named_like_units():
    """`s`, `ms`, `us` are only units right after a number: as names they are variables."""
    src = """neuron N {
        params { ms = 2 ms  us = 1.0 }
        state { s = 0.0 }
        dynamics { ds/dt = -s / ms + us / ms }
        on input(w) { s += w }
        spike when s >= us
    }"""
    module, diags = dsl.check_source(src, "n.snn")
    assert diags == []
    ode = module.neurons[0].dynamics[0]
    S, MS, US = sympy.symbols("s ms us")
    assert sympy.simplify(to_sympy(ode.rhs, {"s": S, "ms": MS, "us": US}) - (-S / MS + US / MS)) == 0


def test_linearity_accepts_parameter_functions():
    """Coefficients may be any function of parameters; only the state must enter linearly."""
    src = """neuron N {
        params { tau = 10 ms  k = 2.0 }
        state { v = 0.0  i = 0.0 }
        dynamics { dv/dt = (exp(-k) * i - v) / tau + k^2 / tau
                   di/dt = -i / (2 * tau) }
        on input(w) { i += w * k^2  v = v + 0.5 * w }
        spike when 2 * v - i / k >= k
        on spike { v = v - k * v + k   i -= k }
        refractory tau / 2
    }"""
    assert dsl.check_source(src, "n.snn")[1] == []
