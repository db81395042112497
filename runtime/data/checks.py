"""Checks of decoded dataset contents: labels, integer coordinates and event times.

Each returns the clean array or raises ValueError / CorruptDataFile naming the sample; nothing is
truncated, clipped or dropped silently.
"""
from __future__ import annotations

import numpy as np

from .errors import REPLACE, CorruptDataFile


def _is_integral(v):
    return v.dtype.kind in "iu" or (v.dtype.kind == "f" and bool(np.all(np.isfinite(v)))
                                    and bool(np.all(v == np.floor(v))))


def as_label(y):
    """A label as a Python int; a float label must be a whole number (3.0, never 3.7 -> 3)."""
    v = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y)
    if v.size != 1 or v.dtype.kind not in "iuf" or not _is_integral(v):
        raise ValueError(f"a label must be one integer class index, got {y!r}")
    return int(v.reshape(()))


def integral(source, name, values, hint=REPLACE):
    """values as int64; non-integer values (e.g. 3.5 stored as a float) are an error."""
    v = np.asarray(values)
    if v.dtype.kind not in "iub" and not (v.dtype.kind == "f" and _is_integral(v)):
        bad = v.reshape(-1)[:1].tolist() if v.dtype.kind != "f" else \
            v[~(np.isfinite(v) & (v == np.floor(v)))][:3].tolist()
        raise CorruptDataFile(source, f"{name} must be integers, found {bad} (dtype {v.dtype})",
                              hint)
    return v.astype(np.int64)


def labels_array(source, labels, n_classes, hint=REPLACE):
    """A file's label column as int64, each in 0..n_classes-1."""
    v = np.asarray(labels)
    if v.ndim != 1:
        raise CorruptDataFile(source, f"labels must be a 1-D array, got shape {v.shape}", hint)
    lab = integral(source, "labels", v, hint)
    bad = lab[(lab < 0) | (lab >= n_classes)]
    if bad.size:
        raise CorruptDataFile(source, f"labels {sorted(set(bad.tolist()))[:10]} outside "
                                      f"0..{n_classes - 1}", hint)
    return lab


def check_events(source, times_ms, channels, hint=REPLACE):
    """A decoded recording: 1-D times and channels of one length, at least one event, and every
    time finite and >= 0 ms (a NaN or negative time means a broken file, never data to crop)."""
    t, c = np.asarray(times_ms), np.asarray(channels)
    if t.ndim != 1 or c.ndim != 1 or t.shape != c.shape:
        raise CorruptDataFile(source, f"times {t.shape} and channels {c.shape} must be 1-D "
                                      "arrays of one length", hint)
    if t.size == 0:
        raise CorruptDataFile(source, "the recording holds no events", hint)
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise CorruptDataFile(source, f"{int(bad.sum())} event time(s) NaN, infinite or "
                                      f"negative (the first: event {k}, t = {t[k]} ms)", hint)
