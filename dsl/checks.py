"""Semantic checks of a parsed module. Every check appends Diagnostics and carries on, so one run
reports every independent error; a check that depends on names that failed earlier is skipped
rather than reporting a follow-on error.

Neurons: names (E010-E019), linearity (E020-E025: exact event-driven simulation needs linear
subthreshold dynamics dx/dt = A x + a0, jumps x += B w, a threshold c^T x >= theta and an affine
reset x <- R x + r), units (E030-E037). Networks: E040-E053.
"""

from __future__ import annotations

import difflib
import math
from fractions import Fraction
from typing import Iterable, Optional

import sympy

from . import recurrence as recurrence_checks
from . import ast, conv as conv_checks, discrete as discrete_checks, effective, sparse as sparse_checks
from .diagnostics import Diagnostic
from .sym import NumberRange, UnknownFunction, UnknownName, calls, evaluate, free_names, to_sympy
from .units import DIMENSIONLESS, FUNCTIONS, RATE, TIME, UnitError, dim_of, format_dim, is_zero_literal

CONNECTION_KINDS = ("dense", "recurrent", "sparse")
CONNECTION_OPTIONS = ("init", "delays", "port")
INITS = {"normal": ("mean", "std"), "uniform": ("low", "high"), "constant": ("value",)}
MAX_AUTO_RATE = 1.0  # 1/ms (1 kHz): bounds the spike buffers the auto-init search allocates
READOUTS = ("first_spike", "spike_count", "li_integral", "max_potential")
# Size limits (E053): the runtime allocates state per neuron and a dense weight matrix per
# connection, so a typo such as `h[1000000000]` must not become a 40 GB allocation.
MAX_POPULATION = 1_000_000  # neurons of a layer, channels of an input
MAX_WEIGHTS = 100_000_000  # weights of a whole network (800 MB in float64)
MAX_NAME = 64  # characters of a declared name: names become file and function names (E026)


