"""Channel index of an event camera pixel: the layout shared by N-MNIST and DVS Gesture.

With sensor (W, H, P) and integer spatial downsampling k (pixel (x, y) -> (x // k, y // k),
W' = ceil(W / k), H' = ceil(H / k)), the channel is x' * H' * P' + y' * P' + p, where P' = 1 and
p is ignored when polarities are merged. n_channels = W' * H' * P'.

With ``chw`` (data option ``chw=true``) the channel is p * H' * W' + y' * W' + x' instead: the
flat index of a `.snn` input declared `input x[P', H', W']`, which conv2d / pool2d read as
[C, H, W] (docs/language.md).
"""
from __future__ import annotations

import numpy as np


def camera_layout(sensor_size, downsample=1, merge_polarity=False):
    """(W', H', P') after downsampling / merging."""
    k = int(downsample)
    if k < 1 or k != downsample:
        raise ValueError(f"downsample must be a positive integer factor, got {downsample}")
    w, h, p = sensor_size
    return -(-w // k), -(-h // k), 1 if merge_polarity else p


def camera_channels(x, y, p, sensor_size, downsample=1, merge_polarity=False, chw=False):
    """Channel of every event (int64 array); ``chw``: the [P', H', W'] layout."""
    k = int(downsample)
    w2, h2, p2 = camera_layout(sensor_size, downsample, merge_polarity)
    xs = np.asarray(x, dtype=np.int64) // k
    ys = np.asarray(y, dtype=np.int64) // k
    ps = np.zeros_like(xs) if merge_polarity else np.asarray(p, dtype=np.int64)
    if chw:
        return (ps * h2 + ys) * w2 + xs
    return (xs * h2 + ys) * p2 + ps
