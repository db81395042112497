"""Yin-Yang (Kriener, Goeltz, Petrovici 2021), exactly as /work/shared/DATASETS.md defines it.

The random stream reproduces the reference implementation (numpy RandomState(seed); per sample
``randint(3)`` for the wanted class, then ``rand(2) * 2 r_big`` until the point is in the big disc
and has that class), so the points equal those of the published data set for the same seed.

Encoding: channel f in 0..3 carries feature f of (x, y, 1 - x, 1 - y) as one spike at
t = t_min + value * (t_max - t_min); channel 4 carries the bias spike at ``bias_time``
(default 0 ms; ``bias=False`` drops it and leaves 4 channels).
"""
from __future__ import annotations

import math

import numpy as np

from .events import ListEventDataset, check_split, make_sample

R_BIG = 0.5
R_SMALL = 0.1
SIZES = {"train": 5000, "val": 1000, "test": 1000}
SEEDS = {"train": 42, "val": 41, "test": 40}
CLASS_NAMES = ("yang", "yin", "dot")  # labels 0, 1, 2 as in DATASETS.md


def yinyang_class(x, y, r_small=R_SMALL, r_big=R_BIG):
    """Class of the point (x, y): 0 yang, 1 yin, 2 dot (DATASETS.md rule, scalar)."""
    d_right = math.hypot(x - 1.5 * r_big, y - r_big)
    d_left = math.hypot(x - 0.5 * r_big, y - r_big)
    if d_right < r_small or d_left < r_small:
        return 2
    is_yin = (d_right <= r_small or r_small < d_left <= 0.5 * r_big
              or (y > r_big and d_right > 0.5 * r_big))
    return int(is_yin)


def sample_points(size, seed, r_small=R_SMALL, r_big=R_BIG):
    """Class-balanced rejection sampling; returns (xy float64[size, 2], labels int64[size])."""
    rng = np.random.RandomState(seed)
    xy = np.empty((size, 2), dtype=np.float64)
    labels = np.empty(size, dtype=np.int64)
    for i in range(size):
        goal = rng.randint(3)
        while True:
            x, y = rng.rand(2) * 2.0 * r_big
            if math.hypot(x - r_big, y - r_big) > r_big:
                continue
            if yinyang_class(x, y, r_small, r_big) == goal:
                break
        xy[i] = (x, y)
        labels[i] = goal
    return xy, labels


def encode(xy, t_min=0.0, t_max=30.0, bias=True, bias_time=0.0):
    """Latency code of one point: (times, channels) before sorting."""
    x, y = float(xy[0]), float(xy[1])
    feats = np.array([x, y, 1.0 - x, 1.0 - y])
    times = t_min + feats * (t_max - t_min)
    chans = np.arange(4)
    if bias:
        times = np.append(times, bias_time)
        chans = np.append(chans, 4)
    return times, chans


class YinYang(ListEventDataset):
    def __init__(self, split, *, size=None, seed=None, t_min=0.0, t_max=30.0, bias=True,
                 bias_time=0.0, r_small=R_SMALL, r_big=R_BIG):
        check_split(split)
        if not t_min < t_max:
            raise ValueError(f"yinyang: need t_min < t_max, got {t_min}, {t_max}")
        if bias and not 0.0 <= bias_time <= t_max:
            raise ValueError(f"yinyang: bias_time {bias_time} ms is outside [0, {t_max}] ms")
        if t_min < 0:
            raise ValueError(f"yinyang: t_min must be >= 0 ms, got {t_min}")
        size = SIZES[split] if size is None else int(size)
        seed = SEEDS[split] if seed is None else int(seed)
        self.points, labels = sample_points(size, seed, r_small, r_big)
        samples = [make_sample(*encode(p, t_min, t_max, bias, bias_time), lab)
                   for p, lab in zip(self.points, labels)]
        super().__init__(samples, name="yinyang", split=split, n_channels=5 if bias else 4,
                         n_classes=3, t_max=t_max)
        self.t_min, self.bias, self.bias_time, self.seed = t_min, bias, bias_time, seed
        self.class_names = CLASS_NAMES

    def describe(self):
        bias = f", bias spike on channel 4 at {self.bias_time:g} ms" if self.bias else ""
        return (super().describe() + f"; seed {self.seed}, features (x, y, 1-x, 1-y) latency "
                f"coded in [{self.t_min:g}, {self.t_max:g}] ms{bias}")