def _suggest(name: str, options: Iterable[str]) -> str:
    options = sorted(set(options))
    close = difflib.get_close_matches(name, options, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return "known: " + (", ".join(options) if options else "none")


class _Checks:
    def __init__(self) -> None:
        self.diags: list[Diagnostic] = []

    def err(self, code: str, msg: str, span: Optional[ast.Span], hint: str | None = None) -> None:
        if any(d.code == code and d.span == span for d in self.diags):
            return  # the same problem seen again by a later check of the same expression
        self.diags.append(Diagnostic(code, msg, span, hint))

    def out_of_range(self, e: NumberRange) -> None:
        self.err(e.code, str(e), e.span, "exact constant folding refuses astronomically large "
                 "powers; write the number you mean (at most about 1.8e308)")

    def names_ok(self, expr: ast.Expr, allowed: dict[str, str], where: str,
                 extra_hint: dict[str, str] | None = None) -> bool:
        """E010 for names not in `allowed` (name -> kind), E019 for unknown functions."""
        ok = True
        for n in free_names(expr):
            if n.id not in allowed:
                hint = (extra_hint or {}).get(n.id) or _suggest(n.id, allowed)
                self.err("E010", f"unknown name `{n.id}` in {where}", n.span, hint)
                ok = False
        for c in calls(expr):
            if c.func not in FUNCTIONS:
                self.err("E019", f"unknown function `{c.func}`", c.span,
                         "available functions: " + ", ".join(sorted(FUNCTIONS)))
                ok = False
            elif len(c.args) != FUNCTIONS[c.func] or c.kwargs:
                self.err("E019", f"{c.func}() takes exactly {FUNCTIONS[c.func]} positional "
                         "argument", c.span, f"write e.g. `{c.func}(x)`")
                ok = False
        return ok

    def dim(self, expr: ast.Expr, dims: dict[str, Fraction]) -> Optional[Fraction]:
        try:
            return dim_of(expr, dims)
        except UnitError as e:
            self.err(e.code, e.message, e.span, e.hint)
            return None

    def expect_dim(self, expr: ast.Expr, dims: dict[str, Fraction], want: Fraction, what: str,
                   code: str, hint: str) -> None:
        d = self.dim(expr, dims)
        if d is not None and d != want:
            self.err(code, f"{what} must be {format_dim(want)}, but it is {format_dim(d)}",
                     expr.span, hint)

    def constant(self, expr: ast.Expr, values: dict[str, float], what: str) -> Optional[float]:
        """Value of a constant expression; E024 if it uses names outside `values`, E037 if it
        is not a finite number."""
        names = [n for n in free_names(expr) if n.id not in values]
        if names:
            self.err("E024", f"{what} must be a constant, but it uses `{names[0].id}`",
                     names[0].span, "use numbers with units, e.g. `20 ms`")
            return None
        if calls(expr) and not self.names_ok(expr, dict.fromkeys(values, "param"), what):
            return None
        try:
            v = evaluate(expr, values)
        except NumberRange as e:
            self.out_of_range(e)
            return None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            v = math.nan
        if not math.isfinite(v):
            self.err("E037", f"{what} is not a finite real number", expr.span,
                     "check for overflow (1e999), division by zero or log of a negative number")
            return None
        return v


# ============================================================================ neurons


class NeuronChecks(_Checks):
    def __init__(self, n: ast.Neuron):
        super().__init__()
        self.n = n
        self.param_dims: dict[str, Fraction] = {}
        self.param_values: dict[str, float] = {}
        self.param_spans: dict[str, ast.Span] = {}
        self.state: dict[str, ast.StateDecl] = {}

    def run(self) -> list[Diagnostic]:
        self.declarations()
        self.params()
        self.states()
        self.dynamics()
        for port in self.n.inputs:
            self.input_port(port)
        self.ports_unique()
        self.threshold()
        self.reset()
        self.refractory()
        if not any(d.is_error for d in self.diags):
            self.diags += effective.neuron_diagnostics(self.n, self.param_values)
        return self.diags

    # ------------------------------------------------------------------ declarations
    def declarations(self) -> None:
        """E026 for over-long names, E050 for a neuron without input ports."""
        n = self.n
        named = [(n.name, n.name_span)] + [(p.name, p.span) for p in n.params]
        named += [(s.name, s.span) for s in n.state]
        named += [(x, p.span) for p in n.inputs for x in (p.name, p.weight)]
        for name, span in named:
            _name_length(self, name, span)
        if not n.inputs and n.state:  # no state is E014 already
            self.err("E050", f"neuron {n.name} has no input port", n.name_span,
                     "declare one, e.g. `on input(w) { i += w }`: a neuron without inputs "
                     "cannot be connected")

    def params(self) -> None:
        for p in self.n.params:
            if p.name in self.param_spans:
                self.err("E011", f"duplicate parameter `{p.name}`", p.span,
                         f"first declared at line {self.param_spans[p.name].line}")
                continue
            self.param_spans[p.name] = p.span
            v = self.constant(p.default, {}, f"the default of parameter `{p.name}`")
            d = self.dim(p.default, {})
            self.param_dims[p.name] = d if d is not None else DIMENSIONLESS
            if v is not None:
                self.param_values[p.name] = v

    def states(self) -> None:
        if not self.n.state:
            self.err("E014", f"neuron {self.n.name} has no state variables", self.n.name_span,
                     "declare them, e.g. `state { v = 0.0 }`")
        for s in self.n.state:
            if s.name in self.state or s.name in self.param_spans:
                first = self.state[s.name].span if s.name in self.state else self.param_spans[s.name]
                self.err("E011", f"duplicate name `{s.name}`", s.span,
                         f"already declared at line {first.line}; state and parameters share "
                         "one namespace")
                continue
            self.state[s.name] = s
            if any(n.id in self.state or n.id == s.name for n in free_names(s.init)):
                bad = next(n for n in free_names(s.init) if n.id in self.state or n.id == s.name)
                self.err("E024", f"the initial value of `{s.name}` uses the state variable "
                         f"`{bad.id}`", bad.span, "initial values may use parameters only")
                continue
            if self.names_ok(s.init, dict.fromkeys(self.param_spans, "param"),
                             f"the initial value of `{s.name}`"):
                self.sign_known_ast(s.init)
                self.expect_dim(s.init, self.param_dims, DIMENSIONLESS,
                                f"the initial value of `{s.name}`", "E032",
                                "state variables are dimensionless")

    def scope(self, weight: str | None = None) -> dict[str, str]:
        names = dict.fromkeys(self.param_spans, "param")
        names.update(dict.fromkeys(self.state, "state"))
        if weight:
            names[weight] = "weight"
        return names

    def dims(self, weight: str | None = None) -> dict[str, Fraction]:
        d = dict(self.param_dims)
        d.update(dict.fromkeys(self.state, DIMENSIONLESS))
        if weight:
            d[weight] = DIMENSIONLESS
        return d

    def symbols(self, weight: str | None = None) -> dict[str, sympy.Symbol]:
        syms = {p: sympy.Symbol(p, real=True) for p in self.param_spans}
        syms.update({s: sympy.Symbol(s, real=True) for s in self.state})
        if weight:
            syms[weight] = sympy.Symbol(weight, real=True)
        return syms

    def to_sym(self, expr: ast.Expr, weight: str | None = None) -> Optional[sympy.Expr]:
        try:
            e = to_sympy(expr, self.symbols(weight))
        except (UnknownName, UnknownFunction):
            return None  # already reported by names_ok
        except NumberRange as e:
            self.out_of_range(e)
            return None
        self.sign_known(e, expr)
        return e

    def positive_params(self) -> dict[sympy.Symbol, sympy.Symbol]:
        """Time constants (times used in the dynamics): positive by E034."""
        used = {n.id for ode in self.n.dynamics for n in free_names(ode.rhs)}
        return {sympy.Symbol(p, real=True): sympy.Symbol(p, positive=True)
                for p, d in self.param_dims.items() if d == TIME and p in used}

    def sign_known(self, e: sympy.Expr, expr: ast.Expr) -> None:
        """E027 for abs() (or sqrt(x^2)) of an expression whose sign is not known: its
        derivative sign(x) has no lowering, and exact gradients need one."""
        if not e.has(sympy.Abs):
            return
        if not e.xreplace(self.positive_params()).has(sympy.Abs):
            return
        call = next((c for c in calls(expr) if c.func in ("abs", "sqrt")), expr)
        self.err("E027", "abs() of an expression whose sign is not known", call.span,
                 "abs() may only wrap expressions that are positive or negative for sure, such "
                 "as time constants (`abs(tau_m)`); write the expression with its sign instead")

    def sign_known_ast(self, expr: ast.Expr) -> None:
        if any(c.func in ("abs", "sqrt") for c in calls(expr)):
            try:
                self.sign_known(to_sympy(expr, self.symbols()), expr)
            except Exception:  # noqa: BLE001 - unknown names or ranges: reported elsewhere
                pass

    def state_syms(self) -> set[sympy.Symbol]:
        return {sympy.Symbol(s, real=True) for s in self.state}

    def nonlinear_in(self, e: sympy.Expr, vars_: set[sympy.Symbol]) -> bool:
        """True if e is not affine in vars_ (some derivative still depends on vars_)."""
        for v in vars_:
            if v in e.free_symbols and sympy.diff(e, v).free_symbols & vars_:
                return True
        return False

    # ------------------------------------------------------------------ dynamics
    def dynamics(self) -> None:
        seen: dict[str, ast.ODE] = {}
        used_params: set[str] = set()
        for ode in self.n.dynamics:
            if ode.var not in self.state:
                if ode.var in self.param_spans:
                    self.err("E013", f"ODE for `{ode.var}`, which is a parameter", ode.span,
                             f"declare `{ode.var}` in `state {{ ... }}` instead")
                elif ode.var:
                    self.err("E013", f"ODE for undeclared variable `{ode.var}`", ode.span,
                             f"declare it first: `state {{ {ode.var} = 0.0 }}`")
                continue
            if ode.var in seen:
                self.err("E015", f"second ODE for `{ode.var}`", ode.span,
                         f"the first one is at line {seen[ode.var].span.line}; combine them")
                continue
            seen[ode.var] = ode
            used_params |= {n.id for n in free_names(ode.rhs) if n.id in self.param_spans}
            if not self.names_ok(ode.rhs, self.scope(), f"the ODE of `{ode.var}`",
                                 {w.weight: "input weights exist only inside `on input(...)`"
                                  for w in self.n.inputs}):
                continue
            if not is_zero_literal(ode.rhs):  # `dx/dt = 0`: x only changes at events
                self.expect_dim(ode.rhs, self.dims(), RATE, f"the right-hand side of d{ode.var}/dt",
                                "E031", "divide by a time constant, e.g. `dv/dt = (i - v) / tau_m` "
                                "with `tau_m = 20 ms`")
            rhs = self.to_sym(ode.rhs)
            if rhs is not None and self.nonlinear_in(rhs, self.state_syms()):
                self.err("E020", f"non-linear dynamics in d{ode.var}/dt", ode.rhs.span,
                         "exact event-driven simulation needs linear subthreshold dynamics "
                         "(dx/dt = A x + a0, coefficients from parameters only): remove products "
                         "of state variables and functions of them")
        for name, s in self.state.items():
            if name not in seen:
                self.err("E014", f"state variable `{name}` has no ODE", s.span,
                         f"add `d{name}/dt = ...` to `dynamics` (`d{name}/dt = 0` keeps it "
                         "constant between events)")
        for p in sorted(used_params):
            if self.param_dims.get(p) == TIME and p in self.param_values and self.param_values[p] <= 0:
                self.err("E034", f"time constant `{p}` must be positive, got "
                         f"{self.param_values[p]:g} ms", self.param_spans[p],
                         "time constants divide the state; use a positive time, e.g. `20 ms`")

    # ------------------------------------------------------------------ events
    def assignments(self, body: tuple[ast.Assign, ...], weight: str | None,
                    where: str) -> tuple[dict[sympy.Symbol, sympy.Expr], set[str]]:
        """Check targets, names and units; return the composed update (state symbol -> new value
        in terms of the old state) and the targets whose statements were already reported (their
        linearity is not checked again). Bad statements are skipped, the others still compose."""
        syms = self.symbols(weight)
        new = {syms[s]: syms[s] for s in self.state}
        bad: set[str] = set()
        extra = {} if weight else {p.weight: "the weight exists only inside `on input(...)`"
                                   for p in self.n.inputs}
        for a in body:
            if a.target not in self.state:
                if a.target in self.param_spans:
                    self.err("E012", f"assignment to parameter `{a.target}` in {where}", a.span,
                             "parameters are constant; declare a state variable for values "
                             "that change")
                elif a.target == weight:
                    self.err("E018", f"assignment to the weight `{a.target}`", a.span,
                             "assign to a state variable, e.g. `i += w`")
                else:
                    self.err("E018", f"assignment to unknown variable `{a.target}` in {where}",
                             a.span, _suggest(a.target, self.state))
                continue
            if not self.names_ok(a.value, self.scope(weight), where, extra):
                bad.add(a.target)
                continue
            self.expect_dim(a.value, self.dims(weight), DIMENSIONLESS,
                            f"the value assigned to `{a.target}`", "E032",
                            "state variables, weights and thresholds are dimensionless")
            value = self.to_sym(a.value, weight)
            if value is None:
                bad.add(a.target)
                continue
            value = value.xreplace(new)  # statements apply in order
            t = syms[a.target]
            new[t] = value if a.op == "=" else (new[t] + value if a.op == "+=" else new[t] - value)
        return new, bad

    def input_port(self, port: ast.InputPort) -> None:
        where = f"`on {port.name}({port.weight})`"
        if port.weight in self.state or port.weight in self.param_spans:
            self.err("E011", f"the weight name `{port.weight}` of {where} is already a "
                     "parameter or state variable", port.span, "pick another name, e.g. `w`")
            return
        new, bad = self.assignments(port.body, port.weight, where)
        w = sympy.Symbol(port.weight, real=True)
        states = self.state_syms()
        reported: set[str] = set()
        for a in port.body:
            if a.target not in self.state or a.target in bad or a.target in reported:
                continue
            t = sympy.Symbol(a.target, real=True)
            jump = sympy.expand(new[t] - t)
            coeff = sympy.diff(jump, w)
            if coeff.free_symbols & (states | {w}) or sympy.simplify(jump.subs(w, 0)) != 0:
                self.err("E022", f"the jump of `{a.target}` in {where} is not proportional to "
                         f"the weight `{port.weight}`", a.span,
                         f"an input event must add (constant) x `{port.weight}` to the state, "
                         f"e.g. `{a.target} += {port.weight}`; it may not depend on the state")
                reported.add(a.target)

    def ports_unique(self) -> None:
        seen: dict[str, ast.InputPort] = {}
        for p in self.n.inputs:
            if p.name in seen:
                self.err("E011", f"duplicate input port `{p.name}`", p.span,
                         f"first declared at line {seen[p.name].span.line}; name ports "
                         "differently, e.g. `on input_exc(w)` and `on input_inh(w)`")
            seen.setdefault(p.name, p)

    def threshold(self) -> None:
        th = self.n.threshold
        if th is None:
            if self.n.reset:
                self.err("E025", "`on spike` without a threshold", self.n.name_span,
                         "add `spike when v >= v_th`, or remove `on spike`")
            if self.n.refractory is not None:
                self.err("E025", "`refractory` without a threshold", self.n.refractory.span,
                         "add `spike when v >= v_th`, or remove `refractory`")
            return
        ok = self.names_ok(th.lhs, self.scope(), "the threshold")
        ok = self.names_ok(th.rhs, self.scope(), "the threshold") and ok
        if not ok:
            return
        dl, dr = self.dim(th.lhs, self.dims()), self.dim(th.rhs, self.dims())
        for side, d in ((th.lhs, dl), (th.rhs, dr)):
            if d is not None and d != DIMENSIONLESS:
                self.err("E032", f"the threshold must be dimensionless, but this side is "
                         f"{format_dim(d)}", side.span, "compare state variables with "
                         "dimensionless parameters, e.g. `v >= v_th`")
        lhs, rhs = self.to_sym(th.lhs), self.to_sym(th.rhs)
        if lhs is None or rhs is None:
            return
        states = self.state_syms()
        u = lhs - rhs
        if self.nonlinear_in(u, states):
            self.err("E021", "threshold is not linear in the state", th.span,
                     "exact spike times need a linear threshold c^T x >= theta, e.g. "
                     "`v - a >= v_th`")
        elif not (u.free_symbols & states) or all(sympy.diff(u, s) == 0 for s in states):
            self.err("E021", "threshold does not depend on the state", th.span,
                     "write it in terms of a state variable, e.g. `v >= v_th`")
        elif rhs.free_symbols & states:
            self.err("E021", "the right side of the threshold depends on the state", th.rhs.span,
                     "move state variables to the left: `v - a >= v_th`")

    def reset(self) -> None:
        if not self.n.reset:
            return
        new, bad = self.assignments(self.n.reset, None, "`on spike`")
        states = self.state_syms()
        reported: set[str] = set()
        for a in self.n.reset:
            if a.target not in self.state or a.target in bad or a.target in reported:
                continue
            t = sympy.Symbol(a.target, real=True)
            if self.nonlinear_in(new[t], states):
                reported.add(a.target)
                self.err("E023", f"the reset of `{a.target}` is not affine in the state", a.span,
                         "a reset must be x <- R x + r, e.g. `v = v_reset`, `v -= v_th`, "
                         "`a += beta`")

    def refractory(self) -> None:
        r = self.n.refractory
        if r is None:
            return
        if not self.names_ok(r.period, dict.fromkeys(self.param_spans, "param"),
                             "the refractory period",
                             dict.fromkeys(self.state, "the refractory period may use "
                                           "parameters only")):
            return
        self.expect_dim(r.period, self.param_dims, TIME, "the refractory period", "E033",
                        "write a time with a unit, e.g. `refractory 2 ms`")
        self.sign_known_ast(r.period)
        try:
            v = evaluate(r.period, self.param_values)
        except NumberRange as e:
            self.out_of_range(e)
            return
        except Exception:  # unknown parameter value: already reported
            return
        if math.isfinite(v) and v < 0:
            self.err("E036", f"negative refractory period ({v:g} ms)", r.period.span,
                     "use 0 ms or a positive time")
        elif not math.isfinite(v):
            self.err("E037", "the refractory period is not a finite number", r.period.span, None)


def check_neuron(n: ast.Neuron) -> list[Diagnostic]:
    return NeuronChecks(n).run()


def neuron_param_info(n: ast.Neuron) -> tuple[dict[str, Fraction], dict[str, float], list[Diagnostic]]:
    """(dimension, default value in ms) of every well-formed parameter of a neuron, and the
    diagnostics of the malformed ones. The single source of parameter units: the network
    checks (overrides) and the compiler (ParamIR) both use it."""
    c = NeuronChecks(n)
    c.params()
    return c.param_dims, c.param_values, c.diags


# ============================================================================ networks


class NetworkChecks(_Checks):
    def __init__(self, net: ast.Network, neurons: dict[str, ast.Neuron],
                 unresolved: frozenset[str] = frozenset(),
                 discrete: Optional[dict[str, ast.DiscreteNeuron]] = None):
        super().__init__()
        self.net = net
        self.neurons = neurons
        self.discrete = discrete or {}  # `neuron P = psn(...)` declarations (dsl/discrete.py)
        self.unresolved = unresolved  # names of failed imports ("*": a whole file)
        self.pops: dict[str, object] = {}  # name -> InputPop | Layer

    def run(self) -> list[Diagnostic]:
        _name_length(self, self.net.name, self.net.span)
        for p in list(self.net.inputs) + list(self.net.layers):
            _name_length(self, p.name, p.span)
        for p in self.net.inputs:
            self.declare(p.name, p, p.span)
            if p.size <= 0:
                self.err("E040", f"input `{p.name}` has size {p.size}", p.span,
                         "sizes are positive integers, e.g. `input x[5]`")
        for layer in self.net.layers:
            self.declare(layer.name, layer, layer.span)
        for p in list(self.net.inputs) + list(self.net.layers):
            conv_checks.check_shape(self, p)  # E084
        self.consts = sparse_checks.constant_values(self, self.net)  # `param K = 100`
        order = {l.name: k for k, l in enumerate(self.net.layers)}
        for k, layer in enumerate(self.net.layers):
            self.layer(layer, k, order)
        discrete_checks.check_network(self, self.net, self.discrete)
        recurrence_checks.check_network(self, self.net, self.neurons)  # E093-E095
        sparse_checks.check_network(self, self.net, self.consts)
        for r in self.net.readouts:
            self.readout(r)
        self.sizes()
        return self.diags

    def sizes(self) -> None:
        """E053: populations over MAX_POPULATION, then the network's weight count."""
        big = False
        for p in list(self.net.inputs) + list(self.net.layers):
            if p.size > MAX_POPULATION:
                big = True
                self.err("E053", f"`{p.name}` has {p.size} neurons; the limit is {MAX_POPULATION}",
                         getattr(p, "size_span", p.span), "a population this large does not fit "
                         "in memory; split the model or use fewer neurons")
        if big:
            return
        total = 0
        for layer in self.net.layers:
            for c in layer.connections:
                if c.kind == "sparse":  # k partners per neuron, no dense matrix (dsl/sparse.py limits it)
                    continue
                src = self.pops.get(c.source or layer.name)
                total += conv_checks.weights_of(c, src, layer)
            if total > MAX_WEIGHTS:
                self.err("E053", f"the network has more than {MAX_WEIGHTS} weights (at least "
                         f"{total} up to layer `{layer.name}`)", layer.span,
                         "each dense or recurrent connection holds source x target weights; "
                         "use smaller layers")
                return

    def declare(self, name: str, node, span: ast.Span) -> None:
        if name in self.pops:
            self.err("E045", f"duplicate population name `{name}` in network {self.net.name}",
                     span, f"first declared at line {self.pops[name].span.line}")
        else:
            self.pops[name] = node

    def layer(self, layer: ast.Layer, index: int, order: dict[str, int]) -> None:
        if layer.size <= 0:
            self.err("E040", f"layer `{layer.name}` has size {layer.size}", layer.size_span,
                     "sizes are positive integers, e.g. `layer hidden[120] = ...`")
        neuron = self.neurons.get(layer.neuron)
        if neuron is not None:
            self.overrides(layer, neuron)
        elif layer.neuron in self.discrete:
            pass  # dsl/discrete.py checks discrete layers
        elif not {layer.neuron, "*"} & self.unresolved:  # else reported at the import (E007-E009)
            self.err("E041", f"unknown neuron type `{layer.neuron}`", layer.neuron_span,
                     _suggest(layer.neuron, self.neurons) +
                     " (define it in this file or import it, e.g. `from \"lif.snn\" import LIF`)")
        if not layer.connections:
            self.err("E049", f"layer `{layer.name}` has no inputs", layer.span,
                     f"connect it, e.g. `layer {layer.name}[{layer.size}] = {layer.neuron}() "
                     "<- dense(x)`")
        for c in layer.connections:
            self.connection(layer, c, neuron, index, order)

    def overrides(self, layer: ast.Layer, neuron: ast.Neuron) -> None:
        dims, defaults, bad = neuron_param_info(neuron)
        declared = {p.name for p in neuron.params}
        seen: set[str] = set()
        values: dict[str, float] = {}
        for o in layer.overrides:
            if o.name not in declared:
                self.err("E044", f"{neuron.name} has no parameter `{o.name}`", o.span,
                         _suggest(o.name, declared))
                continue
            if o.name in seen:
                self.err("E011", f"parameter `{o.name}` overridden twice", o.span, None)
                continue
            seen.add(o.name)
            v = self.constant(o.value, {}, f"the override of `{o.name}`")
            d = self.dim(o.value, {})
            want = dims.get(o.name, DIMENSIONLESS)
            if d is not None and d != want:
                self.err("E030", f"unit mismatch: `{o.name}` is {format_dim(want)}, but the "
                         f"override is {format_dim(d)}", o.value.span,
                         "write times with a unit, e.g. `tau_m = 20 ms`")
                continue
            if v is not None and want == TIME and v <= 0 and _divides(neuron, o.name):
                self.err("E034", f"time constant `{o.name}` must be positive, got {v:g} ms",
                         o.value.span, "use a positive time, e.g. `20 ms`")
                continue
            if v is not None:
                values[o.name] = v
        if not bad and len(values) == len(layer.overrides):  # every override is well-formed
            self.diags += effective.layer_diagnostics(layer, neuron, defaults, values)

    def connection(self, layer: ast.Layer, c: ast.Connection, neuron: Optional[ast.Neuron],
                   index: int, order: dict[str, int]) -> None:
        if c.kind in conv_checks.CONV_KINDS:
            conv_checks.check_connection(self, layer, c, neuron, index, order)  # E080-E083
            return
        if c.kind not in CONNECTION_KINDS:
            self.err("E046", f"unknown connection kind `{c.kind}`", c.span,
                     _suggest(c.kind, CONNECTION_KINDS + conv_checks.CONV_KINDS))
            return
        if c.kind == "sparse":
            sparse_checks.connection(self, layer, c, neuron, self.consts)
            return
        if c.source:
            src = self.pops.get(c.source)
            if src is None:
                self.err("E043", f"connection from unknown population `{c.source}`", c.source_span,
                         _suggest(c.source, self.pops))
            elif c.kind == "dense" and isinstance(src, ast.Layer) and order[c.source] >= index:
                self.err("E052", f"dense connection from `{c.source}`, which is "
                         f"{'this layer' if c.source == layer.name else 'a later layer'}",
                         c.source_span, f"use `recurrent({c.source})` for feedback connections")
            elif c.kind == "recurrent" and isinstance(src, ast.InputPop):
                self.err("E047", f"recurrent connection from input `{c.source}`", c.source_span,
                         f"use `dense({c.source})`")
        seen: set[str] = set()
        for key, value in c.options:
            if key in seen:
                self.err("E047", f"option `{key}` given twice", value.span, None)
                continue
            seen.add(key)
            if key == "init":
                self.init_option(value, c.kind)
            elif key == "delays":
                self.delay_option(value)
            elif key == "port":
                self.port_option(value, neuron)
            else:
                self.err("E047", f"unknown connection option `{key}`", value.span,
                         _suggest(key, CONNECTION_OPTIONS))

    def call_args(self, call: ast.Call, names: tuple[str, ...], what: str) -> Optional[dict]:
        try:
            return bind_args(call, names, what)
        except ArgError as e:
            self.err("E047", e.message, e.span, e.hint)
            return None

    def init_option(self, value: ast.Expr, kind: str = "dense") -> None:
        hint = "write `init = normal(mean, std)`, `uniform(low, high)`, `constant(value)` or `auto(rate = 10 Hz)`"
        if isinstance(value, ast.Call) and value.func == "auto":
            self.auto_init_option(value, kind)
            return
        if not isinstance(value, ast.Call) or value.func not in INITS:
            self.err("E047", "invalid weight initialisation", value.span, hint)
            return
        args = self.call_args(value, INITS[value.func], value.func + "()")
        if args is None:
            return
        if set(args) != set(INITS[value.func]):
            missing = [n for n in INITS[value.func] if n not in args]
            self.err("E047", f"{value.func}() needs {', '.join(missing)}", value.span, hint)
            return
        vals = {}
        for k, e in args.items():
            self.expect_dim(e, {}, DIMENSIONLESS, f"`{k}` of {value.func}()", "E032",
                            "weights are dimensionless")
            vals[k] = self.constant(e, {}, f"`{k}` of {value.func}()")
        if value.func == "normal" and vals.get("std") is not None and vals["std"] < 0:
            self.err("E047", "the standard deviation must be >= 0", args["std"].span, None)
        if (value.func == "uniform" and None not in (vals.get("low"), vals.get("high"))
                and vals["low"] > vals["high"]):
            self.err("E047", "uniform(low, high) needs low <= high", value.span, None)

    def auto_init_option(self, value: ast.Call, kind: str) -> None:
        """`auto(rate = 10 Hz)`: a target mean rate, positive and at most MAX_AUTO_RATE (E096),
        a rate (E097); feed-forward connections only (recurrent weights are not scaled)."""
        if kind == "recurrent":
            self.err("E047", "`init = auto(...)` scales feed-forward connections only", value.span,
                     "give the recurrent weights an explicit init, e.g. `init = normal(0.0, 0.05)`")
            return
        args = self.call_args(value, ("rate",), "auto()")
        if not args:  # auto(): the default rate; a bad argument was reported
            return
        e = args["rate"]
        d = self.dim(e, {})
        if d is not None and d != RATE:
            self.err("E097", f"the target rate of auto() must be {format_dim(RATE)}, but it is {format_dim(d)}",
                     e.span, "write a rate with a unit, e.g. `auto(rate = 10 Hz)`")
            return
        v = self.constant(e, {}, "the target rate of auto()")
        if v is not None and not 0 < v <= MAX_AUTO_RATE:
            self.err("E096", f"the target rate of auto() must be positive and at most "
                     f"{MAX_AUTO_RATE * 1000:g} Hz, got {v * 1000:g} Hz", e.span,
                     "write a positive mean firing rate, e.g. `auto(rate = 10 Hz)`")

    def delay_option(self, value: ast.Expr) -> None:
        hint = "write `delays = fixed(2 ms)` or `delays = learnable(max = 5 ms)`"
        if not isinstance(value, ast.Call) or value.func not in ("fixed", "learnable"):
            self.err("E047", "invalid delays", value.span, hint)
            return
        names = ("value",) if value.func == "fixed" else ("max", "init")
        args = self.call_args(value, names, value.func + "()")
        if args is None:
            return
        required = "value" if value.func == "fixed" else "max"
        if required not in args:
            self.err("E047", f"{value.func}() needs `{required}`", value.span, hint)
            return
        for k, e in args.items():
            d = self.dim(e, {})
            if d is not None and d != TIME:
                self.err("E033", f"delays must be times, but `{k}` is {format_dim(d)}", e.span,
                         "write a unit, e.g. `2 ms`")
                continue
            v = self.constant(e, {}, f"the delay `{k}`")
            if v is not None and v < 0:
                self.err("E036", f"negative delay ({v:g} ms)", e.span, "delays are >= 0")

    def port_option(self, value: ast.Expr, neuron: Optional[ast.Neuron]) -> None:
        if not isinstance(value, ast.Name):
            self.err("E047", "`port` must name an input port", value.span,
                     "write e.g. `port = input_exc`")
            return
        if neuron is not None and value.id not in {p.name for p in neuron.inputs}:
            self.err("E050", f"neuron {neuron.name} has no input port `{value.id}`", value.span,
                     _suggest(value.id, [p.name for p in neuron.inputs]))

    def readout(self, r: ast.Readout) -> None:
        target = self.pops.get(r.layer)
        if target is None or isinstance(target, ast.InputPop):
            what = "an input population" if target is not None else "not a layer of this network"
            self.err("E042", f"readout of `{r.layer}`, which is {what}", r.layer_span,
                     _suggest(r.layer, [l.name for l in self.net.layers]))
        if r.kind not in READOUTS:
            self.err("E048", f"unknown readout `{r.kind}`", r.span, _suggest(r.kind, READOUTS))
            return
        for k, v in r.args[:1]:  # readouts take no arguments (one report per readout)
            if r.kind == "li_integral" and k == "tau":
                # the engines integrate the potential itself; a `tau` was accepted and ignored
                self.err("E048", "li_integral takes no `tau`: it is the integral of the "
                         "potential, whose leak is the readout neuron's own time constant", v.span,
                         f"write `readout {r.layer}: li_integral` and set the leak on the layer, "
                         "e.g. `LI(tau_m = 20 ms)`")
            else:
                self.err("E048", f"unexpected argument `{k}` to readout {r.kind}", v.span,
                         "readouts take no arguments, e.g. `readout out: li_integral`")
        if isinstance(target, ast.Layer) and discrete_checks.check_readout(self, r, target, self.discrete):
            return
        if isinstance(target, ast.Layer) and r.kind in ("first_spike", "spike_count"):
            neuron = self.neurons.get(target.neuron)
            if neuron is not None and neuron.threshold is None:
                self.err("E048", f"readout {r.kind} of `{r.layer}`, whose neuron {neuron.name} "
                         "never spikes", r.span,
                         "use `max_potential` or `li_integral` for neurons without threshold")


class ArgError(Exception):
    """Arguments of an option call that do not fit its parameters (E047)."""

    def __init__(self, message: str, span: ast.Span, hint: Optional[str] = None):
        super().__init__(message)
        self.message, self.span, self.hint = message, span, hint


def bind_args(call: ast.Call, names: tuple[str, ...], what: str) -> dict[str, ast.Expr]:
    """Map the positional and keyword arguments of an option call (`learnable(5 ms, init = 1 ms)`)
    onto `names`; ArgError if there are too many or one is unknown or given twice. The checks and
    the compiler's analysis both bind arguments through this function."""
    if len(call.args) > len(names):
        raise ArgError(f"{what} takes at most {len(names)} arguments ({', '.join(names)})",
                       call.span)
    out = dict(zip(names, call.args))
    for k, v in call.kwargs:
        if k not in names or k in out:
            raise ArgError(f"unexpected argument `{k}` to {what}", v.span,
                           "arguments: " + ", ".join(names))
        out[k] = v
    return out


def _name_length(checks: _Checks, name: str, span: ast.Span) -> None:
    if len(name) > MAX_NAME:
        checks.err("E026", f"name `{name[:20]}...` is {len(name)} characters long; the limit is "
                   f"{MAX_NAME}", span, "use a shorter name")


def _divides(neuron: ast.Neuron, param: str) -> bool:
    return any(n.id == param for ode in neuron.dynamics for n in free_names(ode.rhs))


def check_network(net: ast.Network, neurons: dict[str, ast.Neuron],
                  unresolved: frozenset[str] = frozenset(),
                  discrete: Optional[dict[str, ast.DiscreteNeuron]] = None) -> list[Diagnostic]:
    return NetworkChecks(net, neurons, unresolved, discrete).run()


# ============================================================================ modules


def check_module(module: ast.Module, imported: dict[str, ast.Neuron],
                 unresolved: frozenset[str] = frozenset()) -> list[Diagnostic]:
    """Check a parsed module whose imports gave `imported`; fills module.visible_neurons.
    Uses of `unresolved` names (imports already reported as failed) are not reported again."""
    diags: list[Diagnostic] = []
    local: dict[str, ast.Neuron] = {}
    for n in _unique(module.neurons, "neuron", lambda n: n.name_span, diags):
        if n.name in imported:
            diags.append(Diagnostic("E011", f"neuron `{n.name}` is also imported", n.name_span,
                                    f"rename it or drop the import of `{n.name}`"))
            continue
        local[n.name] = n
        diags += check_neuron(n)
    visible = dict(imported)
    visible.update(local)
    module.visible_neurons = visible
    discrete: dict[str, ast.DiscreteNeuron] = {}
    for d in _unique(module.discrete_neurons, "neuron", lambda n: n.name_span, diags):
        if d.name in visible:
            diags.append(Diagnostic("E011", f"duplicate neuron `{d.name}`", d.name_span,
                                    f"`{d.name}` is also a neuron with dynamics; rename one"))
            continue
        discrete[d.name] = d
        diags += discrete_checks.check_declaration(d)
    for net in _unique(module.networks, "network", lambda n: n.span, diags):
        diags += check_network(net, visible, unresolved, discrete)
    return diags


def _unique(items, what: str, span_of, diags: list[Diagnostic]) -> list:
    """The items whose name was not taken by an earlier one; E011 for the others."""
    first: dict[str, object] = {}
    for it in items:
        if it.name in first:
            diags.append(Diagnostic("E011", f"duplicate {what} `{it.name}`", span_of(it),
                                    f"first defined at line {span_of(first[it.name]).line}"))
        else:
            first[it.name] = it
    return list(first.values())
