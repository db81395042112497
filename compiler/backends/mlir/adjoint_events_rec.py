"""The event-outer adjoint of a recurrent layer (DESIGN.md section 6b) as a JIT-compiled MLIR
kernel: the backward counterpart of the vectorised recurrent forward (mlir/recurrent_vec.py),
for layers whose parameters are shared, without delays. The per-event passes over the neurons
are those of the feed-forward kernel (mlir/adjoint_events.py: jump_lines, flow_lines).

Each sample's events, the external arrivals and the layer's own spikes merged in the forward's
delivery order (runtime/engines/adjoint_events_rec.py), are walked backwards once:

    event e of source row w_e (W[c_e] or w_rec[j]):      lam passes through the jump;
        gw_e += lam . B (all neurons),  gt_e = -sum_k (lam_k . A B) w_e[k]
    after the first event of a group of equal times:     per recurrent event e' of the group,
        spike of its source j:  lam_j <- M lam_j + cq (g + gt_e')       (cq = -c / u')
    then every neuron:          lam <- Phi(T_e - T_{e-1})^T lam

Arguments of @rec_events_backward (all dense, row-major):
    ev[B,n] i64 (per merged event: channel c >= 0, -1 for no jump (the horizon), -2 - j for a
    spike of neuron j), nm[B] i64 (events of each sample), flush[B,n] i64 (the last event of the
    group of equal times that e starts, else -1), spk[B,n] i64 (the flat spike of a recurrent
    event, else -1), phit[B,n,d*d] (Phi^T of the interval ending at each event), mm[S,d*d], cq[S,d],
    gs[S] (dL/ds from downstream), w[Bw,C,N], wrec[N,N], bab[2d] (B then A B),
    gw[Bg,C,N], gwrec[N,N] (accumulated into), gt[B,n] (out: dL/dt of each event), lam[d,N]
    (scratch); N a whole number of vectors (LANES), rows of wrec/gwrec padded likewise.
"""

from __future__ import annotations

from spikescan.compiler.backends.mlir.adjoint_events import (  # noqa: F401 (LANES: for callers)
    LANES, _TYPES, _mv, _types, compiled, flow_lines, invoke, jump_lines, prologue)


def source(d: int, et: str = "f64") -> str:
    """The kernel's MLIR text for state size d."""
    vt, m1, m2, m3 = _types(et)
    i1d, i2d = "memref<?xi64>", "memref<?x?xi64>"
    L = [f"func.func @rec_events_backward(%ev: {i2d}, %nm: {i1d}, %flush: {i2d}, %spk: {i2d}, %phit: {m3}, "
         f"%mm: {m2}, %cq: {m2}, %gs: {m1}, %w: {m3}, %wrec: {m2}, %bab: {m1}, %gw: {m3}, %gwrec: {m2}, "
         f"%gt: {m2}, %lam: {m2}) attributes {{llvm.emit_c_interface}} {{"]
    L += prologue(d, et, f"%ev : {i2d}")
    L += ["    %im1 = arith.constant -1 : i64",
          "    %im2 = arith.constant -2 : i64",
          f"    %nm64 = memref.load %nm[%b] : {i1d}",
          "    %nmb = arith.index_cast %nm64 : i64 to index",
          "    scf.for %r = %c0 to %nmb step %c1 {",
          "      %r1 = arith.addi %r, %c1 : index",
          "      %e = arith.subi %nmb, %r1 : index",
          f"      %code = memref.load %ev[%b, %e] : {i2d}",
          "      %isext = arith.cmpi sge, %code, %i0 : i64",
          "      %isrec = arith.cmpi slt, %code, %im1 : i64",
          # the event's jump: an input channel's row of W, or a spike's row of w_rec
          f"      %gte = scf.if %isext -> ({et}) {{",
          "        %cc = arith.index_cast %code : i64 to index"]
    L += jump_lines(d, et, f"%gw[%bg, %cc, %j] : {m3}", f"%w[%bw, %cc, %j] : {m3}")
    L += [f"        scf.yield %nacc : {et}",
          "      } else {",
          f"        %gr = scf.if %isrec -> ({et}) {{",
          "          %src64 = arith.subi %im2, %code : i64",
          "          %src = arith.index_cast %src64 : i64 to index"]
    L += jump_lines(d, et, f"%gwrec[%src, %j] : {m2}", f"%wrec[%src, %j] : {m2}", ind="          ")
    L += [f"          scf.yield %nacc : {et}",
          "        } else {",
          f"          scf.yield %zero : {et}",
          "        }",
          f"        scf.yield %gr : {et}",
          "      }",
          f"      memref.store %gte, %gt[%b, %e] : {m2}",
          # first event of a group of equal times: the group's spikes (their jumps are all done)
          f"      %fl64 = memref.load %flush[%b, %e] : {i2d}",
          "      %hasfl = arith.cmpi sge, %fl64, %i0 : i64",
          "      scf.if %hasfl {",
          "        %fl = arith.index_cast %fl64 : i64 to index",
          "        %fl1 = arith.addi %fl, %c1 : index",
          "        scf.for %e2 = %e to %fl1 step %c1 {",
          f"          %sp64 = memref.load %spk[%b, %e2] : {i2d}",
          "          %issp = arith.cmpi sge, %sp64, %i0 : i64",
          "          scf.if %issp {",
          "            %sp = arith.index_cast %sp64 : i64 to index",
          f"            %code2 = memref.load %ev[%b, %e2] : {i2d}",
          "            %jj64 = arith.subi %im2, %code2 : i64",
          "            %jj = arith.index_cast %jj64 : i64 to index",
          f"            %ga = memref.load %gt[%b, %e2] : {m2}",
          f"            %gd = memref.load %gs[%sp] : {m1}",
          f"            %gtot = arith.addf %gd, %ga : {et}"]
    L += [f"            %x{q} = memref.load %lam[%c{q}, %jj] : {m2}" for q in range(d)]
    ln, ys = _mv(d, et, "mm", "sp", [f"%x{q}" for q in range(d)], "M")
    L += ["      " + s for s in ln]
    for q in range(d):
        L += [f"            %cq{q} = memref.load %cq[%sp, %c{q}] : {m2}",
              f"            %qg{q} = arith.mulf %cq{q}, %gtot : {et}",
              f"            %y{q} = arith.addf {ys[q]}, %qg{q} : {et}",
              f"            memref.store %y{q}, %lam[%c{q}, %jj] : {m2}"]
    L += ["          }", "        }", "      }"]
    L += flow_lines(d, et, "%b, %e")
    L += ["    }", "  }", "  return", "}"]
    return "\n".join(L) + "\n"


def rec_events_backward(d: int, tensors: list) -> None:
    """Run @rec_events_backward on the tensors in the order of the module docstring."""
    dt = tensors[4].dtype
    if dt not in _TYPES:
        raise TypeError(f"rec_events_backward: float32 or float64 expected, got {dt}")
    et = _TYPES[dt]
    invoke(compiled(("rec", d, et), lambda: source(d, et)), "rec_events_backward", tensors)

