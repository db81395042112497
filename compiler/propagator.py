"""Closed-form propagator of a lower-triangular linear system, without 0/0 at equal rates.

For lower-triangular A with diagonal (rates) lam_k, the entries of exp(A D) are sums over the
dependency paths j = s_m -> ... -> s_0 = i (each step an off-diagonal entry A[s_{k-1}, s_k])
of  prod(A entries along the path) * exp[lam_{s_0}, ..., lam_{s_m}],  the divided difference
of f(lam) = exp(lam D) over the rates on the path (Opitz / Parlett). The affine part
phi(D) = int_0^D exp(A s) a0 ds is the last column of exp(A_aug D) for the augmented system
[1; x] with A_aug = [[0, 0], [a0, A]]: the constant is one more node, of rate 0.

Divided differences are written with the well-conditioned functions of compiler/special.py:
    one rate (any multiplicity m+1):    D^m / m! exp(lam D)
    two nodes  {a, p}:                   D exp(p D) exprel((a - p) D)
    three nodes {a, b, p}:               D^2 exp(p D) dexp2((a - p) D, (b - p) D)
where p is the "prefactor" rate: the largest rate on the path at the parameter defaults (0 when
the constant node is on the path, as every rate of a stable system is negative; ties go to the
path's target, in the usual models the membrane). Then the special functions get arguments <= 0
and neither overflow nor cancel as long as training keeps the order of the time constants; if it
flips it, an argument z > 0 only overflows once z > ~700 (e.g. |1/tau_a - 1/tau_b| * D > 700). Structurally equal rates simplify automatically (dexp2(0, z) ->
phi2(z), exprel(0) -> 1). Paths with four or more nodes and more than one distinct rate would
need a third divided difference, which is not implemented: CompileError E061.
"""

from __future__ import annotations

import sympy

from .errors import CompileError
from .ir import DT
from .special import dexp2, exprel

_CONST = "const"  # marker for the constant node of the augmented system


def _same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return a == b or sympy.simplify(a - b) == 0


def divided_difference(rates: list[sympy.Expr], prefactor: sympy.Expr, span=None) -> sympy.Expr:
    """exp[rates] in D (rates[0] = path target), with `prefactor` one of the rates."""
    m = len(rates) - 1
    distinct: list[sympy.Expr] = []
    for r in rates:
        if not any(_same(r, q) for q in distinct):
            distinct.append(r)
    if len(distinct) == 1:
        return DT**m / sympy.factorial(m) * sympy.exp(rates[0] * DT)
    if m == 1:
        other = rates[1] if _same(rates[0], prefactor) else rates[0]
        return DT * sympy.exp(prefactor * DT) * exprel(sympy.simplify(other - prefactor) * DT)
    if m == 2:
        others = list(rates)
        for k, r in enumerate(others):
            if _same(r, prefactor):
                del others[k]
                break
        x, y = (sympy.simplify(r - prefactor) * DT for r in others)
        return DT**2 * sympy.exp(prefactor * DT) * dexp2(x, y)
    raise CompileError(
        "E061",
        f"the propagator needs a divided difference of exp over {m + 1} rates, "
        f"{len(distinct)} of them distinct; only up to three coupled rates are supported",
        span,
        "shorten the chain of coupled state variables, or give them equal time constants",
    )


def _paths(A: sympy.Matrix, i: int, j: int) -> list[list[int]]:
    """All dependency paths i <- ... <- j (as node lists [i, ..., j]) through nonzero A entries."""
    if i == j:
        return [[i]]
    out: list[list[int]] = []

    # x_i depends on x_k (k < i) when A[i, k] != 0; walk down from i
    def walk(node: int, acc: list[int]):
        if node == j:
            out.append(acc)
            return
        for k in range(j, node):
            if A[node, k] != 0:
                walk(k, acc + [k])

    walk(i, [i])
    return out


def _prefactor(rates: list[sympy.Expr], defaults: dict | None) -> sympy.Expr:
    """The path rate that is largest at the default parameters (first = target wins ties)."""
    if not defaults:
        return sympy.Integer(0) if any(r == 0 for r in rates) else rates[0]
    best, best_val = rates[0], None
    for r in rates:
        try:
            val = float(r.subs(defaults))
        except (TypeError, ValueError):
            continue
        if best_val is None or val > best_val:
            best, best_val = r, val
    return best


def propagator(A: sympy.Matrix, a0: sympy.Matrix, span=None, defaults: dict | None = None
               ) -> tuple[sympy.Matrix, sympy.Matrix]:
    """(Phi(D), phi(D)) in closed form for lower-triangular A; raises CompileError otherwise.
    `defaults` (symbol -> value) chooses the prefactor rate of each divided difference."""
    d = A.shape[0]
    for i in range(d):
        for j in range(i + 1, d):
            if A[i, j] != 0:
                raise CompileError("E060", "the dynamics matrix is not lower triangular", span)
    # augmented system [1; x]: the constant is node 0 (rate 0), upstream of everything
    Aa = sympy.zeros(d + 1, d + 1)
    Aa[1:, 1:] = A
    Aa[1:, 0] = a0
    rates = [sympy.Integer(0)] + [A[k, k] for k in range(d)]
    E = sympy.zeros(d + 1, d + 1)
    for i in range(d + 1):
        for j in range(i + 1):
            total = sympy.Integer(0)
            for path in _paths(Aa, i, j):
                coef = sympy.Integer(1)
                for a, b in zip(path, path[1:]):
                    coef *= Aa[a, b]
                pref = _prefactor([rates[k] for k in path], defaults)
                total += coef * divided_difference([rates[k] for k in path], pref, span)
            E[i, j] = total
    return E[1:, 1:], E[1:, 0]
