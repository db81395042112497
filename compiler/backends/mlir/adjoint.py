"""The adjoint (reverse) event loop of the exact sequential engine, emitted as MLIR from the same
NeuronIR as the forward loop (DESIGN.md sections 5 and 6):

    build_backward_module(ir, dtype="f64", port=None) -> ir.Module   (func @layer_backward)

Per sample b and neuron j, the lane is first replayed forward by the very code of the forward
loop (mlir_emit.lane_forward), recording one tape row per step: the interval-start state x, the
start time t, the step length D and what the step was:

    PROP      propagate x by D to the next arrival (aux = event index e) or to the horizon
              (aux = -1); the event's jump x += B w follows
    SPIKE     a solved crossing at t* = t + D*(x, p), then the reset x <- R x + r
    SPIKE_REF a crossing at the end of the refractory period: t* = ref_end
    SPIKE_NOW a crossing at the interval start (an input jumped u over theta): t* = t
    (aux = the spike's rank, -1 for a spike past the cap)

then the tape is walked backwards with the adjoints (lam_x, lam_t, lam_ref) of the state, the
current time and the refractory end:

    propagate: lam_D = lam_x . (A x' + a0),  lam_x <- Phi(D)^T lam_x,  the arrival gets
               lam_t + lam_D (to times[b, e] and delays[ch, j]),  lam_t <- -lam_D
    jump:      dL/dw += lam_x . B
    spike:     lam_t* = lam_t + lam_ref + dL/dt*;  lam_s = R^T lam_x;
               lam_D = lam_s . (A x_s + a0) + lam_t*;  lam_x <- Phi(D)^T lam_s + lam_D dD*/dx
               (IFT: dD*/dx = -c^T Phi(D*)/u', dD*/dp = -(du/dp - dtheta/dp)/u')

and every parameter derivative (of Phi, phi, B, R, r, t_ref, theta, init) is printed from sympy
derivatives of the IR's own expressions. Memory: one tape of (n + S + 2) rows, reused by every
lane (the lanes run one after another), so it never grows with the batch or the layer width.

Arguments of @layer_backward: those of @layer (times, chan, order, weight, delays, nvalid,
horizon, p_1..p_P), then gout[B,N,S] (dL/d spike time, S = the forward's spike cap), counts[B,N]
i64 (out: the replayed spike counts, for a consistency check), gtimes[B,n], gweight[B,C,N],
gdelays[C,N], gparams[N,max(P,1)] (all accumulated into, zero them first), tape_f[M,d+2],
tape_i[M,2] i64, tpos[1] i64 (scratch)."""

from __future__ import annotations

from typing import Optional

from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.adjoint_forms import PROP, SPIKE, SPIKE_NOW, SPIKE_REF, AdjointForms  # noqa: F401 (re-exported)
from spikescan.compiler.ir import DT, NeuronIR
from spikescan.compiler.backends.mlir.emit import CLEANUP, NeuronEmitter, _memref, lane_forward, pmap_types
from spikescan.compiler.backends.mlir.ops import ExprPrinter, add_helpers, float_type


def _printer(em: NeuronEmitter, forms: AdjointForms, D=None, X=None, L=None) -> ExprPrinter:
    env = dict(em.P.env)
    if D is not None:
        env[DT.name] = D
    for sym, v in zip(forms.X, X or []):
        env[sym.name] = em.o.z(v)
    for sym, v in zip(forms.L, L or []):
        env[sym.name] = em.o.z(v)
    return ExprPrinter(em.o, env)


def _print_all(pr: ExprPrinter, exprs) -> list:
    return [pr(e) for e in exprs]


