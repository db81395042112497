"""Checks of sparse, autonomous networks (docs/sparse.md): `sparse(src, k = K, init = ..., seed = 1)`
connections, network constants (`param K = 100`) and seeded initial states (`{ init v = uniform(0, 1) }`).

A network is *sparse* when one of its connections is `sparse(...)`. Such a network runs on the
event-driven engines of runtime/sparse (`spikescan run`, or runtime/sparse/module.py when it has
inputs): between layers only sparse connections, no readout, and one spiking neuron type for all
layers (the generated engine is specialised to it). Input populations may drive layers through
`sparse(x, k = ...)` or `dense(x, init = ...)` (docs/sparse.md, "Networks with inputs").
Codes: E085 (k), E086 (other connection options), E087 (network structure), E088 (network
constants), E089 (state initialisation), E090 (neuron types), E091 (dense input connections),
E092 (an input that drives no layer). NetworkChecks (checks.py) calls `connection` and
`check_network`.
"""

from __future__ import annotations

import math
from typing import Optional

from . import ast
from .sym import free_names
from .units import DIMENSIONLESS

SPARSE_OPTIONS = ("k", "init", "seed", "port")
DISTRIBUTIONS = {"normal": ("mean", "std"), "uniform": ("low", "high"), "constant": ("value",)}
MAX_SEED = 2**63 - 1
# The engines index synapses with int32 (4 bytes each, runtime/sparse/connectivity.py).
MAX_SYNAPSES = 2**31 - 1


def source_name(layer: ast.Layer, c: ast.Connection) -> str:
    """`sparse(itself, ...)` names the layer itself (unless a population is called `itself`)."""
    return layer.name if c.source == "itself" and layer.name != "itself" else c.source


def is_sparse(net: ast.Network) -> bool:
    return any(c.kind == "sparse" for l in net.layers for c in l.connections)


def constant_values(checks, net: ast.Network) -> dict[str, float]:
    """Values of the network's `param` constants in order (each may use the earlier ones);
    E088 for duplicates, clashes with population names, units and non-constant values."""
    values: dict[str, float] = {}
    checks.failed_constants = set()  # reported here; their uses are not reported again
    pops = {p.name for p in net.inputs} | {l.name for l in net.layers}
    for c in net.constants:
        if c.name in values or c.name in pops:
            what = "a population" if c.name in pops else "an earlier `param`"
            checks.err("E088", f"network constant `{c.name}` is already {what}", c.span,
                       "give the constant a name of its own")
            continue
        unknown = [n for n in free_names(c.value) if n.id not in values]
        if unknown:
            checks.err("E088", f"network constant `{c.name}` uses `{unknown[0].id}`, which is not an "
                       "earlier `param`", unknown[0].span, "constants may use numbers and earlier constants")
            continue
        d = checks.dim(c.value, {})
        if d is not None and d != DIMENSIONLESS:
            checks.err("E088", f"network constant `{c.name}` must be dimensionless", c.value.span,
                       "constants feed `k`, weights and initial states, which have no unit")
            continue
        v = checks.constant(c.value, values, f"network constant `{c.name}`")
        if v is not None:
            values[c.name] = v
    checks.failed_constants = {c.name for c in net.constants} - set(values)
    return values


def _value(checks, expr: ast.Expr, consts: dict[str, float], what: str, code: str) -> Optional[float]:
    unknown = [n for n in free_names(expr) if n.id not in consts]
    if any(n.id in getattr(checks, "failed_constants", ()) for n in unknown):
        return None  # a constant that failed: reported at its declaration
    if unknown:
        checks.err(code, f"{what} uses `{unknown[0].id}`, which is not a network constant",
                   unknown[0].span, "declare it in the network, e.g. `param K = 100`")
        return None
    d = checks.dim(expr, {k: DIMENSIONLESS for k in consts})
    if d is not None and d != DIMENSIONLESS:
        checks.err(code, f"{what} must be dimensionless", expr.span, "weights, k and seeds have no unit")
        return None
    return checks.constant(expr, consts, what)


def _count(checks, expr, consts, what, code, lo: int, hi: int) -> Optional[int]:
    v = _value(checks, expr, consts, what, code)
    if v is None:
        return None
    if v != math.floor(v) or not lo <= v <= hi:
        checks.err(code, f"{what} must be an integer in [{lo}, {hi}], got {v:g}", expr.span, None)
        return None
    return int(v)


