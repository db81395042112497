"""The event-outer adjoint of sequential-cpu (runtime/engines/adjoint_events.py and the compiled
kernel compiler/backends/mlir/adjoint_events.py) against the per-neuron adjoint it replaces
(mlir/adjoint.py, the reference) on every neuron of models/ that it applies to: input-time and
weight gradients equal to 1e-12 relative, with spikes in the tail after the last input, several
spikes per interval, spikes at and near input times, inputs after t_end and per-sample weights;
and against central finite differences in float64."""

import math

import pytest
import torch

from spikescan.runtime.engines import adjoint_events, sequential_cpu
from spikescan.runtime.kernels import NeuronKernels
from example_models import spiking_neurons

F64 = torch.float64


NEURONS = spiking_neurons()


def _applies(ir):
    kern = NeuronKernels.from_ir(ir)
    P = tuple(float(p.default) for p in ir.params)
    return adjoint_events.applicable(kern, None, P, None, False)


APPLICABLE = sorted(n for n, ir in NEURONS.items() if _applies(ir))


def test_it_applies_to_the_synaptic_neurons():
    assert {"CubaLIF", "AlphaLIF", "AdaptiveLIF"} <= set(APPLICABLE)
    assert "LIF" in NEURONS and "LIF" not in APPLICABLE  # its jumps move the potential: the per-neuron adjoint


def _problem(seed, B=4, n=50, C=5, N=7, scale=1.5, span=40.0, per_sample=False):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * span
    times[:, -4:] = float("inf")  # padding
    times[0, :3] = torch.tensor([5.0, 5.0, 5.0], dtype=F64)  # equal times
    times[1, 5] = span + 30.0  # an input after t_end
    ch = torch.randint(0, C, (B, n), generator=g)
    shape = (B, C, N) if per_sample else (C, N)
    W = torch.randn(*shape, generator=g, dtype=F64) * scale + scale
    return times, ch, W


def _grads(ir, times, ch, W, event_outer, t_end, monkeypatch, calls):
    monkeypatch.setattr(sequential_cpu, "USE_EVENT_ADJOINT", event_outer)
    t = times.clone().requires_grad_(True)
    w = W.clone().requires_grad_(True)
    r = sequential_cpu.run_layer(ir, {}, t, ch, w, max_spikes=32, on_overflow="flag", t_end=t_end)
    fin = torch.isfinite(r.times)
    weights = torch.linspace(0.3, 1.7, int(fin.sum()), dtype=F64)
    (r.times[fin] * weights).sum().backward()
    return t.grad, w.grad, r


@pytest.mark.parametrize("name", APPLICABLE)
@pytest.mark.parametrize("case", ["shared", "per_sample", "bursts"])
def test_event_outer_equals_per_neuron_adjoint(name, case, monkeypatch):
    ir = NEURONS[name]
    calls = []
    orig = adjoint_events.backward
    monkeypatch.setattr(adjoint_events, "backward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    kw = dict(per_sample=case == "per_sample")
    if case == "bursts":  # strong input: several spikes per interval, bursts running past the last input
        kw.update(scale=6.0, n=20)
    times, ch, W = _problem(7, **kw)
    t_end = 70.0
    ge_t, ge_w, r = _grads(ir, times, ch, W, True, t_end, monkeypatch, calls)
    assert calls, "the event-outer adjoint did not run"
    n_calls = len(calls)
    gr_t, gr_w, r2 = _grads(ir, times, ch, W, False, t_end, monkeypatch, calls)
    assert len(calls) == n_calls  # the reference did not use it
    assert torch.equal(r.times, r2.times) and int(r.counts.sum()) >= 20
    if case == "bursts":
        per_interval = _max_spikes_per_interval(r.times, times)
        assert per_interval >= 2
        last_in = times.masked_fill(~torch.isfinite(times), 0).amax(1)
        assert bool((r.times.amax((1, 2)) > last_in).any() or (r.times[torch.isfinite(r.times)] > 0).any())
    for a, b in ((ge_t, gr_t), (ge_w, gr_w)):
        scale = b.abs().max().item()
        assert scale > 0
        assert (a - b).abs().max().item() <= 1e-12 * scale


def _max_spikes_per_interval(spikes, times):
    best = 0
    for b in range(spikes.shape[0]):
        ev = torch.sort(times[b][torch.isfinite(times[b])]).values
        s = spikes[b][torch.isfinite(spikes[b])]
        k = torch.searchsorted(ev, s.contiguous())
        if k.numel():
            best = max(best, int(torch.bincount(k).max()))
    return best


def test_tail_spikes_after_the_last_input(monkeypatch):
    """One strong input: every spike lies after the last arrival (the horizon interval)."""
    ir = NEURONS["CubaLIF"]
    times = torch.tensor([[2.0, float("inf")]], dtype=F64)
    ch = torch.tensor([[0, 0]])
    W = torch.tensor([[25.0, 9.0, 3.0]], dtype=F64)
    ge = _grads(ir, times, ch, W, True, 60.0, monkeypatch, [])
    gr = _grads(ir, times, ch, W, False, 60.0, monkeypatch, [])
    assert int(ge[2].counts.sum()) >= 4
    for a, b in zip(ge[:2], gr[:2]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14 * b.abs().max().item())


def test_event_outer_gradient_matches_finite_differences(monkeypatch):
    ir = NEURONS["AlphaLIF"]
    times, ch, W = _problem(3, B=2, n=12, C=3, N=4, scale=3.0)
    monkeypatch.setattr(sequential_cpu, "USE_EVENT_ADJOINT", True)

    def loss(t, w):
        r = sequential_cpu.run_layer(ir, {}, t, ch, w, max_spikes=32, on_overflow="flag", t_end=70.0)
        s = r.times
        return torch.where(torch.isfinite(s), s, torch.zeros((), dtype=F64)).sum(), r.counts

    t = times.clone().requires_grad_(True)
    w = W.clone().requires_grad_(True)
    L, counts = loss(t, w)
    L.backward()
    h = 1e-6
    for idx in [(0, 1), (1, 2), (2, 3)]:
        wp, wm = W.clone(), W.clone()
        wp[idx] += h
        wm[idx] -= h
        Lp, cp = loss(times, wp)
        Lm, cm = loss(times, wm)
        assert torch.equal(cp, counts) and torch.equal(cm, counts)  # no spike appears or vanishes
        fd = (Lp - Lm).item() / (2 * h)
        assert w.grad[idx].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)
    for k in [(0, 4), (1, 6)]:
        if not math.isfinite(times[k].item()):
            continue
        tp, tm = times.clone(), times.clone()
        tp[k] += h
        tm[k] -= h
        fd = (loss(tp, W)[0] - loss(tm, W)[0]).item() / (2 * h)
        assert t.grad[k].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)
