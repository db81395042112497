"""IR of discrete-time networks (the Parallel Spiking Neuron family, dsl/discrete.py).

A discrete network has no NeuronIR: its neurons are built-in kinds whose whole dynamics is a
matrix product over time bins (runtime/psn.py), so the IR is the kind, its sizes and its
surrogate. `analyze_network` turns a checked network into a NetworkIR whose `discrete` maps
each neuron name to a DiscreteNeuronIR and whose `time_grid` holds the bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from spikescan.dsl import ast
from spikescan.dsl.discrete import SpecError, discrete_spec, grid_spec

from .errors import CompileError
from .ir import ConnectionIR, InitSpec, LayerIR, NetworkIR, ReadoutIR


@dataclass(frozen=True)
class DiscreteNeuronIR:
    name: str
    kind: str  # "psn" | "masked_psn" | "sliding_psn"
    T: Optional[int]  # bins (psn, masked_psn); None for sliding_psn (any length)
    k: Optional[int]  # order (masked_psn, sliding_psn)
    surrogate: str = "atan"
    alpha: float = 2.0


@dataclass(frozen=True)
class TimeGrid:
    """`time_bins = 32` (bins, the width is t_end / bins) or `time_bins = 1 ms` (width, the
    number of bins is ceil(t_end / width))."""

    bins: Optional[int] = None
    width: Optional[float] = None  # ms

    def resolve(self, t_end: Optional[float]) -> tuple[int, float]:
        """(bins, width) for a trial of t_end ms."""
        if t_end is None or not t_end > 0:
            raise ValueError("a discrete-time network needs t_end (the trial length in ms) to bin its inputs")
        if self.bins is not None:
            return self.bins, float(t_end) / self.bins
        n = max(1, -(-float(t_end) // self.width))  # ceil without float drift past an exact multiple
        return int(n), float(self.width)


def is_discrete(net: ast.Network, discrete: dict[str, ast.DiscreteNeuron]) -> bool:
    return any(l.neuron in discrete for l in net.layers)


def neuron_ir(d: ast.DiscreteNeuron, bins: Optional[int]) -> DiscreteNeuronIR:
    try:
        spec = discrete_spec(d)
    except SpecError as e:
        raise CompileError(e.diagnostic.code, e.diagnostic.message, e.diagnostic.span, e.diagnostic.hint) from None
    T = spec["T"] if spec["T"] is not None or spec["kind"] == "sliding_psn" else bins
    return DiscreteNeuronIR(d.name, spec["kind"], T, spec["k"], spec["surrogate"], float(spec["alpha"]))


def analyze_network(net: ast.Network, discrete: dict[str, ast.DiscreteNeuron]) -> NetworkIR:
    """NetworkIR of a checked discrete-time network (the dsl checks already refused what this
    repeats defensively: exact layers, recurrent connections, delays)."""
    from .analysis import _const, _init_spec

    try:
        bins, width = grid_spec(net)
    except SpecError as e:
        raise CompileError(e.diagnostic.code, e.diagnostic.message, e.diagnostic.span, e.diagnostic.hint) from None
    if bins is None and width is None:
        raise CompileError("E055", f"network {net.name} has discrete-time layers but no time grid", net.span,
                           "add `time_bins = 1 ms` or `time_bins = 32`")
    irs, layers = {}, []
    for l in net.layers:  # dense connections only go backwards (E052), so this order is topological
        if l.neuron not in discrete:
            raise CompileError("E056", f"layer '{l.name}' is not discrete-time", l.neuron_span,
                               "make every layer of a discrete network a psn kind")
        irs[l.neuron] = neuron_ir(discrete[l.neuron], bins)
        conns = []
        for c in l.connections:
            opts = dict(c.options)
            init = _init_spec(opts.pop("init")) if "init" in opts else InitSpec(kind="default")
            if c.kind != "dense" or opts:
                raise CompileError("E058", f"layer '{l.name}': only dense(...) with init = ... is supported", c.span)
            conns.append(ConnectionIR(kind="dense", source=c.source, port="input", delays=None, init=init))
        layers.append(LayerIR(name=l.name, size=l.size, neuron=l.neuron, params={}, connections=tuple(conns)))
    if len(net.readouts) != 1:
        span = net.readouts[1].span if net.readouts else net.span
        raise CompileError("E063" if net.readouts else "E048", "a network needs exactly one readout", span,
                           "keep one `readout` line, e.g. `readout out: spike_count`")
    ro = net.readouts[0]
    readout = ReadoutIR(layer=ro.layer, kind=ro.kind, args={k: _const(v, k) for k, v in ro.args})
    return NetworkIR(name=net.name, inputs={p.name: p.size for p in net.inputs}, layers=layers, readout=readout,
                     discrete=irs, time_grid=TimeGrid(bins, width))
