"""Several input ports in one layer (issue 12, item 1): `port=PortMap(...)` in every engine.

- spike times against a 50-digit mpmath reference written here by hand from the equations
  (tests/mpref.py's solver, B chosen per event), with mixed-port inputs at equal times, where
  the order of inputs across ports decides whether the neuron spikes;
- every engine against the sequential reference engine on a random 2-port layer;
- gradients (weights, input times, time constants) against central finite differences (f64);
- SpikingNetwork on models/ei_ports.snn: two connections from one input, one per port.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import mpmath as mp
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mpref  # noqa: E402

from spikescan.runtime.engines import available, get_engine  # noqa: E402
from spikescan.runtime.engines.ports import PortMap, normalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64
torch.set_num_threads(1)

# A current-based neuron whose second port moves v directly: inputs at equal times on the two
# ports do not commute (the order decides whether the threshold is reached in between).
TWO_PORT = """
neuron TwoPort {
    params { tau_m = 20 ms   tau_s = 5 ms   v_th = 1.0   v_reset = 0.0 }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }
    on direct(w) { v += w }
    on syn(w) { i += w   v -= 0.5 * w }
    spike when v >= v_th
    on spike { v = v_reset }
}
"""

TORCH_ENGINES = ["torch-sequential", "torch"]


def _neuron_text(path: Path, text: str, name: str):
    from spikescan.compiler.driver import load_model

    path.write_text(text)
    return load_model(str(path)).neurons[name]


@pytest.fixture(scope="module")
def eilif():
    """EILIF from models/ei_ports.snn (the neuron block only: the test does not depend on the
    network part of the file)."""
    import tempfile

    text = (ROOT / "models" / "ei_ports.snn").read_text()
    text = text[: text.index("network ")]
    with tempfile.TemporaryDirectory() as d:
        return _neuron_text(Path(d) / "ei.snn", text, "EILIF")


@pytest.fixture(scope="module")
def twoport():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return _neuron_text(Path(d) / "two.snn", TWO_PORT, "TwoPort")


# ----------------------------------------------------------------------------- mpmath reference

def _mp_model(name: str):
    """(state names, A, B per port, c, theta, R, r) written from the equations, not the IR."""
    m = mp.mpf
    if name == "EILIF":  # state (ge, gi, v); tau_m 20, tau_e 5, tau_i 10
        tm, te, ti = m(20), m(5), m(10)
        A = [[-1 / te, 0, 0], [0, -1 / ti, 0], [1 / tm, -1 / tm, -1 / tm]]
        Bp = {"exc": [1, 0, 0], "inh": [0, 1, 0]}
        return ("ge", "gi", "v"), A, Bp, [0, 0, 1], m(1), [[1, 0, 0], [0, 1, 0], [0, 0, 0]], [0, 0, 0]
    tm, ts = m(20), m(5)  # TwoPort, state (i, v) or (v, i): mapped by name below
    A = {"v": {"v": -1 / tm, "i": 1 / tm}, "i": {"v": 0, "i": -1 / ts}}
    return ("v", "i"), A, {"direct": {"v": 1, "i": 0}, "syn": {"v": m(-0.5), "i": 1}}, {"v": 1, "i": 0}, m(1), \
        {"v": {"v": 0, "i": 0}, "i": {"v": 0, "i": 1}}, {"v": 0, "i": 0}


def _in_order(ir, name):
    """The hand-written model laid out in the IR's state order."""
    names, A, Bp, c, theta, R, r = _mp_model(name)
    st = list(ir.state)
    if isinstance(A, dict):
        A = [[A[a][b] for b in st] for a in st]
        Bp = {k: [v[s] for s in st] for k, v in Bp.items()}
        c = [c[s] for s in st]
        R = [[R[a][b] for b in st] for a in st]
        r = [r[s] for s in st]
    else:
        assert tuple(st) == names, st
    return A, Bp, c, theta, R, r


_MP_CACHE: dict = {}


def mp_ports(ir, name, events, t_end, dps=30):
    """Spike times (floats) of one neuron for events [(t, w, port)] in input order (cached: every
    engine is checked against the same cases)."""
    key = (name, tuple(ir.state), tuple(events), float(t_end), dps)
    if key not in _MP_CACHE:
        _MP_CACHE[key] = _mp_ports(ir, name, events, t_end, dps)
    return _MP_CACHE[key]


