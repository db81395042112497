"""Yin-Yang: class rule, sampling, sizes, balance, determinism, split independence, encoding."""
import math

import numpy as np
import pytest

from spikescan.runtime.data import get_dataset
from spikescan.runtime.data.yinyang import YinYang, yinyang_class


@pytest.mark.parametrize("x, y, label", [
    (0.75, 0.50, 2),   # centre of the right dot
    (0.25, 0.50, 2),   # centre of the left dot
    (0.25, 0.58, 2),   # inside the left dot (d_left = 0.08 < r_small)
    (0.25, 0.65, 1),   # ring around the left dot, d_left = 0.15 in (r_small, r_big / 2]: yin
    (0.75, 0.65, 0),   # ring around the right dot, d_right = 0.15: yang
    (0.50, 0.90, 1),   # upper half, far from the right dot: yin
    (0.50, 0.10, 0),   # lower half, far from the left dot: yang
    (0.25, 0.85, 1),   # upper half, d_right = sqrt(0.25 + 0.1225) > 0.25: yin
    (0.75, 0.15, 0),   # lower half, d_left = sqrt(0.25 + 0.1225) > 0.25: yang
    (0.75, 0.73, 0),   # upper half but d_right = 0.23 <= 0.25: yang (the yin's lower lobe)
    (0.25, 0.27, 1),   # lower half but d_left = 0.23 in (0.1, 0.25]: yin
])
def test_class_rule_at_hand_picked_points(x, y, label):
    assert yinyang_class(x, y) == label


def test_class_rule_against_definition_on_a_grid():
    # DATASETS.md's rule, written out again in vectorised form, on a 101 x 101 grid
    g = np.linspace(0.0, 1.0, 101)
    X, Y = np.meshgrid(g, g)
    dr = np.hypot(X - 0.75, Y - 0.5)
    dl = np.hypot(X - 0.25, Y - 0.5)
    yin = (dr <= 0.1) | ((dl > 0.1) & (dl <= 0.25)) | ((Y > 0.5) & (dr > 0.25))
    want = np.where((dr < 0.1) | (dl < 0.1), 2, yin.astype(int))
    got = np.vectorize(yinyang_class)(X, Y)
    assert np.array_equal(got, want)
    inside = np.hypot(X - 0.5, Y - 0.5) <= 0.5
    # yin and yang cover (nearly) equal halves of the disc, by the figure's point symmetry
    a0, a1 = (got[inside] == 0).sum(), (got[inside] == 1).sum()
    assert abs(a0 - a1) < 0.03 * inside.sum()


@pytest.fixture(scope="module")
def splits():
    return {s: get_dataset("yinyang", s) for s in ("train", "val", "test")}


def test_sizes_channels_and_balance(splits):
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5000, 1000, 1000]
    for ds in splits.values():
        assert ds.n_channels == 5 and ds.n_classes == 3 and ds.t_max == 30.0
        counts = np.bincount(ds.labels, minlength=3)
        n = len(ds)
        # goal classes are uniform draws: within 4 binomial standard deviations of n / 3
        assert np.all(np.abs(counts - n / 3) < 4 * math.sqrt(n * 2 / 9)), counts


def test_points_have_their_label_and_lie_in_the_disc(splits):
    ds = splits["train"]
    assert all(yinyang_class(x, y) == lab for (x, y), lab in zip(ds.points, ds.labels))
    assert np.all(np.hypot(ds.points[:, 0] - 0.5, ds.points[:, 1] - 0.5) <= 0.5)


def test_encoding(splits):
    ds = splits["val"]
    for i in (0, 1, 500, 999):
        t, c, lab = ds[i]
        assert lab == ds.labels[i]
        assert sorted(c.tolist()) == [0, 1, 2, 3, 4] and np.all(np.diff(t) >= 0)
        x, y = ds.points[i]
        want = {0: 30 * x, 1: 30 * y, 2: 30 * (1 - x), 3: 30 * (1 - y), 4: 0.0}
        for tk, ck in zip(t, c):
            assert tk == pytest.approx(want[ck], abs=1e-12)
        assert np.all((t >= 0) & (t <= 30))
    # the mirrored pair keeps the summed latency constant: x + (1-x) and y + (1-y)
    t, c, _ = ds[3]
    tt = dict(zip(c.tolist(), t.tolist()))
    assert tt[0] + tt[2] == pytest.approx(30.0) and tt[1] + tt[3] == pytest.approx(30.0)


def test_options_bias_time_and_window():
    ds = YinYang("test", size=20, t_min=2.0, t_max=12.0, bias_time=5.0)
    for (x, y), (t, c, _) in zip(ds.points, ds.samples):
        tt = dict(zip(c.tolist(), t.tolist()))
        assert tt[4] == 5.0 and tt[0] == pytest.approx(2.0 + 10.0 * x)
    nobias = YinYang("test", size=20, bias=False)
    assert nobias.n_channels == 4 and all(len(s[0]) == 4 for s in nobias.samples)
    with pytest.raises(ValueError):
        YinYang("test", size=5, bias_time=40.0)


def test_determinism_and_split_independence(splits):
    again = YinYang("val")
    assert np.array_equal(again.points, splits["val"].points)
    assert np.array_equal(again.labels, splits["val"].labels)
    # each split has its own seed: no shared stream, no shared points
    pts = [set(map(tuple, splits[s].points)) for s in ("train", "val", "test")]
    assert not (pts[0] & pts[1]) and not (pts[0] & pts[2]) and not (pts[1] & pts[2])
    # the first points of the reference stream (numpy RandomState(40): randint(3) then rand(2))
    rng = np.random.RandomState(40)
    goal = rng.randint(3)
    while True:
        x, y = rng.rand(2)
        if math.hypot(x - 0.5, y - 0.5) <= 0.5 and yinyang_class(x, y) == goal:
            break
    assert splits["test"].labels[0] == goal and tuple(splits["test"].points[0]) == (x, y)
