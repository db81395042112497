"""Recurrent layers (runtime/engines/recurrent.py): the feed-forward limit equals the reference
engine, a 2-neuron case matches an independent float64 event loop (scipy expm + bisection),
gradients match central finite differences, and SpikingNetwork runs a `recurrent(...)` layer."""

import math
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch

from spikescan.compiler.driver import load_model
from spikescan.runtime.engines import torch_sequential
from spikescan.runtime.engines.recurrent import run_recurrent_layer
from spikescan.runtime.network import SpikingNetwork
from repo_paths import repo

F64 = torch.float64
INF = math.inf
PARAMS = {"tau_m": 10.0, "tau_s": 5.0}


@pytest.fixture(scope="module")
def lif():
    return load_model(repo("models/cuba_lif.snn")).neurons["CubaLIF"]


def _events(seed, B, C, n, span=50.0):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * span
    times[0, -3:] = INF  # padding
    ch = torch.randint(0, C, (B, n), generator=g)
    return times, ch, g


def _finite(t):
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def _neuron(model, name, tmp_path):
    if model == "refractory":  # CubaLIF with a 2 ms refractory period
        src = open(repo("models/cuba_lif.snn")).read().replace("refractory 0 ms", "refractory 2 ms")
        path = tmp_path / "ref_lif.snn"
        path.write_text(src)
        model = str(path)
    return load_model(repo(model)).neurons[name]


@pytest.mark.parametrize("model,name,with_delays,observe,max_spikes", [
    ("models/cuba_lif.snn", "CubaLIF", False, None, 64),
    ("models/cuba_lif.snn", "CubaLIF", True, None, 64),
    ("models/cuba_lif.snn", "CubaLIF", False, "max_potential", 64),
    ("models/cuba_lif.snn", "CubaLIF", False, None, 3),  # cap hit, on_overflow="flag"
    ("models/adaptive_lif.snn", "AdaptiveLIF", False, None, 64),
    ("models/alpha_lif.snn", "AlphaLIF", False, None, 64),
    ("refractory", "CubaLIF", False, None, 64),
])
def test_zero_recurrence_equals_feed_forward_reference(tmp_path, model, name, with_delays, observe, max_spikes):
    ir = _neuron(model, name, tmp_path)
    B, C, N = 3, 6, 5
    times, ch, g = _events(0, B, C, 30)
    W = torch.randn(C, N, generator=g, dtype=F64) * 0.8 + 0.6
    dl = torch.rand(C, N, generator=g, dtype=F64) * 3.0 if with_delays else None
    params = PARAMS if name == "CubaLIF" else None
    kw = dict(observe=observe, t_end=70.0 if observe else None, max_spikes=max_spikes, on_overflow="flag")
    ref = torch_sequential.run_layer(ir, params, times, ch, W, dl, **kw)
    got = run_recurrent_layer(ir, params, times, ch, W, torch.zeros(N, N, dtype=F64), dl, **kw)
    assert int(ref.counts.sum()) > 15  # the case really spikes
    assert torch.equal(ref.counts, got.counts)
    assert torch.equal(ref.overflow, got.overflow)
    if max_spikes == 3:
        assert bool(ref.overflow.any())
    S = ref.times.shape[2]
    assert torch.equal(torch.isfinite(ref.times), torch.isfinite(got.times[:, :, :S]))
    assert (_finite(ref.times) - _finite(got.times[:, :, :S])).abs().max() <= 1e-12
    if observe:
        assert (ref.observed - got.observed).abs().max() <= 1e-12


def test_zero_recurrence_with_per_sample_weights_and_delays(lif):
    B, C, N = 2, 5, 4
    times, ch, g = _events(1, B, C, 25)
    W = torch.randn(B, C, N, generator=g, dtype=F64) * 0.8 + 0.7
    dl = torch.rand(C, N, generator=g, dtype=F64) * 2.0
    ref = torch_sequential.run_layer(lif, PARAMS, times, ch, W, dl)
    got = run_recurrent_layer(lif, PARAMS, times, ch, W, torch.zeros(N, N, dtype=F64), dl)
    assert int(ref.counts.sum()) > 10
    assert torch.equal(ref.counts, got.counts)
    S = ref.times.shape[2]
    assert (_finite(ref.times) - _finite(got.times[:, :, :S])).abs().max() <= 1e-12


