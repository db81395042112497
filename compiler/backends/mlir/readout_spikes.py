"""Compiled readouts of a SPIKING layer (the first-spike loss's max potential, max_potential /
li_integral on a layer with threshold): mlir/readout.py's kernels with the layer's own spikes,
known from the compiled forward (sequential_cpu), as resets inside the intervals.

    @readout_spikes_forward(times, chan, order, weight, nvalid, horizon, p_1..p_P, spikes[B,N,S],
                            scount[B,N] i64, obs, estar, off, tidx, tcoef, sub[B,N] i64,
                            xrec[B,N,S,d] (out: state before each reset), bad[B,N] i64 (out),
                            xs[d,N], ptr[N] i64)
    @readout_spikes_backward(times, chan, order, weight, nvalid, horizon, p_1..p_P, g, estar, off,
                             tidx, tcoef, sub, spikes, scount, xrec, gw, grow, gt, gs[B,N,S]
                             (accumulated: dObs/d spike time), lam[d,N], seed[d,N], ptr[N] i64)

A spike s of neuron j belongs to the first interval (T_{k-1}, T_k] with s < T_k, or s == T_k
when the arrival at T_k cannot move u (c^T B = 0: the spike comes first, observe_replay's tie
rule) or T_k is no arrival (t_end). Neurons without a spike in an interval take the shared-Phi
path of mlir/readout.py; the others walk their pieces (interval start or spike, to the next
spike or the interval's end) with their own Phi. Per piece the same maximum / integral as
mlir/readout.py; `sub` records the number of spikes before the maximising piece and tidx
encodes what an end moves with (>= 0: an arrival's column, -2 - m: spike m, -1: nothing).
bad[b, j] = 1 when u just before a recorded spike is below theta (beyond 1e-7 (1 + |theta|) in
f64, 1e-3 in f32): the caller then falls back to the replay, as observe_replay.py does.

Backward at a spike s (x- = xrec, x+ = R x- + r): lam(s-) = R^T lam(s+) and the partial
dObs/ds = lam(s-) . (A x- + a0) - lam(s+) . (A x+ + a0) (+ g (u(x-) - u(x+)) for the integral,
whose integrand jumps there); the spike time's own gradient (IFT) is the layer's adjoint.
"""

from __future__ import annotations

from typing import Optional

from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir.emit import CLEANUP, NeuronEmitter, _dense
from spikescan.compiler.backends.mlir.ops import add_helpers, float_type
from spikescan.compiler.backends.mlir.readout import (KINDS, seed_max_row, _arrival, _common_types, _func, _max_step,
                                                      _Readout, chain_rows)

INF = float("inf")


def unsupported(nir: NeuronIR, kind: str) -> Optional[str]:
    import sympy

    if kind not in KINDS:
        return f"observe={kind!r} is not a compiled readout"
    if nir.c is None or nir.theta is None:
        return "the neuron has no threshold (mlir/readout.py)"
    A = sympy.Matrix(nir.A)
    if not (A.is_lower or A.is_upper):
        return "A is not triangular (no isolation chain)"
    if kind == "max_potential" and len(chain_rows(nir)) > 2:
        return "the potential can have several stationary points per interval (general isolation)"
    if kind == "li_integral" and A.det() == 0:
        return "li_integral needs an invertible A"
    return None


def _spike_first(rd: _Readout) -> bool:
    """c^T B == 0 (symbolically): an arrival cannot move u, a spike at its instant comes first."""
    import sympy

    nir = rd.em.ir
    return sympy.simplify((rd.pot.T * sympy.Matrix(nir.ports[rd.port]))[0, 0]) == 0


def _take(o, s, T, tie):
    return o.or_(o.lt(s, T), o.and_(arith.cmpf(arith.CmpFPredicate.OEQ, s, T), tie))


def _piece(rd, x, xp, D, t0, b, j, k64, end_ref, start_ref, recs, sub):
    """The readout of one piece [t0, t0 + D] from x (xp: the state at its end)."""
    em = rd.em
    o = em.o
    if rd.kind == "max_potential":
        _max_step(rd, x, xp, D, t0, b, j, k64, end_ref, start_ref, recs, sub)
    else:
        obs = recs[0]
        diff = [o.sub(o.sub(xp[i], x[i]), o.mul(em.a0[i], D)) for i in range(em.d)]
        memref.store(arith.addf(memref.load(obs, [b, j]), o.z(o.dot(rd.q, diff))), obs, [b, j])


