"""The JIT-compiled recurrent loop (runtime/engines/recurrent_cpu.py) against the PyTorch recurrent
engine (runtime/engines/recurrent.py, itself checked against an independent scipy loop and FD in
test_recurrent.py): identical spike trains (counts equal, times within 1e-12 ms in float64) for
three neuron types incl. ties, refractory periods, the spike cap and input delays; gradients
equal to recurrent.py's autograd (1e-9 relative) and to central finite differences."""

import math

import numpy as np
import pytest
import torch

from spikescan.compiler.driver import load_model
from spikescan.runtime.engines.recurrent import run_recurrent_layer as run_ref
from spikescan.runtime.engines.recurrent_cpu import run_recurrent_layer as run_cpu
from spikescan.runtime.engines.result import SpikeCapExceeded
from spikescan.runtime.network import SpikingNetwork
from repo_paths import repo

F64 = torch.float64
INF = math.inf
LIF = {"tau_m": 10.0, "tau_s": 5.0}


def _neuron(model, name, tmp_path=None):
    if model == "refractory":  # CubaLIF with a 2 ms refractory period
        src = open(repo("models/cuba_lif.snn")).read().replace("refractory 0 ms", "refractory 2 ms")
        path = tmp_path / "ref_lif.snn"
        path.write_text(src)
        model = str(path)
    return load_model(repo(model)).neurons[name]


def _finite(t):
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def _same_trains(ref, got, tol=1e-12):
    assert torch.equal(ref.counts, got.counts)
    assert torch.equal(ref.overflow, got.overflow)
    S = ref.times.shape[2]
    assert got.times.shape[2] == S
    assert torch.equal(torch.isfinite(ref.times), torch.isfinite(got.times))
    assert float((_finite(ref.times) - _finite(got.times)).abs().max()) <= tol


def _case(seed, B, C, N, n, span=40.0, w=(0.6, 0.8), wr=0.5):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * span
    times[0, -3:] = INF  # padding
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.randn(C, N, generator=g, dtype=F64) * w[1] + w[0]
    Wr = torch.randn(N, N, generator=g, dtype=F64) * wr
    return times, ch, W, Wr, g


@pytest.mark.parametrize("model,name,delays,max_spikes", [
    ("models/cuba_lif.snn", "CubaLIF", False, 64),
    ("models/cuba_lif.snn", "CubaLIF", True, 64),
    ("models/cuba_lif.snn", "CubaLIF", False, 4),  # the cap, on_overflow="flag"
    ("refractory", "CubaLIF", False, 64),
    ("models/adaptive_lif.snn", "AdaptiveLIF", False, 64),
    ("models/alpha_lif.snn", "AlphaLIF", True, 64),
])
def test_spike_trains_equal_recurrent_engine(tmp_path, model, name, delays, max_spikes):
    ir = _neuron(model, name, tmp_path)
    times, ch, W, Wr, g = _case(1, 2, 6, 5, 22, span=30.0, w=(1.2, 0.8))
    dl = torch.rand(6, 5, generator=g, dtype=F64) * 3.0 if delays else None
    params = LIF if name == "CubaLIF" else None
    kw = dict(max_spikes=max_spikes, on_overflow="flag")
    ref = run_ref(ir, params, times, ch, W, Wr, dl, **kw)
    got = run_cpu(ir, params, times, ch, W, Wr, dl, **kw)
    assert int(ref.counts.sum()) > 20  # the case really spikes, recurrent events included
    if max_spikes == 4:
        assert bool(ref.overflow.any()) and bool((ref.counts < max_spikes).any())
    _same_trains(ref, got)


