"""The compiled CPU engines run the samples of a batch on several threads (runtime/engines/
parallel.py): spike trains and gradients are the same bit for bit for any thread count (the batch
is cut by its size only, slice gradients are added in slice order), for the event-outer path,
the per-neuron path (delays, per-neuron parameters) and recurrent layers."""

import pytest
import torch

from spikescan.compiler.driver import load_model
from spikescan.runtime.engines import parallel, recurrent_cpu, sequential_cpu
from repo_paths import repo

F64 = torch.float64


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    parallel.set_threads(None)


def _problem(seed, B=11, n=40, C=6, N=9):
    g = torch.Generator().manual_seed(seed)
    times = (torch.rand(B, n, generator=g, dtype=F64) * 50.0)
    times[:, -5:] = float("inf")  # padding
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.randn(C, N, generator=g, dtype=F64) * 1.2 + 1.0
    return times, ch, W


def _run(threads, fn):
    parallel.set_threads(threads)
    return fn()


def _ff(kind):
    ir = load_model(repo("models/cuba_lif.snn")).neurons["CubaLIF"]
    times, ch, W = _problem(1)
    N = W.shape[1]

    def go():
        t = times.clone().requires_grad_(True)
        w = W.clone().requires_grad_(True)
        kw = {}
        params = {}
        if kind == "delays":
            kw["delays"] = torch.rand(W.shape, generator=torch.Generator().manual_seed(2), dtype=F64).mul(3.0)
        if kind == "params":
            params = {"tau_m": torch.linspace(12.0, 25.0, N, dtype=F64).requires_grad_(True)}
        r = sequential_cpu.run_layer(ir, params, t, ch, w, max_spikes=16, on_overflow="flag", t_end=80.0, **kw)
        fin = torch.isfinite(r.times)
        (r.times[fin] * torch.linspace(0.5, 1.5, int(fin.sum()), dtype=F64)).sum().backward()
        grads = [t.grad, w.grad] + ([params["tau_m"].grad] if params else [])
        return r.times.detach(), r.counts, grads

    return go


@pytest.mark.parametrize("kind", ["shared", "delays", "params"])
def test_feed_forward_same_bits_for_any_thread_count(kind):
    go = _ff(kind)
    ref = _run(1, go)
    assert int(ref[1].sum()) > 10  # spikes to differentiate through
    for th in (2, 3):
        got = _run(th, go)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
        for a, b in zip(got[2], ref[2]):
            assert torch.equal(a, b)


def test_recurrent_same_bits_for_any_thread_count():
    ir = load_model(repo("models/cuba_lif.snn")).neurons["CubaLIF"]
    times, ch, W = _problem(3)
    N = W.shape[1]
    wrec0 = torch.randn(N, N, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.3

    def go():
        t = times.clone().requires_grad_(True)
        w = W.clone().requires_grad_(True)
        wrec = wrec0.clone().requires_grad_(True)
        r = recurrent_cpu.run_recurrent_layer(ir, {}, t, ch, w, wrec, max_spikes=16, on_overflow="flag", t_end=80.0)
        fin = torch.isfinite(r.times)
        r.times[fin].sum().backward()
        return r.times.detach(), [t.grad, w.grad, wrec.grad]

    ref = _run(1, go)
    got = _run(2, go)
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[1], ref[1]):
        assert torch.equal(a, b) and bool(b.ne(0).any())


def test_slices_depend_on_the_batch_only():
    assert parallel.slices(1) == [(0, 1)]
    assert parallel.slices(32) == [(4 * i, 4 * i + 4) for i in range(8)]
    cuts = parallel.slices(11)
    assert cuts[0][0] == 0 and cuts[-1][1] == 11 and all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    with pytest.raises(ValueError):
        parallel.set_threads(0)

