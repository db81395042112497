"""The recurrent event loop of mlir/recurrent.py, vectorised over neurons (DESIGN.md section 9)
for its common case: parameters shared by the layer and no input delays, so that every live
neuron takes every delivery and all neurons share one arrival order (key[B,L], order[B,L]).

Same steps, same decisions, same formulas as mlir_recurrent.sample_forward (the spike trains are
bit-for-bit those of the scalar loop: tests/runtime/test_recurrent_cpu.py); what changes is the
cost of the two O(N) passes of a step:

- candidates: Phi(H), phi(H) for the step's gap H = T - t_common are computed once; one pass
  over the neurons, `lanes` at a time (vector dialect, mlir_ops.VOps), decides per neuron with
  first_crossing's own exact shortcuts (not eligible / the IR's no_cross test / H <= 0 /
  quick_no_cross with the step's Phi) that there is no crossing before T. Only the neurons it
  cannot clear (refractory ones, ones not at the common time, u already >= theta, and those with
  a possible crossing) are listed and run through the scalar lane_candidate (the exact solver);
  the spike step then visits only the listed neurons (the others' candidate is +inf);
- delivery: Phi and phi of the delivery's gap computed once; the vector pass propagates and
  jumps all neurons at the common time t_common; the (rare) neurons at another time (those that
  fired since the last delivery) are redone in scalar code from their own time.

All live neurons share the arrival pointer (one carried scalar, stored to li[LI_PTR] at the end
for the adjoint's reverse walk) and, after every delivery, the time t_common.

    build_forward_vec(em, port, name="rec_forward_vec", lanes=None)
Arguments of @rec_forward_vec: key[B,L], order[B,L] i64, chan[B,n+1] i64, weight[Bw,C,N]
(dense; Bw = 1 or B), nvalid[B] i64, wrec[N,N] (dense), p_1..p_P [N] (all equal), out[B,N,S],
counts[B,N] i64, over[B,N] i64, stats[B,2] i64, xs[d,N], lf[5,N], li[4,N] i64, idxs[N] i64
(dense scratch), xrec[B,N,S,d] (out: the state at each recorded spike before its reset, for the
event-outer adjoint runtime/engines/adjoint_events_rec.py; a stride-0 dummy when not wanted).
"""

from __future__ import annotations

from typing import Optional

from torch_mlir import ir
from torch_mlir.dialects import arith, func, memref, scf, vector

from spikescan.compiler.backends.mlir.emit import INF, NeuronEmitter, _dense, _memref
from spikescan.compiler.backends.mlir.ops import VOps
from spikescan.compiler.backends.mlir.recurrent import (
    EXT, LF_REF, LF_SPK, LF_T, LI_CNT, LI_DEAD, LI_PEND, LI_PTR, REC, _Args, _for, _i64, _Lane,
    init_lanes, lane_candidate, lane_fire)

LANES = {"f64": 4, "f32": 8}  # one 256-bit register, as mlir_shared.LANES


def vec_types(o, npar):
    """Argument types of @rec_forward_vec up to the parameters."""
    ft, i64 = o.ft, _i64()
    return ([_memref(2, ft), _memref(2, i64), _memref(2, i64), _dense(3, ft), _memref(1, i64),
             _dense(2, ft)] + [_memref(1, ft)] * npar)


def _bits(o, v):
    """A float (vector) as integer bits of its own width (i64 for f64, i32 for f32): equality
    of times bit for bit (no +-0 ambiguity)."""
    is_vec = v.type.typeid == ir.VectorType.static_typeid
    et = ir.VectorType(v.type).element_type if is_vec else v.type
    it = ir.IntegerType.get_signless(ir.FloatType(et).width)
    return arith.bitcast(ir.VectorType.get(ir.VectorType(v.type).shape, it) if is_vec else it, v)


def _same_bits(a_bits, b_bits, W, pred):
    """cmpi(pred) of the lanes' bits (vector of W, or scalar) against one scalar's bits."""
    if W > 1:
        b_bits = vector.broadcast(ir.VectorType.get([W], b_bits.type), b_bits)
    return arith.cmpi(pred, a_bits, b_bits)


class _Pass:
    """A pass over the neurons: whole vectors of `lanes`, then a scalar tail. body(j, W, cnt)
    emits one group of W lanes (W = lanes inside em.using(vo), or 1) and returns the new cnt."""

    def __init__(self, em: NeuronEmitter, vo: VOps, nN):
        self.em, self.vo, self.nN = em, vo, nN
        o = em.o
        self.cL = o.ci(vo.lanes)
        self.nV = arith.subi(nN, arith.remui(nN, self.cL))

    def run(self, body, cnt0):
        em, o = self.em, self.em.o
        lv = scf.ForOp(o.ci(0), self.nV, self.cL, [cnt0])
        with ir.InsertionPoint(lv.body):
            with em.using(self.vo):
                r = body(lv.induction_variable, self.vo.lanes, lv.inner_iter_args[0])
            scf.yield_([r])
        lt = scf.ForOp(self.nV, self.nN, o.ci(1), [lv.results[0]])
        with ir.InsertionPoint(lt.body):
            scf.yield_([body(lt.induction_variable, 1, lt.inner_iter_args[0])])
        return lt.results[0]


