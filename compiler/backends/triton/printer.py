"""Print sympy expressions of the NeuronIR as triton.language source.

The generated code works elementwise on tensors of any shape (or scalars), so the same printed
expression serves the sequential kernel ([BN] lanes) and the chunk scan ([BN, K] tiles).
Special functions of compiler/special.py become calls of @triton.jit helpers emitted once per
module (see triton_codegen.SPECIAL_HELPERS).
"""

from __future__ import annotations

import math
from typing import Optional

import sympy
from sympy.printing.str import StrPrinter


def _constant(expr) -> Optional[float]:
    """The finite float value of a constant sympy expression, None for anything else."""
    e = sympy.sympify(expr) if not isinstance(expr, sympy.Basic) else expr
    if not isinstance(e, sympy.Expr) or e.free_symbols or not e.is_number:
        return None
    try:
        v = float(e)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


class TritonPrinter(StrPrinter):
    """sympy -> triton.language expression text; `names` maps Symbols to identifiers."""

    def __init__(self, names: dict[sympy.Symbol, str], dtype: Optional[str] = None):
        super().__init__({"full_prec": True})
        self.names = names
        self.dtype = dtype  # e.g. "tl.float64": constant expressions are built in it

    # Triton types a bare Python float as fp32 once it is bound to a name (`a = 0.3` then
    # `a + x_f64` is 0.30000001192...), while an inline literal next to an f64 operand is exact.
    # So constant subexpressions are folded to one double literal inline, and an expression that
    # is constant as a whole becomes tl.full([], value, dtype).
    def doprint(self, expr, *args, **kwargs):
        if self.dtype is not None:
            v = _constant(expr)
            if v is not None:
                return f"tl.full([], {v!r}, {self.dtype})"
        return super().doprint(expr, *args, **kwargs)

    def _print(self, expr, **kwargs):
        if not getattr(expr, "is_Atom", True):
            v = _constant(expr)
            if v is not None:
                return repr(v)
        return super()._print(expr, **kwargs)

    # ---- atoms
    def _print_Symbol(self, s):
        if s not in self.names:
            raise KeyError(f"symbol {s} has no name in the generated Triton code")
        return self.names[s]

    def _print_Dummy(self, s):
        return self._print_Symbol(s)

    def _print_Integer(self, e):
        return repr(float(int(e)))

    def _print_Rational(self, e):
        return repr(float(e))

    def _print_Float(self, e):
        return repr(float(e))

    def _print_Zero(self, e):
        return "0.0"

    def _print_One(self, e):
        return "1.0"

    def _print_NegativeOne(self, e):
        return "-1.0"

    def _print_Half(self, e):
        return "0.5"

    def _print_Infinity(self, e):
        return "float('inf')"

    def _print_NegativeInfinity(self, e):
        return "-float('inf')"

    def _print_Exp1(self, e):
        return repr(float(sympy.E))

    # ---- arithmetic: parenthesise every operand (no reliance on printer precedence)
    def _print_Add(self, e):
        return "(" + " + ".join(self._print(a) for a in e.args) + ")"

    def _print_Mul(self, e):
        num, den = [], []
        for a in e.args:
            if a.is_Pow and a.exp.is_Integer and a.exp < 0:
                den.append(a.base ** (-a.exp))
            elif a.is_Rational and not a.is_Integer and a.p == 1:
                den.append(sympy.Integer(a.q))
            else:
                num.append(a)
        n = " * ".join(self._print(a) for a in num) if num else "1.0"
        if not den:
            return "(" + n + ")"
        d = " * ".join(self._print(a) for a in den)
        return f"({n} / ({d}))"

    def _print_Pow(self, e):
        b, x = e.base, e.exp
        bs = self._print(b)
        if x.is_Integer:
            n = int(x)
            if n == 0:
                return "1.0"
            mag = " * ".join([bs] * abs(n))
            return f"({mag})" if n > 0 else f"(1.0 / ({mag}))"
        if x == sympy.Rational(1, 2):
            return f"tl.sqrt({bs})"
        if x == sympy.Rational(-1, 2):
            return f"(1.0 / tl.sqrt({bs}))"
        return f"tl.exp(({self._print(x)}) * tl.log({bs}))"

    # ---- functions
    def _print_exp(self, e):
        return f"tl.exp({self._print(e.args[0])})"

    def _print_log(self, e):
        return f"tl.log({self._print(e.args[0])})"

    def _print_sqrt(self, e):
        return f"tl.sqrt({self._print(e.args[0])})"

    def _print_Abs(self, e):
        return f"tl.abs({self._print(e.args[0])})"

    def _print_Max(self, e):
        out = self._print(e.args[0])
        for a in e.args[1:]:
            out = f"tl.maximum({out}, {self._print(a)})"
        return out

    def _print_Min(self, e):
        out = self._print(e.args[0])
        for a in e.args[1:]:
            out = f"tl.minimum({out}, {self._print(a)})"
        return out

    def _print_exprel(self, e):
        return f"exprel({self._print(e.args[0])})"

    def _print_phi2(self, e):
        return f"phi2({self._print(e.args[0])})"

    def _print_dexp2(self, e):
        return f"dexp2({self._print(e.args[0])}, {self._print(e.args[1])})"

    def _print_ddshift(self, e):
        # stable_exp.ddshift: exp(-max(0, z...)) exp[0, z...], the shifted helpers
        z = e.args
        if len(z) == 1:
            return f"exprel(-tl.abs({self._print(z[0])}))"
        if len(z) == 2 and z[0] == 0:
            return f"phi2s({self._print(z[1])})"
        if len(z) == 2:
            return f"dexp2s({self._print(z[0])}, {self._print(z[1])})"
        return f"dexpn{len(z)}s(" + ", ".join(self._print(a) for a in z) + ")"

    def _print_dexpn(self, e):
        # exp[0, z_1..z_k]: one generated helper per k (triton_codegen.dexpn_helper)
        return f"dexpn{len(e.args)}(" + ", ".join(self._print(a) for a in e.args) + ")"

    def _print_Piecewise(self, e):
        # tl.where chain; the last branch must be the unconditional one
        out = None
        for expr, cond in reversed(e.args):
            if cond is sympy.true:
                out = self._print(expr)
            else:
                if out is None:
                    raise ValueError("Piecewise without a default branch cannot be printed")
                out = f"tl.where({self._print(cond)}, {self._print(expr)}, {out})"
        return out

    def _rel(self, e, op):
        return f"({self._print(e.lhs)} {op} {self._print(e.rhs)})"

    def _print_StrictLessThan(self, e):
        return self._rel(e, "<")

    def _print_LessThan(self, e):
        return self._rel(e, "<=")

    def _print_StrictGreaterThan(self, e):
        return self._rel(e, ">")

    def _print_GreaterThan(self, e):
        return self._rel(e, ">=")

    def _print_Equality(self, e):
        return self._rel(e, "==")

    def _print_Function(self, e):
        raise NotImplementedError(
            f"the Triton backend has no implementation of the function {e.func} in {e}"
        )


