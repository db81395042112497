"""Generate a Triton module (Python source) for one neuron type from its NeuronIR.

Everything neuron-specific is printed from the IR's sympy expressions (Phi, phi, B, c, theta,
R, r, t_ref, the isolation chain and the no-crossing rows); the event loops and the chunked
scan (compiler/backends/triton/kernels.py) are generic text around those helpers. The state
vector is unrolled into scalars/tensors x0..x{d-1}; every helper is elementwise, so it serves
both the per-lane vectors of the sequential kernel and the [lanes, K] tiles of the scan.

    generate(ir, dtype="f64") -> str        the module source
    load_module(ir, dtype="f64")            import it from the content-hash cache folder
"""

from __future__ import annotations

import hashlib
import math
import re
import os
import sys
from pathlib import Path

import sympy

from ...ir import DT, NeuronIR
from .kernels import kernel_source
from .inline import inline_helpers
from .printer import TritonPrinter, emit_assignments

GENERATOR_VERSION = "5"

_DTYPES = {
    # machine epsilon, a tiny positive normal number, cap on safeguarded-Newton iterations
    "f64": dict(tl="tl.float64", eps=2.220446049250313e-16, tiny=1e-300, maxit=100),
    "f32": dict(tl="tl.float32", eps=1.1920929e-07, tiny=1e-30, maxit=60),
}

# Special functions of compiler/special.py, implemented once (same algorithms as numeric_*).
# tl.where evaluates both branches, so every denominator is made safe first.
SPECIAL_HELPERS = '''
@triton.jit
def _expm1(z):
    # Kahan: (u - 1) * z / log(u) with u = exp(z) is accurate to a few ulp (no libdevice in the
    # interpreter); exact branches for u == 1 and u == 0, and overflow passes through.
    u = tl.exp(z)
    um1 = u - 1.0
    lu = tl.log(u)
    safe = (um1 != 0.0) & (um1 != -1.0) & (u < float('inf'))
    r = tl.where(safe, um1 * (z / tl.where(safe, lu, 1.0)), um1)
    return tl.where(um1 == 0.0, z, r)


@triton.jit
def exprel(z):
    small = tl.abs(z) < 1e-5
    zs = tl.where(small, 1.0, z)
    u = tl.exp(zs)
    um1 = u - 1.0
    safe = (um1 != 0.0) & (um1 != -1.0) & (u < float('inf'))
    lu = tl.log(tl.where(safe, u, 2.0))
    big = tl.where(safe, um1 / lu, tl.where(um1 == -1.0, -1.0 / zs, u))
    return tl.where(small, 1.0 + z * (0.5 + z * (1.0 / 6.0)), big)


@triton.jit
def phi2(z):
    small = tl.abs(z) < 1e-2
    # sum_{k>=0} z^k / (k+2)!, Horner, 9 terms (enough for |z| < 1e-2 in double)
    s = 1.0 / 3628800.0
    s = s * z + 1.0 / 362880.0
    s = s * z + 1.0 / 40320.0
    s = s * z + 1.0 / 5040.0
    s = s * z + 1.0 / 720.0
    s = s * z + 1.0 / 120.0
    s = s * z + 1.0 / 24.0
    s = s * z + 1.0 / 6.0
    s = s * z + 0.5
    zs = tl.where(small, 1.0, z)
    return tl.where(small, s, (_expm1(zs) - zs) / (zs * zs))


@triton.jit
def dexp2s(x, y):
    # exp(-max(0, x, y)) exp[0, x, y]: every node shifted to <= 0, so it never overflows
    # (see numeric_dexp2); dexp2 multiplies the scale back, stable_exp folds it into exp(p)
    zero = x * 0.0
    p2 = tl.maximum(tl.maximum(x, y), zero)
    p0 = tl.minimum(tl.minimum(x, y), zero)
    p1 = tl.maximum(tl.minimum(x, y), tl.minimum(tl.maximum(x, y), zero))
    u = p0 - p2
    v = p1 - p2
    # series sum_n h_n(u, v)/(n+2)!, h_n = u h_{n-1} + v^n (used when the spread is < 1/2)
    tot = zero
    h = zero
    vn = zero + 1.0
    fact = 2.0
    for n in tl.static_range(24):
        h = u * h + vn
        tot = tot + h / fact
        vn = vn * v
        fact = fact * (n + 3)
    us = tl.where(u > -0.5, -1.0, u)
    quot = (exprel(v) - tl.exp(v) * exprel(us - v)) / (-us)
    return tl.where(u > -0.5, tot, quot)


@triton.jit
def dexp2(x, y):
    return tl.exp(tl.maximum(tl.maximum(x, y), x * 0.0)) * dexp2s(x, y)


@triton.jit
def phi2s(z):
    # exp(-max(0, z)) phi2(z) = exp(-max(0, z)) exp[0, 0, z]
    zp = tl.maximum(z, 0.0)
    return tl.where(z > 0.0, dexp2s(zp * 0.0, zp), phi2(tl.minimum(z, 0.0)))
'''