def _mp_ports(ir, name, events, t_end, dps):
    A, Bp, c, theta, R, r = _in_order(ir, name)
    with mp.workdps(dps):
        d = len(c)
        A_ = [[mp.mpf(e) for e in row] for row in A]
        sim = mpref._Sim(A_, [mp.mpf(0)] * d, [mp.mpf(e) for e in c], mp.mpf(theta),
                         [[mp.mpf(e) for e in row] for row in R], [mp.mpf(e) for e in r], mp.mpf(0),
                         mp.mpf(1), 1000)
        x, t = [mp.mpf(0)] * d, mp.mpf(0)
        evs = sorted(((mp.mpf(tk), mp.mpf(wk), p) for tk, wk, p in events), key=lambda e: e[0])  # stable
        for tk, wk, p in evs + [(mp.mpf(t_end), None, None)]:
            if tk > t_end:
                break
            x, t = sim.advance(x, t, tk)
            if wk is None:
                break
            x = [a + mp.mpf(b) * wk for a, b in zip(x, Bp[p])]
            while sim.ref_end <= t and mpref._dot(sim.c, x) >= sim.theta:
                x = sim.spike(x, t)
        if t < t_end:
            sim.advance(x, t, mp.mpf(t_end))
        return [float(s) for s in sim.spikes]


def _random_layer(seed, B=2, n=24, C=6, N=4, T=50.0, ties=True):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * T
    if ties:  # mixed-port inputs at equal times
        times[:, n // 2: n // 2 + 6] = times[:, :6]
        times[:, -2] = times[:, -3]
    ch = torch.randint(0, C, (B, n), generator=g)
    times[0, -1] = math.inf  # padding
    return times, ch


def _check_vs_ref(res, ir, name, times, ch, W, pm, t_end, tol=1e-9):
    B, N = res.counts.shape
    for b in range(B):
        for j in range(N):
            evs = [(float(times[b, k]), float(W[ch[b, k], j]), pm.names[int(pm.index[ch[b, k]])])
                   for k in range(times.shape[1]) if math.isfinite(float(times[b, k]))]
            ref = mp_ports(ir, name, evs, t_end)
            got = res.times[b, j, : int(res.counts[b, j])].tolist()
            assert len(got) == len(ref), (b, j, got, ref)
            for a, r_ in zip(got, ref):
                assert abs(a - r_) <= tol * max(1.0, abs(r_)), (b, j, a, r_)


def test_portmap_checks():
    pm = PortMap.from_blocks(["exc", "inh", "exc"], [2, 3, 1])
    assert pm.names == ("exc", "inh") and pm.index.tolist() == [0, 0, 1, 1, 1, 0]
    assert normalize(PortMap(("a", "b"), torch.tensor([1, 1])), ["a", "b"], 2) == "b"  # one port used
    with pytest.raises(KeyError, match="no input port"):
        normalize(PortMap(("a", "zz"), torch.tensor([0, 1])), ["a", "b"], 2)
    with pytest.raises(ValueError, match="C = 3"):
        normalize(pm, ["exc", "inh"], 3)
    with pytest.raises(ValueError, match="must lie in"):
        PortMap(("a",), torch.tensor([0, 1]))
    assert PortMap(["a", "b"], torch.tensor([1, 0])).names == ("a", "b")  # a list becomes a tuple


def _ordered_case(ir):
    """Equal-time inputs whose cross-port order decides a spike (TwoPort): direct +1.2 then
    syn +2 at t = 10 spikes; syn first does not."""
    times = torch.tensor([[10.0, 10.0, 30.0], [10.0, 10.0, 30.0]], dtype=F64)
    ch = torch.tensor([[0, 1, 0], [1, 0, 0]])  # sample 0: direct first; sample 1: syn first
    W = torch.tensor([[1.2], [2.0]], dtype=F64)
    pm = PortMap(("direct", "syn"), torch.tensor([0, 1]))
    return times, ch, W, pm


def _engines():
    out = list(TORCH_ENGINES)
    if available("sequential-cpu"):
        out.append("sequential-cpu")
    return out


@pytest.mark.parametrize("engine", _engines())
def test_equal_time_order_across_ports(engine, twoport):
    times, ch, W, pm = _ordered_case(twoport)
    res = get_engine(engine).run_layer(twoport, {}, times, ch, W, port=pm, t_end=60.0)
    assert float(res.times[0, 0, 0]) == 10.0  # direct, then syn: the threshold is hit in between
    assert int(res.counts[1, 0]) == 0 or float(res.times[1, 0, 0]) > 10.0
    _check_vs_ref(res, twoport, "TwoPort", times, ch, W, pm, 60.0)


@pytest.mark.parametrize("engine", _engines())
@pytest.mark.parametrize("name", ["EILIF", "TwoPort"])
def test_against_mpmath(engine, name, eilif, twoport):
    ir = eilif if name == "EILIF" else twoport
    times, ch = _random_layer(1)
    g = torch.Generator().manual_seed(2)
    W = torch.rand(6, 4, generator=g, dtype=F64) * (5.0 if name == "EILIF" else 1.2) - 0.1
    ports = ("exc", "inh") if name == "EILIF" else ("direct", "syn")
    pm = PortMap(ports, torch.tensor([0, 1, 0, 1, 0, 0]))
    res = get_engine(engine).run_layer(ir, {}, times, ch, W, port=pm, t_end=80.0, chunk=5)
    assert int(res.counts.sum()) > 3  # the case exercises spikes
    _check_vs_ref(res, ir, name, times, ch, W, pm, 80.0)


def _agree(a, b, tol=1e-10):
    assert torch.equal(a.counts, b.counts), (a.counts, b.counts)
    fin = torch.isfinite(b.times)
    S = b.times.shape[2]
    assert torch.equal(torch.isfinite(a.times[..., :S]), fin)
    assert torch.allclose(a.times[..., :S][fin], b.times[fin], rtol=tol, atol=tol)


@pytest.mark.parametrize("engine", _engines())
@pytest.mark.parametrize("delays", [False, True])
def test_engines_agree_with_reference(engine, delays, eilif):
    times, ch = _random_layer(3, B=3, n=30, C=5, N=6)
    g = torch.Generator().manual_seed(4)
    W = torch.rand(5, 6, generator=g, dtype=F64) * 3.0
    dl = torch.rand(5, 6, generator=g, dtype=F64) * 4.0 if delays else None
    pm = PortMap(("inh", "exc"), torch.tensor([1, 0, 1, 1, 0]))
    ref = get_engine("torch-sequential").run_layer(eilif, {}, times, ch, W, dl, port=pm, t_end=70.0)
    res = get_engine(engine).run_layer(eilif, {}, times, ch, W, dl, port=pm, t_end=70.0, chunk=7)
    assert int(ref.counts.sum()) > 5
    _agree(res, ref)


def _loss(res):
    t = res.times
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t)).sum()


