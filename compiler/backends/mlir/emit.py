"""MLIR emission for one neuron type (DESIGN.md section 7): every formula is printed from the
NeuronIR's sympy expressions (A, a0, B, c, theta, R, r, t_ref, Phi, phi, chain, no_cross_rows);
nothing here knows a particular neuron.

    emit_module(ir, dtype="f64"|"f32") -> str   (canonicalized + CSE'd MLIR text)

The module holds scalar functions (state entries and parameters passed as scalars, tuples
returned): propagate, jump_<port>, reset, potential, dpotential, combine, crossing,
spike_time, dtstar_dx, dtstar_dtheta, dtstar_dparams; and, for neurons with a threshold, the
exact sequential event loop `layer` over memrefs that the CPU JIT runs (see cpu_jit.py for
its calling convention) and its event-outer, vectorised variant `layer_shared` for layers with
shared parameters and no delays (mlir/shared.py). NeuronEmitter is the reusable piece: it
emits the same formulas inline into any block (scalar, or vectorised over neurons with
mlir_ops.VOps), so the event loops and the standalone functions share one printer.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import sympy
from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.ir import DT, NeuronIR
from spikescan.compiler.backends.mlir.ops import ExprPrinter, Ops, add_helpers, float_type, solve

INF = float("inf")


def _chain_rows(nir: NeuronIR) -> list[sympy.Matrix]:
    """The isolation chain l_0 = c^T, l_k = l_{k-1}(A - lam_k I) (IR's, else derived here from
    the diagonal of the lower-triangular A), trimmed after the first zero row."""
    if nir.chain is not None and nir.chain.rows:
        rows = [sympy.Matrix(r).reshape(1, nir.d) for r in nir.chain.rows]
    else:
        if not nir.A.is_lower:
            raise NotImplementedError(f"{nir.name}: no isolation chain in the IR and A is not triangular")
        rows = [nir.c.T]
        for k in range(nir.d - 1):
            nxt = sympy.simplify(rows[-1] * (nir.A - nir.A[k, k] * sympy.eye(nir.d)))
            if all(e == 0 for e in nxt):
                break
            rows.append(nxt)
    out = []
    for r in rows:
        if all(sympy.simplify(e) == 0 for e in r):
            break
        out.append(r)
    return out


class NeuronEmitter:
    """Emits the neuron's formulas at the current insertion point."""

    def __init__(self, nir: NeuronIR, dtype: str):
        if nir.Phi is None or nir.phi is None:
            raise ValueError(f"{nir.name}: the IR has no propagator (run the analysis first)")
        self.ir, self.dtype = nir, dtype
        self.o = Ops(dtype)
        self.d = nir.d
        self.spiking = nir.c is not None and nir.theta is not None
        self.pnames = [p.symbol.name for p in nir.params]
        if self.spiking:
            self.rows = _chain_rows(nir)
            self.rowsA = [sympy.expand(r * nir.A) for r in self.rows]

    # ---- parameter-dependent constants (emitted once per neuron, outside the event loop)
    def setup(self, params: dict[str, ir.Value]):
        o, nir = self.o, self.ir
        self.P = ExprPrinter(o, dict(params))
        pr = self.P
        d = self.d
        self.A = [[pr(nir.A[i, j]) for j in range(d)] for i in range(d)]
        self.a0 = [pr(nir.a0[i]) for i in range(d)]
        self.R = [[pr(nir.R[i, j]) for j in range(d)] for i in range(d)]
        self.r = [pr(nir.r[i]) for i in range(d)]
        self.B = {k: [pr(Bk[i]) for i in range(d)] for k, Bk in nir.ports.items()}
        self.init = [pr(nir.init[i]) for i in range(d)]
        self.t_ref = pr(nir.t_ref)
        pot = nir.c if self.spiking else getattr(nir, "potential", None)
        if pot is None:
            pot = sympy.Matrix([1] + [0] * (d - 1))
        self.cvec = [pr(pot[i]) for i in range(d)]
        if self.spiking:
            self.theta = o.z(pr(nir.theta))
            self.L = [[pr(r[0, j]) for j in range(d)] for r in self.rows]
            self.LA = [[pr(r[0, j]) for j in range(d)] for r in self.rowsA]
            self.nocross = [([pr(row[j]) for j in range(d)], pr(off)) for row, off in nir.no_cross_rows]

    # ---- propagator
    phi_hint = None  # (D0, Phi(D0), phi(D0)) already computed at this point (reuse_phi)

    @contextlib.contextmanager
    def reuse_phi(self, D0: ir.Value, Phi0, phi0):
        """Inside: the scalar phi_at(D) returns Phi0, phi0 where D has the bits of D0 (a run-time
        test) instead of calling exp & co again; the same values, as they are printed from the
        same D. The event-outer loop's exact path (mlir/shared.py pass 2) reuses the event's."""
        saved = self.phi_hint
        self.phi_hint = (D0, Phi0, phi0)
        try:
            yield
        finally:
            self.phi_hint = saved

    def phi_at(self, D: ir.Value):
        """Phi(D) (None for structural zeros) and phi(D), printed from the IR."""
        hint = self.phi_hint
        if hint is None or type(self.o) is not Ops:
            return self._phi_at(D)
        D0, Phi0, phi0 = hint
        d, o = self.d, self.o

        def flat(Phi, phi):
            return [v for v in [*(Phi[i][j] for i in range(d) for j in range(d)), *phi] if v is not None]

        def unflat(vals):
            it = iter(vals)
            return ([[None if Phi0[i][j] is None else next(it) for j in range(d)] for i in range(d)],
                    [None if v is None else next(it) for v in phi0])

        bits = ir.IntegerType.get_signless(64 if self.dtype == "f64" else 32)
        same = arith.cmpi(arith.CmpIPredicate.eq, arith.bitcast(bits, D), arith.bitcast(bits, D0))
        return unflat(o.if_(same, lambda: flat(Phi0, phi0), lambda: flat(*self._phi_at(D)),
                            [o.ft] * len(flat(Phi0, phi0))))

    def _phi_at(self, D: ir.Value):
        env = dict(self.P.env)
        env[DT.name] = D
        pr = ExprPrinter(self.o, env)
        d = self.d
        # the simplest entries first (values do not depend on the order): a plain exp(p) they
        # print is then reused by the stable difference-of-exponential entries (ops.expshift)
        cells = [(i, j) for i in range(d) for j in range(d)]
        vals = {ij: None for ij in cells}
        for ij in sorted(cells, key=lambda ij: (sympy.count_ops(self.ir.Phi[ij]), ij)):
            vals[ij] = pr(self.ir.Phi[ij])
        Phi = [[vals[(i, j)] for j in range(d)] for i in range(d)]
        phi = [pr(self.ir.phi[i]) for i in range(d)]
        return Phi, phi

    def propagate(self, x, D):
        Phi, phi = self.phi_at(D)
        return self.o.affine(Phi, x, phi)

    def jump(self, x, w, port=None):
        """x + B w. port: a name (None: the first port) or, for a layer whose channels use
        several ports, the tuple of their names: B is then selected by the current event's port
        index (select_port)."""
        return [self.o.add(xi, self.o.mul(bi, w)) for xi, bi in zip(x, self.port_B(port))]

    # ---- several ports per layer: pmap[C] i64 (the port of each channel) is the last argument
    # of the generated loops; each event selects its B by its channel's entry
    pmap = None
    port_idx = None

    def take_pmap(self, port, args: list) -> list:
        """The loop's arguments without the trailing pmap (kept in self.pmap if port is a tuple)."""
        if isinstance(port, tuple):
            self.pmap = args[-1]
            return args[:-1]
        self.pmap = None
        return args

    def select_port(self, ch) -> None:
        """Channel ch (index) of the current event: its port index for port_B (multi-port only)."""
        self.port_idx = memref.load(self.pmap, [ch]) if self.pmap is not None else None

    def port_B(self, port=None) -> list:
        """B of the port, or (a tuple of ports) B of the current event's port: per entry a chain of
        scalar selects over the ports (None where no port touches the entry)."""
        if not isinstance(port, tuple):
            return self.B[port or next(iter(self.ir.ports))]
        return self.port_select([self.B[p] for p in port])

    def port_select(self, per_port: list) -> list:
        """Entry-wise the value of the current event's port from per_port[k] (lists of scalars,
        None = 0, aligned): a chain of selects on port_idx."""
        i64 = ir.IntegerType.get_signless(64)
        out = []
        for vals in zip(*per_port):
            if all(v is None for v in vals):
                out.append(None)
                continue
            ft = next(v for v in vals if v is not None).type
            zero = arith.constant(ft, 0.0)
            acc = zero if vals[-1] is None else vals[-1]
            for k in range(len(vals) - 2, -1, -1):
                hit = arith.cmpi(arith.CmpIPredicate.eq, self.port_idx, arith.constant(i64, k))
                acc = arith.select(hit, zero if vals[k] is None else vals[k], acc)
            out.append(acc)
        return out

    def reset(self, x):
        return [self.o.add(a, b) for a, b in zip(self.o.matvec(self.R, x), self.r)]

    def potential(self, x):
        return self.o.z(self.o.dot(self.cvec, x))

    def deriv(self, x):
        """y = dx/dt = A x + a0."""
        return [self.o.add(a, b) for a, b in zip(self.o.matvec(self.A, x), self.a0)]

    def dpotential(self, x):
        return self.o.z(self.o.dot(self.cvec, self.deriv(x)))

    def materialize(self, x):
        return [self.o.z(v) for v in x]

    # ---- crossing search (DESIGN.md section 5)
    def _u_at(self, x, D):
        """(u(D) - theta, u'(D)) from the interval-start state x."""
        return self._u_from(x, *self.phi_at(D))

    def _u_from(self, x, Phi, phi):
        """(u(D) - theta, u'(D)) given Phi(D), phi(D) (the shared-parameter loop computes them
        once per event; the scalar path above prints the very same ops)."""
        o = self.o
        xD = o.affine(Phi, x, phi)
        yD = o.matvec(Phi, self.deriv(x))
        return o.sub(o.z(o.dot(self.cvec, xD)), self.theta), o.z(o.dot(self.cvec, yD))

    @contextlib.contextmanager
    def using(self, ops: Ops):
        """Print the formulas with other Ops (mlir_ops.VOps: a vectorised loop body)."""
        saved = self.o
        self.o = ops
        try:
            yield ops
        finally:
            self.o = saved

    def _g_at(self, k, x, D):
        """(l_k y(D), (l_k A) y(D)) with y(D) = Phi(D) (A x + a0)."""
        o = self.o
        Phi, _ = self.phi_at(D)
        yD = o.matvec(Phi, self.deriv(x))
        return o.z(o.dot(self.L[k], yD)), o.z(o.dot(self.LA[k], yD))

    def no_cross(self, x):
        """The IR's cheap exact test (True: u provably stays below theta on the interval)."""
        o = self.o
        if not self.nocross:
            return o.i1(False)
        safe = o.i1(True)
        for row, off in self.nocross:
            val = o.z(o.add(o.dot(row, x), off))
            safe = o.and_(safe, o.lt(val, self.theta))
        return safe

    def isolate(self, x, H, t0):
        """First D in (0, H] with u(D) >= theta (u(0) < theta assumed), +inf if none: zeros of
        l_{m-1} y, ..., l_0 y = u' are isolated from the bottom of the chain up (each level is
        monotone between the zeros of the next), then the first monotone piece of u that
        reaches theta is solved."""
        o = self.o
        ft = o.ft
        zero = o.c(0.0)
        one = o.c(1.0)
        bps = [zero, H]
        for k in range(len(self.rows) - 2, -1, -1):
            new = [zero]
            for a, b in zip(bps[:-1], bps[1:]):
                ga = self._g_at(k, x, a)[0]
                gb = self._g_at(k, x, b)[0]
                # an exact 0 at b (exp underflow over a long gap) may hide a sign change:
                # solving for it costs at most a spare breakpoint, missing it a spike
                change = o.or_(arith.cmpi(arith.CmpIPredicate.ne, o.lt(ga, zero), o.lt(gb, zero)),
                               o.and_(o.gt(ga, zero), arith.cmpf(arith.CmpFPredicate.OEQ, gb, zero)))
                change = o.and_(change, o.gt(b, a))
                sign = o.sel(o.lt(ga, zero), one, o.c(-1.0))
                r = o.if_(change,
                          lambda a=a, b=b, sign=sign, k=k: [solve(o, lambda D: self._g_at(k, x, D), a, b, sign,
                                                                  zero, zero_is_past=True)],
                          lambda b=b: [b], [ft])[0]
                new.append(r)
            new.append(H)
            bps = new
        found = o.i1(False)
        sa, sb = zero, zero
        fa = o.sub(self.potential(x), self.theta)  # u(0) - theta (Phi(0) = I, phi(0) = 0)
        fsa, fsb = fa, zero
        for a, b in zip(bps[:-1], bps[1:]):
            fb = self._u_at(x, b)[0]
            take = o.and_(o.not_(found), o.and_(o.ge(fb, zero), o.gt(b, a)))
            sa, sb = o.sel(take, a, sa), o.sel(take, b, sb)
            fsa, fsb = o.sel(take, fa, fsa), o.sel(take, fb, fsb)
            found = o.or_(found, take)
            fa = fb
        # the secant of u on the bracket (u(sa) < theta <= u(sb)) as the first iterate: on the
        # short intervals between events u is nearly linear there, and Newton from it needs about
        # two fewer steps (each one Phi(D)) than from the midpoint; NaN or outside: the midpoint
        sec = arith.addf(sa, arith.mulf(arith.subf(sb, sa), arith.divf(fsa, arith.subf(fsa, fsb))))
        mid = arith.mulf(o.c(0.5), arith.addf(sa, sb))
        start = o.sel(o.and_(o.ge(sec, sa), o.le(sec, sb)), sec, mid)
        return o.if_(found, lambda: [solve(o, lambda D: self._u_at(x, D), sa, sb, one, t0, start=start)],
                     lambda: [o.c(INF)], [ft])[0]

    def first_crossing(self, x, lo, hi, t):
        """First D in [lo, hi] with u >= theta, from the state x at absolute time t (threshold
        disabled before lo: refractoriness); +inf if none. D == lo when u(lo) >= theta."""
        o = self.o
        ft = o.ft
        x = self.materialize(x)
        pos = o.gt(lo, o.c(0.0))
        xl = o.if_(pos, lambda: self.materialize(self.propagate(x, lo)), lambda: x, [ft] * self.d)
        imm = o.ge(self.potential(xl), self.theta)
        H = arith.subf(hi, lo)
        easy = o.or_(self.no_cross(xl), o.le(H, o.c(0.0)))

        def hard():
            return [arith.addf(lo, self.isolate(xl, H, arith.addf(t, lo)))]

        def check():
            # chains of length <= 2: u has at most one interior extremum, which is a maximum
            # only if u' goes from + to -; without one, u(H) < theta rules a crossing out
            return o.if_(self.quick_no_cross(xl, H), lambda: [o.c(INF)], hard, [ft])

        rest = o.if_(easy, lambda: [o.c(INF)], check if len(self.rows) <= 2 else hard, [ft])[0]
        return o.sel(imm, lo, rest)

    def quick_no_cross(self, x, H, PP=None):
        """Exact for chains of length <= 2: u(H) < theta and no interior maximum of u.
        PP: (Phi(H), phi(H)) if already computed."""
        o = self.o
        fH, gH = self._u_at(x, H) if PP is None else self._u_from(x, *PP)
        below = o.lt(fH, o.c(0.0))
        if len(self.rows) == 1:  # u' has one sign: u monotone
            return below
        g0 = o.z(o.dot(self.cvec, self.deriv(x)))
        # u'(H) <= 0, not < 0: over a long gap u'(H) underflows to 0 after the peak
        peak = o.and_(o.gt(g0, o.c(0.0)), o.le(gH, o.c(0.0)))
        return o.and_(below, o.not_(peak))


