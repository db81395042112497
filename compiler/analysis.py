"""Analysis: checked AST -> NeuronIR / NetworkIR (the linear hybrid system of DESIGN.md section 3).

analyze_neuron extracts (A, a0, B per port, c, theta, R, r, t_ref), orders the state so that A is
lower triangular, then derives the closed-form propagator (compiler/propagator.py) and the
structure the engines use (compiler/structure.py). analyze_network resolves layers, parameter
overrides, connections and the readout. Errors are CompileError (a dsl Diagnostic).
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from spikescan.dsl import ast
from spikescan.dsl.checks import INITS, ArgError, bind_args, neuron_param_info
from spikescan.dsl.sym import NumberRange, UnknownFunction, UnknownName, evaluate, free_names, to_sympy

from .errors import CompileError
from .ir import (
    AUTO_RATE,
    ConnectionIR,
    DelaySpec,
    InitSpec,
    LayerIR,
    NetworkIR,
    NeuronIR,
    ParamIR,
    ReadoutIR,
    default_init,
    param_symbol,
)
from .propagator import propagator
from .structure import derive_structure


def _sym(expr: ast.Expr, symbols: dict[str, sympy.Expr]) -> sympy.Expr:
    """The dsl's conversion (exact rationals, times in ms). Unknown names and functions are
    possible only in an AST that skipped the dsl checks; they still become diagnostics."""
    try:
        return to_sympy(expr, symbols)
    except UnknownName as e:
        raise CompileError("E010", str(e), e.span, "declare it in `params { }` or `state { }`") from None
    except UnknownFunction as e:
        raise CompileError("E019", f"{e} here", e.span,
                           "only exp, log, sqrt and abs of parameters are allowed in expressions") from None
    except NumberRange as e:
        raise CompileError(e.code, str(e), e.span, "write the number you mean (at most about 1.8e308)") from None


def _time_power(d: Fraction) -> int | float:
    return int(d) if d.denominator == 1 else float(d)


def _param_irs(neuron: ast.Neuron) -> tuple[tuple[ParamIR, ...], dict[str, sympy.Symbol]]:
    """ParamIR per parameter: dimension and default (in ms) from the dsl's checks."""
    dims, values, diags = neuron_param_info(neuron)
    errors = [d for d in diags if d.is_error]
    if errors:
        raise CompileError(errors[0].code, errors[0].message, errors[0].span, errors[0].hint)
    params, symbols = [], {}
    for p in neuron.params:
        sym = param_symbol(p.name)
        symbols[p.name] = sym
        params.append(ParamIR(name=p.name, default=values[p.name], dim=_time_power(dims[p.name]), symbol=sym))
    return tuple(params), symbols


def _linear_part(expr: sympy.Expr, xs: list[sympy.Symbol]):
    """(coefficients, constant) if expr is affine in xs (coefficients free of xs), else None."""
    expr = sympy.expand(expr)
    coefs = [sympy.diff(expr, x) for x in xs]
    if any(c.free_symbols & set(xs) for c in coefs):
        return None
    const = expr.subs({x: 0 for x in xs})
    if sympy.simplify(expr - sum(c * x for c, x in zip(coefs, xs)) - const) != 0:
        return None
    return [sympy.simplify(c) for c in coefs], sympy.simplify(const)


def _order(names: list[str], A: sympy.Matrix, neuron: ast.Neuron) -> list[int]:
    """Stable topological order (declaration order among ready variables) so that x_j depends
    only on x_k with k <= j. A cycle gets E060."""
    d = len(names)
    deps = {i: {j for j in range(d) if j != i and A[i, j] != 0} for i in range(d)}
    order: list[int] = []
    while len(order) < d:
        ready = [i for i in range(d) if i not in order and deps[i] <= set(order)]
        if not ready:
            cyc = [names[i] for i in range(d) if i not in order]
            span = next((o.span for o in neuron.dynamics if o.var in cyc), neuron.span)
            raise CompileError(
                "E060",
                f"cyclic coupling between state variables {', '.join(cyc)} of neuron '{neuron.name}' "
                "is not supported yet (the closed-form propagator needs a triangular system with "
                "real rates)",
                span,
                "make the coupling one-directional (e.g. the current drives the voltage, not back)",
            )
        order.append(ready[0])
    return order


