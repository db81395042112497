"""Result type shared by every engine's `run_layer` and the spike-cap error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

Tensor = torch.Tensor


class SpikeCapExceeded(RuntimeError):
    """A neuron emitted more than `max_spikes` spikes (on_overflow="raise")."""

    def __init__(self, sample: int, neuron: int, max_spikes: int):
        self.sample, self.neuron, self.max_spikes = sample, neuron, max_spikes
        super().__init__(
            f"sample {sample}: neuron {neuron} exceeded the spike cap max_spikes={max_spikes}; "
            f"raise max_spikes or pass on_overflow='flag' to mark the sample instead"
        )


@dataclass
class LayerResult:
    """times [B, N, S] sorted per neuron, +inf padded; counts [B, N] int64; overflow [B] bool;
    observed [B, N] (observe=...) or None."""

    times: Tensor
    counts: Tensor
    overflow: Tensor
    observed: Optional[Tensor] = None
