"""Compiled readouts of sequential-cpu (runtime/engines/readout_cpu.py, compiler/backends/
mlir/readout.py): max_potential and li_integral of neurons without threshold, against the torch
replay (runtime/engines/observe_replay.py, the reference: values to 1e-12 relative, autograd
gradients), against an mpmath reference (tests/mpref.mp_readout), against central finite
differences in float64; bit-identical for 1 and 2 engine threads; the replay is chosen
automatically where the compiled readout does not apply."""

import math
from pathlib import Path

import pytest
import torch

from spikescan.compiler.driver import load_model
from spikescan.runtime.engines import parallel, readout_cpu, sequential_cpu
from mpref import mp_readout

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]
KINDS = ("max_potential", "li_integral")
T_END = 40.0

LI1 = """neuron LI1 {
    params { tau = 10 ms }
    state  { v = 0.0 }
    dynamics { dv/dt = -v / tau }
    on input(w) { v += w }
}
"""
# three modes: u can have two stationary points in one interval (the general isolation)
LI3 = """neuron LI3 {
    params { tau_m = 20 ms   tau_s = 5 ms   tau_r = 2 ms }
    state  { v = 0.0   i = 0.0   j = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = (j - i) / tau_s
        dj/dt = -j / tau_r
    }
    on input(w) { j += w }
}
"""


@pytest.fixture(autouse=True)
def _restore():
    yield
    parallel.set_threads(None)
    readout_cpu.USE_COMPILED_READOUT = True


@pytest.fixture(scope="module")
def li():
    return load_model(ROOT / "models" / "li_readout.snn").neurons["LI"]


def _neuron(tmp_path, text, name):
    p = tmp_path / f"{name}.snn"
    p.write_text(text)
    return load_model(p).neurons[name]


def _inputs(seed, B=4, n=30, C=5, N=6, per_sample=False):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * 45.0  # some after t_end: ignored
    times[0, -4:] = math.inf  # padding
    times[1, 3] = T_END  # an arrival exactly at t_end is applied
    times[min(2, B - 1), 5] = times[min(2, B - 1), 6]  # equal times
    ch = torch.randint(0, C, (B, n), generator=g)
    shape = (B, C, N) if per_sample else (C, N)
    W = torch.randn(*shape, generator=g, dtype=F64) * 1.5 + 0.3  # both signs: maxima at arrivals too
    return times, ch, W


def _run(ir, times, ch, W, kind, compiled, params=None, t_end=T_END):
    times = times.clone().requires_grad_(True)
    W = W.clone().requires_grad_(True)
    readout_cpu.USE_COMPILED_READOUT = compiled
    try:
        res = sequential_cpu.run_layer(ir, params or {}, times, ch, W, observe=kind, t_end=t_end)
    finally:
        readout_cpu.USE_COMPILED_READOUT = True
    coef = torch.linspace(-1.0, 1.5, res.observed.numel(), dtype=F64).reshape(res.observed.shape)
    gt, gw = torch.autograd.grad((res.observed * coef).sum(), [times, W])
    return res.observed.detach(), gt, gw


def _close(a, b, rel=1e-12):
    scale = b.abs().max().clamp_min(1e-300)
    assert float((a - b).abs().max() / scale) <= rel, (a, b)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_compiled_matches_replay(li, kind, per_sample):
    times, ch, W = _inputs(1, per_sample=per_sample)
    assert readout_cpu.applicable(li, {}, times, W, None, None, kind)
    o1, gt1, gw1 = _run(li, times, ch, W, kind, True)
    o2, gt2, gw2 = _run(li, times, ch, W, kind, False)
    _close(o1, o2)
    _close(gt1, gt2)
    _close(gw1, gw2)
    assert float(gt1.abs().sum()) > 0 and float(gw1.abs().sum()) > 0
    assert float(gt1[0, -4:].abs().sum()) == 0.0  # padding
    late = times > T_END
    assert float(gt1[late].abs().sum()) == 0.0  # arrivals after t_end change nothing


