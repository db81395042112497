"""Compiled readouts of SPIKING layers on sequential-cpu (compiler/backends/mlir/readout_spikes.py:
the first-spike loss's max potential, max_potential / li_integral with a threshold): against the
torch replay of the same spikes (observe_replay.py, values to 1e-12 relative, autograd gradients
through the layer's adjoint), against central finite differences in float64, bit-identical for 1
and 2 threads; an inconsistent spike list is refused (None: the caller falls back)."""

import math
from pathlib import Path

import pytest
import torch

from spikescan.compiler.driver import load_model
from spikescan.runtime.engines import parallel, readout_cpu, sequential_cpu

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]
T_END = 45.0
# (file, neuron, weight mean, std, kinds compiled)
MODELS = [("cuba_lif.snn", "CubaLIF", 1.2, 1.5, ("max_potential", "li_integral")),
          ("lif.snn", "LIF", 0.3, 0.4, ("max_potential", "li_integral")),
          ("alpha_lif.snn", "AlphaLIF", 2.5, 2.0, ("li_integral",)),
          ("adaptive_lif.snn", "AdaptiveLIF", 1.5, 1.5, ("li_integral",))]
CASES = [(m[0], m[1], m[2], m[3], k) for m in MODELS for k in m[4]]


@pytest.fixture(autouse=True)
def _restore():
    yield
    parallel.set_threads(None)
    readout_cpu.USE_COMPILED_READOUT = True


def _ir(fname, name):
    return load_model(ROOT / "models" / fname).neurons[name]


def _inputs(seed, mean, std, B=3, n=30, C=5, N=6):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * 40.0
    times[0, -3:] = math.inf
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.randn(C, N, generator=g, dtype=F64) * std + mean
    return times, ch, W


def _run(ir, times, ch, W, kind, compiled):
    times = times.clone().requires_grad_(True)
    W = W.clone().requires_grad_(True)
    readout_cpu.USE_COMPILED_READOUT = compiled
    try:
        res = sequential_cpu.run_layer(ir, {}, times, ch, W, observe=kind, t_end=T_END, max_spikes=32)
    finally:
        readout_cpu.USE_COMPILED_READOUT = True
    coef = torch.linspace(-1.0, 1.5, res.observed.numel(), dtype=F64).reshape(res.observed.shape)
    # the loss reads the spike times too: their gradient meets the readout's partial in the layer
    first = torch.where(torch.isfinite(res.times[..., 0]), res.times[..., 0], torch.zeros((), dtype=F64))
    loss = (res.observed * coef).sum() + 0.01 * first.sum()
    gt, gw = torch.autograd.grad(loss, [times, W])
    return res.observed.detach(), gt, gw, res.counts


def _close(a, b, rel=1e-12):
    assert float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) <= rel


@pytest.mark.parametrize("fname,name,mean,std,kind", CASES)
def test_spiking_readout_matches_replay(fname, name, mean, std, kind):
    ir = _ir(fname, name)
    times, ch, W = _inputs(1, mean, std)
    assert readout_cpu.fallback_reason(ir, {}, times, W, None, None, kind) is None
    o1, gt1, gw1, counts = _run(ir, times, ch, W, kind, True)
    o2, gt2, gw2, _ = _run(ir, times, ch, W, kind, False)
    assert int(counts.sum()) > 0  # the layer spikes: resets inside the readout
    _close(o1, o2), _close(gt1, gt2), _close(gw1, gw2)


