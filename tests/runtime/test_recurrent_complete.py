"""Recurrent connections, complete (issue 12 item 3): delays on recurrent connections, feedback
from a later layer and several recurrent connections per layer, on the group loop
(runtime/engines/recurrent_group.py) and through SpikingNetwork (runtime/recurrent_net.py).

- spike times against an independent mpmath event loop (tests/recgroup_ref.py) for a group of a
  CubaLIF and a LIF layer with delayed self- and feedback couplings;
- the zero-delay single self-connection: the group loop gives the plain recurrent engine's spike
  trains bit for bit (several neuron types, refractory period, observe, the cap);
- two self-connections on two ports equal one connection with the net weight;
- gradients (weights, recurrent weights, delays, input times, tau_m) against central finite
  differences in float64;
- the network: plan and run order, parameters, engine `sequential-cpu` hands groups to the same
  exact loop, valid .snn files (models/shd_delays.snn) check clean."""

import math
import textwrap

import mpmath as mp
import numpy as np
import pytest
import torch

import recgroup_ref
import spikescan.dsl as dsl
from spikescan.compiler.driver import load_model
from spikescan.runtime import recurrent_net
from spikescan.runtime.engines.recurrent import run_recurrent_layer
from spikescan.runtime.engines.recurrent_group import Coupling, GroupLayer, run_recurrent_group
from spikescan.runtime.network import SpikingNetwork
from repo_paths import repo

F64 = torch.float64
INF = math.inf
CUBA = {"tau_m": 10.0, "tau_s": 5.0}
LIFP = {"tau_m": 8.0}


@pytest.fixture(scope="module")
def neurons():
    return (load_model(repo("models/cuba_lif.snn")).neurons["CubaLIF"],
            load_model(repo("models/lif.snn")).neurons["LIF"])


def _fin(t):
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


# A: 3 CubaLIF <- dense(x[3]), recurrent(A, delays), recurrent(B, delays);  B: 2 LIF <- dense(A)
X_T = [1.0, 2.5, 4.0, 9.0, 14.0, 21.0]
X_C = [0, 1, 2, 0, 1, 2]
W_X = [[2.4, 0.9, 1.6], [1.2, 2.2, 0.4], [0.8, 1.1, 2.6]]
W_AA = [[0.0, 0.72, -0.48], [0.54, 0.0, 0.6], [-0.3, 0.66, 0.18]]
D_AA = [[0.3, 1.5, 0.7], [2.2, 0.4, 3.1], [1.3, 0.6, 2.6]]
W_BA = [[0.9, -0.6, 0.48], [0.36, 0.78, -0.42]]
D_BA = [[0.9, 2.7, 1.8], [3.4, 0.2, 1.1]]
W_AB = [[0.7, 0.4], [0.5, 0.9], [0.6, 0.3]]
T_END = 60.0


def _group(neurons, W_x, W_aa, D_aa, W_ba, D_ba, W_ab, times, tau_a=10.0):
    cuba, lif = neurons
    ch = torch.tensor([X_C])
    layers = [GroupLayer(cuba, {"tau_m": tau_a, "tau_s": 5.0}, 3, times, ch, W_x),
              GroupLayer(lif, LIFP, 2)]
    couplings = [Coupling(0, 0, W_aa, D_aa), Coupling(1, 0, W_ba, D_ba), Coupling(0, 1, W_ab)]
    return run_recurrent_group(layers, couplings, t_end=T_END, max_spikes=16)


def _base():
    t = lambda v: torch.tensor(v, dtype=F64)
    return dict(W_x=t(W_X), W_aa=t(W_AA), D_aa=t(D_AA), W_ba=t(W_BA), D_ba=t(D_BA), W_ab=t(W_AB), times=t([X_T]))


