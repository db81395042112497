"""The event-outer adjoint of recurrent layers (runtime/engines/adjoint_events_rec.py and the
compiled kernel compiler/backends/mlir/adjoint_events_rec.py) against the replaying adjoint it
replaces (mlir/recurrent.py's rec_backward, the reference) on every neuron of models/ that it
applies to: gradients to input times, weights and w_rec equal to 1e-12 relative, with
self-connections, bursts, simultaneous spikes of several neurons, equal input times, inputs
after t_end, per-sample weights and spikes dropped by the cap; against central finite differences in float64; the same bits
for any thread count; and the calls it must leave to the replaying adjoint."""

import math

import pytest
import torch

from spikescan.runtime.engines import adjoint_events_rec, parallel, recurrent_cpu
from spikescan.runtime.kernels import NeuronKernels
from example_models import spiking_neurons

F64 = torch.float64


NEURONS = spiking_neurons()


def _applies(ir):
    kern = NeuronKernels.from_ir(ir)
    return adjoint_events_rec.applicable(kern, None, tuple(float(p.default) for p in ir.params), False)


APPLICABLE = sorted(n for n, ir in NEURONS.items() if _applies(ir))


def test_it_applies_to_the_synaptic_neurons():
    assert {"CubaLIF", "AlphaLIF", "AdaptiveLIF"} <= set(APPLICABLE)
    assert "LIF" in NEURONS and "LIF" not in APPLICABLE


@pytest.fixture
def calls(monkeypatch):
    box = []
    orig = adjoint_events_rec.backward
    monkeypatch.setattr(adjoint_events_rec, "backward", lambda *a, **k: (box.append(1), orig(*a, **k))[1])
    return box


def _problem(seed, B=3, n=50, C=5, N=8, scale=1.0, wr=0.4, per_sample=False, ties=False):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * 40.0
    times[:, -4:] = math.inf  # padding
    times[0, :3] = 5.0  # equal input times
    times[1, 5] = 75.0  # an input after t_end
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.randn(*((B, C, N) if per_sample else (C, N)), generator=g, dtype=F64) * scale + 0.8 * scale
    Wr = torch.randn(N, N, generator=g, dtype=F64) * wr  # self-connections on the diagonal
    if ties:  # neurons 0 and 1 identical (inputs and what they receive): they spike together
        W[..., 1] = W[..., 0]
        Wr[:, 1] = Wr[:, 0]
    return times, ch, W, Wr


def _grads(ir, times, ch, W, Wr, event_outer, monkeypatch, t_end=70.0, max_spikes=32, params=None):
    monkeypatch.setattr(recurrent_cpu, "USE_EVENT_ADJOINT", event_outer)
    leaf = [v.clone().requires_grad_(True) for v in (times, W, Wr)]
    r = recurrent_cpu.run_recurrent_layer(ir, params or {}, leaf[0], ch, leaf[1], leaf[2], max_spikes=max_spikes,
                                          on_overflow="flag", t_end=t_end)
    fin = torch.isfinite(r.times)
    (r.times[fin] * torch.linspace(0.3, 1.7, int(fin.sum()), dtype=F64)).sum().backward()
    return r, [v.grad for v in leaf]


def _close(got, ref, tol=1e-12):
    for a, b in zip(got, ref):
        scale = b.abs().max().item()
        assert scale > 0
        assert (a - b).abs().max().item() <= tol * scale


def _max_spikes_between_inputs(spikes, times):
    best = 0
    for b in range(spikes.shape[0]):
        ev = torch.sort(times[b][torch.isfinite(times[b])]).values
        s = spikes[b][torch.isfinite(spikes[b])]
        if s.numel():
            best = max(best, int(torch.bincount(torch.searchsorted(ev, s.contiguous())).max()))
    return best


@pytest.mark.parametrize("name", APPLICABLE)
@pytest.mark.parametrize("case", ["shared", "per_sample", "bursts", "ties"])
def test_event_outer_equals_replaying_adjoint(name, case, monkeypatch, calls):
    ir = NEURONS[name]
    kw = {"shared": {}, "per_sample": dict(per_sample=True), "ties": dict(ties=True),
          "bursts": dict(scale=2.5, n=16, wr=0.3)}[case]
    times, ch, W, Wr = _problem(7, **kw)
    r, ge = _grads(ir, times, ch, W, Wr, True, monkeypatch)
    assert calls, "the event-outer adjoint did not run"
    n_calls = len(calls)
    r2, gr = _grads(ir, times, ch, W, Wr, False, monkeypatch)
    assert len(calls) == n_calls  # the reference did not use it
    assert torch.equal(r.times, r2.times) and not bool(r.overflow.any())
    assert int(r.counts.sum()) >= 20 and bool((Wr.diagonal() != 0).all())
    if case == "bursts":
        assert _max_spikes_between_inputs(r.times, times) >= 3
        last_in = times.masked_fill(~torch.isfinite(times), 0).amax(1)
        assert bool((r.times.masked_fill(~torch.isfinite(r.times), 0).amax((1, 2)) > last_in).any())
    if case == "ties":
        assert torch.equal(r.times[:, 0], r.times[:, 1]) and int(r.counts[:, 0].sum()) >= 2
    _close(ge, gr)


