"""Low-level MLIR building blocks (func/arith/math/scf through the bindings shipped in torch-mlir):
scalar constants and arithmetic that treat Python `None` as a structural zero (so products and
sums over sparse Phi skip what is known to be zero), the sympy -> MLIR expression printer, the
special functions of compiler/special.py (exprel, phi2, dexp2, implemented once here), and a
guarded Newton/bisection root finder in scf.while. mlir/emit.py assembles neurons from these."""

from __future__ import annotations

from typing import Callable, Optional

import sympy
from torch_mlir import ir
from torch_mlir.dialects import arith, math, scf, vector

from spikescan.compiler import special
from spikescan.compiler.backends import stable_exp

Value = ir.Value


def float_type(dtype: str):
    if dtype == "f64":
        return ir.F64Type.get()
    if dtype == "f32":
        return ir.F32Type.get()
    raise ValueError(f"dtype must be 'f32' or 'f64', got {dtype!r}")


def eps_of(dtype: str) -> float:
    return 2.0**-52 if dtype == "f64" else 2.0**-23


class Ops:
    """Scalar arithmetic at the current insertion point. None means an exact zero."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.ft = float_type(dtype)
        self.eps = eps_of(dtype)
        self.helpers: dict = {}  # name -> func.FuncOp of the special functions (see add_helpers)

    # ---- constants
    def c(self, v: float) -> Value:
        return arith.constant(self.ft, float(v))

    def ci(self, v: int, t=None) -> Value:
        return arith.constant(t or ir.IndexType.get(), int(v))

    def i1(self, v: bool) -> Value:
        return arith.constant(ir.IntegerType.get_signless(1), 1 if v else 0)

    # ---- arithmetic with None = 0
    def add(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return arith.addf(a, b)

    def sub(self, a, b):
        if b is None:
            return a
        if a is None:
            return arith.negf(b)
        return arith.subf(a, b)

    def mul(self, a, b):
        if a is None or b is None:
            return None
        return arith.mulf(a, b)

    def div(self, a, b):
        return None if a is None else arith.divf(a, b)

    def z(self, a):
        """Materialise None as 0.0."""
        return self.c(0.0) if a is None else a

    def dot(self, row, vec):
        acc = None
        for a, b in zip(row, vec):
            acc = self.add(acc, self.mul(a, b))
        return acc

    def matvec(self, M, v):
        return [self.dot(row, v) for row in M]

    def affine(self, M, v, b):
        """M v + b (the propagation x -> Phi x + phi), entry by entry in one fixed order."""
        return [self.add(u, w) for u, w in zip(self.matvec(M, v), b)]

    # ---- comparisons / selection
    def lt(self, a, b):
        return arith.cmpf(arith.CmpFPredicate.OLT, a, b)

    def le(self, a, b):
        return arith.cmpf(arith.CmpFPredicate.OLE, a, b)

    def ge(self, a, b):
        return arith.cmpf(arith.CmpFPredicate.OGE, a, b)

    def gt(self, a, b):
        return arith.cmpf(arith.CmpFPredicate.OGT, a, b)

    def sel(self, cond, a, b):
        return arith.select(cond, a, b)

    def absf(self, a):
        return math.absf(a)

    def fmax(self, a, b):
        return arith.maximumf(a, b)

    def fmin(self, a, b):
        return arith.minimumf(a, b)

    def and_(self, a, b):
        return arith.andi(a, b)

    def or_(self, a, b):
        return arith.ori(a, b)

    def not_(self, a):
        return arith.xori(a, self.i1(True))

    # ---- structured control flow helpers
    def if_(self, cond, then_fn: Callable[[], list], else_fn: Callable[[], list], types: list):
        op = scf.IfOp(cond, types, has_else=True)
        with ir.InsertionPoint(op.then_block):
            scf.yield_(list(then_fn()))
        with ir.InsertionPoint(op.else_block):
            scf.yield_(list(else_fn()))
        return list(op.results)

    def if_void(self, cond, then_fn: Callable[[], None]):
        op = scf.IfOp(cond, [], has_else=False)
        with ir.InsertionPoint(op.then_block):
            then_fn()
            scf.yield_([])


class VOps(Ops):
    """Ops over `lanes` neurons at once: values are vector<lanes x f>; scalar operands (the
    per-event propagator factors, parameters, constants) are broadcast on use, so the neuron
    formulas of NeuronEmitter print unchanged into a vectorised loop body. Lane-wise IEEE
    arithmetic in the same order as the scalar code: results are bit-for-bit the scalar ones."""

    def __init__(self, dtype: str, lanes: int):
        super().__init__(dtype)
        self.lanes = lanes
        self.st = self.ft  # the scalar element type
        self.ft = ir.VectorType.get([lanes], self.st)
        self.bt = ir.VectorType.get([lanes], ir.IntegerType.get_signless(1))

    def vec(self, a):
        """Broadcast a scalar Value to the lane type (vectors pass through; None stays None)."""
        if a is None or a.type.typeid == ir.VectorType.static_typeid:
            return a
        t = self.bt if a.type.typeid == ir.IntegerType.static_typeid else self.ft
        return vector.broadcast(t, a)

    def c(self, v: float) -> Value:
        return vector.broadcast(self.ft, arith.constant(self.st, float(v)))

    def i1(self, v: bool) -> Value:
        return vector.broadcast(self.bt, arith.constant(ir.IntegerType.get_signless(1), 1 if v else 0))

    def add(self, a, b):
        return super().add(self.vec(a), self.vec(b))

    def sub(self, a, b):
        return super().sub(self.vec(a), self.vec(b))

    def mul(self, a, b):
        return super().mul(self.vec(a), self.vec(b))

    def div(self, a, b):
        return super().div(self.vec(a), self.vec(b))

    def lt(self, a, b):
        return super().lt(self.vec(a), self.vec(b))

    def le(self, a, b):
        return super().le(self.vec(a), self.vec(b))

    def ge(self, a, b):
        return super().ge(self.vec(a), self.vec(b))

    def gt(self, a, b):
        return super().gt(self.vec(a), self.vec(b))

    def sel(self, cond, a, b):
        return super().sel(self.vec(cond), self.vec(a), self.vec(b))

    def fmax(self, a, b):
        return super().fmax(self.vec(a), self.vec(b))

    def fmin(self, a, b):
        return super().fmin(self.vec(a), self.vec(b))

    def and_(self, a, b):
        return super().and_(self.vec(a), self.vec(b))

    def or_(self, a, b):
        return super().or_(self.vec(a), self.vec(b))

    def not_(self, a):
        return arith.xori(self.vec(a), self.i1(True))

    def z(self, a):
        return self.c(0.0) if a is None else self.vec(a)

    def if_(self, *a, **k):
        raise TypeError("VOps: no control flow inside a vectorised body (use sel)")

    def if_void(self, *a, **k):
        raise TypeError("VOps: no control flow inside a vectorised body (use sel)")


# ----------------------------------------------------------------------------- special functions


def exprel(o: Ops, z: Value) -> Value:
    """(e^z - 1)/z: series below |z| < 1e-5 (see special.numeric_exprel), expm1(z)/z above."""
    small = o.lt(o.absf(z), o.c(1e-5))
    ser = arith.addf(o.c(1.0), arith.mulf(z, arith.addf(o.c(0.5), arith.mulf(z, o.c(1.0 / 6.0)))))
    safe = o.sel(small, o.c(1.0), z)  # never divide by 0, even in the branch not taken
    big = arith.divf(math.expm1(safe), safe)
    return o.sel(small, ser, big)


def phi2(o: Ops, z: Value) -> Value:
    """(e^z - 1 - z)/z^2: Taylor (Horner, 22 terms) for |z| < 1, closed form above."""
    small = o.lt(o.absf(z), o.c(1.0))
    tot = o.c(0.0)
    for k in range(21, -1, -1):
        tot = arith.addf(arith.divf(arith.mulf(tot, z), o.c(k + 3)), o.c(1.0))
    ser = arith.mulf(tot, o.c(0.5))
    safe = o.sel(small, o.c(1.0), z)
    big = arith.divf(arith.subf(math.expm1(safe), safe), arith.mulf(safe, safe))
    return o.sel(small, ser, big)


def dexp2(o: Ops, x: Value, y: Value) -> Value:
    """exp[0, x, y] (special.numeric_dexp2): shift by the largest node, Taylor about the midpoint
    for a spread < 1, else the difference quotient over the widest gap."""
    zero = o.c(0.0)
    p0 = o.fmin(zero, o.fmin(x, y))
    p2 = o.fmax(zero, o.fmax(x, y))
    p1 = o.fmax(o.fmin(x, y), o.fmin(o.fmax(x, y), zero))  # the median of (0, x, y)
    u, v = arith.subf(p0, p2), arith.subf(p1, p2)
    scale = math.exp(p2)
    m = arith.mulf(o.c(0.5), u)
    a, b, cc = arith.subf(u, m), arith.subf(v, m), arith.negf(m)
    total, h2, h3, bn, fact = o.c(0.0), o.c(0.0), o.c(0.0), o.c(1.0), 2.0
    for n in range(0, 26):
        h2 = arith.addf(arith.mulf(a, h2), bn)
        h3 = arith.addf(h2, arith.mulf(cc, h3))
        total = arith.addf(total, arith.mulf(h3, o.c(1.0 / fact)))
        bn = arith.mulf(bn, b)
        fact *= n + 3
    ser = arith.mulf(arith.mulf(scale, math.exp(m)), total)
    close = o.gt(u, o.c(-1.0))
    us = o.sel(close, o.c(-1.0), u)
    e_v0 = exprel(o, v)
    e_uv = arith.mulf(math.exp(v), exprel(o, arith.subf(us, v)))
    quo = arith.mulf(scale, arith.divf(arith.subf(e_v0, e_uv), arith.negf(us)))
    return o.sel(close, ser, quo)


def dexpn(o: Ops, args: list) -> Value:
    """exp[0, z_1, ..., z_k] (special.numeric_dexpn): nodes sorted at run time by a
    compare-exchange network; centred Taylor series (30 terms) for a spread < 1, else the
    difference quotient over the widest gap, recursively (emitted unrolled: k is small)."""
    nodes = [o.c(0.0)] + list(args)
    return _dd_sorted(o, _sort(o, nodes), shift=False)


def _sort(o: Ops, v: list) -> list:
    v = list(v)
    for i in range(len(v)):
        for j in range(len(v) - 1 - i):
            a, b = v[j], v[j + 1]
            v[j], v[j + 1] = o.fmin(a, b), o.fmax(a, b)
    return v


def _dd_sorted(o: Ops, nodes: list, shift: bool) -> Value:
    """exp[nodes] for sorted nodes; shift=True first factors out exp(largest node)."""
    if len(nodes) == 1:
        return math.exp(nodes[0])
    if shift:
        p = nodes[-1]
        rest = [arith.subf(n, p) for n in nodes[:-1]] + [o.c(0.0)]
        return arith.mulf(math.exp(p), _dd_sorted(o, rest, shift=False))
    k = len(nodes) - 1
    lo, hi = nodes[0], nodes[-1]
    spread = arith.subf(hi, lo)
    m = arith.mulf(o.c(0.5), arith.addf(lo, hi))
    a = [arith.subf(n, m) for n in nodes]
    terms = 30
    h = [o.c(1.0)]
    for _ in range(1, terms):
        h.append(arith.mulf(h[-1], a[0]))
    for node in a[1:]:
        for j in range(1, terms):
            h[j] = arith.addf(h[j], arith.mulf(node, h[j - 1]))
    total, fact = o.c(0.0), float(_factorial(k))
    for j in range(terms):
        total = arith.addf(total, arith.mulf(h[j], o.c(1.0 / fact)))
        fact *= j + k + 1
    ser = arith.mulf(math.exp(m), total)
    close = o.lt(spread, o.c(1.0))
    den = o.sel(close, o.c(1.0), spread)
    quo = arith.divf(arith.subf(_dd_sorted(o, nodes[1:], True), _dd_sorted(o, nodes[:-1], True)), den)
    return o.sel(close, ser, quo)


def expshift(o: Ops, p: Value, zs: list, base: Optional[Value] = None) -> Value:
    """exp(p + max(0, z...)) (stable_exp.py; None in zs: a literal 0 node). base: exp(p), where
    the expression computes it anyway (scalar code only): then the shifted exp is taken only when
    max(0, z...) > 0. Same bits: p + 0 == p but for p = -0, and exp(-0) == exp(+0). For CubaLIF
    (tau_s < tau_m) this saves one of the four libm calls per event."""
    m = None
    for z in zs:
        if z is not None:
            m = o.fmax(o.c(0.0), z) if m is None else o.fmax(m, z)
    if m is None:
        return math.exp(p)
    if base is not None and not isinstance(o, VOps):
        return o.if_(o.gt(m, o.c(0.0)), lambda: [math.exp(arith.addf(p, m))], lambda: [base], [o.ft])[0]
    return math.exp(arith.addf(p, m))


def ddshift(o: Ops, zs: list) -> Value:
    """exp(-max(0, z...)) exp[0, z...]: the special function with its nodes shifted to <= 0,
    through the same helpers (bit for bit the unshifted value when max(0, z...) = 0)."""
    if len(zs) == 1:  # exp(-max(0, z)) exprel(z) = exprel(-|z|)
        return exprel(o, arith.negf(o.absf(zs[0])))
    if len(zs) == 2 and zs[0] is None:  # phi2(z) = exp[0, 0, z]; z > 0: e^z exp[-z, -z, 0]
        z = zs[1]
        pos = o.gt(z, o.c(0.0))
        zn = arith.negf(o.fmax(z, o.c(0.0)))
        shifted = _call(o, "__spikescan_dexp2", [zn, zn], dexp2)
        return o.sel(pos, shifted, _call(o, "__spikescan_phi2", [o.fmin(z, o.c(0.0))], phi2))
    nodes = _sort(o, [o.c(0.0)] + [o.c(0.0) if z is None else z for z in zs])
    top = nodes[-1]
    shifted = [arith.subf(n, top) for n in nodes]
    if len(zs) == 2:  # exp[0, a, b] with a <= b <= 0 is dexp2(a, b)
        return _call(o, "__spikescan_dexp2", shifted[:2], dexp2)
    return _dd_sorted(o, shifted, shift=False)


def _factorial(k: int) -> int:
    out = 1
    for i in range(2, k + 1):
        out *= i
    return out


def add_helpers(o: Ops) -> None:
    """Emit phi2 and dexp2 once per module as private functions (at the current insertion point,
    the module body) so every Phi evaluation calls them instead of repeating ~100 ops inline."""
    from torch_mlir.dialects import func

    for name, nin, body in (("__spikescan_phi2", 1, lambda a: phi2(o, a[0])),
                            ("__spikescan_dexp2", 2, lambda a: dexp2(o, a[0], a[1]))):
        fn = func.FuncOp(name, ir.FunctionType.get([o.ft] * nin, [o.ft]))
        fn.attributes["sym_visibility"] = ir.StringAttr.get("private")
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            func.ReturnOp([body(list(blk.arguments))])
        o.helpers[name] = fn


def _call(o: Ops, name: str, args: list, inline):
    from torch_mlir.dialects import func

    if name in o.helpers:
        return func.CallOp(o.helpers[name], args).results[0]
    return inline(o, *args)


# ----------------------------------------------------------------------------- sympy printer


class ExprPrinter:
    """sympy expression -> MLIR scalar ops. env maps Symbol names to Values. Exact zeros come
    back as None so callers can skip them."""

    def __init__(self, o: Ops, env: dict[str, Value]):
        self.o, self.env = o, env
        self.memo: dict = {}

    def __call__(self, e) -> Optional[Value]:
        e = sympy.sympify(e)
        if e == 0:
            return None
        return self._p(e)

    def _p(self, e) -> Value:
        if e in self.memo:
            return self.memo[e]
        v = self._emit(e)
        self.memo[e] = v
        return v

    def _scaled(self, factors) -> list:
        """Values for the exp and special-function factors of a product exp(p) * F(z...), folded
        so that neither overflows (stable_exp.py); None for the factors printed as usual."""
        vals = [None] * len(factors)
        pair = stable_exp.scaled_pair(factors)
        if pair is not None:
            ie, isp, nodes = pair
            zs = [None if z == 0 else self._p(z) for z in nodes]
            # exp(p) itself, if an entry printed earlier computed it (see NeuronEmitter._phi_at)
            vals[ie] = expshift(self.o, self._p(factors[ie].args[0]), zs, base=self.memo.get(factors[ie]))
            vals[isp] = ddshift(self.o, zs)
        return vals

    def _emit(self, e) -> Value:
        o = self.o
        if e.is_Number:
            return o.c(float(e))
        if e.is_Symbol:
            if e.name not in self.env:
                raise KeyError(f"symbol {e.name!r} has no value in the MLIR emitter")
            return self.env[e.name]
        if e.is_Add:
            args = list(e.args)
            acc = self._p(args[0])
            for a in args[1:]:
                if a.could_extract_minus_sign() and a.is_Mul:
                    acc = arith.subf(acc, self._p(-a))
                else:
                    acc = arith.addf(acc, self._p(a))
            return acc
        if e.is_Mul:
            coeff, rest = e.as_coeff_Mul()
            num, den = [], []
            for f in sympy.Mul.make_args(rest):
                if f.is_Pow and f.exp.is_Integer and f.exp < 0:
                    den.append(f.base**-f.exp)
                else:
                    num.append(f)
            acc = None
            vals = self._scaled(num)
            for f, sv in zip(num, vals):
                v = self._p(f) if sv is None else sv
                acc = v if acc is None else arith.mulf(acc, v)
            if den:
                dv = None
                for f in den:
                    v = self._p(f)
                    dv = v if dv is None else arith.mulf(dv, v)
                acc = arith.divf(o.c(1.0) if acc is None else acc, dv)
            if coeff == -1:
                return arith.negf(acc)
            if coeff != 1:
                return arith.mulf(o.c(float(coeff)), acc) if acc is not None else o.c(float(coeff))
            return acc
        if e.is_Pow:
            b, n = e.base, e.exp
            if n.is_Integer:
                k = int(n)
                if k < 0:
                    return arith.divf(o.c(1.0), self._p(b**-k))
                bv = self._p(b)
                acc = bv
                for _ in range(k - 1):
                    acc = arith.mulf(acc, bv)
                return acc
            if n == sympy.Rational(1, 2):
                return math.sqrt(self._p(b))
            if b == sympy.E:
                return math.exp(self._p(n))
            return math.powf(self._p(b), self._p(n))
        if isinstance(e, sympy.exp):
            return math.exp(self._p(e.args[0]))
        if isinstance(e, sympy.log):
            return math.log(self._p(e.args[0]))
        if isinstance(e, special.exprel):
            return exprel(o, self._p(e.args[0]))
        if isinstance(e, special.phi2):
            return _call(o, "__spikescan_phi2", [self._p(e.args[0])], phi2)
        if hasattr(special, "dexp2") and isinstance(e, special.dexp2):
            return _call(o, "__spikescan_dexp2", [self._p(e.args[0]), self._p(e.args[1])], dexp2)
        if hasattr(special, "dexpn") and isinstance(e, special.dexpn):
            return dexpn(o, [self._p(a) for a in e.args])
        if isinstance(e, sympy.Abs):
            return math.absf(self._p(e.args[0]))
        if isinstance(e, stable_exp.expshift):
            return expshift(o, self._p(e.args[0]), [None if z == 0 else self._p(z) for z in e.args[1:]])
        if isinstance(e, stable_exp.ddshift):
            return ddshift(o, [None if z == 0 else self._p(z) for z in e.args])
        raise NotImplementedError(f"MLIR emitter: no lowering for {type(e).__name__} in {e}")


# ----------------------------------------------------------------------------- root finder


def solve(o: Ops, fn: Callable[[Value], tuple], a: Value, b: Value, sign: Value, t0: Value,
          max_iter: int = 100, zero_is_past: bool = False, start: Optional[Value] = None) -> Value:
    """Root of fn on [a, b], where sign*fn is increasing with sign*fn(a) < 0 <= sign*fn(b):
    Newton steps kept inside the shrinking bracket and bisection whenever a step leaves it or
    does not halve the previous step (rtsafe). fn(D) emits (value, derivative). Stops when the
    step is below ~2 ulp of the absolute time t0 + D or after max_iter iterations.
    zero_is_past: an exact 0 of fn may be underflow past the root (the isolation chain over a
    long gap), so it only moves the bracket's right end, never ends the search by a Newton step.
    start: the first iterate, inside [a, b] (default: the midpoint)."""
    ft = o.ft
    i64 = ir.IntegerType.get_signless(64)
    D0 = arith.mulf(o.c(0.5), arith.addf(a, b)) if start is None else start
    dx0 = arith.subf(b, a)
    it0 = arith.constant(i64, 0)
    types = [ft, ft, ft, ft, i64]
    w = scf.WhileOp(types, [a, b, D0, dx0, it0])
    before = w.before.blocks.append(*types)
    with ir.InsertionPoint(before):
        lo, hi, D, dx, it = before.arguments
        tol = arith.mulf(o.c(2.0 * o.eps), arith.addf(o.absf(t0), o.absf(D)))
        go = o.and_(o.gt(o.absf(dx), tol),
                    arith.cmpi(arith.CmpIPredicate.slt, it, arith.constant(i64, max_iter)))
        go = o.and_(go, o.gt(hi, lo))
        scf.condition(go, [lo, hi, D, dx, it])
    after = w.after.blocks.append(*types)
    with ir.InsertionPoint(after):
        lo, hi, D, dx, it = after.arguments
        f, df = fn(D)
        f = arith.mulf(sign, f)
        df = arith.mulf(sign, df)
        neg = o.lt(f, o.c(0.0))
        lo2 = o.sel(neg, D, lo)
        hi2 = o.sel(neg, hi, D)
        newton = arith.subf(D, arith.divf(f, df))
        step = o.absf(arith.subf(newton, D))
        ok = o.and_(o.and_(o.ge(newton, lo2), o.le(newton, hi2)),
                    o.le(step, arith.mulf(o.c(0.5), o.absf(dx))))
        if zero_is_past:
            ok = o.and_(ok, arith.cmpf(arith.CmpFPredicate.ONE, f, o.c(0.0)))
        mid = arith.mulf(o.c(0.5), arith.addf(lo2, hi2))
        Dn = o.sel(ok, newton, mid)
        scf.yield_([lo2, hi2, Dn, arith.subf(Dn, D), arith.addi(it, arith.constant(i64, 1))])
    return w.results[2]
