"""scikit-learn digits, latency encoded."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from spikescan.runtime.data import get_dataset


@pytest.fixture(scope="module")
def splits():
    return {s: get_dataset("digits", s) for s in ("train", "val", "test")}


def test_split_sizes_disjoint_and_complete(splits):
    idx = [splits[s].indices for s in ("train", "val", "test")]
    assert [len(i) for i in idx] == [1258, 269, 270]
    assert sorted(np.concatenate(idx).tolist()) == list(range(1797))
    for ds in splits.values():
        assert ds.n_channels == 64 and ds.n_classes == 10 and ds.t_max == 30.0


def test_encoding_matches_pixels(splits):
    data = load_digits()
    ds = splits["val"]
    for k in (0, 7, 268):
        t, c, lab = ds[k]
        img = data.data[ds.indices[k]]
        assert lab == data.target[ds.indices[k]]
        assert sorted(c.tolist()) == np.flatnonzero(img).tolist()  # zero pixels dropped
        for tk, ck in zip(t, c):
            assert tk == 30.0 * (16 - img[ck]) / 16  # brighter is earlier, exact in binary
        assert np.all(np.diff(t) >= 0)
        bright = np.flatnonzero(img == img.max())
        assert set(c[t == t.min()].tolist()) == set(bright.tolist())


def test_deterministic():
    from spikescan.runtime.data.digits import Digits
    a, b = Digits("test", seed=1), Digits("test", seed=1)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, Digits("test", seed=2).indices)
