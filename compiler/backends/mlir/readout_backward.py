"""The backward kernel of the compiled readouts of a layer without threshold (mlir/readout.py's
module docstring has the maths): @readout_backward walks each sample's events backwards once,
Phi(D)^T per event shared by all neurons; max_potential seeds each neuron's adjoint row at its
maximum, li_integral adds the running integral's source over every interval."""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.backends.mlir.emit import _dense
from spikescan.compiler.backends.mlir.readout import _arrival, _common_types, _func, _Readout, seed_max_row


def build_backward(rd: _Readout):
    em = rd.em
    o = em.o
    ft = o.ft
    d = em.d
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    npar = len(em.pnames)
    types = _common_types(em) + [_dense(2, ft), _dense(2, i64), _dense(2, ft), _dense(2, i64), _dense(2, ft),
                                 _dense(3, ft), _dense(1, i64), _dense(2, ft), _dense(2, ft), _dense(2, ft)]
    fn, blk = _func("readout_backward", types)
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        times, chan, order, weight, nvalid, horizon = a[:6]
        pmem = a[6:6 + npar]
        gobs, estar, off, tidx, tcoef, gw, grow, gt, lam, seed = a[6 + npar:]
        c0, c1 = o.ci(0), o.ci(1)
        nB, nN = memref.dim(gobs, c0), memref.dim(gobs, c1)
        wb = arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(weight, c0), c1)
        zero = o.c(0.0)
        rd.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, pmem)})
        is_max = rd.kind == "max_potential"
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            bw = arith.select(wb, b, c0)
            bg = arith.index_cast(idx, memref.load(grow, [b]))  # this sample's gradient row
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            H = memref.load(horizon, [b])
            li = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(li.body):
                j = li.induction_variable
                for q in range(d):
                    memref.store(zero, lam, [o.ci(q), j])
                if is_max:  # the seed g_j c^T Phi(off_j), added at the start of interval estar_j
                    seed_max_row(rd, gobs, off, seed, b, j)
                scf.yield_([])
            lr = scf.ForOp(c0, arith.addi(nv, c1), c1)
            with ir.InsertionPoint(lr.body):
                e = arith.subi(nv, lr.induction_variable)
                ch, e64, T, real = _arrival(em, e, nv, b, order, chan, times, H)
                ep = arith.subi(arith.select(arith.cmpi(arith.CmpIPredicate.eq, e, c0), c1, e), c1)
                Tp = o.sel(arith.cmpi(arith.CmpIPredicate.eq, e, c0), zero,
                           _arrival(em, ep, nv, b, order, chan, times, H)[2])
                D = arith.subf(T, Tp)
                jump = o.and_(real, arith.cmpi(arith.CmpIPredicate.ult, e, nv))

                def jump_pass(ch=ch, e64=e64):
                    lj = scf.ForOp(c0, nN, c1, [zero])
                    with ir.InsertionPoint(lj.body):
                        j = lj.induction_variable
                        acc = lj.inner_iter_args[0]
                        lv = [memref.load(lam, [o.ci(q), j]) for q in range(d)]
                        w = memref.load(weight, [bw, ch, j])
                        lB = o.z(o.dot(lv, rd.Bv))
                        lAB = o.z(o.dot(lv, rd.AB))
                        if not is_max and rd.cB is not None:  # the integrand's own jump
                            lAB = arith.addf(lAB, arith.mulf(memref.load(gobs, [b, j]), rd.cB))
                        memref.store(arith.addf(memref.load(gw, [bg, ch, j]), lB), gw, [bg, ch, j])
                        scf.yield_([arith.addf(acc, arith.mulf(lAB, w))])
                    te = arith.index_cast(idx, e64)
                    memref.store(arith.subf(memref.load(gt, [b, te]), lj.results[0]), gt, [b, te])

                o.if_void(jump, jump_pass)
                Phi, _ = em.phi_at(D)
                if not is_max:  # the running integral's source (Phi^T - I) q over the interval
                    src = [o.sub(o.dot([Phi[i][qq] for i in range(d)], rd.q), rd.q[qq]) for qq in range(d)]
                    src = em.materialize(src)
                e64i = arith.index_cast(i64, e)
                lf = scf.ForOp(c0, nN, c1)
                with ir.InsertionPoint(lf.body):
                    j = lf.induction_variable
                    lv = [memref.load(lam, [o.ci(q), j]) for q in range(d)]
                    nl = em.materialize([o.dot([Phi[i][qq] for i in range(d)], lv) for qq in range(d)])
                    if is_max:
                        hit = arith.cmpi(arith.CmpIPredicate.eq, memref.load(estar, [b, j]), e64i)
                        nl = [arith.addf(v, o.sel(hit, memref.load(seed, [o.ci(q), j]), zero))
                              for q, v in enumerate(nl)]
                    else:
                        gj = memref.load(gobs, [b, j])
                        nl = [arith.addf(v, arith.mulf(gj, s)) for v, s in zip(nl, src)]
                    for q in range(d):
                        memref.store(nl[q], lam, [o.ci(q), j])
                    scf.yield_([])
                scf.yield_([])
            if is_max:  # a maximum at an interval's end or start moves with that arrival
                lt = scf.ForOp(c0, nN, c1)
                with ir.InsertionPoint(lt.body):
                    j = lt.induction_variable
                    ti = memref.load(tidx, [b, j])

                    def add(ti=ti, j=j):
                        tc = arith.index_cast(idx, ti)
                        gtc = arith.mulf(memref.load(gobs, [b, j]), memref.load(tcoef, [b, j]))
                        memref.store(arith.addf(memref.load(gt, [b, tc]), gtc), gt, [b, tc])

                    o.if_void(arith.cmpi(arith.CmpIPredicate.sge, ti, arith.constant(i64, 0)), add)
                    scf.yield_([])
            scf.yield_([])
        func.ReturnOp([])
    return fn