def _slow_reference(engines):
    """The torch-sequential reference is checked in full elsewhere: its heavy variants are slow."""
    return [pytest.param(e, marks=pytest.mark.slow) if e == "torch-sequential" else e for e in engines]


@pytest.mark.parametrize("engine", _slow_reference(_engines()))
def test_gradients_finite_differences(engine, eilif):
    """d loss / d (weights, input times, tau_e, tau_i) against central differences."""
    times, ch = _random_layer(5, B=2, n=14, C=4, N=3, ties=False)
    g = torch.Generator().manual_seed(6)
    W = torch.rand(4, 3, generator=g, dtype=F64) * 5.0 + 1.0
    pm = PortMap(("exc", "inh"), torch.tensor([0, 1, 0, 1]))
    tau = {"tau_e": torch.full((3,), 5.0, dtype=F64), "tau_i": torch.full((3,), 10.0, dtype=F64)}
    run = get_engine(engine).run_layer

    def f(Wv, tv, pv):
        return _loss(run(eilif, pv, tv, ch, Wv, port=pm, t_end=60.0))

    Wr, tr = W.clone().requires_grad_(), times.clone().requires_grad_()
    pr = {k: v.clone().requires_grad_() for k, v in tau.items()}
    base = run(eilif, pr, tr, ch, Wr, port=pm, t_end=60.0)
    assert int(base.counts.sum()) >= 3
    gW, gt, ge, gi = torch.autograd.grad(_loss(base), [Wr, tr, pr["tau_e"], pr["tau_i"]])
    h = 1e-6
    with torch.no_grad():
        for (c, j) in [(0, 0), (1, 1), (2, 2), (3, 0)]:
            Wp, Wm = W.clone(), W.clone()
            Wp[c, j] += h
            Wm[c, j] -= h
            fd = (f(Wp, times, tau) - f(Wm, times, tau)) / (2 * h)
            assert abs(float(gW[c, j]) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd))), (c, j, gW[c, j], fd)
        for k in range(4):
            tp, tm = times.clone(), times.clone()
            tp[1, k] += h
            tm[1, k] -= h
            fd = (f(W, tp, tau) - f(W, tm, tau)) / (2 * h)
            assert abs(float(gt[1, k]) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd))), (k, gt[1, k], fd)
        for name, gv in (("tau_e", ge), ("tau_i", gi)):
            for j in range(3):
                pp = {k: v.clone() for k, v in tau.items()}
                pm_ = {k: v.clone() for k, v in tau.items()}
                pp[name][j] += h
                pm_[name][j] -= h
                fd = (f(W, times, pp) - f(W, times, pm_)) / (2 * h)
                assert abs(float(gv[j]) - float(fd)) <= 1e-5 * max(1.0, abs(float(fd))), (name, j, gv[j], fd)