def _apply_assignments(body, xs, symbols, what, conv=None):
    """Run `x = e`, `x += e`, `x -= e` statements in order on the symbolic state vector."""
    conv = conv or _sym
    cur = {x.name: x for x in xs}
    for st in body:
        if st.target not in cur:
            raise CompileError("E018", f"{what} assigns to '{st.target}', which is not a state variable",
                               st.span, "declare it in `state { }`")
        env = dict(symbols)
        env.update(cur)
        val = conv(st.value, env)
        old = cur[st.target]
        cur[st.target] = val if st.op == "=" else old + val if st.op == "+=" else old - val
    return cur


def _positive_converter(neuron: ast.Neuron, params: tuple[ParamIR, ...]):
    """`_sym` that knows the time constants are positive (the checks refuse others, E034), so
    `abs(tau)` and `sqrt(tau * tau)` become `tau` instead of Abs(tau), whose derivative
    sign(tau) no backend lowers."""
    used = {n.id for ode in neuron.dynamics for n in free_names(ode.rhs)}
    pos = {p.symbol: sympy.Symbol(p.symbol.name, positive=True) for p in params if p.dim == 1 and p.name in used}
    back = {v: k for k, v in pos.items()}

    def conv(expr: ast.Expr, symbols: dict[str, sympy.Expr]) -> sympy.Expr:
        e = _sym(expr, symbols)
        return e.xreplace(pos).xreplace(back) if pos and e.has(sympy.Abs, sympy.sign) else e

    return conv


