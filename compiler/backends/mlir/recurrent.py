"""MLIR for a layer with an all-to-all, zero-delay recurrent connection (DESIGN.md sections 5-7):
the exact event loop of runtime/engines/recurrent.py, one sample at a time, with all N neurons'
states in scratch memrefs, and its adjoint.

    build_recurrent_module(ir, dtype="f64", port=None, backward=False, with_params=True)
        -> ir.Module with func @rec_forward (or @rec_backward)

Per sample, each step of the loop does exactly what a step of recurrent.py does for that sample:
T = the time of the pending recurrent events if any, else the earliest next arrival of the live
lanes; every live, non-pending, non-dead, non-refractory neuron that fails the IR's cheap
no-crossing test is solved for its first crossing in [t_cur, T] (NeuronEmitter.first_crossing,
the solver of the sequential-cpu loop); then
  1. if some neuron crosses, the earliest one(s) spike (reset, record, refractory, cap) and
     their recurrent events become pending at t*;
  2. else the lowest pending source j delivers w_rec[j, :] at its spike time to all live lanes;
  3. else every live lane whose next arrival is T takes that arrival (delays added, the
     horizon arrives as a zero-weight event).

Arguments of @rec_forward (memrefs; broadcast dimensions passed with stride 0):
  key[B,N,L] sorted arrival times (+inf padding; the horizon is the last finite entry),
  order[B,N,L] i64 (index into the events, n = the virtual horizon event), chan[B,n+1] i64,
  weight[B,C,N], nvalid[B,N] i64 (finite keys per lane), wrec[N,N], p_1..p_P [N],
  out[B,N,S], counts[B,N] i64, over[B,N] i64, stats[B,2] i64 (tape rows, delivery steps),
  xs[d,N], lf[5,N], li[4,N] i64 (scratch).
@rec_backward takes the same arguments up to p_P, then gout[B,N,S], counts[B,N] i64 (out: the
replayed counts), gtimes[B,n+1], gweight[B,C,N], gdelays[C,N], gwrec[N,N], gparams[N,max(P,1)]
(accumulated into), xs, lf, li, lam[d+3,N] (scratch), tape_i[M,3] i64, tape_f[M,d+2],
snap_f[Ms,N,d+1], snap_m[Ms,N] i8 (tape, sized from the forward's stats).

Tape (backward): one row per spiking lane (kind SPIKE*, lane, rank; interval-start x, t, D) and
one row per delivery step (kind EXT/REC, snapshot row, source j; time), where the snapshot row
holds every lane's pre-delivery state and time and whether it took the delivery. The reverse
walk keeps per-lane adjoints; a recurrent delivery sends each recipient's arrival-time adjoint
to the source's spike time (acc[j]), which the source's spike row then consumes.
"""

from __future__ import annotations

from typing import Optional

from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir.adjoint import (
    SPIKE, SPIKE_NOW, SPIKE_REF, AdjointForms, _print_all, _printer, adjoint_arrival, adjoint_spike)
from spikescan.compiler.backends.mlir.emit import CLEANUP, INF, NeuronEmitter, _dense, _memref
from spikescan.compiler.backends.mlir.ops import add_helpers, float_type

EXT, REC = 4, 5  # tape kinds of delivery steps (spike kinds come from mlir_adjoint)
LF_T, LF_REF, LF_SPK, LF_CAND, LF_D = range(5)  # rows of the float lane scratch lf
LI_PTR, LI_PEND, LI_DEAD, LI_CNT = range(4)  # rows of the integer lane scratch li


def _i64():
    return ir.IntegerType.get_signless(64)


class _Args:
    """The function's memref arguments by name."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Lane:
    """Loads and stores of one lane k's scratch state."""

    def __init__(self, em: NeuronEmitter, A: _Args, k):
        self.em, self.A, self.k = em, A, k
        self.o = em.o

    def ci(self, v):
        return self.o.ci(v)

    def x(self):
        return [memref.load(self.A.xs, [self.ci(q), self.k]) for q in range(self.em.d)]

    def set_x(self, x):
        for q, v in enumerate(x):
            memref.store(v, self.A.xs, [self.ci(q), self.k])

    def f(self, row):
        return memref.load(self.A.lf, [self.ci(row), self.k])

    def set_f(self, row, v):
        memref.store(v, self.A.lf, [self.ci(row), self.k])

    def i(self, row):
        return memref.load(self.A.li, [self.ci(row), self.k])

    def set_i(self, row, v):
        memref.store(v, self.A.li, [self.ci(row), self.k])