# ----------------------------------------------------------------------------- the network

def _ei_net(engine="torch"):
    from spikescan.runtime.network import SpikingNetwork

    return SpikingNetwork.from_file(ROOT / "models" / "ei_ports.snn", engine=engine, seed=3)


def test_network_builds_the_port_map():
    net = _ei_net()
    hid = net.layers["hidden"]
    assert isinstance(hid.port, PortMap) and hid.port.names == ("exc", "inh")
    assert hid.port.index.tolist() == [0] * 5 + [1] * 5  # dense(x, exc) then dense(x, inh)
    assert net.layers["out"].port == "exc"


@pytest.mark.parametrize("engine", _slow_reference(_engines()))
def test_network_forward_backward(engine, eilif):
    """The hidden layer equals a direct run_layer call on the merged inputs with the port map, and
    its gradients reach both connections' weights."""
    net = _ei_net(engine)
    g = torch.Generator().manual_seed(7)
    times = torch.rand(3, 10, generator=g, dtype=F64) * 20
    ch = torch.randint(0, 5, (3, 10), generator=g)
    with torch.no_grad():  # the file's auto init scales on a training batch; here by hand
        net.layers["hidden"].weights[0].mul_(6.0)
    out = net(times, ch, t_end=60.0)
    hid = net.layers["hidden"]
    t_in, c_in = torch.cat([times, times], 1), torch.cat([ch, ch + 5], 1)
    ref = get_engine("torch-sequential").run_layer(eilif, {}, t_in, c_in, hid.merged_weight().detach(),
                                                   port=hid.port, t_end=60.0, on_overflow="flag")
    got = out.spikes[0]
    assert int(out.counts[0].sum()) > 0
    _agree(type(ref)(times=got, counts=out.counts[0], overflow=ref.overflow, observed=None), ref)
    loss = torch.where(torch.isfinite(got), got, torch.zeros_like(got)).sum()
    loss.backward()
    g_exc, g_inh = hid.weights[0].grad, hid.weights[1].grad
    assert g_exc is not None and g_inh is not None
    assert float(g_exc.abs().sum()) > 0 and float(g_inh.abs().sum()) > 0


def test_nir_export_refuses_multiport_layers(tmp_path):
    pytest.importorskip("nir")
    from spikescan.runtime.nir_io.export import NirError, layer_maps

    with pytest.raises(NirError, match="several input ports"):
        layer_maps(_ei_net(), "hidden", 1e-3)


@pytest.mark.skipif(not available("sequential-cpu"), reason="torch-mlir JIT not available")
def test_event_outer_adjoint_equals_per_lane_adjoint(eilif):
    """sequential-cpu's event-outer adjoint (shared parameters, no delays, c.B = 0 on both ports,
    weights and times only) against its per-neuron adjoint, to 1e-12 relative."""
    from spikescan.runtime.engines import adjoint_events, sequential_cpu

    times, ch = _random_layer(8, B=3, n=40, C=6, N=9)
    g = torch.Generator().manual_seed(9)
    W = torch.rand(6, 9, generator=g, dtype=F64) * 3.0
    pm = PortMap(("exc", "inh"), torch.tensor([0, 1, 1, 0, 1, 0]))
    gs = torch.rand(3, 9, 64, generator=g, dtype=F64)

    def grads(events: bool):
        calls = []
        orig = adjoint_events.backward

        def spy(*a, **k):
            calls.append(1)
            return orig(*a, **k)

        old = sequential_cpu.USE_EVENT_ADJOINT
        sequential_cpu.USE_EVENT_ADJOINT = events
        adjoint_events.backward = spy
        try:
            Wr, tr = W.clone().requires_grad_(), times.clone().requires_grad_()
            res = sequential_cpu.run_layer(eilif, {}, tr, ch, Wr, port=pm, t_end=70.0)
            S = res.times.shape[2]
            t = res.times
            loss = (torch.where(torch.isfinite(t), t, torch.zeros_like(t)) * gs[:, :, :S]).sum()
            out = torch.autograd.grad(loss, [Wr, tr])
        finally:
            sequential_cpu.USE_EVENT_ADJOINT = old
            adjoint_events.backward = orig
        assert bool(calls) == events  # the path under test really ran
        assert int(res.counts.sum()) > 5
        return out

    (gw_e, gt_e), (gw_l, gt_l) = grads(True), grads(False)
    for a, b in ((gw_e, gw_l), (gt_e, gt_l)):
        scale = float(b.abs().max())
        assert scale > 0
        assert float((a - b).abs().max()) <= 1e-12 * scale, float((a - b).abs().max()) / scale


