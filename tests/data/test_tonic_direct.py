"""tonic datasets used directly: the ToSpikescan transform, pad_collate as the collate_fn, and the
detection of tonic's zero padding (tonic.collation.PadTensors), on real tonic output."""
import numpy as np
import pytest
import torch
import tonic
from tonic.collation import PadTensors
from tonic.io import make_structured_array

from spikescan.runtime.data import ToSpikescan, check_not_zero_padded, pad_collate
from spikescan.runtime.data.padding import zero_padded_rows

NMNIST_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
SHD_DTYPE = tonic.datasets.SHD.dtype


def _camera(n, seed, t0=31_120):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0, 300_000, n))
    return make_structured_array(rng.integers(0, 34, n), rng.integers(0, 34, n), t,
                                 rng.integers(0, 2, n), dtype=NMNIST_DTYPE)


def test_camera_layout_and_units():
    ev = make_structured_array([3, 0, 33], [5, 0, 33], [2500, 1000, 1000], [1, 0, 1],
                               dtype=NMNIST_DTYPE)
    tr = ToSpikescan(tonic.datasets.NMNIST.sensor_size)
    t, c = tr(ev)
    assert tr.n_channels == 2312 and tr.layout == (34, 34, 2)
    assert t.tolist() == [1.0, 1.0, 2.5]  # us -> ms, sorted by (time, channel)
    assert c.tolist() == [0, 33 * 68 + 33 * 2 + 1, 3 * 68 + 5 * 2 + 1]
    t, c = ToSpikescan((34, 34, 2), downsample=2, merge_polarity=True)(ev)
    assert c.tolist() == [0, 16 * 17 + 16, 1 * 17 + 2]


def test_audio_layout_ignores_tonics_constant_polarity():
    ev = make_structured_array(np.array([0.0005, 0.25, 0.001]) * 1e6, [699, 3, 0], 1,
                               dtype=SHD_DTYPE)  # exactly as tonic.datasets.SHD builds it
    t, c = ToSpikescan(tonic.datasets.SHD.sensor_size)(ev)
    assert t.tolist() == [0.5, 1.0, 250.0] and c.tolist() == [699, 0, 3]
    tr = ToSpikescan((700, 1, 1), downsample=4)
    assert tr.n_channels == 175 and tr(ev)[1].tolist() == [174, 0, 0]


@pytest.mark.parametrize("ev, match", [
    (make_structured_array([34], [0], [1], [0], dtype=NMNIST_DTYPE), r"x outside .*\[0, 34\)"),
    (make_structured_array([1], [0], [1], [2], dtype=NMNIST_DTYPE), r"p outside"),
    (make_structured_array([1], [0], [-5], [0], dtype=NMNIST_DTYPE), "negative"),
    (np.zeros(2, dtype=[("x", "<i8"), ("t", "<i8"), ("p", "<i8")]), "no field 'y'"),
    (np.zeros((3, 4)), "structured event array"),
])
def test_transform_refuses_bad_events(ev, match):
    with pytest.raises(ValueError, match=match):
        ToSpikescan((34, 34, 2))(ev)


def test_transform_float_times_and_bad_sensor():
    ev = np.array([(1, 2.5e3), (0, np.nan)], dtype=[("x", "<i8"), ("t", "<f8")])
    with pytest.raises(ValueError, match="NaN"):
        ToSpikescan((700, 1, 1))(ev)
    with pytest.raises(ValueError, match="three positive integers"):
        ToSpikescan((34, 34))


def _pairs(lengths):
    return [(_camera(n, s), s % 10) for s, n in enumerate(lengths)]


def test_pad_collate_batches_a_tonic_dataset():
    tr = ToSpikescan((34, 34, 2))
    data = [(tr(ev), y) for ev, y in _pairs([5, 9, 2])]  # what a tonic dataset with transform gives
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=pad_collate)
    times, chans, labels = next(iter(loader))
    assert times.shape == (3, 9) and times.dtype == torch.float64 and labels.tolist() == [0, 1, 2]
    assert torch.isinf(times[0, 5:]).all() and torch.isinf(times[2, 2:]).all()
    assert times[0, :5].tolist() == data[0][0][0].tolist()
    check_not_zero_padded(times, chans)  # +inf padding is never mistaken for zeros


