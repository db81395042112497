"""Shared machinery of the recorded (tonic) datasets: data root, preprocessing, hold-out splits,
per-item decoding with a bounded in-memory cache, and clear missing-data messages.

Every decoded recording is checked first: no events, a NaN, infinite or negative time, a
non-integer or out-of-range coordinate (pixel, polarity, unit) or label raises CorruptDataFile
naming the file (and sample) and what to do; nothing is dropped or clipped silently. Events may
be stored in any order: step 4 sorts them.

Preprocessing of one recording, in this order (all deterministic):
1. channel from the dataset's own coordinates (see each module: x*H*P + y*P + p for cameras,
   the unit for cochlea data), after optional spatial downsampling by an integer ``downsample``;
2. crop: keep events with 0 <= t <= t_max (ms), ``t_max`` defaults to the dataset's nominal
   duration, so every event time lies in [0, t_max];
3. ``time_bin`` (ms, optional): floor times to multiples of time_bin and merge the events that
   then coincide on the same channel (a lossy temporal downsampling, like a binary frame);
4. sort by (time, channel);
5. ``max_events`` (optional) caps the count: ``cap_mode="stride"`` keeps max_events events evenly
   spread over the sorted sequence (first and last kept), ``"first"`` keeps the earliest ones.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import check_events
from .errors import REPLACE, CorruptDataFile, DatasetNotFound
from .events import EventDataset, holdout_indices, make_sample

ENV_ROOT = "SPIKESCAN_DATA"
ENV_CACHE_MB = "SPIKESCAN_DATA_CACHE_MB"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_root():
    """$SPIKESCAN_DATA, else <repo>/../shared/data when it exists (the development layout), else
    ./data. The folder is tonic's ``save_to``: it holds NMNIST/, DVSGesture/, SHD/, SSC/."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    shared = _REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else Path("data")


def resolve_root(root):
    return default_root() if root is None else Path(root).expanduser()


def not_found(dataset, split, missing, root, how):
    """Build the DatasetNotFound message: what is missing, where, and how to get it."""
    files = "\n".join(f"  - {m}" for m in missing)
    return DatasetNotFound(
        f"{dataset} ({split} split) is not available offline; missing:\n{files}\n"
        f"Data root: {root} (pass root=... or set ${ENV_ROOT}). spikescan never downloads "
        f"implicitly. To get the data: {how}")


@dataclass(frozen=True)
class Preprocess:
    t_max: float
    time_bin: float | None = None
    max_events: int | None = None
    cap_mode: str = "stride"

    def __post_init__(self):
        if not self.t_max > 0:
            raise ValueError(f"t_max must be > 0 ms, got {self.t_max}")
        if self.time_bin is not None and not self.time_bin > 0:
            raise ValueError(f"time_bin must be > 0 ms, got {self.time_bin}")
        if self.max_events is not None and int(self.max_events) < 1:
            raise ValueError(f"max_events must be >= 1, got {self.max_events}")
        if self.cap_mode not in ("stride", "first"):
            raise ValueError(f"cap_mode must be 'stride' or 'first', got {self.cap_mode!r}")

    def __call__(self, times_ms, channels, label):
        t = np.asarray(times_ms, dtype=np.float64)
        c = np.asarray(channels, dtype=np.int64)
        keep = (t >= 0.0) & (t <= self.t_max)
        t, c = t[keep], c[keep]
        if self.time_bin is not None:
            t = np.floor(t / self.time_bin) * self.time_bin
            tc = np.unique(np.stack([t, c.astype(np.float64)], axis=1), axis=0)
            t, c = tc[:, 0], tc[:, 1].astype(np.int64)
        t, c, label = make_sample(t, c, label)
        m = self.max_events
        if m is not None and len(t) > m:
            if self.cap_mode == "first":
                idx = np.arange(m)
            else:  # floor(x + 0.5), not np.round: banker's rounding could repeat an index
                idx = np.floor(np.linspace(0, len(t) - 1, m) + 0.5).astype(np.int64)
            t, c = t[idx], c[idx]
        return t, c, label

    def describe(self):
        s = f"crop to [0, {self.t_max:g}] ms"
        if self.time_bin is not None:
            s += f", time bin {self.time_bin:g} ms (coincident events merged)"
        if self.max_events is not None:
            s += f", at most {self.max_events} events ({self.cap_mode})"
        return s


class _CacheBudget:
    """Process-wide byte budget of the per-item caches (default 2 GiB, $SPIKESCAN_DATA_CACHE_MB):
    small sets are decoded once; a huge one (full SSC) stops caching instead of exhausting RAM."""

    def __init__(self):
        self.used = 0
        self.lock = threading.Lock()

    @property
    def limit(self):
        return int(float(os.environ.get(ENV_CACHE_MB, 2048)) * 2**20)

    def take(self, nbytes):
        with self.lock:
            if self.used + nbytes > self.limit:
                return False
            self.used += nbytes
            return True