def build_layer_backward(em: NeuronEmitter, port: Optional[str] = None, name: str = "layer_backward",
                         with_params: bool = True):
    o = em.o
    ft = o.ft
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    d = em.d
    npar = len(em.pnames)
    forms = AdjointForms(em.ir, port, with_params)
    types = ([_memref(2, ft), _memref(2, i64), _memref(3, i64), _memref(3, ft), _memref(2, ft),
              _memref(1, i64), _memref(2, ft)] + [_memref(1, ft)] * npar
             + [_memref(3, ft), _memref(2, i64), _memref(2, ft), _memref(3, ft), _memref(2, ft),
                _memref(2, ft), _memref(2, ft), _memref(2, i64), _memref(1, i64)] + pmap_types(port))
    fn = func.FuncOp(name, ir.FunctionType.get(types, []))
    fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    blk = fn.add_entry_block()
    with ir.InsertionPoint(blk):
        a = em.take_pmap(port, list(blk.arguments))
        times, chan, order, weight, delays, nvalid, horizon = a[:7]
        pmem = a[7:7 + npar]
        gout, counts, gtimes, gweight, gdelays, gparams, tape_f, tape_i, tpos = a[7 + npar:]
        c0, c1 = o.ci(0), o.ci(1)
        nB = memref.dim(order, c0)
        nN = memref.dim(order, c1)
        S64 = arith.index_cast(i64, memref.dim(gout, o.ci(2)))
        M64 = arith.index_cast(i64, memref.dim(tape_f, c0))
        zero64 = arith.constant(i64, 0)
        lb = scf.ForOp(c0, nB, c1)
        with ir.InsertionPoint(lb.body):
            b = lb.induction_variable
            nv = arith.index_cast(idx, memref.load(nvalid, [b]))
            lj = scf.ForOp(c0, nN, c1)
            with ir.InsertionPoint(lj.body):
                j = lj.induction_variable
                em.setup({n: memref.load(m, [j]) for n, m in zip(em.pnames, pmem)})
                memref.store(zero64, tpos, [c0])

                def tape(aux_event):
                    def record(x, t, lo, hi, Dc, found, rec, cnt):
                        pos = memref.load(tpos, [c0])
                        at_lo = arith.cmpf(arith.CmpFPredicate.OEQ, Dc, lo)
                        kind_sp = o.sel(at_lo, o.sel(o.gt(lo, o.c(0.0)), arith.constant(i64, SPIKE_REF),
                                                     arith.constant(i64, SPIKE_NOW)),
                                        arith.constant(i64, SPIKE))
                        kind = o.sel(found, kind_sp, arith.constant(i64, PROP))
                        aux = o.sel(found, o.sel(rec, cnt, arith.constant(i64, -1)), aux_event)
                        D = o.sel(found, Dc, hi)

                        def store():
                            p = arith.index_cast(idx, pos)
                            for q in range(d):
                                memref.store(x[q], tape_f, [p, o.ci(q)])
                            memref.store(t, tape_f, [p, o.ci(d)])
                            memref.store(D, tape_f, [p, o.ci(d + 1)])
                            memref.store(kind, tape_i, [p, c0])
                            memref.store(aux, tape_i, [p, c1])

                        o.if_void(arith.cmpi(arith.CmpIPredicate.slt, pos, M64), store)
                        memref.store(arith.addi(pos, arith.constant(i64, 1)), tpos, [c0])

                    return record

                res = lane_forward(em, b, j, nv, times, chan, order, weight, delays, horizon, None,
                                   S64, port, tape=tape)
                memref.store(res[d + 2], counts, [b, j])
                npos = arith.index_cast(idx, arith.minsi(memref.load(tpos, [c0]), M64))
                lam = _reverse(em, forms, npos, b, j, chan, weight, gout, gtimes, gweight, gdelays,
                               tape_f, tape_i, port)
                lx, gp = lam[:d], lam[d + 2:]
                gp = [o.add(g, v) for g, v in zip(gp, _print_all(_printer(em, forms, L=lx), forms.init))]
                for q in range(npar):
                    cur = memref.load(gparams, [j, o.ci(q)])
                    memref.store(arith.addf(cur, gp[q]), gparams, [j, o.ci(q)])
                scf.yield_([])
            scf.yield_([])
        func.ReturnOp([])
    return fn


