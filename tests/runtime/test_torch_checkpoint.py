"""Engine "torch" with per-chunk checkpointing (DESIGN.md section 6: memory must not grow with
events x chunks). Gradients with and without checkpointing agree to 1e-12; the checkpointed
gradients match central finite differences; the bytes kept for the backward grow like
chunks x state, not like events x chunks."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_engines_models import get_ir  # noqa: E402

from spikescan.runtime.engines import torch_scan  # noqa: E402

F64 = torch.float64
torch.set_num_threads(1)  # the test machine is shared: avoid OpenMP contention on tiny tensors


class _Counting:
    """Wraps torch_scan._checkpoint: counts the checkpointed chunks and records the storages
    each one keeps for its backward besides its saved inputs (spike-record state, replayed
    decisions), keyed by storage like saved_bytes so that nothing is counted twice."""

    def __init__(self, real):
        self.real, self.calls, self.held = real, 0, {}

    def __call__(self, run, states, leaves):
        self.calls += 1
        out = self.real(run, states, leaves)
        for t in run.held():
            st = t.untyped_storage()
            self.held[st.data_ptr()] = st.nbytes()
        return out


@pytest.fixture
def counting(monkeypatch):
    c = _Counting(torch_scan._checkpoint)
    monkeypatch.setattr(torch_scan, "_checkpoint", c)
    return c


def _flatten(res):
    B, N, S = res.times.shape
    return res.times.reshape(B, N * S), torch.arange(N).repeat_interleave(S).expand(B, N * S)


def _loss(res):
    t = res.times
    coef = torch.linspace(0.5, 1.5, t.numel(), dtype=F64).reshape(t.shape)
    out = torch.where(torch.isfinite(t), t * coef, torch.zeros_like(t)).sum()
    if res.observed is not None:
        out = out + (res.observed * torch.linspace(-1, 1, res.observed.numel(), dtype=F64)
                     .reshape(res.observed.shape)).sum()
    return out


def _inputs(seed, B=2, n=24, C=3, H=4, O=3, T=60.0):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * T
    times[1, -4:] = math.inf  # padding
    ch = torch.randint(0, C, (B, n), generator=g)
    W1 = 0.5 + 1.5 * torch.rand(C, H, generator=g, dtype=F64)
    W2 = 0.4 + 1.2 * torch.rand(H, O, generator=g, dtype=F64)
    D2 = 4.0 * torch.rand(H, O, generator=g, dtype=F64)
    return times, ch, W1, W2, D2


def _two_layers(model, leaves, ch, chunk, ckpt, t_ref, **kw):
    """Layer 1 (shared event order) -> layer 2 (learnable delays: per-neuron orders)."""
    times, W1, W2, D2, tau_m, v_th = leaves
    ir = get_ir(model)
    r1 = torch_scan.run_layer(ir, {"tau_m": tau_m, "t_ref": t_ref}, times, ch, W1, chunk=chunk,
                              checkpoint=ckpt, **kw)
    t1, c1 = _flatten(r1)
    r2 = torch_scan.run_layer(ir, {"v_th": v_th, "t_ref": t_ref}, t1, c1, W2, D2, chunk=chunk,
                              checkpoint=ckpt, **kw)
    return _loss(r1) + _loss(r2), (r1, r2)


def _grads(model, chunk, ckpt, t_ref=0.0, seed=2, **kw):
    times, ch, W1, W2, D2 = _inputs(seed)
    leaves = [times, W1, W2, D2, torch.tensor(18.0, dtype=F64), torch.tensor(1.0, dtype=F64)]
    for v in leaves:
        v.requires_grad_(True)
    loss, res = _two_layers(model, leaves, ch, chunk, ckpt, t_ref, **kw)
    g = torch.autograd.grad(loss, leaves)
    return loss.detach(), g, res


def _close(a, b, rel=1e-12):
    a, b = a.detach(), b.detach()
    fin = torch.isfinite(a)
    assert torch.equal(fin, torch.isfinite(b))
    scale = max(1.0, float(b[fin].abs().max())) if fin.any() else 1.0
    if fin.any():
        assert float((a[fin] - b[fin]).abs().max()) <= rel * scale


# AlphaLIF at small chunks (many chunks, each recomputed) is the slowest part: marked slow
GRAD_CASES = [pytest.param(m, c, r, marks=[pytest.mark.slow] if (m == "AlphaLIF" and (c < 128 or r == 0)) else [])
              for m in ("CubaLIF", "AlphaLIF") for c in (1, 7, 128) for r in (0.0, 4.0)]


@pytest.mark.parametrize("model,chunk,t_ref", GRAD_CASES)
def test_checkpoint_gradients_identical(model, chunk, t_ref, counting):
    l0, g0, r0 = _grads(model, chunk, False, t_ref)
    assert counting.calls == 0
    l1, g1, r1 = _grads(model, chunk, True, t_ref)
    # every chunk of both layers went through the checkpoint (layer 1: 24 events + horizon)
    assert counting.calls >= math.ceil(25 / chunk) + 1
    # the test means something: both layers spike, layer 1 several times per neuron, and with
    # t_ref > 0 the refractory period decides some spike times (interval == t_ref)
    assert int(r0[0].counts.sum()) >= 10 and int(r0[1].counts.sum()) >= 4
    assert int(r0[0].counts.max()) >= 3
    isi = (r0[0].times[..., 1:] - r0[0].times[..., :-1]).detach()
    assert abs(float(isi[torch.isfinite(isi)].min()) - t_ref) < 1e-9 or t_ref == 0.0
    for a, b in zip(r1, r0):
        assert torch.equal(a.counts, b.counts)
        _close(a.times, b.times)
    _close(l1, l0)
    for name, a, b in zip(["times", "W1", "W2", "D2", "tau_m", "v_th"], g1, g0):
        assert bool(torch.isfinite(b).all()), name
        assert float(b.abs().max()) > 0, name  # every leaf gets a gradient
        _close(a, b)


def test_several_spikes_per_chunk_and_chunk_count(counting):
    """chunk 7: some lane restarts several times inside one chunk; every chunk of every layer is
    checkpointed."""
    _, _, res = _grads("CubaLIF", 7, True, 0.0)
    times, *_ = _inputs(2)
    n1 = times.shape[1] + 1  # + the horizon event
    assert counting.calls >= math.ceil(n1 / 7) + 1
    # a spike in the interval ending at event column k lies in chunk k // 7 (layer 1: one
    # shared order per sample)
    ev = torch.sort(times.detach(), 1).values
    t1 = res[0].times.detach()
    most = 0
    for b in range(t1.shape[0]):
        for j in range(t1.shape[1]):
            s = t1[b, j][torch.isfinite(t1[b, j])]
            k = torch.searchsorted(ev[b].contiguous(), s.contiguous())
            most = max(most, int(torch.bincount(k // 7).max()))
    assert most >= 3


@pytest.mark.parametrize("observe,model", [("li_integral", "LI"), ("max_potential", "LI"),
                                           ("max_potential", "CubaLIF")])
def test_checkpoint_observables(observe, model, counting):
    times, ch, W1, *_ = _inputs(1)
    ir = get_ir(model)
    out = []
    for ckpt in (False, True):
        W = W1.clone().requires_grad_(True)
        tm = torch.tensor(15.0, dtype=F64, requires_grad=True)
        x = times.clone().requires_grad_(True)
        r = torch_scan.run_layer(ir, {"tau_m": tm}, x, ch, W - 0.6, chunk=5, observe=observe,
                                 t_end=70.0, checkpoint=ckpt)
        loss = _loss(r)
        out.append((r.observed.detach(), torch.autograd.grad(loss, [x, W, tm])))
    assert counting.calls >= 5  # 24 events + horizon in chunks of 5
    _close(out[1][0], out[0][0])
    for a, b in zip(out[1][1], out[0][1]):
        assert float(b.abs().max()) > 0
        _close(a, b)


def test_checkpoint_spike_cap_flag(counting):
    """on_overflow='flag': a lane that dies in one chunk stays dead in the next, also when the
    chunks are recomputed in the backward."""
    l0, g0, r0 = _grads("CubaLIF", 4, False, 0.0, max_spikes=2, on_overflow="flag")
    l1, g1, r1 = _grads("CubaLIF", 4, True, 0.0, max_spikes=2, on_overflow="flag")
    assert bool(r0[0].overflow.any())
    for a, b in zip(r1, r0):
        assert torch.equal(a.counts, b.counts) and torch.equal(a.overflow, b.overflow)
    for a, b in zip(g1, g0):
        _close(a, b)


@pytest.mark.parametrize("ckpt", [True, False])
def test_checkpoint_matches_sequential_engine(ckpt):
    """Every coordinate against the independent one-event-at-a-time engine, chunk 3: chunks end
    on real events, and lanes that spiked inside a chunk carry their reset into the next one
    (a detached chunk-end time there once gave wrong input-time gradients)."""
    from spikescan.runtime.engines import torch_sequential

    times, ch, W1, W2, D2 = _inputs(2)
    out = []
    for eng, kw in ((torch_scan, dict(chunk=3, checkpoint=ckpt)), (torch_sequential, {})):
        leaves = [times.clone(), W1.clone(), W2.clone(), D2.clone(), torch.tensor(18.0, dtype=F64),
                  torch.tensor(1.0, dtype=F64)]
        for v in leaves:
            v.requires_grad_(True)
        ir = get_ir("CubaLIF")
        r1 = eng.run_layer(ir, {"tau_m": leaves[4], "t_ref": 4.0}, leaves[0], ch, leaves[1], **kw)
        t1, c1 = _flatten(r1)
        r2 = eng.run_layer(ir, {"v_th": leaves[5], "t_ref": 4.0}, t1, c1, leaves[2], leaves[3], **kw)
        out.append(torch.autograd.grad(_loss(r1) + _loss(r2), leaves))
    for a, b in zip(*out):
        _close(a, b, rel=1e-9)


def test_checkpoint_matches_finite_differences():
    times, ch, W1, W2, D2 = _inputs(2)
    leaves = [times, W1, W2, D2, torch.tensor(18.0, dtype=F64), torch.tensor(1.0, dtype=F64)]
    for v in leaves:
        v.requires_grad_(True)
    loss, res = _two_layers("CubaLIF", leaves, ch, 3, True, 4.0)
    counts = [r.counts for r in res]
    assert int(counts[0].sum()) >= 5 and int(counts[1].sum()) >= 2
    grads = torch.autograd.grad(loss, leaves)
    h = 1e-6
    for k, (x, g) in enumerate(zip(leaves, grads)):
        flat = x.detach().reshape(-1)
        for i in {flat.numel() // 2}:  # one coordinate each (all: the sequential-engine test)
            if not math.isfinite(float(flat[i])):
                continue
            vals = []
            for s in (+1, -1):
                xs = [y.detach().clone() for y in leaves]
                xs[k].reshape(-1)[i] += s * h
                with torch.no_grad():
                    l, r = _two_layers("CubaLIF", xs, ch, 3, True, 4.0)
                assert all(torch.equal(a.counts, c) for a, c in zip(r, counts)), "FD step changed counts"
                vals.append(float(l))
            fd = (vals[0] - vals[1]) / (2 * h)
            an = float(g.reshape(-1)[i])
            assert abs(an - fd) <= 1e-5 * max(1.0, abs(fd)), (k, i, an, fd)


def test_auto_rule_and_bad_flag(counting, monkeypatch):
    times, ch, W1, *_ = _inputs(3, n=30)
    ir = get_ir("CubaLIF")
    W = W1.clone().requires_grad_(True)
    L, n_ext = 2 * W.shape[1], 31  # lanes, events + horizon
    assert torch_scan.CHECKPOINT == "auto"
    # the defaults: a layer this small keeps its graph
    torch_scan.run_layer(ir, {}, times, ch, W, chunk=8)
    assert counting.calls == 0
    monkeypatch.setattr(torch_scan, "AUTO_MIN_CHUNKS", 4)
    monkeypatch.setattr(torch_scan, "AUTO_MIN_LANE_EVENTS", L * n_ext)
    torch_scan.run_layer(ir, {}, times, ch, W, chunk=8, checkpoint="auto")  # 4 chunks: on
    assert counting.calls == 4
    torch_scan.run_layer(ir, {}, times, ch, W, chunk=11, checkpoint="auto")  # 3 chunks: off
    assert counting.calls == 4
    torch_scan.run_layer(ir, {}, times[:, :29], ch[:, :29], W, chunk=6)  # 30 columns: too few
    assert counting.calls == 4
    with torch.no_grad():  # nothing to recompute for
        torch_scan.run_layer(ir, {}, times, ch, W, chunk=8, checkpoint=True)
    torch_scan.run_layer(ir, {}, times, ch, W1, chunk=8, checkpoint=True)  # no leaf needs grad
    assert counting.calls == 4
    monkeypatch.setattr(torch_scan, "CHECKPOINT", True)  # module default
    torch_scan.run_layer(ir, {}, times, ch, W, chunk=11)
    assert counting.calls == 4 + 3
    with pytest.raises(ValueError, match="checkpoint"):
        torch_scan.run_layer(ir, {}, times, ch, W, checkpoint="yes")


def saved_bytes(fn, counting):
    """Bytes of the distinct storages kept for the backward of fn(): saved by autograd (pack
    hook), plus what checkpointed chunks hold besides (counting.held)."""
    seen = counting.held = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def _memory_case(n, ckpt, counting, B=2, N=16, chunk=16):
    """One CubaLIF layer whose input times, weights and tau_m need gradients (a hidden layer of a
    deeper network)."""
    g = torch.Generator().manual_seed(5)
    times = (torch.rand(B, n, generator=g, dtype=F64) * (n / 4.0)).requires_grad_(True)
    ch = torch.randint(0, 8, (B, n), generator=g)
    W = (0.9 * torch.rand(8, N, generator=g, dtype=F64) - 0.1).requires_grad_(True)
    tm = torch.tensor(20.0, dtype=F64, requires_grad=True)
    return saved_bytes(lambda: torch_scan.run_layer(get_ir("CubaLIF"), {"tau_m": tm}, times, ch, W,
                                                    chunk=chunk, checkpoint=ckpt, max_spikes=n), counting)


def test_saved_memory_grows_with_chunks_not_events(counting):
    B, N, chunk = 2, 16, 16
    r1, with1 = _memory_case(500, True, counting)
    r2, with2 = _memory_case(1000, True, counting)
    _, without1 = _memory_case(500, False, counting)
    assert int(r1.counts.sum()) >= 100, "too few spikes for restarts to matter"
    spikes = int(r2.counts.sum())
    n_chunks = math.ceil(1001 / chunk)
    state = B * N * (2 * 8 + 8 + 8 + 1) + B * 9  # x (d = 2), ref_end, counts, dead; T0, overflow
    # checkpointed: the chunk-start states, the spikes (time, lane, rank; and per spike the
    # replayed decision: lane, interval, offset, flag) and the event tensors
    assert with2 <= n_chunks * state + 64 * spikes + 64 * B * 1001
    assert 1.6 <= with2 / with1 <= 2.4  # linear in events at a fixed chunk size
    # without: every chunk's graph is kept, O(events x lanes x log chunk) (measured 28x here,
    # 88x at chunk 128)
    assert 10 * with1 <= without1


def test_recompute_replays_decisions(monkeypatch):
    """The backward recomputes each chunk's autograd part but replays the crossing decisions
    (no second search or root solve): _decide runs only in the forward."""
    calls = []
    real = torch_scan._decide
    monkeypatch.setattr(torch_scan, "_decide", lambda *a: calls.append(1) or real(*a))
    times, ch, W1, *_ = _inputs(2)
    W = W1.clone().requires_grad_(True)
    res = torch_scan.run_layer(get_ir("CubaLIF"), {}, times, ch, W, chunk=5, checkpoint=True)
    n_fwd = len(calls)
    assert n_fwd >= 5 + int(res.counts.max())  # one step per chunk at least, more with spikes
    _loss(res).backward()
    assert len(calls) == n_fwd and float(W.grad.abs().max()) > 0
