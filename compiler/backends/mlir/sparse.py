"""MLIR emission of the event-driven sparse-network engine (docs/sparse.md, SparseProp's idea).

Per neuron i the engine keeps a 64-byte record S[i] (record_layout: its state x at its last
update time tl, the end of its refractory period, its layer and its position in the heap) and
one entry (key, tag) of a 4-ary min-heap H ordered by (key, tag): the key is the time of its next
threshold crossing, the tag its index (ties fire in index order). A neuron that receives no input
follows its deterministic trajectory, so its next crossing never changes: a spike of j only
touches j itself and its K targets. Per spike (func @sparse_run, one iteration of an scf.while):

    j, ts = top of the heap; record (ts, j)
    x[j] <- reset(Phi(ts - tl[j]) x[j] + phi); tl[j] = ts; ref[j] = ts + t_ref; re-solve j
    for each connection c whose source holds j, for each target i in CSR row j of c:
        x[i] <- Phi(ts - tl[i]) x[i] + phi + B_port w;  tl[i] = ts
        key[i] = ts + first crossing of x[i] on [max(ref[i] - ts, 0), ...] (+inf if none)
        sift i up or down the heap (O(log N)); the records and heap entries of the next
        targets are prefetched

Untouched neurons are never advanced (the lazy update of a global-time representation), so a
spike costs O(K log N). Every formula is printed by mlir_emit.NeuronEmitter from the NeuronIR
(propagator, jumps, reset, the exact crossing search). For neurons with one state variable (LIF
with a constant drive: x -> x_inf + (x - x_inf) exp(a D)) the next crossing has a closed form,
D = log((x_th - x_inf) / (x - x_inf)) / a, derived here from the IR's A, a0, c and theta with
sympy and printed the same way, searched up to t_end. Every other neuron uses
NeuronEmitter.first_crossing on a search window (ctl[2], runtime/sparse/engine.search_window):
without a crossing in it, the heap holds a wake-up at the window's end (tag i + 0.5): the neuron
is then advanced and searched again, exactly; for isolation chains of length <= 2 an exact
quick test over LONG windows lets neurons below threshold sleep longer.

Arguments (memrefs; runtime/sparse/engine.py builds them):
    sparse_run(S[N, W] f64, H[N + 3, 2] f64, params[L, P] f64, cinfo[C, 5] i64 (source offset,
        source size, indptr base, target base, port index), cw[C] f64 (constant weight; NaN:
        per-synapse weights), indptr[*] i64, targets[*] i32, weights[*] f64, out_t[S] f64,
        out_n[S] i32, ctl[3] f64 (t_end, all layers share params, search window),
        cnt[2] i64 (spikes so far, cap))
    sparse_init(S, params, keys[N, 2] f64, ctl): (key, tag) of every neuron from its record;
        the caller builds the heap by sorting them.
"""

from __future__ import annotations

from typing import Optional

import sympy
from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir.emit import CLEANUP, NeuronEmitter, _memref
from spikescan.compiler.backends.mlir.ops import ExprPrinter, add_helpers, float_type

INF = float("inf")
RUN_ARGS = ("S", "H", "params", "cinfo", "cw", "indptr", "targets", "weights", "out_t", "out_n", "ctl", "cnt")
INIT_ARGS = ("S", "params", "keys", "ctl")
_X = sympy.Symbol("__spikescan_x0", real=True)
ARITY = 4  # heap arity: the 4 children of a node fill one 64-byte line (16-byte entries)
HEAP_PAD = ARITY - 1  # slot = position + HEAP_PAD, so that children groups start on a line
LONG = 64.0  # the long horizon of the exact no-crossing test, in search windows (key_of)
PREFETCH = 8  # targets ahead whose records are prefetched (their heap entries: half as far)


