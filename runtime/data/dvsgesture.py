"""DVS Gesture (Amir et al. 2017) through ``tonic.datasets.DVSGesture`` (its preprocessed
release: one .npy per gesture segment).

On disk (tonic's layout under ``root``): DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy
and DVSGesture/ibmGestureTest/..., each an (N, 4) integer array with columns x, y, p, t (t in ms;
tonic returns us). Channels: camera layout of camera.py with sensor (128, 128, 2):
x*256 + y*2 + p (32768 channels); ``downsample=4`` gives 32x32x2 = 2048. 11 classes (10 is
"other"). Nominal t_max 6000 ms (segments last about 6 s; longer ones are cropped there; the
offline subset holds the first 1.45 s of 10 segments). A segment carries 60k-180k events, so
``max_events`` / ``time_bin`` are usually wanted for training.

Splits: test = ibmGestureTest when it holds .npy files, otherwise a hold-out of the training
files (``test_fraction``, default 0.1); val is the ``val_fraction`` (default 0.1) hold-out of the
training files, seeded by ``split_seed`` (default 0). Offline (10 files): 8 / 1 / 1.
"""
from __future__ import annotations

import numpy as np

from .camera import camera_channels
from .errors import CorruptDataFile
from .events import check_split
from .recordings import Preprocess, RecordingDataset, resolve_root

SENSOR = (128, 128, 2)
T_MAX = 6000.0
N_CLASSES = 11
HOW = ("with network access run once `tonic.datasets.DVSGesture(save_to='ROOT', train=True)` "
       "(and train=False) to download ibmGestureTrain.tar.gz / ibmGestureTest.tar.gz from figshare "
       "and extract them, or copy the extracted folders to "
       "ROOT/DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy (and ibmGestureTest).")


def _has_npy(folder):
    return folder.is_dir() and any(folder.glob("*/*.npy"))


def _tonic_dvsgesture(root, train):
    import numpy.lib.recfunctions  # noqa: F401  (tonic 1.7 uses np.lib.recfunctions unimported)
    import tonic

    class DVSGesture(tonic.datasets.DVSGesture):  # the class name is tonic's folder name
        def _check_exists(self):  # spikescan checks the files itself and never downloads
            return True

    ds = DVSGesture(save_to=str(root), train=train)
    # tonic 1.7 lists each user folder's files in os.walk order, which the file system decides:
    # sort by path so the index order (and the hold-out splits) are the same on every machine
    order = sorted(range(len(ds.data)), key=ds.data.__getitem__)
    for field in ("data", "targets", "users", "lighting"):
        values = getattr(ds, field)
        setattr(ds, field, [values[k] for k in order])
    return ds


def _check_npy(path):
    """Read only the .npy header, so a wrong file gets a precise reason (np.load would call any
    non-.npy file "pickled data")."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise CorruptDataFile(path, "not a .npy file (bad magic bytes)")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
        except (ValueError, OSError) as e:
            raise CorruptDataFile(path, f"unreadable .npy header ({e})") from None
    if len(shape) != 2 or shape[1] != 4 or dtype.kind not in "iub":
        raise CorruptDataFile(path, f"expected an (N, 4) integer array of x, y, p, t (ms), got "
                                    f"shape {shape} dtype {dtype}")


class DVSGestureEvents(RecordingDataset):
    def __init__(self, split, root=None, *, t_max=T_MAX, time_bin=None, max_events=None,
                 cap_mode="stride", downsample=1, merge_polarity=False, val_fraction=0.1,
                 test_fraction=0.1, split_seed=0, cache=True):
        check_split(split)
        super().__init__(Preprocess(t_max, time_bin, max_events, cap_mode), cache)
        root = resolve_root(root)
        base = root / "DVSGesture"
        self._select_camera_split(
            split, root, title="DVS Gesture", has_train=_has_npy(base / "ibmGestureTrain"),
            has_test=_has_npy(base / "ibmGestureTest"),
            missing_train=f"{base / 'ibmGestureTrain'}/userNN_<lighting>/<label>.npy",
            missing_test=f"{base / 'ibmGestureTest'}/userNN_<lighting>/<label>.npy", how=HOW,
            val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed)
        bad = self.labels[(self.labels < 0) | (self.labels >= N_CLASSES)]
        if bad.size:
            raise ValueError(f"DVS Gesture: file names give labels {sorted(set(bad.tolist()))} "
                             f"outside 0..{N_CLASSES - 1}")
        self._set_camera_layout("dvsgesture", split, N_CLASSES, SENSOR, downsample, merge_polarity)

    def _make_tonic(self):
        return _tonic_dvsgesture(*self._tonic_args)

    def __len__(self):
        return len(self.idx)

    def _source(self, i):
        return self.tonic.data[self.idx[i]]

    @property
    def users(self):
        return np.asarray(self.tonic.users, dtype=np.int64)[self.idx]

    def _decode(self, i):
        path = self._source(i)
        _check_npy(path)
        ev, _ = self.tonic[int(self.idx[i])]
        self.check_ranges(path, [("x", ev["x"], SENSOR[0]), ("y", ev["y"], SENSOR[1])])
        ch = camera_channels(ev["x"], ev["y"], ev["p"], SENSOR, self.downsample,
                             self.merge_polarity)
        return ev["t"].astype(np.float64) / 1000.0, ch

    def describe(self):
        src = ("hold-out of ibmGestureTrain (ibmGestureTest absent)"
               if self.heldout and self.split != "train"
               else "ibmGestureTest" if self.split == "test" else "ibmGestureTrain")
        return super().describe() + f"; from {src}, layout (W,H,P)={self.layout}"