def _setup_lane(em: NeuronEmitter, A: _Args, k):
    em.setup({n: memref.load(m, [k]) for n, m in zip(em.pnames, A.pmem)})


def _for(o, n, inits, body):
    """scf.for k in [0, n) with iter args; body(k, *iters) -> new iters (list). Returns results."""
    loop = scf.ForOp(o.ci(0), n, o.ci(1), inits)
    with ir.InsertionPoint(loop.body):
        scf.yield_(list(body(loop.induction_variable, *loop.inner_iter_args)))
    return list(loop.results)


def _live(A: _Args, b, L: _Lane):
    """(ptr, live) of lane k: live while it has arrivals left (the horizon included)."""
    ptr = L.i(LI_PTR)
    return ptr, arith.cmpi(arith.CmpIPredicate.slt, ptr, memref.load(A.nvalid, [b, L.k]))


def lane_candidate(em: NeuronEmitter, A: _Args, k, T, live):
    """Lane k's first crossing time in [t_k, T] (+inf if none or not eligible: not live, dead,
    pending, refractory all interval, or the IR's cheap test rules it out); stored in
    lf[LF_CAND] and its offset D in lf[LF_D]. Returns the candidate time."""
    o = em.o
    ft = o.ft
    inf = o.c(INF)
    z64 = arith.constant(_i64(), 0)
    L = _Lane(em, A, k)
    _setup_lane(em, A, k)
    quiet = o.and_(arith.cmpi(arith.CmpIPredicate.eq, L.i(LI_DEAD), z64),
                   arith.cmpi(arith.CmpIPredicate.eq, L.i(LI_PEND), z64))
    x = L.x()
    tc, ref = L.f(LF_T), L.f(LF_REF)
    lo = o.fmax(arith.subf(ref, tc), o.c(0.0))
    hi = arith.subf(T, tc)
    open_ = o.or_(o.lt(lo, hi), o.le(lo, o.c(0.0)))
    chk = o.and_(o.and_(live, quiet), o.and_(open_, o.not_(em.no_cross(x))))
    D = o.if_(chk, lambda: [em.first_crossing(x, lo, hi, tc)], lambda: [inf], [ft])[0]
    cand = arith.addf(tc, D)
    L.set_f(LF_CAND, cand)
    L.set_f(LF_D, D)
    return cand


def lane_fire(em: NeuronEmitter, A: _Args, b, k, best, added, row, tape=None):
    """Spike step for lane k: if its candidate equals `best`, reset it at t* and record the
    spike (out, tape row), make its recurrent event pending (or mark it dead past the cap).
    Returns [added, row] (i64: pending events added, next tape row)."""
    o = em.o
    i64 = _i64()
    idx = ir.IndexType.get()
    one64 = arith.constant(i64, 1)
    S64 = A.cap
    L = _Lane(em, A, k)

    def go():
        _setup_lane(em, A, k)
        x = L.x()
        tc, ref, D = L.f(LF_T), L.f(LF_REF), L.f(LF_D)
        lo = o.fmax(arith.subf(ref, tc), o.c(0.0))
        ts = arith.addf(tc, D)
        xm = em.materialize(em.propagate(x, D))
        xr = em.materialize(em.reset(xm))
        cnt = L.i(LI_CNT)
        room = arith.cmpi(arith.CmpIPredicate.slt, cnt, S64)
        xrec = getattr(A, "xrec", None)

        def store():
            memref.store(ts, A.out, [b, k, arith.index_cast(idx, cnt)])
            if xrec is not None:  # the state at the crossing, before the reset (event-outer adjoint)
                for q in range(em.d):
                    memref.store(xm[q], xrec, [b, k, arith.index_cast(idx, cnt), o.ci(q)])

        if A.out is not None:  # None: a replay for the backward
            o.if_void(room, store)
        if tape is not None:
            at_lo = arith.cmpf(arith.CmpFPredicate.OEQ, D, lo)
            kind = o.sel(at_lo, o.sel(o.gt(lo, o.c(0.0)), arith.constant(i64, SPIKE_REF),
                                      arith.constant(i64, SPIKE_NOW)), arith.constant(i64, SPIKE))
            tape.spike(row, kind, k, o.sel(room, cnt, arith.constant(i64, -1)), x, tc, D)
        kept = arith.extui(i64, room)
        L.set_i(LI_CNT, arith.addi(cnt, kept))
        L.set_i(LI_PEND, kept)
        L.set_i(LI_DEAD, arith.subi(one64, kept))
        if A.over is not None:
            o.if_void(o.not_(room), lambda: memref.store(one64, A.over, [b, k]))
        tr = o.z(em.t_ref)
        L.set_f(LF_REF, arith.addf(ts, tr))
        L.set_f(LF_SPK, ts)
        L.set_f(LF_T, ts)
        L.set_x(xr)
        return [arith.addi(added, kept), arith.addi(row, one64)]

    fires = arith.cmpf(arith.CmpFPredicate.OEQ, L.f(LF_CAND), best)
    return o.if_(fires, go, lambda: [added, row], [i64, i64])



