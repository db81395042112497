"""Training sparse recurrent networks (issue 13 item 5; runtime/sparse/autodiff.py, train.py).

- the differentiable loop's spikes equal the O(N) reference loop's (reference.py) bit for bit;
- its gradients (per-synapse and tied weights, initial state, neuron params, readout weights, the
  spike times seen through the readout layer) equal central finite differences in float64 on an
  80-neuron K = 10 network over a short horizon, with the event order asserted unchanged under
  every perturbation (the gradient is that of one smooth branch);
- the example task's loss decreases with a fixed seed.
"""

import numpy as np
import pytest
import torch

from spikescan.runtime.sparse.adjoint import simulate_adjoint
from spikescan.runtime.sparse.autodiff import SpikeBudgetExceeded, default_weights, simulate
from spikescan.runtime.sparse.reference import run_reference
from spikescan.runtime.sparse.train import (SparseSpikeNet, example_model, example_readout, fit_spike_times,
                                            perturbed_teacher, van_rossum)

T = 8.0  # ms: ~100 spikes, short enough that 1e-6 perturbations keep the event order
H = 1e-6


@pytest.fixture(scope="module")
def model():
    return example_model(random_ee=True)  # 80 neurons, K = 10, E->E weights drawn per synapse


def _loss(s):
    # a smooth function of every spike time (its gradient reaches every spike)
    return torch.cos(s.times / 3.0).sum() + 0.1 * (s.times ** 2).sum() / 50.0


def _direction(t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=torch.float64)