def distribution(checks, value: ast.Expr, consts: dict[str, float], what: str, code: str) -> None:
    """`normal(mean, std)`, `uniform(low, high)`, `constant(value)` or a plain constant."""
    from .checks import ArgError, bind_args

    if not isinstance(value, ast.Call) or value.func not in DISTRIBUTIONS:
        if isinstance(value, ast.Call) and value.func not in ("exp", "log", "sqrt", "abs"):
            checks.err(code, f"{what}: unknown distribution `{value.func}`", value.span,
                       "write `normal(mean, std)`, `uniform(low, high)`, `constant(value)` or a number")
            return
        _value(checks, value, consts, what, code)
        return
    names = DISTRIBUTIONS[value.func]
    try:
        args = bind_args(value, names, value.func + "()")
    except ArgError as e:
        checks.err(code, e.message, e.span, e.hint)
        return
    if set(args) != set(names):
        missing = [n for n in names if n not in args]
        checks.err(code, f"{value.func}() needs {', '.join(missing)}", value.span, None)
        return
    vals = {k: _value(checks, e, consts, f"`{k}` of {value.func}()", code) for k, e in args.items()}
    if value.func == "normal" and vals.get("std") is not None and vals["std"] < 0:
        checks.err(code, "the standard deviation must be >= 0", args["std"].span, None)
    if value.func == "uniform" and None not in (vals.get("low"), vals.get("high")) and vals["low"] > vals["high"]:
        checks.err(code, "uniform(low, high) needs low <= high", value.span, None)


def connection(checks, layer: ast.Layer, c: ast.Connection, neuron: Optional[ast.Neuron],
               consts: dict[str, float]) -> None:
    """One `sparse(src, k = ..., init = ..., seed = ..., port = ...)` connection (`src` may be
    `itself`: the layer's own neurons)."""
    src = checks.pops.get(source_name(layer, c))
    if src is None:
        from .checks import _suggest

        checks.err("E043", f"connection from unknown population `{c.source}`", c.source_span,
                   _suggest(c.source, checks.pops))
    opts: dict[str, ast.Expr] = {}
    for key, value in c.options:
        if key in opts:
            checks.err("E086", f"option `{key}` given twice", value.span, None)
        elif key not in SPARSE_OPTIONS:
            hint = ("sparse connections have no delays (spikes arrive at once)" if key == "delays"
                    else "options of sparse(): " + ", ".join(SPARSE_OPTIONS))
            checks.err("E086", f"unknown option `{key}` of a sparse connection", value.span, hint)
        else:
            opts[key] = value
    if "k" not in opts:
        checks.err("E085", "a sparse connection needs `k`, its number of presynaptic partners per neuron",
                   c.span, f"write e.g. `sparse({c.source or layer.name}, k = 100)`")
    else:
        hi = src.size if isinstance(src, (ast.Layer, ast.InputPop)) and src.size > 0 else 2**31 - 1
        name = source_name(layer, c)
        k = _count(checks, opts["k"], consts, "`k` of a sparse connection", "E085", 1, 2**31 - 1)
        if k is not None and k > hi:
            checks.err("E085", f"k = {k} exceeds the size of `{name}` ({hi} neurons)", opts["k"].span,
                       f"each neuron draws k partners from `{name}`: use k <= {hi}")
        elif k is not None and k * max(layer.size, 0) > MAX_SYNAPSES:
            checks.err("E085", f"{layer.size} x {k} synapses exceed the limit of {MAX_SYNAPSES} per "
                       "connection", opts["k"].span, "use a smaller k or a smaller layer")
    if "seed" in opts:
        _count(checks, opts["seed"], consts, "`seed` of a sparse connection", "E086", 0, MAX_SEED)
    if "init" in opts:
        distribution(checks, opts["init"], consts, "the weights of a sparse connection", "E086")
    if "port" in opts:
        checks.port_option(opts["port"], neuron)