def analyze_neuron(neuron: ast.Neuron) -> NeuronIR:
    params, psyms = _param_irs(neuron)
    _sym = _positive_converter(neuron, params)
    names = [s.name for s in neuron.state]
    xs = [sympy.Symbol(n, real=True) for n in names]
    symbols = dict(psyms)
    symbols.update({n: x for n, x in zip(names, xs)})
    d = len(names)
    if d == 0:
        raise CompileError("E014", f"neuron '{neuron.name}' has no state variables", neuron.span)

    # ---- dynamics: dx/dt = A x + a0
    rhs = {}
    for ode in neuron.dynamics:
        if ode.var not in names:
            raise CompileError("E013", f"ODE for undeclared variable '{ode.var}'", ode.span)
        rhs[ode.var] = (_sym(ode.rhs, symbols), ode.span)
    A = sympy.zeros(d, d)
    a0 = sympy.zeros(d, 1)
    for i, n in enumerate(names):
        if n not in rhs:
            raise CompileError("E014", f"state variable '{n}' has no ODE", neuron.span,
                               f"add `d{n}/dt = ...` to `dynamics {{ }}` (write 0 for a constant)")
        lin = _linear_part(rhs[n][0], xs)
        if lin is None:
            raise CompileError("E020", f"non-linear dynamics: d{n}/dt is not linear in the state", rhs[n][1],
                               "only linear dynamics dx/dt = A x + a0 can be simulated exactly")
        coefs, const = lin
        for j in range(d):
            A[i, j] = coefs[j]
        a0[i] = const

    perm = _order(names, A, neuron)
    names = [names[k] for k in perm]
    xs = [xs[k] for k in perm]
    A = A.extract(perm, perm)
    a0 = a0.extract(perm, [0])

    # ---- input ports: x += B w
    ports = {}
    for port in neuron.inputs:
        w = sympy.Symbol(f"_w_{port.weight}", real=True)
        env = dict(symbols)
        env[port.weight] = w
        cur = _apply_assignments(port.body, xs, env, f"`on {port.name}`", _sym)
        B = sympy.zeros(d, 1)
        for i, x in enumerate(xs):
            jump = sympy.expand(cur[x.name] - x)
            b = sympy.diff(jump, w)
            if b.free_symbols & (set(xs) | {w}) or sympy.simplify(jump - b * w) != 0:
                span = next((s.span for s in port.body if s.target == x.name), port.span)
                raise CompileError("E022", f"input jump of '{x.name}' is not (parameter) * {port.weight}", span,
                                   f"write `{x.name} += {port.weight}` or `{x.name} += k * {port.weight}`")
            B[i] = sympy.simplify(b)
        ports[port.name] = B

    # ---- threshold: c^T x >= theta
    c = theta = None
    if neuron.threshold is not None:
        th = neuron.threshold
        lin = _linear_part(_sym(th.lhs, symbols) - _sym(th.rhs, symbols), xs)
        if lin is None:
            raise CompileError("E021", "threshold is not linear in the state", th.span,
                               "write `spike when <linear combination of state> >= <parameter>`")
        coefs, const = lin
        if all(cf == 0 for cf in coefs):
            raise CompileError("E021", "threshold does not depend on the state", th.span)
        c = sympy.Matrix(coefs)
        theta = sympy.simplify(-const)

    # ---- reset: x <- R x + r
    R, r = sympy.eye(d), sympy.zeros(d, 1)
    if neuron.reset:
        cur = _apply_assignments(neuron.reset, xs, symbols, "`on spike`", _sym)
        for i, x in enumerate(xs):
            lin = _linear_part(cur[x.name], xs)
            if lin is None:
                span = next((s.span for s in neuron.reset if s.target == x.name), neuron.span)
                raise CompileError("E023", f"reset of '{x.name}' is not affine in the state", span)
            for j in range(d):
                R[i, j] = lin[0][j]
            r[i] = lin[1]

    t_ref = sympy.Integer(0)
    if neuron.refractory is not None:
        t_ref = sympy.simplify(_sym(neuron.refractory.period, psyms))
    decl = {s.name: s for s in neuron.state}
    init = sympy.Matrix([sympy.simplify(_sym(decl[n].init, psyms)) for n in names])

    ir = NeuronIR(name=neuron.name, state=tuple(names), params=params, init=init, A=A, a0=a0,
                  ports=ports, c=c, theta=theta, R=R, r=r, t_ref=t_ref)
    first_declared = neuron.state[0].name
    ir.potential = c if c is not None else sympy.Matrix([1 if n == first_declared else 0 for n in names])
    ir.Phi, ir.phi = propagator(A, a0, neuron.name_span, {p.symbol: p.default for p in params})
    _check_range(ir, neuron)
    derive_structure(ir)
    if perm != list(range(d)):
        ir.notes.insert(0, f"state reordered to ({', '.join(names)}) so that A is lower triangular")
    if c is None:
        ir.notes.append(f"readout potential: {first_declared} (state index {names.index(first_declared)})")
    return ir


# Numbers in the IR stay well inside the float range, so that the backends' derived forms
# (squares of rates, adjoint terms) never overflow when they print a constant.
NUMBER_RANGE = 1e150


def _check_range(ir: NeuronIR, neuron: ast.Neuron) -> None:
    """E037 for a constant of the linear system outside [1/NUMBER_RANGE, NUMBER_RANGE]."""
    parts = {"initial state": [ir.init], "dynamics": [ir.A, ir.a0, ir.Phi, ir.phi],
             "input ports": list(ir.ports.values()), "threshold": [ir.c, ir.theta],
             "reset": [ir.R, ir.r], "refractory period": [ir.t_ref]}
    for what, exprs in parts.items():
        for e in exprs:
            if e is None:
                continue
            for a in sympy.sympify(e).atoms(sympy.Number):
                if a != 0 and not _in_range(a):
                    raise CompileError("E037", f"a constant of the {what} of neuron '{neuron.name}' is "
                                       f"out of range ({_show(a)}; supported magnitudes are "
                                       f"{1 / NUMBER_RANGE:g} to {NUMBER_RANGE:g})", neuron.name_span,
                                       "rescale the constant: exact simulation in floating point "
                                       "needs coefficients far from overflow and underflow")


