"""Products exp(p) * F(z...) of the propagators' special functions, printed so that no factor
overflows (shared by the MLIR and Triton printers: one detection, two lowerings).

Every closed-form propagator term is D^m exp(p D) * exp[0, z_1, ..., z_k] (compiler/special.py:
exprel = exp[0, z], phi2 = exp[0, 0, z], dexp2 = exp[0, x, y], dexpn). The analysis puts the
largest rate in p, so the z are <= 0 for the default parameters; but parameters given at run
time can reorder the rates (tau_m = 10 us below tau_s = 5 ms), and then exp(p D) underflows to
0 while F overflows to inf over a long gap: 0 * inf = NaN, and the interval's spikes are lost.
With m = max(0, z_1, ..., z_k), the same product is

    exp(p + m) * ddshift(z...),   ddshift(z...) = exp(-m) exp[0, z...] = exp[-m, z_1 - m, ...]

whose nodes are all <= 0, so ddshift is in (0, 1/k!] and the exp factor is the product's true
size. For m = 0 (the usual order of the rates) both factors are bit for bit the old ones.

    scaled_pair(factors) -> (i_exp, i_special, nodes) | None    which factors of a Mul to fold
    special_nodes(f)     -> the nodes z of a special-function call (phi2(z): (0, z))
    stabilize(expr)      -> expr with every such pair replaced by expshift(p, z...) * ddshift(z...)
    stabilize_for_triton -> the same in the functions the Triton printer has (exp, Max, ddshift)
"""

from __future__ import annotations

from typing import Optional

import sympy

from spikescan.compiler import special


class expshift(sympy.Function):
    """exp(p + max(0, z_1, ..., z_k)); args (p, z_1, ..., z_k)."""


class ddshift(sympy.Function):
    """exp(-max(0, z...)) * exp[0, z_1, ..., z_k] (all nodes shifted to <= 0)."""


def special_nodes(f) -> Optional[tuple]:
    """Nodes z of exp[0, z...] for a special-function call, None for anything else."""
    if isinstance(f, special.exprel):
        return (f.args[0],)
    if isinstance(f, special.phi2):
        return (sympy.Integer(0), f.args[0])
    if isinstance(f, (special.dexp2, special.dexpn)):
        return tuple(f.args)
    return None


def scaled_pair(factors) -> Optional[tuple]:
    """(index of an exp factor, index of the one special-function factor, its nodes) among the
    factors of a product, or None (no exp, or not exactly one special function)."""
    i_exp = next((i for i, f in enumerate(factors) if isinstance(f, sympy.exp)), None)
    specials = [(i, special_nodes(f)) for i, f in enumerate(factors)]
    specials = [(i, z) for i, z in specials if z is not None]
    if i_exp is None or len(specials) != 1:
        return None
    return i_exp, specials[0][0], specials[0][1]


def _rewrite_pairs(expr, rewrite):
    """expr with each exp(p) * F(z...) product's two factors replaced by rewrite(p, F, nodes)
    -> (new exp factor, new special factor), or left alone where rewrite returns None."""
    expr = sympy.sympify(expr)
    if expr.is_Atom:
        return expr
    args = [_rewrite_pairs(a, rewrite) for a in expr.args]
    if expr.is_Mul:
        pair = scaled_pair(args)
        if pair is not None:
            ie, isp, nodes = pair
            new = rewrite(args[ie].args[0], args[isp], nodes)
            if new is not None:
                args[ie], args[isp] = new
    if all(a is b for a, b in zip(args, expr.args)):
        return expr
    return expr.func(*args)


def stabilize(expr):
    """expr with each exp(p) * F(z...) product rewritten as expshift(p, z...) * ddshift(z...)."""
    return _rewrite_pairs(expr, lambda p, f, nodes: (expshift(p, *nodes), ddshift(*nodes)))


def stabilize_for_triton(expr):
    """The Triton printer's form: each exp(p) * exprel(z) product as exp(p + Max(0, z)) *
    exprel(-Abs(z)), in functions it already prints and inlines; products with higher divided
    differences (phi2, dexp2, dexpn) as exp(p + Max(0, z...)) * ddshift(z...), printed as the
    shifted helpers (triton_codegen: phi2s, dexp2s, dexpn<k>s). Idempotent."""
    def rewrite(p, f, nodes):
        if len(nodes) == 1:
            (z,) = nodes
            return sympy.exp(p + sympy.Max(0, z)), special.exprel(-sympy.Abs(z))
        return sympy.exp(p + sympy.Max(0, *nodes)), ddshift(*nodes)

    return _rewrite_pairs(expr, rewrite)