def _padtensors_batch(lengths):
    """[t in ms, channel] tensors per sample, batched by tonic's own PadTensors (zeros)."""
    tr = ToSpikescan((34, 34, 2))
    batch = []
    for ev, y in _pairs(lengths):
        t, c = tr(ev)
        batch.append((torch.tensor(np.stack([t, c.astype(np.float64)], 1)), y))
    out, labels = PadTensors(batch_first=True)(batch)
    return out[..., 0], out[..., 1].long(), labels, batch


def test_tonic_padtensors_zero_padding_is_refused():
    times, chans, _, batch = _padtensors_batch([6, 11, 3])
    assert times.shape == (3, 11) and (times[0, 6:] == 0).all()  # tonic's fake events
    rows, runs = zero_padded_rows(times, chans)
    assert rows.tolist() == [0, 2] and runs.tolist() == [5, 8]
    with pytest.raises(ValueError) as err:
        check_not_zero_padded(times, chans)
    msg = str(err.value)
    assert "sample 0" in msg and "5 event(s) at t = 0 ms on channel 0" in msg
    assert "also sample(s) 2" in msg and "pad_collate" in msg and "\n" not in msg
    # the same items through pad_collate: +inf padding, accepted, exact
    t2, c2, _ = pad_collate(batch)
    check_not_zero_padded(t2, c2)
    assert torch.equal(t2[0, :6], times[0, :6]) and torch.isinf(t2[0, 6:]).all()


def test_real_data_is_never_flagged():
    t = torch.tensor([[0.0, 0.0, 1.0, 2.0],      # events at t = 0 on channel 0 first: real
                      [3.0, 1.0, 0.0, 0.0],      # unsorted, so the zeros may be real events
                      [0.0, 0.0, 0.0, 0.0],      # all zeros: cannot be told apart
                      [5.0, 6.0, 0.0, 0.0]])     # zeros on channel 3: real
    c = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0], [0, 0, 0, 0], [1, 2, 3, 0]])
    check_not_zero_padded(t, c)
    check_not_zero_padded(t.numpy(), c.numpy())
    check_not_zero_padded(torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.long))
    t_inf = torch.tensor([[1.0, 2.0, float("inf"), 0.0]], requires_grad=True)
    with pytest.raises(ValueError, match="sample 0 .* 1 event"):  # sorted up to the zeros
        check_not_zero_padded(t_inf, torch.zeros(1, 4, dtype=torch.long))


def test_real_nmnist_through_tonic(nmnist_root):
    class NMNIST(tonic.datasets.NMNIST):
        def _check_exists(self):
            return True

    ds = NMNIST(save_to=str(nmnist_root), train=True, transform=ToSpikescan(NMNIST.sensor_size))
    from spikescan.runtime.data import get_dataset
    ours = get_dataset("nmnist", "train", root=nmnist_root, t_max=1e9)
    j = int(ours.idx[0])
    (t, c), y = ds[j]
    t_ref, c_ref, y_ref = ours[0]  # the same layout as spikescan's own loader
    assert y == y_ref and np.array_equal(t, t_ref) and np.array_equal(c, c_ref)
    items = [ds[j], ds[j + 1]]
    assert len(items[0][0][0]) != len(items[1][0][0])
    pad_t, pad_c = pad_collate(items)[:2]
    check_not_zero_padded(pad_t, pad_c)
    tens = [(torch.tensor(np.stack([t, c], 1)), y) for (t, c), y in items]
    zt = PadTensors(batch_first=True)(tens)[0]  # the issue's [t, channel] batch
    with pytest.raises(ValueError, match="zero padding"):
        check_not_zero_padded(zt[..., 0], zt[..., 1])


def test_pad_collate_refuses_malformed_pairs():
    with pytest.raises(ValueError, match="non-integer"):
        pad_collate([(np.array([[1.0, 2.5]]), 0)])
    with pytest.raises(ValueError, match=r"\[k, 2\] array"):
        pad_collate([(np.zeros((3, 3)), 0)])
    with pytest.raises(ValueError, match="sample 0 has 2 times but 1 channels"):
        pad_collate([((np.array([1.0, 2.0]), np.array([0])), 0)])
