"""Human-readable account of the analysis (`spikescan compile --explain`): the linear system, the
propagator, the reset structure, the isolation chain and solver, the no-crossing test."""

from __future__ import annotations

import sympy

from .ir import NetworkIR, NeuronIR


def _mat(m: sympy.Matrix, indent: str = "      ") -> str:
    rows = [[sympy.sstr(v) for v in m.row(i)] for i in range(m.rows)]
    width = [max(len(r[j]) for r in rows) for j in range(m.cols)]
    return "\n".join(indent + "[ " + "  ".join(v.rjust(w) for v, w in zip(r, width)) + " ]" for r in rows)


def _lin(row, names) -> str:
    terms = []
    for v, n in zip(row, names):
        if v == 0:
            continue
        terms.append(n if v == 1 else f"-{n}" if v == -1 else f"({sympy.sstr(v)})*{n}")
    return " + ".join(terms).replace("+ -", "- ") or "0"


def explain_neuron(ir: NeuronIR) -> str:
    names = ir.state
    out = [f"neuron {ir.name}"]
    out.append(f"  state x = ({', '.join(names)})   d = {ir.d}")
    out.append("  parameters: " + ", ".join(
        f"{p.name} = {p.default:g}{' ms' if p.dim == 1 else ''}" for p in ir.params))
    out.append("  between events: dx/dt = A x + a0")
    out.append("    A =\n" + _mat(ir.A))
    if any(v != 0 for v in ir.a0):
        out.append("    a0 =\n" + _mat(ir.a0))
    for port, B in ir.ports.items():
        out.append(f"  on {port}(w): x += w * ({', '.join(sympy.sstr(v) for v in B)})")
    out.append("  propagator x(t0 + D) = Phi(D) x(t0) + phi(D):")
    for i in range(ir.d):
        for j in range(ir.d):
            if ir.Phi[i, j] != 0:
                out.append(f"    Phi[{names[i]},{names[j]}] = {sympy.sstr(ir.Phi[i, j])}")
    for i in range(ir.d):
        if ir.phi[i] != 0:
            out.append(f"    phi[{names[i]}] = {sympy.sstr(ir.phi[i])}")
    out.append("    (exprel(z) = (e^z - 1)/z, phi2(z) = (e^z - 1 - z)/z^2, dexp2(x, y) = exp[0, x, y]:"
               " no 0/0 at equal time constants)")
    if ir.c is not None:
        out.append(f"  threshold: {_lin(ir.c, names)} >= {sympy.sstr(ir.theta)}")
        out.append(f"  reset: x <- R x + r with")
        out.append("    R =\n" + _mat(ir.R))
        out.append("    r =\n" + _mat(ir.r))
        if ir.t_ref != 0:
            out.append(f"  refractory: {sympy.sstr(ir.t_ref)} ms")
    else:
        out.append(f"  no threshold; readout potential {_lin(ir.potential, names) if ir.potential is not None else names[0]}")
    inv = ", ".join(names[i] for i in ir.reset_invariant) or "none"
    out.append(f"  reset-invariant state: {inv}")
    if ir.chain is not None:
        out.append(f"  isolation chain (rows l_k, l_k = l_(k-1) (A - lam_k I)):")
        for k, (row, lam) in enumerate(zip(ir.chain.rows, ir.chain.rates)):
            out.append(f"    l_{k} = {_lin(row, names):30s}  next rate {sympy.sstr(lam)}")
    out.append(f"  solver: {ir.solver}")
    if ir.no_cross_rows:
        tests = [f"{_lin(r, names)}{' + ' + sympy.sstr(o) if o != 0 else ''} < {sympy.sstr(ir.theta)}"
                 for r, o in ir.no_cross_rows]
        out.append("  no-crossing test (all at the interval start => no spike): " + ";  ".join(tests))
    else:
        out.append("  no-crossing test: none derived")
    if ir.notes:
        out.append("  notes:")
        out += [f"    - {n}" for n in ir.notes]
    return "\n".join(out)


def explain_network(net: NetworkIR) -> str:
    out = [f"network {net.name}"]
    out.append("  inputs: " + ", ".join(f"{k}[{v}]" for k, v in net.inputs.items()))
    for l in net.layers:
        ps = ", ".join(f"{k} = {v:g}" for k, v in l.params.items())
        out.append(f"  layer {l.name}[{l.size}] = {l.neuron}({ps})")
        for c in l.connections:
            extra = []
            if c.delays is not None:
                extra.append(f"delays {'learnable ' if c.delays.learnable else ''}max {c.delays.max:g} ms")
            if c.init.kind == "auto":
                extra.append(f"init auto(rate = {c.init.rate_hz:g} Hz)")
            elif c.init.kind != "default":
                extra.append(f"init {c.init.kind}({c.init.a:g}, {c.init.b:g})")
            out.append(f"    <- {c.kind}({c.source}) port {c.port}{'; ' + ', '.join(extra) if extra else ''}")
    args = ", ".join(f"{k} = {v:g}" for k, v in net.readout.args.items())
    out.append(f"  readout {net.readout.layer}: {net.readout.kind}{f'({args})' if args else ''}")
    return "\n".join(out)
