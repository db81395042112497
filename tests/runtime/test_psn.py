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
    torch.manual_seed(1234)  # SpikingJelly initialises its weights from the global generator
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
        ref.weight.copy_(torch.linspace(0.6, 1.1, k, dtype=F64) * torch.tensor([1.0, -1.0]).repeat(k)[:k])
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


def test_sparse_counts_equal_dense_binning_and_gradients():
    g = torch.Generator().manual_seed(3)
    t = torch.rand(3, 50, generator=g, dtype=F64) * 8
    t[0, -3:] = math.inf
    t[1, :2] = torch.tensor([8.0, 9.0])  # the end of the run (last bin) and after it (dropped)
    t[2, 0] = 2.0  # a bin edge
    c = torch.randint(0, 6, (3, 50), generator=g)
    dense = psn.bin_events(t, c, 6, 4, 2.0)
    sparse = psn.sparse_counts(t, c, 6, 4, 2.0)
    assert torch.equal(sparse.rows.to_dense().view(4, 3, 6), dense)
    assert torch.equal(sparse.cols.to_dense().t().reshape(4, 3, 6), dense)
    w = torch.randn(6, 5, generator=g, dtype=F64, requires_grad=True)
    gy = torch.randn(4, 3, 5, generator=g, dtype=F64)
    a, b = psn.counts_matmul(sparse, w), dense @ w
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(torch.autograd.grad((a * gy).sum(), w)[0], torch.autograd.grad((b * gy).sum(), w)[0],
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("sliding,kind,T,k", [(False, "atan", 7, 3), (True, "sigmoid", 6, 4), (False, "atan", 3, 5),
                                              (True, "atan", 2, 4)])
def test_fused_banded_spikes_equal_the_reference(sliding, kind, T, k):
    """The in-place CPU Function (banded_spikes) against banded_potential + spike (autograd)."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(T, 2, 9, generator=g, dtype=F64) + 0.3).requires_grad_(True)
    w = torch.randn((k,) if sliding else (T, k), generator=g, dtype=F64).requires_grad_(True)
    b = (torch.tensor(-0.2, dtype=F64) if sliding else torch.linspace(-0.5, 0.1, T, dtype=F64)).requires_grad_(True)
    s = psn.Surrogate(kind, psn.SURROGATES[kind])
    ref = psn.spike(psn.banded_potential(x, w, b), s)
    out = psn.banded_spikes(x, w, b, s)
    assert torch.equal(out, ref) and 0 < ref.sum() < ref.numel()
    gy = torch.randn(ref.shape, generator=g, dtype=F64)
    for a, r in zip(torch.autograd.grad((out * gy).sum(), [x, w, b]), torch.autograd.grad((ref * gy).sum(), [x, w, b])):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
