"""SHD and SSC, the Heidelberg spiking audio sets (Cramer et al. 2020), through
``tonic.datasets.SHD`` / ``tonic.datasets.SSC``.

On disk (tonic's layout under ``root``): SHD/shd_train.h5, SHD/shd_test.h5, SSC/ssc_train.h5,
SSC/ssc_valid.h5, SSC/ssc_test.h5, each with ``spikes/times`` (ragged, seconds),
``spikes/units`` (ragged, 0..699), ``labels``, ``extra/keys`` and ``extra/speaker``. The zip
archives tonic looks for are not needed. Channel = unit (700 channels), or unit // downsample
with ``downsample`` > 1 (ceil(700 / downsample) channels). Time: s * 1000 -> ms, nominal
t_max 1400 ms (SHD digits and SSC commands end before that).

Splits: SHD has train and test files; val is the ``val_fraction`` (default 0.1) hold-out of
shd_train.h5 seeded by ``split_seed`` (default 0). SSC uses its own train / valid / test files.

tonic's ``__getitem__`` reopens the HDF5 file for every sample; the items are read here through
one handle per process instead (same arrays, same conversion), and tonic is used for the layout
and the header (classes, speakers).
"""
from __future__ import annotations

import os

import numpy as np

from .checks import integral, labels_array
from .errors import CorruptDataFile
from .events import check_split
from .recordings import Preprocess, RecordingDataset, not_found, resolve_root, train_holdout

N_UNITS = 700
T_MAX = 1400.0
SPECS = {
    "shd": dict(cls="SHD", title="SHD", n_classes=20,
                files={"train": "shd_train.h5", "test": "shd_test.h5"}),
    "ssc": dict(cls="SSC", title="SSC", n_classes=35,
                files={"train": "ssc_train.h5", "val": "ssc_valid.h5", "test": "ssc_test.h5"}),
}
HOW = ("with network access run once `tonic.datasets.{cls}(save_to='ROOT', ...)` for the split "
       "to download {zip} from https://zenkelab.org/datasets/ and unzip it into ROOT/{cls}/, or "
       "copy {h5} to ROOT/{cls}/ (the h5 file is all spikescan needs).")
REPAIR = ("replace it with a fresh copy: re-download {zip} from https://zenkelab.org/datasets/ "
          "and unzip it into {folder}")


def _tonic_hsd(kind, root, split_file):
    import tonic

    if kind == "shd":
        class SHD(tonic.datasets.SHD):  # the class name is tonic's folder name: keep it
            def _check_exists(self):  # spikescan checks the files itself, never downloads
                return True

        return SHD(save_to=str(root), train=split_file == "shd_train.h5")

    class SSC(tonic.datasets.SSC):
        def _check_exists(self):
            return True

    return SSC(save_to=str(root), split={"ssc_train.h5": "train", "ssc_valid.h5": "valid",
                                         "ssc_test.h5": "test"}[split_file])


class HSDEvents(RecordingDataset):
    def __init__(self, kind, split, root=None, *, t_max=T_MAX, time_bin=None, max_events=None,
                 cap_mode="stride", downsample=1, val_fraction=0.1, split_seed=0, cache=True):
        check_split(split)
        super().__init__(Preprocess(t_max, time_bin, max_events, cap_mode), cache)
        spec = SPECS[kind]
        root = resolve_root(root)
        own = spec["files"].get(split)
        fname = own if own is not None else spec["files"]["train"]
        self.path = root / spec["cls"] / fname
        self.repair = REPAIR.format(zip=fname + ".zip", folder=self.path.parent)
        if not self.path.is_file():
            how = HOW.format(cls=spec["cls"], zip=fname + ".zip", h5=fname).replace("ROOT",
                                                                                   str(root))
            raise not_found(spec["title"], split, [str(self.path)], root, how)
        try:
            self._tonic_args = (kind, root, fname)
            self.tonic  # reads the header through tonic: a broken file fails here
            with self._open() as f:
                # never cast: a float label 3.7 must be refused, not truncated to 3
                labels = labels_array(self.path, f["labels"][()], spec["n_classes"],
                                      self.repair)
                n_times, n_units = len(f["spikes/times"]), len(f["spikes/units"])
        except CorruptDataFile:
            raise
        except Exception as e:  # h5py / tonic errors become one message naming the file
            raise CorruptDataFile(self.path, f"{type(e).__name__}: {e}", self.repair) from None
        if not n_times == n_units == len(labels):
            raise CorruptDataFile(self.path, f"spikes/times ({n_times}), spikes/units "
                                             f"({n_units}) and labels ({len(labels)}) differ in "
                                             "length", self.repair)
        # SHD has no val file: its train and val are the two parts of shd_train.h5
        holdout = "val" not in spec["files"] and split in ("train", "val")
        self.idx = (train_holdout(len(labels), split, True, val_fraction, 0.0, split_seed)
                    if holdout else np.arange(len(labels)))
        self.labels = labels[self.idx]
        self.name, self.split, self.n_classes = kind, split, spec["n_classes"]
        k = int(downsample)
        if k < 1 or k != downsample:
            raise ValueError(f"downsample must be a positive integer factor, got {downsample}")
        self.downsample = k
        self.n_channels = -(-N_UNITS // k)
        self.own_val = kind == "ssc"
        self._handle, self._pid = None, None

    def _open(self):
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as e:
            raise CorruptDataFile(self.path, f"not a readable HDF5 file ({e})",
                                  self.repair) from None

    def _file(self):
        # one handle per process: a handle inherited through fork (DataLoader workers) is unsafe
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        return self._handle

    def _make_tonic(self):
        return _tonic_hsd(*self._tonic_args)

    def __len__(self):
        return len(self.idx)

    def _source(self, i):
        return f"{self.path} (sample {int(self.idx[i])})"

    def _decode(self, i):
        f = self._file()
        j = int(self.idx[i])
        times = np.asarray(f["spikes/times"][j], dtype=np.float64) * 1000.0
        units = integral(self._source(i), "spikes/units", f["spikes/units"][j], self.repair)
        if times.shape != units.shape or times.ndim != 1:
            raise CorruptDataFile(self._source(i), f"times {times.shape} and units "
                                                   f"{units.shape} must be 1-D arrays of one "
                                                   "length", self.repair)
        self.check_ranges(self._source(i), [("unit", units, N_UNITS)])
        return times, units // self.downsample

    def describe(self):
        src = (self.path.name if self.split != "val" or self.own_val
               else f"hold-out of {self.path.name}")
        return super().describe() + f"; from {src}"
