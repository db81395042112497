"""Training sparse recurrent networks with exact gradients (docs/sparse.md, "Training").

    net = SparseSpikeNet(SparseModel.load("net.snn"), n_out=1, readout_neuron=example_readout())
    out = net(30.0)                     # network spikes + readout spike times, with autograd
    loss = van_rossum(out.readout_times(0), target, tau=5.0)
    loss.backward()                     # exact: backprop through the event sequence (adjoint.py)

`SparseSpikeNet` holds the learnable tensors: the sparse connections' weights (one per stored
synapse, or one tied scalar per connection), a readout layer of spiking neurons driven by every
network neuron (dense weights [N, n_out]; its spikes do not feed back), and optionally the
initial state and the per-layer neuron params (the constant drive mu, time constants, ...).
The network runs in the exact reference loop, differentiated by the hand-written adjoint
(adjoint.py) or by autograd (autodiff.py, needed for the params' gradients); the readout is an
ordinary feed-forward layer of the exact torch engine (runtime/engines/torch_sequential.py),
whose input events are the network's spikes, so the gradient reaches the recurrent weights
through the input spike times.

`fit_spike_times` is the example task: make readout neuron 0 spike at given times (e.g. those
of a teacher network with other weights), by Adam on the van Rossum distance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.torch_sequential import run_layer

from .adjoint import simulate_adjoint
from .autodiff import DiffSpikes, default_weights, simulate
from .model import SparseModel

Tensor = torch.Tensor
LEARNABLE = ("weights", "readout", "x0", "params")
BACKWARDS = ("auto", "adjoint", "autograd")


EXAMPLE_SNN = """
# The example network of the training section of docs/sparse.md: a small balanced E/I network of
# driven LIF neurons (mu > v_th: every neuron fires alone; inhibition dominates, g = 8).
neuron DrivenLIF {{
    params {{ tau_m = 10 ms  mu = {mu}  v_th = 1.0  v_reset = 0.0 }}
    state {{ v = 0.0 }}
    dynamics {{ dv/dt = (mu - v) / tau_m }}
    on input(w) {{ v += w }}
    spike when v >= v_th
    on spike {{ v = v_reset }}
    refractory 1 ms
}}
# The readout: a current-based LIF, so its potential moves continuously between input spikes and
# its spike times depend smoothly on its weights (a driven LIF readout spikes mostly at the jump of
# an input, where the weight only decides which input).
neuron CubaReadout {{
    params {{ tau_m = 10 ms  tau_s = 5 ms  v_th = 1.0 }}
    state {{ v = 0.0  i = 0.0 }}
    dynamics {{
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }}
    on input(w) {{ i += w }}
    spike when v >= v_th
    on spike {{ v = 0.0 }}
}}
network train_example {{
    param K = {k}
    param J = {J}
    param g = {g}
    layer E[{n_e}] = DrivenLIF()
        <- sparse(E, k = 0.8 * K, init = {init_ee}, seed = {s1}),
           sparse(I, k = 0.2 * K, init = constant(-g * J / sqrt(K)), seed = {s2})
        {{ init v = uniform(0, 1) }}
    layer I[{n_i}] = DrivenLIF()
        <- sparse(E, k = 0.8 * K, init = constant(J / sqrt(K)), seed = {s3}),
           sparse(I, k = 0.2 * K, init = constant(-g * J / sqrt(K)), seed = {s4})
        {{ init v = uniform(0, 1) }}
}}
"""


def _compile_example(n_e: int, n_i: int, k: int, J: float, g: float, mu: float, seed: int, random_ee: bool):
    from spikescan.compiler.driver import analyze_module
    from spikescan.dsl import check_source
    from spikescan.dsl.diagnostics import DiagnosticError

    init_ee = "normal(J / sqrt(K), 0.5 * J / sqrt(K))" if random_ee else "constant(J / sqrt(K))"
    text = EXAMPLE_SNN.format(n_e=n_e, n_i=n_i, k=k, J=J, g=g, mu=mu, init_ee=init_ee,
                              s1=seed + 1, s2=seed + 2, s3=seed + 3, s4=seed + 4)
    module, diags = check_source(text, "train_example.snn")
    errors = [d for d in diags if d.is_error]
    if errors:
        raise DiagnosticError(errors, {"train_example.snn": text})
    return analyze_module(module, {"train_example.snn": text})


def example_model(n_e: int = 64, n_i: int = 16, k: int = 10, J: float = 0.2, g: float = 8.0, mu: float = 3.0,
                  seed: int = 0, random_ee: bool = False) -> SparseModel:
    """The example network (EXAMPLE_SNN) as a SparseModel: seeds seed+1 .. seed+4 for the four
    connections and `seed` for the initial state; random_ee draws the E->E weights per synapse
    (normal(J / sqrt(K), J / (2 sqrt(K))) instead of constant J / sqrt(K))."""
    neurons, nets = _compile_example(n_e, n_i, k, J, g, mu, seed, random_ee)
    return SparseModel.from_ir(nets["train_example"], neurons["DrivenLIF"], seed)


def example_readout() -> NeuronIR:
    """The example's readout neuron (CubaReadout of EXAMPLE_SNN: current-based LIF)."""
    neurons, _ = _compile_example(8, 2, 5, 0.2, 8.0, 3.0, 0, False)
    return neurons["CubaReadout"]


