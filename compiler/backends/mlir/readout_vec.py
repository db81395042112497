"""The vectorised forward of the compiled max_potential readout (layers without threshold):
mlir_readout.build_forward's decisions and formulas, `lanes` neurons per MLIR vector op (as
mlir/shared.py does for the hidden layer's forward).

Per event and group of lanes: propagate, u and u' at both ends of the interval, the better end
(ties: the start) against the running maximum (selects, no branch), the jump. The interior
stationary point is rare (u' from + to - within one interval: ~2% of neuron-intervals on SHD-like
input): the group's candidate lanes (their bits, one integer) append their index and interval
start state to a list, and a scalar pass after the group loop evaluates mlir_readout.interior_max
on them and keeps it where it beats the running maximum. Keeping the better end first and the
interior second selects what the scalar loop selects (the interior wins iff it beats both the
interval's ends and the earlier maximum), with the same operations: the results are those of
@readout_forward_scalar bit for bit (tests/backends/test_cpu_readout.py). A scalar tail handles
N % lanes."""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import arith, func, memref, scf, vector

from spikescan.compiler.backends.mlir.ops import VOps
from spikescan.compiler.backends.mlir.readout import (_arrival, init_records, _func, _max_step, _Readout, forward_types,
                                                      interior_max)

INF = float("inf")