# ----------------------------------------------------------------------------- module assembly


def _scalar_func(name, nin, nout, ft, body):
    fn = func.FuncOp(name, ir.FunctionType.get([ft] * nin, [ft] * nout))
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        func.ReturnOp(list(body(list(blk.arguments))))
    return fn


def build_functions(em: NeuronEmitter):
    """The standalone scalar functions (argument order: documented per function)."""
    nir, o, d = em.ir, em.o, em.d
    ft = o.ft
    npar = len(em.pnames)

    def with_params(args):
        em.setup(dict(zip(em.pnames, args[-npar:] if npar else [])))

    # propagate(D, x..., params...) -> x(D)...
    def f_prop(a):
        with_params(a)
        return em.materialize(em.propagate(a[1:1 + d], a[0]))

    _scalar_func("propagate", 1 + d + npar, d, ft, f_prop)
    for port in nir.ports:
        def f_jump(a, port=port):
            with_params(a)
            return em.materialize(em.jump(a[1:1 + d], a[0], port))

        _scalar_func(f"jump_{port}", 1 + d + npar, d, ft, f_jump)

    def f_reset(a):
        with_params(a)
        return em.materialize(em.reset(a[:d]))

    _scalar_func("reset", d + npar, d, ft, f_reset)

    def f_pot(a):
        with_params(a)
        return [em.potential(a[:d])]

    _scalar_func("potential", d + npar, 1, ft, f_pot)

    def f_dpot(a):
        with_params(a)
        return [em.dpotential(a[:d])]

    _scalar_func("dpotential", d + npar, 1, ft, f_dpot)

    # combine(M2 nz..., b2..., M1 nz..., b1...) -> (M2 M1) nz..., M2 b1 + b2: affine composition
    # over the structural nonzeros of Phi (lower triangular: the zeros are never computed)
    nz = [(i, j) for i in range(d) for j in range(d) if nir.Phi[i, j] != 0]
    nnz = len(nz)

    def f_comb(a):
        def unpack(vals):
            M = [[None] * d for _ in range(d)]
            for (i, j), v in zip(nz, vals[:nnz]):
                M[i][j] = v
            return M, vals[nnz:nnz + d]

        M2, b2 = unpack(a[:nnz + d])
        M1, b1 = unpack(a[nnz + d:])
        M = [[o.dot(M2[i], [M1[k][j] for k in range(d)]) for j in range(d)] for i in range(d)]
        b = [o.add(x, y) for x, y in zip(o.matvec(M2, b1), b2)]
        return [o.z(M[i][j]) for i, j in nz] + em.materialize(b)

    _scalar_func("combine", 2 * (nnz + d), nnz + d, ft, f_comb)
    if not em.spiking:
        return

    # crossing(lo, hi, t, x..., params...) -> first D in [lo, hi] with u >= theta, or +inf
    def f_cross(a):
        with_params(a)
        return [em.first_crossing(a[3:3 + d], a[0], a[1], a[2])]

    _scalar_func("crossing", 3 + d + npar, 1, ft, f_cross)

    # spike_time(a, b, t, x..., params...) -> the root of u = theta on a bracket [a, b] where
    # u - theta changes sign upwards and is monotone
    def f_st(a):
        with_params(a)
        x = em.materialize(a[3:3 + d])
        return [solve(o, lambda D: em._u_at(x, D), a[0], a[1], o.c(1.0), a[2])]

    _scalar_func("spike_time", 3 + d + npar, 1, ft, f_st)

    # implicit function theorem at a spike D* (u(D*) = theta): with u' = du/dD at D*,
    # dD*/dx0 = -c^T Phi(D*) / u', dD*/dtheta = 1 / u', dD*/dp = -(du/dp - dtheta/dp) / u'
    def ift_setup(a):
        with_params(a)
        x = em.materialize(a[1:1 + d])
        _, up = em._u_at(x, a[0])
        return x, up

    def f_dx(a):
        x, up = ift_setup(a)
        Phi, _ = em.phi_at(a[0])
        row = [o.dot(em.cvec, [Phi[i][j] for i in range(d)]) for j in range(d)]
        return [arith.negf(arith.divf(o.z(r), up)) for r in row]

    _scalar_func("dtstar_dx", 1 + d + npar, d, ft, f_dx)

    def f_dth(a):
        _, up = ift_setup(a)
        return [arith.divf(o.c(1.0), up)]

    _scalar_func("dtstar_dtheta", 1 + d + npar, 1, ft, f_dth)

    # du/dp printed from sympy derivatives of c^T (Phi x + phi) - theta (symbols X0.. for x)
    X = sympy.Matrix(sympy.symbols(f"X0:{d}", real=True))
    u_sym = (nir.c.T * (nir.Phi * X + nir.phi))[0, 0] - nir.theta
    grads = [sympy.diff(u_sym, p.symbol) for p in nir.params]

    def f_dp(a):
        x, up = ift_setup(a)
        env = dict(em.P.env)
        env[DT.name] = a[0]
        env.update({f"X{i}": x[i] for i in range(d)})
        pr = ExprPrinter(o, env)
        return [arith.negf(arith.divf(o.z(pr(g)), up)) for g in grads]

    if npar:
        _scalar_func("dtstar_dparams", 1 + d + npar, npar, ft, f_dp)


