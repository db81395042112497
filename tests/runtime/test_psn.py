"""The PSN family (runtime/psn.py) against SpikingJelly's PSN, MaskedPSN and SlidingPSN: same
weights and inputs, equal spikes and gradients in f64; plus binning and layouts."""

import math

import pytest
import torch

from spikescan.runtime import psn

F64 = torch.float64


def _sj():
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        pytest.skip(f"spikingjelly is not installed ({type(e).__name__}); pip install spikingjelly")
    return neuron, surrogate


def _input(T, B=3, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    # counts-like inputs spread so that H lands on both sides of 0 and near it (surrogate peak)
    return (torch.randn(T, B, N, generator=g, dtype=F64) * 1.5 + 0.5).requires_grad_(True)


def _compare(ours, theirs, x, params_ours, params_theirs, pairs):
    """Same forward spikes; gradients of the same loss wrt x and each parameter pair equal."""
    g = torch.Generator().manual_seed(7)
    gy = torch.randn(ours.shape, generator=g, dtype=F64)
    assert torch.equal(ours, theirs)
    assert 0 < ours.sum() < ours.numel()  # both spikes and silence: the test can fail
    go = torch.autograd.grad((ours * gy).sum(), [x] + params_ours)
    gt = torch.autograd.grad((theirs * gy).sum(), [x] + params_theirs)
    torch.testing.assert_close(go[0], gt[0], rtol=1e-12, atol=1e-12)
    for (a, b), conv in zip(zip(go[1:], gt[1:]), pairs):
        torch.testing.assert_close(a, conv(b), rtol=1e-12, atol=1e-12)
    assert go[0].abs().max() > 0


@pytest.mark.parametrize("kind,alpha", [("atan", 2.0), ("sigmoid", 4.0), ("atan", 3.5)])
def test_psn_equals_spikingjelly(kind, alpha):
    neuron, surrogate = _sj()
    T = 8
    sg = surrogate.ATan(alpha=alpha) if kind == "atan" else surrogate.Sigmoid(alpha=alpha)
    ref = neuron.PSN(T, surrogate_function=sg).to(F64)
    with torch.no_grad():
        ref.bias.copy_(torch.linspace(-1.5, 0.5, T, dtype=F64)[:, None])
    w = ref.weight.detach().clone().requires_grad_(True)
    b = ref.bias.detach()[:, 0].clone().requires_grad_(True)
    x = _input(T)
    ours = psn.spike(psn.psn_potential(x, w, b), psn.Surrogate(kind, alpha))
    theirs = ref(x)
    _compare(ours, theirs, x, [w, b], [ref.weight, ref.bias], [lambda t: t, lambda t: t[:, 0]])


@pytest.mark.parametrize("T,k", [(8, 3), (6, 1), (5, 5)])
def test_masked_psn_equals_spikingjelly(T, k):
    neuron, surrogate = _sj()
    ref = neuron.MaskedPSN(k=k, T=T, surrogate_function=surrogate.ATan(), step_mode="m").to(F64)
    ref.lambda_ = 1.0  # the fully masked form (our banded layout holds only the band)
    with torch.no_grad():
        ref.bias.copy_(torch.linspace(-1.0, 0.3, T, dtype=F64)[:, None])
    band = psn.band_from_dense(ref.weight.detach(), k).requires_grad_(True)
    b = ref.bias.detach()[:, 0].clone().requires_grad_(True)
    x = _input(T, seed=1)
    ours = psn.spike(psn.banded_potential(x, band, b), psn.Surrogate())
    theirs = ref(x)
    _compare(ours, theirs, x, [band, b], [ref.weight, ref.bias],
             [lambda t: psn.band_from_dense(t, k), lambda t: t[:, 0]])
    # the dense gradient outside the band is zero in SpikingJelly too, so nothing is lost
    full = torch.autograd.grad((ref(x) * 1.0).sum(), ref.weight)[0]
    assert torch.equal(full, full * ref.mask0)


@pytest.mark.parametrize("T,k", [(9, 4), (3, 5), (7, 1)])
def test_sliding_psn_equals_spikingjelly(T, k):
    neuron, surrogate = _sj()
    ref = neuron.SlidingPSN(k=k, exp_init=False, surrogate_function=surrogate.Sigmoid(), step_mode="m").to(F64)
    with torch.no_grad():
        ref.bias.fill_(-0.4)
    w = ref.weight.detach().clone().requires_grad_(True)
    b = ref.bias.detach().clone().requires_grad_(True)
    x = _input(T, seed=2)
    ours = psn.spike(psn.banded_potential(x, w, b), psn.Surrogate("sigmoid", 4.0))
    theirs = ref(x)
    _compare(ours, theirs, x, [w, b], [ref.weight, ref.bias], [lambda t: t, lambda t: t])


def test_band_layout_round_trip():
    T, k = 6, 3
    band = torch.randn(T, k, dtype=F64)
    band[0, :2] = 0  # before bin 0: not part of the dense form
    band[1, 0] = 0
    dense = psn.dense_from_band(band)
    assert torch.equal(psn.band_from_dense(dense, k), band)
    assert torch.equal(dense, torch.tril(torch.triu(dense, -(k - 1))))
    x = torch.randn(T, 2, 4, dtype=F64)
    torch.testing.assert_close(psn.banded_potential(x, band, torch.zeros(T, dtype=F64)),
                               psn.psn_potential(x, dense, torch.zeros(T, dtype=F64)))


def test_bin_events_counts_exactly():
    times = torch.tensor([[0.0, 0.999, 1.0, 2.5, 4.0, math.inf, 4.5, -1.0]], dtype=F64)
    chans = torch.tensor([[0, 0, 1, 1, 2, 0, 2, 1]])
    c = psn.bin_events(times, chans, 3, T=4, width=1.0)
    assert c.shape == (4, 1, 3)
    want = torch.zeros(4, 1, 3, dtype=F64)
    want[0, 0, 0] = 2  # 0.0, 0.999
    want[1, 0, 1] = 1  # 1.0 opens bin 1
    want[2, 0, 1] = 1
    want[3, 0, 2] = 1  # t = t_end = 4.0 counts in the last bin; 4.5 and -1 are outside the run
    assert torch.equal(c, want)
    assert c.sum() == 5


def test_unknown_surrogate_is_refused():
    with pytest.raises(ValueError, match="unknown surrogate"):
        psn.surrogate_grad(torch.zeros(2), psn.Surrogate("relu", 1.0))
