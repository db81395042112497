"""Gradients of the JIT-compiled sequential CPU engine (the adjoint event loop of
compiler/backends/mlir/adjoint.py) against central finite differences in float64 and against
the autograd gradients of the independent PyTorch reference engine "torch-sequential"."""

import dataclasses
import math

import pytest
import sympy
import torch

from spikescan.compiler.driver import load_model
from spikescan.runtime.engines import torch_sequential
from spikescan.runtime.engines.sequential_cpu import run_layer
from repo_paths import repo

MODELS = {"LIF": "lif", "CubaLIF": "cuba_lif", "AlphaLIF": "alpha_lif", "AdaptiveLIF": "adaptive_lif"}
F64 = torch.float64


def neuron(name):
    return load_model(repo(f"models/{MODELS[name]}.snn")).neurons[name]


def problem(seed, B, n, C, N, span, scale, delays=False):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * span
    ch = torch.randint(0, C, (B, n), generator=g)
    W = (torch.rand(C, N, generator=g, dtype=F64) - 0.25) * scale
    D = torch.rand(C, N, generator=g, dtype=F64) * 4.0 if delays else None
    return times, ch, W, D


def spike_loss(res):
    """A weighted sum of the spike times (distinct weights per slot: every slot matters)."""
    o = res.times
    wts = 0.5 + torch.arange(o.numel(), dtype=F64).reshape(o.shape) / o.numel()
    return (torch.where(torch.isfinite(o), o, torch.zeros((), dtype=F64)) * wts).sum()


def grads_of(engine, nir, params, times, ch, W, D, **kw):
    leaves = [times, W] + ([D] if D is not None else []) + list(params.values())
    res = engine(nir, params, times, ch, W, D, **kw)
    L = spike_loss(res)
    return L, res, torch.autograd.grad(L, leaves)


def leaves(times, W, D, params):
    mk = lambda v: None if v is None else v.detach().clone().requires_grad_()
    return mk(times), mk(W), mk(D), {k: mk(v) for k, v in params.items()}


def assert_close(a, b, tol, what):
    err = (a - b).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    assert err <= tol * scale, f"{what}: max error {err:.3e} (scale {scale:.3g})"


PARAMS = {
    "LIF": dict(tau_m=[18.0, 25.0], v_th=[1.0, 0.9], v_reset=[0.0, -0.1]),
    "CubaLIF": dict(tau_m=[18.0, 25.0], tau_s=[5.0, 4.0], v_th=[1.0, 0.9], v_reset=[0.0, -0.1]),
    "AlphaLIF": dict(tau_m=[18.0, 25.0], tau_s=[5.0, 4.0], v_th=[1.0, 0.9], v_reset=[0.0, -0.1]),
    "AdaptiveLIF": dict(tau_m=[18.0, 25.0], tau_s=[5.0, 4.0], tau_a=[90.0, 120.0], v_th=[1.0, 0.9],
                        v_reset=[0.0, -0.1], beta=[0.2, 0.3]),
}
SCALE = {"LIF": 0.7, "CubaLIF": 2.0, "AlphaLIF": 2.0, "AdaptiveLIF": 2.0}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("with_delays", [False, True])
def test_matches_torch_sequential_autograd(name, with_delays):
    """Per-neuron parameters, delays, batch of 2 with padding: every gradient equals the
    reference engine's autograd gradient to ~1e-10 (both are exact; only rounding differs)."""
    nir = neuron(name)
    times, ch, W, D = problem(3, 2, 40, 5, 2, 80.0, SCALE[name], with_delays)
    times[1, 30:] = math.inf
    params = {k: torch.tensor(v, dtype=F64) for k, v in PARAMS[name].items()}
    t1, W1, D1, p1 = leaves(times, W, D, params)
    L1, r1, g1 = grads_of(run_layer, nir, p1, t1, ch, W1, D1)
    t2, W2, D2, p2 = leaves(times, W, D, params)
    L2, r2, g2 = grads_of(torch_sequential.run_layer, nir, p2, t2, ch, W2, D2)
    assert torch.equal(r1.counts, r2.counts) and int(r1.counts.sum()) >= 4
    names = ["times", "weight"] + (["delays"] if with_delays else []) + list(params)
    for nm, a, b in zip(names, g1, g2):
        a = torch.where(torch.isfinite(t1) if nm == "times" else torch.ones_like(a, dtype=torch.bool), a, 0.0)
        b = torch.where(torch.isfinite(t1) if nm == "times" else torch.ones_like(b, dtype=torch.bool), b, 0.0)
        # LIF spikes only at input arrivals (v decays between them): only times matter there
        if name != "LIF" or nm == "times":
            assert b.abs().max() > 0, f"{nm}: the reference gradient is zero"
        assert_close(a, b, 1e-10, f"{name} d/d{nm}")