@dataclass
class SparseOutput:
    network: DiffSpikes
    readout: Tensor  # [n_out, S] readout spike times (ms), +inf padded, increasing
    counts: Tensor  # [n_out] int64

    def readout_times(self, k: int = 0) -> Tensor:
        """Spike times of readout neuron k (with gradient)."""
        return self.readout[k, : int(self.counts[k])]


class SparseSpikeNet(nn.Module):
    """A sparse recurrent network (SparseModel) with learnable weights and a spiking readout.

    per_synapse: one learnable weight per stored synapse (True) or one tied scalar per connection
    (False; needs constant(...) weights, e.g. the J / sqrt(K) of the model). learn: which of
    "weights", "readout", "x0", "params" are nn.Parameters (the others are buffers).
    readout_neuron: a NeuronIR with a threshold (default: the network's); readout_params: its
    parameter overrides (e.g. {"mu": 0.0}: no drive, it spikes only from its inputs);
    readout_init: (mean, std) of the seeded normal readout weights. backward: "adjoint" (the
    hand-written adjoint of adjoint.py), "autograd" (autodiff.py; also the params' gradients) or
    "auto" (adjoint unless the params are learned): the same gradients to rounding."""

    def __init__(self, model: SparseModel, n_out: int = 1, *, readout_neuron: Optional[NeuronIR] = None,
                 readout_params: Optional[dict] = None, readout_init: tuple = (0.02, 0.02),
                 per_synapse: bool = True, learn: Sequence[str] = ("weights", "readout"),
                 seed: int = 0, max_spikes: int = 100_000, max_readout_spikes: int = 256,
                 backward: str = "auto"):
        super().__init__()
        bad = set(learn) - set(LEARNABLE)
        if bad:
            raise ValueError(f"learn: unknown {sorted(bad)}; choose from {LEARNABLE}")
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
        if backward == "adjoint" and "params" in learn:
            raise NotImplementedError("backward='adjoint' has no gradients to the neuron params: "
                                      "use backward='autograd' (or 'auto') with learn=(..., 'params')")
        # the hand-written adjoint (adjoint.py) is 5-7x faster backward; autograd also gives params
        self.backward_kind = ("autograd" if "params" in learn else "adjoint") if backward == "auto" else backward
        self.model, self.n_out = model, int(n_out)
        self.readout_neuron = readout_neuron if readout_neuron is not None else model.neuron
        if self.readout_neuron.c is None or self.readout_neuron.theta is None:
            raise ValueError(f"readout neuron {self.readout_neuron.name!r} needs a threshold "
                             "(its spike times are the output)")
        self.readout_params = dict(readout_params or {})
        self.max_spikes, self.max_readout_spikes = max_spikes, max_readout_spikes
        g = torch.Generator().manual_seed(seed)
        w_out = readout_init[0] + readout_init[1] * torch.randn(model.n, self.n_out, generator=g, dtype=torch.float64)
        tensors = {"readout": w_out, "x0": torch.from_numpy(model.x0.copy()),
                   "params": torch.from_numpy(model.params.copy())}
        for name, t in tensors.items():
            if name in learn:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        ws = default_weights(model, per_synapse)
        self._n_conn = len(ws)
        for i, w in enumerate(ws):  # one tensor per connection of model.csr
            if "weights" in learn:
                setattr(self, f"weight_{i}", nn.Parameter(w))
            else:
                self.register_buffer(f"weight_{i}", w)

    @property
    def weights(self) -> list:
        """The connections' weights (model.csr order): [n_synapses] per synapse or 0-d tied."""
        return [getattr(self, f"weight_{i}") for i in range(self._n_conn)]

    def run_network(self, duration_ms: float) -> DiffSpikes:
        run = simulate_adjoint if self.backward_kind == "adjoint" else simulate
        return run(self.model, duration_ms, list(self.weights), self.x0, self.params, self.max_spikes)

    def forward(self, duration_ms: float) -> SparseOutput:
        net = self.run_network(duration_ms)
        times = net.times.reshape(1, -1)
        channels = torch.from_numpy(net.neurons).reshape(1, -1)
        if times.shape[1] == 0:  # no network spike: one event past the horizon (dropped by the engine)
            times = torch.full((1, 1), float(duration_ms) + 1.0, dtype=torch.float64)
            channels = torch.zeros(1, 1, dtype=torch.int64)
        res = run_layer(self.readout_neuron, self.readout_params, times, channels, self.readout,
                        t_end=float(duration_ms), max_spikes=self.max_readout_spikes)
        return SparseOutput(net, res.times[0], res.counts[0])