# ---------------------------------------------------------------- independent reference

A_LIF = lambda tm, ts: np.array([[-1 / tm, 1 / tm], [0.0, -1 / ts]])  # state (v, i)


def _ref_recurrent(ext, W, Wr, tm, ts, t_end, grid=0.002):
    """Plain float64 event loop: all neurons advanced together with expm(A s); crossings found on
    a fine grid and refined by bisection; a spike resets v to 0 and queues its recurrent event at
    the spike time (delivered before external inputs at that time, lowest neuron first)."""
    A = A_LIF(tm, ts)
    N = W.shape[1]
    X = np.zeros((N, 2))
    t, out, pend = 0.0, [[] for _ in range(N)], []
    ext = sorted(ext) + [(t_end, None)]
    k = 0

    def prop(X, s):
        return X @ scipy.linalg.expm(A * s).T

    while k < len(ext):
        T = t if pend else ext[k][0]
        # first crossing of each neuron in [t, T]
        best, who = INF, []
        if T > t or not pend:
            m = max(2, int(math.ceil((T - t) / grid)) + 1)
            s = np.linspace(0.0, T - t, m)
            Phis = scipy.linalg.expm(A[None] * s[:, None, None])  # [m, 2, 2]
            V = np.einsum("mij,nj->nmi", Phis, X)[:, :, 0]  # [N, m]
            for j in range(N):
                idx = np.nonzero(V[j] >= 1.0)[0]
                if idx.size == 0:
                    continue
                if idx[0] == 0:
                    sj = 0.0
                else:
                    a, b = s[idx[0] - 1], s[idx[0]]
                    for _ in range(80):
                        c = 0.5 * (a + b)
                        if prop(X[j:j + 1], c)[0, 0] >= 1.0:
                            b = c
                        else:
                            a = c
                    sj = b
                if sj < best - 1e-15:
                    best, who = sj, [j]
                elif abs(sj - best) <= 1e-15:
                    who.append(j)
        if who:
            X = prop(X, best)
            t += best
            for j in who:
                X[j, 0] = 0.0
                out[j].append(t)
                pend.append(j)
            pend.sort()
            continue
        if pend:
            j = pend.pop(0)
            X[:, 1] += Wr[j]
            continue
        te, c = ext[k]
        X = prop(X, te - t)
        t = te
        if c is not None:
            X[:, 1] += W[c]
        k += 1
    return out


def test_two_neurons_match_independent_event_loop(lif):
    N = 2
    ext_t = [1.0, 2.5, 4.0, 9.0, 11.0, 12.5, 20.0, 21.0, 30.0]
    ext_c = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    W = np.array([[2.2, 1.0], [1.5, 0.6], [1.2, 1.4]])
    Wr = np.array([[0.0, 1.5], [-1.0, 0.8]])  # 0 excites 1, 1 inhibits 0 and excites itself
    t_end = 45.0
    ref = _ref_recurrent(list(zip(ext_t, ext_c)), W, Wr, 10.0, 5.0, t_end)
    times = torch.tensor([ext_t], dtype=F64)
    ch = torch.tensor([ext_c])
    got = run_recurrent_layer(lif, PARAMS, times, ch, torch.tensor(W), torch.tensor(Wr), t_end=t_end)
    counts = [len(r) for r in ref]
    assert sum(counts) >= 4 and min(counts) >= 1
    assert got.counts[0].tolist() == counts
    # the recurrence really matters: feed-forward spikes differ
    ff = torch_sequential.run_layer(lif, PARAMS, times, ch, torch.tensor(W), t_end=t_end)
    assert ff.counts[0].tolist() != counts
    for j in range(N):
        assert np.max(np.abs(got.times[0, j, :counts[j]].numpy() - np.array(ref[j]))) <= 1e-9


# ---------------------------------------------------------------- gradients