def record_layout(d: int) -> dict:
    """Columns of the per-neuron record S[i, :] (f64): the state, the last update time, the end of
    the refractory period, the layer index and the heap position, padded to 8 or 16 entries so
    that one neuron's record is one cache line (d <= 4) or two."""
    cols = {"x": 0, "tl": d, "ref": d + 1, "pop": d + 2, "hpos": d + 3}
    cols["width"] = 8 if d + 4 <= 8 else 16 * ((d + 4 + 15) // 16)
    return cols


def closed_form(nir: NeuronIR) -> Optional[sympy.Expr]:
    """D(x) of the next crossing for a one-variable neuron (dx/dt = a x + b, u = c x), from the
    state x = _X at the interval start, valid when the crossing exists; None otherwise."""
    if nir.d != 1 or nir.c is None or nir.theta is None:
        return None
    a, b, c = nir.A[0, 0], nir.a0[0], nir.c[0]
    if a == 0 or c == 0:
        return None
    x_inf = -b / a
    x_th = nir.theta / c
    return sympy.log((x_th - x_inf) / (_X - x_inf)) / a


class SparseEmitter:
    def __init__(self, nir: NeuronIR, dtype: str = "f64"):
        self.em = NeuronEmitter(nir, dtype)
        self.o = self.em.o
        self.nir = nir
        self.closed = closed_form(nir)
        self.ports = list(nir.ports)
        self.col = record_layout(nir.d)

    # ------------------------------------------------------------------ small helpers
    def i64(self):
        return ir.IntegerType.get_signless(64)

    def idx(self, v):
        return arith.index_cast(ir.IndexType.get(), v)

    def f2idx(self, v):
        """An integer stored as f64 (exact below 2^53) -> index."""
        return self.idx(arith.fptosi(self.i64(), v))

    def idx2f(self, v):
        return arith.sitofp(self.o.ft, arith.index_cast(self.i64(), v))

    def rec(self, A, i, name):
        return memref.load(A.S, [i, self.o.ci(self.col[name])])

    def set_rec(self, A, i, name, v):
        memref.store(v, A.S, [i, self.o.ci(self.col[name])])

    def setup(self, A, i):
        """Print the parameter-dependent constants of neuron i's layer."""
        p = self.f2idx(self.rec(A, i, "pop"))
        self.em.setup({n: memref.load(A.params, [p, self.o.ci(q)]) for q, n in enumerate(self.em.pnames)})

    def load_x(self, A, i):
        return [memref.load(A.S, [i, self.o.ci(q)]) for q in range(self.em.d)]

    def store_x(self, A, i, x):
        for q, v in enumerate(self.em.materialize(x)):
            memref.store(v, A.S, [i, self.o.ci(q)])

    # ------------------------------------------------------------------ next crossing
    def next_offset(self, x, lo, hi, t):
        """First D in [lo, hi] with u >= theta from state x at time t (+inf if none)."""
        o, em = self.o, self.em
        if self.closed is None:
            return em.first_crossing(x, lo, hi, t)
        x = em.materialize(x)
        pos = o.gt(lo, o.c(0.0))
        xl = o.if_(pos, lambda: em.materialize(em.propagate(x, lo)), lambda: x, [o.ft])
        imm = o.ge(em.potential(xl), em.theta)
        env = dict(em.P.env)
        env[_X.name] = xl[0]
        D = ExprPrinter(o, env)(self.closed)
        D = o.c(0.0) if D is None else D
        # no crossing: log of a ratio outside (0, 1] (NaN, or D < 0), or past hi
        ok = o.and_(o.ge(D, o.c(0.0)), o.le(D, arith.subf(hi, lo)))
        rest = o.sel(ok, arith.addf(lo, D), o.c(INF))
        return o.sel(imm, lo, rest)

    def key_of(self, A, x, t, i, t_end, window):
        """(heap key, heap tag) of neuron i from state x at time t: its next crossing (+inf if none)
        and tag = i. The general solver searches [lo, lo + window] only (short brackets; most
        targets are ruled out by the exact quick test on the window alone): without a crossing
        there, the key is a wake-up at the window's end, tagged i + 0.5, when the neuron is
        advanced and searched again. The closed form needs no window."""
        o = self.o
        lo = o.fmax(arith.subf(self.rec(A, i, "ref"), t), o.c(0.0))
        hi = arith.subf(t_end, t)
        live = o.le(lo, hi)
        idf = self.idx2f(i)
        if self.closed is not None:
            D = o.if_(live, lambda: [self.next_offset(x, lo, hi, t)], lambda: [o.c(INF)], [o.ft])[0]
            return arith.addf(t, D), idf
        hw = o.fmin(hi, arith.addf(lo, window))
        hl = hw
        quiet = o.i1(False)
        if len(self.em.rows) <= 2:
            # exact for chains of length <= 2: no crossing on the long horizon LONG x window, so
            # a neuron below threshold wakes up rarely (not once per window) until its next input;
            # the horizon stays short enough that u' at its end does not underflow to 0 (which
            # the quick test reads as a possible peak)
            em = self.em
            hl = o.fmin(hi, arith.addf(lo, arith.mulf(window, o.c(LONG))))

            def never():
                xm = em.materialize(x)
                xl = o.if_(o.gt(lo, o.c(0.0)), lambda: em.materialize(em.propagate(xm, lo)), lambda: xm,
                           [o.ft] * em.d)
                below = o.lt(em.potential(xl), em.theta)
                return [o.and_(below, o.or_(em.no_cross(xl), em.quick_no_cross(xl, arith.subf(hl, lo))))]

            i1 = ir.IntegerType.get_signless(1)
            quiet = o.if_(live, never, lambda: [o.i1(False)], [i1])[0]
        busy = o.and_(live, o.not_(quiet))
        D = o.if_(busy, lambda: [self.next_offset(x, lo, hw, t)], lambda: [o.c(INF)], [o.ft])[0]
        # no crossing in the searched horizon that ends before t_end: wake up at its end
        end = o.sel(quiet, hl, hw)
        wake = o.and_(o.and_(live, o.gt(D, end)), o.lt(end, hi))
        key = o.sel(wake, arith.addf(t, end), arith.addf(t, D))
        return key, o.sel(wake, arith.addf(idf, o.c(0.5)), idf)

    # ------------------------------------------------------------------ heap
    # H[slot, 0] = key (absolute time), H[slot, 1] = neuron index (as f64); slot = pos + HEAP_PAD.
    # Ordered by (key, neuron): ties fire in neuron order. S[i, hpos] is neuron i's position.
    def less(self, ka, ia, kb, ib):
        o = self.o
        eq = arith.cmpf(arith.CmpFPredicate.OEQ, ka, kb)
        return o.or_(o.lt(ka, kb), o.and_(eq, o.lt(ia, ib)))

    def build_update(self):
        """func @heap_update(S, H, neuron f64, key f64): set the neuron's key, restore the heap."""
        o = self.o
        ft = o.ft
        idxt = ir.IndexType.get()
        i1 = ir.IntegerType.get_signless(1)
        types = [_memref(2, ft), _memref(2, ft), ft, ft]
        fn = func.FuncOp("heap_update", ir.FunctionType.get(types, []))
        fn.attributes["sym_visibility"] = ir.StringAttr.get("private")
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            S, H, nid, k = blk.arguments
            A = _Args({"S": S})
            c0, c1 = o.ci(0), o.ci(1)
            pad = o.ci(HEAP_PAD)
            n = arith.subi(memref.dim(H, c0), pad)
            ni = self.f2idx(nid)
            p0 = self.f2idx(self.rec(A, ni, "hpos"))
            old = memref.load(H, [arith.addi(p0, pad), c0])
            up = self.less(k, nid, old, nid)

            def key(p):
                return memref.load(H, [arith.addi(p, pad), c0])

            def ident(p):
                return memref.load(H, [arith.addi(p, pad), c1])

            def move(src, dst):  # the entry at position src moves to the hole at dst
                mid = ident(src)
                memref.store(key(src), H, [arith.addi(dst, pad), c0])
                memref.store(mid, H, [arith.addi(dst, pad), c1])
                self.set_rec(A, self.f2idx(mid), "hpos", self.idx2f(dst))

            def sift_up():
                w = scf.WhileOp([idxt, idxt], [p0])
                before = w.before.blocks.append(idxt)
                with ir.InsertionPoint(before):
                    p = before.arguments[0]
                    pos = arith.cmpi(arith.CmpIPredicate.ugt, p, c0)
                    q = arith.divui(arith.subi(arith.maxui(p, c1), c1), o.ci(ARITY))
                    go = o.if_(pos, lambda: [self.less(k, nid, key(q), ident(q))], lambda: [o.i1(False)], [i1])[0]
                    scf.condition(go, [p, q])
                after = w.after.blocks.append(idxt, idxt)
                with ir.InsertionPoint(after):
                    p, q = after.arguments
                    move(q, p)
                    scf.yield_([q])
                return [w.results[0]]

            def smallest_child(p):
                """(has a child, its smallest child) of position p."""
                first = arith.addi(arith.muli(p, o.ci(ARITY)), c1)
                has = arith.cmpi(arith.CmpIPredicate.ult, first, n)
                c = arith.select(has, first, p)  # never load past the end
                bk, bi = key(c), ident(c)
                for a in range(1, ARITY):
                    ca = arith.addi(first, o.ci(a))
                    ok = arith.cmpi(arith.CmpIPredicate.ult, ca, n)
                    cs = arith.select(ok, ca, c)
                    ka, ia = key(cs), ident(cs)
                    better = o.and_(ok, self.less(ka, ia, bk, bi))
                    c, bk, bi = arith.select(better, cs, c), o.sel(better, ka, bk), o.sel(better, ia, bi)
                return has, c, bk, bi

            def sift_down():
                w = scf.WhileOp([idxt, idxt], [p0])
                before = w.before.blocks.append(idxt)
                with ir.InsertionPoint(before):
                    p = before.arguments[0]
                    has, c, ck, cid = smallest_child(p)
                    go = o.and_(has, self.less(ck, cid, k, nid))
                    scf.condition(go, [p, c])
                after = w.after.blocks.append(idxt, idxt)
                with ir.InsertionPoint(after):
                    p, c = after.arguments
                    move(c, p)
                    scf.yield_([c])
                return [w.results[0]]

            p = o.if_(up, sift_up, sift_down, [idxt])[0]
            memref.store(k, H, [arith.addi(p, pad), c0])
            memref.store(nid, H, [arith.addi(p, pad), c1])
            self.set_rec(A, ni, "hpos", self.idx2f(p))
            func.ReturnOp([])
        return fn

    # ------------------------------------------------------------------ the event loop
    def _types(self, names):
        o = self.o
        ft, i32, i64 = o.ft, ir.IntegerType.get_signless(32), self.i64()
        t = {"S": _memref(2, ft), "H": _memref(2, ft), "params": _memref(2, ft), "cinfo": _memref(2, i64),
             "cw": _memref(1, ft), "indptr": _memref(1, i64), "targets": _memref(1, i32),
             "weights": _memref(1, ft), "out_t": _memref(1, ft), "out_n": _memref(1, i32),
             "ctl": _memref(1, ft), "cnt": _memref(1, i64), "keys": _memref(2, ft)}
        return [t[n] for n in names]

    def build_init(self):
        o = self.o
        fn = func.FuncOp("sparse_init", ir.FunctionType.get(self._types(INIT_ARGS), []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            A = _Args(dict(zip(INIT_ARGS, blk.arguments)))
            t_end = memref.load(A.ctl, [o.ci(0)])
            n = memref.dim(A.S, o.ci(0))
            loop = scf.ForOp(o.ci(0), n, o.ci(1))
            with ir.InsertionPoint(loop.body):
                i = loop.induction_variable
                self.setup(A, i)
                t = self.rec(A, i, "tl")
                key, tag = self.key_of(A, self.load_x(A, i), t, i, t_end, memref.load(A.ctl, [o.ci(2)]))
                memref.store(key, A.keys, [i, o.ci(0)])
                memref.store(tag, A.keys, [i, o.ci(1)])
                scf.yield_([])
            func.ReturnOp([])
        return fn

    def deliver_row(self, A, update_fn, a, b, wc, per_syn, port, ts, t_end, window, shared: bool):
        """Targets a..b-1 of one CSR row: advance, jump, re-solve, move in the heap."""
        o, em = self.o, self.em
        ft = o.ft
        i64 = self.i64()
        nsyn = memref.dim(A.targets, o.ci(0))
        loop = scf.ForOp(a, b, o.ci(1))
        with ir.InsertionPoint(loop.body):
            s = loop.induction_variable
            # prefetch: the record of the target PREFETCH ahead, the heap entry of the one half
            # as far ahead (its record, prefetched earlier, tells where the entry is)
            far = arith.minui(arith.addi(s, o.ci(PREFETCH)), arith.subi(nsyn, o.ci(1)))
            memref.prefetch(A.S, [self.idx(memref.load(A.targets, [far])), o.ci(0)], False, 3, True)
            near = arith.minui(arith.addi(s, o.ci(PREFETCH // 2)), arith.subi(nsyn, o.ci(1)))
            hp = self.f2idx(self.rec(A, self.idx(memref.load(A.targets, [near])), "hpos"))
            memref.prefetch(A.H, [arith.addi(hp, o.ci(HEAP_PAD)), o.ci(0)], True, 3, True)
            i = self.idx(memref.load(A.targets, [s]))
            wt = o.if_(per_syn, lambda: [memref.load(A.weights, [s])], lambda: [wc], [ft])[0]
            if not shared:
                self.setup(A, i)
            xi = em.materialize(em.propagate(self.load_x(A, i), arith.subf(ts, self.rec(A, i, "tl"))))
            for pi, pname in enumerate(self.ports):
                if len(self.ports) == 1:
                    wq = wt
                else:
                    wq = o.sel(arith.cmpi(arith.CmpIPredicate.eq, port, arith.constant(i64, pi)), wt, o.c(0.0))
                xi = em.materialize(em.jump(xi, wq, pname))
            self.store_x(A, i, xi)
            self.set_rec(A, i, "tl", ts)
            key, tag = self.key_of(A, xi, ts, i, t_end, window)
            func.CallOp(update_fn, [A.S, A.H, tag, key])
            scf.yield_([])

    def build_run(self, update_fn):
        o, em = self.o, self.em
        ft, i64 = o.ft, self.i64()
        i32 = ir.IntegerType.get_signless(32)
        fn = func.FuncOp("sparse_run", ir.FunctionType.get(self._types(RUN_ARGS), []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            A = _Args(dict(zip(RUN_ARGS, blk.arguments)))
            c0, c1 = o.ci(0), o.ci(1)
            top = o.ci(HEAP_PAD)
            t_end = memref.load(A.ctl, [c0])
            shared = o.gt(memref.load(A.ctl, [c1]), o.c(0.0))  # every layer has the same params
            window = memref.load(A.ctl, [o.ci(2)])
            cap = memref.load(A.cnt, [c1])
            nC = memref.dim(A.cinfo, c0)

            w = scf.WhileOp([i64], [memref.load(A.cnt, [c0])])
            before = w.before.blocks.append(i64)
            with ir.InsertionPoint(before):
                s = before.arguments[0]
                ts = memref.load(A.H, [top, c0])
                go = o.and_(o.le(ts, t_end), arith.cmpi(arith.CmpIPredicate.slt, s, cap))
                scf.condition(go, [s])
            after = w.after.blocks.append(i64)
            with ir.InsertionPoint(after):
                s = after.arguments[0]
                ts = memref.load(A.H, [top, c0])
                jf = memref.load(A.H, [top, c1])
                j = self.f2idx(jf)
                wake = arith.cmpf(arith.CmpFPredicate.ONE, jf, self.idx2f(j))

                def wake_up():  # no crossing in the window: advance and search the next one
                    self.setup(A, j)
                    xw = em.materialize(em.propagate(self.load_x(A, j), arith.subf(ts, self.rec(A, j, "tl"))))
                    self.store_x(A, j, xw)
                    self.set_rec(A, j, "tl", ts)
                    key, tag = self.key_of(A, xw, ts, j, t_end, window)
                    func.CallOp(update_fn, [A.S, A.H, tag, key])
                    return [s]

                def spike():
                    self.spike(A, update_fn, s, ts, j, t_end, window, shared, nC)
                    return [arith.addi(s, arith.constant(i64, 1))]

                scf.yield_(o.if_(wake, wake_up, spike, [i64]))
            memref.store(w.results[0], A.cnt, [c0])
            func.ReturnOp([])
        return fn

    def spike(self, A, update_fn, s, ts, j, t_end, window, shared, nC):
        """Record spike s of neuron j at ts, reset j, deliver to its targets."""
        o, em = self.o, self.em
        i32, i64 = ir.IntegerType.get_signless(32), self.i64()
        c0, c1 = o.ci(0), o.ci(1)
        memref.store(ts, A.out_t, [self.idx(s)])
        memref.store(arith.index_cast(i32, j), A.out_n, [self.idx(s)])
        # the spiking neuron: advance to ts, reset, refractory, next crossing
        self.setup(A, j)
        x = em.propagate(self.load_x(A, j), arith.subf(ts, self.rec(A, j, "tl")))
        xr = em.materialize(em.reset(em.materialize(x)))
        self.store_x(A, j, xr)
        self.set_rec(A, j, "tl", ts)
        self.set_rec(A, j, "ref", arith.addf(ts, o.z(em.t_ref)))
        key, tag = self.key_of(A, xr, ts, j, t_end, window)
        func.CallOp(update_fn, [A.S, A.H, tag, key])
        # its targets, connection by connection
        cl = scf.ForOp(c0, nC, c1)
        with ir.InsertionPoint(cl.body):
            c = cl.induction_variable
            src_off, n_src, pbase, tbase, port = [memref.load(A.cinfo, [c, o.ci(q)]) for q in range(5)]
            local = arith.subi(arith.index_cast(i64, j), src_off)
            inside = o.and_(arith.cmpi(arith.CmpIPredicate.sge, local, arith.constant(i64, 0)),
                            arith.cmpi(arith.CmpIPredicate.slt, local, n_src))

            def deliver():
                row = self.idx(arith.addi(pbase, local))
                a = self.idx(arith.addi(memref.load(A.indptr, [row]), tbase))
                b = self.idx(arith.addi(memref.load(A.indptr, [arith.addi(row, c1)]), tbase))
                wc = memref.load(A.cw, [c])
                per_syn = arith.cmpf(arith.CmpFPredicate.UNO, wc, wc)

                def hoisted():  # one parameter set: its constants once per spike
                    self.setup(A, j)
                    self.deliver_row(A, update_fn, a, b, wc, per_syn, port, ts, t_end, window, True)
                    return []

                def per_target():
                    self.deliver_row(A, update_fn, a, b, wc, per_syn, port, ts, t_end, window, False)
                    return []

                o.if_(shared, hoisted, per_target, [])
                return None

            o.if_void(inside, deliver)
            scf.yield_([])


class _Args:
    def __init__(self, d):
        self.__dict__.update(d)


def build_sparse_module(nir: NeuronIR, dtype: str = "f64") -> ir.Module:
    """The module (fresh context; the caller keeps module.context alive)."""
    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        float_type(dtype)
        se = SparseEmitter(nir, dtype)
        m = ir.Module.create()
        with ir.InsertionPoint(m.body):
            add_helpers(se.o)
            upd = se.build_update()
            se.build_init()
            se.build_run(upd)
        if not m.operation.verify():
            raise RuntimeError(f"{nir.name}: the emitted sparse engine does not verify")
        passmanager.PassManager.parse(CLEANUP).run(m.operation)
    return m
