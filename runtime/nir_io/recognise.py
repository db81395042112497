"""Recognise a .snn neuron as a NIR neuron from its equations, never from its name.

The compiler's IR (compiler/ir.py) holds every neuron as the linear hybrid system
dx/dt = A x + a0, x += B w at an input, spike when c^T x >= theta, x <- R x + r at a spike.
For one parameter set (a layer's values, or one neuron's when time constants are learned) the
matrices are evaluated exactly (parameters as exact rationals) and matched against the NIR
neurons, written in the same form (times in ms here, seconds in NIR; `area` is the spike area
in seconds, 1 for NIR's unit Dirac delta, see docs/nir.md):

    LI      d = 1, no threshold:  A = -1/tau,  a0 = v_leak/tau,  B = r area/tau_s
    LIF     LI + c = 1/k (k > 0), theta = v_threshold/k, hard reset R = 0, r = v_reset
    I / IF  A = 0: a0 = r bias / (1 s),  B = r area / (1 s)   (bias: an Affine bias)
    CubaLI  d = 2 (I, v): A = [[-1/tau_syn, 0], [r/tau_mem, -1/tau_mem]],
            a0 = [w_in bias/tau_syn, v_leak/tau_mem], B = [w_in area/tau_syn_s, 0]
    CubaLIF CubaLI + threshold on v only, reset v = v_reset, I kept

Anything else (more state, a subtractive or no reset, a refractory period, a threshold on the
current, a non-zero initial state, ...) raises NirError naming the neuron and the reason."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy

from spikescan.compiler.ir import NeuronIR

from .errors import NirError

MS_PER_S = sympy.Integer(1000)


@dataclass(frozen=True)
class NeuronMap:
    kind: str  # "LIF" | "LI" | "IF" | "I" | "CubaLIF" | "CubaLI"
    params: dict  # NIR parameter -> float (seconds for times)
    bias: float  # constant input current, exported as an Affine bias (0 for LI/LIF: in v_leak)


def rational(x) -> sympy.Rational:
    """The exact value of a float (or int, Fraction) as a sympy Rational."""
    f = Fraction(x) if not isinstance(x, Fraction) else x
    return sympy.Rational(f.numerator, f.denominator)


def _numbers(M, subs) -> list:
    out = []
    for e in (M if isinstance(M, sympy.MatrixBase) else [M]):
        v = sympy.sympify(e).xreplace(subs)
        if v.free_symbols:
            raise NirError(f"internal: unresolved symbols {sorted(map(str, v.free_symbols))} in {e}")
        if not v.is_Rational:
            v = sympy.Rational(str(sympy.N(v, 60)))
        out.append(v)
    return out


class _Eval:
    """The IR's matrices for one parameter set, as exact rationals (state order of the IR)."""

    def __init__(self, ir: NeuronIR, values: dict, port: str):
        subs = {p.symbol: rational(float(values[p.name])) for p in ir.params}
        d = ir.d
        flat = _numbers(ir.A, subs)
        self.A = [flat[i * d:(i + 1) * d] for i in range(d)]
        self.a0 = _numbers(ir.a0, subs)
        self.B = _numbers(ir.ports[port], subs)
        self.init = _numbers(ir.init, subs)
        self.spiking = ir.c is not None
        self.c = _numbers(ir.c, subs) if self.spiking else None
        self.theta = _numbers(ir.theta, subs)[0] if self.spiking else None
        flat = _numbers(ir.R, subs)
        self.R = [flat[i * d:(i + 1) * d] for i in range(d)]
        self.r = _numbers(ir.r, subs)
        self.t_ref = _numbers(ir.t_ref, subs)[0]
        self.potential = _numbers(ir.potential, subs) if ir.potential is not None else None


def recognise(ir: NeuronIR, values: dict, port: str, area_s, where: str) -> NeuronMap:
    """The NIR neuron equal to `ir` with parameter values `values` (ms for times), receiving
    spikes on `port`; `area_s` the spike area in seconds. NirError if there is none."""
    ev = _Eval(ir, values, port)
    area = rational(area_s)
    names = ir.state

    def refuse(why: str):
        raise NirError(f"{where}: {why}; NIR has no exact counterpart, so it is not exported (docs/nir.md)")

    if any(v != 0 for v in ev.init):
        bad = [f"{n} = {float(v):g}" for n, v in zip(names, ev.init) if v != 0]
        refuse(f"initial state {', '.join(bad)} is not 0 (NIR graphs have no initial state; spikescan's "
               "importer starts every state at 0)")
    if ev.t_ref != 0:
        refuse(f"refractory period {float(ev.t_ref):g} ms (NIR neurons have none)")
    if ir.d == 1:
        return _one_state(ev, names, area, refuse)
    if ir.d == 2:
        return _two_states(ev, names, area, refuse)
    refuse(f"{ir.d} state variables ({', '.join(names)}); NIR's neurons have one (LI, LIF, I, IF) or two "
           "(CubaLI, CubaLIF: a synaptic current driving the potential)")