# ----------------------------------------------------------------------------- the event loop


def _memref(rank, et):
    dyn = ir.ShapedType.get_dynamic_size()
    dso = ir.ShapedType.get_dynamic_stride_or_offset()
    return ir.MemRefType.get([dyn] * rank, et, layout=ir.StridedLayoutAttr.get(dso, [dso] * rank))


def pmap_types(port) -> list:
    """The trailing pmap[C] i64 argument of a multi-port loop (port: a tuple of names)."""
    return [_memref(1, ir.IntegerType.get_signless(64))] if isinstance(port, tuple) else []


LAYER_ARGS = ("times[B,n]", "chan[B,n] i64", "order[B,N,n] i64", "weight[B,C,N]", "delays[C,N]",
              "nvalid[B] i64", "horizon[B,N]", "params...[N]", "out[B,N,S]", "counts[B,N] i64",
              "over[B,N] i64", "port index (compile time)")


def build_layer(em: NeuronEmitter, port: Optional[str] = None, name: str = "layer"):
    """func @layer(times, chan, order, weight, delays, nvalid, horizon, p_1..p_P, out, counts,
    over): for every sample b and neuron j, events order[b, j, :nvalid[b]] (arrival time
    times[b, e] + delays[chan[b, e], j], weight weight[b, chan, j]) in time order, then the
    horizon; exact spikes recorded in out[b, j, :S]; counts and overflow flags written.
    Broadcast dimensions are passed with stride 0 (shared order, weight, params, no delays)."""
    o = em.o
    ft = o.ft
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    d = em.d
    npar = len(em.pnames)
    types = ([_memref(2, ft), _memref(2, i64), _memref(3, i64), _memref(3, ft), _memref(2, ft),
              _memref(1, i64), _memref(2, ft)] + [_memref(1, ft)] * npar
             + [_memref(3, ft), _memref(2, i64), _memref(2, i64)] + pmap_types(port))
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = em.take_pmap(port, list(blk.arguments))
        times, chan, order, weight, delays, nvalid, horizon = a[:7]
        pmem = a[7:7 + npar]
        out, counts, over = a[7 + npar:]
        c0, c1 = o.ci(0), o.ci(1)
        nB = memref.dim(order, c0)
        nN = memref.dim(order, c1)
        nS = memref.dim(out, o.ci(2))
        S64 = arith.index_cast(i64, nS)
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            lj = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(lj.body):
                j = lj.induction_variable
                em.setup({n: memref.load(m, [j]) for n, m in zip(em.pnames, pmem)})
                res = lane_forward(em, b, j, nv, times, chan, order, weight, delays, horizon, out,
                                   S64, port)
                memref.store(res[d + 2], counts, [b, j])
                memref.store(res[d + 3], over, [b, j])
                scf.yield_([])
            scf.yield_([])
        func.ReturnOp([])
    return fn