def van_rossum(times: Tensor, target: Tensor, tau: float) -> Tensor:
    """Squared van Rossum distance (1/tau) int (f - g)^2 dt between two spike trains, f and g the
    trains filtered with exp(-t/tau), over [0, inf): 1/2 sum_ij exp(-|a_i - a_j|/tau) + (same for
    b) - sum_ij exp(-|a_i - b_j|/tau). Differentiable in the spike times; it jumps where a spike
    appears or vanishes (as every loss of spike times), so a missing spike is learned only through
    the others."""
    a = times.reshape(-1, 1)
    b = target.to(times.dtype).reshape(-1, 1)

    def k(x, y):
        return torch.exp(-(x - y.T).abs() / tau).sum()

    return 0.5 * (k(a, a) + k(b, b)) - k(a, b)


def perturbed_teacher(student: SparseSpikeNet, weight_noise: float = 0.3, readout_noise: float = 0.3,
                      seed: int = 1) -> SparseSpikeNet:
    """A teacher with the student's structure and weights, each synapse weight w turned into
    w (1 + weight_noise n) and each readout weight into r (1 + readout_noise n), n ~ N(0, 1)
    seeded: its readout spikes are a reachable target for the student."""
    t = SparseSpikeNet(student.model, student.n_out, readout_neuron=student.readout_neuron,
                       readout_params=student.readout_params, per_synapse=True, learn=(), backward="autograd",
                       max_spikes=student.max_spikes, max_readout_spikes=student.max_readout_spikes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t.x0.copy_(student.x0)
        t.params.copy_(student.params)
        for wt, ws in zip(t.weights, student.weights):
            wt.copy_(ws.expand_as(wt) * (1.0 + weight_noise * torch.randn(wt.shape, generator=g, dtype=wt.dtype)))
        t.readout.copy_(student.readout * (1.0 + readout_noise * torch.randn(t.readout.shape, generator=g,
                                                                             dtype=t.readout.dtype)))
    return t


@dataclass
class FitHistory:
    losses: list = field(default_factory=list)  # loss per epoch (before that epoch's step)
    counts: list = field(default_factory=list)  # readout spike count per epoch
    network_spikes: list = field(default_factory=list)
    target: Optional[Tensor] = None


def fit_spike_times(net: SparseSpikeNet, target: Tensor, duration_ms: float, epochs: int = 20,
                    lr: float = 1e-3, weight_lr: Optional[float] = None, tau: float = 5.0,
                    callback=None) -> FitHistory:
    """Adam on van_rossum(readout neuron 0's spikes, target) over [0, duration_ms]; returns the
    loss of every epoch. weight_lr: learning rate of the recurrent weights (default lr; smaller
    keeps a chaotic network on one branch longer). callback(epoch, loss, output) is called after
    each forward pass."""
    rec = {id(p) for p in net.weights if isinstance(p, nn.Parameter)}
    groups = [{"params": [p for p in net.parameters() if id(p) not in rec], "lr": lr},
              {"params": [p for p in net.parameters() if id(p) in rec], "lr": lr if weight_lr is None else weight_lr}]
    opt = torch.optim.Adam([g for g in groups if g["params"]])
    hist = FitHistory(target=target)
    for ep in range(epochs):
        opt.zero_grad()
        out = net(duration_ms)
        loss = van_rossum(out.readout_times(0), target, tau)
        hist.losses.append(float(loss.detach()))
        hist.counts.append(int(out.counts[0]))
        hist.network_spikes.append(len(out.network))
        if callback is not None:
            callback(ep, float(loss.detach()), out)
        if loss.requires_grad:
            loss.backward()
            opt.step()
    return hist