def check_network(checks, net: ast.Network, consts: dict[str, float]) -> None:
    """Network-level rules: structure of sparse networks (E087, E090) and state inits (E089)."""
    sparse = is_sparse(net)
    if not sparse:
        for c in net.constants[:1]:
            checks.err("E088", "`param` constants are only used by sparse networks", c.span,
                       "use numbers in dense networks, or connect layers with `sparse(...)`")
        for l in net.layers:
            for s in l.state_init[:1]:
                checks.err("E089", "initial-state distributions are only supported in sparse networks",
                           s.span, "dense networks start from the neuron's `state` values; "
                           "see docs/sparse.md for autonomous sparse networks")
        return
    hint = "a sparse network runs on the sparse engines (`spikescan run`, docs/sparse.md)"
    inputs = {p.name for p in net.inputs}
    used: set[str] = set()
    for l in net.layers:
        for c in l.connections:
            if c.source in inputs:
                used.add(c.source)
            if c.kind == "dense" and c.source in inputs:
                dense_input(checks, c)
            elif c.kind != "sparse":
                checks.err("E087", f"{c.kind} connection in a sparse network", c.span,
                           hint + "; connect every layer with `sparse(...)` (inputs also with "
                           "`dense(x, init = ...)`)")
    for p in net.inputs:
        if p.name not in used:
            checks.err("E092", f"input population `{p.name}` drives no layer of sparse network "
                       f"`{net.name}`", p.span,
                       f"connect it, e.g. `<- sparse({p.name}, k = 10, init = constant(0.5))`, or remove it")
    for r in net.readouts[:1]:
        checks.err("E087", "readout in a sparse network", r.span,
                   hint + "; it records every spike of every layer, so remove the readout (to train "
                   "one, use runtime.sparse.module.SparseInputNet with a readout in Python)")
    types = {l.neuron for l in net.layers}
    first = net.layers[0]
    if len(types) > 1:
        other = next(l for l in net.layers if l.neuron != first.neuron)
        checks.err("E090", f"layers of a sparse network use different neuron types ({first.neuron}, "
                   f"{other.neuron})", other.neuron_span,
                   "the sparse engines are generated for one neuron type: use one type and set "
                   "per-layer parameters, e.g. `LIF(tau_m = 10 ms)`")
    for l in net.layers:
        n = checks.neurons.get(l.neuron)
        if n is not None and n.threshold is None:
            checks.err("E090", f"neuron {n.name} of layer `{l.name}` never spikes", l.neuron_span,
                       "every neuron of a sparse network needs a threshold (`spike when ...`)")
        elif n is None and l.neuron in getattr(checks, "discrete", {}):
            checks.err("E090", f"discrete-time neuron {l.neuron} in a sparse network", l.neuron_span,
                       "sparse networks run in continuous time: use a neuron with dynamics")
        state_inits(checks, l, n, consts)


def dense_input(checks, c: ast.Connection) -> None:
    """`dense(x, init = ...)` from an input of a sparse network (E091): an explicit weight
    distribution (the sparse engines draw it; `auto(...)` needs a training batch), no delays."""
    opts = dict(c.options)
    if "delays" in opts:
        checks.err("E091", "delays on a dense input connection of a sparse network", opts["delays"].span,
                   "the sparse engines deliver inputs at once: remove `delays`")
    init = opts.get("init")
    if init is None:
        checks.err("E091", f"dense input connection from `{c.source}` without `init` in a sparse network",
                   c.span, f"give its weights, e.g. `dense({c.source}, init = normal(0, 0.5))`")
    elif isinstance(init, ast.Call) and init.func == "auto":
        checks.err("E091", "`init = auto(...)` on an input connection of a sparse network", init.span,
                   "write `normal(mean, std)`, `uniform(low, high)` or `constant(value)`")


def state_inits(checks, layer: ast.Layer, neuron: Optional[ast.Neuron], consts: dict[str, float]) -> None:
    seen: set[str] = set()
    names = {s.name for s in neuron.state} if neuron is not None else None
    for s in layer.state_init:
        if s.name in seen:
            checks.err("E089", f"initial state of `{s.name}` given twice", s.span, None)
            continue
        seen.add(s.name)
        if names is not None and s.name not in names:
            from .checks import _suggest

            checks.err("E089", f"{neuron.name} has no state variable `{s.name}`", s.span,
                       _suggest(s.name, names))
            continue
        distribution(checks, s.value, consts, f"the initial value of `{s.name}`", "E089")