def fd_check(nir, params, times, ch, W, D, seed, n_dirs=3, h=1e-6, **kw):
    """Directional central differences of the loss along random directions in every input."""
    t1, W1, D1, p1 = leaves(times, W, D, params)
    L, res, g = grads_of(run_layer, nir, p1, t1, ch, W1, D1, **kw)
    base = [times, W] + ([D] if D is not None else []) + list(params.values())
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_dirs):
        dirs = [torch.where(torch.isfinite(v), torch.randn(v.shape, generator=gen, dtype=F64), 0.0) for v in base]
        deriv = sum((gi * di).sum() for gi, di in zip(g, dirs)).item()

        def at(s):
            v = [b + s * d for b, d in zip(base, dirs)]
            tt, WW = v[0], v[1]
            DD = v[2] if D is not None else None
            pp = dict(zip(params, v[3:] if D is not None else v[2:]))
            r = run_layer(nir, pp, tt, ch, WW, DD, **kw)
            assert torch.equal(r.counts, res.counts), "a spike appeared or vanished: pick another h"
            return spike_loss(r).item()

        fd = (at(h) - at(-h)) / (2 * h)
        assert abs(fd - deriv) <= 1e-5 * max(1.0, abs(fd)), f"FD {fd} vs adjoint {deriv}"
    return res


@pytest.mark.parametrize("name", ["LIF", "CubaLIF", "AdaptiveLIF"])
def test_central_finite_differences(name):
    nir = neuron(name)
    times, ch, W, D = problem(13, 1, 25, 4, 2, 60.0, 1.2 if name == "LIF" else 3.5, delays=True)
    params = {k: torch.tensor(v, dtype=F64) for k, v in PARAMS[name].items()}
    res = fd_check(nir, params, times, ch, W, D, seed=1)
    assert int(res.counts.sum()) >= 6


def test_refractory_period_as_parameter_and_spikes_at_its_end():
    """t_ref = tau_s / 2: strong inputs inside the refractory period make spikes exactly at its
    end (t* = previous spike + t_ref), whose gradient flows to the previous spike and to tau_s."""
    base = neuron("CubaLIF")
    tau_s = next(p.symbol for p in base.params if p.name == "tau_s")
    nir = dataclasses.replace(base, t_ref=tau_s / 2)
    times = torch.tensor([[1.0, 2.0, 3.1, 3.6, 9.0, 11.0]], dtype=F64)
    ch = torch.tensor([[0, 0, 0, 1, 0, 1]])
    W = torch.tensor([[6.0, 5.0], [7.0, 8.0]], dtype=F64)
    params = dict(tau_s=torch.tensor(5.0, dtype=F64), tau_m=torch.tensor(20.0, dtype=F64))
    res = fd_check(nir, params, times, ch, W, None, seed=2)
    st = res.times[0, 0, : int(res.counts[0, 0])]
    assert bool((st[1:] - st[:-1] - 2.5).abs().min() < 1e-12)  # a spike at a refractory end
    t1, W1, _, p1 = leaves(times, W, None, params)
    _, _, g1 = grads_of(run_layer, nir, p1, t1, ch, W1, None)
    t2, W2, _, p2 = leaves(times, W, None, params)
    _, _, g2 = grads_of(torch_sequential.run_layer, nir, p2, t2, ch, W2, None)
    for a, b in zip(g1, g2):
        assert_close(a, b, 1e-10, "refractory")


