"""N-MNIST (Orchard et al. 2015) through ``tonic.datasets.NMNIST``.

On disk (tonic's layout under ``root``): NMNIST/Train/<digit>/NNNNN.bin and NMNIST/Test/... in
the 40-bit event format (x 8 bits, y 8 bits, p 1 bit, t 23 bits in us). Channels: camera layout
of camera.py with sensor (34, 34, 2): x*68 + y*2 + p (2312 channels), optional ``downsample`` and
``merge_polarity``; ``chw=true`` gives p*1156 + y*34 + x instead, the layout of
`input x[2, 34, 34]` for conv2d models (models/nmnist_conv.snn). Time: us / 1000 -> ms, nominal
t_max 320 ms (recordings end near 316 ms).

Splits: test = NMNIST/Test when that folder holds .bin files; otherwise (the offline subset has
only Train, 1000 samples) a hold-out of Train: ``test_fraction`` (default 0.1) for test and
``val_fraction`` (default 0.1) for val, by one permutation seeded with ``split_seed`` (default 0),
so the default offline split is 800 / 100 / 100. With an official Test, val is still the
``val_fraction`` hold-out of Train.

Before tonic lists the files, the split's folder is checked: every .bin must sit in a one-digit
class folder (tonic would take the label from the last character of any folder name) and be a
non-empty whole number of 5-byte events; otherwise the error names the file.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .camera import camera_channels
from .errors import CorruptDataFile, DatasetLayoutError
from .events import check_split
from .recordings import Preprocess, RecordingDataset, resolve_root

SENSOR = (34, 34, 2)
T_MAX = 320.0
HOW = ("with network access run once `tonic.datasets.NMNIST(save_to='ROOT', train=True)` (and "
       "train=False) to download train.zip / test.zip from Mendeley Data (468j46mzdv) and "
       "extract them, or copy the extracted folders to ROOT/NMNIST/Train/<digit>/*.bin and "
       "ROOT/NMNIST/Test/<digit>/*.bin.")
REPAIR = ("replace it with the same file from a fresh extraction of train.zip / test.zip, or "
          "delete it")


def _check_folder(folder):
    """Check what tonic will list under ``folder`` (every file whose name ends in "bin", at any
    depth, labelled with the last character of its folder's path) before tonic lists it: each
    must sit directly in a one-digit class folder and hold whole, non-empty 5-byte events."""
    bad = []
    for path, _, files in os.walk(folder):
        bins = sorted(f for f in files if f.endswith("bin"))
        if not bins:
            continue
        rel = os.path.relpath(path, folder)
        if not re.fullmatch(r"[0-9]", rel):
            raise DatasetLayoutError(
                os.path.join(path, bins[0]), f"{len(bins)} .bin file(s) in {path!r}, which is not "
                f"a class folder: N-MNIST labels come from the folder name, one digit 0-9 "
                f"directly under {folder}", f"move the files into {folder}/<digit>/ or out of "
                f"{folder}")
        for name in bins:
            size = os.path.getsize(os.path.join(path, name))
            if size == 0 or size % 5:
                bad.append((os.path.join(path, name), size))
    if bad:
        (first, size), more = bad[0], bad[1:]
        also = f" ({len(more)} more: {', '.join(p for p, _ in more[:3])}" \
               f"{', ...' if len(more) > 3 else ''})" if more else ""
        why = "it is empty" if size == 0 else f"size {size} bytes is not a multiple of 5"
        raise CorruptDataFile(first, f"{why}: an N-MNIST recording is a non-empty sequence of "
                                     f"5-byte events{also}", REPAIR)


def _has_bins(folder):
    return folder.is_dir() and any(folder.glob("*/*.bin"))


def _tonic_nmnist(root, train):
    import tonic

    class NMNIST(tonic.datasets.NMNIST):  # the class name is tonic's folder name: keep it
        def _check_exists(self):  # spikescan checks the files itself and never downloads
            return True

    return NMNIST(save_to=str(root), train=train)


class NMNISTEvents(RecordingDataset):
    def __init__(self, split, root=None, *, t_max=T_MAX, time_bin=None, max_events=None,
                 cap_mode="stride", downsample=1, merge_polarity=False, chw=False, val_fraction=0.1,
                 test_fraction=0.1, split_seed=0, cache=True):
        check_split(split)
        super().__init__(Preprocess(t_max, time_bin, max_events, cap_mode), cache)
        root = resolve_root(root)
        base = root / "NMNIST"
        has_test = _has_bins(base / "Test")
        folder = base / ("Test" if split == "test" and has_test else "Train")
        if folder.is_dir():  # a missing folder is reported by _select_camera_split
            _check_folder(folder)
        self._select_camera_split(
            split, root, title="N-MNIST", has_train=_has_bins(base / "Train"),
            has_test=has_test, missing_train=f"{base / 'Train'}/<digit>/*.bin",
            missing_test=f"{base / 'Test'}/<digit>/*.bin", how=HOW, val_fraction=val_fraction,
            test_fraction=test_fraction, split_seed=split_seed)
        self._set_camera_layout("nmnist", split, 10, SENSOR, downsample, merge_polarity, chw)

    repair = REPAIR

    def _make_tonic(self):
        return _tonic_nmnist(*self._tonic_args)

    def __len__(self):
        return len(self.idx)

    def _source(self, i):
        return self.tonic.data[self.idx[i]]

    def _decode(self, i):
        path = self._source(i)
        size = os.path.getsize(path)
        if size % 5:
            raise CorruptDataFile(path, f"size {size} bytes is not a multiple of the 5-byte "
                                        "N-MNIST event", REPAIR)
        ev, _ = self.tonic[int(self.idx[i])]
        self.check_ranges(path, [("x", ev["x"], SENSOR[0]), ("y", ev["y"], SENSOR[1]),
                                 ("p", ev["p"], SENSOR[2])])
        ch = camera_channels(ev["x"], ev["y"], ev["p"], SENSOR, self.downsample,
                             self.merge_polarity, self.chw)
        return ev["t"].astype(np.float64) / 1000.0, ch

    def describe(self):
        src = ("hold-out of Train (Test absent)" if self.heldout and self.split != "train"
               else "Test" if self.split == "test" else "Train")
        return super().describe() + f"; from {src}, layout (W,H,P)={self.layout}"
