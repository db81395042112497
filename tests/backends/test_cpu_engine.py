"""The JIT-compiled sequential CPU engine (runtime/engines/sequential_cpu.py) against the
independent 50-digit mpmath reference (tests/mpref.py) and closed forms."""

import dataclasses
import math

import mpmath as mp
import pytest
import sympy
import torch

from mpref import HAND_MODELS, mp_simulate, peak_cuba, simulate_model
from spikescan.compiler.driver import load_model
from spikescan.runtime.engines.result import SpikeCapExceeded
from spikescan.runtime.engines.sequential_cpu import run_layer
from repo_paths import repo

MODELS = {"LIF": "lif", "CubaLIF": "cuba_lif", "AlphaLIF": "alpha_lif", "AdaptiveLIF": "adaptive_lif"}
TOL64 = 1e-12  # ms


def neuron(name):
    return load_model(repo(f"models/{MODELS[name]}.snn")).neurons[name]


def random_input(seed, n, C, N, span, scale, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(1, n, generator=g, dtype=torch.float64) * span).values.to(dtype)
    ch = torch.randint(0, C, (1, n), generator=g)
    W = ((torch.rand(C, N, generator=g, dtype=torch.float64) - 0.25) * scale).to(dtype)
    return times, ch, W


def reference(name, params, times, weights, **kw):
    with mp.workdps(50):
        return simulate_model(name, params, [float(t) for t in times], [float(w) for w in weights], **kw)


def assert_match(res, b, j, ref, tol):
    got = res.times[b, j, : int(res.counts[b, j])].tolist()
    assert len(got) == len(ref), f"neuron {j}: {len(got)} spikes vs {len(ref)} in the reference"
    for g, r in zip(got, ref):
        assert abs(g - float(r)) <= tol, f"neuron {j}: {g} vs {mp.nstr(r, 20)}"
    assert torch.isinf(res.times[b, j, len(got):]).all()


@pytest.mark.parametrize("name, scale", [("LIF", 0.6), ("CubaLIF", 1.6), ("AlphaLIF", 1.6), ("AdaptiveLIF", 1.6)])
def test_random_inputs_match_mpref(name, scale):
    times, ch, W = random_input(7, 120, 6, 2, 150.0, scale)
    res = run_layer(neuron(name), {}, times, ch, W)
    total = 0
    for j in range(2):
        ref = reference(name, None, times[0], W[ch[0], j])
        assert_match(res, 0, j, ref, TOL64)
        total += len(ref)
    assert total >= 3  # several output spikes, or the test shows nothing


@pytest.mark.parametrize("name", ["CubaLIF", "AlphaLIF"])
def test_equal_time_constants(name):
    p = dict(tau_m=10.0, tau_s=10.0)
    times, ch, W = random_input(2, 80, 4, 2, 100.0, 0.5)
    res = run_layer(neuron(name), p, times, ch, W)
    total = 0
    for j in range(2):
        ref = reference(name, p, times[0], W[ch[0], j])
        assert_match(res, 0, j, ref, TOL64)
        total += len(ref)
    assert total >= 2


@pytest.mark.parametrize("tau_s", [5.0, 20.0])
@pytest.mark.parametrize("rel, spikes", [(1e-9, 1), (-1e-9, 0)])
def test_grazing_single_input(tau_s, rel, spikes):
    """The peak of v is theta (1 + rel): a crossing exists iff rel > 0. The spike time's own
    condition number is 1/u'(t*) ~ 1/sqrt(rel), so the tolerance is eps/|u'(t*)| scaled."""
    with mp.workdps(50):
        tp, v1 = peak_cuba(1, 20, tau_s)
        w = float(1 / v1 * (1 + mp.mpf(rel)))
    p = dict(tau_s=tau_s)
    times = torch.tensor([[3.0]], dtype=torch.float64)
    res = run_layer(neuron("CubaLIF"), p, times, torch.zeros(1, 1, dtype=torch.long),
                    torch.tensor([[w]], dtype=torch.float64))
    ref = reference("CubaLIF", p, [3.0], [w])
    assert len(ref) == spikes
    slope = math.sqrt(2 * abs(rel)) / 20  # ~ u'(t*) for u'' ~ -1/tau^2 near the peak
    assert_match(res, 0, 0, ref, TOL64 + 64 * 2.2e-16 / slope)


def test_f32_agreement():
    times, ch, W = random_input(3, 100, 6, 2, 120.0, 1.6)
    res = run_layer(neuron("CubaLIF"), {}, times.float(), ch, W.float())
    assert res.times.dtype == torch.float32
    total = 0
    for j in range(2):
        ref = reference("CubaLIF", None, times[0].float().double(), W.float().double()[ch[0], j])
        assert_match(res, 0, j, ref, 1e-4)
        total += len(ref)
    assert total >= 2


