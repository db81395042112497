"""AST expressions -> sympy. The single source of truth for units in formulas.

    to_sympy(expr, symbols) -> sympy.Expr

- Numbers become exact rationals converted to ms: `20 ms` -> 20, `0.02 s` -> 20,
  `500 us` -> 1/2, `0.1` -> 1/10 (the decimal the user wrote, via the shortest float repr).
  Non-finite literals (`1e999`) become sympy.oo; the checks reject them (E037).
- Names are looked up in `symbols` (name -> sympy.Symbol or any sympy expression, so callers can
  substitute values directly); a missing name raises UnknownName (a KeyError subclass).
- `^` is Pow; exp, log, sqrt, abs map to sympy's; any other call raises UnknownFunction.
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
            return a**b
        raise ValueError(f"unknown operator {expr.op!r}")
    if isinstance(expr, ast.Call):
        if expr.func not in _SYMPY_FUNCS or len(expr.args) != FUNCTIONS[expr.func] or expr.kwargs:
            raise UnknownFunction(expr.func, expr.span)
        return _SYMPY_FUNCS[expr.func](*(to_sympy(a, symbols) for a in expr.args))
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
