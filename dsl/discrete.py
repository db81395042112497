"""Checks of the discrete-time parts of a file: `neuron P = psn(...)` declarations, a network's
`time_bins` grid and the layers that use discrete neurons (codes E054-E058, docs/language.md).

Discrete layers run on a grid of time bins, exact layers in continuous time; the two do not
mix in one network (E056): a bridge would turn exact spike times into bin counts and lose the
exactness the event engines exist for, so it is refused with a hint rather than approximated.
`discrete_spec` and `grid_spec` are shared with the compiler (compiler/psn.py).
"""

from __future__ import annotations

import math
from typing import Optional

from . import ast
from .diagnostics import Diagnostic
from .sym import NumberRange, evaluate, free_names
from .units import DIMENSIONLESS, TIME, UnitError, dim_of

# kind -> its arguments (all named); T and k are integers, surrogate a call such as atan(alpha = 2)
KINDS = {"psn": ("T", "surrogate"), "masked_psn": ("T", "k", "surrogate"), "sliding_psn": ("k", "surrogate")}
SURROGATES = {"atan": 2.0, "sigmoid": 4.0}  # name -> default alpha (SpikingJelly's)
SETTINGS = ("time_bins",)
DISCRETE_READOUTS = ("spike_count", "max_potential")
MAX_BINS = 4096  # a psn layer holds a T x T weight; 4096^2 doubles are 128 MB
MAX_ORDER = 1024


class SpecError(Exception):
    def __init__(self, code: str, message: str, span: ast.Span, hint: Optional[str] = None):
        super().__init__(message)
        self.diagnostic = Diagnostic(code, message, span, hint)