def _in_range(a: sympy.Number) -> bool:
    try:
        v = abs(float(a))
    except (OverflowError, TypeError, ValueError):
        return False
    return 1 / NUMBER_RANGE <= v <= NUMBER_RANGE


def _show(a: sympy.Number) -> str:
    try:
        v = float(a)
    except (OverflowError, TypeError, ValueError):
        v = float("inf")
    return f"{v:.3g}" if abs(v) < float("inf") else "beyond 1.8e308 in magnitude"


# ----------------------------------------------------------------------------- networks


def _const(expr: ast.Expr, what: str) -> float:
    """Value of a constant option (ms for times), as the dsl evaluates it."""
    try:
        return evaluate(expr)
    except (TypeError, ValueError, UnknownName, UnknownFunction, NumberRange) as exc:
        raise CompileError("E047", f"{what} must be a constant", getattr(expr, "span", None)) from exc


def _call_args(call: ast.Call, names: tuple[str, ...]) -> dict[str, float]:
    """Arguments of an option call bound as the dsl checks bind them, then evaluated."""
    try:
        bound = bind_args(call, names, f"{call.func}()")
    except ArgError as e:
        raise CompileError("E047", e.message, e.span, e.hint) from None
    return {k: _const(v, f"{call.func}() argument {k}") for k, v in bound.items()}


def _delay_spec(expr: ast.Expr) -> DelaySpec:
    """`fixed(2 ms)` or `learnable(max = 5 ms[, init = ...])`; learnable without init gets
    init = -max, meaning "uniform in [0, max]" (see DelaySpec)."""
    if isinstance(expr, ast.Call) and expr.func == "learnable":
        a = _call_args(expr, ("max", "init"))
        if "max" not in a:
            raise CompileError("E047", "learnable delays need `max = <time>`", expr.span,
                               "write `delays = learnable(max = 5 ms)`")
        return DelaySpec(learnable=True, max=a["max"], init=a.get("init", -a["max"]))
    if isinstance(expr, ast.Call) and expr.func == "fixed":
        a = _call_args(expr, ("value",))
        if "value" not in a:
            raise CompileError("E047", "fixed() needs a delay", expr.span, "write `delays = fixed(2 ms)`")
        return DelaySpec(learnable=False, max=a["value"], init=a["value"])
    raise CompileError("E047", "invalid delays", getattr(expr, "span", None),
                       "write `delays = fixed(2 ms)` or `delays = learnable(max = 5 ms)`")


def _init_spec(expr: ast.Expr) -> InitSpec:
    """normal(mean, std) -> (a, b) = (mean, std); uniform(low, high) -> (low, high);
    constant(value) -> a = b = value; auto(rate = r) -> a = r in 1/ms (default AUTO_RATE)."""
    if isinstance(expr, ast.Call) and expr.func == "auto":
        return InitSpec(kind="auto", a=_call_args(expr, ("rate",)).get("rate", AUTO_RATE))
    if isinstance(expr, ast.Call) and expr.func in INITS:
        names = INITS[expr.func]
        a = _call_args(expr, names)
        if set(a) != set(names):
            raise CompileError("E047", f"{expr.func}() needs {', '.join(names)}", expr.span)
        first, second = a[names[0]], a[names[-1]]
        return InitSpec(kind=expr.func, a=first, b=second)
    raise CompileError("E047", "invalid weight initialisation", getattr(expr, "span", None),
                       "write `init = normal(mean, std)`, `uniform(low, high)` or `constant(value)`")


