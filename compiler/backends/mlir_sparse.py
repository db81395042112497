"""MLIR emission of the event-driven sparse-network engine (docs/sparse.md, SparseProp's idea).

Per neuron i the engine keeps its state x[i, :] at its last update time tl[i], the end of its
refractory period ref[i], and its next threshold crossing (the key of an indexed binary min-heap
ordered by (time, neuron index)). A neuron that receives no input follows its deterministic
trajectory, so its next crossing never changes: a spike of j only touches j itself and its K
targets. Per spike (func @sparse_run, one iteration of an scf.while):

    j, ts = top of the heap; record (ts, j)
    x[j] <- reset(Phi(ts - tl[j]) x[j] + phi); tl[j] = ts; ref[j] = ts + t_ref; re-solve j
    for each connection c whose source holds j, for each target i in CSR row j of c:
        x[i] <- Phi(ts - tl[i]) x[i] + phi + B_port w;  tl[i] = ts
        key[i] = ts + first crossing of x[i] on [max(ref[i] - ts, 0), t_end - ts] (+inf if none)
        sift i up or down the heap (O(log N))

Untouched neurons are never advanced (the lazy update of a global-time representation), so a
spike costs O(K log N). Every formula is printed by mlir_emit.NeuronEmitter from the NeuronIR
(propagator, jumps, reset, the exact crossing search); for neurons with one state variable (LIF
with a constant drive: x -> x_inf + (x - x_inf) exp(a D)) the next crossing has a closed form,
D = log((x_th - x_inf) / (x - x_inf)) / a, derived here from the IR's A, a0, c and theta with
sympy and printed the same way; every other neuron uses NeuronEmitter.first_crossing.

Argument layout (all memrefs, strided; see runtime/sparse/engine.py):
    x[N, d] f64, tl[N] f64, ref[N] f64, pop[N] i32, params[L, P] f64,
    hkey[N] f64, hid[N] i32, hpos[N] i32        (heap by position; hpos: neuron -> position)
    cinfo[C, 5] i64 (src_offset, n_src, indptr_base, target_base, port index), cw[C] f64
    (constant weight, NaN: per-synapse weights), indptr[*] i64, targets[*] i32, weights[*] f64,
    out_t[S] f64, out_n[S] i32, ctl[2] f64 (t_end, unused), cnt[2] i64 (spikes so far, cap)
func @sparse_init(x, tl, ref, pop, params, keys[N], ctl): keys[i] = first crossing of neuron i
from its state at tl[i] (the caller builds the heap by sorting).
"""

from __future__ import annotations

from typing import Optional

import sympy
from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir_emit import CLEANUP, NeuronEmitter, _memref
from spikescan.compiler.backends.mlir_ops import ExprPrinter, add_helpers, float_type

INF = float("inf")
RUN_ARGS = ("x", "tl", "ref", "pop", "params", "hkey", "hid", "hpos", "cinfo", "cw", "indptr",
            "targets", "weights", "out_t", "out_n", "ctl", "cnt")
