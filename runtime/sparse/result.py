"""SpikeTrain: what a sparse simulation returns (times in ms, global neuron indices), with the
statistics the tests and the benchmark compare (rates, CV of the inter-spike intervals) and the
npz writer of `spikescan run` (plain arrays, no pickle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class SpikeTrain:
    times: np.ndarray  # float64 [S], ms, non-decreasing
    neurons: np.ndarray  # int64 [S], global neuron index (layer offset + local index)
    model: object  # the SparseModel
    wall_s: float = 0.0
    complete: bool = True  # False: stopped by a wall-time limit before t_end
    t_end: float = 0.0  # ms simulated
    stats: Optional[dict] = None  # engine counters (heap updates, solves, ...)

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def population(self) -> np.ndarray:
        """int64 [S]: the layer index of each spike's neuron (names: model.layers)."""
        return self.model.layer_of(self.neurons)

    def rates_hz(self) -> np.ndarray:
        """Per-layer mean rate in Hz over [0, t_end]."""
        counts = np.bincount(self.population(), minlength=len(self.model.layers))
        sizes = np.diff(self.model.offsets)
        return counts / sizes / (self.t_end / 1000.0) if self.t_end > 0 else np.zeros(len(sizes))

    def cv_isi(self) -> float:
        """Mean over neurons (with >= 3 spikes) of the coefficient of variation of their ISIs."""
        order = np.lexsort((self.times, self.neurons))
        n, t = self.neurons[order], self.times[order]
        same = n[1:] == n[:-1]
        isi, owner = np.diff(t)[same], n[1:][same]
        if isi.size == 0:
            return float("nan")
        cnt = np.bincount(owner, minlength=self.model.n)
        s1 = np.bincount(owner, isi, minlength=self.model.n)
        s2 = np.bincount(owner, isi * isi, minlength=self.model.n)
        ok = cnt >= 2
        mean = s1[ok] / cnt[ok]
        var = np.maximum(s2[ok] / cnt[ok] - mean**2, 0.0)
        return float(np.mean(np.sqrt(var) / mean))

    def save_npz(self, path) -> None:
        """times (ms), neurons (global index), population (layer index), layer_names, layer_offsets:
        plain numeric and unicode arrays, readable with np.load(path) (allow_pickle=False)."""
        np.savez(path, times=self.times.astype(np.float64), neurons=self.neurons.astype(np.int64),
                 population=self.population().astype(np.int64),
                 layer_names=np.array(self.model.layers, dtype=np.str_),
                 layer_offsets=self.model.offsets.astype(np.int64))
