"""The Triton engines' backward (generated adjoint kernel: chunk checkpoints, replay with a tape,
reverse associative scan of the adjoint maps, IFT at spikes) under TRITON_INTERPRET=1.

References: the compiled CPU adjoint (engine "sequential-cpu", itself checked against the
PyTorch reference's autograd and finite differences in test_cpu_grad.py) to 1e-10 relative, and
central finite differences of the exact forward in float64. The interpreter costs about a
millisecond per tl op, so the problems are tiny; chunks are small so that several chunks (and
their checkpoints) are crossed and several spikes land in one chunk."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from example_models import model_ir  # noqa: E402

from spikescan.runtime.engines import sequential_cpu  # noqa: E402
from spikescan.runtime.engines.triton_engine import run_layer as triton_run  # noqa: E402

F64 = torch.float64
_dexpn3 = None  # set by test_generated_dexpn3_matches_reference


def problem(seed, B, n, C, N, span, lo, hi, delays=False):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * span
    ch = torch.randint(0, C, (B, n), generator=g)
    W = lo + (hi - lo) * torch.rand(C, N, generator=g, dtype=F64)
    D = torch.rand(C, N, generator=g, dtype=F64) * 3.0 if delays else None
    return times, ch, W, D


def spike_loss(res):
    o = res.times
    wts = 0.5 + torch.arange(o.numel(), dtype=F64).reshape(o.shape) / o.numel()
    return (torch.where(torch.isfinite(o), o, torch.zeros((), dtype=F64)) * wts.to(o.dtype)).sum()


def grads(run, ir, params, times, ch, W, D, **kw):
    mk = lambda v: None if v is None else v.detach().clone().requires_grad_()
    t, w, d = mk(times), mk(W), mk(D)
    p = {k: mk(v) for k, v in params.items()}
    res = run(ir, p, t, ch, w, d, **kw)
    leaves = [t, w] + ([d] if d is not None else []) + list(p.values())
    return res, torch.autograd.grad(spike_loss(res), leaves)


def compare(ir, params, times, ch, W, D, tol=1e-10, min_spikes=3, **kw):
    r1, g1 = grads(triton_run, ir, params, times, ch, W, D, **kw)
    kw.pop("mode", None)
    kw.pop("chunk", None)
    r2, g2 = grads(sequential_cpu.run_layer, ir, params, times, ch, W, D, **kw)
    assert torch.equal(r1.counts, r2.counts) and int(r1.counts.sum()) >= min_spikes
    names = ["times", "weight"] + (["delays"] if D is not None else []) + list(params)
    for nm, a, b in zip(names, g1, g2):
        assert b.abs().max() > 0, f"{nm}: the reference gradient is zero (the test checks nothing)"
        err = (a - b).abs().max().item()
        assert err <= tol * max(1.0, b.abs().max().item()), f"d/d{nm}: error {err:.3e}"
    return r1


@pytest.mark.parametrize("chunk", [2, 64])
def test_cuba_all_gradients_match_compiled_adjoint(chunk):
    """Delays (per-neuron arrival orders), per-neuron tau_m and a shared v_th, padded inputs:
    chunk 2 crosses many chunk checkpoints, chunk 64 is one chunk (no checkpoint replay)."""
    ir = model_ir("CubaLIF")
    times, ch, W, D = problem(4, 2, 9, 3, 2, 30.0, 0.8, 3.0, delays=True)
    times[1, 7:] = math.inf
    params = {"tau_m": torch.tensor([18.0, 24.0], dtype=F64), "v_th": torch.tensor(0.9, dtype=F64)}
    compare(ir, params, times, ch, W, D, chunk=chunk, max_spikes=6, min_spikes=6)


def test_refractory_end_spikes_and_sequential_kernel():
    """t_ref = tau_s / 2 with strong inputs: spikes exactly at the end of a refractory period
    (their gradient flows through the refractory end to the previous spike and to tau_s); the
    sequential kernel's forward feeds the same backward."""
    base = model_ir("CubaLIF")
    tau_s = next(p.symbol for p in base.params if p.name == "tau_s")
    ir = dataclasses.replace(base, t_ref=tau_s / 2)
    times = torch.tensor([[1.0, 2.0, 3.1, 3.6, 9.0]], dtype=F64)
    ch = torch.tensor([[0, 0, 0, 1, 0]])
    W = torch.tensor([[6.0, 5.0], [7.0, 8.0]], dtype=F64)
    params = {"tau_s": torch.tensor(5.0, dtype=F64)}
    res = compare(ir, params, times, ch, W, None, chunk=3, mode="sequential")
    st = res.times[0, 0, : int(res.counts[0, 0])]
    assert bool((st[1:] - st[:-1] - 2.5).abs().min() < 1e-12)  # a spike at a refractory end


def test_per_sample_weights_overflow_flag_and_t_end():
    """[B, C, N] weights; a lane over its spike cap (flagged) keeps its recorded spikes'
    gradients; inputs past t_end get zero gradient."""
    ir = model_ir("CubaLIF")
    times, ch, W, _ = problem(7, 2, 8, 2, 2, 40.0, 1.0, 4.0)
    Wb = torch.stack([W, W.flip(0)])
    kw = dict(chunk=3, max_spikes=2, on_overflow="flag", t_end=35.0)
    r1, g1 = grads(triton_run, ir, {}, times, ch, Wb, None, **kw)
    r2, g2 = grads(sequential_cpu.run_layer, ir, {}, times, ch, Wb, None,
                   max_spikes=2, on_overflow="flag", t_end=35.0)
    assert torch.equal(r1.counts, r2.counts) and bool(r1.overflow.any())
    assert bool((times > 35).any()) and g1[0][times > 35].abs().max().item() == 0.0
    for a, b in zip(g1, g2):
        assert b.abs().max() > 0
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item())


