"""The sparse engine with external input events (docs/sparse.md, "Networks with inputs"): the
module of mlir/sparse.py plus func @sparse_run_inputs, which merges a sorted list of input
events into the heap's event order.

An input event (time t_m, channel ch_m) is delivered like a network spike of a neuron that is not
in the heap: for every input connection whose source holds ch_m, each target in its CSR row is
advanced to t_m, jumps by B_port w, is re-solved and moves in the heap (SparseEmitter.deliver_row,
the same code as a network spike's delivery). Per step of the loop the earlier of the heap's top
and the next input event goes first; on a tie the input goes first (runtime/sparse/reference.py
follows the same rule). Input events are not recorded as spikes.

    sparse_run_inputs(<the 12 arguments of sparse_run>, in_t[M] f64 (sorted), in_ch[M] i64
        (input channel, global over the input populations), in_cinfo[Ci, 5] i64, in_cw[Ci] f64,
        in_indptr[*] i64, in_targets[*] i32, in_weights[*] f64 (the input connections' CSR,
        laid out as the network's), icnt[1] i64 (input events consumed so far))

The existing functions (sparse_init, sparse_run) are unchanged; a run resumes where it stopped
(cnt, icnt) when the spike cap is reached.
"""

from __future__ import annotations

from torch_mlir import ir, passmanager
from torch_mlir.dialects import arith, func, memref, scf

from spikescan.compiler.ir import NeuronIR
from spikescan.compiler.backends.mlir.emit import CLEANUP, _memref
from spikescan.compiler.backends.mlir.ops import add_helpers, float_type
from spikescan.compiler.backends.mlir.sparse import HEAP_PAD, RUN_ARGS, SparseEmitter, _Args

IN_ARGS = ("in_t", "in_ch", "in_cinfo", "in_cw", "in_indptr", "in_targets", "in_weights", "icnt")
RUN_INPUT_ARGS = RUN_ARGS + IN_ARGS


