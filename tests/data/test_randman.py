"""randman: frequency count, the manifold formula against a scalar reference, determinism,
shapes and splits."""
import math

import numpy as np
import pytest

from spikescan.runtime.data import get_dataset
from spikescan.runtime.data.randman import Randman, eval_random_functions, n_frequencies

SMALL = dict(n_classes=3, n_units=7, dim=2, samples_per_class=40, window=25.0, seed=5)


def test_number_of_frequencies():
    assert n_frequencies(2.0, 1e-3) == 32  # ceil(1e-3 ** -0.5) = ceil(31.62)
    assert n_frequencies(1.0, 1e-3) == 1000 and n_frequencies(0.5, 1e-3) == 1000  # the cap


def test_random_function_against_scalar_formula():
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((3, 32)) for _ in range(3))
    x = rng.random(5)
    got = eval_random_functions(x, a, b, c, 2.0)
    for s in range(5):
        for e in range(3):
            want = math.fsum(a[e, i] * (i + 1) ** -2.0 *
                             math.sin(2 * math.pi * (i * x[s] * b[e, i] + c[e, i]))
                             for i in range(32))
            assert got[s, e] == pytest.approx(want, abs=1e-13)


def test_shapes_ranges_and_balance():
    ds = Randman("train", **SMALL)
    assert len(ds) == 3 * 32 and ds.n_channels == 7 and ds.n_classes == 3 and ds.t_max == 25.0
    assert np.bincount(ds.labels).tolist() == [32, 32, 32]
    for t, c, _ in ds.samples:
        assert sorted(c.tolist()) == list(range(7))  # one spike per unit
        assert np.all((t >= 0) & (t <= 25.0)) and np.all(np.diff(t) >= 0)
    assert ds.coords.shape == (96, 2)
    # min-max normalisation over each class and unit: 0 and the window are both reached
    allt = {k: np.stack([s[0][np.argsort(s[1])] for s in ds.samples if s[2] == k])
            for k in range(3)}
    val, test = Randman("val", **SMALL), Randman("test", **SMALL)
    for k in range(3):
        pool = np.concatenate([allt[k]] + [np.stack([s[0][np.argsort(s[1])] for s in d.samples
                                                     if s[2] == k]) for d in (val, test)])
        assert np.allclose(pool.min(axis=0), 0.0) and np.allclose(pool.max(axis=0), 25.0)


def test_determinism_and_disjoint_splits():
    a = Randman("val", **SMALL)
    b = Randman("val", **dict(SMALL))
    assert all(np.array_equal(s[0], r[0]) and s[2] == r[2] for s, r in zip(a.samples, b.samples))
    other = Randman("val", **dict(SMALL, seed=6))
    assert not np.allclose(a.samples[0][0], other.samples[0][0])
    coords = [set(map(tuple, Randman(s, **SMALL).coords)) for s in ("train", "val", "test")]
    assert sum(len(c) for c in coords) == 120 and len(set.union(*coords)) == 120
    assert [len(Randman(s, **SMALL)) for s in ("train", "val", "test")] == [96, 12, 12]


def test_manifold_value_of_one_sample_from_scratch():
    """Rebuild one unit's spike time from the documented generator order."""
    ds = Randman("train", **SMALL)
    rng = np.random.default_rng(SMALL["seed"])
    n_u, dim, f, s_pc = 7, 2, 32, 40
    a, b, c = (rng.random((n_u, dim, f)) for _ in range(3))
    x = rng.random((s_pc, dim))
    y = np.ones((s_pc, n_u))
    for d in range(dim):
        for e in range(n_u):
            for s in range(s_pc):
                y[s, e] *= sum(a[e, d, i] * (i + 1) ** -2.0 * math.sin(
                    2 * math.pi * (i * x[s, d] * b[e, d, i] + c[e, d, i])) for i in range(f))
    y = (y - y.min(0)) / (y.max(0) - y.min(0))
    t, ch, lab = ds.samples[3]
    assert lab == 0 and np.allclose(ds.coords[3], x[3])
    assert np.allclose(t[np.argsort(ch)], 25.0 * y[3], atol=1e-12)


def test_registry_and_bad_options():
    ds = get_dataset("randman", "test", **SMALL)
    assert ds is get_dataset("randman", "test", **SMALL)  # memoised per process
    with pytest.raises(ValueError):
        Randman("train", **dict(SMALL, fractions=(0.5, 0.1, 0.1)))
    with pytest.raises(ValueError):
        Randman("train", **dict(SMALL, window=0.0))


def test_t_max_alias():
    ds = Randman("val", **dict(SMALL, window=50.0, t_max=10.0))
    assert ds.t_max == 10.0 and max(s[0].max() for s in ds.samples) <= 10.0
    with pytest.raises(ValueError, match="disagree"):
        Randman("val", **dict(SMALL, window=20.0, t_max=10.0))