@pytest.mark.parametrize("kind", ["max_potential", "li_integral"])
def test_spiking_readout_finite_differences(kind):
    ir = _ir("cuba_lif.snn", "CubaLIF")
    times, ch, W = _inputs(2, 1.0, 1.2, B=2, n=12, N=3)
    times[0, -3:] = torch.tensor([31.0, 33.5, 36.0], dtype=F64)
    o, gt, gw, counts = _run(ir, times, ch, W, kind, True)
    assert int(counts.sum()) > 0
    coef = torch.linspace(-1.0, 1.5, o.numel(), dtype=F64).reshape(o.shape)

    def loss(t, w):
        with torch.no_grad():
            r = sequential_cpu.run_layer(ir, {}, t, ch, w, observe=kind, t_end=T_END, max_spikes=32)
            first = torch.where(torch.isfinite(r.times[..., 0]), r.times[..., 0], torch.zeros((), dtype=F64))
            return float((r.observed * coef).sum() + 0.01 * first.sum()), r.counts

    h = 1e-6
    checked = 0
    for which, idx in [("w", (0, 0)), ("w", (2, 1)), ("w", (4, 2)), ("t", (0, 2)), ("t", (1, 5))]:
        base = W if which == "w" else times
        p, m = base.clone(), base.clone()
        p[idx] += h
        m[idx] -= h
        (lp, cp), (lm, cm) = (loss(times, p), loss(times, m)) if which == "w" else (loss(p, W), loss(m, W))
        if not (torch.equal(cp, counts) and torch.equal(cm, counts)):
            continue  # a spike appeared or vanished: not differentiable there
        fd = (lp - lm) / (2 * h)
        got = float((gw if which == "w" else gt)[idx])
        assert abs(fd - got) <= 1e-5 * max(1.0, abs(fd)), (which, idx, fd, got)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("kind", ["max_potential", "li_integral"])
def test_spiking_readout_threads_bit_identical(kind):
    ir = _ir("cuba_lif.snn", "CubaLIF")
    times, ch, W = _inputs(3, 1.2, 1.5, B=11)
    parallel.set_threads(1)
    a = _run(ir, times, ch, W, kind, True)
    parallel.set_threads(2)
    b = _run(ir, times, ch, W, kind, True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_inconsistent_spikes_are_refused():
    """A spike where u is far below theta does not replay: None, so sequential_cpu falls back."""
    ir = _ir("cuba_lif.snn", "CubaLIF")
    times = torch.tensor([[1.0, 2.0]], dtype=F64)
    ch = torch.zeros((1, 2), dtype=torch.int64)
    W = torch.full((1, 2), 0.1, dtype=F64)
    fake = torch.tensor([[[5.0], [math.inf]]], dtype=F64)
    counts = torch.tensor([[1, 0]])
    assert readout_cpu.observe(ir, {}, times, ch, W, None, "max_potential", T_END, spikes=fake,
                               counts=counts) is None
    real = torch.full((1, 2, 1), math.inf, dtype=F64)
    out = readout_cpu.observe(ir, {}, times, ch, W, None, "max_potential", T_END, spikes=real,
                              counts=torch.zeros((1, 2), dtype=torch.int64))
    assert out is not None and bool((out > 0).all())


@pytest.mark.slow  # ~10 s: the mpmath event loop and readout (the replay comparison runs by default)
def test_spiking_readout_against_mpmath():
    """CubaLIF lanes: spike times from the 30-digit event loop (mpref.mp_simulate), then the max
    potential and integral with those resets (mpref.mp_readout) against the compiled readout."""
    from mpref import HAND_MODELS, mp_readout, mp_simulate

    ir = _ir("cuba_lif.snn", "CubaLIF")
    times, ch, W = _inputs(4, 1.5, 1.0, B=2, n=8, N=2)
    obs = {}
    for kind in ("max_potential", "li_integral"):
        res = sequential_cpu.run_layer(ir, {}, times, ch, W, observe=kind, t_end=T_END, max_spikes=32)
        obs[kind] = res.observed
    assert int(res.counts.sum()) > 0
    m = HAND_MODELS["CubaLIF"]({})  # state order (v, i); c = v
    for b, j in ((0, 0), (1, 1)):
        fin = torch.isfinite(times[b])
        tb, wb = times[b][fin].tolist(), W[ch[b][fin], j].tolist()
        spk = mp_simulate(m["A"], m["a0"], m["B"], m["c"], m["theta"], m["R"], m["r"], m["t_ref"], m["x0"],
                          tb, wb, t_end=T_END, dps=30)
        assert len(spk) == int(res.counts[b, j])
        ref = mp_readout(m["A"], m["a0"], m["B"], m["c"], m["x0"], tb, wb, T_END, grid=12, resets=spk,
                         R=m["R"], r=m["r"])
        for kind, rv in zip(("max_potential", "li_integral"), ref):
            got = float(obs[kind][b, j])
            assert abs(got - float(rv)) <= 1e-12 * max(1.0, abs(float(rv))), (kind, b, j, got, float(rv))
