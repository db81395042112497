"""randman (Zenke and Vogels 2021): random smooth manifolds as a spike-timing task.

Following the reference code of Zenke and Vogels (github.com/fzenke/randman): per class, per
unit e and manifold coordinate d, a random function f_{e,d}(x) = sum_{i<F} a_i (i+1)^-alpha
sin(2 pi (i x b_i + c_i)) with a, b, c uniform in [0, 1), F = min(ceil(prec^(-1/alpha)), 1000)
(= 32 for prec 1e-3, alpha 2). Unit e of a sample x ~ U[0, 1]^dim takes y_e = prod_d
f_{e,d}(x_d); y is min-max normalised per class and unit over all of that class's samples (as
the reference code's ``standardize``), and unit e fires one spike at y_e * window (``t_max`` is
accepted as another name for ``window``; default 50 ms).

Determinism and splits: one numpy Generator seeded with ``seed`` draws, class by class, the
manifold coefficients and then the class's samples; the pool of ``samples_per_class`` per class
is then cut by index into train / val / test with ``fractions`` (default 0.8 / 0.1 / 0.1), so
the splits share the manifolds (the task) but no sample. Per-class cutting keeps them balanced.
"""
from __future__ import annotations

import math

import numpy as np

from .events import ListEventDataset, check_split, make_sample

_POOL_CACHE = {}  # per-process: generating the pool costs ~1 s at the defaults


def n_frequencies(alpha=2.0, prec=1e-3, max_f=1000):
    return int(min(math.ceil(prec ** (-1.0 / alpha)), max_f))


def eval_random_functions(x, a, b, c, alpha):
    """f(x) for many functions at once: x [S], a/b/c [..., F] -> [S, ...]."""
    f = a.shape[-1]
    i = np.arange(f, dtype=np.float64)
    spect = (i + 1.0) ** (-alpha)
    phase = 2.0 * np.pi * (x[:, None, None] * (i * b)[None] + c[None])  # [S, E, F]
    return np.einsum("sef,ef->se", np.sin(phase), a * spect)


def make_pool(n_classes, n_units, dim, samples_per_class, alpha, prec, seed):
    """Return (y [n_classes, samples, units] in [0, 1], x [n_classes, samples, dim])."""
    key = (n_classes, n_units, dim, samples_per_class, alpha, prec, seed)
    if key in _POOL_CACHE:
        return _POOL_CACHE[key]
    rng = np.random.default_rng(seed)
    f = n_frequencies(alpha, prec)
    ys, xs = [], []
    for _ in range(n_classes):
        a, b, c = (rng.random((n_units, dim, f)) for _ in range(3))
        x = rng.random((samples_per_class, dim))
        y = np.ones((samples_per_class, n_units))
        for d in range(dim):
            y *= eval_random_functions(x[:, d], a[:, d], b[:, d], c[:, d], alpha)
        lo, hi = y.min(axis=0), y.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)  # a constant unit (not seen in practice) -> 0
        ys.append((y - lo) / span)
        xs.append(x)
    pool = (np.stack(ys), np.stack(xs))
    _POOL_CACHE[key] = pool
    return pool


def split_range(n, split, fractions):
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or not math.isclose(fr.sum(), 1.0):
        raise ValueError(f"randman: fractions must be 3 non-negative numbers summing to 1, "
                         f"got {fractions}")
    edges = np.round(np.cumsum(np.concatenate([[0.0], fr])) * n).astype(int)
    k = ("train", "val", "test").index(split)
    return edges[k], edges[k + 1]


class Randman(ListEventDataset):
    def __init__(self, split, *, n_classes=10, n_units=100, dim=2, window=50.0,
                 samples_per_class=1000, alpha=2.0, prec=1e-3, seed=0,
                 fractions=(0.8, 0.1, 0.1), t_max=None):
        check_split(split)
        if t_max is not None:  # the name the other datasets use for the trial length
            if window != 50.0 and window != t_max:
                raise ValueError(f"randman: window={window} and t_max={t_max} disagree")
            window = t_max
        if n_classes < 1 or n_units < 1 or dim < 1 or samples_per_class < 1 or window <= 0:
            raise ValueError("randman: n_classes, n_units, dim, samples_per_class and window "
                             "must be positive")
        y, x = make_pool(n_classes, n_units, dim, samples_per_class, alpha, prec, seed)
        lo, hi = split_range(samples_per_class, split, fractions)
        samples, coords = [], []
        units = np.arange(n_units)
        for k in range(n_classes):
            for s in range(lo, hi):
                samples.append(make_sample(y[k, s] * window, units, k))
                coords.append(x[k, s])
        super().__init__(samples, name="randman", split=split, n_channels=n_units,
                         n_classes=n_classes, t_max=window)
        self.coords = np.array(coords).reshape(-1, dim)  # manifold coordinates, for analysis
        self.dim, self.alpha, self.seed = dim, alpha, seed

    def describe(self):
        return (super().describe() + f"; one spike per unit, manifold dim {self.dim}, "
                f"alpha {self.alpha:g}, seed {self.seed}")