def test_wider_layer(monkeypatch, calls):
    """N not a whole number of vectors, more events and spikes."""
    ir = NEURONS["CubaLIF"]
    times, ch, W, Wr = _problem(11, B=2, n=120, C=9, N=30, scale=0.6, wr=0.15)
    r, ge = _grads(ir, times, ch, W, Wr, True, monkeypatch)
    n_calls = len(calls)
    _, gr = _grads(ir, times, ch, W, Wr, False, monkeypatch)
    assert n_calls and len(calls) == n_calls and int(r.counts.sum()) >= 40
    _close(ge, gr)


def test_spikes_dropped_by_the_cap(monkeypatch, calls):
    """A dropped spike sends nothing and its neuron spikes no more: no term of its own."""
    ir = NEURONS["AlphaLIF"]
    times, ch, W, Wr = _problem(5, scale=2.0, wr=0.3)
    r, ge = _grads(ir, times, ch, W, Wr, True, monkeypatch, max_spikes=3)
    n_calls = len(calls)
    r2, gr = _grads(ir, times, ch, W, Wr, False, monkeypatch, max_spikes=3)
    assert n_calls and len(calls) == n_calls and torch.equal(r.times, r2.times)
    assert bool(r.overflow.all()) and int(r.counts.sum()) >= 20
    _close(ge, gr)


def test_replaying_adjoint_where_it_does_not_apply(monkeypatch, calls):
    ir = NEURONS["CubaLIF"]
    times, ch, W, Wr = _problem(5, scale=2.0, wr=0.3)
    # a parameter gradient, delays, the lif neuron (its jumps move the potential)
    tm = torch.tensor(12.0, dtype=F64, requires_grad=True)
    _grads(ir, times, ch, W, Wr, True, monkeypatch, params={"tau_m": tm})
    assert not calls and tm.grad is not None
    lif = NEURONS["LIF"]
    _grads(lif, times, ch, W, Wr, True, monkeypatch)
    assert not calls
    dl = torch.rand(W.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = times.clone().requires_grad_(True)
    r = recurrent_cpu.run_recurrent_layer(ir, {}, t, ch, W, Wr, dl, max_spikes=32, t_end=70.0)
    r.times[torch.isfinite(r.times)].sum().backward()
    assert not calls and t.grad is not None


def test_same_bits_for_any_thread_count(monkeypatch, calls):
    ir = NEURONS["AlphaLIF"]
    times, ch, W, Wr = _problem(2, B=11, scale=1.2)
    try:
        parallel.set_threads(1)
        ref = _grads(ir, times, ch, W, Wr, True, monkeypatch)
        for th in (2, 3):
            parallel.set_threads(th)
            got = _grads(ir, times, ch, W, Wr, True, monkeypatch)
            assert torch.equal(got[0].times, ref[0].times)
            for a, b in zip(got[1], ref[1]):
                assert torch.equal(a, b) and bool(b.ne(0).any())
    finally:
        parallel.set_threads(None)
    assert len(calls) == 3 * len(parallel.slices(11))


def test_gradient_matches_finite_differences(monkeypatch, calls):
    ir = NEURONS["AlphaLIF"]
    times, ch, W, Wr = _problem(3, B=2, n=14, C=3, N=4, scale=2.0, wr=0.5)
    monkeypatch.setattr(recurrent_cpu, "USE_EVENT_ADJOINT", True)

    def loss(t, w, wr):
        r = recurrent_cpu.run_recurrent_layer(ir, {}, t, ch, w, wr, max_spikes=32, on_overflow="flag", t_end=70.0)
        s = r.times
        return torch.where(torch.isfinite(s), s, torch.zeros((), dtype=F64)).sum(), r.counts

    leaf = [v.clone().requires_grad_(True) for v in (times, W, Wr)]
    L, counts = loss(*leaf)
    assert int(counts.sum()) >= 6
    L.backward()
    assert calls
    h = 1e-6
    checked = 0
    for k, idx in [(1, (0, 1)), (1, (2, 3)), (2, (0, 0)), (2, (1, 2)), (2, (3, 1)), (0, (0, 4)), (0, (1, 6))]:
        base = [times, W, Wr]
        if k == 0 and not math.isfinite(times[idx].item()):
            continue
        vp, vm = base[k].clone(), base[k].clone()
        vp[idx] += h
        vm[idx] -= h
        Lp, cp = loss(*[vp if i == k else v for i, v in enumerate(base)])
        Lm, cm = loss(*[vm if i == k else v for i, v in enumerate(base)])
        assert torch.equal(cp, counts) and torch.equal(cm, counts)  # no spike appears or vanishes
        fd = (Lp - Lm).item() / (2 * h)
        assert leaf[k].grad[idx].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)
        checked += 1
    assert checked >= 6
