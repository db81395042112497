"""scikit-learn's 8x8 digits (1797 real images, values 0..16), latency encoded.

Channel = pixel index row * 8 + col (64 channels). A pixel of value v > 0 spikes once at
t = t_max * (1 - v / 16): the brightest value (16) at 0 ms, dimmer later; zero pixels are dropped.
Splits: one seeded permutation (``seed``, default 0) of the 1797 images is cut into
train / val / test with ``fractions`` (default 0.7 / 0.15 / 0.15): deterministic and disjoint.
"""
from __future__ import annotations

import numpy as np

from .events import ListEventDataset, check_split, make_sample
from .randman import split_range

V_MAX = 16.0


def encode_image(pixels, t_max):
    """pixels float[64] in 0..16 -> (times, channels) of the non-zero pixels."""
    p = np.asarray(pixels, dtype=np.float64).reshape(-1)
    chans = np.flatnonzero(p > 0)
    return t_max * (1.0 - p[chans] / V_MAX), chans


class Digits(ListEventDataset):
    def __init__(self, split, *, t_max=30.0, seed=0, fractions=(0.7, 0.15, 0.15)):
        check_split(split)
        if t_max <= 0:
            raise ValueError(f"digits: t_max must be > 0 ms, got {t_max}")
        from sklearn.datasets import load_digits  # ships with scikit-learn, no download

        data = load_digits()
        perm = np.random.default_rng(seed).permutation(len(data.target))
        lo, hi = split_range(len(perm), split, fractions)
        self.indices = np.sort(perm[lo:hi])  # indices into load_digits(), for traceability
        samples = [make_sample(*encode_image(data.data[i], t_max), data.target[i])
                   for i in self.indices]
        super().__init__(samples, name="digits", split=split, n_channels=64, n_classes=10,
                         t_max=t_max)

    def describe(self):
        return super().describe() + "; pixel latency code (brighter = earlier), zeros dropped"