def lane_forward(em: NeuronEmitter, b, j, nv, times, chan, order, weight, delays, horizon, out,
                 S64, port: Optional[str] = None, tape=None):
    """The exact event loop of one sample b and neuron j (em.setup already done for j):
    returns the final (x..., t, ref_end, count, over). `tape(aux)`, if given, returns a
    recorder that _advance calls once per step (the adjoint loop of mlir/adjoint.py replays
    this very code with a tape, so its decisions are those of the forward bit for bit)."""
    o = em.o
    idx = ir.IndexType.get()
    i64 = ir.IntegerType.get_signless(64)
    d = em.d
    c0, c1 = o.ci(0), o.ci(1)
    zero64 = arith.constant(i64, 0)
    H = memref.load(horizon, [b, j])
    x0 = em.materialize(em.init)
    inits = x0 + [o.c(0.0), o.c(-INF), zero64, zero64]
    lk = scf.ForOp(c0, arith.addi(nv, c1), c1, inits)
    with ir.InsertionPoint(lk.body):
        k = lk.induction_variable
        st = list(lk.inner_iter_args)
        last = arith.cmpi(arith.CmpIPredicate.uge, k, nv)
        kk = arith.select(last, arith.subi(nv, c1), k)
        kk = arith.select(arith.cmpi(arith.CmpIPredicate.eq, nv, c0), c0, kk)
        e64 = memref.load(order, [b, j, kk])
        e = arith.index_cast(idx, e64)
        ch = arith.index_cast(idx, memref.load(chan, [b, e]))
        em.select_port(ch)
        tk = arith.addf(memref.load(times, [b, e]), memref.load(delays, [ch, j]))
        wk = memref.load(weight, [b, ch, j])
        beyond = o.or_(last, o.not_(o.le(tk, H)))  # closed [0, t_end]: tk == H applies
        T = o.sel(beyond, H, tk)
        w = o.sel(beyond, o.c(0.0), wk)
        rec = None if tape is None else tape(arith.select(beyond, arith.constant(i64, -1), e64))
        st = _advance(em, st, T, b, j, out, S64, rec, at_hz=last)
        x = em.materialize(em.jump(st[:d], w, port))
        scf.yield_(x + st[d:])
    return list(lk.results)


