"""Broken dataset files and folders, written small in tmp_path: each gives one error naming the
file (and sample) and what to do; nothing is accepted, truncated or dropped silently."""
import numpy as np
import pytest

from datahelpers import write_hsd_h5, write_nmnist_bin
from spikescan.runtime.data import CorruptDataFile, make_sample, pad_collate
from spikescan.runtime.data.dvsgesture import DVSGestureEvents
from spikescan.runtime.data.errors import DatasetLayoutError
from spikescan.runtime.data.hsd import HSDEvents
from spikescan.runtime.data.nmnist import NMNISTEvents


def _nmnist_train(root, n=10):
    for i in range(n):
        write_nmnist_bin(root / "NMNIST" / "Train" / str(i % 10) / f"{i:05d}.bin",
                         [1, 2], [3, 4], [0, 1], [10, 20 + i])
    return root / "NMNIST" / "Train"


def test_nmnist_zero_byte_bin_is_refused_before_training(tmp_path):
    train = _nmnist_train(tmp_path)
    empty = train / "3" / "00099.bin"
    empty.write_bytes(b"")
    with pytest.raises(CorruptDataFile) as err:
        NMNISTEvents("train", tmp_path)
    msg = str(err.value)
    assert str(empty) in msg and "empty" in msg and "fresh extraction" in msg


def test_nmnist_truncated_bins_are_listed(tmp_path):
    train = _nmnist_train(tmp_path)
    for name in ("00098.bin", "00099.bin"):
        (train / "4" / name).write_bytes(b"\x01\x02\x03")
    with pytest.raises(CorruptDataFile, match="not a multiple of 5.*1 more") as err:
        NMNISTEvents("val", tmp_path)
    assert str(train / "4" / "00098.bin") in str(err.value)


def test_nmnist_bin_of_only_overflow_markers_has_no_events(tmp_path):
    _nmnist_train(tmp_path)
    ds = NMNISTEvents("train", tmp_path, val_fraction=0.0, test_fraction=0.1)
    victim = ds.tonic.data[ds.idx[0]]
    write_nmnist_bin(type(tmp_path)(victim), [0], [240], [0], [0])  # y == 240: a time marker
    with pytest.raises(CorruptDataFile, match="no events") as err:
        ds[0]
    assert victim in str(err.value)


@pytest.mark.parametrize("folder", ["x", "13", "3/extra", "."])
def test_nmnist_bins_outside_a_digit_folder(tmp_path, folder):
    train = _nmnist_train(tmp_path)
    stray = train / folder / "00500.bin"
    write_nmnist_bin(stray, [1], [1], [0], [5])
    with pytest.raises(DatasetLayoutError) as err:  # tonic: int('x') error, or label 3 for 13
        NMNISTEvents("train", tmp_path)
    msg = str(err.value)
    assert str(stray.resolve()) in str(type(tmp_path)(err.value.path).resolve())
    assert "one digit 0-9" in msg and "move the files" in msg


def test_nmnist_test_folder_is_checked_only_for_test(tmp_path):
    _nmnist_train(tmp_path)
    write_nmnist_bin(tmp_path / "NMNIST" / "Test" / "1" / "00000.bin", [1], [1], [0], [5])
    (tmp_path / "NMNIST" / "Test" / "1" / "00001.bin").write_bytes(b"")
    assert len(NMNISTEvents("train", tmp_path)) == 9
    with pytest.raises(CorruptDataFile, match="00001.bin"):
        NMNISTEvents("test", tmp_path)


def _shd(root, times_s, units=None, labels=None, **kw):
    units = units if units is not None else [np.arange(len(t)) for t in times_s]
    labels = labels if labels is not None else [0] * len(times_s)
    write_hsd_h5(root / "SHD" / "shd_test.h5", times_s, units, labels, n_keys=20, **kw)
    return root / "SHD" / "shd_test.h5"


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (-0.25, "negative"),
                                       (np.inf, "infinite")])
def test_shd_nan_or_negative_times(tmp_path, bad, what):
    path = _shd(tmp_path, [[0.1, 0.2], [0.3, bad, 0.5], [0.7]])
    ds = HSDEvents("shd", "test", tmp_path)
    with pytest.raises(CorruptDataFile) as err:  # old: cropped away silently
        ds[1]
    msg = str(err.value)
    assert f"{path} (sample 1)" in msg and what in msg and "event 1" in msg
    assert "re-download shd_test.h5.zip" in msg
    assert ds[0][0].tolist() == pytest.approx([100.0, 200.0]) and len(ds[2][0]) == 1


def test_shd_empty_sample(tmp_path):
    _shd(tmp_path, [[0.1], []])
    with pytest.raises(CorruptDataFile, match=r"\(sample 1\).*no events"):
        HSDEvents("shd", "test", tmp_path)[1]