INIT_ARGS = ("x", "tl", "ref", "pop", "params", "keys", "ctl")
_X = sympy.Symbol("__spikescan_x0", real=True)


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

    # ------------------------------------------------------------------ small helpers
    def i32(self):
        return ir.IntegerType.get_signless(32)

    def i64(self):
        return ir.IntegerType.get_signless(64)

    def idx(self, v):
        return arith.index_cast(ir.IndexType.get(), v)

    def setup(self, A, i):
        """Print the parameter-dependent constants of neuron i's layer."""
        p = self.idx(memref.load(A.pop, [i]))
        self.em.setup({n: memref.load(A.params, [p, self.o.ci(q)]) for q, n in enumerate(self.em.pnames)})

    def load_x(self, A, i):
        return [memref.load(A.x, [i, self.o.ci(q)]) for q in range(self.em.d)]

    def store_x(self, A, i, x):
        for q, v in enumerate(self.em.materialize(x)):
            memref.store(v, A.x, [i, self.o.ci(q)])

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

    def key_of(self, A, x, t, i, t_end):
        """Absolute time of neuron i's next crossing from state x at time t (+inf if none)."""
        o = self.o
        lo = o.fmax(arith.subf(memref.load(A.ref, [i]), t), o.c(0.0))
        hi = arith.subf(t_end, t)
        live = o.le(lo, hi)
        D = o.if_(live, lambda: [self.next_offset(x, lo, hi, t)], lambda: [o.c(INF)], [o.ft])[0]
        return arith.addf(t, D)

    # ------------------------------------------------------------------ heap
    def less(self, ka, ia, kb, ib):
        o = self.o
        eq = arith.cmpf(arith.CmpFPredicate.OEQ, ka, kb)
        return o.or_(o.lt(ka, kb), o.and_(eq, arith.cmpi(arith.CmpIPredicate.slt, ia, ib)))

    def build_update(self):
        """func @heap_update(hkey, hid, hpos, neuron i32, key f64): set the key and restore the heap."""
        o = self.o
        ft, i32 = o.ft, self.i32()
        idxt = ir.IndexType.get()
        types = [_memref(1, ft), _memref(1, i32), _memref(1, i32), i32, ft]
        fn = func.FuncOp("heap_update", ir.FunctionType.get(types, []))
        fn.attributes["sym_visibility"] = ir.StringAttr.get("private")
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            hkey, hid, hpos, nid, k = blk.arguments
            n = memref.dim(hkey, o.ci(0))
            p0 = self.idx(memref.load(hpos, [self.idx(nid)]))
            old = memref.load(hkey, [p0])
            up = self.less(k, nid, old, nid)

            def move(src, dst):  # the element at src moves to the hole at dst
                mid = memref.load(hid, [src])
                memref.store(memref.load(hkey, [src]), hkey, [dst])
                memref.store(mid, hid, [dst])
                memref.store(arith.index_cast(i32, dst), hpos, [self.idx(mid)])

            def sift_up():
                w = scf.WhileOp([idxt], [p0])
                before = w.before.blocks.append(idxt)
                with ir.InsertionPoint(before):
                    p = before.arguments[0]
                    pos = arith.cmpi(arith.CmpIPredicate.ugt, p, o.ci(0))
                    q = arith.divui(arith.subi(arith.maxui(p, o.ci(1)), o.ci(1)), o.ci(2))
                    go = o.if_(pos, lambda: [self.less(k, nid, memref.load(hkey, [q]), memref.load(hid, [q]))],
                               lambda: [o.i1(False)], [ir.IntegerType.get_signless(1)])[0]
                    scf.condition(go, [p])
                after = w.after.blocks.append(idxt)
                with ir.InsertionPoint(after):
                    p = after.arguments[0]
                    q = arith.divui(arith.subi(p, o.ci(1)), o.ci(2))
                    move(q, p)
                    scf.yield_([q])
                return [w.results[0]]

            def smaller_child(p):
                """(has a child, the smaller child) of position p."""
                c1 = arith.addi(arith.muli(p, o.ci(2)), o.ci(1))
                c2 = arith.addi(c1, o.ci(1))
                has = arith.cmpi(arith.CmpIPredicate.ult, c1, n)
                has2 = arith.cmpi(arith.CmpIPredicate.ult, c2, n)
                c1s = arith.select(has, c1, p)  # never load past the end
                c2s = arith.select(has2, c2, c1s)
                right = o.and_(has2, self.less(memref.load(hkey, [c2s]), memref.load(hid, [c2s]),
                                               memref.load(hkey, [c1s]), memref.load(hid, [c1s])))
                return has, arith.select(right, c2s, c1s)

            def sift_down():
                w = scf.WhileOp([idxt, idxt], [p0])
                before = w.before.blocks.append(idxt)
                with ir.InsertionPoint(before):
                    p = before.arguments[0]
                    has, c = smaller_child(p)
                    go = o.and_(has, self.less(memref.load(hkey, [c]), memref.load(hid, [c]), k, nid))
                    scf.condition(go, [p, c])
                after = w.after.blocks.append(idxt, idxt)
                with ir.InsertionPoint(after):
                    p, c = after.arguments
                    move(c, p)
                    scf.yield_([c])
                return [w.results[0]]

            p = o.if_(up, sift_up, sift_down, [idxt])[0]
            memref.store(k, hkey, [p])
            memref.store(nid, hid, [p])
            memref.store(arith.index_cast(i32, p), hpos, [self.idx(nid)])
            func.ReturnOp([])
        return fn

    # ------------------------------------------------------------------ the event loop
    def _types(self, names):
        o = self.o
        ft, i32, i64 = o.ft, self.i32(), self.i64()
        t = {"x": _memref(2, ft), "tl": _memref(1, ft), "ref": _memref(1, ft), "pop": _memref(1, i32),
             "params": _memref(2, ft), "hkey": _memref(1, ft), "hid": _memref(1, i32),
             "hpos": _memref(1, i32), "cinfo": _memref(2, i64), "cw": _memref(1, ft),
             "indptr": _memref(1, i64), "targets": _memref(1, i32), "weights": _memref(1, ft),
             "out_t": _memref(1, ft), "out_n": _memref(1, i32), "ctl": _memref(1, ft),
             "cnt": _memref(1, i64), "keys": _memref(1, ft)}
        return [t[n] for n in names]

    def build_init(self):
        o = self.o
        fn = func.FuncOp("sparse_init", ir.FunctionType.get(self._types(INIT_ARGS), []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            A = _Args(dict(zip(INIT_ARGS, blk.arguments)))
            t_end = memref.load(A.ctl, [o.ci(0)])
            n = memref.dim(A.x, o.ci(0))
            loop = scf.ForOp(o.ci(0), n, o.ci(1))
            with ir.InsertionPoint(loop.body):
                i = loop.induction_variable
                self.setup(A, i)
                t = memref.load(A.tl, [i])
                memref.store(self.key_of(A, self.load_x(A, i), t, i, t_end), A.keys, [i])
                scf.yield_([])
            func.ReturnOp([])
        return fn

    def build_run(self, update_fn):
        o, em = self.o, self.em
        ft, i32, i64 = o.ft, self.i32(), self.i64()
        i1 = ir.IntegerType.get_signless(1)
        fn = func.FuncOp("sparse_run", ir.FunctionType.get(self._types(RUN_ARGS), []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            A = _Args(dict(zip(RUN_ARGS, blk.arguments)))
            c0 = o.ci(0)
            t_end = memref.load(A.ctl, [c0])
            cap = memref.load(A.cnt, [o.ci(1)])
            nC = memref.dim(A.cinfo, c0)
            one64 = arith.constant(i64, 1)

            def heap_update(nid, key):
                func.CallOp(update_fn, [A.hkey, A.hid, A.hpos, nid, key])

            w = scf.WhileOp([i64], [memref.load(A.cnt, [c0])])
            before = w.before.blocks.append(i64)
            with ir.InsertionPoint(before):
                s = before.arguments[0]
                ts = memref.load(A.hkey, [c0])
                go = o.and_(o.le(ts, t_end), arith.cmpi(arith.CmpIPredicate.slt, s, cap))
                scf.condition(go, [s])
            after = w.after.blocks.append(i64)
            with ir.InsertionPoint(after):
                s = after.arguments[0]
                ts = memref.load(A.hkey, [c0])
                jid = memref.load(A.hid, [c0])
                j = self.idx(jid)
                memref.store(ts, A.out_t, [self.idx(s)])
                memref.store(jid, A.out_n, [self.idx(s)])
                # the spiking neuron: advance to ts, reset, refractory, next crossing
                self.setup(A, j)
                x = em.propagate(self.load_x(A, j), arith.subf(ts, memref.load(A.tl, [j])))
                xr = em.materialize(em.reset(em.materialize(x)))
                self.store_x(A, j, xr)
                memref.store(ts, A.tl, [j])
                memref.store(arith.addf(ts, o.z(em.t_ref)), A.ref, [j])
                heap_update(jid, self.key_of(A, xr, ts, j, t_end))
                # its targets, connection by connection
                cl = scf.ForOp(c0, nC, o.ci(1))
                with ir.InsertionPoint(cl.body):
                    c = cl.induction_variable
                    info = [memref.load(A.cinfo, [c, o.ci(q)]) for q in range(5)]
                    src_off, n_src, pbase, tbase, port = info
                    local = arith.subi(arith.index_cast(i64, j), src_off)
                    inside = o.and_(arith.cmpi(arith.CmpIPredicate.sge, local, arith.constant(i64, 0)),
                                    arith.cmpi(arith.CmpIPredicate.slt, local, n_src))

                    def deliver():
                        row = self.idx(arith.addi(pbase, local))
                        a = self.idx(arith.addi(memref.load(A.indptr, [row]), tbase))
                        b = self.idx(arith.addi(memref.load(A.indptr, [arith.addi(row, o.ci(1))]), tbase))
                        wc = memref.load(A.cw, [c])
                        per_syn = arith.cmpf(arith.CmpFPredicate.UNO, wc, wc)
                        tl_ = scf.ForOp(a, b, o.ci(1))
                        with ir.InsertionPoint(tl_.body):
                            sidx = tl_.induction_variable
                            iid = memref.load(A.targets, [sidx])
                            i = self.idx(iid)
                            wt = o.if_(per_syn, lambda: [memref.load(A.weights, [sidx])], lambda: [wc], [ft])[0]
                            self.setup(A, i)
                            xi = em.materialize(em.propagate(self.load_x(A, i),
                                                             arith.subf(ts, memref.load(A.tl, [i]))))
                            for pi, pname in enumerate(self.ports):
                                if len(self.ports) == 1:
                                    wq = wt
                                else:
                                    on = arith.cmpi(arith.CmpIPredicate.eq, port, arith.constant(i64, pi))
                                    wq = o.sel(on, wt, o.c(0.0))
                                xi = em.materialize(em.jump(xi, wq, pname))
                            self.store_x(A, i, xi)
                            memref.store(ts, A.tl, [i])
                            heap_update(iid, self.key_of(A, xi, ts, i, t_end))
                            scf.yield_([])
                        return None

                    o.if_void(inside, deliver)
                    scf.yield_([])
                scf.yield_([arith.addi(s, one64)])
            memref.store(w.results[0], A.cnt, [c0])
            func.ReturnOp([])
        return fn


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