def test_group_with_delays_and_feedback_matches_mpmath(neurons):
    got = _group(neurons, **_base())
    layers = [recgroup_ref.Layer("CubaLIF", 3, 10.0, 5.0), recgroup_ref.Layer("LIF", 2, 8.0)]
    ext = [[(t, W_X[c]) for t, c in zip(X_T, X_C)], []]
    zeros = [[0.0] * 2 for _ in range(3)]
    ref = recgroup_ref.simulate(layers, ext, [(0, 0, W_AA, D_AA), (1, 0, W_BA, D_BA), (0, 1, W_AB, zeros)], T_END)
    for res, r in zip(got, ref):
        assert res.counts[0].tolist() == [len(s) for s in r]
        for k, s in enumerate(r):
            assert max((abs(float(res.times[0, k, m]) - float(s[m])) for m in range(len(s))), default=0.0) <= 1e-10
    assert sum(len(s) for s in ref[0]) >= 6 and sum(len(s) for s in ref[1]) >= 2
    # the delays matter: the same couplings without delays give other spike trains
    b = _base()
    nodelay = _group(neurons, **{**b, "D_aa": None, "D_ba": None})
    assert not all(torch.equal(x.counts, y.counts) and torch.equal(x.times, y.times) for x, y in zip(got, nodelay))


@pytest.mark.parametrize("model,name,observe,max_spikes,refractory", [
    ("models/cuba_lif.snn", "CubaLIF", None, 64, False),
    ("models/cuba_lif.snn", "CubaLIF", "max_potential", 64, False),
    ("models/cuba_lif.snn", "CubaLIF", None, 3, False),
    ("models/cuba_lif.snn", "CubaLIF", None, 64, True),
    ("models/adaptive_lif.snn", "AdaptiveLIF", None, 64, False),
    ("models/alpha_lif.snn", "AlphaLIF", None, 64, False),
])
def test_zero_delay_self_connection_equals_plain_loop_bit_for_bit(tmp_path, model, name, observe, max_spikes,
                                                                  refractory):
    src = open(repo(model)).read()
    if refractory:
        src = src.replace("refractory 0 ms", "refractory 2 ms")
    path = tmp_path / "n.snn"
    path.write_text(src)
    ir = load_model(str(path)).neurons[name]
    g = torch.Generator().manual_seed(5)
    B, C, N = 3, 5, 4
    times = torch.rand(B, 18, generator=g, dtype=F64) * 30
    times[1, -4:] = INF
    times[2, 3] = times[2, 4]  # an equal-time pair of inputs
    ch = torch.randint(0, C, (B, 18), generator=g)
    W = torch.randn(C, N, generator=g, dtype=F64) * 0.8 + 0.7
    Wr = torch.randn(N, N, generator=g, dtype=F64) * 0.6
    params = CUBA if name == "CubaLIF" else None
    kw = dict(observe=observe, t_end=55.0 if observe else None, max_spikes=max_spikes, on_overflow="flag")
    ref = run_recurrent_layer(ir, params, times, ch, W, Wr, **kw)
    t_end = kw.pop("t_end")
    got = run_recurrent_group([GroupLayer(ir, params, N, times, ch, W, observe=kw.pop("observe"))],
                              [Coupling(0, 0, Wr)], t_end=t_end, **kw)[0]
    assert int(ref.counts.sum()) >= 6
    assert bool(ref.overflow.any()) == (max_spikes == 3)  # the cap case really hits the cap
    assert torch.equal(ref.counts, got.counts) and torch.equal(ref.overflow, got.overflow)
    assert torch.equal(ref.times, got.times)
    if observe:
        assert torch.equal(ref.observed, got.observed)


EI = """
neuron CubaEI {
    params { tau_m = 10 ms   tau_s = 5 ms   v_th = 1.0   v_reset = 0.0 }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }
    on exc(w) { i += w }
    on inh(w) { i -= w }
    spike when v >= v_th
    on spike { v = v_reset }
}
"""