def dexpn_helper(k: int, shifted: bool = False) -> str:
    """Triton source of dexpn<k>(z_1..z_k) = exp[0, z_1, ..., z_k] (repeated nodes allowed), the
    algorithm of special.numeric_dexpn / mlir_ops.dexpn: nodes sorted by a compare-exchange
    network, centred Taylor series (30 terms) for a spread < 1, else the difference quotient over
    the widest gap, recursively, each part shifted by its largest node (unrolled: k is small).
    Only the adjoint's parameter derivatives need it (d/dz of dexp2 repeats a node)."""
    name = f"dexpn{k}s" if shifted else f"dexpn{k}"
    lines = ["", "", "@triton.jit", f"def {name}(" + ", ".join(f"z{i}" for i in range(k)) + "):"]
    cnt = iter(range(10 ** 6))

    def new(expr: str) -> str:
        name = f"t{next(cnt)}"
        lines.append(f"    {name} = {expr}")
        return name

    def dd(nodes: list[str], shift: bool) -> str:
        if len(nodes) == 1:
            return new(f"tl.exp({nodes[0]})")
        if shift:
            p = nodes[-1]
            rest = [new(f"{n} - {p}") for n in nodes[:-1]] + [new(f"{p} * 0.0")]
            inner = dd(rest, False)
            return new(f"tl.exp({p}) * {inner}")
        order = len(nodes) - 1
        lo, hi = nodes[0], nodes[-1]
        spread = new(f"{hi} - {lo}")
        m = new(f"0.5 * ({lo} + {hi})")
        a = [new(f"{n} - {m}") for n in nodes]
        terms = 30
        h = [new(f"{a[0]} * 0.0 + 1.0")]
        for _ in range(1, terms):
            h.append(new(f"{h[-1]} * {a[0]}"))
        for node in a[1:]:
            for jj in range(1, terms):
                h[jj] = new(f"{h[jj]} + {node} * {h[jj - 1]}")
        fact = float(math.factorial(order))
        total = new(f"{h[0]} * {1.0 / fact!r}")
        for jj in range(1, terms):
            fact *= jj + order
            total = new(f"{total} + {h[jj]} * {1.0 / fact!r}")
        ser = new(f"tl.exp({m}) * {total}")
        close = new(f"{spread} < 1.0")
        den = new(f"tl.where({close}, 1.0, {spread})")
        up = dd(nodes[1:], True)
        down = dd(nodes[:-1], True)
        return new(f"tl.where({close}, {ser}, ({up} - {down}) / {den})")

    v = ["z0 * 0.0"] + [f"z{i}" for i in range(k)]
    v = [new(e) for e in v]
    for i in range(len(v)):  # bubble network: min/max compare-exchange
        for jj in range(len(v) - 1 - i):
            a, b = v[jj], v[jj + 1]
            v[jj], v[jj + 1] = new(f"tl.minimum({a}, {b})"), new(f"tl.maximum({a}, {b})")
    if shifted:  # exp(-max(0, z...)) exp[0, z...] = exp[nodes - the largest]: all <= 0
        top = v[-1]
        v = [new(f"{n} - {top}") for n in v[:-1]] + [new(f"{top} * 0.0")]
    res = dd(v, False)
    lines.append(f"    return {res}")
    return "\n".join(lines) + "\n"


def _state_syms(d: int) -> list[sympy.Symbol]:
    return [sympy.Symbol(f"x{i}", real=True) for i in range(d)]


