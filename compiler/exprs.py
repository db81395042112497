"""AST expressions -> sympy, with every time converted to ms (the project's time unit).

The analysis needs exact rational constants (so that `tau = 5 ms` written twice compares equal
structurally), so numbers become sympy Rationals of their decimal text. Unit *checking* is the
dsl's job (dsl/checks.py); here we only convert `s` and `us` to ms and track the power of time
of parameter defaults (ParamIR.dim).
"""

from __future__ import annotations

import math

import sympy

from spikescan.dsl import ast

from .errors import CompileError

UNIT_TO_MS = {None: sympy.Integer(1), "ms": sympy.Integer(1), "s": sympy.Integer(1000), "us": sympy.Rational(1, 1000)}

_FUNCS = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "abs": sympy.Abs,
}


def number(value: float) -> sympy.Expr:
    """Exact rational for a decimal literal (0.1 -> 1/10), so equal literals compare equal."""
    if isinstance(value, int) or float(value).is_integer():
        return sympy.Integer(int(value))
    if not math.isfinite(value):
        raise ValueError(f"non-finite literal {value!r}")
    return sympy.Rational(repr(float(value)))


def to_sympy(expr: ast.Expr, symbols: dict[str, sympy.Expr]) -> sympy.Expr:
    """Convert an AST expression; `symbols` maps every visible name to a sympy expression."""
    if isinstance(expr, ast.Num):
        return number(expr.value) * UNIT_TO_MS[expr.unit]
    if isinstance(expr, ast.Name):
        if expr.id not in symbols:
            raise CompileError("E010", f"unknown name '{expr.id}'", expr.span,
                               "declare it in `params { }` or `state { }`")
        return symbols[expr.id]
    if isinstance(expr, ast.UnaryOp):
        val = to_sympy(expr.operand, symbols)
        return -val if expr.op == "-" else val
    if isinstance(expr, ast.BinOp):
        a, b = to_sympy(expr.left, symbols), to_sympy(expr.right, symbols)
        if expr.op == "+":
            return a + b
        if expr.op == "-":
            return a - b
        if expr.op == "*":
            return a * b
        if expr.op == "/":
            return a / b
        if expr.op in ("^", "**"):
            return a**b
        raise CompileError("E001", f"unknown operator '{expr.op}'", expr.span)
    if isinstance(expr, ast.Call):
        if expr.func in _FUNCS and len(expr.args) == 1 and not expr.kwargs:
            return _FUNCS[expr.func](to_sympy(expr.args[0], symbols))
        raise CompileError("E019", f"function '{expr.func}' cannot be used here", expr.span,
                           "only exp, log, sqrt and abs of parameters are allowed in expressions")
    raise CompileError("E001", f"unsupported expression {type(expr).__name__}", getattr(expr, "span", None))


def time_power(expr: ast.Expr, dims: dict[str, int]) -> int:
    """Power of time of an expression (1 for `20 ms`, 0 for `1.0`); best effort, for ParamIR.dim."""
    if isinstance(expr, ast.Num):
        return 0 if expr.unit is None else 1
    if isinstance(expr, ast.Name):
        return dims.get(expr.id, 0)
    if isinstance(expr, ast.UnaryOp):
        return time_power(expr.operand, dims)
    if isinstance(expr, ast.BinOp):
        a, b = time_power(expr.left, dims), time_power(expr.right, dims)
        if expr.op == "*":
            return a + b
        if expr.op == "/":
            return a - b
        if expr.op in ("+", "-"):
            return a
        return 0
    return 0