def test_ties_simultaneous_spikes_and_immediate_crossings():
    """LIF (inputs jump v): neurons 0 and 1 are identical (same input and recurrent columns and
    rows), so they spike at the same instants; a strong 2 -> 3 connection makes 3 spike at 2's
    spike times (a jump crossing caused by a recurrent event); inputs share times; t_end cuts
    the run. (Gradients are not compared here: at tied times they are one-sided, and the two
    engines pick different sides when a neuron spikes twice at one instant with t_ref = 0.)"""
    ir = _neuron("models/lif.snn", "LIF")
    N, C = 5, 3
    times = torch.tensor([[1.0, 1.0, 2.0, 4.0, 4.0, 4.0, 7.0, 9.0, 9.0, 12.0, 14.0],
                          [0.5, 3.0, 3.0, 3.0, 6.0, 8.0, 8.0, 8.5, 11.0, 13.0, INF]], dtype=F64)
    ch = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1], [2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]])
    g = torch.Generator().manual_seed(5)
    W = torch.rand(C, N, generator=g, dtype=F64) * 0.5 + 0.3
    W[:, 1] = W[:, 0]
    Wr = torch.randn(N, N, generator=g, dtype=F64) * 0.1
    Wr[:, 1] = Wr[:, 0]
    Wr[1, :] = Wr[0, :]
    Wr[1, 1] = Wr[0, 0]
    Wr[2, 3] = 5.0  # 2's spike lifts 3 over threshold at once
    Wr[3, 3] = -2.0
    ref = run_ref(ir, {"tau_m": 10.0}, times, ch, W, Wr, t_end=30.0)
    got = run_cpu(ir, {"tau_m": 10.0}, times, ch, W, Wr, t_end=30.0)
    _same_trains(ref, got)
    assert torch.equal(got.times[:, 0], got.times[:, 1]) and int(got.counts[:, 0].sum()) >= 2
    t2 = got.times[:, 2][torch.isfinite(got.times[:, 2])]
    t3 = got.times[:, 3][torch.isfinite(got.times[:, 3])]
    assert len(t2) >= 1 and bool(torch.isin(t2, t3).all())  # 3 fires at 2's spike times


@pytest.fixture(scope="module")
def lif():
    return _neuron("models/cuba_lif.snn", "CubaLIF")


def test_per_sample_weights_and_cap_raise(lif):
    times, ch, _, Wr, g = _case(2, 2, 5, 4, 25)
    W = torch.randn(2, 5, 4, generator=g, dtype=F64) * 0.8 + 0.7
    dl = torch.rand(5, 4, generator=g, dtype=F64) * 2.0
    ref = run_ref(lif, LIF, times, ch, W, Wr, dl)
    got = run_cpu(lif, LIF, times, ch, W, Wr, dl)
    assert int(ref.counts.sum()) > 10
    _same_trains(ref, got)
    with pytest.raises(SpikeCapExceeded):
        run_cpu(lif, LIF, times, ch, W, Wr, dl, max_spikes=2)


def test_observe_falls_back_to_recurrent_engine(lif):
    times, ch, W, Wr, _ = _case(3, 2, 4, 3, 12)
    kw = dict(observe="max_potential", t_end=60.0)
    ref = run_ref(lif, LIF, times, ch, W, Wr, **kw)
    got = run_cpu(lif, LIF, times, ch, W, Wr, **kw)
    assert torch.equal(ref.observed, got.observed)


# ---------------------------------------------------------------- gradients


def _grad_case(seed=3, N=4, C=4, delays=True):
    times = torch.tensor([[0.5, 1.5, 3.0, 6.0, 7.5, 12.0, 15.0, 15.5, 21.0],
                          [1.0, 2.0, 2.5, 5.0, 9.0, 11.0, 14.0, 18.0, INF]], dtype=F64)
    ch = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 0], [3, 2, 1, 0, 3, 2, 1, 0, 0]])
    g = torch.Generator().manual_seed(seed)
    base = {"W": torch.rand(C, N, generator=g, dtype=F64) * 0.9 + 0.6,
            "Wr": torch.randn(N, N, generator=g, dtype=F64) * 0.4,
            "t": times, "tm": torch.full((N,), 10.0, dtype=F64) + torch.rand(N, generator=g, dtype=F64)}
    if delays:
        base["dl"] = torch.rand(C, N, generator=g, dtype=F64) * 2.0
    return base, ch


def _loss(run, ir, v, ch):
    params = {"tau_m": v["tm"]} if ir.name == "LIF" else {"tau_m": v["tm"], "tau_s": 5.0}
    r = run(ir, params, v["t"], ch, v["W"], v["Wr"], v.get("dl"), t_end=40.0, max_spikes=16)
    wts = torch.arange(1, r.times.shape[2] + 1, dtype=F64)
    return (_finite(r.times) * wts).sum(), r.counts


@pytest.mark.parametrize("model,name", [("models/cuba_lif.snn", "CubaLIF"), ("refractory", "CubaLIF"),
                                        ("models/lif.snn", "LIF")])
