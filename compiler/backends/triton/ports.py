"""Triton kernels for a layer whose input channels use several ports (runtime/engines/ports.py).

The kernels `seq_kernel__multiport`, `scan_kernel__multiport` and `adj_kernel__multiport` are the
single-port kernels of triton_kernels.py / triton_adjoint.py with one more first argument, PMAP
(the port index of each input channel): every event loads its port index `pk` next to its weight,
and the port-dependent helpers select by it:

    jump__multiport(pk, x, w)   x + B_pk w        (each port's jump with w where pk == port, else 0)
    maps__multiport(pk, D, w)   (Phi(D), phi(D) + B_pk w)
    bvec__multiport(pk, ref)    B_pk              (dL/dW = lam . B_pk)
    gpf_jump__multiport(pk, l)  d(l . B_pk)/dp    (parameter gradients)

The port-independent helpers (propagation, reset, the maps of the backward rows with w = 0) are
the first port's. A jump with weight 0 adds exactly 0, so an event's state is bit for bit the
single-port kernel's for its own port."""

from __future__ import annotations

import re

from .kernels import _scan_kernel, _seq_kernel, _v

MP = "_multiport"


def wanted(g) -> bool:
    return bool(g.spiking and len(g.ir.ports) > 1)


def emit_helpers(g) -> None:
    """The selecting helpers (after the per-port ones, which they call)."""
    ports = list(g.ir.ports)
    d, P, X = g.d, g.P, g.X
    body = []
    for k, p in enumerate(ports):
        body.append(f"    {X} = jump_{p}({X}, tl.where(pk == {k}, w, 0.0), {P})")
    g.fn(f"jump_{MP}", f"pk, {X}, w, {P}", body, X)
    M = ", ".join(f"m{i}_{j}" for i, j in g.nz)
    Bs = _v("b", d)
    body = [f"    {M}, {Bs} = maps_{ports[0]}(D, tl.where(pk == 0, w, 0.0), {P})"]
    for k, p in enumerate(ports[1:], 1):
        body.append(f"    {Bs} = jump_{p}({Bs}, tl.where(pk == {k}, w, 0.0), {P})")
    g.fn(f"maps_{MP}", f"pk, D, w, {P}", body, f"{M}, {Bs}")
    _select_fn(g, "bvec", ports, "ref", d, "y")
    if g.pnames:
        _select_fn(g, "gpf_jump", ports, ", ".join(f"l{i}" for i in range(d)), len(g.pnames), "q")


def _select_fn(g, base: str, ports: list, args: str, nout: int, out: str) -> None:
    ys = _v(out, nout)
    body = []
    for k, p in enumerate(ports):
        zs = _v("z", nout)
        body.append(f"    {zs} = {base}_{p}({args}, {g.P})")
        for i in range(nout):
            prev = "0.0" if k == 0 else f"{out}{i}"
            body.append(f"    {out}{i} = tl.where(pk == {k}, z{i}, {prev})")
    g.fn(f"{base}_{MP}", f"pk, {args}, {g.P}", body, ys)


_W_LOAD = re.compile(r"^(\s*)w = tl\.load\(W \+ b \* s_wb \+ ch \* N \+ jt?, mask=isev")
_CH_LOAD = re.compile(r"^(\s*)che = tl\.load\(CH \+ b \* s_chb \+ e, mask=pv, other=0\)")


def patch(g, lines: list) -> list:
    """The single-port kernel text generated for port MP -> the PMAP kernels."""
    p0 = next(iter(g.ir.ports))
    out = []
    for ln in lines:
        ln = re.sub(r"def (seq|scan|adj)_kernel_" + MP + r"\(", lambda m: f"def {m.group(1)}_kernel_{MP}(PMAP, ", ln)
        ln = ln.replace(f"maps_{MP}(D_", f"maps_{p0}(D_")  # the backward rows: w = 0
        for k in ("prop", "reset", "init", "tref", "u"):
            ln = ln.replace(f"gpf_{k}_{MP}(", f"gpf_{k}_{p0}(")
        for k in ("jump", "maps", "bvec"):  # also gpf_jump
            ln = ln.replace(f"{k}_{MP}(", f"{k}_{MP}(pk, ")
        out.append(ln)
        m = _W_LOAD.match(ln)
        if m:
            out.append(f"{m.group(1)}pk = tl.load(PMAP + ch, mask=isev, other=0)")
        m = _CH_LOAD.match(ln)
        if m:
            out.append(f"{m.group(1)}pk = tl.load(PMAP + che, mask=pv, other=0)")
    return out


def kernels(g, dt: str) -> list:
    from .adjoint import _adj_kernel

    emit_helpers(g)
    L = _seq_kernel(g, MP, dt) + _scan_kernel(g, MP, dt) + _adj_kernel(g, MP, dt)
    return patch(g, L)
