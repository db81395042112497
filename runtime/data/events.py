"""Event samples, the dataset base class and batch collation.

A sample is ``(times, channels, label)``: ``times`` float64[k] in ms, ``channels`` int64[k],
sorted by (time, channel), and an int label. Batches are padded with +inf times (channel 0), which
the engines treat as "no event".
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .checks import as_label

SPLITS = ("train", "val", "test")


def make_sample(times, channels, label):
    """Return a canonical sample: float64 ms times and int64 channels sorted by (time, channel).

    The secondary sort on channel makes coincident events deterministic, whatever order the
    source file stored them in.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    c = np.asarray(channels, dtype=np.int64).reshape(-1)
    if t.shape != c.shape:
        raise ValueError(f"times and channels differ in length: {t.shape} vs {c.shape}")
    if t.size and not np.all(np.isfinite(t)):
        raise ValueError("event times must be finite (padding is added only by pad_collate)")
    dt = np.diff(t)
    if not np.all((dt > 0) | ((dt == 0) & (np.diff(c) >= 0))):  # O(n) check skips most sorts
        order = np.lexsort((c, t))
        t, c = t[order], c[order]
    else:
        t, c = t.copy(), c.copy()  # never alias (and freeze) the caller's arrays
    # read-only: samples are cached and shared, a caller must not be able to alter the cache
    t.setflags(write=False)
    c.setflags(write=False)
    return t, c, as_label(label)


def _unpack(item):
    """(times, channels, label) from a spikescan sample or a tonic-style (events, target) pair
    whose events are (times, channels) (ToSpikescan's output) or a [k, 2] array of (t, channel)."""
    if len(item) == 3:
        return item
    if len(item) != 2:
        raise ValueError(f"pad_collate: a sample is (times, channels, label) or (events, label), "
                         f"got a tuple of {len(item)}")
    ev, y = item
    if isinstance(ev, (tuple, list)) and len(ev) == 2:
        return ev[0], ev[1], y
    a = np.asarray(ev.detach().cpu() if hasattr(ev, "detach") else ev)
    if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "iuf":
        raise ValueError(f"pad_collate: events must be (times, channels) or a [k, 2] array of "
                         f"(t in ms, channel), got shape {a.shape} dtype {a.dtype}; for tonic "
                         "events use transform=ToSpikescan(sensor_size)")
    c = a[:, 1]
    if a.dtype.kind == "f" and not np.all(c == np.floor(c)):
        raise ValueError("pad_collate: the channel column holds non-integer values")
    return a[:, 0], c, y


def pad_collate(items):
    """Pad a list of samples into (times [B, n] float64, channels [B, n] int64, labels [B] int64).

    A sample is (times, channels, label), or a tonic-style (events, label) pair with events
    (times, channels) or a [k, 2] array of (t in ms, channel); so this is the ``collate_fn`` for
    tonic datasets too (in place of tonic.collation.PadTensors, whose zeros are fake events).
    Padding is +inf in ``times`` and 0 in ``channels``. n is the longest sample, but at least 1, so
    that a batch of empty samples is still a 2-D tensor with a time axis.
    """
    items = [_unpack(it) for it in items]
    if not items:
        raise ValueError("pad_collate needs at least one sample")
    n = max(1, max(len(it[0]) for it in items))
    b = len(items)
    times = np.full((b, n), np.inf, dtype=np.float64)
    chans = np.zeros((b, n), dtype=np.int64)
    labels = np.empty(b, dtype=np.int64)
    for i, (t, c, y) in enumerate(items):
        k = len(t)
        if len(c) != k:
            raise ValueError(f"pad_collate: sample {i} has {k} times but {len(c)} channels")
        times[i, :k] = t
        chans[i, :k] = c
        labels[i] = as_label(y)
    return torch.from_numpy(times), torch.from_numpy(chans), torch.from_numpy(labels)


def check_split(split):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _part_size(n, fraction):
    """round(n * fraction) half up, but at least 1 when fraction > 0 (tiny sets keep a part)."""
    k = int(np.floor(n * fraction + 0.5))
    return max(k, 1) if fraction > 0 and n > 0 else k


def holdout_indices(n, split, val_fraction, test_fraction=0.0, seed=0):
    """Deterministic partition of range(n) into train / val / test index arrays.

    One seeded permutation of all indices: the first round(n*test_fraction) go to test, the next
    round(n*val_fraction) to val (each at least 1 when its fraction is > 0), the rest to train.
    Each part is sorted, so the order stays the file order. The same (n, fractions, seed) always
    gives the same disjoint parts.
    """
    check_split(split)
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
        raise ValueError(f"bad hold-out fractions val={val_fraction}, test={test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = _part_size(n, test_fraction), _part_size(n, val_fraction)
    if n and n_test + n_val >= n:
        raise ValueError(f"hold-out of {n} samples (val {val_fraction}, test {test_fraction}) "
                         "leaves no training sample")
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val],
             "train": perm[n_test + n_val:]}
    return np.sort(parts[split])


class EventDataset(Dataset):
    """Base class: subclasses set the attributes below and implement ``_load(i)`` and ``__len__``.

    Attributes: name, split, n_channels, n_classes, t_max (ms; every event time lies in
    [0, t_max]), labels (int64 array, one per sample, readable without decoding the events).
    """

    name = "events"
    split = "train"
    n_channels = 0
    n_classes = 0
    t_max = 0.0

    def __init__(self):
        self._cache = None  # index -> sample, enabled by subclasses whose decoding is costly

    def enable_cache(self):
        self._cache = {}

    def _load(self, i):
        raise NotImplementedError

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}/{self.split}: index {i} out of range for {n} samples")
        i = int(i) % n
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        sample = self._load(i)
        if self._cache is not None:
            self._remember(i, sample)
        return sample

    def _remember(self, i, sample):
        self._cache[i] = sample

    def describe(self):
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.n_classes)
        return (f"{self.name}/{self.split}: {len(self)} samples, {self.n_channels} channels, "
                f"{self.n_classes} classes, t in [0, {self.t_max:g}] ms, "
                f"per-class counts {counts.tolist()}")

    def __repr__(self):
        return f"<{type(self).__name__} {self.describe()}>"


class ListEventDataset(EventDataset):
    """A dataset held entirely in memory as a list of canonical samples (the built-in sets)."""

    def __init__(self, samples, *, name, split, n_channels, n_classes, t_max):
        super().__init__()
        self.samples = list(samples)
        self.name, self.split = name, split
        self.n_channels, self.n_classes, self.t_max = int(n_channels), int(n_classes), float(t_max)
        self.labels = np.array([s[2] for s in self.samples], dtype=np.int64)

    def __len__(self):
        return len(self.samples)

    def _load(self, i):
        return self.samples[i]