def init_lanes(em: NeuronEmitter, A: _Args, nN) -> None:
    """Start of a sample: every neuron in its initial state at t = 0, nothing pending, no
    spike, its input pointer at the first arrival."""
    o = em.o
    z64 = arith.constant(_i64(), 0)

    def init(k):
        L = _Lane(em, A, k)
        _setup_lane(em, A, k)
        L.set_x(em.materialize(em.init))
        L.set_f(LF_T, o.c(0.0))
        L.set_f(LF_REF, o.c(-INF))
        L.set_f(LF_SPK, o.c(0.0))
        for r in (LI_PTR, LI_PEND, LI_DEAD, LI_CNT):
            L.set_i(r, z64)
        return []

    _for(o, nN, [], init)


def sample_forward(em: NeuronEmitter, A: _Args, b, port: Optional[str], tape=None):
    """Emit the event loop of sample b. Returns (rows, deliveries) as i64 values. `tape`, if
    given, has .spike(row, kind, k, rank, x, t, D) and .delivery(row, sdel, kind, j, t) and
    .snap(sdel, k, x, t, took) methods called at the matching points of the loop."""
    o = em.o
    ft = o.ft
    i64 = _i64()
    idx = ir.IndexType.get()
    c0, c1 = o.ci(0), o.ci(1)
    z64, one64 = arith.constant(i64, 0), arith.constant(i64, 1)
    inf = o.c(INF)
    nN = memref.dim(A.xs, c1)
    nev = arith.subi(memref.dim(A.chan, c1), c1)  # n real events; index n = the horizon
    ev64 = arith.index_cast(i64, nev)

    init_lanes(em, A, nN)

    # carried: npend, tpend, T, rows, deliveries
    types = [i64, ft, ft, i64, i64]
    w = scf.WhileOp(types, [z64, inf, o.c(0.0), z64, z64])
    before = w.before.blocks.append(*types)
    with ir.InsertionPoint(before):
        npend, tpend, _, rows, ndel = before.arguments

        def next_arrival(k, acc):
            L = _Lane(em, A, k)
            ptr, live = _live(A, b, L)
            kv = memref.load(A.key, [b, k, arith.index_cast(idx, arith.select(live, ptr, z64))])
            return [o.fmin(acc, o.sel(live, kv, inf))]

        eb = _for(o, nN, [inf], next_arrival)[0]
        haspend = arith.cmpi(arith.CmpIPredicate.sgt, npend, z64)
        T = o.sel(haspend, tpend, eb)
        scf.condition(o.or_(haspend, o.lt(eb, inf)), [npend, tpend, T, rows, ndel])
    after = w.after.blocks.append(*types)
    with ir.InsertionPoint(after):
        npend, tpend, T, rows, ndel = after.arguments

        # 1. every eligible lane's first crossing before T
        def candidate(k, best):
            _, live = _live(A, b, _Lane(em, A, k))
            return [o.fmin(best, lane_candidate(em, A, k, T, live))]

        best = _for(o, nN, [inf], candidate)[0]
        spiked = o.lt(best, inf)

        def do_spike():
            def fire(k, added, row):
                return lane_fire(em, A, b, k, best, added, row, tape)

            added, rows2 = _for(o, nN, [z64, rows], fire)
            return [arith.addi(npend, added), best, rows2, ndel]

        def do_deliver():
            is_rec = arith.cmpi(arith.CmpIPredicate.sgt, npend, z64)

            def first_pending(k, acc):
                L = _Lane(em, A, k)
                take = o.and_(arith.cmpi(arith.CmpIPredicate.ne, L.i(LI_PEND), z64),
                              arith.cmpi(arith.CmpIPredicate.eq, acc, nN))
                return [arith.select(take, k, acc)]

            j = o.if_(is_rec, lambda: _for(o, nN, [nN], first_pending), lambda: [c0], [idx])[0]
            t_rec = memref.load(A.lf, [o.ci(LF_SPK), j])
            if tape is not None:
                tape.delivery(rows, ndel, o.sel(is_rec, arith.constant(i64, REC), arith.constant(i64, EXT)),
                              arith.index_cast(i64, j), t_rec)

            def lane(k):
                L = _Lane(em, A, k)
                ptr, live = _live(A, b, L)
                p = arith.index_cast(idx, arith.select(live, ptr, z64))
                te = memref.load(A.key, [b, k, p])
                took = o.and_(live, o.or_(is_rec, arith.cmpf(arith.CmpFPredicate.OEQ, te, T)))
                x = L.x()
                tc = L.f(LF_T)
                if tape is not None:
                    tape.snap(ndel, k, x, tc, took)

                def go():
                    _setup_lane(em, A, k)
                    e64 = memref.load(A.order, [b, k, p])
                    e = arith.index_cast(idx, e64)
                    real = arith.cmpi(arith.CmpIPredicate.slt, e64, ev64)
                    ch = arith.index_cast(idx, memref.load(A.chan, [b, e]))
                    w_ext = o.sel(real, memref.load(A.weight, [b, ch, k]), o.c(0.0))
                    wv = o.sel(is_rec, memref.load(A.wrec, [j, k]), w_ext)
                    t_to = o.sel(is_rec, t_rec, te)
                    xn = em.materialize(em.propagate(x, arith.subf(t_to, tc)))
                    L.set_x(em.materialize(em.jump(xn, wv, port)))
                    L.set_f(LF_T, t_to)
                    L.set_i(LI_PTR, arith.select(is_rec, ptr, arith.addi(ptr, one64)))

                o.if_void(took, go)
                return []

            _for(o, nN, [], lane)

            def clear():
                memref.store(z64, A.li, [o.ci(LI_PEND), j])

            o.if_void(is_rec, clear)
            npend2 = arith.select(is_rec, arith.subi(npend, one64), npend)
            tpend2 = o.sel(arith.cmpi(arith.CmpIPredicate.eq, npend2, z64), inf, tpend)
            return [npend2, tpend2, arith.addi(rows, one64), arith.addi(ndel, one64)]

        res = o.if_(spiked, do_spike, do_deliver, [i64, ft, i64, i64])
        scf.yield_([res[0], res[1], T, res[2], res[3]])
    res = list(w.results)

    def finish(k):
        L = _Lane(em, A, k)
        memref.store(L.i(LI_CNT), A.counts, [b, k])
        return []

    _for(o, nN, [], finish)
    return res[3], res[4]


