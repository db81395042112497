"""The vectorised event-outer loop for layers without delays whose parameters are shared
(DESIGN.md section 9): `layer_shared`, the same arguments as mlir_emit.build_layer_shared_scalar
except the last scratch buffers (idxs[N] i64 and xsave[d, N] instead of flags[N] i8).

Per event, Phi(D) and phi(D) are computed once (they depend only on the gap D and the shared
time constants). Pass 1 then walks the neurons `lanes` at a time with the MLIR vector dialect
(vector.load/store over the dense [d, N] state, arith on vector<lanes x f64>, no calls; a
scalar tail for N % lanes) and decides, per neuron, whether the exact path could find a
crossing in the interval, with the very decisions of NeuronEmitter.first_crossing:

    refractory over the whole interval                                   -> no crossing
    else not refractory, u(0) < theta and (the IR's no_cross test, or D <= 0,
         or, for isolation chains of length <= 2, the exact quick test u(D) < theta and no
         interior maximum of u, evaluated with the event's Phi)          -> no crossing

It advances those neurons (propagate, then the input jump) and appends the others to a list;
pass 2 (scalar, rare) runs the exact per-neuron path (_advance: isolation, solver, reset) on
the listed neurons only. Every formula is printed by NeuronEmitter with the same operations in
the same order as the per-neuron loop, so the results are bit-for-bit those of
mlir_emit.build_layer (tests/backends/test_cpu_vector.py).

Pass 1 has two shapes, picked per event from the previous event's statistics:
- "branchy": a group whose lanes are all calm (not refractory, below threshold, cheap test
  passed) takes a short path (update and store, nothing else); other groups the full one.
  Best when nearly every group is calm (weak input, most of training);
- "branchless": every group runs the full path, quick test included. Best when many groups
  have a lane over the cheap test (SHD-like input: the synaptic current often exceeds theta),
  where a branch per group would mispredict.
The masks never cross a block boundary as i1 vectors (the flags leave the group as the bits
of one integer): LLVM repacks i1 vectors that live across blocks, which cost ~20%.
Each shape also comes in a refractory-free variant, taken when no neuron of the sample can be
refractory in the interval (refmax, the largest refractory end so far, <= t_prev) and D > 0:
there skip, pos and D <= 0 are all false, so the refs are not loaded and 4 of the ~10 compares
per group go (the loop is bound by its compares and multiplies). Pass 2 reuses the event's
Phi(D) where a flagged neuron's interval is the event's (NeuronEmitter.reuse_phi). For chains
of length 2 with a decaying first rate, pass 1 also bounds interior maxima (_peak_below) so
that most of them need no pass 2.
Lanes: one vector register (8 f64 with AVX-512, else 4); bench/cpu_step.py times it against a
plain C loop."""

from __future__ import annotations

from typing import Optional

from torch_mlir import ir
from torch_mlir.dialects import arith, func, memref, scf, vector
from torch_mlir.dialects import llvm

from spikescan.compiler.backends.mlir.ops import VOps

INF = float("inf")
MODE = "adaptive"  # or "branchy" / "branchless" (one shape of pass 1 for every event; tests, benchmarks)
FEW = 32  # "adaptive": the branchy shape while under 1/FEW of the lanes are not calm (~1/8 of
# the groups for 4 lanes)