def test_gradients_equal_recurrent_autograd(tmp_path, model, name):
    """LIF spikes only at jumps (t* = the input's time), CubaLIF at solved crossings (IFT),
    the refractory variant also at refractory ends."""
    ir = _neuron(model, name, tmp_path)
    base, ch = _grad_case()
    if name == "LIF":
        base["W"] = base["W"] * 0.5
    grads = {}
    for tag, run in (("ref", run_ref), ("cpu", run_cpu)):
        leaf = {k: v.clone().requires_grad_() for k, v in base.items()}
        L, c = _loss(run, ir, leaf, ch)
        L.backward()
        grads[tag] = ({k: v.grad for k, v in leaf.items()}, c, float(L.detach()))
    assert torch.equal(grads["ref"][1], grads["cpu"][1]) and int(grads["cpu"][1].sum()) >= 6
    for k in base:
        a, b = grads["ref"][0][k], grads["cpu"][0][k]
        if name == "LIF" and k in ("W", "Wr", "tm"):  # spike times are input times here
            assert float(b.abs().max()) == 0.0
            continue
        assert float(a.abs().max()) > 0, k
        assert float((a - b).abs().max()) <= 1e-9 * float(a.abs().max()), k


def test_gradients_match_finite_differences(lif):
    base, ch = _grad_case(seed=7, N=3)
    leaf = {k: v.clone().requires_grad_() for k, v in base.items()}
    L0, c0 = _loss(run_cpu, lif, leaf, ch)
    assert int(c0.sum()) >= 6
    L0.backward()
    eps = 1e-6
    checked = 0
    for name, b0 in base.items():
        for idx in np.ndindex(*b0.shape):
            if name == "t" and not math.isfinite(float(b0[idx])):
                continue
            p, m = b0.clone(), b0.clone()
            p[idx] += eps
            m[idx] -= eps
            with torch.no_grad():
                Lp, cp = _loss(run_cpu, lif, {**base, name: p}, ch)
                Lm, cm = _loss(run_cpu, lif, {**base, name: m}, ch)
            if not (torch.equal(cp, c0) and torch.equal(cm, c0)):
                continue  # a spike appeared or vanished: FD is meaningless there
            fd = float(Lp - Lm) / (2 * eps)
            an = float(leaf[name].grad[idx])
            assert abs(fd - an) <= 1e-5 * max(1.0, abs(fd)), (name, idx, fd, an)
            checked += 1
    assert checked >= 40  # of 12 W + 9 Wr + 17 t + 3 tau_m + 12 delays
    assert float(leaf["Wr"].grad.abs().sum()) > 0


# ---------------------------------------------------------------- network


from test_recurrent import SNN  # noqa: E402  (the same small recurrent network)


def test_network_sequential_cpu_uses_compiled_recurrent_loop(tmp_path, monkeypatch):
    path = tmp_path / "rec.snn"
    path.write_text(SNN)
    times = torch.tensor([[0.5, 1.0, 2.0, 4.0, 6.0, INF], [1.0, 3.0, 3.5, 5.0, 8.0, 9.0]], dtype=F64)
    ch = torch.tensor([[0, 1, 2, 3, 0, 0], [3, 2, 1, 0, 1, 2]])
    outs = {}
    for engine in ("torch-sequential", "sequential-cpu"):
        net = SpikingNetwork.from_file(path, engine=engine)
        out = net(times, ch, t_end=60.0)
        (_finite(out.spikes[0]).sum() + _finite(out.readout).sum()).backward()
        outs[engine] = (out, net.layers["hidden"].w_rec.grad.clone())
    (a, ga), (b, gb) = outs["torch-sequential"], outs["sequential-cpu"]
    assert int(a.counts[0].sum()) > 0 and torch.equal(a.counts[0], b.counts[0])
    assert float((_finite(a.spikes[0]) - _finite(b.spikes[0])).abs().max().detach()) <= 1e-12
    assert float((ga - gb).abs().max()) <= 1e-9 * float(ga.abs().max())
    # and it really is the compiled loop: poison the PyTorch one
    import spikescan.runtime.engines.recurrent as rec_mod

    monkeypatch.setattr(rec_mod, "run_recurrent_layer", None)
    net = SpikingNetwork.from_file(path, engine="sequential-cpu")
    assert torch.equal(net(times, ch, t_end=60.0).counts[0], b.counts[0])


# ---------------------------------------------------------------- vectorised loop (mlir_recurrent_vec)


def _bit_equal(a, b):
    assert torch.equal(a.counts, b.counts) and torch.equal(a.overflow, b.overflow)
    assert torch.equal(a.times, b.times)  # bit for bit, +inf padding included