def _transpose_apply(o, M, v):
    """M^T v with None entries as structural zeros."""
    d = len(v)
    return [o.dot([M[i][j] for i in range(d)], v) for j in range(d)]


def _reverse(em: NeuronEmitter, forms: AdjointForms, npos, b, j, chan, weight, gout, gtimes, gweight,
             gdelays, tape_f, tape_i, port):
    """Walk the tape backwards; returns (lam_x..., lam_t, lam_ref, dL/dp...) at t = 0."""
    o = em.o
    ft = o.ft
    i64 = ir.IntegerType.get_signless(64)
    idx = ir.IndexType.get()
    d = em.d
    npar = len(em.pnames)
    c0, c1 = o.ci(0), o.ci(1)
    zero = o.c(0.0)
    inits = [zero] * (d + 2 + npar)
    lr = scf.ForOp(c0, npos, c1, inits)
    with ir.InsertionPoint(lr.body):
        r = lr.induction_variable
        i = arith.subi(arith.subi(npos, c1), r)
        carried = list(lr.inner_iter_args)
        lx, lt, lref, gp = carried[:d], carried[d], carried[d + 1], carried[d + 2:]
        x = [memref.load(tape_f, [i, o.ci(q)]) for q in range(d)]
        D = memref.load(tape_f, [i, o.ci(d + 1)])
        kind = memref.load(tape_i, [i, c0])
        aux = memref.load(tape_i, [i, c1])
        has = arith.cmpi(arith.CmpIPredicate.sge, aux, arith.constant(i64, 0))
        Phi, phi = em.phi_at(D)

        def prop():
            e = arith.index_cast(idx, o.sel(has, aux, arith.constant(i64, 0)))
            ch = arith.index_cast(idx, memref.load(chan, [b, e]))
            em.select_port(ch)  # several ports: this event's B (and dB/dp)
            w = o.sel(has, memref.load(weight, [b, ch, j]), zero)
            lx2, lt2, gw, garr, gp2 = adjoint_arrival(em, forms, x, D, Phi, phi, w, lx, lt, gp, em.port_B(port))

            def scatter():
                _acc(gweight, [b, ch, j], gw)
                _acc(gtimes, [b, e], garr)
                _acc(gdelays, [ch, j], garr)

            o.if_void(has, scatter)
            return lx2 + [lt2, lref] + gp2

        def spike():
            s = arith.index_cast(idx, o.sel(has, aux, arith.constant(i64, 0)))
            g = o.sel(has, memref.load(gout, [b, j, s]), zero)
            lx2, lt2, lref2, gp2 = adjoint_spike(em, forms, kind, x, D, Phi, phi, g, has, lx, lt, lref, gp)
            return lx2 + [lt2, lref2] + gp2

        is_prop = arith.cmpi(arith.CmpIPredicate.eq, kind, arith.constant(i64, PROP))
        res = o.if_(is_prop, prop, spike, [ft] * (d + 2 + npar))
        scf.yield_(res)
    return list(lr.results)



def adjoint_arrival(em: NeuronEmitter, forms: AdjointForms, x, D, Phi, phi, w, lx, lt, gp, Bv):
    """Reverse of "propagate the interval-start state x by D to an arrival, then jump by B w":
    returns (lam_x before the interval, lam_t of its start, dL/dw, dL/d(arrival time), gp)."""
    o = em.o
    # the jump: dL/dw = lam_x . B, dL/dp += w lam_x . dB/dp
    gw = o.z(o.dot(Bv, lx))
    if isinstance(forms.jump, dict):  # several ports: the current event's (em.select_port)
        gj = em.port_select([_print_all(_printer(em, forms, L=lx), f) for f in forms.jump.values()])
    else:
        gj = _print_all(_printer(em, forms, L=lx), forms.jump)
    gp2 = [o.add(g, o.mul(w, v)) for g, v in zip(gp, gj)]
    xn = em.materialize(o.affine(Phi, x, phi))
    lD = o.z(o.dot(lx, em.deriv(xn)))
    gpr = _print_all(_printer(em, forms, D=D, X=x, L=lx), forms.prop)
    gp2 = [o.z(o.add(g, v)) for g, v in zip(gp2, gpr)]
    lx2 = em.materialize(_transpose_apply(o, Phi, lx))
    return lx2, arith.negf(lD), gw, arith.addf(lt, lD), gp2