def _fwd_types(o, npar):
    ft, i64 = o.ft, _i64()
    return ([_memref(3, ft), _memref(3, i64), _memref(2, i64), _memref(3, ft), _memref(2, i64),
             _memref(2, ft)] + [_memref(1, ft)] * npar)


def _head(a, npar):
    key, order, chan, weight, nvalid, wrec = a[:6]
    return dict(key=key, order=order, chan=chan, weight=weight, nvalid=nvalid, wrec=wrec,
                pmem=a[6:6 + npar])


def build_forward(em: NeuronEmitter, port: Optional[str] = None, name: str = "rec_forward"):
    o = em.o
    ft, i64 = o.ft, _i64()
    npar = len(em.pnames)
    types = _fwd_types(o, npar) + [_memref(3, ft), _memref(2, i64), _memref(2, i64), _memref(2, i64),
                                   _dense(2, ft), _dense(2, ft), _dense(2, i64)]
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        out, counts, over, stats, xs, lf, li = a[6 + npar:]
        A = _Args(**_head(a, npar), out=out, counts=counts, over=over, xs=xs, lf=lf, li=li,
                  cap=arith.index_cast(i64, memref.dim(out, o.ci(2))))

        def sample(b):
            rows, ndel = sample_forward(em, A, b, port)
            memref.store(rows, stats, [b, o.ci(0)])
            memref.store(ndel, stats, [b, o.ci(1)])
            return []

        _for(o, memref.dim(out, o.ci(0)), [], sample)
        func.ReturnOp([])
    return fn


