"""`SpikingNetwork`: an nn.Module built from a compiled network (NetworkIR + NeuronIRs).

Layers run in topological order with an exact engine (runtime/engines). Each layer's output
spikes [B, N, S] become the next layer's input events (times [B, N*S], channel = neuron index);
a layer with several presynaptic sources sees their events merged, with channel offsets, and
one weight matrix that stacks the per-connection weights along the channel axis. Gradients flow
through the spike times (the engines differentiate them exactly), so earlier layers learn
through later ones. A layer with a `recurrent(itself)` connection keeps that weight apart
(`w_rec` [N, N]) and runs on an exact recurrent event loop: the JIT-compiled
runtime/engines/recurrent_cpu.py with engine "sequential-cpu" (or "auto" on a CPU), else
runtime/engines/recurrent.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from spikescan.compiler.ir import ConnectionIR, InitSpec, LayerIR, NetworkIR, NeuronIR
from spikescan.runtime import recurrent_net
from spikescan.runtime.eager_guard import run_eagerly
from spikescan.runtime.network_doc import NETWORK_DOC, OUTPUT_DOC

DTYPE = torch.float64


@dataclass
class NetworkOutput:
    __doc__ = OUTPUT_DOC

    readout: Tensor  # [B, n_out]: first spike times (+inf silent), counts, max potential or li integral
    readout_kind: str
    first_spike: Optional[Tensor]  # [B, n_out] first spike of the readout layer (None if non-spiking)
    counts: list[Tensor]  # per layer [B, N] int64
    spikes: list[Tensor]  # per layer [B, N, S] (+inf padded)
    events: int  # input events processed over all layers (finite entries)
    overflow: Tensor  # [B] bool: some layer hit max_spikes for this sample
    vmax: Optional[Tensor] = None  # [B, n_out] max potential of the readout layer, when asked
    layer_names: list[str] = field(default_factory=list)


def init_weight(spec: InitSpec, fan_in: int, fan_out: int, gen: Optional[torch.Generator]) -> Tensor:
    """Initial weights [fan_in, fan_out] from an InitSpec. "default": normal(0, 1/sqrt(fan_in))
    (a Kaiming-like scale; .snn files for a given neuron usually set their own). "auto":
    normal(1/sqrt(fan_in), 1/sqrt(fan_in)), which SpikingNetwork.auto_init scales to a target rate
    on data."""
    shape = (fan_in, fan_out)
    if spec.kind == "normal":
        return torch.randn(shape, generator=gen, dtype=DTYPE) * spec.b + spec.a
    if spec.kind == "uniform":
        return torch.rand(shape, generator=gen, dtype=DTYPE) * (spec.b - spec.a) + spec.a
    if spec.kind == "constant":  # `init = constant(v)`: a = b = v
        return torch.full(shape, float(spec.a), dtype=DTYPE)
    if spec.kind == "default":
        return torch.randn(shape, generator=gen, dtype=DTYPE) / math.sqrt(max(fan_in, 1))
    if spec.kind == "auto":  # mean = std: every neuron gets net excitation (see runtime/auto_init.py)
        return (torch.randn(shape, generator=gen, dtype=DTYPE) + 1.0) / math.sqrt(max(fan_in, 1))
    raise ValueError(f"unknown weight init kind {spec.kind!r} (normal|uniform|constant|default|auto)")


def input_offsets(net_ir: NetworkIR) -> tuple[dict[str, int], int]:
    """Each input population's first channel in the concatenated input, and the channel count."""
    offsets, off = {}, 0
    for name, size in net_ir.inputs.items():
        offsets[name] = off
        off += size
    return offsets, off