@pytest.mark.parametrize("kind", KINDS)
def test_equal_time_constants_and_one_state(li, tmp_path, kind):
    times, ch, W = _inputs(2)
    p = {"tau_m": 8.0, "tau_s": 8.0}  # t exp(-t/tau) terms: the special functions of the printer
    o1, gt1, gw1 = _run(li, times, ch, W, kind, True, p)
    o2, gt2, gw2 = _run(li, times, ch, W, kind, False, p)
    _close(o1, o2), _close(gt1, gt2), _close(gw1, gw2)
    li1 = _neuron(tmp_path, LI1, "LI1")
    assert readout_cpu.applicable(li1, {}, times, W, None, None, kind)
    o1, gt1, gw1 = _run(li1, times, ch, W, kind, True)
    o2, gt2, gw2 = _run(li1, times, ch, W, kind, False)
    _close(o1, o2), _close(gt1, gt2), _close(gw1, gw2)


def test_against_mpmath(li):
    """A few lanes against the independent 30-digit reference (no sympy, no chain)."""
    times, ch, W = _inputs(3, B=2, n=8, N=2)
    tm, ts = 20.0, 5.0
    A = [[-1 / ts, 0.0], [1 / tm, -1 / tm]]  # LI's IR state order: (i, v)
    obs = [_run(li, times, ch, W, kind, True)[0] for kind in KINDS]
    for b in range(2):
        for j in range(2):
            fin = torch.isfinite(times[b])
            ref = mp_readout(A, [0, 0], [1, 0], [0, 1], [0, 0], times[b][fin].tolist(),
                             W[ch[b][fin], j].tolist(), T_END, grid=12)
            for o, r in zip(obs, ref):
                assert abs(float(o[b, j]) - float(r)) <= 1e-12 * max(1.0, abs(float(r))), (b, j)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite_differences(li, kind):
    times, ch, W = _inputs(4, B=2, n=10, N=3)
    times[0, -4:] = 30.0 + torch.arange(4, dtype=F64)  # no padding: every time is perturbed
    _, gt, gw = _run(li, times, ch, W, kind, True)
    coef = torch.linspace(-1.0, 1.5, 6, dtype=F64).reshape(2, 3)

    def loss(t, w):
        with torch.no_grad():
            return float((sequential_cpu.run_layer(li, {}, t, ch, w, observe=kind, t_end=T_END).observed
                          * coef).sum())

    h = 1e-6
    for idx in [(0, 1), (0, 7), (1, 2), (1, 9)]:
        if float(times[idx]) > T_END - 1e-3:
            continue
        tp, tm_ = times.clone(), times.clone()
        tp[idx] += h
        tm_[idx] -= h
        fd = (loss(tp, W) - loss(tm_, W)) / (2 * h)
        assert abs(fd - float(gt[idx])) <= 1e-6 * max(1.0, abs(fd)), (idx, fd, float(gt[idx]))
    for idx in [(0, 0), (2, 1), (4, 2), (3, 0)]:
        wp, wm = W.clone(), W.clone()
        wp[idx] += h
        wm[idx] -= h
        fd = (loss(times, wp) - loss(times, wm)) / (2 * h)
        assert abs(fd - float(gw[idx])) <= 1e-6 * max(1.0, abs(fd)), (idx, fd, float(gw[idx]))