def _load(mem, index, W, et):
    if W == 1:
        return memref.load(mem, index)
    return vector.load(ir.VectorType.get([W], et), mem, index)


def _store(v, mem, index, W):
    if W == 1:
        memref.store(v, mem, index)
    else:
        vector.store(v, mem, index)


def _lane_bits(m, W):
    """The i1 mask m (vector of W, or scalar) as the bits of one i64: an i1 vector living into
    another block costs LLVM repacking (mlir/shared.py)."""
    i64 = _i64()
    if W == 1:
        return arith.extui(i64, m)
    mv = ir.VectorType.get([1], ir.IntegerType.get_signless(W))
    return arith.extui(i64, vector.extract(vector.bitcast(mv, m), [], [0]))


def _lane_of(v, l, W):
    return v if W == 1 else vector.extract(v, [], [l])


def sample_forward_vec(em: NeuronEmitter, vo: VOps, A: _Args, b, port: Optional[str], tape=None):
    """The event loop of sample b (see the module docstring). Returns (rows, deliveries) i64;
    `tape` as in mlir_recurrent.sample_forward."""
    o = em.o
    ft = o.ft
    i64 = _i64()
    idx = ir.IndexType.get()
    d = em.d
    c0, c1 = o.ci(0), o.ci(1)
    z64, one64 = arith.constant(i64, 0), arith.constant(i64, 1)
    inf = o.c(INF)
    nN = memref.dim(A.xs, c1)
    nv = memref.load(A.nvalid, [b])
    nev = arith.subi(memref.dim(A.chan, c1), c1)  # n real events; index n = the horizon
    ev64 = arith.index_cast(i64, nev)
    bw = arith.select(arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(A.weight, c0), c1), b, c0)
    P = _Pass(em, vo, nN)

    def shared_setup():
        # parameters are shared: element 0; re-run in each region (lane helpers re-setup)
        em.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, A.pmem)})

    init_lanes(em, A, nN)

    # carried: npend, tpend, T, rows, deliveries, ptr (shared by all lanes), tcom (the time of
    # every lane that took the last delivery)
    types = [i64, ft, ft, i64, i64, i64, ft]
    w = scf.WhileOp(types, [z64, inf, o.c(0.0), z64, z64, z64, o.c(0.0)])
    before = w.before.blocks.append(*types)
    with ir.InsertionPoint(before):
        npend, tpend, _, rows, ndel, ptr, tcom = before.arguments
        live = arith.cmpi(arith.CmpIPredicate.slt, ptr, nv)
        kv = memref.load(A.key, [b, arith.index_cast(idx, arith.select(live, ptr, z64))])
        eb = o.sel(live, kv, inf)
        haspend = arith.cmpi(arith.CmpIPredicate.sgt, npend, z64)
        T = o.sel(haspend, tpend, eb)
        scf.condition(o.or_(haspend, o.lt(eb, inf)), [npend, tpend, T, rows, ndel, ptr, tcom])
    after = w.after.blocks.append(*types)
    with ir.InsertionPoint(after):
        npend, tpend, T, rows, ndel, ptr, tcom = after.arguments
        live = arith.cmpi(arith.CmpIPredicate.slt, ptr, nv)

        # 1. candidates: vector clearance, exact solver on the listed lanes only
        def candidates():
            shared_setup()
            H = arith.subf(T, tcom)
            Phi, phi = em.phi_at(H)  # once per step
            tbits = _bits(o, tcom)
            theta = em.theta
            short0 = o.le(H, o.c(0.0))

            def group(j, W, cnt):
                oo = em.o
                i64w = i64 if W == 1 else ir.VectorType.get([W], i64)
                zw = z64 if W == 1 else vector.broadcast(i64w, z64)
                x = [_load(A.xs, [o.ci(q), j], W, ft) for q in range(d)]
                t = _load(A.lf, [o.ci(LF_T), j], W, ft)
                ref = _load(A.lf, [o.ci(LF_REF), j], W, ft)
                dead = _load(A.li, [o.ci(LI_DEAD), j], W, i64)
                pend = _load(A.li, [o.ci(LI_PEND), j], W, i64)
                quiet = oo.and_(arith.cmpi(arith.CmpIPredicate.eq, dead, zw),
                                arith.cmpi(arith.CmpIPredicate.eq, pend, zw))
                lo = oo.fmax(oo.sub(ref, t), oo.c(0.0))
                hi = oo.sub(T, t)
                open_ = oo.or_(oo.lt(lo, hi), oo.le(lo, oo.c(0.0)))
                chk = oo.and_(oo.and_(quiet, open_), oo.not_(em.no_cross(x)))
                # first_crossing's exact shortcuts, for a lane at the common time (so its gap is
                # H bit for bit) that is not refractory (lo = 0) and below threshold
                same = _same_bits(_bits(oo, t), tbits, W, arith.CmpIPredicate.eq)
                calm = oo.and_(oo.and_(same, oo.not_(oo.gt(lo, oo.c(0.0)))),
                               oo.lt(em.potential(x), theta))
                short = oo.vec(short0) if W > 1 else short0
                if len(em.rows) <= 2:
                    short = oo.or_(short, em.quick_no_cross(x, H, (Phi, phi)))
                flag = oo.and_(chk, oo.not_(oo.and_(calm, short)))
                bits = _lane_bits(flag, W)

                def append():
                    c = cnt
                    for l in range(W):
                        f = arith.andi(arith.shrui(bits, arith.constant(i64, l)), one64)
                        memref.store(arith.index_cast(i64, arith.addi(j, o.ci(l))), A.idxs, [c])
                        c = arith.addi(c, arith.index_cast(idx, f))
                    return [c]

                return o.if_(arith.cmpi(arith.CmpIPredicate.ne, bits, z64), append, lambda: [cnt], [idx])[0]

            nflag = P.run(group, c0)

            def solve_listed(i, best):
                k = arith.index_cast(idx, memref.load(A.idxs, [i]))
                return [o.fmin(best, lane_candidate(em, A, k, T, o.i1(True)))]

            best = _for(o, nflag, [inf], solve_listed)[0]
            return [best, nflag]

        best, nflag = o.if_(live, candidates, lambda: [inf, c0], [ft, idx])
        spiked = o.lt(best, inf)

        def do_spike():
            def fire(i, added, row):
                k = arith.index_cast(idx, memref.load(A.idxs, [i]))
                return lane_fire(em, A, b, k, best, added, row, tape)

            added, rows2 = _for(o, nflag, [z64, rows], fire)
            return [arith.addi(npend, added), best, rows2, ndel, ptr, tcom]

        def do_deliver():
            is_rec = arith.cmpi(arith.CmpIPredicate.sgt, npend, z64)

            def first_pending():  # lowest pending source (stops at the first)
                wl = scf.WhileOp([idx], [c0])
                bb = wl.before.blocks.append(idx)
                with ir.InsertionPoint(bb):
                    k = bb.arguments[0]
                    pend = memref.load(A.li, [o.ci(LI_PEND), k])
                    scf.condition(arith.cmpi(arith.CmpIPredicate.eq, pend, z64), [k])
                ab = wl.after.blocks.append(idx)
                with ir.InsertionPoint(ab):
                    scf.yield_([arith.addi(ab.arguments[0], c1)])
                return [wl.results[0]]

            src = o.if_(is_rec, first_pending, lambda: [c0], [idx])[0]
            t_rec = memref.load(A.lf, [o.ci(LF_SPK), src])
            if tape is not None:
                tape.delivery(rows, ndel, o.sel(is_rec, arith.constant(i64, REC), arith.constant(i64, EXT)),
                              arith.index_cast(i64, src), t_rec)
            p = arith.index_cast(idx, arith.select(live, ptr, z64))
            te = memref.load(A.key, [b, p])
            took = o.and_(live, o.or_(is_rec, arith.cmpf(arith.CmpFPredicate.OEQ, te, T)))
            t_to = o.sel(is_rec, t_rec, te)
            e64 = memref.load(A.order, [b, p])
            real = arith.cmpi(arith.CmpIPredicate.slt, e64, ev64)
            ch = arith.index_cast(idx, memref.load(A.chan, [b, arith.index_cast(idx, e64)]))
            if tape is not None:
                def snap(k):
                    L = _Lane(em, A, k)
                    tape.snap(ndel, k, L.x(), L.f(LF_T), took)
                    return []

                _for(o, nN, [], snap)

            def deliver():
                shared_setup()
                Phi, phi = em.phi_at(arith.subf(t_to, tcom))  # once per step
                tbits = _bits(o, tcom)

                def pass_with(wload):
                    def group(j, W, cnt):
                        oo = em.o
                        x = [_load(A.xs, [o.ci(q), j], W, ft) for q in range(d)]
                        t = _load(A.lf, [o.ci(LF_T), j], W, ft)
                        wv = wload(j, W)
                        xp = oo.affine(Phi, x, phi)
                        xn = em.materialize(em.jump(xp, wv, port))
                        for q in range(d):
                            _store(xn[q], A.xs, [o.ci(q), j], W)
                        _store(oo.vec(t_to) if W > 1 else t_to, A.lf, [o.ci(LF_T), j], W)
                        other = _same_bits(_bits(oo, t), tbits, W, arith.CmpIPredicate.ne)
                        bits = _lane_bits(other, W)

                        def redo():  # lanes at their own time: the scalar formulas from it
                            for l in range(W):
                                def one(l=l):
                                    k = arith.addi(j, o.ci(l))
                                    xl = [_lane_of(v, l, W) for v in x]
                                    Dl = arith.subf(t_to, _lane_of(t, l, W))
                                    with em.using(o):  # scalar formulas inside the vector pass
                                        xq = em.materialize(em.propagate(xl, Dl))
                                        xj = em.materialize(em.jump(xq, _lane_of(wv, l, W), port))
                                    for q in range(d):
                                        memref.store(xj[q], A.xs, [o.ci(q), k])

                                f = arith.andi(arith.shrui(bits, arith.constant(i64, l)), one64)
                                o.if_void(arith.cmpi(arith.CmpIPredicate.ne, f, z64), one)

                        o.if_void(arith.cmpi(arith.CmpIPredicate.ne, bits, z64), redo)
                        return cnt

                    P.run(group, c0)
                    return []

                def zero_row(j, W):
                    return o.c(0.0) if W == 1 else vo.c(0.0)

                # the row of weights delivered, picked once per step (three copies of the pass)
                o.if_(is_rec, lambda: pass_with(lambda g, W: _load(A.wrec, [src, g], W, ft)),
                      lambda: o.if_(real, lambda: pass_with(lambda g, W: _load(A.weight, [bw, ch, g], W, ft)),
                                    lambda: pass_with(zero_row), []), [])
                return []

            o.if_void(took, deliver)

            def clear():
                memref.store(z64, A.li, [o.ci(LI_PEND), src])

            o.if_void(is_rec, clear)
            npend2 = arith.select(is_rec, arith.subi(npend, one64), npend)
            tpend2 = o.sel(arith.cmpi(arith.CmpIPredicate.eq, npend2, z64), inf, tpend)
            ptr2 = arith.select(o.and_(took, o.not_(is_rec)), arith.addi(ptr, one64), ptr)
            tcom2 = o.sel(took, t_to, tcom)
            return [npend2, tpend2, arith.addi(rows, one64), arith.addi(ndel, one64), ptr2, tcom2]

        res = o.if_(spiked, do_spike, do_deliver, [i64, ft, i64, i64, i64, ft])
        scf.yield_([res[0], res[1], T, res[2], res[3], res[4], res[5]])
    res = list(w.results)
    ptr_end = res[5]

    def finish(k):
        L = _Lane(em, A, k)
        memref.store(L.i(LI_CNT), A.counts, [b, k])
        L.set_i(LI_PTR, ptr_end)  # the adjoint's reverse walk reads each lane's pointer
        return []

    _for(o, nN, [], finish)
    return res[3], res[4]


