"""Small files written here in each dataset's exact on-disk format, round-tripped through the
loaders (tonic's classes included), plus the missing-data and corrupt-file errors."""
import numpy as np
import pytest

from datahelpers import expected_sample, write_hsd_h5, write_nmnist_bin
from spikescan.runtime.data import CorruptDataFile, DatasetNotFound, get_dataset, make_loader
from spikescan.runtime.data.dvsgesture import DVSGestureEvents
from spikescan.runtime.data.hsd import HSDEvents
from spikescan.runtime.data.nmnist import NMNISTEvents


def _hsd_content(n, n_classes, seed):
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(1, 40))
        times.append(np.sort(rng.random(k) * 1.2).astype(np.float32))  # seconds
        units.append(rng.integers(0, 700, k))
    return times, units, rng.integers(0, n_classes, n)


def _check_hsd_item(sample, times_s, units, downsample=1):
    t, c, _ = sample
    want_t, want_c = expected_sample(np.asarray(times_s, np.float32).astype(np.float64) * 1000.0,
                                     np.asarray(units) // downsample)
    assert np.array_equal(t, want_t) and np.array_equal(c, want_c)


def test_shd_roundtrip(tmp_path):
    tr = _hsd_content(30, 20, 0)
    te = _hsd_content(7, 20, 1)
    write_hsd_h5(tmp_path / "SHD" / "shd_train.h5", *tr, n_keys=20)
    write_hsd_h5(tmp_path / "SHD" / "shd_test.h5", *te, n_keys=20)
    sp = {s: get_dataset("shd", s, root=tmp_path) for s in ("train", "val", "test")}
    assert [len(sp[s]) for s in ("train", "val", "test")] == [27, 3, 7]
    assert sorted(np.concatenate([sp["train"].idx, sp["val"].idx]).tolist()) == list(range(30))
    assert sp["test"].n_channels == 700 and sp["test"].n_classes == 20
    assert len(sp["test"].tonic.classes) == 20  # tonic's SHD class read the header
    for s, src in (("train", tr), ("val", tr), ("test", te)):
        ds = sp[s]
        assert np.array_equal(ds.labels, src[2][ds.idx])
        for i in range(len(ds)):
            j = ds.idx[i]
            _check_hsd_item(ds[i], src[0][j], src[1][j])
    ds = HSDEvents("shd", "test", tmp_path, downsample=4)
    assert ds.n_channels == 175
    _check_hsd_item(ds[2], te[0][2], te[1][2], downsample=4)
    t, c, y = next(iter(make_loader("shd", "test", 4, root=tmp_path)))
    assert t.shape[0] == 4 and y.tolist() == te[2][:4].tolist()


def test_ssc_roundtrip(tmp_path):
    content = {}
    for k, (split, fname) in enumerate((("train", "ssc_train.h5"), ("val", "ssc_valid.h5"),
                                        ("test", "ssc_test.h5"))):
        content[split] = _hsd_content(5 + k, 35, 10 + k)
        write_hsd_h5(tmp_path / "SSC" / fname, *content[split], n_keys=35)
    for split, src in content.items():
        ds = get_dataset("ssc", split, root=tmp_path)
        assert len(ds) == len(src[2]) and ds.n_classes == 35
        assert np.array_equal(ds.labels, src[2])
        for i in range(len(ds)):
            _check_hsd_item(ds[i], src[0][i], src[1][i])


def _write_nmnist(root, folder, specs, seed=0):
    rng = np.random.default_rng(seed)
    files = {}
    for digit, name in specs:
        k = int(rng.integers(5, 50))
        ev = (rng.integers(0, 34, k), rng.integers(0, 34, k), rng.integers(0, 2, k),
              np.sort(rng.integers(0, 320_000, k)))
        path = root / "NMNIST" / folder / str(digit) / name
        write_nmnist_bin(path, *ev)
        files[str(path)] = (digit, ev)
    return files


def test_nmnist_bin_roundtrip_with_test_folder(tmp_path):
    train = _write_nmnist(tmp_path, "Train", [(d, f"{i:05d}.bin") for i, d in
                                              enumerate([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])])
    test = _write_nmnist(tmp_path, "Test", [(7, "00000.bin"), (2, "00001.bin")], seed=1)
    sp = {s: NMNISTEvents(s, tmp_path) for s in ("train", "val", "test")}
    assert [len(sp[s]) for s in ("train", "val", "test")] == [9, 1, 2]  # Test present: no test
    for ds, src in ((sp["train"], train), (sp["val"], train), (sp["test"], test)):
        for i in range(len(ds)):
            path = ds.tonic.data[ds.idx[i]]
            digit, (x, y, p, t_us) = src[path]
            t, c, lab = ds[i]
            assert lab == digit
            want_t, want_c = expected_sample(t_us / 1000.0, x * 68 + y * 2 + p)
            assert np.array_equal(t, want_t) and np.array_equal(c, want_c)


def test_nmnist_holdout_when_test_is_absent(tmp_path):
    _write_nmnist(tmp_path, "Train", [(i % 10, f"{i:05d}.bin") for i in range(20)])
    sizes = [len(NMNISTEvents(s, tmp_path, val_fraction=0.2, test_fraction=0.25))
             for s in ("train", "val", "test")]
    assert sizes == [11, 4, 5]
    with pytest.raises(ValueError, match="no test set"):
        NMNISTEvents("test", tmp_path, test_fraction=0.0)


def test_dvsgesture_npy_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    src = {}
    for user, light, label in ((1, "fluorescent", 0), (1, "fluorescent", 4), (2, "led", 10),
                               (3, "natural", 7), (3, "natural", 2)):
        k = int(rng.integers(10, 100))
        arr = np.stack([rng.integers(0, 128, k), rng.integers(0, 128, k), rng.integers(0, 2, k),
                        np.sort(rng.integers(0, 7000, k))], axis=1).astype(np.int32)
        path = tmp_path / "DVSGesture" / "ibmGestureTrain" / f"user{user:02d}_{light}"
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / f"{label}.npy", arr)
        src[str(path / f"{label}.npy")] = (label, user, arr)
    everything = [DVSGestureEvents(s, tmp_path) for s in ("train", "val", "test")]
    assert [len(d) for d in everything] == [3, 1, 1]
    for ds in everything:
        for i in range(len(ds)):
            label, user, arr = src[ds.tonic.data[ds.idx[i]]]
            t, c, lab = ds[i]
            assert lab == label and ds.users[i] == user
            keep = arr[:, 3] <= 6000  # the nominal 6 s crop
            want_t, want_c = expected_sample(arr[keep, 3].astype(np.float64),
                                             arr[keep, 0] * 256 + arr[keep, 1] * 2
                                             + arr[keep, 2])
            assert np.array_equal(t, want_t) and np.array_equal(c, want_c)
            assert t.max() <= ds.t_max == 6000.0