def _chain_rows(ir: NeuronIR) -> list[sympy.Matrix]:
    """Rows l_0 = c^T, l_k = l_{k-1}(A - lam_k I) of the isolation chain (from the IR when the
    analysis filled it; otherwise from the diagonal of the lower-triangular A). The last row
    is a left eigenvector, so l_m (A x + a0) keeps one sign along an interval."""
    if ir.chain is not None and ir.chain.rows:
        return [sympy.Matrix(r).reshape(1, ir.d) for r in ir.chain.rows]
    rows = [ir.c.T]
    for k in range(ir.d - 1):
        nxt = (rows[-1] * (ir.A - ir.A[k, k] * sympy.eye(ir.d))).applyfunc(sympy.simplify)
        if all(e == 0 for e in nxt):
            break
        rows.append(nxt)
    return rows


class _Gen:
    def __init__(self, ir: NeuronIR, dtype: str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if ir.Phi is None or ir.phi is None:
            raise ValueError(f"neuron {ir.name}: the IR has no propagator (run the analysis first)")
        self.ir, self.dtype, self.cfg = ir, dtype, _DTYPES[dtype]
        # constants built in f64 (a bare literal bound to a name is fp32); f32 needs nothing
        self.lit_dtype = self.cfg["tl"] if dtype == "f64" else None
        self.d = ir.d
        self.xs = _state_syms(self.d)
        self.pnames = [f"p_{p.name}" for p in ir.params]
        self.names = {p.symbol: f"p_{p.name}" for p in ir.params}
        self.names[DT] = "D"
        for i, s in enumerate(self.xs):
            self.names[s] = f"x{i}"
        self.P = ", ".join(self.pnames)
        self.X = ", ".join(f"x{i}" for i in range(self.d))
        self.spiking = ir.c is not None and ir.theta is not None
        # structural non-zeros of Phi: the scan carries only these entries
        self.nz = [(i, j) for i in range(self.d) for j in range(self.d)
                   if sympy.simplify(ir.Phi[i, j]) != 0]
        self.lines: list[str] = []

    # ------------------------------------------------------------------ small emit helpers
    def fn(self, name: str, args: str, body: list[str], ret: str):
        self.lines += ["", "", "@triton.jit", f"def {name}({args}):"]
        self.lines += body
        self.lines.append(f"    return {ret}")

    def assign(self, outs: dict[str, sympy.Expr], ref: str) -> list[str]:
        """Assignments; constant outputs are broadcast to the shape/dtype of `ref`."""
        lines = emit_assignments(outs, self.names, dtype=self.lit_dtype)
        for k, e in outs.items():
            if not sympy.sympify(e).free_symbols:
                lines.append(f"    {k} = tl.zeros_like({ref}) + {k}")
        return lines

    # ------------------------------------------------------------------ neuron helpers
    def emit_basics(self):
        ir, d, X, P = self.ir, self.d, self.X, self.P
        xv = sympy.Matrix(self.xs)
        # initial state (params only)
        self.fn("state_init", f"ref, {P}", self.assign({f"y{i}": ir.init[i] for i in range(d)}, "ref"),
                ", ".join(f"y{i}" for i in range(d)))
        # propagate: Phi(D) x + phi(D)
        Phi, phi = ir.Phi, ir.phi  # printed overflow-free by emit_assignments (stable_exp)
        y = Phi * xv + phi
        self.fn("propagate", f"{X}, D, {P}", self.assign({f"y{i}": y[i] for i in range(d)}, "D"),
                ", ".join(f"y{i}" for i in range(d)))
        # the per-event affine map of each port: M = Phi(D), b = phi(D) + B w
        wsym = sympy.Symbol("w", real=True)
        self.names[wsym] = "w"
        for port, Bk in ir.ports.items():
            outs = {f"m{i}_{j}": Phi[i, j] for i, j in self.nz}
            outs.update({f"b{i}": phi[i] + Bk[i] * wsym for i in range(d)})
            self.fn(f"maps_{port}", f"D, w, {P}", self.assign(outs, "D"), ", ".join(outs))
            jo = {f"y{i}": self.xs[i] + Bk[i] * wsym for i in range(d)}
            self.fn(f"jump_{port}", f"{X}, w, {P}", self.assign(jo, "w"), ", ".join(jo))
        # affine composition (M2, b2) o (M1, b1) = (M2 M1, M2 b1 + b2), non-zeros only
        nzs = set(self.nz)
        m1 = ", ".join(f"a{i}_{j}" for i, j in self.nz) + ", " + ", ".join(f"u{i}" for i in range(d))
        m2 = ", ".join(f"c{i}_{j}" for i, j in self.nz) + ", " + ", ".join(f"v{i}" for i in range(d))
        body, rets = [], []
        for i, j in self.nz:
            terms = [f"c{i}_{k} * a{k}_{j}" for k in range(d) if (i, k) in nzs and (k, j) in nzs]
            body.append(f"    r{i}_{j} = " + (" + ".join(terms) if terms else f"a{i}_{j} * 0.0"))
            rets.append(f"r{i}_{j}")
        for i in range(d):
            terms = [f"c{i}_{k} * u{k}" for k in range(d) if (i, k) in nzs]
            body.append(f"    s{i} = " + " + ".join(terms + [f"v{i}"]))
            rets.append(f"s{i}")
        self.fn("combine", f"{m1}, {m2}", body, ", ".join(rets))
        # apply a map to a state
        mm = ", ".join(f"m{i}_{j}" for i, j in self.nz) + ", " + ", ".join(f"b{i}" for i in range(d))
        body = []
        for i in range(d):
            terms = [f"m{i}_{k} * x{k}" for k in range(d) if (i, k) in nzs]
            body.append(f"    y{i} = " + " + ".join(terms + [f"b{i}"]))
        self.fn("apply_map", f"{mm}, {X}", body, ", ".join(f"y{i}" for i in range(d)))
        # reset
        yr = ir.R * xv + ir.r
        self.fn("reset", f"{X}, {P}", self.assign({f"y{i}": yr[i] for i in range(d)}, "x0"),
                ", ".join(f"y{i}" for i in range(d)))
        # time scale for t_end=None: 60 times the slowest time constant (as tests/mpref.py)
        rates = [ir.A[i, i] for i in range(d)]
        body = ["    tau = ref * 0.0"]
        pr = TritonPrinter(self.names, self.lit_dtype)
        for lam in rates:
            if sympy.simplify(lam) == 0:
                continue
            body.append(f"    lam = tl.abs(tl.zeros_like(ref) + {pr.doprint(lam)})")
            body.append("    tau = tl.maximum(tau, 1.0 / tl.where(lam > 0, lam, 1.0))")
        body.append("    tau = tl.where(tau > 0, tau, 1.0)")
        self.fn("tau_slow", f"ref, {P}", body, "tau")
        # refractory period
        self.fn("t_ref", f"ref, {P}", [f"    tr = tl.zeros_like(ref) + {pr.doprint(ir.t_ref)}"], "tr")

    def emit_threshold(self):
        ir, d, X, P = self.ir, self.d, self.X, self.P
        xv = sympy.Matrix(self.xs)
        pr = TritonPrinter(self.names, self.lit_dtype)
        self.fn("theta", f"ref, {P}", [f"    th = tl.zeros_like(ref) + {pr.doprint(ir.theta)}"], "th")
        self.fn("potential", f"{X}, {P}", self.assign({"u": (ir.c.T * xv)[0]}, "x0"), "u")
        y = ir.A * xv + ir.a0
        rows = _chain_rows(ir)
        self.levels = len(rows)
        for k, row in enumerate(rows):
            self.fn(f"chain{k}", f"{X}, {P}", self.assign({"g": (row * y)[0]}, "x0"), "g")
            self.fn(f"dchain{k}", f"{X}, {P}", self.assign({"g": (row * ir.A * y)[0]}, "x0"), "g")
        # cheap exact no-crossing test
        if ir.no_cross_rows:
            body = ["    ok = x0 == x0"]
            for row, off in ir.no_cross_rows:
                e = (sympy.Matrix(row).reshape(1, d) * xv)[0] + off
                body.append(f"    ok = ok & (({pr.doprint(e)}) < th)")
        else:
            body = ["    ok = x0 != x0"]  # no test derived: every interval is a candidate
        self.fn("no_cross", f"{X}, th, {P}", body, "ok")
        self.emit_isolation()
        self.emit_solver()

    def prop_call(self, D: str, out: str) -> str:
        outs = ", ".join(f"{out}{i}" for i in range(self.d))
        return f"{outs} = propagate({self.X}, {D}, {self.P})"

    def newton_block(self, ind: str, fn: str, dfn: str, minus: str, lo: str, hi: str, sa: str,
                     act: str, out: str, zero_is_past: bool = False) -> list[str]:
        """Text of a safeguarded Newton iteration for the single zero of fn(x(D)) - minus on
        [lo, hi] (sign `sa` at lo): steps leaving the bracket become bisections; stop when the
        step or the bracket is a few ulp, or at the iteration cap. Result in `out`.
        zero_is_past: an exact 0 of fn is underflow past the root (the isolation chain over a
        long gap), so it moves the bracket's right end and never ends the search."""
        d, X, P = self.d, self.X, self.P
        eps, maxit = self.cfg["eps"], self.cfg["maxit"]
        ys = ", ".join(f"yn{i}" for i in range(d))
        sub = [f"{ind}    f = f - {minus}"] if minus else []
        i2 = ind + "    "
        return [
            f"{ind}nlo = {lo}",
            f"{ind}nhi = {hi}",
            f"{ind}nact = {act} & (nhi > nlo)",
            f"{ind}{out} = tl.where(nact, 0.5 * (nlo + nhi), nhi)",
            f"{ind}nit = 0",
            f"{ind}while (nit < {maxit}) & (tl.sum(nact.to(tl.int32)) > 0):",
            f"{i2}{ys} = propagate({X}, {out}, {P})",
            f"{i2}f = {fn}({ys}, {P})",
        ] + sub + [
            f"{i2}fp = {dfn}({ys}, {P})",
            f"{i2}right = ((f < 0) == ({sa} < 0)) & (f != 0)" if zero_is_past else
            f"{i2}right = (f < 0) == ({sa} < 0)",
            f"{i2}nlo = tl.where(nact & right, {out}, nlo)",
            f"{i2}nhi = tl.where(nact & ~right, {out}, nhi)",
            f"{i2}Dn = {out} - f / tl.where(fp != 0, fp, 1.0)",
            f"{i2}Dn = tl.where((Dn > nlo) & (Dn < nhi), Dn, 0.5 * (nlo + nhi))",
            f"{i2}tol = {4 * eps!r} * tl.maximum(tl.abs({out}), {self.cfg['tiny']!r})",
            f"{i2}conv = (tl.abs(Dn - {out}) <= tol) | (nhi - nlo <= tol)"
            + ("" if zero_is_past else " | (f == 0)"),
            f"{i2}{out} = tl.where(nact, Dn, {out})" if zero_is_past else
            f"{i2}{out} = tl.where(nact & (f != 0), Dn, {out})",
            f"{i2}nact = nact & ~conv",
            f"{i2}nit += 1",
        ]

    def emit_isolation(self):
        """first_crossing(x, H, th) -> (found, lo, hi): the first upward crossing of theta by
        u(D) on [0, H] is bracketed in [lo, hi] with u monotone there (lo == hi == 0 when the
        interval starts at or above theta). Breakpoints: zeros of chain row k are isolated
        between the zeros of row k+1 (Rolle), from the top row (constant sign) down to u'."""
        d, X, P = self.d, self.X, self.P
        L = self.levels
        b = ["    zero = H * 0.0", "    pts0 = zero", "    pts1 = H"]
        npts = 2
        for k in range(L - 2, -1, -1):  # zeros of chain row k, between zeros of row k+1
            g = f"chain{k}"
            b.append(f"    # zeros of {g} (at most one between consecutive breakpoints)")
            b.append(f"    {self.prop_call('pts0', 'ya')}")
            b.append(f"    ga = {g}({', '.join(f'ya{i}' for i in range(d))}, {P})")
            for q in range(npts - 1):
                b.append(f"    {self.prop_call(f'pts{q + 1}', 'yb')}")
                b.append(f"    gb = {g}({', '.join(f'yb{i}' for i in range(d))}, {P})")
                # an exact 0 at the right end (underflow over a long gap) may hide a sign change:
                # solving for it costs at most a spare breakpoint, missing it a spike
                b.append("    has = ((ga < 0) & (gb > 0)) | ((ga > 0) & (gb <= 0))")
                b += self.newton_block("    ", g, f"dchain{k}", "", f"pts{q}", f"pts{q + 1}", "ga",
                                       "has", f"z{q}", zero_is_past=True)
                b.append(f"    z{q} = tl.where(has, z{q}, pts{q + 1})")
                b.append("    ga = gb")
            new = ["zero"] + [f"z{q}" for q in range(npts - 1)] + ["H"]
            for i, e in enumerate(new):
                b.append(f"    npts{i} = {e}")
            for i in range(len(new)):
                b.append(f"    pts{i} = npts{i}")
            npts = len(new)
        # first breakpoint where u >= theta closes the bracket
        b.append(f"    u0 = potential({X}, {P})")
        b.append("    found = u0 >= th")
        b.append("    lo = zero")
        b.append("    hi = zero")
        for i in range(1, npts):
            b.append(f"    {self.prop_call(f'pts{i}', 'yq')}")
            b.append(f"    uq = potential({', '.join(f'yq{k}' for k in range(d))}, {P})")
            b.append("    new = (~found) & (uq >= th)")
            b.append(f"    lo = tl.where(new, pts{i - 1}, lo)")
            b.append(f"    hi = tl.where(new, pts{i}, hi)")
            b.append("    found = found | new")
        self.fn("first_crossing", f"{X}, H, th, {P}", b, "found, lo, hi")

    def emit_solver(self):
        """solve_crossing(x, lo, hi, th): the crossing time in a bracket where u rises
        through theta (u(lo) < theta <= u(hi)), by the safeguarded Newton iteration."""
        b = ["    neg = lo * 0.0 - 1.0", "    on = lo == lo"]
        b += self.newton_block("    ", "potential", "chain0", "th", "lo", "hi", "neg", "on", "D")
        self.fn("solve_crossing", f"{self.X}, lo, hi, th, {self.P}", b, "D")

    def source(self) -> str:
        ir = self.ir
        head = [
            f'"""Generated by spikescan.compiler.backends.triton.codegen v{GENERATOR_VERSION} for '
            f'neuron {ir.name} ({self.dtype}). Do not edit."""',
            "import triton",
            "import triton.language as tl",
            "",
            f"NEURON = {ir.name!r}",
            f"DTYPE = {self.dtype!r}",
            f"STATE = {tuple(ir.state)!r}",
            f"PARAMS = {tuple(p.name for p in ir.params)!r}",
            f"PORTS = {tuple(ir.ports)!r}",
            f"SPIKING = {self.spiking!r}",
            f"PHI_NONZEROS = {self.nz!r}",
        ]
        self.lines = head + SPECIAL_HELPERS.splitlines()
        self.emit_basics()
        if self.spiking:
            self.emit_threshold()
        self.lines.append(f"\nCHAIN_LEVELS = {getattr(self, 'levels', 0)}")
        kernels = kernel_source(self)  # also emits the backward's helpers into self.lines
        self.lines += kernels.splitlines()
        src = "\n".join(self.lines) + "\n"
        for k, sh in sorted({(int(v), bool(t)) for v, t in re.findall(r"\bdexpn(\d+)(s?)\(", src)}):
            src += dexpn_helper(k, shifted=sh)
        # kernels get every helper inlined (one straight function per kernel)
        return inline_helpers(src, lambda name: "_kernel_" in name)


def generate(ir: NeuronIR, dtype: str = "f64") -> str:
    """Python source of a Triton module for neuron `ir` (see module docstring)."""
    return _Gen(ir, dtype).source()


# ---------------------------------------------------------------------- loading from the cache


def cache_root() -> Path:
    return Path(os.environ.get("SPIKESCAN_CACHE", "./.spikescan-cache")) / "triton"


_LOADED: dict[str, object] = {}


def load_module(ir: NeuronIR, dtype: str = "f64", root: Path | None = None):
    """Generate (or reuse) the module for `ir` and execute it from the generated text itself.

    The text is also written to <cache>/triton/<Neuron>_<dtype>_<hash>.py (for people, and for
    tracebacks), but that file is never imported: nothing on disk (an edited .py, a planted
    __pycache__/*.pyc) can run. No bytecode is read or written. Triton's @jit reads the source
    of its functions with inspect, so the verified lines are registered in linecache under the
    file's name (an entry without mtime, which linecache never re-reads from disk)."""
    import linecache
    import types

    src = generate(ir, dtype)
    h = hashlib.sha256(src.encode()).hexdigest()[:20]
    if h in _LOADED:
        return _LOADED[h]
    folder = Path(root) if root is not None else cache_root()
    path = folder / f"{ir.name}_{dtype}_{h}.py"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != src.encode():
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(src)
            os.replace(tmp, path)  # atomic: concurrent processes never see a half-written file
    except OSError:
        pass  # the copy on disk is informational only; a read-only cache does not stop a run
    modname = f"spikescan_triton_{ir.name}_{dtype}_{h}"
    mod = types.ModuleType(modname, f"generated Triton module for {ir.name} ({dtype})")
    mod.__file__ = str(path)
    linecache.cache[str(path)] = (len(src), None, src.splitlines(True), str(path))
    sys.modules[modname] = mod  # Triton resolves a jit function's module by name
    try:
        exec(compile(src, str(path), "exec", dont_inherit=True), mod.__dict__)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    _LOADED[h] = mod
    return mod