def build_forward_vec(em: NeuronEmitter, port: Optional[str] = None, name: str = "rec_forward_vec",
                      lanes: Optional[int] = None):
    o = em.o
    ft, i64 = o.ft, _i64()
    vo = VOps(em.dtype, lanes or LANES[em.dtype])
    npar = len(em.pnames)
    types = vec_types(o, npar) + [_memref(3, ft), _memref(2, i64), _memref(2, i64), _memref(2, i64),
                                  _dense(2, ft), _dense(2, ft), _dense(2, i64), _dense(1, i64), _memref(4, ft)]
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        key, order, chan, weight, nvalid, wrec = a[:6]
        out, counts, over, stats, xs, lf, li, idxs, xrec = a[6 + npar:]
        A = _Args(key=key, order=order, chan=chan, weight=weight, nvalid=nvalid, wrec=wrec,
                  pmem=a[6:6 + npar], out=out, counts=counts, over=over, xs=xs, lf=lf, li=li, idxs=idxs,
                  xrec=xrec, cap=arith.index_cast(i64, memref.dim(out, o.ci(2))))

        def sample(b):
            rows, ndel = sample_forward_vec(em, vo, A, b, port)
            memref.store(rows, stats, [b, o.ci(0)])
            memref.store(ndel, stats, [b, o.ci(1)])
            return []

        _for(o, memref.dim(out, o.ci(0)), [], sample)
        func.ReturnOp([])
    return fn
