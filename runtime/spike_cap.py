"""Spike caps without silent truncation.

The engines record at most `max_spikes` spikes per neuron and sample (their output buffers are
sized by it) and flag a sample whose neuron would exceed it (on_overflow="flag"): that neuron is
then silent for the rest of the run, which truncates its spike train and everything downstream.
`forward` runs the network with its usual cap and re-runs only the flagged samples with the cap
doubled, up to `max_spikes` (the `--max-spikes` CLI option), merging their outputs into the
batch (autograd flows through the re-run samples). Samples still flagged at that bound stay
truncated: `CapStats` counts them and the layers that hit the bound, for the console warning
and every metrics record (docs/engines.md, "Spike caps").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

DEFAULT_MAX_SPIKES = 1024  # per neuron and sample; 64 x 2^4


@dataclass
class CapStats:
    """Spike-cap bookkeeping over batches: `truncated` samples (still over the cap `cap` after
    the re-runs), `rerun` samples re-run with a larger cap, `layers` that hit `cap`, `n` seen."""

    cap: int = DEFAULT_MAX_SPIKES
    n: int = 0
    truncated: int = 0
    rerun: int = 0
    layers: set = field(default_factory=set)

    def record(self) -> dict:
        """The fields every metrics record carries."""
        return dict(overflow=self.truncated, overflow_layers=sorted(self.layers), spike_cap=self.cap,
                    spike_cap_reruns=self.rerun)

    def merge(self, other: "CapStats") -> "CapStats":
        return CapStats(self.cap, self.n + other.n, self.truncated + other.truncated, self.rerun + other.rerun,
                        self.layers | other.layers)

    def warning(self, what: str) -> Optional[str]:
        """A console line when samples were truncated, else None."""
        if not self.truncated:
            return None
        layers = ", ".join(sorted(self.layers)) or "?"
        return (f"warning: {what}: {self.truncated} of {self.n} samples hit the spike cap ({self.cap} spikes per "
                f"neuron) in layer(s) {layers}; their spike trains are truncated (the cut neurons fall silent, see "
                f"docs/engines.md, Spike caps). Raise --max-spikes to simulate them exactly.")


def forward(net, times, channels, *, t_end, observe_vmax: bool = False, max_spikes: Optional[int] = None,
            stats: Optional[CapStats] = None):
    """net(times, channels, ...) with flagged samples re-run at a doubled cap up to max_spikes
    (default: the network's own cap, i.e. no re-run). Adds to `stats` when given."""
    top = int(max_spikes or net.max_spikes)
    cap = min(int(net.max_spikes), top)
    out = _run(net, cap, times, channels, t_end, observe_vmax)
    reran = torch.zeros_like(out.overflow)
    while cap < top and bool(out.overflow.any()):
        cap = min(2 * cap, top)
        idx = out.overflow.nonzero().flatten()
        reran[idx] = True
        sub = _run(net, cap, times[idx], channels[idx], t_end, observe_vmax)
        out = _merge(out, sub, idx)
    if stats is not None:
        flagged = out.overflow
        stats.n += int(flagged.numel())
        stats.truncated += int(flagged.sum())
        stats.rerun += int(reran.sum())
        if bool(flagged.any()):
            for name, c in zip(out.layer_names, out.counts):
                if c.numel() and int(c[flagged].max()) >= cap:
                    stats.layers.add(name)
    return out


def _run(net, cap: int, times, channels, t_end, observe_vmax):
    old = net.max_spikes
    net.max_spikes = cap
    try:
        return net(times, channels, t_end=t_end, observe_vmax=observe_vmax)
    finally:
        net.max_spikes = old


def _pad(x, S: int):
    if x.shape[-1] >= S:
        return x
    fill = torch.full((*x.shape[:-1], S - x.shape[-1]), float("inf"), dtype=x.dtype, device=x.device)
    return torch.cat([x, fill], -1)


def _put(full, idx, part):
    return None if full is None else full.index_copy(0, idx.to(full.device), part.to(full.dtype))


def _merge(out, sub, idx):
    """`out` with rows idx replaced by `sub` (a run of those samples), differentiably."""
    spikes = []
    for a, b in zip(out.spikes, sub.spikes):
        S = max(a.shape[-1], b.shape[-1])
        spikes.append(_put(_pad(a, S), idx, _pad(b, S)))
    return dataclasses.replace(
        out, readout=_put(out.readout, idx, sub.readout), first_spike=_put(out.first_spike, idx, sub.first_spike)
        if sub.first_spike is not None else out.first_spike,
        counts=[_put(a, idx, b) for a, b in zip(out.counts, sub.counts)], spikes=spikes,
        events=out.events + sub.events, overflow=_put(out.overflow, idx, sub.overflow),
        vmax=_put(out.vmax, idx, sub.vmax) if sub.vmax is not None else out.vmax,
    )