class _Tape:
    """Records the forward replay into tape_i/tape_f (rows) and snap_f/snap_m (snapshots),
    skipping stores past the buffers' ends (the caller checks the counts)."""

    def __init__(self, em, tape_i, tape_f, snap_f, snap_m):
        self.em, self.o = em, em.o
        self.ti, self.tf, self.sf, self.sm = tape_i, tape_f, snap_f, snap_m
        i64 = _i64()
        self.M = arith.index_cast(i64, memref.dim(tape_i, em.o.ci(0)))
        self.Ms = arith.index_cast(i64, memref.dim(snap_m, em.o.ci(0)))

    def _row(self, row, ints, floats):
        o = self.o
        idx = ir.IndexType.get()

        def store():
            r = arith.index_cast(idx, row)
            for q, v in enumerate(ints):
                memref.store(v, self.ti, [r, o.ci(q)])
            for q, v in enumerate(floats):
                memref.store(v, self.tf, [r, o.ci(q)])

        o.if_void(arith.cmpi(arith.CmpIPredicate.slt, row, self.M), store)

    def spike(self, row, kind, k, rank, x, t, D):
        self._row(row, [kind, arith.index_cast(_i64(), k), rank], list(x) + [t, D])

    def delivery(self, row, sdel, kind, j, t):
        self._row(row, [kind, sdel, j], [t])

    def snap(self, sdel, k, x, t, took):
        o = self.o
        idx = ir.IndexType.get()

        def store():
            s = arith.index_cast(idx, sdel)
            for q, v in enumerate(x):
                memref.store(v, self.sf, [s, k, o.ci(q)])
            memref.store(t, self.sf, [s, k, o.ci(len(x))])
            memref.store(arith.extui(ir.IntegerType.get_signless(8), took), self.sm, [s, k])

        o.if_void(arith.cmpi(arith.CmpIPredicate.slt, sdel, self.Ms), store)