CACHE_BUDGET = _CacheBudget()


def train_holdout(n_train, split, has_test, val_fraction, test_fraction, seed):
    """Indices of the training recordings that make up ``split`` (train, val, or test when the
    dataset has no official test split on disk).

    val is a hold-out of the training recordings; test is a hold-out too only when the official
    test split is absent (then train loses both hold-outs).
    """
    tf = 0.0 if has_test else test_fraction
    if split == "test" and tf <= 0:
        raise ValueError("the test split is absent on disk and test_fraction is 0: no test set")
    return holdout_indices(n_train, split, val_fraction, tf, seed)


class RecordingDataset(EventDataset):
    """Base of the tonic-backed sets. Subclasses fill ``self.labels`` (int64 per item) and
    implement ``_decode(i) -> (times_ms, channels)`` for item i (already mapped to channels)."""

    _tonic = None  # built on first use by the ``tonic`` property
    repair = REPLACE  # what to do about a corrupt file of this dataset (subclasses say more)

    def __init__(self, preprocess, cache=True):
        super().__init__()
        self.preprocess = preprocess
        self.t_max = float(preprocess.t_max)
        if cache:
            self.enable_cache()

    @property
    def tonic(self):
        """The tonic dataset object (file list, targets, header), rebuilt lazily after pickling:
        subclasses of tonic classes defined at run time do not pickle (spawned loader workers)."""
        if self._tonic is None:
            self._tonic = self._make_tonic()
        return self._tonic

    def _make_tonic(self):
        raise NotImplementedError

    def _select_camera_split(self, split, root, *, title, has_train, has_test, missing_train,
                             missing_test, how, val_fraction, test_fraction, split_seed):
        """Pick the tonic split and the item indices of `split` for the camera sets (N-MNIST,
        DVS Gesture): the real test split when its files exist, else a deterministic hold-out of
        the training recordings. Missing files raise DatasetNotFound naming them."""
        if split == "test" and has_test:
            self._tonic_args = (root, False)
            self.idx = np.arange(len(self.tonic.data))
        else:
            if not has_train:
                missing = [missing_train] + ([missing_test] if split == "test" else [])
                raise not_found(title, split, missing, root, how.replace("ROOT", str(root)))
            self._tonic_args = (root, True)
            self.idx = train_holdout(len(self.tonic.data), split, has_test, val_fraction,
                                     test_fraction, split_seed)
        self.labels = np.asarray(self.tonic.targets, dtype=np.int64)[self.idx]
        self.heldout = not has_test

    def _set_camera_layout(self, name, split, n_classes, sensor, downsample, merge_polarity, chw=False):
        from .camera import camera_layout

        self.name, self.split, self.n_classes = name, split, n_classes
        self.layout = camera_layout(sensor, downsample, merge_polarity)
        self.n_channels = int(np.prod(self.layout))
        self.downsample, self.merge_polarity = int(downsample), bool(merge_polarity)
        self.chw = bool(chw)  # channel p*H*W + y*W + x ([P, H, W], for conv2d) instead of x*H*P + y*P + p

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tonic"] = None
        if "_handle" in state:  # an open HDF5 handle never crosses processes
            state["_handle"], state["_pid"] = None, None
        return state

    def _decode(self, i):
        raise NotImplementedError

    def _source(self, i):
        """The file that item i comes from (for error messages)."""
        raise NotImplementedError

    def _load(self, i):
        try:
            t, c = self._decode(i)
        except (CorruptDataFile, MemoryError):
            raise
        except Exception as e:  # any decoding failure names the file, not tonic's internals
            raise CorruptDataFile(self._source(i), f"{type(e).__name__}: {e}",
                                  self.repair) from None
        # before the crop: NaN / negative times are a broken file, not events to crop away
        check_events(self._source(i), t, c, self.repair)
        return self.preprocess(t, c, self.labels[i])

    def _remember(self, i, sample):
        if CACHE_BUDGET.take(sample[0].nbytes + sample[1].nbytes):
            self._cache[i] = sample

    def check_ranges(self, path, fields):
        """Raise CorruptDataFile when a decoded coordinate is outside the sensor."""
        for name, values, hi in fields:
            if len(values) and (values.min() < 0 or values.max() >= hi):
                raise CorruptDataFile(path, f"{name} outside [0, {hi}): "
                                            f"[{values.min()}, {values.max()}]", self.repair)

    def describe(self):
        return super().describe() + f"; {self.preprocess.describe()}"