def adjoint_spike(em: NeuronEmitter, forms: AdjointForms, kind, x, D, Phi, phi, g, has, lx, lt, lref, gp):
    """Reverse of a spike step (kind SPIKE / SPIKE_REF / SPIKE_NOW) from the interval-start state
    x at offset D, with dL/dt* = g from outside (has: the spike was recorded, so its refractory
    end is live): returns (lam_x, lam_t, lam_ref, gp) before the step."""
    o = em.o
    i64 = ir.IntegerType.get_signless(64)
    zero = o.c(0.0)
    lref_in = o.sel(has, lref, zero)  # a spike past the cap leaves ref_end unused
    lts = arith.addf(lt, arith.addf(lref_in, g))
    gp2 = [o.add(gq, o.mul(lref_in, v)) for gq, v in
           zip(gp, _print_all(_printer(em, forms), forms.tref))]
    xs = em.materialize(o.affine(Phi, x, phi))
    gp2 = [o.add(gq, v) for gq, v in zip(gp2, _print_all(_printer(em, forms, X=xs, L=lx), forms.reset))]
    ls = em.materialize(_transpose_apply(o, em.R, lx))
    ys = em.deriv(xs)
    up = o.z(o.dot(em.cvec, ys))  # u'(D*): the IFT denominator
    lD = arith.addf(o.z(o.dot(ls, ys)), lts)
    gp2 = [o.add(gq, v) for gq, v in zip(gp2, _print_all(_printer(em, forms, D=D, X=x, L=ls), forms.prop))]
    lx2 = em.materialize(_transpose_apply(o, Phi, ls))
    normal = arith.cmpi(arith.CmpIPredicate.eq, kind, arith.constant(i64, SPIKE))
    at_ref = arith.cmpi(arith.CmpIPredicate.eq, kind, arith.constant(i64, SPIKE_REF))
    # IFT, only where the spike was solved (select: the other kinds may have u' = 0)
    k = o.sel(normal, arith.negf(arith.divf(lD, o.sel(normal, up, o.c(1.0)))), zero)
    cPhi = [o.z(v) for v in _transpose_apply(o, Phi, em.cvec)]  # Phi^T c
    lx2 = [arith.addf(v, arith.mulf(k, cv)) for v, cv in zip(lx2, cPhi)]
    du = _print_all(_printer(em, forms, D=D, X=x), forms.u)
    gp2 = [o.add(gq, o.mul(k, v)) for gq, v in zip(gp2, du)]
    lt2 = o.sel(at_ref, arith.subf(lts, lD), lts)
    lref2 = o.sel(at_ref, lD, zero)
    return lx2, lt2, lref2, [o.z(gq) for gq in gp2]

def _acc(mem, index, v):
    memref.store(arith.addf(memref.load(mem, index), v), mem, index)


def build_backward_module(nir: NeuronIR, dtype: str = "f64", port: Optional[str] = None,
                          with_params: bool = True) -> ir.Module:
    """Module with @layer_backward only (built on the first backward: forward-only users never pay
    its compile time). with_params=False leaves gparams untouched and skips every parameter
    derivative (about half the backward's work). The caller keeps `module.context` alive."""
    if nir.c is None or nir.theta is None:
        raise NotImplementedError(f"{nir.name}: the adjoint event loop needs a threshold")
    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        float_type(dtype)
        em = NeuronEmitter(nir, dtype)
        m = ir.Module.create()
        with ir.InsertionPoint(m.body):
            add_helpers(em.o)
            build_layer_backward(em, port=port, with_params=with_params)
        if not m.operation.verify():
            raise RuntimeError(f"{nir.name}: emitted adjoint MLIR does not verify")
        passmanager.PassManager.parse(CLEANUP).run(m.operation)
    return m
