"""Units and dimensions of the .snn language.

Time is the only physical dimension: a dimension is a power of time (a Fraction, so sqrt of a
time is representable). ms is the project's time unit: `s`, `ms`, `us` convert to ms, numbers
without a unit are dimensionless. Variables: state variables, weights and thresholds are
dimensionless; a parameter has the dimension of its default value.

    dim 1   a time (time constants, refractory periods, delays)
    dim 0   dimensionless
    dim -1  a rate (right-hand sides of dx/dt)
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Mapping, Optional

import sympy

from . import ast

# unit -> (factor to ms as an exact rational, dimension)
UNITS: dict[str, tuple[sympy.Rational, int]] = {
    "ms": (sympy.Integer(1), 1),
    "s": (sympy.Integer(1000), 1),
    "us": (sympy.Rational(1, 1000), 1),
    # rates (per ms): target rates of `init = auto(rate = 10 Hz)`, rate parameters
    "Hz": (sympy.Rational(1, 1000), -1),
    "kHz": (sympy.Integer(1), -1),
}

TIME = Fraction(1)
DIMENSIONLESS = Fraction(0)
RATE = Fraction(-1)

# Functions allowed in expressions: name -> arity. exp and log need dimensionless arguments,
# sqrt halves the dimension, abs keeps it.
FUNCTIONS = {"exp": 1, "log": 1, "sqrt": 1, "abs": 1}


class UnitError(Exception):
    """A dimension problem inside an expression; the checks turn it into a Diagnostic."""

    def __init__(self, code: str, message: str, span: ast.Span, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.span, self.hint = code, message, span, hint


def unit_factor(unit: Optional[str]) -> sympy.Rational:
    """Exact factor converting a number written in `unit` to ms (1 for dimensionless)."""
    return UNITS[unit][0] if unit else sympy.Integer(1)


def unit_dim(unit: Optional[str]) -> Fraction:
    return Fraction(UNITS[unit][1]) if unit else DIMENSIONLESS


def num_to_ms(num: ast.Num) -> float:
    """The value of a literal in ms (or as is when dimensionless)."""
    return float(num.value * float(unit_factor(num.unit)))


def format_dim(d: Fraction) -> str:
    if d == 0:
        return "dimensionless"
    if d == 1:
        return "a time"
    if d == -1:
        return "a rate (1/time)"
    return f"time^{d}"


def dim_of(expr: ast.Expr, dims: Mapping[str, Fraction]) -> Fraction:
    """Dimension of an expression given the dimensions of its names (KeyError-free: an unknown
    name is reported by the name checks, here it counts as dimensionless). Raises UnitError on
    a mismatch. Recursive: the parser rejects trees deeper than parser.MAX_DEPTH."""
    if isinstance(expr, ast.Num):
        return unit_dim(expr.unit)
    if isinstance(expr, ast.Name):
        return dims.get(expr.id, DIMENSIONLESS)
    if isinstance(expr, ast.UnaryOp):
        return dim_of(expr.operand, dims)
    if isinstance(expr, ast.BinOp):
        left = dim_of(expr.left, dims)
        if expr.op == "^":
            exponent = _const_exponent(expr.right, dims)
            return left * exponent
        right = dim_of(expr.right, dims)
        if expr.op in "+-":
            if left != right and not (_is_zero(expr.left) or _is_zero(expr.right)):
                raise UnitError("E030", f"unit mismatch: `{expr.op}` between {format_dim(left)} "
                                f"and {format_dim(right)}", expr.span,
                                "both sides of + and - must have the same unit; write times "
                                "with a unit, e.g. `5 ms`")
            return left if not _is_zero(expr.left) else right
        if expr.op == "*":
            return left + right
        return left - right  # "/"
    if isinstance(expr, ast.Call):
        if expr.func not in FUNCTIONS:
            return DIMENSIONLESS  # reported as E019 by the checks
        if len(expr.args) != 1 or expr.kwargs:
            return DIMENSIONLESS  # reported by the checks
        arg = dim_of(expr.args[0], dims)
        if expr.func == "sqrt":
            return arg / 2
        if expr.func == "abs":
            return arg
        if arg != 0:
            raise UnitError("E030", f"unit mismatch: the argument of {expr.func}() is "
                            f"{format_dim(arg)}", expr.args[0].span,
                            f"{expr.func}() needs a dimensionless argument, e.g. "
                            f"`{expr.func}(-t / tau)`")
        return DIMENSIONLESS
    raise TypeError(f"not an expression: {expr!r}")


def _is_zero(e: ast.Expr) -> bool:
    """A literal 0 is compatible with every unit (`v - 0` or `0 - x` need no unit)."""
    return isinstance(e, ast.Num) and e.value == 0


is_zero_literal = _is_zero  # public: `dx/dt = 0` is a rate (checks.py)


def _const_exponent(e: ast.Expr, dims: Mapping[str, Fraction]) -> Fraction:
    """Exponents must be dimensionless number literals (possibly signed or a ratio of
    literals), so that the dimension of a power is known."""
    value = _literal_value(e)
    if value is None or dim_of(e, dims) != 0:
        raise UnitError("E035", "exponent must be a dimensionless number", e.span,
                        "write e.g. `x^2`; exponents that depend on parameters are not supported")
    if not math.isfinite(value):
        raise UnitError("E035", "exponent is not a finite number", e.span, None)
    return Fraction(value).limit_denominator(1000)


def _literal_value(e: ast.Expr) -> Optional[float]:
    if isinstance(e, ast.Num) and e.unit is None:
        return e.value
    if isinstance(e, ast.UnaryOp):
        v = _literal_value(e.operand)
        return None if v is None else (-v if e.op == "-" else v)
    if isinstance(e, ast.BinOp) and e.op in "+-*/":
        a, b = _literal_value(e.left), _literal_value(e.right)
        if a is None or b is None or (e.op == "/" and b == 0):
            return None
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[e.op]
    return None