def _advance(em: NeuronEmitter, st, T, b, j, out, S64, tape=None, at_hz=None, xrec=None, erec=None):
    """Simulate (x..., t, ref_end, count, over) to time T, spiking on the way (scf.while: one
    iteration per spike in the interval, plus one). at_hz (i1): T is the virtual horizon event,
    where a refractory period ending exactly at T is still tested (the run covers [0, t_end];
    elsewhere the arrival at T comes first and the next interval tests it). xrec / erec =
    (memref, k): record each spike's pre-reset state / its interval k (the event-outer adjoint)."""
    o = em.o
    ft = o.ft
    d = em.d
    i64 = ir.IntegerType.get_signless(64)
    i1 = ir.IntegerType.get_signless(1)
    types = [ft] * d + [ft, ft, i64, i64, i1]
    w = scf.WhileOp(types, list(st) + [o.i1(False)])
    before = w.before.blocks.append(*types)
    with ir.InsertionPoint(before):
        args = list(before.arguments)
        scf.condition(o.not_(args[-1]), args)
    after = w.after.blocks.append(*types)
    with ir.InsertionPoint(after):
        args = list(after.arguments)
        x, t, ref, cnt, ov = args[:d], args[d], args[d + 1], args[d + 2], args[d + 3]
        lo = o.fmax(arith.subf(ref, t), o.c(0.0))
        hi = arith.subf(T, t)
        # Phi(hi) once: the propagation without a crossing needs it, and so do the quick test and
        # the isolation's end point (H = hi - 0 when not refractory); the caller's hint (the
        # event's Phi) still serves when hi is the event's gap
        with em.reuse_phi(hi, *em.phi_at(hi)):
            # the refractory period covers the rest of the interval: no threshold to test
            skip = o.and_(o.ge(lo, hi), o.gt(lo, o.c(0.0)))
            if at_hz is not None:
                skip = o.and_(skip, o.not_(o.and_(at_hz, o.le(lo, hi))))
            Dc = o.if_(skip, lambda: [o.c(INF)], lambda: [em.first_crossing(x, lo, hi, t)], [ft])[0]
            found = o.le(Dc, hi)
            Du = o.sel(found, Dc, hi)
            xn = em.materialize(em.propagate(x, Du))
        xr = em.materialize(em.reset(xn))
        ts = arith.addf(t, Dc)
        room = arith.cmpi(arith.CmpIPredicate.slt, cnt, S64)
        rec = o.and_(found, room)

        def store():
            ci = arith.index_cast(ir.IndexType.get(), cnt)
            memref.store(ts, out, [b, j, ci])
            if xrec is not None:  # the state at the crossing, before the reset (the event-outer adjoint)
                for q in range(d):
                    memref.store(xn[q], xrec, [b, j, ci, o.ci(q)])
            if erec is not None:
                memref.store(arith.index_cast(i64, erec[1]), erec[0], [b, j, ci])

        if out is not None:  # None: a replay that only needs the decisions (mlir_adjoint)
            o.if_void(rec, store)
        if tape is not None:
            tape(x, t, lo, hi, Dc, found, rec, cnt)
        dead = o.and_(found, o.not_(room))
        x2 = [o.sel(found, r, n) for r, n in zip(xr, xn)]
        t2 = o.sel(found, ts, T)
        tr = o.z(em.t_ref)
        ref2 = o.sel(found, o.sel(dead, o.c(INF), arith.addf(ts, tr)), ref)
        cnt2 = o.sel(rec, arith.addi(cnt, arith.constant(i64, 1)), cnt)
        ov2 = o.sel(dead, arith.constant(i64, 1), ov)
        scf.yield_(x2 + [t2, ref2, cnt2, ov2, o.not_(found)])
    return list(w.results)[:-1]


