"""The vectorised shared-parameter event loop (compiler/backends/mlir/shared.py) against the
scalar event-outer loop (mlir_emit.build_layer_shared_scalar), the general per-neuron loop
(mlir_emit.build_layer), the 50-digit mpmath reference and the PyTorch reference's gradients."""

import ctypes
import dataclasses
import math

import mpmath as mp
import pytest
import sympy
import torch

from mpref import simulate_model
from spikescan.compiler.backends.mlir import cpu_jit
from spikescan.compiler.driver import load_model
from spikescan.runtime.engines import sequential_cpu, torch_sequential
from repo_paths import repo

MODELS = {"LIF": "lif", "CubaLIF": "cuba_lif", "AlphaLIF": "alpha_lif", "AdaptiveLIF": "adaptive_lif"}
F64 = torch.float64


def neuron(name):
    return load_model(repo(f"models/{MODELS[name]}.snn")).neurons[name]


def inputs(seed, B, n, C, N, span, mean, std, per_sample=False):
    """Poisson-like input with Gaussian weights around `mean` (SHD-like when mean ~ 0.02)."""
    g = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(B, n, generator=g, dtype=F64) * span, dim=1).values
    ch = torch.randint(0, C, (B, n), generator=g)
    shape = (B, C, N) if per_sample else (C, N)
    W = mean + std * torch.randn(*shape, generator=g, dtype=F64)
    return times, ch, W


def shared_direct(nir, times, ch, W, impl, max_spikes=64, t_end=None, params=None):
    """Call CompiledNeuron.layer_shared the way sequential_cpu.run_layer does."""
    eng = cpu_jit.compile_neuron(nir, "f64")
    B, n = times.shape
    N = W.shape[-1]
    pvec = sequential_cpu._param_vectors(nir, params or {}, N, F64)
    fin = times < math.inf
    nvalid = fin.sum(1).to(torch.int64)
    order = torch.argsort(times, dim=1, stable=True)
    if t_end is None:
        horizon = times.masked_fill(~fin, 0.0).amax(1) + sequential_cpu.TAIL_TAUS * sequential_cpu._slowest_tau(nir, pvec)
    else:
        horizon = torch.full((B,), float(t_end), dtype=F64)
    out = torch.full((B, N, max_spikes), math.inf, dtype=F64)
    counts = torch.zeros((B, N), dtype=torch.int64)
    over = torch.zeros((B, N), dtype=torch.int64)
    eng.layer_shared(times.contiguous(), ch.contiguous(), order, W, nvalid, horizon.contiguous(), pvec,
                     out, counts, over, impl=impl)
    return out, counts, over


def per_neuron(nir, times, ch, W, monkeypatch, **kw):
    monkeypatch.setattr(sequential_cpu, "USE_SHARED_PATH", False)
    try:
        return sequential_cpu.run_layer(nir, {}, times, ch, W, on_overflow="flag", **kw)
    finally:
        monkeypatch.setattr(sequential_cpu, "USE_SHARED_PATH", True)


def assert_same(vec, ref):
    out, counts, over = vec
    S = ref.times.shape[2]
    assert torch.equal(counts, ref.counts)
    assert torch.equal(over.bool().any(1), ref.overflow)
    assert torch.equal(out[:, :, :S], ref.times)  # bit for bit, padding included
    assert torch.isinf(out[:, :, S:]).all()


@pytest.mark.parametrize("name", ["LIF", "CubaLIF", "AlphaLIF", "AdaptiveLIF"])
@pytest.mark.parametrize("N, per_sample", [(11, False), (16, True)])
def test_vector_loop_is_bitwise_the_scalar_loops(name, N, per_sample, monkeypatch):
    """N = 11: two whole vectors of 4 lanes and a scalar tail of 3; per-sample weights [B, C, N]."""
    nir = neuron(name)
    mean = 0.03 if name == "LIF" else 0.1  # mean drive near threshold
    times, ch, W = inputs(1, 2, 400, 30, N, 200.0, mean, 0.12, per_sample)
    times[1, 350:] = math.inf  # padding
    vec = shared_direct(nir, times, ch, W, "vector")
    sca = shared_direct(nir, times, ch, W, "scalar")
    ref = per_neuron(nir, times, ch, W, monkeypatch)
    assert int(ref.counts.sum()) >= 2 * N  # most neurons spike, several times
    assert_same(vec, ref)
    assert_same(sca, ref)


def test_f32_vector_loop(monkeypatch):
    """f32: 8 lanes per vector (N = 19: two whole vectors and a tail of 3), bit for bit."""
    nir = neuron("CubaLIF")
    times, ch, W = inputs(7, 1, 400, 30, 19, 200.0, 0.1, 0.12)
    times, W = times.float(), W.float()
    vec = sequential_cpu.run_layer(nir, {}, times, ch, W, on_overflow="flag")
    ref = per_neuron(nir, times, ch, W, monkeypatch)
    assert vec.times.dtype == torch.float32 and int(ref.counts.sum()) >= 19
    assert torch.equal(vec.counts, ref.counts) and torch.equal(vec.times, ref.times)