def analyze_network(net: ast.Network, neurons: dict[str, NeuronIR]) -> NetworkIR:
    from .sparse_ir import analyze_sparse_network, is_sparse

    if is_sparse(net):  # autonomous sparse networks (docs/sparse.md)
        return analyze_sparse_network(net, neurons)
    from .conv_ir import CONV_KINDS, conv_spec

    inputs = {p.name: p.size for p in net.inputs}
    by_name = {l.name: l for l in net.layers}
    shapes = {p.name: tuple(p.shape) or (p.size,) for p in list(net.inputs) + list(net.layers)}
    # topological order of layers over dense connections (recurrent edges do not order)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, span):
        if name in order or name in inputs:
            return
        if name not in by_name:
            raise CompileError("E043", f"connection from unknown population '{name}'", span)
        if name in visiting:
            raise CompileError("E063", f"feed-forward cycle through layer '{name}'", span,
                               "use `recurrent(...)` for connections that go back")
        visiting.add(name)
        for conn in by_name[name].connections:
            if conn.kind != "recurrent" and conn.source != name:
                visit(conn.source, conn.source_span)
        visiting.discard(name)
        order.append(name)

    for l in net.layers:
        visit(l.name, l.span)

    layers = []
    for name in order:
        l = by_name[name]
        if l.neuron not in neurons:
            raise CompileError("E041", f"unknown neuron type '{l.neuron}'", l.neuron_span)
        nir = neurons[l.neuron]
        params = nir.defaults()
        for ov in l.overrides:
            if ov.name not in params:
                raise CompileError("E044", f"'{l.neuron}' has no parameter '{ov.name}'", ov.span,
                                   f"parameters: {', '.join(params)}")
            params[ov.name] = _const(ov.value, f"override of {ov.name}")
        conns = []
        for conn in l.connections:
            if conn.kind not in ("dense", "recurrent") + CONV_KINDS:
                raise CompileError("E046", f"unknown connection kind '{conn.kind}'", conn.span,
                                   "use dense(...), recurrent(...), conv2d(...) or pool2d(...)")
            opts = dict(conn.options)
            port = next(iter(nir.ports), None)
            if "port" in opts:
                p = opts.pop("port")
                port = p.id if isinstance(p, ast.Name) else "input"
            if port is None or port not in nir.ports:
                raise CompileError("E050", f"neuron '{l.neuron}' has no input port '{port}'", conn.span,
                                   f"ports: {', '.join(nir.ports) or 'none'}")
            delays = _delay_spec(opts.pop("delays")) if "delays" in opts else None
            init = _init_spec(opts.pop("init")) if "init" in opts else default_init(conn.kind)
            conv = conv_spec(conn, opts, shapes) if conn.kind in CONV_KINDS else None
            if opts:
                bad = next(iter(opts))
                raise CompileError("E047", f"unknown connection option '{bad}'", conn.span,
                                   "options: port, delays, init")
            source = conn.source if conn.kind == "dense" else (conn.source or name)
            conns.append(ConnectionIR(kind=conn.kind, source=source, port=port, delays=delays, init=init, conv=conv))
        layers.append(LayerIR(name=name, size=l.size, neuron=l.neuron, params=params, connections=tuple(conns),
                              shape=tuple(l.shape)))

    if not net.readouts:
        raise CompileError("E048", f"network '{net.name}' has no readout", net.span,
                           "add e.g. `readout out: first_spike`")
    if len(net.readouts) > 1:
        raise CompileError("E063", "only one readout per network is supported", net.readouts[1].span,
                           f"keep one `readout` line; the network's output also carries every layer's "
                           f"spikes and counts, so `{net.readouts[1].layer}` can be read from Python")
    ro = net.readouts[0]
    if ro.layer not in by_name:
        raise CompileError("E042", f"readout of missing layer '{ro.layer}'", ro.layer_span)
    readout = ReadoutIR(layer=ro.layer, kind=ro.kind, args={k: _const(v, f"readout argument {k}") for k, v in ro.args})
    return NetworkIR(name=net.name, inputs=inputs, layers=layers, readout=readout,
                     shapes={p.name: shapes[p.name] for p in net.inputs})