# ----------------------------------------------------------------------------- entry points

CLEANUP = "builtin.module(canonicalize,cse)"


def build_module(nir: NeuronIR, dtype: str = "f64", with_layer: bool = True,
                 port: Optional[str] = None, scalar_shared: bool = False,
                 lanes: Optional[int] = None) -> ir.Module:
    """The module in a fresh context (caller keeps `module.context` alive). `layer_shared` is
    the vectorised event-outer loop (mlir/shared.py, `lanes` per vector op, default
    mlir_shared.LANES[dtype]); with
    scalar_shared=True the module also holds `layer_shared_scalar`, the earlier scalar
    formulation of the same loop (kept for bench/cpu_forward.py and the equality tests)."""
    from spikescan.compiler.backends.mlir.shared import build_layer_shared_vec

    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        float_type(dtype)  # validates dtype
        em = NeuronEmitter(nir, dtype)
        m = ir.Module.create()
        with ir.InsertionPoint(m.body):
            add_helpers(em.o)
            build_functions(em)
            if with_layer and em.spiking:
                build_layer(em, port=port)
                build_layer_shared_vec(em, port=port, lanes=lanes)
                if scalar_shared and not isinstance(port, tuple):
                    build_layer_shared_scalar(em, port=port, name="layer_shared_scalar")
        if not m.operation.verify():
            raise RuntimeError(f"{nir.name}: emitted MLIR does not verify")
        passmanager.PassManager.parse(CLEANUP).run(m.operation)
    return m


