"""The event-outer adjoint (DESIGN.md section 6b) as a JIT-compiled MLIR kernel: the backward
counterpart of the vectorised event-outer forward (mlir/shared.py), for layers whose time
constants are shared and that have no delays.

Each sample's events are walked backwards once. Per event, one shared Phi(D)^T updates the
adjoints of all N neurons in one loop over the neuron dimension (contiguous: LLVM vectorises it),
and the event's jump accumulates dL/dW into the row of its source channel and dL/dt_k from the
same adjoints. The (rare) neurons that spiked in an interval take their own path, with per-spike
matrices prepared by the caller from the IR (runtime/engines/adjoint_events.py). The kernel
itself is neuron-agnostic but for the state size d (unrolled):

    lam_j(t_e+)  is given                      (jump: lam passes through x += B w)
    dL/dW[c_e, j] += lam_j . B,   dL/dt_e = -sum_j (lam_j . A B) W[c_e, j]
    lam_j <- Phi(T_e - T_{e-1})^T lam_j        (no spike of j in (T_{e-1}, T_e])
    lam_j <- After_m lam_j; per spike m (last first): lam_j <- M_m lam_j + q_m; lam_j <- Before_m lam_j

Arguments of @events_backward (all dense, row-major):
    ch[B,n] i64 (channels in arrival order), nv[B] i64 (valid events), want[1] i64 (unused),
    phit[B,n+1,d*d] (Phi^T of each interval; interval e ends at event e, interval nv at the horizon),
    gptr[B*(n+1)+1] i64 (spike groups of interval e of sample b: gptr[b*(n+1)+e] <= g <
    gptr[b*(n+1)+e+1]; flat, so one cumulative sum over the batch builds it),
    grp[G,3] i64 (neuron, last spike, first spike: flat spike indices), aft, mm, bef [S,d*d], q[S,d],
    w[Bw,C,N], bab[2d] (B then A B; [C, 2d] per channel for a layer with several ports), gw[Bg,C,N] (accumulated into), gt[B,n] (out),
    lam[d,N], tmp[G,d] (scratch); N a whole number of vectors (LANES).
"""

from __future__ import annotations

import ctypes
import threading

import torch

_LOCK = threading.Lock()
_ENGINES: dict = {}
_TYPES = {torch.float64: "f64", torch.float32: "f32"}


def _mv(d: int, et: str, mat: str, row: str, vin: list[str], pre: str, off: str = "") -> tuple[list[str], list[str]]:
    """Lines computing out_q = sum_r mat[row, q*d + r] * vin[r] (+ off[row, q] when given)."""
    lines, out = [], []
    for q in range(d):
        acc = None
        for r in range(d):
            lines.append(f"      %{pre}k{q}_{r} = arith.constant {q * d + r} : index")
            lines.append(f"      %{pre}m{q}_{r} = memref.load %{mat}[%{row}, %{pre}k{q}_{r}] : memref<?x?x{et}>")
            lines.append(f"      %{pre}p{q}_{r} = arith.mulf %{pre}m{q}_{r}, {vin[r]} : {et}")
            if acc is None:
                acc = f"%{pre}p{q}_{r}"
            else:
                lines.append(f"      %{pre}s{q}_{r} = arith.addf {acc}, %{pre}p{q}_{r} : {et}")
                acc = f"%{pre}s{q}_{r}"
        if off:
            lines.append(f"      %{pre}oq{q} = memref.load %{off}[%{row}, %c{q}] : memref<?x?x{et}>")
            lines.append(f"      %{pre}o{q} = arith.addf {acc}, %{pre}oq{q} : {et}")
            acc = f"%{pre}o{q}"
        out.append(acc)
    return lines, out


LANES = {"f64": 4, "f32": 8}  # one 256-bit register per vector op (as mlir_shared.LANES)


def _types(et: str) -> tuple:
    """(vector type, memref<?xet>, memref<?x?xet>, memref<?x?x?xet>)."""
    return f"vector<{LANES[et]}x{et}>", f"memref<?x{et}>", f"memref<?x?x{et}>", f"memref<?x?x?x{et}>"


