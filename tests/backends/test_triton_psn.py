"""The PSN Triton kernels (compiler/backends/triton_psn.py) under TRITON_INTERPRET=1 against the
torch formulas of runtime/psn.py (themselves checked against SpikingJelly in
tests/runtime/test_psn.py): spikes equal, gradients to 1e-12 in f64. Sizes are small (the
interpreter runs each tl op through numpy) but cross the column block (BLOCK = 128)."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process

import pytest
import torch

from spikescan.compiler.backends import triton_psn
from spikescan.runtime import psn

pytestmark = pytest.mark.skipif(not triton_psn.available(), reason="triton is not installed")
F64 = torch.float64


def _data(T, M, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, M, generator=g, dtype=F64) + 0.4).requires_grad_(True)
    gy = torch.randn(T, M, generator=g, dtype=F64)
    return x, gy, g


def _check(out_t, out_r, gy, inputs):
    assert torch.equal(out_t, out_r)
    assert 0 < out_r.sum() < out_r.numel()
    gt = torch.autograd.grad((out_t * gy).sum(), inputs, retain_graph=True)
    gr = torch.autograd.grad((out_r * gy).sum(), inputs)
    for a, b in zip(gt, gr):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert b.abs().max() > 0


@pytest.mark.parametrize("kind,alpha", [("atan", 2.0), ("sigmoid", 4.0)])
def test_masked_kernel_matches_torch(kind, alpha):
    T, k, M = 7, 3, 150
    x, gy, g = _data(T, M, 0)
    w = (torch.randn(T, k, generator=g, dtype=F64) * 0.7).requires_grad_(True)
    b = torch.linspace(-1.0, 0.2, T, dtype=F64).requires_grad_(True)
    ref = psn.spike(psn.banded_potential(x, w, b), psn.Surrogate(kind, alpha))
    out = triton_psn.banded_spikes(x, w, b, kind, alpha)
    _check(out, ref, gy, [x, w, b])


def test_sliding_kernel_matches_torch():
    T, k, M = 5, 4, 130
    x, gy, g = _data(T, M, 1)
    w = (torch.randn(k, generator=g, dtype=F64) * 0.7).requires_grad_(True)
    b = torch.tensor(-0.3, dtype=F64, requires_grad=True)
    ref = psn.spike(psn.banded_potential(x, w, b), psn.Surrogate())
    out = triton_psn.banded_spikes(x, w, b, "atan", 2.0)
    _check(out, ref, gy, [x, w, b])


def test_dense_step_kernels_match_torch():
    T, M = 6, 140
    x, gy, g = _data(T, M, 2)
    w = (torch.randn(T, T, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    b = torch.full((T,), -0.5, dtype=F64, requires_grad=True)
    ref = psn.spike(psn.psn_potential(x, w, b), psn.Surrogate("sigmoid", 4.0))
    out = triton_psn.dense_spikes(x, w, b, "sigmoid", 4.0)
    _check(out, ref, gy, [x, w, b])


def test_kernel_source_never_builds_a_dense_mask():
    """The banded kernels index the band directly: no T x T buffer, no torch mask helpers."""
    import inspect

    src = inspect.getsource(triton_psn.BandedPSN)
    assert "dense_from_band" not in src and "tril" not in src and "zeros(T, T" not in src