@pytest.mark.parametrize("name, expect", [
    ("shd", "shd_train.h5"), ("ssc", "ssc_train.h5"), ("nmnist", "Train"),
    ("dvsgesture", "ibmGestureTrain")])
def test_missing_data_message(tmp_path, name, expect):
    with pytest.raises(DatasetNotFound) as err:
        get_dataset(name, "train", root=tmp_path)
    msg = str(err.value)
    assert expect in msg and str(tmp_path) in msg and "tonic.datasets." in msg
    assert "copy" in msg and "never downloads" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_test_file_of_shd(tmp_path):
    write_hsd_h5(tmp_path / "SHD" / "shd_train.h5", *_hsd_content(3, 20, 0), n_keys=20)
    with pytest.raises(DatasetNotFound, match="shd_test.h5"):
        get_dataset("shd", "test", root=tmp_path)


def test_corrupt_h5(tmp_path):
    bad = tmp_path / "SHD" / "shd_train.h5"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(CorruptDataFile) as err:
        HSDEvents("shd", "train", tmp_path)
    assert str(bad) in str(err.value)


def test_h5_missing_keys(tmp_path):
    import h5py
    path = tmp_path / "SSC" / "ssc_test.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros(3, dtype=np.uint16))
    with pytest.raises(CorruptDataFile) as err:
        HSDEvents("ssc", "test", tmp_path)
    assert str(path) in str(err.value)


def test_corrupt_nmnist_bin(tmp_path):
    _write_nmnist(tmp_path, "Train", [(i % 10, f"{i:05d}.bin") for i in range(10)])
    ds = NMNISTEvents("train", tmp_path, val_fraction=0.0, test_fraction=0.1)
    victim = ds.tonic.data[ds.idx[2]]
    with open(victim, "ab") as f:
        f.write(b"\x01\x02")  # a truncated trailing event
    with pytest.raises(CorruptDataFile, match="multiple of the 5-byte") as err:
        ds[2]
    assert victim in str(err.value)
    ds[0]  # the other files still load


def test_corrupt_and_malformed_npy(tmp_path):
    folder = tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led"
    folder.mkdir(parents=True)
    (folder / "0.npy").write_bytes(b"garbage, not numpy")
    np.save(folder / "1.npy", np.zeros((5, 3), dtype=np.int32))  # 3 columns instead of 4
    np.save(folder / "2.npy", np.array([[200, 0, 0, 1]], dtype=np.int32))  # x outside 128
    ds = DVSGestureEvents("train", tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert len(ds) == 3
    names = {ds.tonic.data[j].rsplit("/", 1)[1]: i for i, j in enumerate(ds.idx)}
    for name, i in names.items():
        with pytest.raises(CorruptDataFile) as err:
            ds[i]
        assert str(folder / name) in str(err.value)


def test_datasets_pickle_and_load_in_worker_processes(tmp_path):
    import pickle

    import torch

    te = _hsd_content(6, 20, 3)
    write_hsd_h5(tmp_path / "SHD" / "shd_test.h5", *te, n_keys=20)
    _write_nmnist(tmp_path, "Train", [(i % 10, f"{i:05d}.bin") for i in range(10)])
    for name in ("shd", "nmnist"):
        ds = get_dataset(name, "test", root=tmp_path)
        ds[0]
        clone = pickle.loads(pickle.dumps(ds))
        assert all(np.array_equal(a, b) for a, b in zip(clone[len(ds) - 1], ds[len(ds) - 1]))
    ref = list(make_loader("shd", "test", 2, root=tmp_path))
    par = list(make_loader("shd", "test", 2, root=tmp_path, num_workers=2))
    assert all(torch.equal(a, b) for r, p in zip(ref, par) for a, b in zip(r, p))
