"""The .snn text of an imported NIR graph (graph.Graph -> a readable model file).

One neuron definition per NIR neuron kind and equation shape, written in spikescan's own names
(tau_m, tau_s, v_th, v_reset as in models/cuba_lif.snn and models/lif.snn) and only with the
terms that are not the identity: r = 1, v_leak = 0, no bias and an input scale of exactly 1
leave `dv/dt = (i - v) / tau_m`, `i += w`, so a graph exported from spikescan comes back as the
equations it was exported from. Times are written in ms (NIR seconds x 1000, see `ms_of`).
Weights and delay values live in the checkpoint next to the file, not in the text."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .errors import NirError

KEYWORDS = {"neuron", "network", "params", "state", "dynamics", "on", "spike", "when", "refractory", "input",
            "layer", "readout", "import", "from", "dense", "recurrent", "exp", "log", "sqrt", "abs", "ms", "us", "s",
            "w", "psn", "masked_psn", "sliding_psn", "d", "dt"}


def ms_of(seconds: float) -> float:
    """Seconds -> ms: of the doubles next to 1000 x `seconds` whose value / 1000 rounds back to
    `seconds`, the one with the shortest decimal form (so 0.02 s -> 20.0 ms and an exported
    spikescan time in ms comes back bit for bit), else the correctly rounded product."""
    exact = Fraction(seconds) * 1000
    c = float(exact)
    cands = [c, math.nextafter(c, -math.inf), math.nextafter(c, math.inf)]
    ok = [x for x in cands if float(Fraction(x) / 1000) == seconds]
    return min(ok, key=lambda x: (len(repr(x)), abs(Fraction(x) - exact))) if ok else c


def ms_array(seconds: np.ndarray) -> np.ndarray:
    u, inv = np.unique(seconds, return_inverse=True)
    return np.array([ms_of(float(v)) for v in u], dtype=np.float64)[np.asarray(inv).reshape(seconds.shape)]


def exact(*factors, div=()) -> float:
    """prod(factors) / prod(div), correctly rounded (no intermediate rounding)."""
    v = Fraction(1)
    for f in factors:
        v *= Fraction(f)
    for f in div:
        v /= Fraction(f)
    return float(v)


def num(x: float) -> str:
    """A float as .snn text that parses back to the same double (unary minus for negatives)."""
    if not math.isfinite(x):
        raise NirError(f"internal: non-finite value {x!r} in the generated model")
    return repr(float(x))


@dataclass
class NeuronSpec:
    kind: str
    key: tuple  # (kind, terms present): one .snn neuron per key
    params: dict  # .snn parameter -> float (ms for times)
    times: set = field(default_factory=set)


def neuron_spec(kind: str, p: dict, bias: float, area: float) -> NeuronSpec:
    """The .snn parameters of a NIR neuron (p: NIR fields, seconds; bias: Affine bias; area: spike
    area in seconds)."""
    q, times = {}, set()
    cuba = kind.startswith("Cuba")
    if cuba:
        q["tau_m"], q["tau_s"] = ms_of(p["tau_mem"]), ms_of(p["tau_syn"])
        times |= {"tau_m", "tau_s"}
        g = exact(p["w_in"], area, div=(p["tau_syn"],))  # jump of i per unit weight
        if p["r"] != 1:
            q["r"] = p["r"]
        if bias != 0:
            q["i_bias"] = exact(p["w_in"], bias)
        if p["v_leak"] != 0:
            q["v_leak"] = p["v_leak"]
    elif kind in ("LIF", "LI"):
        q["tau_m"] = ms_of(p["tau"])
        times.add("tau_m")
        g = exact(p["r"], area, div=(p["tau"],))
        if p["v_leak"] != 0:
            q["v_leak"] = p["v_leak"]
        if bias != 0:
            q["r"], q["i_bias"] = p["r"], bias
    else:  # IF, I
        g = exact(p["r"], area)
        if bias != 0:
            q["r"], q["i_bias"] = p["r"], bias
    if g == 0 or not math.isfinite(g):
        raise NirError(f"a {kind} node's input scale r * area / tau is {g!r}; refused")
    if g != 1:
        q["w_scale"] = g
    if kind in ("LIF", "IF", "CubaLIF"):
        q["v_th"], q["v_reset"] = p["v_threshold"], p["v_reset"]
    key = (kind,) + tuple(k for k in ("r", "i_bias", "v_leak", "w_scale") if k in q)
    return NeuronSpec(kind=kind, key=key, params=q, times=times)


def neuron_text(name: str, spec: NeuronSpec) -> str:
    q = spec.params
    order = [k for k in ("tau_m", "tau_s", "v_th", "v_reset", "v_leak", "r", "i_bias", "w_scale") if k in q]
    params = "   ".join(f"{k} = {num(q[k])}{' ms' if k in spec.times else ''}" for k in order)
    scale = "w_scale * w" if "w_scale" in q else "w"
    lines = [f"neuron {name} {{", f"    params {{ {params} }}"]
    if spec.kind.startswith("Cuba"):
        drive = ("v_leak + " if "v_leak" in q else "") + ("r * i" if "r" in q else "i")
        lines += ["    state  { v = 0.0   i = 0.0 }", "    dynamics {", f"        dv/dt = ({drive} - v) / tau_m",
                  "        di/dt = (i_bias - i) / tau_s" if "i_bias" in q else "        di/dt = -i / tau_s",
                  "    }", f"    on input(w) {{ i += {scale} }}"]
    elif spec.kind in ("LIF", "LI"):
        terms = (["v_leak"] if "v_leak" in q else []) + (["r * i_bias"] if "i_bias" in q else [])
        rhs = f"({' + '.join(terms)} - v) / tau_m" if terms else "-v / tau_m"
        lines += ["    state  { v = 0.0 }", f"    dynamics {{ dv/dt = {rhs} }}", f"    on input(w) {{ v += {scale} }}"]
    else:
        rhs = "r * i_bias / 1 s" if "i_bias" in q else "0"
        lines += ["    state  { v = 0.0 }", f"    dynamics {{ dv/dt = {rhs} }}", f"    on input(w) {{ v += {scale} }}"]
    if spec.kind in ("LIF", "IF", "CubaLIF"):
        lines += ["    spike when v >= v_th", "    on spike { v = v_reset }"]
    lines.append("}")
    return "\n".join(lines)


class Namer:
    def __init__(self):
        self.taken = set(KEYWORDS)
        self.map = {}

    def __call__(self, raw: str) -> str:
        if raw in self.map:
            return self.map[raw]
        base = re.sub(r"[^A-Za-z0-9_]", "_", raw)[:60] or "n"
        if base[0].isdigit():
            base = "n_" + base
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        self.map[raw] = name
        return name