def test_two_self_connections_on_two_ports_equal_the_net_weight(tmp_path):
    path = tmp_path / "ei.snn"
    path.write_text(EI)
    ir = load_model(str(path)).neurons["CubaEI"]
    g = torch.Generator().manual_seed(2)
    B, C, N = 2, 4, 4
    times = torch.rand(B, 14, generator=g, dtype=F64) * 30
    ch = torch.randint(0, C, (B, 14), generator=g)
    W = torch.rand(C, N, generator=g, dtype=F64) * 1.5 + 0.3
    We = torch.rand(N, N, generator=g, dtype=F64) * 0.8
    Wi = torch.rand(N, N, generator=g, dtype=F64) * 0.6
    D = torch.rand(N, N, generator=g, dtype=F64) * 3.0
    lay = [GroupLayer(ir, None, N, times, ch, W, port="exc")]
    two = run_recurrent_group(lay, [Coupling(0, 0, We, D, "exc"), Coupling(0, 0, Wi, D, "inh")], t_end=50.0)[0]
    one = run_recurrent_group(lay, [Coupling(0, 0, We - Wi, D, "exc")], t_end=50.0)[0]
    exc_only = run_recurrent_group(lay, [Coupling(0, 0, We, D, "exc")], t_end=50.0)[0]
    assert int(two.counts.sum()) > 10
    assert torch.equal(two.counts, one.counts)
    assert (_fin(two.times) - _fin(one.times)).abs().max() <= 1e-9
    assert not torch.equal(two.counts, exc_only.counts)  # the inhibitory port really acts


@pytest.mark.parametrize("per_tensor", [1, pytest.param(1000, marks=pytest.mark.slow)])
def test_gradients_match_finite_differences(neurons, per_tensor):
    base = _base()
    base["tau_a"] = torch.tensor([10.0, 9.0, 11.0], dtype=F64)

    def loss(v):
        res = _group(neurons, **v)
        total = 0
        for k, r in enumerate(res):
            wts = torch.arange(1, r.times.shape[2] + 1, dtype=F64) * (k + 1)
            total = total + (_fin(r.times) * wts).sum()
        return total, [r.counts for r in res]

    leaf = {k: v.clone().requires_grad_() for k, v in base.items()}
    L0, c0 = loss(leaf)
    assert sum(int(c.sum()) for c in c0) >= 8
    L0.backward()
    g = np.random.default_rng(0)
    eps = 1e-6
    checked = {}
    for name, b0 in base.items():
        idxs = list(np.ndindex(*b0.shape))
        for i in g.permutation(len(idxs))[:per_tensor]:
            idx = idxs[i]
            p, m = b0.clone(), b0.clone()
            p[idx] += eps
            m[idx] -= eps
            Lp, cp = loss({**base, name: p})
            Lm, cm = loss({**base, name: m})
            if not all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(c0, cp, cm)):
                continue  # a spike appeared or vanished: the loss jumps there
            fd = float(Lp - Lm) / (2 * eps)
            an = float(leaf[name].grad[idx])
            assert abs(fd - an) <= 1e-5 * max(1.0, abs(fd)), (name, idx, fd, an)
            checked[name] = checked.get(name, 0) + 1
    assert set(checked) == set(base), checked  # every kind of parameter got checked
    assert float(leaf["D_aa"].grad.abs().sum()) > 0 and float(leaf["D_ba"].grad.abs().sum()) > 0


# ---------------------------------------------------------------- the network

NET = """
from "cuba_lif.snn" import CubaLIF
from "lif.snn" import LIF

network fb {
    input  x[3]
    layer  h1[4] = CubaLIF(tau_m = 10 ms)
               <- dense(x, init = normal(1.6, 0.4)),
                  recurrent(h1, init = normal(0.0, 0.5), delays = learnable(max = 4 ms, init = 2 ms)),
                  recurrent(h2, init = normal(0.3, 0.5), delays = fixed(1.5 ms))
    layer  side[2] = CubaLIF() <- dense(x, init = normal(1.5, 0.3))
    layer  h2[3] = LIF(tau_m = 8 ms) <- dense(h1, init = normal(0.6, 0.2)), dense(side, init = normal(0.5, 0.1))
    layer  out[2] = CubaLIF() <- dense(h2, init = normal(1.0, 0.2))
    readout out: first_spike
}
"""


def _write_net(tmp_path):
    for f in ("cuba_lif.snn", "lif.snn"):
        (tmp_path / f).write_text(open(repo("models/" + f)).read())
    path = tmp_path / "fb.snn"
    path.write_text(textwrap.dedent(NET))
    return path


def _net(tmp_path, **kw):
    return SpikingNetwork.from_file(_write_net(tmp_path), **kw)


