"""tonic's event arrays as spikescan samples: the ``ToSpikescan`` transform.

tonic datasets yield structured numpy arrays with fields t (microseconds), x, and optionally y
and p; ``sensor_size`` is (W, H, P). ``ToSpikescan(sensor_size)`` turns one into spikescan's
``(times float64[k] in ms, channels int64[k])``, sorted by (time, channel); batch the
``(sample, target)`` pairs with ``pad_collate``, which pads with +inf times. Channel layout
(camera.py's, the one of spikescan's own N-MNIST and DVS Gesture loaders):

    channel = (x' * H' + y') * P' + p'     x' = x // k, y' = y // k (k = ``downsample``)

with W' = ceil(W / k), H' = ceil(H / k) and n_channels = W' * H' * P'. P' = P and p' = p, except
with ``merge_polarity`` or P == 1 (then P' = 1 and p is ignored: tonic's audio sets SHD / SSC
carry p = 1 on sensor (700, 1, 1)). So a cochlea (W, 1, 1) gives channel = x // k; an event
camera (34, 34, 2) gives x * 68 + y * 2 + p. An array without y needs H == 1, one without p
needs P == 1 or ``merge_polarity``. ``chw=True`` numbers the channels p' * H' * W' + y' * W' + x'
instead, the layout of a `.snn` input `x[P', H', W']` for conv2d (docs/language.md).

Events outside the sensor, non-integer coordinates and NaN, infinite or negative times raise
ValueError; nothing is clipped or dropped.
"""
from __future__ import annotations

import numpy as np

from .camera import camera_channels, camera_layout
from .events import make_sample

US_PER_MS = 1000.0


class ToSpikescan:
    """tonic transform: structured events (t in us) -> (times in ms, channels), see the module
    docstring for the channel layout. ``n_channels`` and ``layout`` (W', H', P') describe it."""

    def __init__(self, sensor_size, downsample=1, merge_polarity=False, chw=False):
        size = tuple(int(s) for s in sensor_size)
        if len(size) != 3 or min(size) < 1 or size != tuple(sensor_size):
            raise ValueError(f"sensor_size must be three positive integers (W, H, P) as tonic's "
                             f"dataset.sensor_size, got {sensor_size!r}")
        self.sensor_size = size
        self.merge_polarity = bool(merge_polarity) or size[2] == 1
        self.downsample = int(downsample)
        self.chw = bool(chw)
        self.layout = camera_layout(size, downsample, self.merge_polarity)
        self.n_channels = int(np.prod(self.layout))

    def _field(self, events, name, size):
        names = events.dtype.names or ()
        if name not in names:
            if size == 1 or (name == "p" and self.merge_polarity):
                return np.zeros(len(events), dtype=np.int64)
            raise ValueError(f"ToSpikescan: the events have no field {name!r} (fields "
                             f"{names}), but sensor_size {self.sensor_size} needs it")
        v = np.asarray(events[name])
        if name == "p" and self.merge_polarity:
            return np.zeros(len(v), dtype=np.int64)  # ignored: SHD's p = 1 on P = 1 is fine
        if v.dtype.kind == "f" and not np.all(np.isfinite(v) & (v == np.floor(v))):
            raise ValueError(f"ToSpikescan: field {name!r} holds non-integer values")
        v = v.astype(np.int64)
        if v.size and (v.min() < 0 or v.max() >= size):
            raise ValueError(f"ToSpikescan: {name} outside the sensor [0, {size}): "
                             f"[{v.min()}, {v.max()}] (sensor_size {self.sensor_size})")
        return v

    def __call__(self, events):
        if getattr(events, "dtype", None) is None or "t" not in (events.dtype.names or ()):
            raise ValueError("ToSpikescan expects a tonic structured event array with a field "
                             "'t' (us); put it last in a Compose, after tonic's own transforms")
        events = np.asarray(events).reshape(-1)
        w, h, p = self.sensor_size
        x, y, pol = (self._field(events, n, s) for n, s in (("x", w), ("y", h), ("p", p)))
        t = np.asarray(events["t"], dtype=np.float64) / US_PER_MS
        bad = ~np.isfinite(t) | (t < 0)
        if bad.any():
            raise ValueError(f"ToSpikescan: {int(bad.sum())} event times are NaN, infinite or "
                             f"negative (the first: {t[np.argmax(bad)]} ms)")
        ch = camera_channels(x, y, pol, self.sensor_size, self.downsample, self.merge_polarity, self.chw)
        times, channels, _ = make_sample(t, ch, 0)
        return times, channels

    def __repr__(self):
        return (f"ToSpikescan(sensor_size={self.sensor_size}, downsample={self.downsample}, "
                f"merge_polarity={self.merge_polarity}{', chw=True' if self.chw else ''})")