def build_backward(em: NeuronEmitter, port: Optional[str] = None, name: str = "rec_backward",
                   with_params: bool = True, vec: bool = False):
    """vec=True: the replay runs mlir_recurrent_vec's loop (same decisions and tape bit for bit,
    shared parameters and no delays only), given six more arguments at the end: key[B,L],
    order[B,L] i64, weight[Bw,C,N] (dense), nvalid[B] i64, wrec[N,N] (dense), idxs[N] i64."""
    o = em.o
    ft, i64 = o.ft, _i64()
    i8 = ir.IntegerType.get_signless(8)
    idx = ir.IndexType.get()
    d = em.d
    npar = len(em.pnames)
    forms = AdjointForms(em.ir, port, with_params)
    Bv_port = port or next(iter(em.ir.ports))
    types = _fwd_types(o, npar) + [
        _memref(3, ft), _memref(2, i64), _memref(2, ft), _memref(3, ft), _memref(2, ft), _memref(2, ft),
        _memref(2, ft), _dense(2, ft), _dense(2, ft), _dense(2, i64), _dense(2, ft), _dense(2, i64),
        _dense(2, ft), _dense(3, ft), _dense(2, i8)]
    if vec:
        types += [_memref(2, ft), _memref(2, i64), _dense(3, ft), _memref(1, i64), _dense(2, ft), _dense(1, i64)]
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        (gout, counts, gtimes, gweight, gdelays, gwrec, gparams, xs, lf, li, lam, tape_i, tape_f,
         snap_f, snap_m) = a[6 + npar:6 + npar + 15]
        if vec:
            from spikescan.compiler.backends.mlir.recurrent_vec import LANES, sample_forward_vec
            from spikescan.compiler.backends.mlir.ops import VOps

            k2, o2, w2, n2, r2, idxs = a[6 + npar + 15:]
            vo = VOps(em.dtype, LANES[em.dtype])
        A = _Args(**_head(a, npar), out=None, counts=counts, over=None, xs=xs, lf=lf, li=li,
                  cap=arith.index_cast(i64, memref.dim(gout, o.ci(2))))
        c0 = o.ci(0)
        zero = o.c(0.0)
        z64 = arith.constant(i64, 0)
        nN = memref.dim(xs, o.ci(1))
        nev64 = arith.index_cast(i64, arith.subi(memref.dim(A.chan, o.ci(1)), o.ci(1)))
        do_params = with_params and npar > 0

        def sample(b):
            tape = _Tape(em, tape_i, tape_f, snap_f, snap_m)
            if vec:
                A2 = _Args(key=k2, order=o2, chan=A.chan, weight=w2, nvalid=n2, wrec=r2, pmem=A.pmem, out=None,
                           counts=counts, over=None, xs=xs, lf=lf, li=li, idxs=idxs, cap=A.cap)
                rows, _ = sample_forward_vec(em, vo, A2, b, port, tape)
            else:
                rows, _ = sample_forward(em, A, b, port, tape)
            nrows = arith.index_cast(idx, arith.minsi(rows, tape.M))

            def zero_lane(k):
                for q in range(d + 3):
                    memref.store(zero, lam, [o.ci(q), k])
                return []

            _for(o, nN, [], zero_lane)
            LT, LREF, ACC = d, d + 1, d + 2

            def lam_load(k):
                return [memref.load(lam, [o.ci(q), k]) for q in range(d)], \
                    memref.load(lam, [o.ci(LT), k]), memref.load(lam, [o.ci(LREF), k])

            def lam_store(k, lx, lt, lref):
                for q in range(d):
                    memref.store(lx[q], lam, [o.ci(q), k])
                memref.store(lt, lam, [o.ci(LT), k])
                memref.store(lref, lam, [o.ci(LREF), k])

            def gp_load(k):
                return [memref.load(gparams, [k, o.ci(q)]) for q in range(npar)] if do_params else [None] * npar

            def gp_store(k, gp):
                if do_params:
                    for q in range(npar):
                        memref.store(o.z(gp[q]), gparams, [k, o.ci(q)])

            def step(r):
                i = arith.subi(arith.subi(nrows, o.ci(1)), r)
                kind = memref.load(tape_i, [i, c0])
                a1 = memref.load(tape_i, [i, o.ci(1)])
                a2 = memref.load(tape_i, [i, o.ci(2)])
                is_del = arith.cmpi(arith.CmpIPredicate.sge, kind, arith.constant(i64, EXT))

                def delivery():
                    is_rec = arith.cmpi(arith.CmpIPredicate.eq, kind, arith.constant(i64, REC))
                    s = arith.index_cast(idx, a1)
                    j = arith.index_cast(idx, a2)
                    t_rec = memref.load(tape_f, [i, c0])

                    def lane(k):
                        took = arith.cmpi(arith.CmpIPredicate.ne, memref.load(snap_m, [s, k]),
                                          arith.constant(i8, 0))

                        def go():
                            _setup_lane(em, A, k)
                            L = _Lane(em, A, k)
                            x = [memref.load(snap_f, [s, k, o.ci(q)]) for q in range(d)]
                            tp = memref.load(snap_f, [s, k, o.ci(d)])
                            ptr = L.i(LI_PTR)
                            p64 = arith.select(is_rec, ptr, arith.subi(ptr, arith.constant(i64, 1)))
                            L.set_i(LI_PTR, p64)
                            p = arith.index_cast(idx, p64)
                            e64 = memref.load(A.order, [b, k, p])
                            e = arith.index_cast(idx, e64)
                            real = o.and_(o.not_(is_rec), arith.cmpi(arith.CmpIPredicate.slt, e64, nev64))
                            ch = arith.index_cast(idx, memref.load(A.chan, [b, e]))
                            w_ext = o.sel(real, memref.load(A.weight, [b, ch, k]), zero)
                            wv = o.sel(is_rec, memref.load(A.wrec, [j, k]), w_ext)
                            t_to = o.sel(is_rec, t_rec, memref.load(A.key, [b, k, p]))
                            D = arith.subf(t_to, tp)
                            Phi, phi = em.phi_at(D)
                            lx, lt, lref = lam_load(k)
                            lx2, lt2, gw, garr, gp2 = adjoint_arrival(em, forms, x, D, Phi, phi, wv, lx, lt,
                                                                      gp_load(k), em.B[Bv_port])
                            lam_store(k, lx2, lt2, lref)
                            gp_store(k, gp2)

                            def to_rec():
                                _acc(gwrec, [j, k], gw)
                                _acc(lam, [o.ci(ACC), j], garr)

                            def to_ext():
                                _acc(gweight, [b, ch, k], gw)
                                _acc(gtimes, [b, e], garr)
                                _acc(gdelays, [ch, k], garr)

                            o.if_void(is_rec, to_rec)
                            o.if_void(real, to_ext)

                        o.if_void(took, go)
                        return []

                    _for(o, nN, [], lane)
                    return []

                def spike():
                    k = arith.index_cast(idx, a1)
                    _setup_lane(em, A, k)
                    has = arith.cmpi(arith.CmpIPredicate.sge, a2, z64)
                    x = [memref.load(tape_f, [i, o.ci(q)]) for q in range(d)]
                    D = memref.load(tape_f, [i, o.ci(d + 1)])
                    Phi, phi = em.phi_at(D)
                    rank = arith.index_cast(idx, arith.select(has, a2, z64))
                    acc = memref.load(lam, [o.ci(ACC), k])
                    g = o.sel(has, arith.addf(memref.load(gout, [b, k, rank]), acc), zero)
                    memref.store(zero, lam, [o.ci(ACC), k])
                    lx, lt, lref = lam_load(k)
                    lx2, lt2, lref2, gp2 = adjoint_spike(em, forms, kind, x, D, Phi, phi, g, has, lx, lt,
                                                         lref, gp_load(k))
                    lam_store(k, lx2, lt2, lref2)
                    gp_store(k, gp2)
                    return []

                o.if_(is_del, delivery, spike, [])
                return []

            _for(o, nrows, [], step)

            if do_params:
                def init_grad(k):
                    _setup_lane(em, A, k)
                    lx, _, _ = lam_load(k)
                    gi = _print_all(_printer(em, forms, L=lx), forms.init)
                    gp_store(k, [o.add(g, v) for g, v in zip(gp_load(k), gi)])
                    return []

                _for(o, nN, [], init_grad)
            return []

        _for(o, memref.dim(gout, c0), [], sample)
        func.ReturnOp([])
    return fn