def test_shd_float_labels(tmp_path):
    path = _shd(tmp_path, [[0.1], [0.2], [0.3]], labels=[1.0, 3.7, 2.0], label_dtype=np.float32)
    with pytest.raises(CorruptDataFile) as err:  # old: 3.7 became class 3
        HSDEvents("shd", "test", tmp_path)
    assert str(path) in str(err.value) and "labels must be integers" in str(err.value)
    assert "3.7" in str(err.value)
    _shd(tmp_path, [[0.1], [0.2]], labels=[1.0, 19.0], label_dtype=np.float64)
    ds = HSDEvents("shd", "test", tmp_path)  # whole numbers stored as floats are exact
    assert ds.labels.tolist() == [1, 19] and ds[1][2] == 19


def test_shd_label_out_of_range_and_float_units(tmp_path):
    _shd(tmp_path, [[0.1]], labels=[20])
    with pytest.raises(CorruptDataFile, match=r"labels \[20\] outside 0..19"):
        HSDEvents("shd", "test", tmp_path)
    _shd(tmp_path, [[0.1, 0.2]], units=[[3.0, 4.5]], unit_dtype=np.float32)
    with pytest.raises(CorruptDataFile, match=r"spikes/units must be integers.*4.5"):
        HSDEvents("shd", "test", tmp_path)[0]
    _shd(tmp_path, [[0.1, 0.2]], units=[[3.0, 700.0]], unit_dtype=np.float32)
    with pytest.raises(CorruptDataFile, match=r"unit outside \[0, 700\)"):
        HSDEvents("shd", "test", tmp_path)[0]


def _gesture(root, files):
    base = root / "DVSGesture" / "ibmGestureTrain"
    for rel, arr in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(base / rel, arr)
    return base


def _events(dtype=np.int32, t=(5, 1, 3), p=(0, 1, 0), x=(1, 2, 3)):
    return np.stack([x, [4, 5, 6], p, t], axis=1).astype(dtype)


def test_dvsgesture_narrow_dtype_is_exact(tmp_path):
    _gesture(tmp_path, {"user01_led/0.npy": _events(np.int16, t=(1000, 30, 1449)),
                        "user01_led/1.npy": _events(np.float64, t=(0.5, 2.25, 7.0))})
    ds = DVSGestureEvents("train", tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert ds[0][0].tolist() == [30.0, 1000.0, 1449.0]  # tonic's in-place t*1000 wraps in int16
    assert ds[1][0].tolist() == [0.5, 2.25, 7.0]


@pytest.mark.parametrize("arr, match", [
    (_events(p=(0, 2, 1)), r"p outside \[0, 2\)"),
    (_events(t=(5, -1, 3)), "negative"),
    (_events()[:0], "no events"),
    (_events(np.float32, x=(1.5, 2, 3)), "x must be integers"),
    (np.zeros((3, 4), dtype=bool), "integer array"),
])
def test_dvsgesture_bad_contents(tmp_path, arr, match):
    base = _gesture(tmp_path, {"user02_natural/4.npy": arr})
    ds = DVSGestureEvents("train", tmp_path, val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(CorruptDataFile, match=match) as err:
        ds[0]
    assert str(base / "user02_natural" / "4.npy") in str(err.value)
    assert "fresh extraction" in str(err.value)


def test_dvsgesture_truncated_npy(tmp_path):
    base = _gesture(tmp_path, {"user01_led/0.npy": _events()})
    path = base / "user01_led" / "0.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CorruptDataFile, match="truncated"):
        DVSGestureEvents("train", tmp_path, val_fraction=0.0, test_fraction=0.0)[0]


@pytest.mark.parametrize("rel, match", [
    ("tmp/0.npy", "not named userNN_<lighting>"), ("userAB_led/0.npy", "userNN"),
    ("user01_led/a.npy", "integer label"), ("user01_led/sub/0.npy", "nested"),
    ("user01_led/11.npy", "label 11, outside 0..10")])
def test_dvsgesture_bad_layout(tmp_path, rel, match):
    _gesture(tmp_path, {"user01_led/0.npy": _events(), rel: _events()})
    with pytest.raises(DatasetLayoutError, match=match) as err:  # tonic: a bare int() error
        DVSGestureEvents("train", tmp_path)
    assert "rename" in str(err.value)


def test_float_labels_in_samples_and_batches():
    assert make_sample([1.0], [0], np.float64(3.0))[2] == 3
    for bad in (3.7, np.float32(2.5), float("nan"), "3", [1, 2]):
        with pytest.raises(ValueError, match="one integer class index"):
            make_sample([1.0], [0], bad)
    with pytest.raises(ValueError, match="one integer class index"):
        pad_collate([(np.array([1.0]), np.array([0]), 1.5)])