def test_refractory_spike_cap_and_t_end(monkeypatch):
    """The refractory skip (whole interval refractory), the spike cap (dead neurons: refractory
    forever) and a horizon t_end before the last event, all in the vector pass."""
    nir = dataclasses.replace(neuron("CubaLIF"), t_ref=sympy.Float(1.5))
    times, ch, W = inputs(2, 2, 500, 20, 13, 120.0, 0.25, 0.1)
    for kw in (dict(max_spikes=64), dict(max_spikes=4), dict(max_spikes=64, t_end=80.0)):
        vec = shared_direct(nir, times, ch, W, "vector", **kw)
        ref = per_neuron(nir, times, ch, W, monkeypatch, **kw)
        assert int(ref.counts.sum()) >= 13 * 3
        if kw["max_spikes"] == 4:
            assert bool(ref.overflow.all())
        assert_same(vec, ref)


@pytest.mark.parametrize("lanes, mode", [(8, "adaptive"), (4, "branchy"), (4, "branchless")])
def test_other_shapes_compile_and_agree(lanes, mode, monkeypatch):
    """Lane count and pass-1 shape are compile-time choices: 8 lanes (two AVX2 registers per
    op; N = 13: one whole vector and a tail of 5), the quick test always behind a branch, or
    never: the same bits as the default."""
    from torch_mlir import execution_engine, passmanager

    from spikescan.compiler.backends.mlir import shared as mlir_shared
    from spikescan.compiler.backends.mlir.emit import build_module

    nir = neuron("CubaLIF")
    times, ch, W = inputs(3, 1, 300, 20, 13, 150.0, 0.1, 0.12)
    want = shared_direct(nir, times, ch, W, "vector")
    monkeypatch.setattr(mlir_shared, "MODE", mode)
    mod = build_module(nir, "f64", lanes=lanes)
    with mod.context:
        passmanager.PassManager.parse(cpu_jit.LOWER).run(mod.operation)
        eng = execution_engine.ExecutionEngine(mod, opt_level=3)
    compiled = cpu_jit.compile_neuron(nir, "f64")
    monkeypatch.setattr(compiled, "engine", eng)
    got = shared_direct(nir, times, ch, W, "vector")
    assert int(want[1].sum()) >= 5
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_shd_like_input_matches_mpmath():
    """SHD-like statistics (mean current near threshold, so the cheap test flags many
    neuron-events and the exact quick test in the vector pass decides them): spike times of
    the vector loop within 1e-12 ms of the 50-digit reference."""
    nir = neuron("CubaLIF")
    times, ch, W = inputs(4, 1, 600, 100, 6, 70.0, 0.03, 0.05)  # 8.6 events/ms as SHD
    res = sequential_cpu.run_layer(nir, {}, times, ch, W)
    total = 0
    for j in (2, 4):
        with mp.workdps(50):
            ref = simulate_model("CubaLIF", None, times[0].tolist(), W[ch[0], j].tolist())
        got = res.times[0, j, : int(res.counts[0, j])].tolist()
        assert len(got) == len(ref)
        assert all(abs(a - float(r)) <= 1e-12 for a, r in zip(got, ref))
        total += len(ref)
    assert total >= 4


def test_backward_replays_the_vector_forward():
    """The adjoint loop replays the per-neuron forward (lane_forward): it must see the vector
    loop's spike counts (else it raises), and its gradients match torch-sequential's."""
    nir = neuron("CubaLIF")
    times, ch, W = inputs(5, 2, 150, 12, 9, 60.0, 0.12, 0.1)
    grads = []
    for run in (sequential_cpu.run_layer, torch_sequential.run_layer):
        Wl = W.clone().requires_grad_()
        tl = times.clone().requires_grad_()
        res = run(nir, {}, tl, ch, Wl)
        o = res.times
        loss = torch.where(torch.isfinite(o), o, torch.zeros((), dtype=F64)).sum()
        grads.append((int(res.counts.sum()), *torch.autograd.grad(loss, [tl, Wl])))
    (n1, gt1, gw1), (n2, gt2, gw2) = grads
    assert n1 == n2 >= 5
    assert torch.allclose(gw1, gw2, rtol=1e-9, atol=1e-9)
    assert torch.allclose(gt1, gt2, rtol=1e-9, atol=1e-9)


def test_impl_argument_is_checked():
    nir = neuron("LIF")
    times, ch, W = inputs(6, 1, 10, 2, 3, 10.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="impl"):
        shared_direct(nir, times, ch, W, "simd")


def test_bench_script_runs_on_tiny_sizes(tmp_path):
    """bench/cpu_forward.py: both loops timed on both workloads, identical spike trains."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "cpu_forward.jsonl"
    r = subprocess.run([sys.executable, str(repo / "bench" / "cpu_forward.py"), "--quick", "--batch", "1",
                        "--hidden", "21", "--duration", "200", "--repeats", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    timing = [x for x in recs if x.get("kind") == "timing"]
    assert {(x["workload"], x["loop"]) for x in timing} == {
        (w, lp) for w in ("shd-like", "pure-update") for lp in ("old", "new")}
    assert all(x["bitwise_equal_old_new"] and x["ns_per_neuron_event_cpu"] > 0 for x in timing)
    assert all(x["spikes"] == 0 for x in timing if x["workload"] == "pure-update")
    assert any(x["spikes"] > 0 for x in timing if x["workload"] == "shd-like")
    assert len([x for x in recs if x.get("kind") == "ratio"]) == 2
