"""Losses and accuracy against hand computations (plain math, float64)."""

import math

import pytest
import torch

from spikescan.runtime import losses
from spikescan.runtime.losses import LossConfig
from spikescan.runtime.network import NetworkOutput

INF = math.inf


def _ce(logits, label):
    m = max(logits)
    return -(logits[label] - m - math.log(sum(math.exp(z - m) for z in logits)))


def test_first_spike_ce_hand():
    t = torch.tensor([[1.0, 2.0, INF], [3.0, 0.5, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    got = losses.first_spike_ce(t, y, tau=0.5, t_end=5.0)
    want = (_ce([-2.0, -4.0, -10.0], 0) + _ce([-6.0, -1.0, -8.0], 2)) / 2
    assert got.item() == pytest.approx(want, rel=1e-14)


def test_first_spike_ce_regulariser_hand():
    t = torch.tensor([[1.0, 2.0, INF], [3.0, 0.5, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    alpha, beta = 0.1, 7.0
    got = losses.first_spike_ce(t, y, tau=0.5, t_end=5.0, alpha=alpha, beta=beta)
    want = (_ce([-2.0, -4.0, -10.0], 0) + _ce([-6.0, -1.0, -8.0], 2)) / 2
    want += alpha * ((math.exp(1.0 / beta) - 1) + (math.exp(4.0 / beta) - 1)) / 2
    assert got.item() == pytest.approx(want, rel=1e-14)


def test_silent_label_extension_value_and_gradient():
    t = torch.tensor([[INF, 2.0, INF], [INF, 2.0, INF]], dtype=torch.float64)
    vmax = torch.tensor([[0.7, 1.0, 0.2], [0.7, 1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    te = losses.effective_first_spike(t, 10.0, vmax, theta=1.0, slope=4.0, labels=torch.tensor([0, 1]))
    assert te[0, 0].item() == pytest.approx(10.0 + 4.0 * 0.3, rel=1e-14)  # silent label neuron
    assert te[0, 1].item() == 2.0  # spiking neuron keeps its spike time
    assert te[0, 2].item() == 10.0 and te[1, 0].item() == 10.0  # silent non-label neurons: t_end
    te.sum().backward()
    assert vmax.grad[0].tolist() == [pytest.approx(-4.0), 0.0, 0.0]
    assert vmax.grad[1].tolist() == [0.0, 0.0, 0.0]
    # without labels: plain fill
    assert losses.effective_first_spike(t, 10.0, vmax, slope=4.0)[0, 0].item() == 10.0


def test_first_spike_ce_gradcheck():
    t = torch.tensor([[1.3, 2.1, 0.7], [3.0, 0.5, 4.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 0])
    f = lambda x: losses.first_spike_ce(x, y, tau=0.8, t_end=5.0, alpha=0.05, beta=3.0)
    assert torch.autograd.gradcheck(f, (t,))


def test_soft_count_and_regulariser_hand():
    s = torch.tensor([[[1.0, 9.5, INF], [INF, INF, INF]]], dtype=torch.float64)
    sig = lambda z: 1 / (1 + math.exp(-z))
    n = losses.soft_count(s, t_end=10.0, width=0.5)
    assert n[0, 0].item() == pytest.approx(sig(18.0) + sig(1.0), rel=1e-14)
    assert n[0, 1].item() == 0.0
    n0, n1 = n[0, 0].item(), 0.0
    up = losses.count_regulariser(s, t_end=10.0, width=0.5, target=1.0, mode="upper")
    assert up.item() == pytest.approx((max(n0 - 1, 0) ** 2 + 0) / 2, rel=1e-12)
    lo = losses.count_regulariser(s, t_end=10.0, width=0.5, target=1.0, mode="lower")
    assert lo.item() == pytest.approx((max(1 - n0, 0) ** 2 + 1.0) / 2, rel=1e-12)
    both = losses.count_regulariser(s, t_end=10.0, width=0.5, target=1.0, mode="both")
    assert both.item() == pytest.approx(((n0 - 1) ** 2 + (n1 - 1) ** 2) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        losses.count_regulariser(s, t_end=10.0, mode="sideways")


def test_value_ce_hand():
    v = torch.tensor([[0.2, 1.5, -0.3]], dtype=torch.float64)
    got = losses.value_ce(v, torch.tensor([1]), scale=2.0)
    assert got.item() == pytest.approx(_ce([0.4, 3.0, -0.6], 1), rel=1e-14)


def test_predict_first_spike_ties_and_silence_are_wrong():
    t = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 5.0], [INF, INF, INF], [INF, 4.0, INF]], dtype=torch.float64)
    assert losses.predict_first_spike(t).tolist() == [1, -1, -1, 1]
    y = torch.tensor([1, 0, 0, 1])
    assert losses.accuracy("first_spike", t, y) == pytest.approx(0.5)


def test_predict_max_ties():
    v = torch.tensor([[1.0, 3.0, 2.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    assert losses.predict_max(v).tolist() == [1, -1]
    assert losses.accuracy("spike_count", v, torch.tensor([1, 0])) == 0.5


def _out(kind, readout, spikes, vmax=None):
    return NetworkOutput(
        readout=readout, readout_kind=kind, first_spike=None, counts=[], spikes=spikes, events=0,
        overflow=torch.zeros(readout.shape[0], dtype=torch.bool), vmax=vmax,
    )


def test_readout_loss_dispatch_and_hidden_regulariser():
    t = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    hidden = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)  # 3 spikes in one hidden neuron
    out_spikes = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    cfg = LossConfig(tau=1.0, hidden_reg=0.5, hidden_target=1.0, count_width=0.01)
    got = losses.readout_loss(_out("first_spike", t, [hidden, out_spikes]), torch.tensor([0]), cfg, t_end=10.0)
    want = _ce([-1.0, -2.0], 0) + 0.5 * (3.0 - 1.0) ** 2
    assert got.item() == pytest.approx(want, rel=1e-9)
    # spike-count readout: soft counts of the readout layer are the logits
    cfg = LossConfig(value_scale=1.0, count_width=0.01)
    sp = torch.tensor([[[1.0, 2.0], [3.0, INF]]], dtype=torch.float64)
    got = losses.readout_loss(_out("spike_count", torch.tensor([[2.0, 1.0]]), [sp]), torch.tensor([1]), cfg, t_end=10.0)
    assert got.item() == pytest.approx(_ce([2.0, 1.0], 1), rel=1e-9)