def test_gradients_match_finite_differences(lif):
    """d(loss)/d(weight, w_rec, input times, per-neuron tau_m) vs central differences."""
    N, C = 3, 4
    times = torch.tensor([[0.5, 1.5, 3.0, 6.0, 7.5, 12.0, 15.0]], dtype=F64)
    ch = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    g = torch.Generator().manual_seed(3)
    base = {"W": torch.rand(C, N, generator=g, dtype=F64) * 0.8 + 0.6,
            "Wr": torch.randn(N, N, generator=g, dtype=F64) * 0.3,
            "t": times, "tm": torch.full((N,), 10.0, dtype=F64)}

    def loss(v):
        r = run_recurrent_layer(lif, {"tau_m": v["tm"], "tau_s": 5.0}, v["t"], ch, v["W"], v["Wr"], t_end=40.0,
                                max_spikes=16)
        fin = torch.isfinite(r.times)
        wts = torch.arange(1, r.times.shape[2] + 1, dtype=F64)
        return (torch.where(fin, r.times, torch.zeros_like(r.times)) * wts).sum(), r.counts

    leaf = {k: v.clone().requires_grad_() for k, v in base.items()}
    L0, c0 = loss(leaf)
    assert int(c0.sum()) >= 4 and bool((c0 > 0).all())
    L0.backward()
    eps = 1e-6
    checked = 0
    for name, b0 in base.items():
        for idx in np.ndindex(*b0.shape):
            p, m = b0.clone(), b0.clone()
            p[idx] += eps
            m[idx] -= eps
            Lp, cp = loss({**base, name: p})
            Lm, cm = loss({**base, name: m})
            if not (torch.equal(cp, c0) and torch.equal(cm, c0)):
                continue  # a spike appeared/vanished: the loss jumps, FD is meaningless there
            fd = float(Lp - Lm) / (2 * eps)
            an = float(leaf[name].grad[idx])
            assert abs(fd - an) <= 1e-5 * max(1.0, abs(fd)), (name, idx, fd, an)
            checked += 1
    assert checked >= 26  # of 31 entries (12 W, 9 Wr, 7 times, 3 tau_m)
    assert float(leaf["Wr"].grad.abs().sum()) > 0


# ---------------------------------------------------------------- network


SNN = """
neuron CubaLIF {
    params { tau_m = 20 ms   tau_s = 5 ms   v_th = 1.0   v_reset = 0.0 }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }
    on input(w) { i += w }
    spike when v >= v_th
    on spike { v = v_reset }
    refractory 0 ms
}

network rec {
    input  x[4]
    layer  hidden[5] = CubaLIF(tau_m = 10 ms, tau_s = 5 ms)
               <- dense(x, init = normal(1.0, 0.2)),
                  recurrent(hidden, init = normal(0.0, 0.3))
    layer  out[2]    = CubaLIF() <- dense(hidden, init = normal(0.8, 0.1))
    readout out: first_spike
}
"""


def test_network_from_file_with_recurrent_layer(tmp_path):
    path = tmp_path / "rec.snn"
    path.write_text(textwrap.dedent(SNN))
    net = SpikingNetwork.from_file(path, engine="torch-sequential")
    hid = net.layers["hidden"]
    assert hid.w_rec is not None and tuple(hid.w_rec.shape) == (5, 5)
    assert len(hid.weights) == 1 and tuple(hid.weights[0].shape) == (4, 5)
    times = torch.tensor([[0.5, 1.0, 2.0, 4.0, 6.0, INF], [1.0, 3.0, 3.5, 5.0, 8.0, 9.0]], dtype=F64)
    ch = torch.tensor([[0, 1, 2, 3, 0, 0], [3, 2, 1, 0, 1, 2]])
    out = net(times, ch, t_end=60.0)
    assert int(out.counts[0].sum()) > 0
    # same as the recurrent engine called directly
    direct = run_recurrent_layer(net.neurons["CubaLIF"], hid.params(), times, ch, hid.weights[0], hid.w_rec,
                                 t_end=60.0, on_overflow="flag")
    assert torch.equal(direct.counts, out.counts[0])
    loss = _finite(out.spikes[0]).sum() + _finite(out.readout).sum()
    loss.backward()
    assert hid.w_rec.grad is not None and torch.isfinite(hid.w_rec.grad).all()
    assert float(hid.w_rec.grad.abs().sum()) > 0
    assert float(hid.weights[0].grad.abs().sum()) > 0