@pytest.mark.parametrize("model,name,N,max_spikes,w", [
    ("models/cuba_lif.snn", "CubaLIF", 13, 64, (1.2, 0.8)),  # 3 vectors + a scalar tail
    ("models/cuba_lif.snn", "CubaLIF", 8, 3, (1.2, 0.8)),  # the cap (dead lanes)
    ("refractory", "CubaLIF", 11, 64, (1.2, 0.8)),
    ("models/adaptive_lif.snn", "AdaptiveLIF", 9, 64, (1.2, 0.8)),
    ("models/alpha_lif.snn", "AlphaLIF", 6, 64, (1.5, 0.8)),
    ("models/lif.snn", "LIF", 10, 64, (0.4, 0.3)),  # jump crossings (u >= theta at once)
])
def test_vector_loop_bit_identical_to_scalar_loop(tmp_path, model, name, N, max_spikes, w):
    ir = _neuron(model, name, tmp_path)
    times, ch, W, Wr, _ = _case(4, 3, 6, N, 40, span=40.0, w=w, wr=0.6)
    params = LIF if name == "CubaLIF" else ({"tau_m": 10.0} if name == "LIF" else None)
    kw = dict(max_spikes=max_spikes, on_overflow="flag", t_end=50.0)
    ref = run_cpu(ir, params, times, ch, W, Wr, impl="scalar", **kw)
    got = run_cpu(ir, params, times, ch, W, Wr, impl="vector", **kw)
    assert int(ref.counts.sum()) > 3 * N  # recurrent events delivered to every lane, many times
    if max_spikes == 3:
        assert bool(ref.overflow.all())
    _bit_equal(ref, got)


def test_vector_loop_bench_like_workload_and_per_sample_weights(lif):
    """Strong recurrence (most deliveries recurrent, many candidate solves per step), shared
    and per-sample input weights."""
    g = torch.Generator().manual_seed(11)
    B, C, N, n = 2, 50, 36, 60
    times = torch.sort(torch.rand(B, n, generator=g, dtype=F64) * 100.0, 1).values
    ch = torch.randint(0, C, (B, n), generator=g)
    Wr = torch.randn(N, N, generator=g, dtype=F64) * 0.25
    for W in (torch.randn(C, N, generator=g, dtype=F64) * 3.0, torch.randn(B, C, N, generator=g, dtype=F64) * 3.0):
        kw = dict(max_spikes=256, on_overflow="flag", t_end=100.0)
        ref = run_cpu(lif, LIF, times, ch, W, Wr, impl="scalar", **kw)
        got = run_cpu(lif, LIF, times, ch, W, Wr, impl="vector", **kw)
        assert int(ref.counts.sum()) > 10 * N
        _bit_equal(ref, got)


def test_auto_picks_vector_loop_only_where_it_applies(lif, monkeypatch):
    from spikescan.compiler.backends.mlir.cpu_recurrent import CompiledRecurrent

    times, ch, W, Wr, g = _case(6, 2, 5, 6, 20)
    dl = torch.rand(5, 6, generator=g, dtype=F64)
    tm = torch.full((6,), 10.0, dtype=F64) + torch.rand(6, generator=g, dtype=F64)
    ref = {k: run_cpu(lif, p, times, ch, W, Wr, d, impl="scalar")
           for k, p, d in (("shared", LIF, None), ("delays", LIF, dl), ("tau", {"tau_m": tm, "tau_s": 5.0}, None))}
    with pytest.raises(ValueError, match="shared"):
        run_cpu(lif, LIF, times, ch, W, Wr, dl, impl="vector")
    with pytest.raises(ValueError, match="impl"):
        run_cpu(lif, LIF, times, ch, W, Wr, impl="simd")
    # shared parameters, no delays: auto runs forward_vec (the scalar entry is poisoned) ...
    monkeypatch.setattr(CompiledRecurrent, "forward", None)
    _bit_equal(ref["shared"], run_cpu(lif, LIF, times, ch, W, Wr))
    monkeypatch.undo()
    # ... and the scalar loop with delays or per-neuron parameters (forward_vec poisoned)
    monkeypatch.setattr(CompiledRecurrent, "forward_vec", None)
    _bit_equal(ref["delays"], run_cpu(lif, LIF, times, ch, W, Wr, dl))
    _bit_equal(ref["tau"], run_cpu(lif, {"tau_m": tm, "tau_s": 5.0}, times, ch, W, Wr))


