"""Sparse networks with input populations (docs/sparse.md, "Networks with inputs").

- the compiled engine with input events merged into its queue (engine_inputs.py) against the O(N)
  reference loop (same neurons, times to 1e-12 relative), for the closed-form LIF path and the
  general CubaLIF path, with dense and sparse input connections, simultaneous and padded events;
- one neuron driven by input events against its closed form;
- the autodiff loop's spikes equal the reference's; SparseInputNet's gradients (input weights,
  recurrent weights, input times) against central finite differences in float64 on a 50-neuron,
  K = 10 network over a short horizon, the event order asserted unchanged under each perturbation;
- the reference loop's former spurious spike at t_end of a neuron refractory past t_end.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spikescan import dsl
from spikescan.runtime.sparse.autodiff import simulate
from spikescan.runtime.sparse.engine_inputs import run_compiled_inputs
from spikescan.runtime.sparse.model import SparseModel, SparseModelError
from spikescan.runtime.sparse.module import SampleSpikes, SparseInputNet
from spikescan.runtime.sparse.reference import run_reference

from sparse_nets import CUBA, LIF, write

ROOT = Path(__file__).resolve().parents[2]


def _net(neuron_text, n_in=12, n_e=40, n_i=10, k=10, J=0.5, g=4.0, w_in="normal(0.4, 0.2)", extra=""):
    neuron = neuron_text.split("neuron ")[1].split()[0]
    ke, ki = max(1, round(0.8 * k)), max(1, round(0.2 * k))
    return (neuron_text + f"""
