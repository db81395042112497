"""The PSN Triton kernels (compiler/backends/triton/psn.py) under TRITON_INTERPRET=1 against the
torch formulas of runtime/psn.py (themselves checked against SpikingJelly in
tests/runtime/test_psn.py): spikes equal, gradients to 1e-12 in f64. Sizes are small (the
interpreter runs each tl op through numpy) but cross the column block (BLOCK = 128)."""

import os
import subprocess
import sys
from pathlib import Path

# Triton decides at import whether its own @jit library functions (tl.sum, ...) are interpreted:
# once another test module imported it (torch._dynamo does, e.g. under a test of torch.compile),
# setting TRITON_INTERPRET here is too late, and the kernels run in a fresh process instead.
_LATE = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process

import pytest
import torch

from spikescan.compiler.backends.triton import psn as triton_psn
from spikescan.runtime import psn

pytestmark = [pytest.mark.skipif(not triton_psn.available(), reason="triton is not installed")]
in_process = pytest.mark.skipif(_LATE, reason="triton was imported before TRITON_INTERPRET; "
                                "test_kernels_in_a_fresh_process runs these")
F64 = torch.float64


@pytest.mark.skipif(not _LATE, reason="the kernels run in this process")
def test_kernels_in_a_fresh_process():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                       capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2],
                       env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "5 passed" in r.stdout, r.stdout[-500:]


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


@in_process
@pytest.mark.parametrize("kind,alpha", [("atan", 2.0), ("sigmoid", 4.0)])
def test_masked_kernel_matches_torch(kind, alpha):
    T, k, M = 7, 3, 150
    x, gy, g = _data(T, M, 0)
    w = (torch.randn(T, k, generator=g, dtype=F64) * 0.7).requires_grad_(True)
    b = torch.linspace(-1.0, 0.2, T, dtype=F64).requires_grad_(True)
    ref = psn.spike(psn.banded_potential(x, w, b), psn.Surrogate(kind, alpha))
    out = triton_psn.banded_spikes(x, w, b, kind, alpha)
    _check(out, ref, gy, [x, w, b])


@in_process
def test_sliding_kernel_matches_torch():
    T, k, M = 5, 4, 130
    x, gy, g = _data(T, M, 1)
    w = (torch.randn(k, generator=g, dtype=F64) * 0.7).requires_grad_(True)
    b = torch.tensor(-0.3, dtype=F64, requires_grad=True)
    ref = psn.spike(psn.banded_potential(x, w, b), psn.Surrogate())
    out = triton_psn.banded_spikes(x, w, b, "atan", 2.0)
    _check(out, ref, gy, [x, w, b])


@in_process
def test_dense_step_kernels_match_torch():
    T, M = 6, 140
    x, gy, g = _data(T, M, 2)
    w = (torch.randn(T, T, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    b = torch.full((T,), -0.5, dtype=F64, requires_grad=True)
    ref = psn.spike(psn.psn_potential(x, w, b), psn.Surrogate("sigmoid", 4.0))
    out = triton_psn.dense_spikes(x, w, b, "sigmoid", 4.0)
    _check(out, ref, gy, [x, w, b])


@in_process
def test_kernel_source_never_builds_a_dense_mask():
    """The banded kernels index the band directly: no T x T buffer, no torch mask helpers."""
    import inspect

    src = inspect.getsource(triton_psn.BandedPSN)
    assert "dense_from_band" not in src and "tril" not in src and "zeros(T, T" not in src