def _threshold(ev: _Eval, m: int, names, refuse) -> tuple:
    """(v_threshold, v_reset) of a threshold on state m with a hard reset of m (others kept)."""
    k = ev.c[m]
    if any(ci != 0 for i, ci in enumerate(ev.c) if i != m):
        refuse(f"the threshold reads {', '.join(n for n, ci in zip(names, ev.c) if ci != 0)}; a NIR neuron's "
               f"threshold reads the potential {names[m]} only")
    if k <= 0:
        refuse(f"the threshold is crossed when {names[m]} falls (coefficient {float(k):g}); NIR neurons spike "
               "when the potential rises above v_threshold")
    for i in range(len(names)):
        want = [0] * len(names) if i == m else [1 if j == i else 0 for j in range(len(names))]
        if ev.R[i] != want or (i != m and ev.r[i] != 0):
            if i == m and ev.R[m][m] == 1 and all(ev.R[m][j] == 0 for j in range(len(names)) if j != m):
                what = "no reset" if ev.r[m] == 0 else f"a subtractive reset ({names[m]} += {float(ev.r[m]):g})"
                refuse(f"{what} of {names[m]}; NIR neurons reset to v_reset (`on spike {{ {names[m]} = v_reset }}`)")
            if i == m:
                refuse(f"the reset of {names[m]} is not `{names[m]} = <constant>`; NIR neurons reset to v_reset")
            refuse(f"the reset changes {names[i]}; NIR neurons reset the potential only")
    return ev.theta / k, ev.r[m]


def _one_state(ev: _Eval, names, area, refuse) -> NeuronMap:
    a, a0, beta = ev.A[0][0], ev.a0[0], ev.B[0]
    if beta == 0:
        refuse("an input does not change the state")
    params = {}
    if a > 0:
        refuse(f"d{names[0]}/dt grows with {names[0]} (rate {float(a):g}/ms); NIR's leak needs tau > 0")
    if a < 0:
        tau = -1 / a  # ms
        params.update(tau=tau / MS_PER_S, r=beta * (tau / MS_PER_S) / area, v_leak=a0 * tau)
        bias, kind = 0, "LI"
    else:
        r = beta / area
        params["r"] = r
        bias, kind = a0 * MS_PER_S / r, "I"
    if ev.spiking:
        params["v_threshold"], params["v_reset"] = _threshold(ev, 0, names, refuse)
        kind += "F"
    return NeuronMap(kind=kind, params={k: float(v) for k, v in params.items()}, bias=float(bias))


def _two_states(ev: _Eval, names, area, refuse) -> NeuronMap:
    A = ev.A
    driven = [i for i in range(2) if ev.B[i] != 0]
    if len(driven) != 1:
        refuse("an input does not change the state" if not driven else
               f"an input jumps both {names[0]} and {names[1]}; NIR's CubaLIF input drives the synaptic current only")
    s = driven[0]
    m = 1 - s
    if A[s][m] != 0:
        refuse(f"d{names[s]}/dt depends on {names[m]} (NIR's synaptic current is driven by its input only)")
    if A[m][s] == 0:
        refuse(f"the input current {names[s]} does not drive {names[m]}")
    if A[s][s] >= 0 or A[m][m] >= 0:
        bad = names[s] if A[s][s] >= 0 else names[m]
        refuse(f"{bad} does not decay (NIR's CubaLIF needs tau_syn > 0 and tau_mem > 0)")
    tau_syn, tau_mem = -1 / A[s][s], -1 / A[m][m]  # ms
    w_in = ev.B[s] * (tau_syn / MS_PER_S) / area
    params = dict(tau_syn=tau_syn / MS_PER_S, tau_mem=tau_mem / MS_PER_S, r=A[m][s] * tau_mem,
                  v_leak=ev.a0[m] * tau_mem, w_in=w_in)
    bias = ev.a0[s] * tau_syn / w_in
    if ev.spiking:
        params["v_threshold"], params["v_reset"] = _threshold(ev, m, names, refuse)
        kind = "CubaLIF"
    else:
        if ev.potential is None or ev.potential != [1 if i == m else 0 for i in range(2)]:
            refuse(f"its readout potential is not {names[m]} (NIR's CubaLI outputs v; declare {names[m]} first)")
        kind = "CubaLI"
    return NeuronMap(kind=kind, params={k: float(v) for k, v in params.items()}, bias=float(bias))