@pytest.mark.parametrize("kind", KINDS)
def test_threads_bit_identical(li, kind):
    times, ch, W = _inputs(5, B=11)
    parallel.set_threads(1)
    a = _run(li, times, ch, W, kind, True)
    parallel.set_threads(2)
    b = _run(li, times, ch, W, kind, True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_float32(li):
    times, ch, W = _inputs(6)
    o32 = sequential_cpu.run_layer(li, {}, times.float(), ch, W.float(), observe="max_potential",
                                   t_end=T_END).observed
    o64 = sequential_cpu.run_layer(li, {}, times, ch, W, observe="max_potential", t_end=T_END).observed
    assert o32.dtype == torch.float32
    assert float((o32.double() - o64).abs().max()) <= 1e-4 * float(o64.abs().max())


def test_fallback_to_replay(li, tmp_path):
    """Learned time constants, delays, port maps and neurons with several stationary points per
    interval take the replay (chosen automatically, the reason stated), with the same answers."""
    times, ch, W = _inputs(7)
    tau = torch.tensor(20.0, dtype=F64, requires_grad=True)
    why = readout_cpu.fallback_reason(li, {"tau_m": tau}, times, W, None, None, "max_potential")
    assert why and "learned" in why
    res = sequential_cpu.run_layer(li, {"tau_m": tau}, times, ch, W, observe="max_potential", t_end=T_END)
    (g,) = torch.autograd.grad(res.observed.sum(), [tau])
    assert torch.isfinite(g) and float(g) != 0.0
    assert "delays" in readout_cpu.fallback_reason(li, {}, times, W, torch.zeros_like(W), None, "max_potential")
    assert "port map" in readout_cpu.fallback_reason(li, {}, times, W, None, object(), "max_potential")
    per_neuron = {"tau_m": torch.linspace(10.0, 20.0, W.shape[1], dtype=F64)}
    assert "per neuron" in readout_cpu.fallback_reason(li, per_neuron, times, W, None, None, "li_integral")
    li3 = _neuron(tmp_path, LI3, "LI3")
    why = readout_cpu.fallback_reason(li3, {}, times, W, None, None, "max_potential")
    assert why and "stationary" in why
    assert readout_cpu.applicable(li3, {}, times, W, None, None, "li_integral")
    o1, gt1, gw1 = _run(li3, times, ch, W, "li_integral", True)
    o2, gt2, gw2 = _run(li3, times, ch, W, "li_integral", False)
    _close(o1, o2), _close(gt1, gt2), _close(gw1, gw2)


def test_no_events_and_errors(li):
    times = torch.full((2, 3), math.inf, dtype=F64)
    ch = torch.zeros((2, 3), dtype=torch.int64)
    W = torch.ones((2, 4), dtype=F64)
    for kind in KINDS:
        o = sequential_cpu.run_layer(li, {}, times, ch, W, observe=kind, t_end=T_END).observed
        assert torch.equal(o, torch.zeros((2, 4), dtype=F64))
    bad = torch.tensor([[1.0, -2.0]], dtype=F64)
    with pytest.raises(ValueError, match=">= 0"):
        sequential_cpu.run_layer(li, {}, bad, torch.zeros((1, 2), dtype=torch.int64), W,
                                 observe="max_potential", t_end=T_END)
    with pytest.raises(ValueError, match="channels"):
        sequential_cpu.run_layer(li, {}, torch.tensor([[1.0]], dtype=F64), torch.tensor([[7]]), W,
                                 observe="max_potential", t_end=T_END)


@pytest.mark.parametrize("kind", KINDS)
def test_sorted_input_like_a_layers_spikes(li, kind):
    """Spike trains of a layer arrive sorted (+inf padding last): no argsort, same answers."""
    times, ch, W = _inputs(8)
    times = torch.sort(times, dim=1).values
    o1, gt1, gw1 = _run(li, times, ch, W, kind, True)
    o2, gt2, gw2 = _run(li, times, ch, W, kind, False)
    _close(o1, o2), _close(gt1, gt2), _close(gw1, gw2)


@pytest.mark.parametrize("N", [7, 8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vector_forward_is_the_scalar_one_bit_for_bit(li, monkeypatch, N, dtype):
    """compiler/backends/mlir/readout_vec.py against @readout_forward_scalar (same decisions, same
    operations): every record equal, with a scalar tail (N = 7) and without (N = 8)."""
    times, ch, W = _inputs(9, B=5, n=60, N=N)
    times, W = times.to(dtype), W.to(dtype)
    calls = []
    real = readout_cpu._call

    def spy(eng, name, tensors):
        calls.append((eng, name, tensors))
        real(eng, name, tensors)

    monkeypatch.setattr(readout_cpu, "_call", spy)
    o_vec = sequential_cpu.run_layer(li, {}, times, ch, W, observe="max_potential", t_end=T_END).observed
    eng, name, tensors = calls[-1]
    assert name == "readout_forward"
    recs = [t.clone() for t in tensors[8:13]]  # obs, estar, off, tidx, tcoef
    real(eng, "readout_forward_scalar", tensors)
    for a, b in zip(recs, tensors[8:13]):
        assert torch.equal(a, b)
    assert torch.equal(o_vec, recs[0]) and bool((recs[3] >= 0).any()) and bool((recs[1] >= 0).all())
    assert bool(((recs[3] == -1) & (recs[2] > 0)).any())  # some maxima are interior stationary points
