"""Analysis of sparse, autonomous networks (docs/sparse.md): checked AST -> NetworkIR.

Evaluates the network constants (`param K = 100`), each sparse connection's k, seed and weight
distribution (`init = constant(J / sqrt(K))`), and the layers' initial-state distributions
(`{ init v = uniform(0, 1) }`). The dsl checks (dsl/sparse.py) have reported every error already;
the CompileErrors here are defensive repeats with the same codes. The network has no readout
(NetworkIR.readout is None): `spikescan run` records every spike.
"""

from __future__ import annotations

import math

from spikescan.dsl import ast
from spikescan.dsl.checks import ArgError, bind_args
from spikescan.dsl.sparse import DISTRIBUTIONS, is_sparse, source_name  # noqa: F401 (is_sparse re-exported)
from spikescan.dsl.sym import NumberRange, UnknownFunction, UnknownName, evaluate

from .errors import CompileError
from .ir import ConnectionIR, InitSpec, LayerIR, NetworkIR, NeuronIR


def _value(expr: ast.Expr, consts: dict[str, float], code: str, what: str) -> float:
    try:
        v = evaluate(expr, consts)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, UnknownName, UnknownFunction,
            NumberRange) as exc:
        raise CompileError(code, f"{what} must be a constant", expr.span) from exc
    if not math.isfinite(v):
        raise CompileError(code, f"{what} is not a finite number", expr.span)
    return v


def distribution(expr: ast.Expr, consts: dict[str, float], code: str, what: str) -> InitSpec:
    """normal(mean, std) -> (a, b) = (mean, std); uniform(low, high) -> (low, high);
    constant(value) or a plain expression -> a = b = value (InitSpec's convention)."""
    if isinstance(expr, ast.Call) and expr.func in DISTRIBUTIONS:
        names = DISTRIBUTIONS[expr.func]
        try:
            bound = bind_args(expr, names, f"{expr.func}()")
        except ArgError as e:
            raise CompileError(code, e.message, e.span, e.hint) from None
        if set(bound) != set(names):
            raise CompileError(code, f"{expr.func}() needs {', '.join(names)}", expr.span)
        v = {k: _value(e, consts, code, what) for k, e in bound.items()}
        return InitSpec(kind=expr.func, a=v[names[0]], b=v[names[-1]])
    v = _value(expr, consts, code, what)
    return InitSpec(kind="constant", a=v, b=v)


def constants(net: ast.Network) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in net.constants:
        out[c.name] = _value(c.value, out, "E088", f"network constant `{c.name}`")
    return out


def analyze_sparse_network(net: ast.Network, neurons: dict[str, NeuronIR]) -> NetworkIR:
    consts = constants(net)
    sizes = {l.name: l.size for l in net.layers}
    inputs = {p.name: p.size for p in net.inputs}  # "Networks with inputs" (docs/sparse.md)
    sizes.update(inputs)
    layers = []
    for l in net.layers:
        if l.neuron not in neurons:
            raise CompileError("E090", f"unknown neuron type '{l.neuron}' in a sparse network", l.neuron_span)
        nir = neurons[l.neuron]
        params = nir.defaults()
        for ov in l.overrides:
            if ov.name not in params:
                raise CompileError("E044", f"'{l.neuron}' has no parameter '{ov.name}'", ov.span)
            params[ov.name] = _value(ov.value, {}, "E044", f"override of {ov.name}")
        conns = []
        for ci, c in enumerate(l.connections):
            if c.kind == "dense" and c.source in inputs:
                conns.append(_dense_input(c, nir, consts, l, len(layers), ci))
                continue
            if c.kind != "sparse":
                raise CompileError("E087", f"{c.kind} connection in a sparse network", c.span)
            opts = dict(c.options)
            if "k" not in opts:
                raise CompileError("E085", "a sparse connection needs `k`", c.span)
            k = _value(opts["k"], consts, "E085", "`k`")
            src = source_name(l, c)
            if src not in sizes:
                raise CompileError("E043", f"connection from unknown population '{src}'", c.source_span)
            if k != int(k) or not 1 <= k <= sizes[src]:
                raise CompileError("E085", f"k = {k:g} must be an integer in [1, {sizes[src]}]", opts["k"].span)
            seed = int(_value(opts["seed"], consts, "E086", "`seed`")) if "seed" in opts else 0
            init = (distribution(opts["init"], consts, "E086", "the weights") if "init" in opts
                    else InitSpec(kind="constant", a=1.0, b=1.0))
            port = next(iter(nir.ports), None)
            if "port" in opts:
                p = opts["port"]
                port = p.id if isinstance(p, ast.Name) else None
            if port is None or port not in nir.ports:
                raise CompileError("E050", f"neuron '{l.neuron}' has no input port '{port}'", c.span)
            conns.append(ConnectionIR(kind="sparse", source=src, port=port, delays=None, init=init,
                                      k=int(k), seed=seed))
        state_init = {}
        for s in l.state_init:
            if s.name not in nir.state:
                raise CompileError("E089", f"{l.neuron} has no state variable `{s.name}`", s.span)
            state_init[s.name] = distribution(s.value, consts, "E089", f"the initial value of `{s.name}`")
        layers.append(LayerIR(name=l.name, size=l.size, neuron=l.neuron, params=params,
                              connections=tuple(conns), state_init=state_init))
    return NetworkIR(name=net.name, inputs=inputs, layers=layers, readout=None)


def _dense_input(c: ast.Connection, nir: NeuronIR, consts: dict[str, float], layer: ast.Layer,
                 li: int, ci: int) -> ConnectionIR:
    """`dense(x, init = ...)` from an input population of a sparse network: every channel reaches
    every neuron; the weights are drawn per synapse from a seed fixed by the connection's place
    (layer li, connection ci), so the network stays a pure function of its file."""
    opts = dict(c.options)
    if "init" not in opts or "delays" in opts:
        raise CompileError("E091", "a dense input connection of a sparse network needs `init` and no delays",
                           c.span)
    port = next(iter(nir.ports), None)
    if "port" in opts:
        p = opts["port"]
        port = p.id if isinstance(p, ast.Name) else None
    if port is None or port not in nir.ports:
        raise CompileError("E050", f"neuron '{layer.neuron}' has no input port '{port}'", c.span)
    init = distribution(opts["init"], consts, "E091", "the weights")
    return ConnectionIR(kind="dense", source=c.source, port=port, delays=None, init=init, k=0,
                        seed=1_000_003 * (li + 1) + ci)
