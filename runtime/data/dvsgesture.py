"""DVS Gesture (Amir et al. 2017) through ``tonic.datasets.DVSGesture`` (its preprocessed
release: one .npy per gesture segment).

On disk (tonic's layout under ``root``): DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy
and DVSGesture/ibmGestureTest/..., each an (N, 4) integer array with columns x, y, p, t (t in ms;
tonic returns us). Channels: camera layout of camera.py with sensor (128, 128, 2):
x*256 + y*2 + p (32768 channels); ``downsample=4`` gives 32x32x2 = 2048; ``chw=true`` gives
p*H*W + y*W + x instead, the layout of `input x[2, 32, 32]` for conv2d models. 11 classes (10 is
"other"). Nominal t_max 6000 ms (segments last about 6 s; longer ones are cropped there; the
offline subset holds the first 1.45 s of 10 segments). A segment carries 60k-180k events, so
``max_events`` / ``time_bin`` are usually wanted for training.

tonic lists the files (after a check of the folder names it parses: userNN_<lighting>/ and
<label>.npy); each .npy is read here, not by tonic's ``__getitem__``, whose in-place ``t *= 1000``
wraps around silently on a narrow integer dtype (int16 t = 1000 ms). Integer arrays, or float
arrays holding whole x, y and p, are accepted; x, y outside the sensor, p outside {0, 1} and
negative t are errors naming the file.

Splits: test = ibmGestureTest when it holds .npy files, otherwise a hold-out of the training
files (``test_fraction``, default 0.1); val is the ``val_fraction`` (default 0.1) hold-out of the
training files, seeded by ``split_seed`` (default 0). Offline (10 files): 8 / 1 / 1.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .camera import camera_channels
from .checks import integral
from .errors import CorruptDataFile, DatasetLayoutError
from .events import check_split
from .recordings import Preprocess, RecordingDataset, resolve_root

SENSOR = (128, 128, 2)
T_MAX = 6000.0
N_CLASSES = 11
HOW = ("with network access run once `tonic.datasets.DVSGesture(save_to='ROOT', train=True)` "
       "(and train=False) to download ibmGestureTrain.tar.gz / ibmGestureTest.tar.gz from figshare "
       "and extract them, or copy the extracted folders to "
       "ROOT/DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy (and ibmGestureTest).")
REPAIR = ("replace it with the same file from a fresh extraction of ibmGestureTrain.tar.gz / "
          "ibmGestureTest.tar.gz, or delete it")


def _check_folder(folder):
    """Check the names tonic parses while it lists ``folder`` (its ``int()`` calls would fail
    with a bare ValueError): sub-folders userNN_<lighting>, files <label>.npy directly in them."""
    hint = f"the layout is {folder}/userNN_<lighting>/<label>.npy: rename or move it out"
    for path, dirs, files in os.walk(folder):
        rel = os.path.relpath(path, folder)
        npys = sorted(f for f in files if f.endswith("npy"))
        if rel == ".":
            for d in sorted(dirs):
                if not re.fullmatch(r"user[0-9]+_.+", d):
                    raise DatasetLayoutError(os.path.join(path, d), "a folder that is not named "
                                             "userNN_<lighting>", hint)
            continue
        if os.sep in rel and npys:
            raise DatasetLayoutError(os.path.join(path, npys[0]), ".npy files in a nested "
                                     "folder", hint)
        for f in npys:
            if not re.fullmatch(r"[0-9]+\.npy", f):
                raise DatasetLayoutError(os.path.join(path, f), "a file name that is not "
                                         "<label>.npy with an integer label", hint)
            if int(f[:-4]) >= N_CLASSES:
                raise DatasetLayoutError(os.path.join(path, f), f"the file name gives label "
                                         f"{int(f[:-4])}, outside 0..{N_CLASSES - 1}", hint)


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


def _read_npy(path):
    """The (N, 4) array of x, y, p, t (ms). The header is read first, so a wrong file gets a
    precise reason (np.load would call any non-.npy file "pickled data")."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise CorruptDataFile(path, "not a .npy file (bad magic bytes)", REPAIR)
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
        except (ValueError, OSError) as e:
            raise CorruptDataFile(path, f"unreadable .npy header ({e})", REPAIR) from None
        if len(shape) != 2 or shape[1] != 4 or dtype.kind not in "iuf":
            raise CorruptDataFile(path, f"expected an (N, 4) integer array of x, y, p, t (ms), "
                                        f"got shape {shape} dtype {dtype}", REPAIR)
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # e.g. fewer bytes than the header says
            raise CorruptDataFile(path, f"truncated or unreadable .npy data ({e})",
                                  REPAIR) from None


class DVSGestureEvents(RecordingDataset):
    def __init__(self, split, root=None, *, t_max=T_MAX, time_bin=None, max_events=None,
                 cap_mode="stride", downsample=1, merge_polarity=False, chw=False, val_fraction=0.1,
                 test_fraction=0.1, split_seed=0, cache=True):
        check_split(split)
        super().__init__(Preprocess(t_max, time_bin, max_events, cap_mode), cache)
        root = resolve_root(root)
        base = root / "DVSGesture"
        use_test = split == "test" and _has_npy(base / "ibmGestureTest")
        folder = base / ("ibmGestureTest" if use_test else "ibmGestureTrain")
        if folder.is_dir():  # a missing folder is reported by _select_camera_split
            _check_folder(folder)
        self._select_camera_split(
            split, root, title="DVS Gesture", has_train=_has_npy(base / "ibmGestureTrain"),
            has_test=_has_npy(base / "ibmGestureTest"),
            missing_train=f"{base / 'ibmGestureTrain'}/userNN_<lighting>/<label>.npy",
            missing_test=f"{base / 'ibmGestureTest'}/userNN_<lighting>/<label>.npy", how=HOW,
            val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed)
        self._set_camera_layout("dvsgesture", split, N_CLASSES, SENSOR, downsample, merge_polarity, chw)

    repair = REPAIR

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
        arr = _read_npy(path)
        x, y, p = (integral(path, name, arr[:, k], REPAIR) for k, name in enumerate("xyp"))
        self.check_ranges(path, [("x", x, SENSOR[0]), ("y", y, SENSOR[1]), ("p", p, SENSOR[2])])
        ch = camera_channels(x, y, p, SENSOR, self.downsample, self.merge_polarity, self.chw)
        return arr[:, 3].astype(np.float64), ch  # ms on disk (tonic: us, the same values)

    def describe(self):
        src = ("hold-out of ibmGestureTrain (ibmGestureTest absent)"
               if self.heldout and self.split != "train"
               else "ibmGestureTest" if self.split == "test" else "ibmGestureTrain")
        return super().describe() + f"; from {src}, layout (W,H,P)={self.layout}"