def test_refractory_period_and_reset_value():
    nir = dataclasses.replace(neuron("CubaLIF"), t_ref=sympy.Float(2.5))
    p = dict(v_reset=-0.2)
    times, ch, W = random_input(4, 60, 3, 2, 60.0, 2.5)
    res = run_layer(nir, p, times, ch, W)
    total = 0
    for j in range(2):
        m = HAND_MODELS["CubaLIF"](dict(v_reset=-0.2, t_ref=2.5))
        with mp.workdps(50):
            ref = mp_simulate(m["A"], m["a0"], m["B"], m["c"], m["theta"], m["R"], m["r"], m["t_ref"],
                              m["x0"], times[0].tolist(), W[ch[0], j].tolist())
        assert all(b - a >= 2.5 for a, b in zip(ref, ref[1:]))
        assert_match(res, 0, j, ref, TOL64)
        total += len(ref)
    assert total >= 3


def test_delays_per_neuron_params_and_batch():
    g = torch.Generator().manual_seed(5)
    times, ch, W = random_input(5, 40, 3, 3, 50.0, 2.5)
    times = torch.cat([times, times.flip(1)])  # unsorted second sample: the engine sorts
    ch = torch.cat([ch, ch.flip(1)])
    times[1, :5] = math.inf  # padding
    delays = torch.rand(3, 3, generator=g, dtype=torch.float64) * 5
    tau_m = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    res = run_layer(neuron("CubaLIF"), dict(tau_m=tau_m), times, ch, W, delays)
    total = 0
    for b in range(2):
        ok = torch.isfinite(times[b])
        tb, cb = times[b][ok], ch[b][ok]
        for j in range(3):
            arr = tb + delays[cb, j]
            ref = reference("CubaLIF", dict(tau_m=float(tau_m[j])), arr, W[cb, j])
            assert_match(res, b, j, ref, TOL64)
            total += len(ref)
    assert total >= 3


def test_spike_cap_raise_and_flag():
    times = torch.linspace(1, 50, 50, dtype=torch.float64)[None]
    ch = torch.zeros(1, 50, dtype=torch.long)
    W = torch.full((1, 2), 5.0, dtype=torch.float64)
    with pytest.raises(SpikeCapExceeded, match="sample 0"):
        run_layer(neuron("LIF"), {}, times, ch, W, max_spikes=10)
    res = run_layer(neuron("LIF"), {}, times, ch, W, max_spikes=10, on_overflow="flag")
    assert bool(res.overflow[0]) and res.counts.tolist() == [[10, 10]]
    assert torch.equal(res.times[0, 0], times[0, :10])  # every input spikes LIF at once


def test_t_end_cuts_the_spike_train():
    times, ch, W = random_input(6, 50, 3, 2, 60.0, 2.5)
    full = run_layer(neuron("CubaLIF"), {}, times, ch, W)
    cut = run_layer(neuron("CubaLIF"), {}, times, ch, W, t_end=30.0)
    for j in range(2):
        f = full.times[0, j, : int(full.counts[0, j])]
        assert torch.equal(cut.times[0, j, : int(cut.counts[0, j])], f[f <= 30.0])
    assert int(cut.counts.sum()) < int(full.counts.sum())


@pytest.mark.parametrize("name", ["CubaLIF", "AdaptiveLIF"])
def test_event_outer_path_equals_per_neuron_path(name, monkeypatch):
    """The shared-parameter event-outer loop and the general per-neuron loop run the same
    formulas: identical spike trains, bit for bit (also with per-sample weights [B, C, N])."""
    from spikescan.runtime.engines import sequential_cpu

    g = torch.Generator().manual_seed(8)
    times = torch.rand(3, 300, generator=g, dtype=torch.float64) * 200
    times[2, 250:] = math.inf
    ch = torch.randint(0, 20, (3, 300), generator=g)
    for W in (torch.randn(20, 16, generator=g, dtype=torch.float64) * 0.5 + 0.2,
              torch.randn(3, 20, 16, generator=g, dtype=torch.float64) * 0.5 + 0.2):
        fast = run_layer(neuron(name), {}, times, ch, W, max_spikes=128)
        monkeypatch.setattr(sequential_cpu, "USE_SHARED_PATH", False)
        slow = run_layer(neuron(name), {}, times, ch, W, max_spikes=128)
        monkeypatch.setattr(sequential_cpu, "USE_SHARED_PATH", True)
        assert int(fast.counts.sum()) > 20
        assert torch.equal(fast.counts, slow.counts) and torch.equal(fast.times, slow.times)


def test_readout_layers_agree_with_torch_sequential():
    """Readouts (no threshold) run on the compiled readout (runtime/engines/readout_cpu.py),
    not on the Python loop; the value agrees with the reference engine to rounding."""
    li = load_model(repo("models/li_readout.snn")).neurons["LI"]
    times, ch, W = random_input(9, 30, 3, 2, 40.0, 1.0)
    res = run_layer(li, {}, times, ch, W, observe="li_integral", t_end=60.0)
    from spikescan.runtime.engines.torch_sequential import run_layer as ref_layer

    ref = ref_layer(li, {}, times, ch, W, observe="li_integral", t_end=60.0)
    assert res.observed is not None and ref.observed.abs().max() > 1.0
    assert torch.allclose(res.observed, ref.observed, rtol=1e-12, atol=0)