def jump_lines(d: int, et: str, gw_ref: str, w_ref: str, ind: str = "        ", flow: bool = False) -> list[str]:
    """The jump of one event over all neurons (lam passes through): gw_ref += lam . B and
    %nacc = -sum_j (lam_j . A B) w_ref (gw_ref / w_ref: "%name[indices..., %j] : type", the last
    index the neuron %j). Needs %lam, %nN, %cV, %zv, %Bv<q>, %ABv<q> in scope. flow: the same
    pass then applies the interval's flow lam <- Phi^T lam from that one load of lam (the jump
    leaves lam unchanged; needs %ptv<q>_<r>, phit_lines)."""
    vt, _, m2, _ = _types(et)
    L = [ind + "%acc = scf.for %j = %c0 to %nN step %cV iter_args(%a = %zv) -> (" + vt + ") {"]
    lb, lab = None, None
    for q in range(d):
        L.append(f"{ind}  %l{q} = vector.load %lam[%c{q}, %j] : {m2}, {vt}")
        L.append(f"{ind}  %lb{q} = arith.mulf %l{q}, %Bv{q} : {vt}")
        L.append(f"{ind}  %la{q} = arith.mulf %l{q}, %ABv{q} : {vt}")
        if lb is None:
            lb, lab = f"%lb{q}", f"%la{q}"
        else:
            L.append(f"{ind}  %lbs{q} = arith.addf {lb}, %lb{q} : {vt}")
            L.append(f"{ind}  %las{q} = arith.addf {lab}, %la{q} : {vt}")
            lb, lab = f"%lbs{q}", f"%las{q}"
    gw_at, gw_t = gw_ref.split(" : ")
    w_at, w_t = w_ref.split(" : ")
    L += [f"{ind}  %g0 = vector.load {gw_at} : {gw_t}, {vt}",
          f"{ind}  %g1 = arith.addf %g0, {lb} : {vt}",
          f"{ind}  vector.store %g1, {gw_at} : {gw_t}, {vt}",
          f"{ind}  %wv = vector.load {w_at} : {w_t}, {vt}",
          f"{ind}  %tv = arith.mulf {lab}, %wv : {vt}",
          f"{ind}  %a2 = arith.addf %a, %tv : {vt}"]
    if flow:
        L += _flow_body(d, et, ind + "  ", "l")
    L += [f"{ind}  scf.yield %a2 : {vt}",
          ind + "}",
          f"{ind}%accs = vector.reduction <add>, %acc : {vt} into {et}",
          f"{ind}%nacc = arith.negf %accs : {et}"]
    return L


def flow_lines(d: int, et: str, at: str) -> list[str]:
    """Every neuron: lam <- Phi(D)^T lam with Phi^T = %phit[at, :] (contiguous in j: vectorised;
    Phi^T loaded once, outside the loop)."""
    return phit_lines(d, et, at) + flow_loop(d, et, "      ", "v")


def bcast_lines(d: int, et: str) -> list[str]:
    """%B<q>, %AB<q> from %bab (B then A B) and their vector broadcasts %Bv<q>, %ABv<q>."""
    vt, m1, _, _ = _types(et)
    L = []
    for q in range(d):
        L.append(f"  %B{q} = memref.load %bab[%c{q}] : {m1}")
        L.append(f"  %qi{q} = arith.constant {d + q} : index")
        L.append(f"  %AB{q} = memref.load %bab[%qi{q}] : {m1}")
        L.append(f"  %Bv{q} = vector.broadcast %B{q} : {et} to {vt}")
        L.append(f"  %ABv{q} = vector.broadcast %AB{q} : {et} to {vt}")
    return L