def build_forward(rd: _Readout):
    em = rd.em
    o = em.o
    ft = o.ft
    d = em.d
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    npar = len(em.pnames)
    types = _common_types(em) + [_dense(3, ft), _dense(2, i64), _dense(2, ft), _dense(2, i64), _dense(2, ft),
                                 _dense(2, i64), _dense(2, ft), _dense(2, i64), _dense(4, ft), _dense(2, i64),
                                 _dense(2, ft), _dense(1, i64)]
    fn, blk = _func("readout_spikes_forward", types)
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        times, chan, order, weight, nvalid, horizon = a[:6]
        pmem = a[6:6 + npar]
        spikes, scount, obs, estar, off, tidx, tcoef, sub, xrec, bad, xs, ptr = a[6 + npar:]
        recs = (obs, estar, off, tidx, tcoef, sub)
        c0, c1 = o.ci(0), o.ci(1)
        nB, nN = memref.dim(obs, c0), memref.dim(obs, c1)
        S1 = arith.subi(memref.dim(spikes, o.ci(2)), c1)
        wb = arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(weight, c0), c1)
        m1 = arith.constant(i64, -1)
        m2 = arith.constant(i64, -2)
        one64 = arith.constant(i64, 1)
        rd.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, pmem)})
        first = o.i1(_spike_first(rd))
        tol = (1e-7 if em.dtype == "f64" else 1e-3)
        lim = arith.subf(em.theta, arith.mulf(o.c(tol), arith.addf(o.c(1.0), o.absf(em.theta))))
        is_max = rd.kind == "max_potential"
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            bw = arith.select(wb, b, c0)
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            H = memref.load(horizon, [b])
            x0 = em.materialize(em.init)
            li = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(li.body):
                j = li.induction_variable
                for q in range(d):
                    memref.store(x0[q], xs, [o.ci(q), j])
                memref.store(o.c(-INF if is_max else 0.0), obs, [b, j])
                for arr, v in ((estar, m1), (tidx, m1), (sub, arith.constant(i64, 0)), (bad, arith.constant(i64, 0))):
                    memref.store(v, arr, [b, j])
                memref.store(o.c(0.0), off, [b, j])
                memref.store(o.c(0.0), tcoef, [b, j])
                memref.store(arith.constant(i64, 0), ptr, [j])
                scf.yield_([])
            lk = scf.ForOp(c0, arith.addi(nv, c1), c1, [o.c(0.0), m1, o.i1(False)])
            with ir.InsertionPoint(lk.body):
                k = lk.induction_variable
                t_prev, e_prev, real_prev = lk.inner_iter_args
                ch, e64, T, real = _arrival(em, k, nv, b, order, chan, times, H)
                D = arith.subf(T, t_prev)
                Phi, phi = em.phi_at(D)
                tie = o.or_(first, o.not_(real))
                wscale = o.sel(real, o.c(1.0), o.c(0.0))
                k64 = arith.index_cast(i64, k)
                end_ev = arith.select(real, e64, m1)
                start_ev = arith.select(real_prev, e_prev, m1)
                lj = scf.ForOp(c0, nN, c1)
                with ir.InsertionPoint(lj.body):
                    j = lj.induction_variable
                    x = [memref.load(xs, [o.ci(q), j]) for q in range(d)]
                    p = memref.load(ptr, [j])
                    cnt = memref.load(scount, [b, j])

                    def spike(m64):  # the time of spike m (clamped index; callers check m < cnt)
                        mi = arith.minui(arith.index_cast(idx, m64), S1)
                        return memref.load(spikes, [b, j, mi])

                    has = o.and_(arith.cmpi(arith.CmpIPredicate.slt, p, cnt), _take(o, spike(p), T, tie))

                    def fast(x=x, p=p, j=j):
                        xp = em.materialize(o.affine(Phi, x, phi))
                        _piece(rd, x, xp, D, t_prev, b, j, k64, end_ev, start_ev, recs, p)
                        return xp

                    def slow(x=x, p=p, j=j, cnt=cnt, spike=spike):
                        tys = [ft] * d + [ft, i64, i64]
                        w = scf.WhileOp(tys, list(x) + [t_prev, p, start_ev])
                        bef = w.before.blocks.append(*tys)
                        with ir.InsertionPoint(bef):
                            ba = list(bef.arguments)
                            m = ba[d + 1]
                            go = o.and_(arith.cmpi(arith.CmpIPredicate.slt, m, cnt), _take(o, spike(m), T, tie))
                            scf.condition(go, ba)
                        aft = w.after.blocks.append(*tys)
                        with ir.InsertionPoint(aft):
                            aa = list(aft.arguments)
                            xc, tc, m, sref = aa[:d], aa[d], aa[d + 1], aa[d + 2]
                            s = spike(m)
                            Ds = arith.subf(s, tc)
                            xq = em.materialize(em.propagate(xc, Ds))
                            mref = arith.subi(m2, m)
                            _piece(rd, xc, xq, Ds, tc, b, j, k64, mref, sref, recs, m)
                            low = o.lt(rd.u(xq), lim)
                            o.if_void(low, lambda: memref.store(one64, bad, [b, j]))
                            mi = arith.index_cast(idx, m)
                            for q in range(d):
                                memref.store(xq[q], xrec, [b, j, mi, o.ci(q)])
                            xr = em.materialize(em.reset(xq))
                            scf.yield_(xr + [s, arith.addi(m, one64), mref])
                        r = list(w.results)
                        xc, tc, m, sref = r[:d], r[d], r[d + 1], r[d + 2]
                        Dl = arith.subf(T, tc)
                        xp = em.materialize(em.propagate(xc, Dl))
                        _piece(rd, xc, xp, Dl, tc, b, j, k64, end_ev, sref, recs, m)
                        memref.store(m, ptr, [j])
                        return xp

                    xp = o.if_(has, slow, fast, [ft] * d)
                    w_ = arith.mulf(wscale, memref.load(weight, [bw, ch, j]))
                    xn = em.materialize(em.jump(xp, w_, rd.port))
                    for q in range(d):
                        memref.store(xn[q], xs, [o.ci(q), j])
                    scf.yield_([])
                scf.yield_([T, e64, real])
            scf.yield_([])
        func.ReturnOp([])
    return fn