def test_network_with_feedback_runs_the_group_jointly(tmp_path):
    net = _net(tmp_path, engine="torch-sequential", on_overflow="flag")
    assert net.rec_plan.order == ["side", ("h1", "h2"), "out"]
    assert net.run_order() == ["side", "h1", "h2", "out"]
    h1, h2 = net.layers["h1"], net.layers["h2"]
    assert tuple(h1.w_rec.shape) == (4, 4) and tuple(h1.w_rec_1.shape) == (3, 4)
    assert h1.d_rec_0.requires_grad and not h1.d_rec_1.requires_grad
    assert bool((h1.d_rec_0 == 2.0).all()) and bool((h1.d_rec_1 == 1.5).all())
    g = torch.Generator().manual_seed(0)
    times = torch.rand(2, 8, generator=g, dtype=F64) * 15
    ch = torch.randint(0, 3, (2, 8), generator=g)
    out = net(times, ch, t_end=50.0)
    assert out.layer_names == ["h1", "side", "h2", "out"]  # declaration order
    assert int(out.counts[0].sum()) > 0 and int(out.counts[2].sum()) > 0
    # the same group called directly: couplings in the documented order
    side = out.spikes[1]
    from spikescan.runtime.network import flatten_spikes

    st, sc = flatten_spikes(side, out.counts[1])
    n1, n2 = net.neurons["CubaLIF"], net.neurons["LIF"]
    direct = run_recurrent_group(
        [GroupLayer(n1, h1.params(), 4, times, ch, h1.weights[0]),
         GroupLayer(n2, h2.params(), 3, st, sc, h2.weights[1])],
        [Coupling(0, 0, h1.w_rec, h1.d_rec_0), Coupling(1, 0, h1.w_rec_1, h1.d_rec_1),
         Coupling(0, 1, h2.weights[0])], t_end=50.0, on_overflow="flag")
    for k, r in zip((0, 2), direct):
        assert torch.equal(r.counts, out.counts[k])
        assert torch.equal(r.times[:, :, :out.spikes[k].shape[2]], out.spikes[k])
    loss = sum(_fin(s).sum() for s in out.spikes)
    loss.backward()
    # (h2 is a LIF layer: its spikes sit at input times, so its own weights get zero gradient)
    for p in (h1.w_rec, h1.w_rec_1, h1.d_rec_0, h1.weights[0], net.layers["out"].weights[0]):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert h2.weights[0].grad is not None and h1.d_rec_1.grad is None  # fixed delays: no gradient
    with pytest.raises(NotImplementedError, match="recurrent group"):
        net.run_layer(h1, times, ch, engine=None)
    with pytest.raises(NotImplementedError, match="explicit init"):  # what auto_init would ask for
        net.layer_input(h2, times, ch, {})
    # engine sequential-cpu runs `side` and `out` compiled and hands the group to the same exact loop
    out_cpu = _net(tmp_path, engine="sequential-cpu", on_overflow="flag")(times, ch, t_end=50.0)
    for a, b, ca, cb in zip(out.spikes, out_cpu.spikes, out.counts, out_cpu.counts):
        assert torch.equal(ca, cb) and (_fin(a) - _fin(b)).abs().max() <= 1e-10
    # learnable recurrent delays are clamped like feed-forward ones
    with torch.no_grad():
        h1.d_rec_0[0, 0] = 9.0
    net.clamp_()
    assert h1.d_rec_0[0, 0].item() == 4.0