def prologue(d: int, et: str, batch_ref: str, bcast: bool = True) -> list[str]:
    """The shared start of both event-outer kernels: index constants %c0..., %zero, %i0, the
    batch size %nB (dim 0 of `batch_ref`, "%name : type"), %nN, the per-sample weight/gradient
    flags, %cV, %zv, the B / A B broadcasts, then the open sample loop over %b (with %bw, %bg)
    whose first statement zeroes %lam. The caller closes the loop and the function."""
    vt, _, m2, m3 = _types(et)
    L = ["\n".join(f"  %c{q} = arith.constant {q} : index" for q in range(max(d, 3) + 1)),
         f"  %zero = arith.constant 0.0 : {et}",
         "  %i0 = arith.constant 0 : i64",
         f"  %nB = memref.dim {batch_ref.split(' : ')[0]}, %c0 : {batch_ref.split(' : ')[1]}",
         f"  %nN = memref.dim %lam, %c1 : {m2}",
         f"  %Bw = memref.dim %w, %c0 : {m3}",
         f"  %Bg = memref.dim %gw, %c0 : {m3}",
         "  %wb = arith.cmpi ugt, %Bw, %c1 : index",
         "  %gb = arith.cmpi ugt, %Bg, %c1 : index",
         f"  %cV = arith.constant {LANES[et]} : index",
         f"  %zv = arith.constant dense<0.0> : {vt}"]
    if bcast:
        L += bcast_lines(d, et)
    L += ["  scf.for %b = %c0 to %nB step %c1 {",
          "    %bw = arith.select %wb, %b, %c0 : index",
          "    %bg = arith.select %gb, %b, %c0 : index",
          "    scf.for %j = %c0 to %nN step %c1 {"]
    L += [f"      memref.store %zero, %lam[%c{q}, %j] : {m2}" for q in range(d)]
    return L + ["    }"]


def channel_bcast_lines(d: int, et: str, ind: str = "        ") -> list[str]:
    """Several ports per layer: %Bv<q>, %ABv<q> of the event's channel %cc from %bab[C, 2d] (each
    channel's port's B then A B), loaded per event."""
    vt, _, m2, _ = _types(et)
    L = []
    for q in range(d):
        L.append(f"{ind}%B{q} = memref.load %bab[%cc, %c{q}] : {m2}")
        L.append(f"{ind}%qi{q} = arith.constant {d + q} : index")
        L.append(f"{ind}%AB{q} = memref.load %bab[%cc, %qi{q}] : {m2}")
        L.append(f"{ind}%Bv{q} = vector.broadcast %B{q} : {et} to {vt}")
        L.append(f"{ind}%ABv{q} = vector.broadcast %AB{q} : {et} to {vt}")
    return L


def phit_lines(d: int, et: str, at: str, ind: str = "      ") -> list[str]:
    """Phi^T = %phit[at, :] loaded once per event, as scalars %pt<q>_<r> and broadcasts %ptv<q>_<r>."""
    vt, _, _, m3 = _types(et)
    L = []
    for q in range(d):
        for r in range(d):
            L.append(f"{ind}%pk{q}_{r} = arith.constant {q * d + r} : index")
            L.append(f"{ind}%pt{q}_{r} = memref.load %phit[{at}, %pk{q}_{r}] : {m3}")
    for q in range(d):
        for r in range(d):
            L.append(f"{ind}%ptv{q}_{r} = vector.broadcast %pt{q}_{r} : {et} to {vt}")
    return L


def _flow_body(d: int, et: str, ind: str, src: str) -> list[str]:
    """lam[:, j] <- Phi^T lam[:, j] from the loaded %<src><q>."""
    vt, _, m2, _ = _types(et)
    L = []
    for q in range(d):
        acc = None
        for r in range(d):
            L.append(f"{ind}%pp{q}_{r} = arith.mulf %ptv{q}_{r}, %{src}{r} : {vt}")
            if acc is None:
                acc = f"%pp{q}_{r}"
            else:
                L.append(f"{ind}%ps{q}_{r} = arith.addf {acc}, %pp{q}_{r} : {vt}")
                acc = f"%ps{q}_{r}"
        L.append(f"{ind}%nw{q} = arith.addf {acc}, %zv : {vt}")
    L += [f"{ind}vector.store %nw{q}, %lam[%c{q}, %j] : {m2}, {vt}" for q in range(d)]
    return L