def _acc(mem, index, v):
    memref.store(arith.addf(memref.load(mem, index), v), mem, index)


def build_recurrent_module(nir: NeuronIR, dtype: str = "f64", port: Optional[str] = None,
                           backward: bool = False, with_params: bool = True, vec: bool = False) -> ir.Module:
    """Module with @rec_forward and @rec_forward_vec (mlir/recurrent_vec.py), or @rec_backward
    (the caller keeps `module.context` alive)."""
    if nir.c is None or nir.theta is None:
        raise ValueError(f"neuron {nir.name!r} has no threshold: a recurrent connection needs a spiking neuron")
    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        float_type(dtype)
        em = NeuronEmitter(nir, dtype)
        m = ir.Module.create()
        with ir.InsertionPoint(m.body):
            add_helpers(em.o)
            if backward:
                build_backward(em, port=port, with_params=with_params, vec=vec)
            else:
                from spikescan.compiler.backends.mlir.recurrent_vec import build_forward_vec

                build_forward(em, port=port)
                build_forward_vec(em, port=port)  # shared parameters, no delays
        if not m.operation.verify():
            raise RuntimeError(f"{nir.name}: emitted recurrent MLIR does not verify")
        passmanager.PassManager.parse(CLEANUP).run(m.operation)
    return m