def emit_module(nir: NeuronIR, dtype: str = "f64") -> str:
    """One module per neuron type, canonicalized and CSE'd, as text (parses back and verifies)."""
    return str(build_module(nir, dtype))


def _dense(rank, et):
    dyn = ir.ShapedType.get_dynamic_size()
    return ir.MemRefType.get([dyn] * rank, et)


def shared_arrival(em: NeuronEmitter, k, nv, b, order, chan, times, H, t_prev):
    """Event k of sample b in the event-outer loops (one shared arrival order): its channel,
    time T (the horizon H for k = nv or an arrival at/after H), the gap D from t_prev, the
    weight scale (0 at the horizon) and Phi(D), phi(D), computed once for the whole layer."""
    o = em.o
    idx = ir.IndexType.get()
    c0, c1 = o.ci(0), o.ci(1)
    last = arith.cmpi(arith.CmpIPredicate.uge, k, nv)
    kk = arith.select(last, arith.subi(nv, c1), k)
    kk = arith.select(arith.cmpi(arith.CmpIPredicate.eq, nv, c0), c0, kk)
    e = arith.index_cast(idx, memref.load(order, [b, kk]))
    ch = arith.index_cast(idx, memref.load(chan, [b, e]))
    em.select_port(ch)
    tk = memref.load(times, [b, e])
    beyond = o.or_(last, o.not_(o.le(tk, H)))  # closed [0, t_end]: tk == H applies
    T = o.sel(beyond, H, tk)
    D = arith.subf(T, t_prev)
    wscale = o.sel(beyond, o.c(0.0), o.c(1.0))
    Phi, phi = em.phi_at(D)
    return ch, T, D, wscale, Phi, phi


def init_shared_lanes(em: NeuronEmitter, x0, nN, xs, refs, ints) -> None:
    """Start of a sample in the event-outer loops: every neuron in the initial state, no
    refractory period, no spike (xs [d, N], refs [N], ints [2, N] = counts, overflow)."""
    o = em.o
    c0, c1 = o.ci(0), o.ci(1)
    zero64 = arith.constant(ir.IntegerType.get_signless(64), 0)
    li = scf.ForOp(c0, nN, c1)
    with ir.InsertionPoint(li.body):
        j = li.induction_variable
        for q in range(em.d):
            memref.store(x0[q], xs, [o.ci(q), j])
        memref.store(o.c(-INF), refs, [j])
        memref.store(zero64, ints, [c0, j])
        memref.store(zero64, ints, [c1, j])
        scf.yield_([])


