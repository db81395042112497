"""AST expressions -> sympy. The single source of truth for units in formulas.

    to_sympy(expr, symbols) -> sympy.Expr

- Numbers become exact rationals converted to ms: `20 ms` -> 20, `0.02 s` -> 20,
  `500 us` -> 1/2, `0.1` -> 1/10 (the decimal the user wrote, via the shortest float repr).
  Non-finite literals (`1e999`) become sympy.oo; the checks reject them (E037).
- Names are looked up in `symbols` (name -> sympy.Symbol or any sympy expression, so callers can
  substitute values directly); a missing name raises UnknownName (a KeyError subclass).
- `^` is Pow; exp, log, sqrt, abs map to sympy's; any other call raises UnknownFunction.
  Exponents are bounded (MAX_EXPONENT) and so are exact powers of numbers (MAX_DIGITS):
  NumberRange otherwise, so that constant folding always ends quickly.
- The conversion is recursive; the parser bounds tree depth (parser.MAX_DEPTH), so it cannot hit
  the recursion limit on parsed input.

`evaluate(expr, values)` gives a float (ms for times) for constant expressions, e.g. parameter
defaults and overrides.
"""

from __future__ import annotations

import math
from typing import Mapping

import sympy

from . import ast
from .units import FUNCTIONS, unit_factor


class SymError(Exception):
    def __init__(self, message: str, span: ast.Span):
        super().__init__(message)
        self.span = span


class UnknownName(SymError, KeyError):
    def __init__(self, name: str, span: ast.Span):
        SymError.__init__(self, f"unknown name `{name}`", span)
        self.name = name

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class NumberRange(SymError):
    """A power whose exact value would be astronomically large (or its exponent is): folding
    `10^10^10` exactly would never finish, so it is refused (E035 or E037)."""

    def __init__(self, code: str, message: str, span: ast.Span):
        super().__init__(message, span)
        self.code = code


# Bounds of exact constant folding: exponents up to MAX_EXPONENT in magnitude, exact powers
# of numbers up to 10^MAX_DIGITS (floats end at 1.8e308, so nothing valid is lost).
MAX_EXPONENT = 1024
MAX_DIGITS = 4000


def _power(a: sympy.Expr, b: sympy.Expr, expr: ast.BinOp) -> sympy.Expr:
    if b.is_Number and (not b.is_finite or abs(b) > MAX_EXPONENT):
        raise NumberRange("E035", f"exponent too large (at most {MAX_EXPONENT} in magnitude)",
                          expr.right.span)
    if a.is_Number and b.is_Number and a != 0 and a.is_finite:
        digits = abs(float(b)) * abs(math.log10(abs(float(a))) if abs(a) < 1e300 else
                                     float(sympy.log(abs(a), 10)))
        if digits > MAX_DIGITS:
            raise NumberRange("E037", f"the power is out of range (about 10^{digits:.0f} or "
                              f"10^-{digits:.0f})", expr.span)
    return a**b


def _check_exp(arg: sympy.Expr, expr: ast.Call) -> None:
    """exp of a constant beyond float range: refuse now, before mpmath chases exp(exp(exp(100)))
    to full precision (the arguments are bounded bottom-up, so float(arg) is cheap)."""
    if not arg.is_number:
        return
    try:
        x = float(arg)
    except (TypeError, ValueError, OverflowError):  # complex: left to the caller's evaluation
        return
    if x > MAX_EXP_ARG or math.isnan(x):
        raise NumberRange("E037", f"exp() of {x:g} overflows", expr.span)


MAX_EXP_ARG = 709.78  # exp(709.78) ~ 1.8e308, the largest float


class UnknownFunction(SymError):
    def __init__(self, func: str, span: ast.Span):
        super().__init__(f"unknown function `{func}`", span)
        self.func = func


_SYMPY_FUNCS = {"exp": sympy.exp, "log": sympy.log, "sqrt": sympy.sqrt, "abs": sympy.Abs}


def number(value: float, unit: str | None = None) -> sympy.Expr:
    """An exact sympy number for a literal (in ms when it has a time unit)."""
    if not math.isfinite(value):
        return sympy.oo if value > 0 else (-sympy.oo if value < 0 else sympy.nan)
    if float(value).is_integer():
        base = sympy.Integer(int(value))
    else:
        base = sympy.Rational(repr(float(value)))
    return base * unit_factor(unit)


def to_sympy(expr: ast.Expr, symbols: Mapping[str, sympy.Expr]) -> sympy.Expr:
    """Convert an AST expression to sympy, numbers in ms (see the module docstring)."""
    if isinstance(expr, ast.Num):
        return number(expr.value, expr.unit)
    if isinstance(expr, ast.Name):
        try:
            return symbols[expr.id]
        except KeyError:
            raise UnknownName(expr.id, expr.span) from None
    if isinstance(expr, ast.UnaryOp):
        inner = to_sympy(expr.operand, symbols)
        return -inner if expr.op == "-" else inner
    if isinstance(expr, ast.BinOp):
        a = to_sympy(expr.left, symbols)
        b = to_sympy(expr.right, symbols)
        if expr.op == "+":
            return a + b
        if expr.op == "-":
            return a - b
        if expr.op == "*":
            return a * b
        if expr.op == "/":
            return a / b
        if expr.op == "^":
            return _power(a, b, expr)
        raise ValueError(f"unknown operator {expr.op!r}")
    if isinstance(expr, ast.Call):
        if expr.func not in _SYMPY_FUNCS or len(expr.args) != FUNCTIONS[expr.func] or expr.kwargs:
            raise UnknownFunction(expr.func, expr.span)
        args = [to_sympy(a, symbols) for a in expr.args]
        if expr.func == "exp":
            _check_exp(args[0], expr)
        return _SYMPY_FUNCS[expr.func](*args)
    raise TypeError(f"not an expression: {expr!r}")


def evaluate(expr: ast.Expr, values: Mapping[str, float] | None = None) -> float:
    """Numeric value of an expression (ms for times), names taken from `values`."""
    syms = {k: sympy.Float(v) if not isinstance(v, sympy.Basic) else v
            for k, v in (values or {}).items()}
    return float(sympy.N(to_sympy(expr, syms)))


def walk(expr: ast.Expr):
    """Every node of an expression, in source order (pre-order, iterative)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        yield e
        if isinstance(e, ast.UnaryOp):
            stack.append(e.operand)
        elif isinstance(e, ast.BinOp):
            stack += [e.right, e.left]
        elif isinstance(e, ast.Call):
            stack += [v for _, v in reversed(e.kwargs)] + list(reversed(e.args))


def free_names(expr: ast.Expr) -> list[ast.Name]:
    """Every Name node in an expression, in source order."""
    return [e for e in walk(expr) if isinstance(e, ast.Name)]


def calls(expr: ast.Expr) -> list[ast.Call]:
    """Every Call node in an expression, in source order."""
    return [e for e in walk(expr) if isinstance(e, ast.Call)]