network drv {{
    param K = {k}
    param J = {J}
    param g = {g}
    input x[{n_in}]
    layer E[{n_e}] = {neuron}({extra})
        <- dense(x, init = {w_in}),
           sparse(E, k = {ke}, init = normal(J / sqrt(K), 0.1), seed = 1),
           sparse(I, k = {ki}, init = constant(-g * J / sqrt(K)), seed = 2)
        {{ init v = uniform(0, 1) }}
    layer I[{n_i}] = {neuron}({extra})
        <- sparse(x, k = 3, init = uniform(0.2, 0.8), seed = 3),
           sparse(E, k = {ke}, init = constant(J / sqrt(K)), seed = 4)
        {{ init v = uniform(0, 1) }}
}}
""")


def _events(n_in, n, T, seed, batch=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if batch is None else (batch, n)
    t = rng.uniform(0.0, T, shape)
    ch = rng.integers(0, n_in, shape)
    return t, ch


def _same(a, b, tol=1e-12):
    assert len(a) == len(b), (len(a), len(b))
    np.testing.assert_array_equal(np.asarray(a.neurons), np.asarray(b.neurons))
    ta, tb = np.asarray(a.times, dtype=np.float64), np.asarray(b.times, dtype=np.float64)
    err = np.abs(ta - tb)
    assert np.all(err <= tol * np.maximum(1.0, np.abs(tb))), err.max()


@pytest.mark.parametrize("neuron,extra,T,seed", [(LIF, "mu = 0.9", 60.0, 0), (CUBA, "mu = 0.9", 60.0, 1)])
def test_compiled_equals_reference(tmp_path, neuron, extra, T, seed):
    """Sub-threshold drive (mu < v_th): the network fires because of its inputs."""
    m = SparseModel.load(write(tmp_path, _net(neuron, extra=extra)), seed=seed)
    assert m.n_in == 12 and [c.n_synapses for c in m.in_csr] == [12 * 40, 10 * 3]
    t, ch = _events(12, 300, T, seed)
    t[:10] = 7.25  # simultaneous events
    ch[-20:] = -1  # padding
    fast = run_compiled_inputs(m, T, t, ch)
    ref = run_reference(m, T, inputs=(t, ch))
    assert len(ref) > 100 and ref.times[-1] > 0.8 * T
    _same(fast, ref)
    from spikescan.runtime.sparse import run_sparse

    _same(run_sparse(m, duration=T, inputs=(t, ch)), ref)  # the Python entry point
    silent = run_reference(m, T)  # without inputs the sub-threshold network stays silent
    assert len(silent) == 0 and len(run_compiled_inputs(m, T, [], [])) == 0


def test_compiled_chunks_resume(tmp_path):
    """A spike cap smaller than the run: the engine resumes (cnt, icnt) exactly."""
    m = SparseModel.load(write(tmp_path, _net(LIF, extra="mu = 0.9")), seed=0)
    t, ch = _events(12, 300, 60.0, 0)
    one = run_compiled_inputs(m, 60.0, t, ch)
    many = run_compiled_inputs(m, 60.0, t, ch, chunk=7)
    np.testing.assert_array_equal(one.times, many.times)
    np.testing.assert_array_equal(one.neurons, many.neurons)


TWO_PORTS_INPUTS = """
neuron PortLIF {
    params { tau_m = 10 ms  tau_i = 5 ms  mu = 0.9  v_th = 1.0  v_reset = 0.0 }
    state { v = 0.0  g = 0.0 }
    dynamics { dv/dt = (mu - g - v) / tau_m
               dg/dt = -g / tau_i }
    on input_exc(w) { v += w }
    on input_inh(w) { g += w }
    spike when v >= v_th
    on spike { v = v_reset }
    refractory 1 ms
}
network two {
    input x[8]
    input y[4]
    layer E[30] = PortLIF(tau_m = 12 ms)
        <- dense(x, init = uniform(0.1, 0.5), port = input_exc),
           sparse(y, k = 2, init = constant(1.5), seed = 7, port = input_inh),
           sparse(E, k = 6, init = uniform(0.0, 0.2), seed = 1, port = input_exc)
        { init v = uniform(0, 1) }
    layer I[10] = PortLIF(tau_m = 7 ms)
        <- sparse(x, k = 3, init = constant(0.4), seed = 3, port = input_exc),
           sparse(E, k = 6, init = constant(0.1), seed = 4, port = input_exc)
}
"""


def test_two_input_populations_ports_and_layer_params(tmp_path):
    """Two input populations (channels 0-7 and 8-11), inputs on both ports, per-layer params."""
    m = SparseModel.load(write(tmp_path, TWO_PORTS_INPUTS), seed=1)
    assert m.inputs == ["x", "y"] and list(m.in_offsets) == [0, 8, 12]
    t, ch = _events(12, 250, 50.0, 9)
    fast = run_compiled_inputs(m, 50.0, t, ch)
    ref = run_reference(m, 50.0, inputs=(t, ch))
    assert len(ref) > 50
    _same(fast, ref)
    no_inh = run_reference(m, 50.0, inputs=(t[ch < 8], ch[ch < 8]))
    assert len(no_inh) > len(ref)  # the y channels inhibit (port input_inh)


ONE_LIF = LIF.replace("mu = 4.0", "mu = 1.2").replace("refractory 2 ms", "refractory 0 ms") + """
network one {
    input x[2]
    layer E[1] = DrivenLIF() <- dense(x, init = constant(0.3)), sparse(E, k = 1, init = constant(0.0))
}
"""


def test_one_neuron_closed_form(tmp_path):
    """v(t) = mu (1 - e^{-t/tau}) until the input at t = 5 (v += 0.3), then it relaxes to mu and
    crosses 1 at t = 5 + tau log((mu - v5) / (mu - 1)); reset to 0, next at + tau log(mu / (mu - 1))."""
    m = SparseModel.load(write(tmp_path, ONE_LIF))
    mu, tau = 1.2, 10.0
    v5 = mu * (1 - math.exp(-0.5)) + 0.3
    t1 = 5.0 + tau * math.log((mu - v5) / (mu - 1.0))
    t2 = t1 + tau * math.log(mu / (mu - 1.0))
    want = [t1, t2]
    for train in (run_reference(m, 40.0, inputs=([5.0, 50.0], [1, 0])),
                  run_compiled_inputs(m, 40.0, [5.0, 50.0], [1, 0])):
        np.testing.assert_allclose(train.times, want, rtol=1e-13)
    # an input that lifts v over threshold: a spike at the input's time
    for train in (run_reference(m, 4.0, inputs=([2.0, 2.0, 2.0], [0, 1, 0])),
                  run_compiled_inputs(m, 4.0, [2.0, 2.0, 2.0], [0, 1, 0])):
        v2 = mu * (1 - math.exp(-0.2))
        assert v2 + 0.6 < 1.0 <= v2 + 0.9
        np.testing.assert_array_equal(train.times, [2.0])


REFRACTORY = """
neuron Fast {
    params { tau_m = 10 ms  mu = 20.0  v_th = 1.0  v_reset = 0.0 }
    state { v = 0.0 }
    dynamics { dv/dt = (mu - v) / tau_m }
    on input(w) { v += w }
    spike when v >= v_th
    on spike { v = v_reset }
    refractory 5 ms
}
network r { layer E[2] = Fast() <- sparse(E, k = 1, init = constant(0.0), seed = 1) }
"""


def test_reference_no_spike_at_the_horizon_while_refractory(tmp_path):
    """Both neurons spike at t1 and stay refractory until t1 + 5 > 3 ms = t_end with v(t_end) >=
    theta: no spike at t_end (the reference loop used to record one; the compiled engine never did)."""
    from spikescan.runtime.sparse import run_sparse

    m = SparseModel.load(write(tmp_path, REFRACTORY))
    t1 = 10.0 * math.log(20.0 / 19.0)
    ref = run_reference(m, 3.0)
    fast = run_sparse(m, duration=3.0)
    np.testing.assert_allclose(ref.times, [t1, t1], rtol=1e-14)
    _same(fast, ref)


def test_autodiff_spikes_equal_reference(tmp_path):
    m = SparseModel.load(write(tmp_path, _net(CUBA, extra="mu = 0.9")), seed=2)
    t, ch = _events(12, 150, 30.0, 3)
    s = simulate(m, 30.0, inputs=(torch.from_numpy(t), ch))
    ref = run_reference(m, 30.0, inputs=(t, ch))
    assert len(ref) > 30
    np.testing.assert_array_equal(s.neurons, ref.neurons)
    np.testing.assert_array_equal(s.times.detach().numpy(), ref.times)


# ------------------------------------------------------------------ the nn.Module and its gradients
GRAD_T = 10.0


@pytest.fixture(scope="module")
def grad_net(tmp_path_factory):
    p = write(tmp_path_factory.mktemp("grad"), _net(CUBA, extra="mu = 0.9", n_e=40, n_i=10, k=10))
    return SparseInputNet(p, seed=4, duration=GRAD_T)


def _loss(out):
    return sum(torch.cos(o.times / 3.0).sum() + 0.01 * (o.times ** 2).sum() for o in out)


def test_module_gradients_match_finite_differences(grad_net):
    net = grad_net
    t, ch = _events(12, 60, GRAD_T, 5, batch=2)
    times = torch.from_numpy(t).requires_grad_()
    chans = torch.from_numpy(ch)
    out = net(times, chans)
    assert all(len(o) > 15 for o in out) and all(o.times.requires_grad for o in out)
    keys = [o.neurons.tolist() for o in out]
    for p in net.parameters():
        p.grad = None
    _loss(out).backward()
    tensors = list(net.in_weights) + [net.weights[0]] + [times]
    grads = [p.grad.clone() for p in tensors]
    h = 1e-6
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p, g in zip(tensors, grads):
            assert g.abs().sum() > 0
            d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            vals = []
            for sgn in (1.0, -1.0):
                p.add_(sgn * h * d)
                with torch.enable_grad():  # the same engine as the gradient run (autodiff)
                    o = net(times.detach(), chans)
                p.sub_(sgn * h * d)
                assert [x.neurons.tolist() for x in o] == keys  # no event-order change
                vals.append(float(_loss(o)))
            fd = (vals[0] - vals[1]) / (2 * h)
            an = float((g * d).sum())
            assert an == pytest.approx(fd, rel=1e-5, abs=1e-7 * max(1.0, abs(fd)))


def test_module_no_grad_runs_the_compiled_engine(grad_net):
    net = grad_net
    t, ch = _events(12, 60, GRAD_T, 6, batch=2)
    with torch.no_grad():
        fast = net(torch.from_numpy(t), torch.from_numpy(ch))
    slow = net(torch.from_numpy(t), torch.from_numpy(ch))  # parameters require grad: autodiff
    for a, b in zip(fast, slow):
        assert not a.times.requires_grad and b.times.requires_grad
        _same(a, type(b)(b.times.detach(), b.neurons))
    fs, cnt = net.first_spike(slow, "E"), net.spike_count(fast, "I")
    assert fs.shape == (2, 40) and cnt.shape == (2, 10)
    for b in range(2):
        ne = slow[b].neurons.numpy()
        assert cnt[b].sum() == np.sum(ne >= 40)
        j = int(ne[ne < 40][0])
        assert fs[b, j].item() == slow[b].times[np.nonzero(ne == j)[0][0]].item()
    # trained layer-to-layer weights: the compiled engine refuses them until committed
    with torch.no_grad():
        net.weights[1].mul_(1.0)  # unchanged values are fine
        net(torch.from_numpy(t), torch.from_numpy(ch))


def test_module_errors(tmp_path, grad_net):
    with pytest.raises(ValueError, match="out of range"):
        with torch.no_grad():
            grad_net(torch.tensor([[1.0]]), torch.tensor([[12]]))
    with pytest.raises(ValueError, match="\\[B, n\\]"):
        grad_net(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long))
    p = write(tmp_path, _net(LIF, extra="mu = 0.9"), "other.snn")
    net = SparseInputNet(p)
    with torch.no_grad():
        net.weights[0].add_(0.1)
        with pytest.raises(NotImplementedError, match="autodiff"):
            net(torch.tensor([[1.0]]), torch.tensor([[0]]))
        net.commit_weights()
        a = net(*map(torch.from_numpy, _events(12, 80, 30.0, 1)), duration=30.0)
    b = SparseInputNet(net.model, engine="reference")
    with torch.no_grad():
        _same(a[0], b(*map(torch.from_numpy, _events(12, 80, 30.0, 1)), duration=30.0)[0])
    from spikescan.runtime.sparse.autodiff import SpikeBudgetExceeded
    from spikescan.runtime.sparse.train import example_model

    t, ch = map(torch.from_numpy, _events(12, 80, 30.0, 1))
    n = len(a[0])
    for engine in ("compiled", "reference", "autodiff"):
        few = SparseInputNet(net.model, engine=engine, max_spikes=n - 1, duration=30.0)
        with pytest.raises(SpikeBudgetExceeded):
            few(t, ch)
        assert len(SparseInputNet(net.model, engine=engine, max_spikes=n, duration=30.0)(t, ch)[0]) == n

    with pytest.raises(SparseModelError, match="no input population"):
        SparseInputNet(example_model())


def test_example_model_and_spiking_network_refusal():
    from spikescan.compiler.driver import load_model
    from spikescan.runtime.network import SpikingNetwork

    path = ROOT / "models" / "sparse_input.snn"
    _, diags = dsl.check_source(path.read_text(), str(path))
    assert diags == []
    with pytest.raises(ValueError, match="SparseInputNet"):
        SpikingNetwork(load_model(path))
    net = SparseInputNet(path, duration=20.0)
    t, ch = _events(net.n_in, 200, 20.0, 0, batch=1)
    with torch.no_grad():
        fast = net(torch.from_numpy(t), torch.from_numpy(ch))[0]
    ref = run_reference(net.model, 20.0, inputs=(t[0], ch[0]))
    assert len(ref) > 20
    _same(fast, ref)


def test_python_training_of_input_weights(tmp_path):
    """The Python route of training (spikescan train refuses sparse networks): Adam on the input
    weights moves the first spikes of layer E earlier; the compiled engine (which reads the input
    weights from the module) then agrees with the autodiff loop on the trained weights."""
    net = SparseInputNet(write(tmp_path, _net(CUBA, extra="mu = 0.9", n_e=20, n_i=5, k=5)), seed=1, duration=8.0)
    t, ch = (torch.from_numpy(a) for a in _events(12, 40, 8.0, 2, batch=1))
    first = net.first_spike(net(t, ch), "E")[0]
    fired = torch.isfinite(first)
    assert fired.sum() >= 5
    opt = torch.optim.Adam(list(net.in_weights), lr=0.02)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = net.first_spike(net(t, ch), "E")[0][fired].mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    with torch.no_grad():
        fast = net(t, ch)[0]  # input weights are read from the module: no commit needed
    slow = net(t, ch)[0]
    _same(fast, SampleSpikes(slow.times.detach(), slow.neurons))