def build_layer_shared_scalar(em: NeuronEmitter, port: Optional[str] = None,
                              name: str = "layer_shared_scalar"):
    """The scalar formulation of mlir_shared.build_layer_shared_vec (kept as its reference and
    the "old" loop of bench/cpu_forward.py; LLVM vectorises its pass 1 on its own, but only the
    cheap no-crossing test runs there, so every neuron-event that test flags takes the exact
    path). Event-outer variant of `layer` for a layer without delays whose parameters are shared
    (DESIGN.md section 9): per event, Phi(D) is computed once for the whole layer; then a
    branch-free pass over the neurons (contiguous state, so LLVM can vectorise it) advances every
    neuron that passes the cheap no-crossing test and is not refractory, and flags the others;
    only if some neuron was flagged, a second pass runs the exact per-neuron path of `layer`
    on them (same formulas, same results).

    func @layer_shared(times[B,n], chan[B,n], order[B,n], weight[Bw,C,N] (dense; Bw = 1 or B),
    nvalid[B], horizon[B], p_1..p_P (element 0 used), out[B,N,S], counts[B,N], over[B,N],
    xs[d,N] (dense scratch state), refs[N] (scratch refractory ends), ints[2,N] (scratch
    count/over), flags[N] i8 (scratch))."""
    o = em.o
    ft = o.ft
    i64 = ir.IntegerType.get_signless(64)
    i8 = ir.IntegerType.get_signless(8)
    idx = ir.IndexType.get()
    d = em.d
    npar = len(em.pnames)
    types = ([_memref(2, ft), _memref(2, i64), _memref(2, i64), _dense(3, ft), _memref(1, i64),
              _memref(1, ft)] + [_memref(1, ft)] * npar
             + [_memref(3, ft), _memref(2, i64), _memref(2, i64), _dense(2, ft), _dense(1, ft),
                _dense(2, i64), _dense(1, i8)])
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        times, chan, order, weight, nvalid, horizon = a[:6]
        pmem = a[6:6 + npar]
        out, counts, over, xs, refs, ints, flags = a[6 + npar:]
        c0, c1 = o.ci(0), o.ci(1)
        nB = memref.dim(out, c0)
        nN = memref.dim(out, c1)
        S64 = arith.index_cast(i64, memref.dim(out, o.ci(2)))
        wb = arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(weight, c0), c1)  # per-sample weights
        em.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, pmem)})
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            bw = arith.select(wb, b, c0)
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            H = memref.load(horizon, [b])
            x0 = em.materialize(em.init)
            init_shared_lanes(em, x0, nN, xs, refs, ints)
            lk = scf.ForOp(c0, arith.addi(nv, c1), c1, [o.c(0.0)])
            with ir.InsertionPoint(lk.body):
                k = lk.induction_variable
                t_prev = lk.inner_iter_args[0]
                ch, T, D, wscale, Phi, phi = shared_arrival(em, k, nv, b, order, chan, times, H, t_prev)
                # pass 1: branch-free affine update of the provably quiet neurons
                lj = scf.ForOp(c0, nN, c1, [o.i1(False)])
                with ir.InsertionPoint(lj.body):
                    j = lj.induction_variable
                    x = [memref.load(xs, [o.ci(q), j]) for q in range(d)]
                    ref = memref.load(refs, [j])
                    safe = o.and_(em.no_cross(x), o.le(ref, t_prev))
                    w = arith.mulf(wscale, memref.load(weight, [bw, ch, j]))
                    xn = o.affine(Phi, x, phi)
                    xn = em.materialize(em.jump(xn, w, port))
                    for q in range(d):
                        memref.store(o.sel(safe, xn[q], x[q]), xs, [o.ci(q), j])
                    memref.store(arith.extui(i8, o.not_(safe)), flags, [j])
                    scf.yield_([o.or_(lj.inner_iter_args[0], o.not_(safe))])
                anyflag = lj.results[0]

                # pass 2 (rare): the exact per-neuron path for the flagged neurons
                def fixup():
                    lf = scf.ForOp(c0, nN, c1)
                    with ir.InsertionPoint(lf.body):
                        j = lf.induction_variable
                        flagged = arith.cmpi(arith.CmpIPredicate.ne, memref.load(flags, [j]),
                                             arith.constant(i8, 0))

                        def slow():
                            x = [memref.load(xs, [o.ci(q), j]) for q in range(d)]
                            ref = memref.load(refs, [j])
                            cnt = memref.load(ints, [c0, j])
                            ov = memref.load(ints, [c1, j])
                            st = _advance(em, x + [t_prev, ref, cnt, ov], T, b, j, out, S64,
                                             at_hz=arith.cmpi(arith.CmpIPredicate.uge, k, nv))
                            memref.store(st[d + 1], refs, [j])
                            memref.store(st[d + 2], ints, [c0, j])
                            memref.store(st[d + 3], ints, [c1, j])
                            w = arith.mulf(wscale, memref.load(weight, [bw, ch, j]))
                            xj = em.materialize(em.jump(st[:d], w, port))
                            for q in range(d):
                                memref.store(xj[q], xs, [o.ci(q), j])

                        o.if_void(flagged, slow)
                        scf.yield_([])

                o.if_void(anyflag, fixup)
                scf.yield_([T])
            lo = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(lo.body):
                j = lo.induction_variable
                memref.store(memref.load(ints, [c0, j]), counts, [b, j])
                memref.store(memref.load(ints, [c1, j]), over, [b, j])
                scf.yield_([])
            scf.yield_([])
        func.ReturnOp([])
    return fn