def _flowT(o, d, Phi, lam):
    """Phi^T lam (None-aware Phi)."""
    return [o.z(o.dot([Phi[i][q] for i in range(d)], lam)) for q in range(d)]


def build_backward(rd: _Readout):
    em = rd.em
    o = em.o
    ft = o.ft
    d = em.d
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    npar = len(em.pnames)
    types = _common_types(em) + [_dense(2, ft), _dense(2, i64), _dense(2, ft), _dense(2, i64), _dense(2, ft),
                                 _dense(2, i64), _dense(3, ft), _dense(2, i64), _dense(4, ft), _dense(3, ft),
                                 _dense(1, i64), _dense(2, ft), _dense(3, ft), _dense(2, ft), _dense(2, ft),
                                 _dense(1, i64)]
    fn, blk = _func("readout_spikes_backward", types)
    with ir.InsertionPoint(blk):
        a = list(blk.arguments)
        times, chan, order, weight, nvalid, horizon = a[:6]
        pmem = a[6:6 + npar]
        (gobs, estar, off, tidx, tcoef, sub, spikes, scount, xrec, gw, grow, gt, gs, lam, seed,
         ptr) = a[6 + npar:]
        c0, c1 = o.ci(0), o.ci(1)
        nB, nN = memref.dim(gobs, c0), memref.dim(gobs, c1)
        S1 = arith.subi(memref.dim(spikes, o.ci(2)), c1)
        wb = arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(weight, c0), c1)
        zero = o.c(0.0)
        z64 = arith.constant(i64, 0)
        one64 = arith.constant(i64, 1)
        m2 = arith.constant(i64, -2)
        rd.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, pmem)})
        first = o.i1(_spike_first(rd))
        is_max = rd.kind == "max_potential"
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            bw = arith.select(wb, b, c0)
            bg = arith.index_cast(idx, memref.load(grow, [b]))
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            H = memref.load(horizon, [b])
            li = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(li.body):
                j = li.induction_variable
                for q in range(d):
                    memref.store(zero, lam, [o.ci(q), j])
                memref.store(arith.subi(memref.load(scount, [b, j]), one64), ptr, [j])
                if is_max:
                    seed_max_row(rd, gobs, off, seed, b, j)
                scf.yield_([])
            lr = scf.ForOp(c0, arith.addi(nv, c1), c1)
            with ir.InsertionPoint(lr.body):
                e = arith.subi(nv, lr.induction_variable)
                ch, e64, T, real = _arrival(em, e, nv, b, order, chan, times, H)
                is0 = arith.cmpi(arith.CmpIPredicate.eq, e, c0)
                ep = arith.subi(arith.select(is0, c1, e), c1)
                _, _, Tq, realq = _arrival(em, ep, nv, b, order, chan, times, H)
                Tp = o.sel(is0, zero, Tq)
                tie_p = o.or_(first, o.not_(realq))
                D = arith.subf(T, Tp)
                e64i = arith.index_cast(i64, e)

                def jump_pass(ch=ch, e64=e64):
                    lj = scf.ForOp(c0, nN, c1, [zero])
                    with ir.InsertionPoint(lj.body):
                        j = lj.induction_variable
                        acc = lj.inner_iter_args[0]
                        lv = [memref.load(lam, [o.ci(q), j]) for q in range(d)]
                        w = memref.load(weight, [bw, ch, j])
                        lB = o.z(o.dot(lv, rd.Bv))
                        lAB = o.z(o.dot(lv, rd.AB))
                        if not is_max and rd.cB is not None:
                            lAB = arith.addf(lAB, arith.mulf(memref.load(gobs, [b, j]), rd.cB))
                        memref.store(arith.addf(memref.load(gw, [bg, ch, j]), lB), gw, [bg, ch, j])
                        scf.yield_([arith.addf(acc, arith.mulf(lAB, w))])
                    te = arith.index_cast(idx, e64)
                    memref.store(arith.subf(memref.load(gt, [b, te]), lj.results[0]), gt, [b, te])

                o.if_void(o.and_(real, arith.cmpi(arith.CmpIPredicate.ult, e, nv)), jump_pass)
                Phi, _ = em.phi_at(D)
                lf = scf.ForOp(c0, nN, c1)
                with ir.InsertionPoint(lf.body):
                    j = lf.induction_variable
                    lv = [memref.load(lam, [o.ci(q), j]) for q in range(d)]
                    gj = memref.load(gobs, [b, j])
                    es = memref.load(estar, [b, j])
                    sb = memref.load(sub, [b, j])
                    qp = memref.load(ptr, [j])

                    def spike(m64, j=j):
                        mi = arith.minui(arith.index_cast(idx, arith.maxsi(m64, z64)), S1)
                        return memref.load(spikes, [b, j, mi])

                    def inside(m64, spike=spike):  # spike m lies in interval e (not an earlier one)
                        later = o.or_(is0, o.not_(_take(o, spike(m64), Tp, tie_p)))
                        return o.and_(arith.cmpi(arith.CmpIPredicate.sge, m64, z64), later)

                    def over(lv, Pm, nspk, gj=gj, es=es, sb=sb, j=j):
                        """lam at a piece's start from lam at its end (Phi(length) = Pm); the seed
                        if the maximum lies in this piece (nspk spikes before it)."""
                        nl = _flowT(o, d, Pm, lv)
                        if is_max:
                            hit = o.and_(arith.cmpi(arith.CmpIPredicate.eq, es, e64i),
                                         arith.cmpi(arith.CmpIPredicate.eq, sb, nspk))
                            nl = [arith.addf(v, o.sel(hit, memref.load(seed, [o.ci(q), j]), zero))
                                  for q, v in enumerate(nl)]
                        else:
                            src = [o.sub(o.dot([Pm[i][q] for i in range(d)], rd.q), rd.q[q]) for q in range(d)]
                            nl = [arith.addf(v, arith.mulf(gj, o.z(s_))) for v, s_ in zip(nl, src)]
                        return nl

                    def fast(lv=lv, qp=qp):
                        return over(lv, Phi, arith.addi(qp, one64))

                    def slow(lv=lv, qp=qp, j=j, gj=gj, spike=spike, inside=inside):
                        tys = [ft] * d + [ft, i64]
                        w = scf.WhileOp(tys, list(lv) + [T, qp])
                        bef = w.before.blocks.append(*tys)
                        with ir.InsertionPoint(bef):
                            ba = list(bef.arguments)
                            scf.condition(inside(ba[d + 1]), ba)
                        aft = w.after.blocks.append(*tys)
                        with ir.InsertionPoint(aft):
                            aa = list(aft.arguments)
                            lc, tc, m = aa[:d], aa[d], aa[d + 1]
                            s = spike(m)
                            Pm, _ = em.phi_at(arith.subf(tc, s))
                            lplus = over(lc, Pm, arith.addi(m, one64))
                            mi = arith.index_cast(idx, m)
                            xm = [memref.load(xrec, [b, j, mi, o.ci(q)]) for q in range(d)]
                            xp = em.materialize(em.reset(xm))
                            lminus = em.materialize(_flowT(o, d, em.R, lplus))  # R^T lam(s+)
                            gsv = arith.subf(o.z(o.dot(lminus, em.materialize(em.deriv(xm)))),
                                             o.z(o.dot(lplus, em.materialize(em.deriv(xp)))))
                            if not is_max:
                                gsv = arith.addf(gsv, arith.mulf(gj, arith.subf(rd.u(xm), rd.u(xp))))
                            memref.store(arith.addf(memref.load(gs, [b, j, mi]), gsv), gs, [b, j, mi])
                            scf.yield_(lminus + [s, arith.subi(m, one64)])
                        r = list(w.results)
                        lc, tc, m = r[:d], r[d], r[d + 1]
                        Pm, _ = em.phi_at(arith.subf(tc, Tp))
                        memref.store(m, ptr, [j])
                        return over(lc, Pm, arith.addi(m, one64))

                    nl = o.if_(inside(qp), slow, fast, [ft] * d)
                    for q in range(d):
                        memref.store(nl[q], lam, [o.ci(q), j])
                    scf.yield_([])
                scf.yield_([])
            if is_max:  # a maximum at a piece's end or start moves with that arrival or spike
                lt = scf.ForOp(c0, nN, c1)
                with ir.InsertionPoint(lt.body):
                    j = lt.induction_variable
                    ti = memref.load(tidx, [b, j])
                    gtc = arith.mulf(memref.load(gobs, [b, j]), memref.load(tcoef, [b, j]))

                    def to_event(ti=ti, gtc=gtc):
                        tc = arith.index_cast(idx, ti)
                        memref.store(arith.addf(memref.load(gt, [b, tc]), gtc), gt, [b, tc])

                    def to_spike(ti=ti, gtc=gtc, j=j):
                        mi = arith.index_cast(idx, arith.subi(m2, ti))
                        memref.store(arith.addf(memref.load(gs, [b, j, mi]), gtc), gs, [b, j, mi])

                    o.if_void(arith.cmpi(arith.CmpIPredicate.sge, ti, z64), to_event)
                    o.if_void(arith.cmpi(arith.CmpIPredicate.sle, ti, m2), to_spike)
                    scf.yield_([])
            scf.yield_([])
        func.ReturnOp([])
    return fn


def build_module(nir: NeuronIR, kind: str, dtype: str = "f64", port: Optional[str] = None) -> ir.Module:
    why = unsupported(nir, kind)
    if why is not None:
        raise NotImplementedError(f"{nir.name}: compiled spiking readout {kind!r} not available: {why}")
    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        float_type(dtype)
        em = NeuronEmitter(nir, dtype)
        rd = _Readout(em, kind, port)
        m = ir.Module.create()
        with ir.InsertionPoint(m.body):
            add_helpers(em.o)
            build_forward(rd)
            build_backward(rd)
        if not m.operation.verify():
            raise RuntimeError(f"{nir.name}: emitted spiking readout MLIR does not verify")
        passmanager.PassManager.parse(CLEANUP).run(m.operation)
    return m
