"""Sparse networks with input populations as an nn.Module (docs/sparse.md, "Networks with inputs").

    net = SparseInputNet("models/sparse_input.snn", duration=50.0)
    out = net(times, channels)        # times, channels: [B, n] (channel < 0 pads), ms
    out[b].times, out[b].neurons      # network spikes of sample b (global neuron index)
    net.first_spike(out, "E")         # [B, size of E], +inf where silent; differentiable
    net.spike_count(out, "E")         # [B, size of E]

Engines: without gradients (torch.no_grad(), or nothing that requires grad) the forward runs the
compiled O(K log N) engine (engine_inputs.py, input events merged into its event queue); with
gradients it runs the exact O(N) event loop with autograd (autodiff.simulate), whose spikes are
the same and whose gradients reach the input weights, the recurrent sparse weights and the input
times (exact, by the implicit function theorem at each spike; valid while a perturbation keeps
the event order). engine= forces one: "compiled", "reference" (the O(N) loop, no gradients) or
"autodiff".

Learnable tensors: `in_weights` (one [n_synapses] per input connection; for `dense(x)` the
dense matrix W[ch, i] row-major) and `weights` (one [n_synapses] per sparse connection between
layers). `spikescan train` does not train sparse networks (a readout there is E087): train in
Python with a loss on first_spike / spike_count, e.g. the example in docs/sparse.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .autodiff import SpikeBudgetExceeded, default_in_weights, default_weights, simulate
from .model import SparseModel, SparseModelError

Tensor = torch.Tensor
ENGINES = ("auto", "compiled", "reference", "autodiff")


@dataclass
class SampleSpikes:
    """One sample's network spikes: times [S] float64 (ms; with a graph on the autodiff engine),
    neurons [S] int64 (global index: SparseModel.offsets gives the layers)."""

    times: Tensor
    neurons: Tensor

    def __len__(self) -> int:
        return int(self.neurons.shape[0])


class SparseInputNet(nn.Module):
    def __init__(self, model: Union[str, Path, SparseModel, object], network: Optional[str] = None,
                 seed: int = 0, duration: float = 100.0, engine: str = "auto", max_spikes: int = 100_000):
        super().__init__()
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
        self.model = model if isinstance(model, SparseModel) else SparseModel.load(model, network, seed)
        if not self.model.in_csr:
            raise SparseModelError(f"network {self.model.name!r} has no input population: simulate it with "
                                   "spikescan.runtime.sparse.run_sparse or `spikescan run`")
        self.duration, self.engine, self.max_spikes = float(duration), engine, int(max_spikes)
        self.in_weights = nn.ParameterList([nn.Parameter(w) for w in default_in_weights(self.model)])
        self.weights = nn.ParameterList([nn.Parameter(w) for w in default_weights(self.model)])

    @property
    def n_in(self) -> int:
        return self.model.n_in

    def layer_slice(self, layer: str) -> slice:
        if layer not in self.model.layers:
            raise KeyError(f"no layer {layer!r}; layers: {', '.join(self.model.layers)}")
        li = self.model.layers.index(layer)
        return slice(int(self.model.offsets[li]), int(self.model.offsets[li + 1]))

    def _engine(self, times: Tensor) -> str:
        if self.engine != "auto":
            return self.engine
        wants = torch.is_grad_enabled() and (times.requires_grad or any(p.requires_grad for p in self.parameters()))
        return "autodiff" if wants else "compiled"

    def forward(self, times: Tensor, channels: Tensor, duration: Optional[float] = None) -> list[SampleSpikes]:
        """times, channels: [B, n] (or [n] for one sample); entries with channel < 0 or a non-finite
        time are padding. Returns the network spikes of each sample in [0, duration]."""
        times = torch.as_tensor(times)
        channels = torch.as_tensor(channels)
        if times.dim() == 1:
            times, channels = times.unsqueeze(0), channels.unsqueeze(0)
        if times.shape != channels.shape or times.dim() != 2:
            raise ValueError(f"times and channels must both be [B, n]; got {tuple(times.shape)} and "
                             f"{tuple(channels.shape)}")
        T = self.duration if duration is None else float(duration)
        engine = self._engine(times)
        csr = None
        if engine == "compiled":  # the input weights as the engine's arrays, once per batch
            from .engine_inputs import InputCSR

            csr = InputCSR(self.model, list(self.in_weights))
        out = []
        for b in range(times.shape[0]):
            tb, cb = times[b], channels[b].detach().cpu().numpy()
            if engine == "autodiff":
                s = simulate(self.model, T, list(self.weights), max_spikes=self.max_spikes,
                             inputs=(tb.to(torch.float64), cb), in_weights=list(self.in_weights))
                out.append(SampleSpikes(s.times, torch.from_numpy(s.neurons)))
                continue
            self._check_layer_weights(inputs_too=engine == "reference")
            tn = tb.detach().cpu().double().numpy()
            if engine == "reference":
                from .reference import run_reference

                r = run_reference(self.model, T, max_spikes=self.max_spikes + 1, inputs=(tn, cb))
            else:
                from .engine_inputs import run_compiled_inputs

                r = run_compiled_inputs(self.model, T, tn, cb, max_spikes=self.max_spikes + 1, csr=csr)
            if len(r.times) > self.max_spikes:  # as the autodiff loop: never a silently cut sequence
                raise SpikeBudgetExceeded(f"sample {b}: more than max_spikes={self.max_spikes} spikes before "
                                          f"{T} ms: shorten the horizon or raise max_spikes")
            out.append(SampleSpikes(torch.from_numpy(r.times), torch.from_numpy(r.neurons)))
        return out

    def _check_layer_weights(self, inputs_too: bool = False) -> None:
        """The compiled and reference engines read the layer-to-layer weights from the model's CSR
        (the reference its input weights too): refuse (rather than silently ignore) weights changed
        in the module."""
        pairs = list(zip(self.weights, self.model.csr))
        if inputs_too:
            pairs += list(zip(self.in_weights, self.model.in_csr))
        for w, c in pairs:
            ref = torch.from_numpy(c.weights) if c.weights is not None else torch.full_like(w, c.weight)
            if not torch.equal(w.detach().cpu(), ref):
                raise NotImplementedError(
                    "the compiled and reference sparse engines run the file's layer-to-layer weights, and "
                    "these were changed (trained): run with engine='autodiff' (the exact O(N) loop), or "
                    "write the trained weights back with commit_weights()")

    @torch.no_grad()
    def commit_weights(self) -> None:
        """Store the module's weights in the model's CSR (per synapse), so that the compiled and
        reference engines run them."""
        for w, c in list(zip(self.weights, self.model.csr)) + list(zip(self.in_weights, self.model.in_csr)):
            c.weights = w.detach().cpu().double().numpy().copy()
            c.weight = float("nan")

    # ------------------------------------------------------------------ readouts
    def first_spike(self, out: list[SampleSpikes], layer: str) -> Tensor:
        """[B, size]: each neuron's first spike time (+inf if silent), with gradient."""
        sl = self.layer_slice(layer)
        n = sl.stop - sl.start
        rows = []
        for s in out:
            row = torch.full((n,), float("inf"), dtype=torch.float64)
            nn_ = s.neurons.numpy()
            keep = np.nonzero((nn_ >= sl.start) & (nn_ < sl.stop))[0]
            first: dict[int, int] = {}
            for k in keep:  # spikes are in time order: the first occurrence is the first spike
                first.setdefault(int(nn_[k]) - sl.start, int(k))
            if first:
                idx = torch.tensor(list(first.keys()))
                row = row.index_put((idx,), s.times[torch.tensor(list(first.values()))])
            rows.append(row)
        return torch.stack(rows)

    def spike_count(self, out: list[SampleSpikes], layer: str) -> Tensor:
        """[B, size]: spikes per neuron (no gradient: counts are piecewise constant)."""
        sl = self.layer_slice(layer)
        rows = [torch.bincount(s.neurons[(s.neurons >= sl.start) & (s.neurons < sl.stop)] - sl.start,
                               minlength=sl.stop - sl.start).double() for s in out]
        return torch.stack(rows)
