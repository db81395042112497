"""Checks that depend on the parameter values a neuron is simulated with: its defaults (neuron
checks) and each layer's values after overrides (network checks).

- E036: a refractory period that is negative for the layer's values, e.g. `refractory tau_m -
  tau_s` with `R(tau_m = 2 ms, tau_s = 5 ms)`; reported at the layer's neuron call.
- W001 (warning): the reset leaves the potential at or above the threshold (`v_th <= v_reset`,
  or no reset of the potential at all), so the neuron fires again at once after every spike
  (after every refractory period): a spike train that never ends while the state is held.
  A neuron with a threshold but no `on spike` block is not judged.

Only called for neurons whose own checks found no error (every name and unit is known).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import sympy

from . import ast
from .diagnostics import WARNING, Diagnostic
from .sym import evaluate, to_sympy


def refractory_value(n: ast.Neuron, values: Mapping[str, float]) -> Optional[float]:
    """The refractory period in ms for these parameter values (None if it cannot be evaluated)."""
    if n.refractory is None:
        return None
    try:
        v = evaluate(n.refractory.period, values)
    except Exception:  # out of range or unknown: reported by the neuron checks
        return None
    return v if math.isfinite(v) else None


def refires(n: ast.Neuron, values: Mapping[str, float]) -> Optional[str]:
    """A description of why the potential is still at or above the threshold right after a
    reset (threshold `lhs >= rhs`, u = lhs - rhs >= 0 at a spike), or None when it is not (or
    this cannot be decided: a reset that depends on the state in another way)."""
    th = n.threshold
    if th is None or not n.reset:  # no `on spike`: not judged (many test neurons omit it)
        return None
    syms = {p.name: sympy.Symbol(p.name, real=True) for p in n.params}
    state = {s.name: sympy.Symbol(s.name, real=True) for s in n.state}
    syms.update(state)
    try:
        u = to_sympy(th.lhs, syms) - to_sympy(th.rhs, syms)
        new = dict((s, s) for s in state.values())
        for a in n.reset:
            t = state[a.target]
            value = to_sympy(a.value, syms).xreplace(new)
            new[t] = value if a.op == "=" else (new[t] + value if a.op == "+=" else new[t] - value)
        after = sympy.expand(u.xreplace(new))
        nums = {syms[k]: sympy.Float(v) for k, v in values.items() if k in syms}
        xs = set(state.values())
        if not (after.free_symbols & xs):  # the reset sets the potential: u+ = const
            val = float(after.xreplace(nums))
            if math.isfinite(val) and val >= 0:
                return "the reset sets the potential to or above the threshold"
            return None
        delta = sympy.expand(after - u)
        if not (delta.free_symbols & xs):  # the reset shifts the potential by a constant
            val = float(delta.xreplace(nums))
            if math.isfinite(val) and val >= 0:
                return "the reset does not lower the potential"
    except Exception:  # symbols without values, out of range: nothing to say
        return None
    return None


def _refire_hint(n: ast.Neuron) -> str:
    return ("the potential must end below the threshold after a spike, e.g. `v_reset = 0.0` "
            "below `v_th = 1.0`")


def neuron_diagnostics(n: ast.Neuron, values: Mapping[str, float]) -> list[Diagnostic]:
    """W001 for a neuron with its default parameter values."""
    why = refires(n, values)
    if why is None:
        return []
    return [Diagnostic("W001", f"neuron {n.name} fires again at once after every spike: {why}",
                       n.threshold.span, _refire_hint(n), WARNING)]


def layer_diagnostics(layer: ast.Layer, n: ast.Neuron, defaults: Mapping[str, float],
                      overrides: Mapping[str, float]) -> list[Diagnostic]:
    """E036 and W001 for the parameter values of one layer (defaults updated by its overrides);
    nothing when there are no overrides (the neuron checks already judged the defaults)."""
    if not overrides:
        return []
    values = {**defaults, **overrides}
    out = []
    t = refractory_value(n, values)
    d = refractory_value(n, defaults)
    if t is not None and t < 0 and not (d is not None and d < 0):
        names = ", ".join(f"`{k}`" for k in overrides)
        out.append(Diagnostic("E036", f"negative refractory period ({t:g} ms) in layer "
                              f"`{layer.name}`: the overrides of {names} make it negative",
                              layer.neuron_span, f"{n.name}'s refractory period "
                              f"(line {n.refractory.span.line}) must stay >= 0 ms; change the "
                              "overrides"))
    why = refires(n, values)
    if why is not None and refires(n, defaults) is None:
        out.append(Diagnostic("W001", f"the neurons of layer `{layer.name}` fire again at once "
                              f"after every spike: {why} with these overrides",
                              layer.neuron_span, _refire_hint(n), WARNING))
    return out