def flow_loop(d: int, et: str, ind: str, src: str) -> list[str]:
    """The loop over the neurons applying the loaded Phi^T (%ptv) to lam, loads named %<src><q>."""
    vt, _, m2, _ = _types(et)
    return ([ind + "scf.for %j = %c0 to %nN step %cV {"]
            + [f"{ind}  %{src}{q} = vector.load %lam[%c{q}, %j] : {m2}, {vt}" for q in range(d)]
            + _flow_body(d, et, ind + "  ", src) + [ind + "}"])


def source(d: int, et: str = "f64", multi: bool = False) -> str:
    """The kernel's MLIR text for state size d. The neuron dimension N of lam, w and gw must be a
    whole number of vectors (LANES[et]; the caller pads with zero weights). multi: bab is a table
    [C, 2d] (the B and A B of each input channel's port: a layer with several ports).

    Per interval e (last first): the spiking neurons' own path reads lam into tmp; one pass over
    the neurons then does the jump of event e (which leaves lam unchanged) and the flow over the
    interval; tmp overwrites the spiking neurons' lam."""
    vt, m1, m2, m3 = _types(et)
    i1d, i2d = "memref<?xi64>", "memref<?x?xi64>"
    L = [f"func.func @events_backward(%ch: {i2d}, %nv: {i1d}, %want: {i1d}, %phit: {m3}, %gptr: {i1d}, "
         f"%grp: {i2d}, %aft: {m2}, %mm: {m2}, %bef: {m2}, %q: {m2}, %w: {m3}, %bab: {m2 if multi else m1}, "
         f"%gw: {m3}, %gt: {m2}, %lam: {m2}, %tmp: {m2}) attributes {{llvm.emit_c_interface}} {{"]
    L += prologue(d, et, f"%ch : {i2d}", bcast=not multi)
    L += [f"    %np1 = memref.dim %phit, %c1 : {m3}",
          "    %gb0 = arith.muli %b, %np1 : index",
          f"    %nv64 = memref.load %nv[%b] : {i1d}",
          "    %nvb = arith.index_cast %nv64 : i64 to index",
          "    %nr = arith.addi %nvb, %c1 : index",
          "    scf.for %r = %c0 to %nr step %c1 {",
          "      %e = arith.subi %nvb, %r : index",
          "      %isev = arith.cmpi ugt, %r, %c0 : index",
          # the neurons that spiked in (T_{e-1}, T_e]: their own path, into tmp
          "      %ge = arith.addi %gb0, %e : index",
          f"      %g0i = memref.load %gptr[%ge] : {i1d}",
          "      %e1 = arith.addi %ge, %c1 : index",
          f"      %g1i = memref.load %gptr[%e1] : {i1d}",
          "      %ga = arith.index_cast %g0i : i64 to index",
          "      %gz = arith.index_cast %g1i : i64 to index",
          "      scf.for %g = %ga to %gz step %c1 {",
          f"        %j64 = memref.load %grp[%g, %c0] : {i2d}",
          f"        %hi64 = memref.load %grp[%g, %c1] : {i2d}",
          f"        %lo64 = memref.load %grp[%g, %c2] : {i2d}",
          "        %jj = arith.index_cast %j64 : i64 to index",
          "        %hi = arith.index_cast %hi64 : i64 to index",
          "        %lo = arith.index_cast %lo64 : i64 to index"]
    L += [f"        %x{q} = memref.load %lam[%c{q}, %jj] : {m2}" for q in range(d)]
    ln, after = _mv(d, et, "aft", "hi", [f"%x{q}" for q in range(d)], "A")
    L += ["  " + s for s in ln]
    L += ["        %nsp = arith.subi %hi, %lo : index",
          "        %nsp1 = arith.addi %nsp, %c1 : index",
          "        %fin:" + str(d) + " = scf.for %k = %c0 to %nsp1 step %c1 iter_args(" +
          ", ".join(f"%y{q} = {after[q]}" for q in range(d)) + ") -> (" + ", ".join([et] * d) + ") {",
          "          %m = arith.subi %hi, %k : index"]
    ln, ys = _mv(d, et, "mm", "m", [f"%y{q}" for q in range(d)], "M", off="q")
    L += ["    " + s for s in ln]
    ln, zs = _mv(d, et, "bef", "m", ys, "P")
    L += ["    " + s for s in ln]
    L += ["          scf.yield " + ", ".join(zs) + " : " + ", ".join([et] * d),
          "        }"]
    L += [f"        memref.store %fin#{q}, %tmp[%g, %c{q}] : {m2}" for q in range(d)]
    L += ["      }"]
    L += phit_lines(d, et, "%b, %e")
    # event e's jump (lam passes through: dL/dW row, dL/dt) fused with the interval's flow
    L += ["      scf.if %isev {",
          f"        %c64 = memref.load %ch[%b, %e] : {i2d}",
          "        %cc = arith.index_cast %c64 : i64 to index"]
    if multi:
        L += channel_bcast_lines(d, et)
    L += jump_lines(d, et, f"%gw[%bg, %cc, %j] : {m3}", f"%w[%bw, %cc, %j] : {m3}", flow=True)
    L += [f"        memref.store %nacc, %gt[%b, %e] : {m2}",
          "      } else {"]
    L += flow_loop(d, et, "        ", "l")
    L += ["      }"]
    L += ["      scf.for %g = %ga to %gz step %c1 {",
          f"        %j64b = memref.load %grp[%g, %c0] : {i2d}",
          "        %jb = arith.index_cast %j64b : i64 to index"]
    for q in range(d):
        L.append(f"        %t{q} = memref.load %tmp[%g, %c{q}] : {m2}")
        L.append(f"        memref.store %t{q}, %lam[%c{q}, %jb] : {m2}")
    L += ["      }", "    }", "  }", "  return", "}"]
    return "\n".join(L) + "\n"


