"""`PSNNetwork`: the SpikingNetwork of a discrete-time network (PSN family, compiler/psn.py).

`SpikingNetwork(model)` returns one of these when the chosen network's layers are psn kinds, so
training, evaluation and checkpoints use the same entry points. The input events are binned
once (exact counts per bin and channel, runtime/psn.py), then each layer is a dense map
followed by its PSN over time: S = Heaviside(PSN(counts @ W)). Readouts: `spike_count` (spikes
summed over bins, differentiable through the surrogate) and `max_potential` (max over bins of
H). Output spike trains for plots are the spikes' bin ends.

Backends: the engine name picks them. "triton-scan" / "triton-sequential" run the fused Triton
kernels (compiler/backends/triton/psn.py; CUDA tensors or TRITON_INTERPRET=1); "auto",
"torch", "torch-sequential" and "sequential-cpu" (what "auto" resolves to on a CPU) run the
PyTorch formulas on the tensors' device. An engine object (a custom `run_layer`) has no PSN
path and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from spikescan.compiler.ir import LayerIR, NetworkIR
from spikescan.runtime import psn
from spikescan.runtime.eager_guard import run_eagerly
from spikescan.runtime.network import DTYPE, NetworkOutput, SpikingNetwork, init_weight, input_offsets

TORCH_NAMES = ("auto", "torch", "torch-sequential", "sequential-cpu")
TRITON_NAMES = ("triton-scan", "triton-sequential")


@dataclass
class DiscreteOutput(NetworkOutput):
    """NetworkOutput plus the per-layer spike counts as floats that carry surrogate gradients."""

    bin_counts: list = field(default_factory=list)  # per layer [B, N]


def select_network(model, network: Optional[str]) -> Optional[NetworkIR]:
    """The NetworkIR SpikingNetwork would pick, or None when the choice is ambiguous or invalid
    (SpikingNetwork then raises its own error)."""
    if isinstance(model, tuple):
        return model[0]
    nets = getattr(model, "networks", None) or {}
    if network is None:
        return next(iter(nets.values())) if len(nets) == 1 else None
    return nets.get(network)


def is_discrete_model(model, network: Optional[str]) -> bool:
    try:
        net = select_network(model, network)
    except Exception:  # noqa: BLE001 - an analysis error surfaces in SpikingNetwork itself
        return False
    return bool(net is not None and getattr(net, "discrete", None))


def backend_of(engine) -> str:
    """"torch" or "triton" for an engine name; ValueError for what cannot run PSN layers."""
    if isinstance(engine, str) and engine in TORCH_NAMES:
        return "torch"
    if isinstance(engine, str) and engine in TRITON_NAMES:
        return "triton"
    raise ValueError(f"engine {engine!r} cannot run discrete-time (psn) layers: use 'auto' or 'torch' (PyTorch "
                     "on the tensors' device) or 'triton-scan' (fused Triton kernels on CUDA)")


class PSNLayer(nn.Module):
    """Dense input weights and the PSN weights of one discrete layer."""

    def __init__(self, layer: LayerIR, ir, sizes: dict[str, int], gen: torch.Generator):
        super().__init__()
        self.name, self.size, self.neuron, self.kind = layer.name, layer.size, layer.neuron, ir.kind
        self.surrogate = psn.Surrogate(ir.surrogate, ir.alpha)
        self.T, self.k = ir.T, ir.k
        self.learned: set = set()  # no time constants to learn (checkpoint contract)
        self.sources = [c.source for c in layer.connections]
        self.source_sizes = [sizes[s] for s in self.sources]
        self.weights = nn.ParameterList(
            [nn.Parameter(init_weight(c.init, sizes[c.source], layer.size, gen)) for c in layer.connections])
        if ir.kind == "psn":  # SpikingJelly's init: kaiming_uniform(a = sqrt(5)) = U(+-1/sqrt(T)), bias -1
            bound = 1 / math.sqrt(ir.T)
            self.psn_weight = nn.Parameter((torch.rand(ir.T, ir.T, generator=gen, dtype=DTYPE) * 2 - 1) * bound)
            self.psn_bias = nn.Parameter(torch.full((ir.T,), -1.0, dtype=DTYPE))
        elif ir.kind == "masked_psn":  # the same, with fan-in k: only the band is ever used
            bound = 1 / math.sqrt(ir.k)
            self.psn_weight = nn.Parameter((torch.rand(ir.T, ir.k, generator=gen, dtype=DTYPE) * 2 - 1) * bound)
            self.psn_bias = nn.Parameter(torch.full((ir.T,), -1.0, dtype=DTYPE))
        else:  # sliding: SpikingJelly's exp_init, w[k-1] = 1 halving backwards
            self.psn_weight = nn.Parameter(0.5 ** torch.arange(ir.k - 1, -1, -1, dtype=DTYPE))
            self.psn_bias = nn.Parameter(torch.tensor(-1.0, dtype=DTYPE))

    def merged_weight(self) -> Tensor:
        return self.weights[0] if len(self.weights) == 1 else torch.cat(list(self.weights), 0)

    def potential(self, x: Tensor) -> Tensor:
        """H [T, B, N] from the layer input x [T, B, C] (PyTorch formulas)."""
        if self.T is not None and x.shape[0] != self.T:
            raise ValueError(f"layer {self.name!r}: {self.kind} has T = {self.T} bins, the input was binned into "
                             f"{x.shape[0]}; make the trial length / bin width give T bins (t_end, time_bins)")
        z = _matmul(x, self.merged_weight())
        if self.kind == "psn":
            return psn.psn_potential(z, self.psn_weight, self.psn_bias)
        return psn.banded_potential(z, self.psn_weight, self.psn_bias)

    def forward(self, x: Tensor, backend: str, need_h: bool) -> tuple[Tensor, Optional[Tensor]]:
        if backend == "triton" and not need_h:
            from spikescan.compiler.backends.triton import psn as triton_psn

            if self.T is not None and x.shape[0] != self.T:
                self.potential(x)  # raises the bins error
            z = _matmul(x, self.merged_weight())
            s = self.surrogate
            if self.kind == "psn":
                return triton_psn.dense_spikes(z, self.psn_weight, self.psn_bias, s.kind, s.alpha), None
            return triton_psn.banded_spikes(z, self.psn_weight, self.psn_bias, s.kind, s.alpha), None
        if self.kind != "psn" and not need_h:  # fused in-place CPU form (runtime/psn.py)
            if self.T is not None and x.shape[0] != self.T:
                self.potential(x)  # raises the bins error
            return psn.banded_spikes(_matmul(x, self.merged_weight()), self.psn_weight, self.psn_bias,
                                     self.surrogate), None
        h = self.potential(x)
        return psn.spike(h, self.surrogate), h

    def clamp_(self) -> None:
        pass


class PSNNetwork(SpikingNetwork):
    __doc__ = __doc__

    def __init__(self, model, network: Optional[str] = None, *, engine="auto", seed: int = 0,
                 learn_time_constants: bool = False, chunk: int = 128, max_spikes: int = 64,
                 on_overflow: str = "flag"):
        nn.Module.__init__(self)
        net_ir = select_network(model, network)
        if learn_time_constants:
            raise ValueError("psn layers have no time constants to learn (learn_time_constants=True)")
        backend_of(engine)
        self.ir: NetworkIR = net_ir
        self.neurons = {}  # no NeuronIRs: the neurons are psn kinds (self.ir.discrete)
        self.engine_name = engine
        self.chunk, self.max_spikes, self.on_overflow = chunk, max_spikes, on_overflow
        self.input_offsets, self.n_inputs = input_offsets(net_ir)
        gen = torch.Generator().manual_seed(seed)
        sizes = dict(net_ir.inputs)
        self.layers = nn.ModuleDict()
        for layer in net_ir.layers:
            sizes[layer.name] = layer.size
            self.layers[layer.name] = PSNLayer(layer, net_ir.discrete[layer.neuron], sizes, gen)
        self.readout_kind, self.readout_layer = net_ir.readout.kind, net_ir.readout.layer
        if self.readout_kind not in ("spike_count", "max_potential"):
            raise ValueError(f"readout {self.readout_kind} is not available on discrete-time layers "
                             "(spike_count or max_potential)")
        self.n_out = self.layers[self.readout_layer].size

    def readout_theta(self) -> float:
        return 0.0  # a PSN spikes where H >= 0 (the bias holds the threshold)

    def _dense_inputs(self, like: Tensor) -> bool:
        """Dense binned inputs unless every layer that reads the (single) input population reads
        it alone on the CPU (CSR products on CUDA are left to a measurement that has not been made)."""
        readers = [l for l in self.layers.values() if any(s in self.ir.inputs for s in l.sources)]
        return like.device.type != "cpu" or len(self.ir.inputs) != 1 or any(len(l.sources) != 1 for l in readers)

    def _inputs(self, x: Tensor, src: str) -> Tensor:
        lo = self.input_offsets[src]
        return x[..., lo: lo + self.ir.inputs[src]]

    @run_eagerly  # torch.compiler.disable without importing torch._dynamo (runtime/eager_guard.py)
    def forward(self, times: Tensor, channels: Tensor, *, t_end: Optional[float] = None,
                observe_vmax: bool = False) -> DiscreteOutput:
        """times [B, n] (ms, +inf padding), channels [B, n]; t_end (ms) fixes the bins."""
        backend = backend_of(self.engine_name)
        T, width = self.ir.time_grid.resolve(t_end)
        like = next(self.parameters())
        dtype = like.dtype
        times, channels = times.to(device=like.device, dtype=dtype), channels.to(like.device)
        x = psn.bin_events(times, channels, self.n_inputs, T, width, dtype) if self._dense_inputs(like) else None
        # one input population read by a layer alone: sparse counts, O(events x N) products
        xs = psn.sparse_counts(times, channels, self.n_inputs, T, width, dtype) if x is None else None
        outs: dict[str, Tensor] = {}
        spikes, counts, soft, names, h_ro = [], [], [], [], None
        for name, lay in self.layers.items():
            if xs is not None and lay.sources[0] in self.ir.inputs:
                parts = [xs]
            else:
                parts = [self._inputs(x, s) if s in self.ir.inputs else outs[s] for s in lay.sources]
            inp = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
            need_h = name == self.readout_layer and self.readout_kind == "max_potential"
            s, h = lay(inp, backend, need_h)
            outs[name] = s
            if need_h:
                h_ro = h
            c = s.sum(0)
            soft.append(c)
            counts.append(c.detach().round().long())
            spikes.append(_bin_end_times(s.detach(), width))
            names.append(name)
        ro = names.index(self.readout_layer)
        readout = soft[ro] if self.readout_kind == "spike_count" else h_ro.max(0).values
        B = times.shape[0]
        return DiscreteOutput(
            readout=readout, readout_kind=self.readout_kind, first_spike=None, counts=counts, spikes=spikes,
            events=int(torch.isfinite(times).sum()), overflow=torch.zeros(B, dtype=torch.bool, device=times.device),
            vmax=None, layer_names=names, bin_counts=soft)


def _matmul(x, w: Tensor) -> Tensor:
    return psn.counts_matmul(x, w) if isinstance(x, psn.SparseCounts) else x @ w


def _bin_end_times(s: Tensor, width: float) -> Tensor:
    """Spikes [T, B, N] -> times [B, N, S] (the end of each spiking bin, sorted, +inf padded)."""
    T = s.shape[0]
    ends = (torch.arange(1, T + 1, dtype=s.dtype, device=s.device) * width)[:, None, None]
    t = torch.where(s > 0, ends, torch.full_like(s, math.inf)).permute(1, 2, 0)
    S = max(int((s > 0).sum(0).max()) if s.numel() else 0, 1)
    return t.sort(-1).values[..., :S].contiguous()