def test_central_finite_differences():
    """Directional central differences of the exact forward (f64) against the Triton adjoint
    in every input: times, weights, delays, tau_s."""
    ir = model_ir("CubaLIF")
    times, ch, W, D = problem(11, 1, 8, 2, 2, 25.0, 1.0, 3.5, delays=True)
    params = {"tau_s": torch.tensor([5.0, 4.0], dtype=F64)}
    res, g = grads(triton_run, ir, params, times, ch, W, D, chunk=4, max_spikes=6)
    assert int(res.counts.sum()) >= 3
    base = [times, W, D, params["tau_s"]]
    gen = torch.Generator().manual_seed(1)
    h = 1e-6
    for _ in range(2):
        dirs = [torch.randn(v.shape, generator=gen, dtype=F64) for v in base]
        deriv = sum((gi * di).sum() for gi, di in zip(g, dirs)).item()

        def at(s):  # the forward of the compiled CPU engine: identical spike trains, fast
            v = [b + s * d for b, d in zip(base, dirs)]
            r = sequential_cpu.run_layer(ir, {"tau_s": v[3]}, v[0], ch, v[1], v[2], max_spikes=6)
            assert torch.equal(r.counts, res.counts)
            return spike_loss(r).item()

        fd = (at(h) - at(-h)) / (2 * h)
        assert abs(fd - deriv) <= 1e-5 * max(1.0, abs(fd)), f"FD {fd} vs adjoint {deriv}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["AlphaLIF", "AdaptiveLIF"])
def test_three_state_models(name):
    """Three-state neurons (dexp2 in Phi, dexpn in its parameter derivatives)."""
    ir = model_ir(name)
    times, ch, W, D = problem(5, 1, 8, 2, 2, 30.0, 1.5, 4.0, delays=True)
    params = {"tau_m": torch.tensor([18.0, 24.0], dtype=F64)}
    compare(ir, params, times, ch, W, D, chunk=3, max_spikes=6)


def test_generated_dexpn3_matches_reference():
    """exp(-max(0, a, b, c)) exp[0, a, b, c] from the generated shifted helper (the form the
    overflow-free printer uses, stable_exp.ddshift) vs special.numeric_dexpn times the shift
    (repeated nodes, spreads on both sides of the series/quotient switch, large rates of both signs)."""
    import math

    import triton
    import triton.language as tl

    from spikescan.compiler.backends.triton.codegen import load_module
    from spikescan.compiler.special import numeric_dexpn

    mod = load_module(model_ir("AlphaLIF"), "f64")
    assert hasattr(mod, "dexpn3s"), "AlphaLIF's adjoint needs dexpn3s"
    global _dexpn3
    _dexpn3 = mod.dexpn3s  # a global: @triton.jit code resolves names in the module

    @triton.jit
    def kern(A, B, C, OUT, K: tl.constexpr):
        i = tl.arange(0, K)
        r = _dexpn3(tl.load(A + i), tl.load(B + i), tl.load(C + i))
        tl.store(OUT + i, r)

    g = torch.Generator().manual_seed(0)
    a = torch.cat([torch.tensor([0.0, -1e-9, -0.3, -5.0, -40.0, 2.0, -0.7, -0.7]),
                   -torch.rand(24, generator=g) * torch.tensor([0.1, 3.0, 30.0]).repeat(8)]).to(F64)
    b = torch.cat([torch.tensor([0.0, -1e-9, -0.3, -0.2, -40.0, -3.0, -0.7, -2.5]),
                   -torch.rand(24, generator=g) * 4.0]).to(F64)
    c = torch.cat([torch.tensor([0.0, 1e-9, -0.31, -9.0, -39.0, 1.0, -0.7, -0.7]),
                   b[8:].flip(0)]).to(F64)
    out = torch.empty_like(a)
    kern[(1,)](a, b, c, out, K=32)
    for k in range(32):
        z = (float(a[k]), float(b[k]), float(c[k]))
        ref = numeric_dexpn(*z) * math.exp(-max(0.0, *z))
        assert abs(out[k].item() - ref) <= 1e-13 * abs(ref), (a[k], b[k], c[k], out[k].item(), ref)


@pytest.mark.slow
def test_float32_gradients_follow_float64():
    ir = model_ir("CubaLIF")
    times, ch, W, _ = problem(4, 1, 8, 2, 2, 30.0, 1.0, 3.0)
    r64, g64 = grads(triton_run, ir, {}, times, ch, W, None, chunk=3, max_spikes=6)
    r32, g32 = grads(triton_run, ir, {}, times.float(), ch, W.float(), None, chunk=3, max_spikes=6)
    assert torch.equal(r32.counts, r64.counts) and int(r64.counts.sum()) >= 3
    for a, b in zip(g32, g64):
        assert a.dtype == torch.float32 and b.abs().max() > 0
        assert (a.double() - b).abs().max().item() <= 1e-3 * max(1.0, b.abs().max().item())