def compiled(key: tuple, make_source):
    """The ExecutionEngine of make_source() (MLIR text), lowered and JIT-compiled once per key."""
    with _LOCK:
        if key not in _ENGINES:
            from torch_mlir import execution_engine, ir, passmanager

            from spikescan.compiler.backends.mlir.cpu_jit import LOWER

            ctx = ir.Context()
            with ctx, ir.Location.unknown():
                mod = ir.Module.parse(make_source())
                passmanager.PassManager.parse(LOWER).run(mod.operation)
                eng = execution_engine.ExecutionEngine(mod, opt_level=3)
            _ENGINES[key] = (ctx, mod, eng)  # the context lives as long as the engine
        return _ENGINES[key][2]


def _engine(d: int, et: str, multi: bool = False):
    return compiled((d, et) + (("multi",) if multi else ()), lambda: source(d, et, multi))


def invoke(eng, name: str, tensors: list) -> None:
    """Call @name on dense (contiguous) torch tensors, zero-copy."""
    from spikescan.compiler.backends.mlir.cpu_jit import memref_of

    for t in tensors:
        if not t.is_contiguous():
            raise ValueError(f"{name}: every tensor must be contiguous (dense memrefs)")
    descs = [memref_of(t) for t in tensors]
    eng.invoke(name, *[ctypes.pointer(ctypes.pointer(x)) for x in descs])


def events_backward(d: int, tensors: list) -> None:
    """Run @events_backward on the tensors in the order of the module docstring (contiguous)."""
    dt = tensors[3].dtype
    if dt not in _TYPES:
        raise TypeError(f"events_backward: float32 or float64 expected, got {dt}")
    invoke(_engine(d, _TYPES[dt], tensors[11].dim() == 2), "events_backward", tensors)