def _assert_adjoint_equals_autograd(m, T, ws, x0, times):
    """The hand-written adjoint: same spikes, same weight and x0 gradients as autograd (to rounding)."""
    wa = [w.detach().clone().requires_grad_() for w in ws]
    xa = x0.detach().clone().requires_grad_()
    sa = simulate_adjoint(m, T, wa, xa)
    np.testing.assert_array_equal(sa.times.detach().numpy(), times.detach().numpy())
    _loss(sa).backward()
    for a, b in zip([w.grad for w in wa] + [xa.grad], [w.grad for w in ws] + [x0.grad]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("random_ee", [True, False])
def test_spikes_equal_reference(random_ee):
    m = example_model(random_ee=random_ee, seed=3)
    ref = run_reference(m, T)
    s = simulate(m, T, [w.requires_grad_() for w in default_weights(m)])
    assert len(ref) > 50 and s.times.requires_grad
    np.testing.assert_array_equal(s.neurons, ref.neurons)
    np.testing.assert_array_equal(s.times.detach().numpy(), ref.times)  # bit for bit
    if not random_ee:  # tied (0-d) weights give the same run
        s2 = simulate(m, T, default_weights(m, per_synapse=False))
        np.testing.assert_array_equal(s2.times.numpy(), ref.times)


ONE = """
neuron D {
    params { tau_m = 10 ms  mu = 20.0 }
    state { v = 0.0 }
    dynamics { dv/dt = (mu - v) / tau_m }
    on input(w) { v += w }
    spike when v >= 1.0
    on spike { v = 0.0 }
    refractory 5 ms
}
network one { layer E[2] = D() <- sparse(E, k = 1, init = constant(0.0), seed = 1) }
"""


def test_refractory_past_the_horizon(tmp_path):
    """A neuron still refractory at the horizon does not spike there (its u(t_end) >= theta), and
    one whose refractory period ends inside spikes at its end, with that time's gradient."""
    from spikescan.runtime.sparse.model import SparseModel

    (tmp_path / "one.snn").write_text(ONE)
    m = SparseModel.load(tmp_path / "one.snn")
    t1 = 10.0 * np.log(20.0 / 19.0)  # closed form: v(t) = 20 (1 - exp(-t / 10)) reaches 1
    s = simulate(m, 3.0)
    np.testing.assert_allclose(s.times.numpy(), [t1, t1], rtol=1e-14)
    pr = torch.from_numpy(m.params.copy()).requires_grad_()
    s = simulate(m, 6.0, params=pr)
    np.testing.assert_allclose(s.times.detach().numpy(), [t1, t1, t1 + 5.0, t1 + 5.0], rtol=1e-14)
    assert s.immediate.tolist() == [False, True, True, True]  # the twin fires at the same instant
    s.times[2].backward()  # d(t1 + 5)/d mu = d t1 / d mu = -10 / (mu (mu - 1))
    mu = [p.name for p in m.neuron.params].index("mu")
    assert float(pr.grad[0, mu]) == pytest.approx(-10.0 / (20.0 * 19.0), rel=1e-12)
    # the adjoint through the refractory end: d(t1 + 5)/d v0 = -(dv(t1)/dv0) / v'(t1)
    # = -exp(-t1 / 10) / ((20 - 1) / 10) = -(19 / 20) / 1.9 (neuron 0)
    for run in (simulate_adjoint, simulate):
        x0 = torch.from_numpy(m.x0.copy()).requires_grad_()
        run(m, 6.0, x0=x0).times[2].backward()
        assert float(x0.grad[0, 0]) == pytest.approx(-0.5, rel=1e-12)
        assert float(x0.grad[1, 0]) == 0.0


def test_gradients_match_finite_differences(model):
    ws = [w.requires_grad_() for w in default_weights(model)]
    x0 = torch.from_numpy(model.x0.copy()).requires_grad_()
    pr = torch.from_numpy(model.params.copy()).requires_grad_()
    s = simulate(model, T, ws, x0, pr)
    assert 60 < len(s) and 0 < s.immediate.sum() < len(s)  # both kinds of spike are exercised
    _loss(s).backward()
    key = s.order_key()
    _assert_adjoint_equals_autograd(model, T, ws, x0, s.times)

    def f(ws2=None, x02=None, pr2=None):
        with torch.no_grad():
            s2 = simulate(model, T, ws2 if ws2 is not None else [w.detach() for w in ws],
                          x0.detach() if x02 is None else x02, pr.detach() if pr2 is None else pr2)
        assert s2.order_key() == key, "the perturbation changed the event order: FD invalid"
        return float(_loss(s2))

    # the directional derivative along a random direction of all synapse weights and x0
    vs = [_direction(w, i) for i, w in enumerate(ws)]
    v = _direction(x0, 9)
    fd = (f([w.detach() + H * u for w, u in zip(ws, vs)], x0.detach() + H * v)
          - f([w.detach() - H * u for w, u in zip(ws, vs)], x0.detach() - H * v)) / (2 * H)
    ad = sum(float((w.grad * u).sum()) for w, u in zip(ws, vs)) + float((x0.grad * v).sum())
    assert abs(fd) > 1e-3 and fd == pytest.approx(ad, rel=1e-5)
    # one synapse of the I->E (constant) connection
    for ci, k in [(1, int(torch.argmax(ws[1].grad.abs())))]:
        wp = [w.detach().clone() for w in ws]
        wm = [w.detach().clone() for w in ws]
        wp[ci][k] += H
        wm[ci][k] -= H
        fd = (f(wp) - f(wm)) / (2 * H)
        assert abs(fd) > 1e-3 and fd == pytest.approx(float(ws[ci].grad[k]), rel=1e-5)
    # the drive mu of E and tau_m of I (v_th moves the jump crossings' order: not here)
    names = [p.name for p in model.neuron.params]
    for layer, name in ((0, "mu"), (1, "tau_m")):
        for q in (names.index(name),):
            a, b = pr.detach().clone(), pr.detach().clone()
            a[layer, q] += H
            b[layer, q] -= H
            fd = (f(pr2=a) - f(pr2=b)) / (2 * H)
            assert fd == pytest.approx(float(pr.grad[layer, q]), rel=1e-5, abs=1e-6)


CUBA = """
neuron DrivenCubaLIF {
    params { tau_m = 10 ms  tau_s = 2 ms  mu = 3.0  v_th = 1.0  v_reset = 0.0 }
    state { v = 0.0  i = 0.0 }
    dynamics {
        dv/dt = (mu + i - v) / tau_m
        di/dt = -i / tau_s
    }
    on input(w) { i += w }
    spike when v >= v_th
    on spike { v = v_reset }
    refractory 1 ms
}
network cuba {
    param K = 10
    param J = 1.0
    layer E[48] = DrivenCubaLIF()
        <- sparse(E, k = 8, init = normal(J / sqrt(K), 0.3), seed = 1), sparse(I, k = 2, init = constant(-8 * J / sqrt(K)), seed = 2)
        { init v = uniform(0, 1) }
    layer I[12] = DrivenCubaLIF()
        <- sparse(E, k = 8, init = constant(J / sqrt(K)), seed = 3), sparse(I, k = 2, init = constant(-8 * J / sqrt(K)), seed = 4)
        { init v = uniform(0, 1) }
}
"""


def test_cuba_network_general_solver(tmp_path):
    """Two state variables (the general isolation-chain solver, a reset that keeps i): the same
    spikes as the reference loop, and gradients = finite differences."""
    from spikescan.runtime.sparse.model import SparseModel

    (tmp_path / "cuba.snn").write_text(CUBA)
    m = SparseModel.load(tmp_path / "cuba.snn")
    ws = [w.requires_grad_() for w in default_weights(m)]
    x0 = torch.from_numpy(m.x0.copy()).requires_grad_()
    s = simulate(m, 6.0, ws, x0)
    ref = run_reference(m, 6.0)
    assert len(s) > 30
    np.testing.assert_array_equal(s.neurons, ref.neurons)
    np.testing.assert_array_equal(s.times.detach().numpy(), ref.times)
    _loss(s).backward()
    _assert_adjoint_equals_autograd(m, 6.0, ws, x0, s.times)
    vs = [_direction(w, 40 + i) for i, w in enumerate(ws)]
    vx = _direction(x0, 50)

    def f(h):
        with torch.no_grad():
            s2 = simulate(m, 6.0, [w.detach() + h * v for w, v in zip(ws, vs)], x0.detach() + h * vx)
        assert s2.order_key() == s.order_key()
        return float(_loss(s2))

    fd = (f(H) - f(-H)) / (2 * H)
    ad = sum(float((w.grad * v).sum()) for w, v in zip(ws, vs)) + float((x0.grad * vx).sum())
    assert abs(fd) > 1e-3 and fd == pytest.approx(ad, rel=1e-5)


def test_tied_weight_gradient(model):
    m = example_model(seed=0)  # constant weights: one scalar per connection
    ws = [w.requires_grad_() for w in default_weights(m, per_synapse=False)]
    s = simulate(m, T, ws)
    _loss(s).backward()
    key = s.order_key()
    # the tied gradient is the sum of the per-synapse ones
    wsyn = [w.requires_grad_() for w in default_weights(m)]
    _loss(simulate(m, T, wsyn)).backward()
    for wt, wsy in zip(ws, wsyn):
        assert float(wt.grad) == pytest.approx(float(wsy.grad.sum()), rel=1e-12, abs=1e-12)
    wadj = [w.detach().clone().requires_grad_() for w in ws]
    _loss(simulate_adjoint(m, T, wadj)).backward()
    for wt, wa in zip(ws, wadj):
        assert wa.shape == () and float(wa.grad) == pytest.approx(float(wt.grad), rel=1e-10, abs=1e-12)
    for ci in (0, 3):  # E->E and I->I
        def f(h):
            w2 = [w.detach().clone() for w in ws]
            w2[ci] += h
            with torch.no_grad():
                s2 = simulate(m, T, w2)
            assert s2.order_key() == key
            return float(_loss(s2))
        fd = (f(H) - f(-H)) / (2 * H)
        assert fd == pytest.approx(float(ws[ci].grad), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_readout_pipeline_gradient(model, tied):
    """van Rossum loss of the readout spikes: gradients to readout and recurrent weights (per
    synapse; or tied, one scalar per connection, with x0 and the neuron params learned too)."""
    if tied:
        net = SparseSpikeNet(example_model(seed=0), 2, readout_neuron=example_readout(), readout_init=(0.1, 0.05),
                             seed=5, per_synapse=False, learn=("weights", "readout", "x0", "params"))
        assert all(p.dim() == 0 for p in net.weights) and len(list(net.parameters())) == 7
    else:
        net = SparseSpikeNet(model, 2, readout_neuron=example_readout(), readout_init=(0.1, 0.05), seed=5)
    target = torch.tensor([2.0, 5.5, 7.0], dtype=torch.float64)
    out = net(T)
    assert int(out.counts.min()) >= 1
    loss = van_rossum(out.readout_times(0), target, 5.0) + van_rossum(out.readout_times(1), target[:1], 5.0)
    loss.backward()
    key = out.network.order_key()
    counts = out.counts.tolist()
    params = list(net.parameters())
    vs = [_direction(p, 20 + i) for i, p in enumerate(params)]

    def f(h):
        with torch.no_grad():
            for p, v in zip(params, vs):
                p.add_(h * v)
            o = net(T)
            for p, v in zip(params, vs):
                p.sub_(h * v)
        assert o.network.order_key() == key and o.counts.tolist() == counts
        return float(van_rossum(o.readout_times(0), target, 5.0) + van_rossum(o.readout_times(1), target[:1], 5.0))

    fd = (f(H) - f(-H)) / (2 * H)
    ad = sum(float((p.grad * v).sum()) for p, v in zip(params, vs))
    assert abs(fd) > 1e-3 and fd == pytest.approx(ad, rel=1e-5)
    # the recurrent weights alone (through the readout's input spike times)
    rec = [p.grad for p in net.weights]
    assert sum(float(g.abs().sum()) for g in rec) > 0


def test_van_rossum_closed_form():
    a = torch.tensor([1.0, 4.0], dtype=torch.float64)
    b = torch.tensor([2.0], dtype=torch.float64)
    tau = 3.0
    # midpoint rule for the integral of (f - g)^2 / tau (f, g = filtered trains); the spike
    # times are cell boundaries, so no cell straddles a jump
    dt = 1e-3
    t = (torch.arange(80000, dtype=torch.float64) + 0.5) * dt
    f = sum(torch.where(t >= s, torch.exp(-(t - s) / tau), torch.zeros_like(t)) for s in a)
    g = torch.where(t >= b[0], torch.exp(-(t - b[0]) / tau), torch.zeros_like(t))
    num = float(((f - g) ** 2).sum()) * dt / tau
    assert float(van_rossum(a, b, tau)) == pytest.approx(num, rel=1e-6)
    assert float(van_rossum(a, a, tau)) == 0.0


def _example_task(n_e=32, learn=("weights", "readout")):
    m = example_model(n_e=n_e, n_i=n_e // 4, k=10, seed=0)
    student = SparseSpikeNet(m, 1, readout_neuron=example_readout(), readout_init=(0.1, 0.07), seed=2, learn=learn)
    teacher = perturbed_teacher(student, weight_noise=0.2, readout_noise=0.5, seed=1)
    with torch.no_grad():
        target = teacher(20.0).readout_times(0)
    return student, target


def test_example_task_loss_decreases():
    student, target = _example_task()
    assert len(target) >= 3
    w0 = [w.detach().clone() for w in student.weights]
    hist = fit_spike_times(student, target, 20.0, epochs=3, lr=2e-3, weight_lr=2e-4, tau=5.0)
    assert hist.losses[0] > 0.3
    assert hist.losses[-1] < 0.7 * hist.losses[0]
    assert all(b < a for a, b in zip(hist.losses, hist.losses[1:]))
    assert all(float((w.detach() - w_0).abs().max()) > 0 for w, w_0 in zip(student.weights, w0))  # recurrent ones learn too


@pytest.mark.slow
def test_recurrent_weights_alone_reduce_the_loss():
    """Readout frozen: the loss decreases through the recurrent weights only (the gradient reaches
    them through the readout's input spike times)."""
    student, target = _example_task(learn=("weights",))
    hist = fit_spike_times(student, target, 20.0, epochs=8, lr=1e-3, tau=5.0)
    assert min(hist.losses[1:]) < 0.8 * hist.losses[0]


def test_errors(model):
    with pytest.raises(ValueError, match="one per connection"):
        simulate(model, 1.0, default_weights(model)[:1])
    with pytest.raises(ValueError, match="0-d or"):
        simulate(model, 1.0, [torch.zeros(3, dtype=torch.float64)] * 4)
    with pytest.raises(ValueError, match="per_synapse=True"):
        default_weights(model, per_synapse=False)  # E->E draws random weights per synapse
    with pytest.raises(SpikeBudgetExceeded, match="max_spikes=5"):
        simulate(model, T, max_spikes=5)
    with pytest.raises(ValueError, match="learn"):
        SparseSpikeNet(model, learn=("delays",))
    with pytest.raises(NotImplementedError, match="autograd"):
        SparseSpikeNet(model, learn=("params",), backward="adjoint")
    with pytest.raises(NotImplementedError, match="autodiff"):
        simulate_adjoint(model, 1.0, params=torch.from_numpy(model.params.copy()).requires_grad_())


@pytest.mark.slow
def test_thousand_neurons_reference_and_adjoint():
    """N = 1000 (K = 10): spikes equal the reference loop; adjoint = autograd."""
    m = example_model(n_e=800, n_i=200, k=10, seed=4)
    ref = run_reference(m, 3.0)
    ws = [w.requires_grad_() for w in default_weights(m)]
    x0 = torch.from_numpy(m.x0.copy()).requires_grad_()
    s = simulate(m, 3.0, ws, x0)
    assert len(ref) > 300
    np.testing.assert_array_equal(s.times.detach().numpy(), ref.times)
    np.testing.assert_array_equal(s.neurons, ref.neurons)
    _loss(s).backward()
    _assert_adjoint_equals_autograd(m, 3.0, ws, x0, s.times)