def emit_assignments(
    exprs: dict[str, sympy.Expr], names: dict[sympy.Symbol, str], indent: str = "    ",
    prefix: str = "_c", dtype: Optional[str] = None,
) -> list[str]:
    """Lines `name = expr` for each output, with common subexpressions (exp(-D/tau), ...)
    factored out by sympy.cse so every exponential is evaluated once. exprel(z) calls become
    statements of their own (`_e0 = exprel(_z0)`), so that they can be inlined."""
    from ...special import exprel
    from ..stable_exp import stabilize_for_triton

    keys = list(exprs)
    # exp(p) * F(z...) products printed so that no factor overflows over long gaps
    vals = [stabilize_for_triton(sympy.sympify(exprs[k])) for k in keys]
    local = dict(names)
    lines: list[str] = []
    pr = TritonPrinter(local, dtype)
    calls = sorted(set().union(*[v.atoms(exprel) for v in vals]), key=sympy.default_sort_key)
    if calls:
        # phase 1: the arguments, then one statement per exprel call
        zrepl, zred = sympy.cse([c.args[0] for c in calls],
                                symbols=sympy.numbered_symbols(prefix + "z"), optimizations="basic")
        for sym, e in zrepl:
            lines.append(f"{indent}{sym.name} = {pr.doprint(e)}")
            local[sym] = sym.name
        sub = {}
        for i, (c, z) in enumerate(zip(calls, zred)):
            lines.append(f"{indent}{prefix}e{i} = exprel({pr.doprint(z)})")
            es = sympy.Symbol(f"{prefix}e{i}", real=True)
            local[es] = es.name
            sub[c] = es
        vals = [v.xreplace(sub) for v in vals]
    repl, reduced = sympy.cse(vals, symbols=sympy.numbered_symbols(prefix), optimizations="basic")
    for sym, e in repl:
        lines.append(f"{indent}{sym.name} = {pr.doprint(e)}")
        local[sym] = sym.name
    for k, e in zip(keys, reduced):
        lines.append(f"{indent}{k} = {pr.doprint(e)}")
    return lines