@pytest.mark.parametrize("engine", _engines())
@pytest.mark.parametrize("kind", ["max_potential", "li_integral"])
def test_readouts_with_two_ports(engine, kind, eilif):
    """Readout observables of a 2-port layer (sequential-cpu: the compiled replay of known spikes)
    against the torch-sequential reference, values and weight gradients."""
    times, ch = _random_layer(10, B=2, n=20, C=4, N=3)
    g = torch.Generator().manual_seed(11)
    W = torch.rand(4, 3, generator=g, dtype=F64) * 2.5
    pm = PortMap(("exc", "inh"), torch.tensor([0, 1, 0, 1]))

    def run(name):
        Wr = W.clone().requires_grad_()
        res = get_engine(name).run_layer(eilif, {}, times, ch, Wr, port=pm, t_end=60.0, observe=kind)
        return res.observed.detach(), torch.autograd.grad(res.observed.sum(), Wr)[0]

    (o, gw), (o_ref, gw_ref) = run(engine), run("torch-sequential")
    assert torch.allclose(o, o_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(gw, gw_ref, rtol=1e-8, atol=1e-10)


def test_plain_recurrent_engines_refuse_a_port_map(eilif):
    """The plain self-recurrent loops take one port; a PortMap gets a clear error naming the
    recurrent-group loop (which SpikingNetwork uses for layers whose ports differ)."""
    from spikescan.runtime.engines.recurrent import run_recurrent_layer

    times, ch = _random_layer(12, B=1, n=6, C=2, N=2, ties=False)
    W = torch.ones(2, 2, dtype=F64)
    pm = PortMap(("exc", "inh"), torch.tensor([0, 1]))
    with pytest.raises(NotImplementedError, match="recurrent_group"):
        run_recurrent_layer(eilif, {}, times, ch, W, torch.zeros(2, 2, dtype=F64), port=pm, t_end=20.0)


def test_recurrent_layer_on_another_port(tmp_path):
    """A layer with excitation, inhibition and recurrent inhibition: SpikingNetwork runs it as a
    recurrent group (runtime/engines/recurrent_group.py, every coupling on its own port); the
    same spikes and gradients whatever the network's engine, and they reach the recurrent weights."""
    from spikescan.runtime.network import SpikingNetwork

    text = (ROOT / "models" / "ei_ports.snn").read_text()
    text = text[: text.index("network ")] + """
network eirec {
    input  x[5]
    layer  hidden[6] = EILIF()
               <- dense(x, port = exc, init = normal(3.0, 0.5)),
                  dense(x, port = inh, init = uniform(0.0, 1.0)),
                  recurrent(port = inh, init = uniform(0.0, 0.5))
    layer  out[3]     = EILIF() <- dense(hidden, port = exc, init = normal(2.0, 0.5))
    readout out: first_spike
}
"""
    f = tmp_path / "eirec.snn"
    f.write_text(text)
    g = torch.Generator().manual_seed(0)
    times = torch.rand(2, 8, generator=g, dtype=F64) * 20
    ch = torch.randint(0, 5, (2, 8), generator=g)
    got = {}
    for engine in ["torch"] + (["sequential-cpu"] if available("sequential-cpu") else []):
        net = SpikingNetwork.from_file(f, engine=engine, seed=1)
        o = net(times, ch, t_end=60.0)
        t = o.spikes[0]
        torch.where(torch.isfinite(t), t, torch.zeros_like(t)).sum().backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        got[engine] = (o.spikes[0].detach(), grads)
    spikes, grads = got["torch"]
    assert int(torch.isfinite(spikes).sum()) > 5
    assert any("rec" in n and float(v.abs().sum()) > 0 for n, v in grads.items()), list(grads)
    for s2, g2 in got.values():
        assert torch.equal(s2, spikes)
        for n, v in grads.items():
            assert torch.allclose(g2[n], v, rtol=1e-10, atol=1e-12), n