def _vector_bits() -> int:
    """Width of the host's vector registers: 512 with AVX-512F (Linux), else 256."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return 512 if " avx512f" in line else 256
    except OSError:
        pass
    return 256


# lanes per vector op: one register (AVX-512: 8 f64, ~20% faster than 4 on the SHD-like forward,
# same bits: every lane runs the same scalar formulas); bench/cpu_forward.py
LANES = {"f64": _vector_bits() // 64, "f32": _vector_bits() // 32}


def _tests(em, x, ref, t_prev, D):
    """(skip, quiet, easy) of one lane group (em.o: scalar Ops or VOps): first_crossing's
    decisions before its quick test. The group's interval has no crossing where
    skip | (quiet & (easy | quick)). ref None: the event's "calm" shape, where no neuron is
    refractory (every ref <= t_prev) and D > 0: skip is None (false) and so are pos and D <= 0."""
    o = em.o
    if ref is None:
        return None, o.not_(o.ge(em.potential(x), em.theta)), em.no_cross(x)
    # _advance's lo = max(ref - t, 0) and its tests, without the max: lo > 0 iff ref - t > 0
    # iff ref > t (IEEE subtraction keeps the sign of a - b), and then lo = ref - t
    pos = o.gt(ref, t_prev)
    skip = o.and_(o.ge(o.sub(ref, t_prev), D), pos)  # refractory all interval: no threshold
    quiet = o.and_(o.not_(pos), o.not_(o.ge(em.potential(x), em.theta)))
    easy = o.or_(em.no_cross(x), o.le(D, o.c(0.0)))
    return skip, quiet, easy


def _chain2_rate(em):
    """For an isolation chain of length 2 (u' has at most one zero in an interval): the rate
    lam with l_1 = l_0 (A - lam I), so that u'' = lam u' + s with s = l_1 y of one sign over the
    interval; None if the chain is otherwise or lam is not a diagonal entry of A."""
    import sympy

    if not em.spiking or len(em.rows) != 2:
        return None
    A, d = em.ir.A, em.d
    zero = lambda m: all(sympy.simplify(e) == 0 for e in m)  # noqa: E731
    # s = l_1 y of one sign: l_1 a left eigenvector of A (then s(t) = s(0) e^{mu t})
    if not any(zero(em.rows[1] * (A - A[k, k] * sympy.eye(d))) for k in range(d)):
        return None
    for k in range(d):
        lam = A[k, k]
        if zero(em.rows[1] - em.rows[0] * (A - lam * sympy.eye(d))):
            return lam
    return None


def _peak_bound_consts(em):
    """Scalars (outside the loops) of the peak bound: (lam <= 0 at run time, |c|, |A|, |a0|,
    |theta|), or None where the bound does not apply (see _peak_below)."""
    lam = _chain2_rate(em)
    if lam is None:
        return None
    o = em.o
    ab = lambda v: None if v is None else o.absf(v)  # noqa: E731
    lam_ok = o.le(o.z(em.P(lam)), o.c(0.0))
    return (lam_ok, [ab(v) for v in em.cvec], [[ab(v) for v in row] for row in em.A], [ab(v) for v in em.a0],
            o.absf(em.theta))


def _peak_below(em, x, D, Phi, phi, consts):
    """True where u provably stays below theta on [0, D] although the quick test saw an interior
    maximum (u'(0) > 0 >= u'(D)): with lam <= 0, s < 0 there (u' goes from + to -), so
    u'' = lam u' + s < 0 while u' > 0 and u(t) <= u0 + u'(0) t up to the maximum, after which u
    falls. So max u <= u0 + u'(0) D; tested with a margin of 1e-12 times the sizes of the terms
    (rounding of u0, u'(0) and the exact path's own evaluation are far below it). The exact
    path (isolation, solver) then finds no crossing either: the update is the same."""
    o = em.o
    lam_ok, cabs, Aabs, a0abs, thabs = consts
    u0 = em.potential(x)
    g0 = o.z(o.dot(em.cvec, em.deriv(x)))
    fH, gH = em._u_from(x, Phi, phi)  # the quick test's (CSE)
    # u(D) < theta too: where rounding showed a maximum that is not there (u rising all along),
    # the quick test's own criterion applies
    peak = o.and_(o.and_(o.gt(g0, o.c(0.0)), o.le(gH, o.c(0.0))), o.lt(fH, o.c(0.0)))
    ax = [arith.maximumf(v, arith.negf(v)) for v in x]  # |x| (math.absf on vectors does not lower)
    uabs = o.z(o.dot(cabs, ax))
    gabs = o.z(o.dot(cabs, [o.add(o.dot(row, ax), a) for row, a in zip(Aabs, a0abs)]))
    margin = o.mul(o.c(1e-12), o.add(o.add(uabs, thabs), o.mul(D, gabs)))
    below = o.lt(o.add(o.add(u0, o.mul(g0, D)), margin), em.theta)
    return o.and_(lam_ok, o.and_(peak, below))


def _update(em, x, wrow, tests, D, Phi, phi, wscale, port, peak_consts=None):
    """(safe, x propagated to the event and jumped): right for the safe lanes (no crossing);
    the caller saves the others' x for pass 2. For chains of length <= 2 first_crossing's
    quick test is applied too, with the event's Phi (H == D for a neuron that is not
    refractory)."""
    o = em.o
    skip, quiet, easy = tests
    xp = o.affine(Phi, x, phi)
    if len(em.rows) <= 2:
        easy = o.or_(easy, em.quick_no_cross(x, D, (Phi, phi)))
    if peak_consts is not None:  # the (frequent) interior maxima that stay below theta
        easy = o.or_(easy, _peak_below(em, x, D, Phi, phi, peak_consts))
    safe = o.and_(quiet, easy) if skip is None else o.or_(skip, o.and_(quiet, easy))
    w = o.mul(wscale, wrow)
    xn = em.materialize(em.jump(xp, w, port))
    # stored for every lane, no select: LLVM turns store(select(m, new, load)) into a masked
    # store (vmaskmovpd), microcoded and slow on AMD Zen
    return safe, xn


def build_layer_shared_vec(em, port: Optional[str] = None, name: str = "layer_shared",
                           lanes: Optional[int] = None):
    """func @<name>(times[B,n], chan[B,n], order[B,n], weight[Bw,C,N] (dense; Bw = 1 or B),
    nvalid[B], horizon[B], p_1..p_P (element 0 used), out[B,N,S], counts[B,N], over[B,N],
    xs[d,N] (dense scratch state), refs[N], ints[2,N] (scratch count/over), idxs[N] i64 and
    xsave[d,N] (scratch: the flagged neurons of the current event and their states), xrec[B,N,S,d]
    (out: the state at each recorded spike before its reset, for the event-outer adjoint),
    phirec[B,n+1,d*d] (out: Phi(D)^T of every interval k <= nvalid, row-major (entry q*d + r is
    Phi[r][q]): the event-outer adjoint's propagators, the forward's own bits), erec[B,N,S] i64 (out:
    the interval k of each recorded spike, i.e. the number of arrivals before it))."""
    from spikescan.compiler.backends.mlir.emit import (_advance, _dense, _memref, init_shared_lanes, pmap_types,
                                                       shared_arrival)

    lanes = lanes or LANES[em.dtype]
    o = em.o
    ft = o.ft
    i64 = ir.IntegerType.get_signless(64)
    i1 = ir.IntegerType.get_signless(1)
    idx = ir.IndexType.get()
    d = em.d
    npar = len(em.pnames)
    vo = VOps(em.dtype, lanes)
    mvec = ir.VectorType.get([1], ir.IntegerType.get_signless(lanes))  # a lane mask as bits
    types = ([_memref(2, ft), _memref(2, i64), _memref(2, i64), _dense(3, ft), _memref(1, i64),
              _memref(1, ft)] + [_memref(1, ft)] * npar
             + [_memref(3, ft), _memref(2, i64), _memref(2, i64), _dense(2, ft), _dense(1, ft),
                _dense(2, i64), _dense(1, i64), _dense(2, ft), _memref(4, ft), _memref(3, ft),
                _memref(3, i64)] + pmap_types(port))
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = em.take_pmap(port, list(blk.arguments))
        times, chan, order, weight, nvalid, horizon = a[:6]
        pmem = a[6:6 + npar]
        out, counts, over, xs, refs, ints, idxs, xsave, xrec, phirec, erec = a[6 + npar:]
        c0, c1 = o.ci(0), o.ci(1)
        cL = o.ci(lanes)
        nB = memref.dim(out, c0)
        nN = memref.dim(out, c1)
        nV = arith.subi(nN, arith.remui(nN, cL))  # neurons covered by whole vectors
        S64 = arith.index_cast(i64, memref.dim(out, o.ci(2)))
        wb = arith.cmpi(arith.CmpIPredicate.ugt, memref.dim(weight, c0), c1)  # per-sample weights
        zero64 = arith.constant(i64, 0)
        em.setup({n: memref.load(m, [c0]) for n, m in zip(em.pnames, pmem)})
        peak_consts = _peak_bound_consts(em)
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            bw = arith.select(wb, b, c0)
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            H = memref.load(horizon, [b])
            x0 = em.materialize(em.init)
            init_shared_lanes(em, x0, nN, xs, refs, ints)
            # refmax: the largest refractory end of the sample's neurons so far (refs only grow)
            lk = scf.ForOp(c0, arith.addi(nv, c1), c1, [o.c(0.0), c0, o.c(-INF)])
            with ir.InsertionPoint(lk.body):
                k = lk.induction_variable
                t_prev, nq_prev, refmax = lk.inner_iter_args
                ch, T, D, wscale, Phi, phi = shared_arrival(em, k, nv, b, order, chan, times, H, t_prev)
                for q in range(d):  # Phi^T for the adjoint (a stride-0 dummy when not kept)
                    for r in range(d):
                        memref.store(o.c(0.0) if Phi[r][q] is None else Phi[r][q], phirec, [b, k, o.ci(q * d + r)])
                # no neuron refractory in this interval and D > 0 (nearly every event): pass 1
                # skips the refractory tests and the refs (4 of its ~10 compares per group)
                calm_ev = o.and_(o.le(refmax, t_prev), o.not_(o.le(D, o.c(0.0))))

                # pass 1a: whole vectors of neurons; the (rare) flagged ones are appended to
                # idxs behind a uniform branch, so pass 2 visits only them. The shape (see the
                # module docstring) follows the previous event's count of groups not all calm.
                def vector_pass(branchy: bool, fast: bool):
                    lv = scf.ForOp(c0, nV, cL, [c0, c0])
                    with ir.InsertionPoint(lv.body):
                        j = lv.induction_variable
                        cnt, ncalm = lv.inner_iter_args
                        with em.using(vo):
                            x = [vector.load(vo.ft, xs, [o.ci(q), j]) for q in range(d)]
                            ref = None if fast else vector.load(vo.ft, refs, [j])
                            wrow = vector.load(vo.ft, weight, [bw, ch, j])
                            skip, quiet, easy = _tests(em, x, ref, t_prev, D)
                            calm = vo.and_(quiet, easy)
                        # every lane calm: no crossing anywhere in the group, no test left to run
                        allc = vector.reduction(i1, vector.CombiningKind.AND, calm)
                        # calm lanes, a scalar popcount (a vector accumulator was spilled
                        # to the stack every iteration)
                        cbits = arith.extui(i64, vector.extract(vector.bitcast(mvec, calm), [], [0]))
                        ncalm2 = arith.addi(ncalm, arith.index_cast(idx, llvm.intr_ctpop(cbits)))

                        def calm_group(x=x, wrow=wrow, j=j, cnt=cnt):
                            with em.using(vo):
                                xp = vo.affine(Phi, x, phi)
                                xn = em.materialize(em.jump(xp, vo.mul(wscale, wrow), port))
                                for q in range(d):
                                    vector.store(xn[q], xs, [o.ci(q), j])
                            return [cnt]

                        def group(x=x, wrow=wrow, j=j, cnt=cnt, tests=(skip, quiet, easy)):
                            with em.using(vo):
                                safe, xn = _update(em, x, wrow, tests, D, Phi, phi, wscale, port)
                                for q in range(d):
                                    vector.store(xn[q], xs, [o.ci(q), j])
                                flag = vo.not_(safe)
                            # the flags as the bits of one integer (x86: movmskpd): an i1 vector
                            # that lives into another block costs LLVM repacking
                            bits = vector.extract(vector.bitcast(mvec, flag), [], [0])
                            bits = arith.extui(i64, bits)
                            anyl = arith.cmpi(arith.CmpIPredicate.ne, bits, zero64)

                            def append():  # index and interval-start state of each flagged lane
                                c = cnt
                                for l in range(lanes):
                                    f = arith.andi(arith.shrui(bits, arith.constant(i64, l)),
                                                   arith.constant(i64, 1))
                                    memref.store(arith.index_cast(i64, arith.addi(j, o.ci(l))), idxs, [c])
                                    for q in range(d):
                                        memref.store(vector.extract(x[q], [], [l]), xsave, [o.ci(q), c])
                                    c = arith.addi(c, arith.index_cast(idx, f))
                                return [c]

                            return o.if_(anyl, append, lambda: [cnt], [idx])

                        cnt2 = o.if_(allc, calm_group, group, [idx]) if branchy else group()
                        scf.yield_(cnt2 + [ncalm2])
                    return [lv.results[0], arith.subi(nV, lv.results[1])]

                def shaped(fast: bool):
                    if MODE == "adaptive":
                        few = arith.cmpi(arith.CmpIPredicate.ult, arith.muli(nq_prev, o.ci(FEW)),
                                         nV)  # under 1/FEW of the lanes not calm
                        return o.if_(few, lambda: vector_pass(True, fast), lambda: vector_pass(False, fast),
                                     [idx, idx])
                    return vector_pass(MODE == "branchy", fast)  # one fixed shape (tests, benchmarks)

                cnt_v, nq = o.if_(calm_ev, lambda: shaped(True), lambda: shaped(False), [idx, idx])
                # pass 1b: the scalar tail (same formulas)
                lt_ = scf.ForOp(nV, nN, c1, [cnt_v])
                with ir.InsertionPoint(lt_.body):
                    j = lt_.induction_variable
                    cnt = lt_.inner_iter_args[0]
                    x = [memref.load(xs, [o.ci(q), j]) for q in range(d)]
                    ref = memref.load(refs, [j])
                    wrow = memref.load(weight, [bw, ch, j])
                    safe, xn = _update(em, x, wrow, _tests(em, x, ref, t_prev, D), D, Phi, phi, wscale,
                                       port)
                    for q in range(d):
                        memref.store(xn[q], xs, [o.ci(q), j])
                    memref.store(arith.index_cast(i64, j), idxs, [cnt])
                    for q in range(d):
                        memref.store(x[q], xsave, [o.ci(q), cnt])
                    f = arith.index_cast(idx, arith.extui(i64, o.not_(safe)))
                    scf.yield_([arith.addi(cnt, f)])
                nflag = lt_.results[0]

                # pass 2 (rare): the exact per-neuron path for the flagged neurons
                lf = scf.ForOp(c0, nflag, c1, [refmax])
                with ir.InsertionPoint(lf.body):
                    j = arith.index_cast(idx, memref.load(idxs, [lf.induction_variable]))
                    x = [memref.load(xsave, [o.ci(q), lf.induction_variable]) for q in range(d)]
                    ref = memref.load(refs, [j])
                    cnt = memref.load(ints, [c0, j])
                    ov = memref.load(ints, [c1, j])
                    w = arith.mulf(wscale, memref.load(weight, [bw, ch, j]))

                    def exact(x=x, ref=ref, cnt=cnt, ov=ov):
                        # a neuron that is not refractory tests [0, D] and, without a crossing,
                        # propagates over D: the event's Phi(D), not 4 libm calls each time
                        with em.reuse_phi(D, Phi, phi):
                            st = _advance(em, x + [t_prev, ref, cnt, ov], T, b, j, out, S64,
                                          at_hz=arith.cmpi(arith.CmpIPredicate.uge, k, nv), xrec=xrec,
                                          erec=(erec, k))
                        memref.store(st[d + 1], refs, [j])
                        memref.store(st[d + 2], ints, [c0, j])
                        memref.store(st[d + 3], ints, [c1, j])
                        return list(st[:d]) + [st[d + 1]]

                    if peak_consts is None:
                        st = exact()
                    else:
                        # an interior maximum provably below theta (_peak_below; here, on the
                        # few flagged lanes, not in pass 1 where it cost every lane ~12 vector
                        # ops): the exact path would find no crossing and propagate with the
                        # event's Phi, the same bits as this
                        quiet = _tests(em, x, ref, t_prev, D)[1]
                        short = o.and_(quiet, _peak_below(em, x, D, Phi, phi, peak_consts))
                        st = o.if_(short, lambda: o.affine(Phi, x, phi) + [ref],
                                   exact, [ft] * (d + 1))
                    refmax2 = arith.maximumf(lf.inner_iter_args[0], st[d])
                    xj = em.materialize(em.jump(st[:d], w, port))
                    for q in range(d):
                        memref.store(xj[q], xs, [o.ci(q), j])
                    scf.yield_([refmax2])
                scf.yield_([T, nq, lf.results[0]])
            lo = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(lo.body):
                j = lo.induction_variable
                memref.store(memref.load(ints, [c0, j]), counts, [b, j])
                memref.store(memref.load(ints, [c1, j]), over, [b, j])
                scf.yield_([])
            scf.yield_([])
        func.ReturnOp([])
    return fn