def flatten_spikes(times: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """[B, N, S] spike trains -> (times [B, M], channels [B, M]) events, channel = neuron index,
    each sample's events in time order (a stable sort: equal times keep the neuron order, as the
    engines' own stable argsort would) and M = the largest number of spikes of one sample, so the
    next layer never walks columns that are padding (+inf) in its sample."""
    B, N, S = times.shape
    smax = int(counts.max().item()) if counts.numel() else 0
    times = times[:, :, : max(smax, 1)]
    S = times.shape[2]
    t = times.reshape(B, N * S)
    ch = torch.arange(N, device=times.device).repeat_interleave(S).expand(B, N * S)
    M = max(1, int(counts.sum(1).max().item())) if counts.numel() else 1  # one padding column at least
    t, perm = torch.sort(t, dim=1, stable=True)  # differentiable in the values
    return t[:, :M], torch.gather(ch, 1, perm[:, :M]).contiguous()


class _Layer(nn.Module):
    """Weights, delays and neuron parameters of one layer."""

    def __init__(
        self,
        layer: LayerIR,
        neuron: NeuronIR,
        source_sizes: dict[str, int],
        gen: Optional[torch.Generator],
        learn_time_constants: bool,
    ):
        super().__init__()
        self.name = layer.name
        self.size = layer.size
        self.neuron = neuron.name
        ports = {c.port for c in layer.connections}
        # one port: its name; several: set below to a PortMap (the port of every merged channel)
        self.port = next(iter(ports)) if len(ports) == 1 else None
        # Recurrent connections (to the layer itself, zero delay) are fed back inside the event
        # loop by runtime/engines/recurrent.py; their weights are kept apart as `w_rec` [N, N].
        rec = [c for c in layer.connections if c.kind == "recurrent"]
        for c in layer.connections:
            if c.kind not in ("dense", "recurrent"):
                raise NotImplementedError(f"layer {layer.name!r}: connection kind {c.kind!r} is not supported")
        if rec and neuron.c is None:
            raise ValueError(f"layer {layer.name!r}: a recurrent connection needs a spiking neuron ({neuron.name} has "
                             "no threshold)")
        # recurrent weights (the first is `w_rec`), then their delays: runtime/recurrent_net.py
        recurrent_net.init_recurrent(self, layer, source_sizes, gen, init_weight, DTYPE)
        ff = [c for c in layer.connections if c.kind != "recurrent"]
        self.sources = [c.source for c in ff]
        self.source_sizes = [source_sizes[s] for s in self.sources]
        self.rec_port = rec[0].port if rec else None
        if len(ports) > 1:
            from spikescan.runtime.engines.ports import PortMap

            self.port = PortMap.from_blocks([c.port for c in ff], self.source_sizes)
            if len(self.port.names) == 1:  # the other port is the recurrent connection's
                self.port = self.port.names[0]
        if rec and recurrent_net.is_plain(layer) and self.rec_port != self.port:
            raise NotImplementedError(
                f"layer {layer.name!r}: a recurrent connection on another port than the feed-forward "
                "ones is not supported yet by the recurrent engines")
        self.weights = nn.ParameterList(
            [nn.Parameter(init_weight(c.init, source_sizes[c.source], layer.size, gen)) for c in ff]
        )
        # `init = auto(rate = r)` connections: SpikingNetwork.auto_init scales them together to
        # the first one's target rate r (1/ms); None when the layer has none.
        self.auto_mask = [c.init.kind == "auto" for c in ff]
        self.auto_rate = next((float(c.init.a) for c in ff if c.init.kind == "auto"), None)
        # Delays: one tensor per connection, learnable (Parameter) or fixed (buffer); None if absent.
        self.has_delays = any(c.delays is not None for c in ff)
        self.delay_max: list[float] = []
        self.delays = nn.ParameterList()
        for k, c in enumerate(ff):
            shape = (source_sizes[c.source], layer.size)
            if c.delays is None:
                d, dmax, learn = torch.zeros(shape, dtype=DTYPE), 0.0, False
            else:
                dmax, learn = float(c.delays.max), c.delays.learnable
                if c.delays.init < 0:
                    d = torch.rand(shape, generator=gen, dtype=DTYPE) * min(-c.delays.init, dmax)
                else:
                    d = torch.full(shape, min(float(c.delays.init), dmax), dtype=DTYPE)
            self.delay_max.append(dmax)
            self.delays.append(nn.Parameter(d, requires_grad=learn))
        # Neuron parameters: buffers (scalars), or learnable per-neuron log time constants.
        self.param_names = [p.name for p in neuron.params]
        self.learned = set()
        for p in neuron.params:
            value = float(layer.params.get(p.name, p.default))
            if learn_time_constants and p.dim == 1 and value > 0:
                self.register_parameter(
                    "log_" + p.name, nn.Parameter(torch.full((layer.size,), math.log(value), dtype=DTYPE))
                )
                self.learned.add(p.name)
            else:
                self.register_buffer("p_" + p.name, torch.tensor(value, dtype=DTYPE))

    def params(self) -> dict[str, Tensor]:
        out = {}
        for name in self.param_names:
            out[name] = torch.exp(getattr(self, "log_" + name)) if name in self.learned else getattr(self, "p_" + name)
        return out

    def auto_weights(self) -> list[Tensor]:
        """The weight tensors that `init = auto(...)` scales (runtime/auto_init.py): a layer class
        with other weights (e.g. convolution kernels) provides the same method."""
        return [w for w, a in zip(self.weights, self.auto_mask) if a]

    def merged_weight(self) -> Tensor:
        return self.weights[0] if len(self.weights) == 1 else torch.cat(list(self.weights), 0)

    def merged_delays(self) -> Optional[Tensor]:
        if not self.has_delays:
            return None
        ds = [d.clamp(0.0, m) for d, m in zip(self.delays, self.delay_max)]
        return ds[0] if len(ds) == 1 else torch.cat(ds, 0)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Project learnable delays back into [0, max] (called after each optimiser step)."""
        for d, m in zip(self.delays, self.delay_max):
            d.clamp_(0.0, m)
        recurrent_net.clamp_recurrent_(self)


def _recurrent_runner(engine):
    """Recurrent layers run on an exact recurrent event loop: the JIT-compiled one
    (runtime/engines/recurrent_cpu.py, which itself hands readouts and GPU tensors to the
    PyTorch loop) when the network's engine is the CPU JIT ("sequential-cpu", also what "auto"
    picks on a CPU), else the PyTorch loop of runtime/engines/recurrent.py."""
    if getattr(engine, "__name__", "") == "spikescan.runtime.engines.sequential_cpu":
        from spikescan.runtime.engines.recurrent_cpu import run_recurrent_layer
    else:
        from spikescan.runtime.engines.recurrent import run_recurrent_layer
    return run_recurrent_layer


class SpikingNetwork(nn.Module):
    # model: a CompiledModel (from spikescan.compiler.driver.load_model / compile_model), or a
    # pair (NetworkIR, {name: NeuronIR}). engine: an engine name for runtime/engines.get_engine
    # (or an object with the engines' `run_layer`).
    __doc__ = NETWORK_DOC

    def __new__(cls, model=None, network: Optional[str] = None, **kw):
        # A discrete-time network (psn kinds, compiler/psn.py) is a PSNNetwork, a subclass with
        # the same interface, so training, evaluation and checkpoints need no second entry point.
        if cls is SpikingNetwork and model is not None:
            from spikescan.runtime.psn_network import PSNNetwork, is_discrete_model

            if is_discrete_model(model, network):
                cls = PSNNetwork
        return super().__new__(cls)

    def __init__(
        self,
        model,
        network: Optional[str] = None,
        *,
        engine: str = "torch",
        seed: int = 0,
        learn_time_constants: bool = False,
        chunk: int = 128,
        max_spikes: int = 64,
        on_overflow: str = "flag",
    ):
        super().__init__()
        if isinstance(model, tuple):
            net_ir, neurons = model
        else:
            nets = model.networks
            if not nets:
                raise ValueError("the model defines no network (only neurons): nothing to train")
            if network is None:
                if len(nets) > 1:
                    raise ValueError(f"the model defines several networks {sorted(nets)}: choose one with network=")
                network = next(iter(nets))
            if network not in nets:
                raise ValueError(f"network {network!r} not found; the model defines {sorted(nets)}")
            net_ir, neurons = nets[network], model.neurons
        if any(c.kind == "sparse" for l in net_ir.layers for c in l.connections):
            if net_ir.inputs:
                raise ValueError(f"network {net_ir.name!r} is a sparse network with inputs: run it as an "
                                 "nn.Module with spikescan.runtime.sparse.module.SparseInputNet (docs/sparse.md, "
                                 "\"Networks with inputs\"); SpikingNetwork runs dense networks")
            raise ValueError(f"network {net_ir.name!r} is a sparse autonomous network: simulate it with "
                             "`spikescan run` or spikescan.run_sparse (docs/sparse.md); SpikingNetwork "
                             "runs networks with input populations")
        self.ir: NetworkIR = net_ir
        self.neurons: dict[str, NeuronIR] = {l.neuron: neurons[l.neuron] for l in net_ir.layers}
        self.engine_name = engine
        self.chunk, self.max_spikes, self.on_overflow = chunk, max_spikes, on_overflow
        self.input_offsets, self.n_inputs = input_offsets(net_ir)
        gen = torch.Generator().manual_seed(seed)
        sizes = {**net_ir.inputs, **{l.name: l.size for l in net_ir.layers}}  # feedback: later layers too
        self.rec_plan = recurrent_net.plan(net_ir)  # recurrent groups and the order to run them
        self.layers = nn.ModuleDict()
        for layer in net_ir.layers:
            make = _Layer
            if any(getattr(c, "conv", None) is not None for c in layer.connections):
                from spikescan.runtime.conv import ConvLayer as make  # conv2d / pool2d (runtime/conv.py)
            self.layers[layer.name] = make(layer, self.neurons[layer.neuron], sizes, gen, learn_time_constants)
        self.readout_kind = net_ir.readout.kind
        self.readout_layer = net_ir.readout.layer
        if self.readout_layer not in self.layers:
            raise ValueError(f"readout layer {self.readout_layer!r} is not a layer of network {net_ir.name!r}")
        ro_neuron = self.neurons[self.layers[self.readout_layer].neuron]
        if self.readout_kind in ("first_spike", "spike_count") and ro_neuron.c is None:
            raise ValueError(
                f"readout {self.readout_kind} on layer {self.readout_layer!r} needs a spiking neuron, but "
                f"{ro_neuron.name} has no threshold"
            )
        self.n_out = self.layers[self.readout_layer].size

    @classmethod
    def from_file(cls, path, network: Optional[str] = None, **kw) -> "SpikingNetwork":
        from spikescan.compiler.driver import load_model

        return cls(load_model(str(path)), network, **kw)

    # ------------------------------------------------------------------ helpers

    def _engine(self):
        """The engine module for `engine_name`; any object with a `run_layer` works too (tests)."""
        if hasattr(self.engine_name, "run_layer"):
            return self.engine_name
        from spikescan.runtime.engines import get_engine

        return get_engine(self.engine_name, device=str(self.float_like().device))

    def float_like(self) -> Tensor:
        """A floating tensor of the network: its dtype and device are the network's (both follow
        `.to(device)`, `.to(torch.float32)`, `.double()`); inputs are moved to them."""
        for t in self.parameters():
            if t.is_floating_point():
                return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.zeros((), dtype=DTYPE)

    def readout_theta(self) -> float:
        """Numeric threshold of the readout layer (for the silent-neuron loss extension)."""
        lay = self.layers[self.readout_layer]
        ir = self.neurons[lay.neuron]
        if ir.theta is None:
            return 0.0
        subs = {p.symbol: float(lay.params()[p.name].detach().mean()) for p in ir.params}
        return float(ir.theta.subs(subs))

    def _input_events(self, times: Tensor, channels: Tensor, pop: str) -> tuple[Tensor, Tensor]:
        if len(self.ir.inputs) == 1:
            return times, channels
        lo = self.input_offsets[pop]
        hi = lo + self.ir.inputs[pop]
        mine = (channels >= lo) & (channels < hi) & torch.isfinite(times)
        t = torch.where(mine, times, torch.full_like(times, math.inf))
        return t, torch.where(mine, channels - lo, torch.zeros_like(channels))

    def layer_input(self, lay: _Layer, times: Tensor, channels: Tensor, outputs: dict) -> tuple[Tensor, Tensor]:
        """The events arriving at layer `lay`: each source's events (an input population's, or an
        earlier layer's spikes flattened in `outputs[name]`), merged with channel offsets per source."""
        group = self.rec_plan.group_of.get(lay.name, ())
        if len(group) > 1:
            raise NotImplementedError(
                f"layer {lay.name!r} runs jointly with its recurrent group {list(group)} and has no input events "
                "of its own outside the network's forward (`init = auto(...)` cannot scale layers of or after "
                "such a group yet: give their connections an explicit init)")
        ev_t, ev_c = [], []
        off = 0
        for src, size in zip(lay.sources, lay.source_sizes):
            if src in self.ir.inputs:
                t, c = self._input_events(times, channels, src)
            else:
                t, c = outputs[src]
            ev_t.append(t)
            ev_c.append(c + off)
            off += size
        t_in = ev_t[0] if len(ev_t) == 1 else torch.cat(ev_t, 1)
        c_in = ev_c[0] if len(ev_c) == 1 else torch.cat(ev_c, 1)
        return t_in, c_in

    def run_order(self) -> list[str]:
        """Layer names in the order the forward runs them: declaration order, except that the
        layers of a recurrent group (runtime/recurrent_net.py) run together once their outside
        inputs are ready."""
        return [n for step in self.rec_plan.order for n in ((step,) if isinstance(step, str) else step)]

    def _observe(self, name: str, observe_vmax: bool, t_end) -> Optional[str]:
        observe = None
        if name == self.readout_layer:
            if self.readout_kind in ("max_potential", "li_integral"):
                observe = self.readout_kind
            elif observe_vmax and self.readout_kind == "first_spike":
                observe = "max_potential"
        if observe is not None and t_end is None:
            raise ValueError(f"readout {observe} needs t_end (the trial length in ms)")
        return observe

    def run_layer(self, lay: _Layer, t_in: Tensor, c_in: Tensor, *, engine, observe=None, t_end=None):
        """One layer on its input events (a LayerResult): the network's engine, or the exact
        recurrent event loop for a layer with recurrent connections (a layer of a recurrent
        group of several layers runs only with its group, in forward)."""
        group = self.rec_plan.group_of.get(lay.name)
        if group == (lay.name,):  # recurrence only from itself, with delays or several connections
            return recurrent_net.run_single(self, lay, t_in, c_in, observe=observe, t_end=t_end)
        if group is not None:
            raise NotImplementedError(
                f"layer {lay.name!r} runs jointly with its recurrent group {list(self.rec_plan.group_of[lay.name])} "
                "(runtime/recurrent_net.py run_group); call the network's forward instead of run_layer")
        if getattr(lay, "conv", None) is not None:  # conv2d / pool2d: lanes of receptive fields (runtime/conv.py)
            return lay.run(engine, self.neurons[lay.neuron], t_in, c_in, chunk=self.chunk, max_spikes=self.max_spikes,
                           on_overflow=self.on_overflow, observe=observe, t_end=t_end)
        if lay.w_rec is not None:
            return _recurrent_runner(engine)(
                self.neurons[lay.neuron], lay.params(), t_in, c_in, lay.merged_weight(), lay.w_rec,
                lay.merged_delays(), port=lay.port, max_spikes=self.max_spikes, on_overflow=self.on_overflow,
                observe=observe, t_end=t_end,
            )
        return engine.run_layer(
            self.neurons[lay.neuron], lay.params(), t_in, c_in, lay.merged_weight(), lay.merged_delays(),
            port=lay.port, chunk=self.chunk, max_spikes=self.max_spikes, on_overflow=self.on_overflow,
            observe=observe, t_end=t_end,
        )

    def auto_init(self, times: Tensor, channels: Tensor, t_end: float, **kw) -> dict:
        """Scale the weights of the connections declared `init = auto(rate = ...)` (the default
        of `dense` without an init) so that each such spiking layer fires at its target mean rate
        on this batch; layer by layer in topological order, no gradients. `spikescan.train` calls
        it on the first training batch of a new run; a network built from Python keeps the plain
        default init until this is called. Returns the record of runtime/auto_init.py (scale,
        rate reached, forwards per layer); options (tol, max_forwards) are documented there."""
        from spikescan.runtime.auto_init import auto_init

        return auto_init(self, times, channels, t_end, **kw)

    @torch.no_grad()
    def clamp_(self) -> None:
        for lay in self.layers.values():
            lay.clamp_()

    # ------------------------------------------------------------------ forward

    # torch.compile: the forward always runs eagerly (one graph break). The engines hand tensors'
    # memory to JIT-compiled code through ctypes, which Dynamo cannot trace: traced, it passed
    # descriptors of no real memory and crashed the process (malloc corruption, SIGSEGV).
    # run_eagerly = torch.compiler.disable without importing torch._dynamo (runtime/eager_guard.py).
    @run_eagerly
    def forward(
        self, times: Tensor, channels: Tensor, *, t_end: Optional[float] = None, observe_vmax: bool = False
    ) -> NetworkOutput:
        """times [B, n] (ms, +inf padding), channels [B, n] int64 in [0, n_inputs). Under
        torch.compile this method runs uncompiled (a graph break, as torch.compiler.disable)."""
        like = self.float_like()
        times = times.to(device=like.device, dtype=like.dtype)
        channels = channels.to(like.device).long()
        engine = self._engine()
        outputs: dict[str, tuple[Tensor, Tensor]] = {}
        counts, spikes, names = [], [], []
        events = 0
        overflow = torch.zeros(times.shape[0], dtype=torch.bool, device=times.device)
        observed = None
        groups: dict = {}  # recurrent groups already run (runtime/recurrent_net.py)
        for name in self.run_order():
            lay = self.layers[name]
            observe = self._observe(name, observe_vmax, t_end)
            grp = self.rec_plan.group_of.get(name)
            if grp is not None:
                if grp not in groups:
                    groups[grp] = recurrent_net.run_group(self, grp, outputs, times, channels, t_end=t_end, observe={
                        n: self._observe(n, observe_vmax, t_end) for n in grp})
                res, n_events = groups[grp][name]
                events += n_events
            else:
                t_in, c_in = self.layer_input(lay, times, channels, outputs)
                res = self.run_layer(lay, t_in, c_in, engine=engine, observe=observe, t_end=t_end)
                events += int(torch.isfinite(t_in).sum().item())  # after the engine: it validates t_in
            overflow = overflow | res.overflow.to(overflow.device)
            counts.append(res.counts)
            spikes.append(res.times)
            names.append(name)
            if name == self.readout_layer:
                observed = res.observed
            if self.neurons[lay.neuron].c is not None:
                outputs[name] = flatten_spikes(res.times, res.counts)
        if names != list(self.layers):  # a recurrent group ran out of declaration order: report in that order
            at = {n: k for k, n in enumerate(names)}
            counts, spikes = [counts[at[n]] for n in self.layers], [spikes[at[n]] for n in self.layers]
            names = list(self.layers)
        ro = names.index(self.readout_layer)
        ro_spikes = spikes[ro]
        first = None
        if self.neurons[self.layers[self.readout_layer].neuron].c is not None:
            first = ro_spikes[:, :, 0] if ro_spikes.shape[2] > 0 else torch.full(
                ro_spikes.shape[:2], math.inf, dtype=ro_spikes.dtype, device=ro_spikes.device
            )
        if self.readout_kind == "first_spike":
            readout = first
        elif self.readout_kind == "spike_count":
            readout = counts[ro].to(like.dtype)
        else:
            readout = observed
        return NetworkOutput(
            readout=readout, readout_kind=self.readout_kind, first_spike=first, counts=counts, spikes=spikes,
            events=events, overflow=overflow,
            vmax=observed if (observe_vmax and self.readout_kind == "first_spike") else None, layer_names=names,
        )