def build_forward_vec(rd: _Readout, name: str = "readout_forward", lanes=None):
    from spikescan.compiler.backends.mlir.shared import LANES

    em = rd.em
    o = em.o
    d = em.d
    lanes = lanes or LANES[em.dtype]
    vo = VOps(em.dtype, lanes)
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    i64v = ir.VectorType.get([lanes], i64)
    mvec = ir.VectorType.get([1], ir.IntegerType.get_signless(lanes))
    npar = len(em.pnames)
    fn, blk = _func(name, forward_types(em))
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        times, chan, order, weight, nvalid, horizon = a[:6]
        pmem = a[6:6 + npar]
        obs, estar, off, tidx, tcoef, xs, idxs, xsave = a[6 + npar:]
        recs = (obs, estar, off, tidx, tcoef)
        c0, c1 = o.ci(0), o.ci(1)
        cL = o.ci(lanes)
        nB, nN = memref.dim(obs, c0), memref.dim(obs, c1)
        nV = arith.subi(nN, arith.remui(nN, cL))
        wb = arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(weight, c0), c1)
        m1 = arith.constant(i64, -1)
        zero64 = arith.constant(i64, 0)
        rd.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, pmem)})
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            bw = arith.select(wb, b, c0)
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            H = memref.load(horizon, [b])
            x0 = em.materialize(em.init)
            init_records(rd, nN, x0, xs, b, (obs, estar, off, tidx, tcoef), -INF)
            lk = scf.ForOp(c0, arith.addi(nv, c1), c1, [o.c(0.0), m1, o.i1(False)])
            with ir.InsertionPoint(lk.body):
                k = lk.induction_variable
                t_prev, e_prev, real_prev = lk.inner_iter_args
                ch, e64, T, real = _arrival(em, k, nv, b, order, chan, times, H)
                D = arith.subf(T, t_prev)
                Phi, phi = em.phi_at(D)
                wscale = o.sel(real, o.c(1.0), o.c(0.0))
                k64 = arith.index_cast(i64, k)
                end_ref = arith.select(real, e64, m1)
                start_ref = arith.select(real_prev, e_prev, m1)
                Dpos = o.gt(D, o.c(0.0))
                lv = scf.ForOp(c0, nV, cL, [c0])
                with ir.InsertionPoint(lv.body):
                    j = lv.induction_variable
                    cnt = lv.inner_iter_args[0]
                    with em.using(vo):
                        x = [vector.load(vo.ft, xs, [o.ci(q), j]) for q in range(d)]
                        xp = em.materialize(vo.affine(Phi, x, phi))
                        us, ue = rd.u(x), rd.u(xp)
                        ds, de = rd.du(x), rd.du(xp)
                        startwins = vo.ge(us, ue)
                        val = vo.sel(startwins, us, ue)
                        loc = vo.sel(startwins, vo.c(0.0), D)
                        at_end = vo.and_(vo.not_(startwins), Dpos)
                        tco = vo.sel(at_end, de, ds)
                        best = vector.load(vo.ft, obs, [b, j])
                        upd = vo.gt(val, best)
                        vector.store(vo.sel(upd, val, best), obs, [b, j])
                        vector.store(vo.sel(upd, loc, vector.load(vo.ft, off, [b, j])), off, [b, j])
                        vector.store(vo.sel(upd, tco, vector.load(vo.ft, tcoef, [b, j])), tcoef, [b, j])
                        ks = vector.broadcast(i64v, k64)
                        vector.store(arith.select(upd, ks, vector.load(i64v, estar, [b, j])), estar, [b, j])
                        tid = arith.select(at_end, vector.broadcast(i64v, end_ref), vector.broadcast(i64v, start_ref))
                        vector.store(arith.select(upd, tid, vector.load(i64v, tidx, [b, j])), tidx, [b, j])
                        wrow = vector.load(vo.ft, weight, [bw, ch, j])
                        xn = em.materialize(em.jump(xp, vo.mul(wscale, wrow), rd.port))
                        for q in range(d):
                            vector.store(xn[q], xs, [o.ci(q), j])
                        cand = vo.and_(vo.and_(vo.vec(Dpos), vo.gt(ds, vo.c(0.0))), vo.lt(de, vo.c(0.0)))
                    if len(rd.rows) != 2:  # u monotone between arrivals: no interior maximum
                        scf.yield_([cnt])
                    else:
                        bits = arith.extui(i64, vector.extract(vector.bitcast(mvec, cand), [], [0]))

                        def append(bits=bits, j=j, cnt=cnt, x=x):
                            c = cnt
                            for lane in range(lanes):
                                f = arith.andi(arith.shrui(bits, arith.constant(i64, lane)), arith.constant(i64, 1))
                                memref.store(arith.index_cast(i64, arith.addi(j, o.ci(lane))), idxs, [c])
                                for q in range(d):
                                    memref.store(vector.extract(x[q], [], [lane]), xsave, [o.ci(q), c])
                                c = arith.addi(c, arith.index_cast(idx, f))
                            return [c]

                        anyc = arith.cmpi(arith.CmpIPredicate.ne, bits, zero64)
                        scf.yield_(o.if_(anyc, append, lambda cnt=cnt: [cnt], [idx]))
                nflag = lv.results[0]
                # the scalar tail, the whole scalar step (interior included)
                lt = scf.ForOp(nV, nN, c1)
                with ir.InsertionPoint(lt.body):
                    j = lt.induction_variable
                    x = [memref.load(xs, [o.ci(q), j]) for q in range(d)]
                    xp = em.materialize(o.affine(Phi, x, phi))
                    _max_step(rd, x, xp, D, t_prev, b, j, k64, end_ref, start_ref, recs)
                    w = arith.mulf(wscale, memref.load(weight, [bw, ch, j]))
                    xn = em.materialize(em.jump(xp, w, rd.port))
                    for q in range(d):
                        memref.store(xn[q], xs, [o.ci(q), j])
                    scf.yield_([])
                # the flagged lanes' interior maxima (rare)
                lf = scf.ForOp(c0, nflag, c1)
                with ir.InsertionPoint(lf.body):
                    c = lf.induction_variable
                    j = arith.index_cast(idx, memref.load(idxs, [c]))
                    x = [memref.load(xsave, [o.ci(q), c]) for q in range(d)]
                    s, uc = interior_max(rd, x, D, t_prev, rd.du(x))

                    def record(j=j, s=s, uc=uc):
                        memref.store(uc, obs, [b, j])
                        memref.store(k64, estar, [b, j])
                        memref.store(s, off, [b, j])
                        memref.store(m1, tidx, [b, j])
                        memref.store(o.c(0.0), tcoef, [b, j])

                    o.if_void(o.gt(uc, memref.load(obs, [b, j])), record)
                    scf.yield_([])
                scf.yield_([T, e64, real])
            scf.yield_([])
        func.ReturnOp([])
    return fn
