"""The tonic-backed loaders on the real recordings in ../shared/data (skipped when absent)."""
import numpy as np
import pytest
import torch

from datahelpers import read_nmnist_bin
from spikescan.runtime.data import get_dataset, make_loader


@pytest.fixture(scope="module")
def nmnist(request):
    root = request.getfixturevalue("nmnist_root")
    return root, {s: get_dataset("nmnist", s, root=root) for s in ("train", "val", "test")}


def test_nmnist_counts_and_labels(nmnist):
    _, sp = nmnist
    assert [len(sp[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    labels = np.concatenate([sp[s].labels for s in ("train", "val", "test")])
    assert np.bincount(labels, minlength=10).tolist() == [97, 116, 99, 93, 105, 92, 94, 117,
                                                          87, 100]
    files = [sp[s].tonic.data[i] for s in ("train", "val", "test") for i in sp[s].idx]
    assert len(set(files)) == 1000  # the hold-out splits are disjoint and cover Train
    assert sp["train"].n_channels == 34 * 34 * 2 and sp["train"].n_classes == 10
    assert "hold-out" in sp["test"].describe()


def test_nmnist_events_against_raw_decoder(nmnist):
    _, sp = nmnist
    ds = sp["val"]
    lengths = []
    for i in range(0, len(ds), 10):
        t, c, lab = ds[i]
        path = ds.tonic.data[ds.idx[i]]
        x, y, p, t_us = read_nmnist_bin(path)
        want_t = t_us / 1000.0
        want_c = x * 68 + y * 2 + p
        o = np.lexsort((want_c, want_t))
        assert np.array_equal(t, want_t[o]) and np.array_equal(c, want_c[o])
        assert lab == int(path.split("/")[-2])
        assert 0 <= t[0] and t[-1] <= 320.0 and 0 <= c.min() and c.max() < 2312
        lengths.append(len(t))
    assert 1000 <= min(lengths) and max(lengths) <= 8000  # 1.1k-7.2k events per recording


def test_nmnist_options(nmnist):
    root, sp = nmnist
    full = sp["val"][0]
    ds = get_dataset("nmnist", "val", root=root, downsample=2, merge_polarity=True, t_max=100.0,
                     max_events=500)
    assert ds.n_channels == 17 * 17 and ds.t_max == 100.0
    t, c, _ = ds[0]
    assert len(t) == min(500, int((full[0] <= 100.0).sum())) and t.max() <= 100.0
    assert c.max() < 289
    # channel map: x*68 + y*2 + p  ->  (x//2)*17 + (y//2)
    x, y = full[1] // 68, (full[1] % 68) // 2
    keep = full[0] <= 100.0
    assert set(c.tolist()) <= set(((x // 2) * 17 + y // 2)[keep].tolist())


def test_nmnist_loader_is_deterministic(nmnist):
    root, _ = nmnist
    batches = []
    for _ in range(2):
        loader = make_loader("nmnist", "val", 16, root=root, shuffle=True, seed=3)
        batches.append(next(iter(loader)))
    (t1, c1, y1), (t2, c2, y2) = batches
    assert t1.shape[0] == 16 and t1.dtype == torch.float64
    assert torch.equal(y1, y2) and torch.equal(t1, t2) and torch.equal(c1, c2)
    first = next(iter(make_loader("nmnist", "val", 16, root=root, shuffle=True, seed=4)))
    assert not torch.equal(first[2], y1)
    # padding: row widths equal the sample lengths
    lens = torch.isfinite(t1).sum(1)
    assert lens.max() == t1.shape[1] and (c1[~torch.isfinite(t1)] == 0).all()


def test_dvsgesture_samples(dvsgesture_root):
    sp = {s: get_dataset("dvsgesture", s, root=dvsgesture_root) for s in ("train", "val", "test")}
    assert [len(sp[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    labels = sorted(np.concatenate([sp[s].labels for s in sp]).tolist())
    assert labels == list(range(10))
    ds = sp["train"]
    assert ds.n_channels == 128 * 128 * 2 and ds.n_classes == 11 and set(ds.users) == {1}
    t, c, lab = ds[0]
    raw = np.load(ds.tonic.data[ds.idx[0]])
    want_t = raw[:, 3].astype(np.float64)  # ms on disk, exact through tonic's us
    want_c = raw[:, 0].astype(np.int64) * 256 + raw[:, 1] * 2 + raw[:, 2]
    o = np.lexsort((want_c, want_t))
    assert np.array_equal(t, want_t[o]) and np.array_equal(c, want_c[o])
    assert 60_000 <= len(t) <= 190_000 and 0 <= t[0] and t[-1] <= 1449.0
    small = get_dataset("dvsgesture", "train", root=dvsgesture_root, downsample=4,
                        time_bin=5.0, max_events=4000)
    ts, cs, _ = small[0]
    assert small.n_channels == 2048 and len(ts) == 4000 and cs.max() < 2048
    assert np.all(np.mod(ts, 5.0) == 0) and np.all(np.diff(ts) >= 0)