def test_plan_runs_a_group_after_its_outside_inputs():
    # a <- recurrent(c), b <- dense(a) with a plain self-connection, c <- dense(a): b needs a,
    # which runs with c (declared after b)
    from spikescan.compiler.ir import ConnectionIR, InitSpec, LayerIR, NetworkIR, ReadoutIR

    def conn(kind, src):
        return ConnectionIR(kind, src, "input", None, InitSpec("default"))

    layers = [LayerIR("a", 2, "N", {}, (conn("dense", "x"), conn("recurrent", "c"))),
              LayerIR("b", 2, "N", {}, (conn("dense", "a"), conn("recurrent", "b"))),
              LayerIR("c", 2, "N", {}, (conn("dense", "a"),)),
              LayerIR("o", 2, "N", {}, (conn("dense", "b"), conn("dense", "c")))]
    p = recurrent_net.plan(NetworkIR("n", {"x": 2}, layers, ReadoutIR("o", "first_spike", {})))
    assert p.order == [("a", "c"), "b", "o"] and p.group_of == {"a": ("a", "c"), "c": ("a", "c")}
    bad = [LayerIR("a", 2, "N", {}, (conn("dense", "x"),)),
           LayerIR("b", 2, "N", {}, (conn("dense", "x"), conn("recurrent", "a")))]
    with pytest.raises(ValueError, match="closes no cycle"):
        recurrent_net.plan(NetworkIR("n", {"x": 2}, bad, ReadoutIR("b", "first_spike", {})))


def test_valid_files_check_clean(tmp_path):
    for p in (_write_net(tmp_path), repo("models/shd_delays.snn")):
        _, diags = dsl.check_file(p)
        assert not diags, diags
    net = SpikingNetwork.from_file(repo("models/shd_delays.snn"))
    assert net.rec_plan.order == [("hidden1",), ("hidden2",), "out"]
    for name in ("hidden1", "hidden2"):
        lay = net.layers[name]
        assert lay.d_rec_0.requires_grad and float(lay.d_rec_0.detach().max()) <= 5.0


def test_group_refuses_bad_arguments(neurons):
    cuba, _ = neurons
    t = torch.tensor([[1.0]], dtype=F64)
    c = torch.tensor([[0]])
    w = torch.ones(1, 2, dtype=F64)
    lay = [GroupLayer(cuba, CUBA, 2, t, c, w)]
    with pytest.raises(ValueError, match="delays must be finite and >= 0"):
        run_recurrent_group(lay, [Coupling(0, 0, torch.zeros(2, 2, dtype=F64), -torch.ones(2, 2, dtype=F64))])
    with pytest.raises(ValueError, match="weight must be"):
        run_recurrent_group(lay, [Coupling(0, 0, torch.zeros(3, 2, dtype=F64))])
    with pytest.raises(ValueError, match="outside the group"):
        run_recurrent_group([GroupLayer(cuba, CUBA, 2)], [Coupling(0, 0, torch.zeros(2, 2, dtype=F64))])


def test_nir_export_refuses_recurrent_groups():
    pytest.importorskip("nir")
    from spikescan.runtime.nir_io.export import NirError, network_graph

    net = SpikingNetwork.from_file(repo("models/shd_delays.snn"))
    with pytest.raises(NirError, match="layer 'hidden1'"):  # per-synapse recurrent delays: no exact NIR form
        network_graph(net)


def test_lookahead_gives_the_step_by_step_spike_trains(neurons, monkeypatch):
    """Lanes ahead within their smallest incoming delay (LOOKAHEAD) vs one due time per step."""
    from spikescan.runtime.engines import recurrent_group as rg

    cuba, _ = neurons
    g = torch.Generator().manual_seed(4)
    B, C, N = 2, 5, 5
    times = torch.rand(B, 20, generator=g, dtype=F64) * 30
    ch = torch.randint(0, C, (B, 20), generator=g)
    W = torch.rand(C, N, generator=g, dtype=F64) * 1.6 + 0.2
    Wr = torch.randn(N, N, generator=g, dtype=F64) * 0.5
    D = torch.rand(N, N, generator=g, dtype=F64) * 2.0 + 0.5

    def run():
        leaf = [v.clone().requires_grad_() for v in (times, W, Wr, D)]
        r = run_recurrent_group([GroupLayer(cuba, CUBA, N, leaf[0], ch, leaf[1])], [Coupling(0, 0, leaf[2], leaf[3])],
                                t_end=60.0, max_spikes=32)[0]
        (_fin(r.times) * torch.arange(1, r.times.shape[2] + 1, dtype=F64)).sum().backward()
        return r, [v.grad for v in leaf]

    fast, gf = run()
    monkeypatch.setattr(rg, "LOOKAHEAD", False)
    slow, gs = run()
    assert int(fast.counts.sum()) > 20
    assert torch.equal(fast.counts, slow.counts)
    assert (_fin(fast.times) - _fin(slow.times)).abs().max() <= 1e-12
    for a, b in zip(gf, gs):
        assert (a - b).abs().max() <= 1e-9 * max(1.0, float(b.abs().max()))