def test_jump_crossings_move_with_their_input():
    """LIF, weight above threshold: every input spikes at its own arrival, dt*/dt_in = 1 and
    dt*/dw = 0; the spike-time loss puts exactly its weights on the input times."""
    nir = neuron("LIF")
    times = torch.tensor([[5.0, 1.0, 3.0]], dtype=F64, requires_grad=True)
    ch = torch.zeros(1, 3, dtype=torch.long)
    W = torch.tensor([[1.5]], dtype=F64, requires_grad=True)
    res = run_layer(nir, {}, times, ch, W)
    assert res.times[0, 0].tolist() == [1.0, 3.0, 5.0]
    (res.times[0, 0] * torch.tensor([1.0, 2.0, 3.0], dtype=F64)).sum().backward()
    assert times.grad.tolist() == [[3.0, 1.0, 2.0]]
    assert W.grad.abs().max().item() == 0.0


def test_per_sample_weights_t_end_and_f32():
    nir = neuron("CubaLIF")
    times, ch, W, _ = problem(5, 2, 40, 4, 3, 80.0, 2.0)
    Wb = torch.stack([W, W.flip(0)])  # [B, C, N]
    kw = dict(t_end=50.0)
    t1, W1, _, _ = leaves(times, Wb, None, {})
    _, r1, g1 = grads_of(run_layer, nir, {}, t1, ch, W1, None, **kw)
    t2, W2, _, _ = leaves(times, Wb, None, {})
    _, r2, g2 = grads_of(torch_sequential.run_layer, nir, {}, t2, ch, W2, None, **kw)
    assert torch.equal(r1.counts, r2.counts) and int(r1.counts.sum()) >= 3
    assert bool((times > 50).any())  # some inputs lie past t_end: zero gradient there
    assert g1[0][times > 50].abs().max().item() == 0.0
    for a, b in zip(g1, g2):
        assert_close(a, b, 1e-10, "per-sample weights")
    # f32: same gradients to f32 accuracy
    t3, W3 = times.float().requires_grad_(), Wb.float().requires_grad_()
    r3 = run_layer(nir, {}, t3, ch, W3, **kw)
    assert torch.equal(r3.counts, r1.counts)
    g3 = torch.autograd.grad(spike_loss(r3), [t3, W3])
    assert_close(g3[0].double(), g1[0], 1e-3, "f32 times")
    assert_close(g3[1].double(), g1[1], 1e-3, "f32 weight")


def test_overflow_flag_and_unused_inputs():
    """A capped lane keeps its recorded spikes differentiable; inputs that need no gradient get
    none, and a layer without spikes gives zero gradients (not an error)."""
    nir = neuron("LIF")
    times = torch.linspace(1, 30, 30, dtype=F64)[None].requires_grad_()
    ch = torch.zeros(1, 30, dtype=torch.long)
    W = torch.tensor([[5.0, 0.02]], dtype=F64, requires_grad=True)
    res = run_layer(nir, {}, times, ch, W, max_spikes=4, on_overflow="flag")
    assert bool(res.overflow[0]) and res.counts.tolist() == [[4, 0]]
    res.times[torch.isfinite(res.times)].sum().backward()
    assert times.grad[0, :4].tolist() == [1.0] * 4 and times.grad[0, 4:].abs().max().item() == 0.0
    assert W.grad.abs().max().item() == 0.0  # jump crossings (lane 0) and a silent lane (1)
    empty = torch.zeros((2, 0), dtype=F64, requires_grad=True)
    r = run_layer(nir, {}, empty, torch.zeros((2, 0), dtype=torch.long), W)
    (r.times[torch.isfinite(r.times)].sum() + 0 * r.times.isinf().sum()).backward() if r.times.requires_grad else None
    assert r.counts.sum().item() == 0
