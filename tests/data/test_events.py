"""Sample canonicalisation, padding, hold-out splits and the recording preprocessing."""
import numpy as np
import pytest
import torch

from spikescan.runtime.data import make_sample, pad_collate
from spikescan.runtime.data.events import holdout_indices
from spikescan.runtime.data.recordings import Preprocess


def test_make_sample_sorts_by_time_then_channel():
    t, c, y = make_sample([3.0, 1.0, 1.0, 2.0], [0, 5, 2, 1], 7)
    assert t.tolist() == [1.0, 1.0, 2.0, 3.0]
    assert c.tolist() == [2, 5, 1, 0]
    assert t.dtype == np.float64 and c.dtype == np.int64 and y == 7
    with pytest.raises(ValueError):  # samples are cached: they must be immutable
        t[0] = 0.0


def test_make_sample_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        make_sample([1.0, 2.0], [0], 0)
    with pytest.raises(ValueError, match="finite"):
        make_sample([1.0, np.inf], [0, 1], 0)


def test_pad_collate_layout():
    items = [make_sample([2.0, 1.0], [1, 3], 0), make_sample([], [], 2),
             make_sample([0.5, 0.25, 4.0], [0, 0, 9], 1)]
    times, chans, labels = pad_collate(items)
    assert times.shape == (3, 3) and times.dtype == torch.float64
    assert chans.dtype == torch.int64 and labels.dtype == torch.int64
    assert times[0].tolist() == [1.0, 2.0, float("inf")]
    assert chans[0].tolist() == [3, 1, 0]
    assert torch.isinf(times[1]).all() and (chans[1] == 0).all()
    assert times[2].tolist() == [0.25, 0.5, 4.0] and chans[2].tolist() == [0, 0, 9]
    assert labels.tolist() == [0, 2, 1]
    t_empty, _, _ = pad_collate([make_sample([], [], 0)])
    assert t_empty.shape == (1, 1) and torch.isinf(t_empty).all()


def test_holdout_is_a_deterministic_partition():
    parts = {s: holdout_indices(103, s, 0.1, 0.2, seed=3) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [72, 10, 21]
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(103))
    assert np.array_equal(parts["val"], holdout_indices(103, "val", 0.1, 0.2, seed=3))
    assert not np.array_equal(parts["val"], holdout_indices(103, "val", 0.1, 0.2, seed=4))


def test_preprocess_crop_and_sort():
    t, c, _ = Preprocess(t_max=10.0)([11.0, 10.0, -1.0, 0.0, 5.0], [1, 2, 3, 4, 5], 0)
    assert t.tolist() == [0.0, 5.0, 10.0] and c.tolist() == [4, 5, 2]


def test_preprocess_time_bin_floors_and_merges():
    t, c, _ = Preprocess(t_max=10.0, time_bin=2.0)([0.5, 1.5, 1.9, 2.0, 3.9], [1, 1, 2, 1, 1], 0)
    # 0.5 and 1.5 on channel 1 fall into bin 0 and merge; 2.0 and 3.9 into bin 2 and merge
    assert t.tolist() == [0.0, 0.0, 2.0] and c.tolist() == [1, 2, 1]


def test_preprocess_caps():
    t0 = np.arange(100, dtype=np.float64)
    c0 = np.arange(100) % 7
    t, c, _ = Preprocess(t_max=1e3, max_events=10)(t0, c0, 0)
    assert len(t) == 10 and t[0] == 0.0 and t[-1] == 99.0
    assert np.all(np.diff(t) > 0) and np.all(c == t.astype(int) % 7)  # a true subset
    t, _, _ = Preprocess(t_max=1e3, max_events=10, cap_mode="first")(t0, c0, 0)
    assert t.tolist() == list(range(10))
    t, _, _ = Preprocess(t_max=1e3, max_events=99)(t0, c0, 0)  # near-full: no repeated index
    assert len(np.unique(t)) == 99
    t, _, _ = Preprocess(t_max=1e3, max_events=200)(t0, c0, 0)
    assert len(t) == 100


def test_preprocess_validates_options():
    for bad in (dict(t_max=0.0), dict(t_max=1.0, time_bin=0.0), dict(t_max=1.0, max_events=0),
                dict(t_max=1.0, cap_mode="random")):
        with pytest.raises(ValueError):
            Preprocess(**bad)


def test_make_sample_random_inputs_match_lexsort():
    rng = np.random.default_rng(1)
    for _ in range(50):
        k = int(rng.integers(0, 30))
        t = rng.integers(0, 5, k).astype(float)
        c = rng.integers(0, 4, k)
        if rng.random() < 0.5:  # already canonical inputs take the no-sort path
            o = np.lexsort((c, t))
            t, c = t[o], c[o]
        ts, cs, _ = make_sample(t, c, 0)
        o = np.lexsort((c, t))
        assert np.array_equal(ts, t[o]) and np.array_equal(cs, c[o])
    src = np.array([1.0, 2.0])
    t, _, _ = make_sample(src, [0, 1], 0)
    src[0] = 5.0  # the caller's array stays writable and the sample does not alias it
    assert t[0] == 1.0
