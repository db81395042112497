"""A sparse network ready to simulate: neurons laid out layer after layer (global index =
layer offset + local index), per-layer parameters, the seeded initial state and the out-going
CSR of every connection (connectivity.py). Both engines (reference.py, the O(N) oracle, and
engine.py, the compiled O(log N) one) run from this one description, so they see the same
network bit for bit.

    SparseModel.load(path_or_model, network=None, seed=0) -> SparseModel
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import sympy

from spikescan.compiler.ir import InitSpec, NetworkIR, NeuronIR

from .connectivity import SparseCSR, build_csr


class SparseModelError(ValueError):
    """A network that the sparse engines cannot run (the message says what to use instead)."""


@dataclass
class SparseModel:
    name: str
    neuron: NeuronIR
    layers: list[str]
    offsets: np.ndarray  # int64 [L + 1]: layer l holds neurons offsets[l] .. offsets[l+1]-1
    params: np.ndarray  # float64 [L, n_params] (IR order), ms for times
    x0: np.ndarray  # float64 [N, d]: the initial state (seeded)
    csr: list[SparseCSR]
    seed: int = 0
    meta: dict = field(default_factory=dict)
    # input populations (docs/sparse.md, "Networks with inputs"): names, channel offsets (global
    # channel = offset + local index) and the out-going CSR of every connection from an input
    inputs: list = field(default_factory=list)
    in_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    in_csr: list = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return int(self.in_offsets[-1])

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_synapses(self) -> int:
        return sum(c.n_synapses for c in self.csr)

    def layer_of(self, neurons: np.ndarray) -> np.ndarray:
        """Layer index of global neuron indices."""
        return np.searchsorted(self.offsets, neurons, side="right") - 1

    def pop_ids(self) -> np.ndarray:
        """int32 [N]: the layer index of every neuron."""
        return np.repeat(np.arange(len(self.layers), dtype=np.int32), np.diff(self.offsets))

    def param_dict(self, layer: int) -> dict[str, float]:
        return {p.name: float(v) for p, v in zip(self.neuron.params, self.params[layer])}

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model: Union[str, Path, object], network: Optional[str] = None, seed: int = 0) -> "SparseModel":
        """From a .snn path or a CompiledModel (spikescan.compiler.driver.load_model)."""
        from spikescan.compiler.driver import load_model

        m = load_model(model) if isinstance(model, (str, Path)) else model
        nets = m.networks
        if network is None:
            sparse = [n for n, net in nets.items() if is_sparse_ir(net)]
            if not sparse:
                raise SparseModelError(f"{m.source_path}: no sparse network (a network whose layers are "
                                       "connected with `sparse(...)`; see docs/sparse.md)")
            if len(sparse) > 1:
                raise SparseModelError(f"{m.source_path}: several sparse networks ({', '.join(sparse)}): "
                                       "choose one with --network NAME")
            network = sparse[0]
        if network not in nets:
            raise SparseModelError(f"{m.source_path}: no network {network!r}; networks: {', '.join(nets) or 'none'}")
        net = nets[network]
        if not is_sparse_ir(net):
            raise SparseModelError(f"network {network!r} has no sparse connections: run it with "
                                   "`spikescan train` or SpikingNetwork (spikescan run simulates sparse networks)")
        return cls.from_ir(net, m.neurons[net.layers[0].neuron], seed)

    @classmethod
    def from_ir(cls, net: NetworkIR, nir: NeuronIR, seed: int = 0) -> "SparseModel":
        if any(l.neuron != nir.name for l in net.layers):
            raise SparseModelError("the layers of a sparse network must share one neuron type (E090)")
        sizes = [l.size for l in net.layers]
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        names = [l.name for l in net.layers]
        params = np.array([[l.params[p.name] for p in nir.params] for l in net.layers], dtype=np.float64)
        params = params.reshape(len(sizes), len(nir.params))
        x0 = np.empty((int(offsets[-1]), nir.d), dtype=np.float64)
        for li, l in enumerate(net.layers):
            default = _default_init(nir, l.params)
            for q, s in enumerate(nir.state):
                spec = l.state_init.get(s)
                rng = np.random.default_rng([seed, li, q])
                x0[offsets[li]:offsets[li + 1], q] = (_draw(spec, l.size, rng) if spec is not None
                                                      else default[q])
        in_names = list(net.inputs)
        in_offsets = np.zeros(len(in_names) + 1, dtype=np.int64)
        np.cumsum([net.inputs[n] for n in in_names], out=in_offsets[1:])
        csr, in_csr = [], []
        for li, l in enumerate(net.layers):
            for c in l.connections:
                if c.source in net.inputs:  # an input connection: its own CSR list (inputs.py)
                    from .inputs import build_input_csr

                    si = in_names.index(c.source)
                    in_csr.append(build_input_csr(c, int(in_offsets[si]), net.inputs[c.source],
                                                  int(offsets[li]), sizes[li]))
                    continue
                si = names.index(c.source)
                csr.append(build_csr(c, int(offsets[si]), sizes[si], int(offsets[li]), sizes[li]))
        return cls(net.name, nir, names, offsets, params, x0, csr, seed, inputs=in_names,
                   in_offsets=in_offsets, in_csr=in_csr)


def is_sparse_ir(net: NetworkIR) -> bool:
    return any(c.kind == "sparse" for l in net.layers for c in l.connections)


def _default_init(nir: NeuronIR, params: dict[str, float]) -> list[float]:
    subs = {p.symbol: params[p.name] for p in nir.params}
    return [float(sympy.N(sympy.sympify(e).subs(subs))) for e in nir.init]


def _draw(spec: InitSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    if spec.kind == "uniform":
        return rng.uniform(spec.a, spec.b, n)
    if spec.kind == "normal":
        return rng.normal(spec.a, spec.b, n)
    return np.full(n, spec.a)