EI_NET = EI + """
network ei {
    input  x[4]
    layer  h[5] = CubaEI()
               <- dense(x, port = exc, init = uniform(0.8, 1.8)),
                  dense(x, port = inh, init = uniform(0.0, 0.5)),
                  recurrent(h, port = exc, init = uniform(0.0, 0.6), delays = fixed(1 ms)),
                  recurrent(h, port = inh, init = uniform(0.0, 0.4))
    layer  out[2] = CubaEI() <- dense(h, init = normal(1.0, 0.2))
    readout out: first_spike
}
"""


def test_network_layer_with_two_input_ports_and_two_recurrent_ports(tmp_path):
    """External events on two ports (a PortMap) and recurrent connections on two ports."""
    from spikescan.runtime.engines import torch_sequential
    from spikescan.runtime.engines.ports import PortMap

    path = tmp_path / "ei.snn"
    path.write_text(EI_NET)
    net = SpikingNetwork.from_file(path, engine="torch-sequential", on_overflow="flag")
    h = net.layers["h"]
    assert net.rec_plan.group_of == {"h": ("h",)}
    g = torch.Generator().manual_seed(3)
    times = torch.rand(2, 12, generator=g, dtype=F64) * 20
    ch = torch.randint(0, 4, (2, 12), generator=g)
    out = net(times, ch, t_end=40.0)
    assert int(out.counts[0].sum()) > 5
    ir = net.neurons["CubaEI"]
    t2, c2 = torch.cat([times, times], 1), torch.cat([ch, ch + 4], 1)
    pm = PortMap.from_blocks(["exc", "inh"], [4, 4])
    W = torch.cat([h.weights[0], h.weights[1]], 0)
    direct = run_recurrent_group([GroupLayer(ir, h.params(), 5, t2, c2, W, port=pm)],
                                 [Coupling(0, 0, h.w_rec, h.d_rec_0, "exc"), Coupling(0, 0, h.w_rec_1, None, "inh")],
                                 t_end=40.0, on_overflow="flag")[0]
    assert torch.equal(direct.counts, out.counts[0]) and torch.equal(direct.times, out.spikes[0])
    # with the recurrent weights at zero the group loop is the feed-forward reference on a PortMap
    zero = torch.zeros(5, 5, dtype=F64)
    ff = run_recurrent_group([GroupLayer(ir, h.params(), 5, t2, c2, W, port=pm)],
                             [Coupling(0, 0, zero, h.d_rec_0, "exc"), Coupling(0, 0, zero, None, "inh")], t_end=40.0)[0]
    ref = torch_sequential.run_layer(ir, h.params(), t2, c2, W, port=pm, t_end=40.0)
    assert int(ref.counts.sum()) > 3 and torch.equal(ff.counts, ref.counts)
    S = ref.times.shape[2]
    assert (_fin(ff.times[:, :, :S]) - _fin(ref.times)).abs().max() <= 1e-12


def test_automatic_horizon_is_shared_by_the_group(neurons):
    """t_end=None: the latest automatic horizon of the group's layers (A: last input 21 ms + 60 x
    tau_m 10 ms; the LIF layer, without outside events, 60 x 8 ms), the same for both layers."""
    cuba, lif = neurons
    b = _base()

    def go(t_end):
        layers = [GroupLayer(cuba, CUBA, 3, b["times"], torch.tensor([X_C]), b["W_x"]), GroupLayer(lif, LIFP, 2)]
        couplings = [Coupling(0, 0, b["W_aa"], b["D_aa"]), Coupling(1, 0, b["W_ba"], b["D_ba"]), Coupling(0, 1, b["W_ab"])]
        return run_recurrent_group(layers, couplings, t_end=t_end, max_spikes=64)

    for x, y in zip(go(None), go(21.0 + 600.0)):
        assert torch.equal(x.counts, y.counts) and torch.equal(x.times, y.times)