def _number(expr: ast.Expr, what: str, want_dim) -> float:
    if any(True for _ in free_names(expr)):
        raise SpecError("E054", f"{what} must be a number", expr.span, "write e.g. `k = 4`")
    try:
        dim = dim_of(expr, {})
        value = evaluate(expr, {})
    except (UnitError, NumberRange, TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise SpecError("E054", f"{what} is not a valid number", expr.span, "write e.g. `k = 4`") from None
    if dim != want_dim or not math.isfinite(value):
        kind = "a time" if want_dim == TIME else "a dimensionless number"
        raise SpecError("E054", f"{what} must be {kind}", expr.span, "write e.g. `k = 4`")
    return value


def _count(expr: ast.Expr, what: str, limit: int) -> int:
    v = _number(expr, what, DIMENSIONLESS)
    if v != int(v) or not 1 <= v <= limit:
        raise SpecError("E054", f"{what} must be an integer from 1 to {limit}, got {v:g}", expr.span, None)
    return int(v)


def _surrogate(expr: ast.Expr) -> tuple[str, float]:
    hint = "write `surrogate = atan(alpha = 2)` or `surrogate = sigmoid(alpha = 4)`"
    if isinstance(expr, ast.Name) and expr.id in SURROGATES:
        return expr.id, SURROGATES[expr.id]
    if not isinstance(expr, ast.Call) or expr.func not in SURROGATES:
        raise SpecError("E054", "unknown surrogate", expr.span, hint)
    args = dict(zip(("alpha",), expr.args))
    for k, v in expr.kwargs:
        if k != "alpha" or k in args:
            raise SpecError("E054", f"unexpected argument `{k}` to {expr.func}()", v.span, hint)
        args[k] = v
    if len(expr.args) > 1:
        raise SpecError("E054", f"{expr.func}() takes one argument, alpha", expr.span, hint)
    alpha = _number(args["alpha"], "alpha", DIMENSIONLESS) if "alpha" in args else SURROGATES[expr.func]
    if not alpha > 0:
        raise SpecError("E054", f"alpha must be positive, got {alpha:g}", args["alpha"].span, hint)
    return expr.func, alpha


def discrete_spec(d: ast.DiscreteNeuron) -> dict:
    """{kind, T (None: from the grid), k, surrogate, alpha} of a declaration; SpecError if invalid."""
    if d.kind not in KINDS:
        from .checks import _suggest

        raise SpecError("E054", f"unknown discrete neuron kind `{d.kind}`", d.kind_span,
                        _suggest(d.kind, KINDS) + " (psn, masked_psn, sliding_psn)")
    names = KINDS[d.kind]
    out = dict(kind=d.kind, T=None, k=None, surrogate="atan", alpha=SURROGATES["atan"])
    seen = set()
    for key, value in d.args:
        if key not in names or key in seen:
            raise SpecError("E054", f"unexpected argument `{key}` to {d.kind}()", value.span,
                            "arguments: " + ", ".join(names))
        seen.add(key)
        if key == "T":
            out["T"] = _count(value, "T (the number of bins)", MAX_BINS)
        elif key == "k":
            out["k"] = _count(value, "k (the order)", MAX_ORDER)
        else:
            out["surrogate"], out["alpha"] = _surrogate(value)
    if "k" in names and out["k"] is None:
        raise SpecError("E054", f"{d.kind}() needs its order k", d.span, f"write e.g. `{d.kind}(k = 4)`")
    if out["T"] is not None and out["k"] is not None and out["k"] > out["T"]:
        raise SpecError("E054", f"order k = {out['k']} exceeds T = {out['T']} bins", d.span, "use k <= T")
    return out


def grid_spec(net: ast.Network) -> tuple[Optional[int], Optional[float]]:
    """(bins, width in ms) of `time_bins = 32` (a count) or `time_bins = 1 ms` (a width); (None,
    None) without a setting; SpecError for an unknown, repeated or invalid setting (E055)."""
    from .checks import _suggest

    bins = width = None
    seen = set()
    for s in net.settings:
        if s.name not in SETTINGS:
            raise SpecError("E055", f"unknown network setting `{s.name}`", s.span, _suggest(s.name, SETTINGS))
        if s.name in seen:
            raise SpecError("E055", f"`{s.name}` given twice", s.span, None)
        seen.add(s.name)
        try:
            dim = dim_of(s.value, {})
        except UnitError as e:
            raise SpecError("E055", e.message, e.span, None) from None
        if dim == TIME:
            width = _number(s.value, "time_bins", TIME)
            if not width > 0:
                raise SpecError("E055", f"the bin width must be positive, got {width:g} ms", s.value.span, None)
        else:
            try:
                bins = _count(s.value, "time_bins", MAX_BINS)
            except SpecError as e:
                raise SpecError("E055", e.diagnostic.message, e.diagnostic.span,
                                "write a bin width (`time_bins = 1 ms`) or a number of bins (`time_bins = 32`)")
    return bins, width


# ----------------------------------------------------------------------------- network checks


def check_network(checks, net: ast.Network, discrete: dict[str, ast.DiscreteNeuron]) -> None:
    """The discrete-time rules for one network, reported through `checks` (a NetworkChecks)."""
    is_discrete = {l.name: l.neuron in discrete for l in net.layers}
    try:
        bins, width = grid_spec(net)
    except SpecError as e:
        checks.diags.append(e.diagnostic)
        bins = width = None
        has_grid = True  # reported already
    else:
        has_grid = bins is not None or width is not None
    if any(is_discrete.values()) and not has_grid:
        first = next(l for l in net.layers if is_discrete[l.name])
        checks.err("E055", f"layer `{first.name}` is discrete-time, but network {net.name} declares no time grid",
                   first.span, "add `time_bins = 1 ms` (a bin width) or `time_bins = 32` (a number of bins)")
    elif has_grid and net.settings and not any(is_discrete.values()):
        checks.err("E055", "`time_bins` is set, but no layer is discrete-time", net.settings[0].span,
                   "remove it: exact layers run in continuous time, without bins")
    for layer in net.layers:
        if is_discrete[layer.name]:
            _layer(checks, layer, discrete[layer.neuron], bins, width)
        for c in layer.connections:
            src = c.source or layer.name
            if src in is_discrete and is_discrete[src] != is_discrete[layer.name]:
                _bridge(checks, layer, c, src, is_discrete[layer.name])


def _bridge(checks, layer: ast.Layer, c: ast.Connection, src: str, target_discrete: bool) -> None:
    if target_discrete:
        msg = f"discrete-time layer `{layer.name}` is fed by exact event layer `{src}`"
    else:
        msg = f"exact event layer `{layer.name}` is fed by discrete-time layer `{src}`"
    checks.err("E056", msg, c.source_span,
               "a network is either discrete-time (every layer a psn kind, inputs binned once) or exact "
               "(continuous time); binning exact spikes would discard their timing, so the bridge is refused: "
               "make every layer of the network the same kind")


def _layer(checks, layer: ast.Layer, d: ast.DiscreteNeuron, bins, width) -> None:
    for o in layer.overrides[:1]:
        checks.err("E058", f"discrete neuron {d.name} takes no parameter overrides", o.span,
                   f"set its arguments where it is declared: `neuron {d.name} = {d.kind}(...)`")
    for c in layer.connections:
        if c.kind != "dense":
            checks.err("E058", f"`{c.kind}` connections are not supported on discrete-time layer `{layer.name}`",
                       c.span, "use `dense(...)`: PSN neurons have no reset, their memory is the weight over time")
        for key, value in c.options:
            if key != "init":
                checks.err("E058", f"option `{key}` is not supported on discrete-time layer `{layer.name}`",
                           value.span, "discrete layers take `init = ...` only (no delays, one input port)")
            elif isinstance(value, ast.Call) and value.func == "auto":
                checks.err("E058", f"`init = auto(...)` is not supported on discrete-time layer `{layer.name}`",
                           value.span, "give it an explicit init, e.g. `init = normal(0.0, 0.2)` (auto scaling "
                           "is for exact event layers)")
    try:
        spec = discrete_spec(d)
    except SpecError:
        return  # reported at the declaration
    if spec["kind"] == "sliding_psn":
        return
    if bins is not None and spec["T"] is not None and spec["T"] != bins:
        checks.err("E057", f"{d.name} has T = {spec['T']} bins, network time_bins = {bins}", layer.neuron_span,
                   f"make them equal, or leave T out: `{d.kind}()` takes the network's number of bins")
    elif width is not None and spec["T"] is None:
        checks.err("E057", f"{d.name} ({d.kind}) needs T: the network gives a bin width, not a number of bins",
                   layer.neuron_span, f"write `{d.kind}(T = ...)` (the trial length / bin width) or "
                   "`time_bins = <number of bins>`")


def check_readout(checks, r: ast.Readout, layer: ast.Layer, discrete: dict[str, ast.DiscreteNeuron]) -> bool:
    """E048 for readouts discrete layers do not have; True when the layer is discrete."""
    if layer.neuron not in discrete:
        return False
    if r.kind not in DISCRETE_READOUTS:
        checks.err("E048", f"readout {r.kind} of discrete-time layer `{r.layer}`", r.span,
                   "discrete layers read out `spike_count` (spikes summed over bins) or `max_potential` "
                   "(the largest H over bins)")
    return True


def check_declaration(d: ast.DiscreteNeuron) -> list[Diagnostic]:
    try:
        discrete_spec(d)
    except SpecError as e:
        return [e.diagnostic]
    return []