@pytest.mark.parametrize("model", ["models/cuba_lif.snn", "refractory"])
def test_vector_replay_gradients_identical_to_scalar_replay(tmp_path, model):
    """The backward replays the forward with the loop of the forward's impl: same tape, so the
    same gradients bit for bit (times, weights, w_rec and a shared tau_m tensor)."""
    ir = _neuron(model, "CubaLIF", tmp_path)
    base, ch = _grad_case(seed=9, N=7, delays=False)
    base["tm"] = torch.tensor(10.5, dtype=F64)
    grads = {}
    for impl in ("scalar", "vector"):
        leaf = {k: v.clone().requires_grad_() for k, v in base.items()}
        r = run_cpu(ir, {"tau_m": leaf["tm"], "tau_s": 5.0}, leaf["t"], ch, leaf["W"], leaf["Wr"], t_end=40.0,
                    max_spikes=16, impl=impl)
        (_finite(r.times) * torch.arange(1, r.times.shape[2] + 1, dtype=F64)).sum().backward()
        grads[impl] = (r, {k: v.grad for k, v in leaf.items()})
    _bit_equal(grads["scalar"][0], grads["vector"][0])
    assert int(grads["vector"][0].counts.sum()) >= 8
    for k in base:
        a, b = grads["scalar"][1][k], grads["vector"][1][k]
        assert float(a.abs().max()) > 0, k
        assert torch.equal(a, b), k


# ---------------------------------------------------------------- float32


def _f32_close(t64, t32):
    """Spike times equal to float32 precision: a few ulps of the largest time."""
    t64, t32 = t64.detach(), t32.detach()
    tol = 64 * torch.finfo(torch.float32).eps * max(1.0, float(_finite(t64).abs().max()))
    assert float((_finite(t64) - _finite(t32).to(F64)).abs().max()) <= tol


@pytest.mark.parametrize("impl,tau_grad", [("vector", False), ("scalar", False), ("vector", True)])
def test_float32_equals_float64(tmp_path, impl, tau_grad):
    """float32 on the compiled loop (the vector pass compares times bit for bit as i32 there):
    the same spike trains as float64 to f32 precision, gradients to a loose tolerance; vector
    without a parameter gradient takes the event-outer adjoint, the others the replay."""
    ir = _neuron("models/cuba_lif.snn", "CubaLIF", tmp_path)
    base, ch = _grad_case(seed=9, N=7, delays=False)
    base["tm"] = torch.tensor(10.5, dtype=F64)
    out = {}
    for dt in (F64, torch.float32):
        leaf = {k: v.to(dt).clone().requires_grad_(k != "tm" or tau_grad) for k, v in base.items()}
        r = run_cpu(ir, {"tau_m": leaf["tm"], "tau_s": 5.0}, leaf["t"], ch, leaf["W"], leaf["Wr"], t_end=40.0,
                    max_spikes=16, impl=impl)
        assert r.times.dtype == dt
        (_finite(r.times) * torch.arange(1, r.times.shape[2] + 1, dtype=dt)).sum().backward()
        out[dt] = (r, {k: v.grad.to(F64) for k, v in leaf.items() if v.grad is not None})
    (a, ga), (b, gb) = out[F64], out[torch.float32]
    assert int(a.counts.sum()) >= 20 and torch.equal(a.counts, b.counts)
    _f32_close(a.times, b.times)
    assert set(ga) == set(gb) == ({"W", "Wr", "t"} | ({"tm"} if tau_grad else set()))
    for k in ga:
        assert float(ga[k].abs().max()) > 0, k
        assert float((ga[k] - gb[k]).abs().max()) <= 1e-3 * float(ga[k].abs().max()), k


def test_network_float32_sequential_cpu(tmp_path):
    """A SpikingNetwork with recurrent(itself) moved to float32 on sequential-cpu: the compiled
    loop runs (the PyTorch loop is poisoned), trains equal the float64 ones, gradients close."""
    import spikescan.runtime.engines.recurrent as rec_mod

    path = tmp_path / "rec.snn"
    path.write_text(SNN)
    times = torch.tensor([[0.5, 1.0, 2.0, 4.0, 6.0, INF], [1.0, 3.0, 3.5, 5.0, 8.0, 9.0]], dtype=F64)
    ch = torch.tensor([[0, 1, 2, 3, 0, 0], [3, 2, 1, 0, 1, 2]])
    runs = {}
    for dt in (F64, torch.float32):
        torch.manual_seed(0)
        net = SpikingNetwork.from_file(path, engine="sequential-cpu").to(dt)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rec_mod, "run_recurrent_layer", None)
            out = net(times.to(dt), ch, t_end=60.0)
        assert out.spikes[0].dtype == dt
        _finite(out.spikes[0]).sum().backward()
        runs[dt] = (out, net.layers["hidden"].w_rec.grad.to(F64))
    (a, ga), (b, gb) = runs[F64], runs[torch.float32]
    assert int(a.counts[0].sum()) > 0 and torch.equal(a.counts[0], b.counts[0])
    _f32_close(a.spikes[0].detach(), b.spikes[0].detach())
    assert float(ga.abs().max()) > 0
    assert float((ga - gb).abs().max()) <= 1e-3 * float(ga.abs().max())