class SparseInputEmitter(SparseEmitter):
    def _in_types(self):
        o = self.o
        i32, i64 = ir.IntegerType.get_signless(32), self.i64()
        t = {"in_t": _memref(1, o.ft), "in_ch": _memref(1, i64), "in_cinfo": _memref(2, i64),
             "in_cw": _memref(1, o.ft), "in_indptr": _memref(1, i64), "in_targets": _memref(1, i32),
             "in_weights": _memref(1, o.ft), "icnt": _memref(1, i64)}
        return self._types(RUN_ARGS) + [t[n] for n in IN_ARGS]

    def deliver_input(self, A, update_fn, ch, ts, t_end, window):
        """Input event on channel ch (i64) at ts: every input connection's row of ch."""
        o = self.o
        i64 = self.i64()
        c0, c1 = o.ci(0), o.ci(1)
        # deliver_row reads targets / weights from its args: the input CSR, same S, H, params
        Ai = _Args({"S": A.S, "H": A.H, "params": A.params, "targets": A.in_targets, "weights": A.in_weights})
        cl = scf.ForOp(c0, memref.dim(A.in_cinfo, c0), c1)
        with ir.InsertionPoint(cl.body):
            c = cl.induction_variable
            src_off, n_src, pbase, tbase, port = [memref.load(A.in_cinfo, [c, o.ci(q)]) for q in range(5)]
            local = arith.subi(ch, src_off)
            inside = o.and_(arith.cmpi(arith.CmpIPredicate.sge, local, arith.constant(i64, 0)),
                            arith.cmpi(arith.CmpIPredicate.slt, local, n_src))

            def deliver():
                row = self.idx(arith.addi(pbase, local))
                a = self.idx(arith.addi(memref.load(A.in_indptr, [row]), tbase))
                b = self.idx(arith.addi(memref.load(A.in_indptr, [arith.addi(row, c1)]), tbase))
                wc = memref.load(A.in_cw, [c])
                per_syn = arith.cmpf(arith.CmpFPredicate.UNO, wc, wc)
                # per target: inputs are rare next to network spikes, no hoisting
                self.deliver_row(Ai, update_fn, a, b, wc, per_syn, port, ts, t_end, window, False)

            o.if_void(inside, deliver)
            scf.yield_([])

    def build_run_inputs(self, update_fn):
        o, em = self.o, self.em
        i64 = self.i64()
        fn = func.FuncOp("sparse_run_inputs", ir.FunctionType.get(self._in_types(), []))
        fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        blk = fn.add_entry_block()
        with ir.InsertionPoint(blk):
            A = _Args(dict(zip(RUN_INPUT_ARGS, blk.arguments)))
            c0, c1 = o.ci(0), o.ci(1)
            top = o.ci(HEAP_PAD)
            t_end = memref.load(A.ctl, [c0])
            shared = o.gt(memref.load(A.ctl, [c1]), o.c(0.0))
            window = memref.load(A.ctl, [o.ci(2)])
            cap = memref.load(A.cnt, [c1])
            nC = memref.dim(A.cinfo, c0)
            M = arith.index_cast(i64, memref.dim(A.in_t, c0))

            def next_input(m):
                """(an input event is pending at or before t_end, its time)"""
                has = arith.cmpi(arith.CmpIPredicate.slt, m, M)
                mi = self.idx(arith.select(has, m, arith.constant(i64, 0)))
                tin = o.sel(has, memref.load(A.in_t, [mi]), o.c(float("inf")))
                return o.and_(has, o.le(tin, t_end)), tin, mi

            w = scf.WhileOp([i64, i64], [memref.load(A.cnt, [c0]), memref.load(A.icnt, [c0])])
            before = w.before.blocks.append(i64, i64)
            with ir.InsertionPoint(before):
                s, m = before.arguments
                ts = memref.load(A.H, [top, c0])
                pending, _, _ = next_input(m)
                go = o.and_(o.or_(o.le(ts, t_end), pending), arith.cmpi(arith.CmpIPredicate.slt, s, cap))
                scf.condition(go, [s, m])
            after = w.after.blocks.append(i64, i64)
            with ir.InsertionPoint(after):
                s, m = after.arguments
                ts = memref.load(A.H, [top, c0])
                pending, tin, mi = next_input(m)
                first = o.and_(pending, o.le(tin, ts))  # ties: the input first

                def input_event():
                    self.deliver_input(A, update_fn, memref.load(A.in_ch, [mi]), tin, t_end, window)
                    return [s, arith.addi(m, arith.constant(i64, 1))]

                def network_event():
                    jf = memref.load(A.H, [top, c1])
                    j = self.f2idx(jf)
                    wake = arith.cmpf(arith.CmpFPredicate.ONE, jf, self.idx2f(j))

                    def wake_up():  # as in sparse_run
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

                    return [o.if_(wake, wake_up, spike, [i64])[0], m]

                scf.yield_(o.if_(first, input_event, network_event, [i64, i64]))
            memref.store(w.results[0], A.cnt, [c0])
            memref.store(w.results[1], A.icnt, [c0])
            func.ReturnOp([])
        return fn


def build_sparse_inputs_module(nir: NeuronIR, dtype: str = "f64") -> ir.Module:
    """sparse_init, sparse_run and sparse_run_inputs in one module (fresh context)."""
    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        float_type(dtype)
        se = SparseInputEmitter(nir, dtype)
        m = ir.Module.create()
        with ir.InsertionPoint(m.body):
            add_helpers(se.o)
            upd = se.build_update()
            se.build_init()
            se.build_run(upd)
            se.build_run_inputs(upd)
        if not m.operation.verify():
            raise RuntimeError(f"{nir.name}: the emitted sparse engine with inputs does not verify")
        passmanager.PassManager.parse(CLEANUP).run(m.operation)
    return m
