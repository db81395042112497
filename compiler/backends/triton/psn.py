"""Triton kernels for the Parallel Spiking Neuron family (runtime/psn.py states the maths).

One kernel source, specialised by Triton's constexprs per (band width K, masked or sliding
weights, surrogate kind): the JIT compiles one variant per combination a network uses.

- masked / sliding PSN: the banded product, the bias and the step are one fused pass per
  (bin, column block) that reads K shifted rows of X; no T x T mask or matrix is ever built.
  The backward recomputes the surrogate from the saved potential H and fuses dH with the
  partial sums of dW and db; a second pass gathers dX from the K later rows of dH.
- dense PSN: H = W X + b is a plain GEMM (cuBLAS beats a hand-written tile here), followed
  by fused step / surrogate kernels.

X is [T, M] (M = batch x neurons, contiguous). Runs on CUDA tensors, or on CPU tensors under
TRITON_INTERPRET=1 (tests). Use `available()` before choosing this path.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - triton missing or broken: the torch path remains
    triton = None

BLOCK = 128
SURR_CODE = {"atan": 0, "sigmoid": 1}


def available() -> bool:
    return triton is not None


if triton is not None:

    # The surrogate derivative (SpikingJelly's ATan for SURR 0, Sigmoid for 1) is written out in
    # each kernel rather than called as a @triton.jit helper: a helper jitted before
    # TRITON_INTERPRET was set (another module imported triton first) cannot be called from an
    # interpreted kernel, and the tests run in the interpreter.

    @triton.jit
    def _banded_fwd(x_ptr, w_ptr, b_ptr, h_ptr, s_ptr, T, M,
                    K: tl.constexpr, SLIDING: tl.constexpr, BLOCK: tl.constexpr):
        t = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < M
        if SLIDING:
            h = tl.load(b_ptr + cols * 0, mask=ok, other=0.0)
        else:
            h = tl.load(b_ptr + t + cols * 0, mask=ok, other=0.0)
        for m in tl.static_range(K):
            src = t - (K - 1 - m)  # the bin that weight m looks back to
            if SLIDING:
                w = tl.load(w_ptr + m + cols * 0, mask=ok, other=0.0)
            else:
                w = tl.load(w_ptr + t * K + m + cols * 0, mask=ok, other=0.0)
            xv = tl.load(x_ptr + src * M + cols, mask=ok & (cols * 0 + src >= 0), other=0.0)
            h += w * xv
        tl.store(h_ptr + t * M + cols, h, mask=ok)
        tl.store(s_ptr + t * M + cols, tl.where(h >= 0, 1.0, 0.0).to(h.dtype), mask=ok)

    @triton.jit
    def _banded_bwd_dh(g_ptr, h_ptr, x_ptr, dh_ptr, pw_ptr, pb_ptr, alpha, T, M,
                       K: tl.constexpr, SURR: tl.constexpr, BLOCK: tl.constexpr):
        """dH = g * sg(H) for bin t and a column block; per-block partial sums of dW[t, m] and db[t]
        (reduced over blocks by the caller: no atomics, deterministic)."""
        t = tl.program_id(0)
        blk = tl.program_id(1)
        cols = blk * BLOCK + tl.arange(0, BLOCK)
        ok = cols < M
        h = tl.load(h_ptr + t * M + cols, mask=ok, other=0.0)
        g = tl.load(g_ptr + t * M + cols, mask=ok, other=0.0)
        if SURR == 0:
            z = 1.5707963267948966 * alpha * h
            dh = g * ((alpha * 0.5) / (1.0 + z * z))
        else:
            sg = 1.0 / (1.0 + tl.exp(-alpha * h))
            dh = g * (alpha * sg * (1.0 - sg))
        dh = tl.where(ok, dh, 0.0)
        tl.store(dh_ptr + t * M + cols, dh, mask=ok)
        tl.store(pb_ptr + blk * T + t, tl.sum(dh, axis=0))
        for m in tl.static_range(K):
            src = t - (K - 1 - m)
            xv = tl.load(x_ptr + src * M + cols, mask=ok & (cols * 0 + src >= 0), other=0.0)
            tl.store(pw_ptr + (blk * T + t) * K + m, tl.sum(dh * xv, axis=0))

    @triton.jit
    def _banded_bwd_dx(dh_ptr, w_ptr, dx_ptr, T, M,
                       K: tl.constexpr, SLIDING: tl.constexpr, BLOCK: tl.constexpr):
        """dX[s] = sum_m W[s + d, m] dH[s + d], d = K - 1 - m: the transposed band."""
        s = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < M
        acc = tl.load(dh_ptr + s * M + cols, mask=ok, other=0.0) * 0.0
        for m in tl.static_range(K):
            t = s + (K - 1 - m)
            if SLIDING:
                w = tl.load(w_ptr + m + cols * 0, mask=ok, other=0.0)
            else:
                w = tl.load(w_ptr + t * K + m + cols * 0, mask=ok & (cols * 0 + t < T), other=0.0)
            acc += w * tl.load(dh_ptr + t * M + cols, mask=ok & (cols * 0 + t < T), other=0.0)
        tl.store(dx_ptr + s * M + cols, acc, mask=ok)

    @triton.jit
    def _step_fwd(h_ptr, s_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = i < n
        h = tl.load(h_ptr + i, mask=ok, other=0.0)
        tl.store(s_ptr + i, tl.where(h >= 0, 1.0, 0.0).to(h.dtype), mask=ok)

    @triton.jit
    def _step_bwd(g_ptr, h_ptr, out_ptr, alpha, n, SURR: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = i < n
        h = tl.load(h_ptr + i, mask=ok, other=0.0)
        g = tl.load(g_ptr + i, mask=ok, other=0.0)
        if SURR == 0:
            z = 1.5707963267948966 * alpha * h
            d = (alpha * 0.5) / (1.0 + z * z)
        else:
            sg = 1.0 / (1.0 + tl.exp(-alpha * h))
            d = alpha * sg * (1.0 - sg)
        tl.store(out_ptr + i, g * d, mask=ok)


# Masks combine a column block with a per-bin condition; the bin condition is broadcast to the
# block (cols * 0 + ...) because some Triton interpreters refuse a block & scalar mask.


def _grid2(T: int, M: int):
    return (T, triton.cdiv(M, BLOCK))


class BandedPSN(torch.autograd.Function):
    """S = Heaviside(banded(W) X + b) with the surrogate backward. x [T, M]; w [T, K] (masked) or
    [K] (sliding); b [T] (masked) or a 0-d tensor (sliding)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor, kind: str, alpha: float) -> Tensor:
        x, w, b = x.contiguous(), w.contiguous(), b.contiguous()
        T, M = x.shape
        K, sliding = w.shape[-1], w.dim() == 1
        h, s = torch.empty_like(x), torch.empty_like(x)
        _banded_fwd[_grid2(T, M)](x, w, b, h, s, T, M, K=K, SLIDING=sliding, BLOCK=BLOCK)
        ctx.save_for_backward(x, w, h)
        ctx.kind, ctx.alpha, ctx.bias_shape = kind, float(alpha), b.shape
        return s

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w, h = ctx.saved_tensors
        g = g.contiguous()
        T, M = x.shape
        K, sliding = w.shape[-1], w.dim() == 1
        nblk = triton.cdiv(M, BLOCK)
        dh = torch.empty_like(x)
        pw = torch.empty(nblk, T, K, dtype=x.dtype, device=x.device)
        pb = torch.empty(nblk, T, dtype=x.dtype, device=x.device)
        _banded_bwd_dh[(T, nblk)](g, h, x, dh, pw, pb, ctx.alpha, T, M, K=K, SURR=SURR_CODE[ctx.kind], BLOCK=BLOCK)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            _banded_bwd_dx[(T, nblk)](dh, w, dx, T, M, K=K, SLIDING=sliding, BLOCK=BLOCK)
        dw, db = pw.sum(0), pb.sum(0)
        if sliding:  # one weight row shared by every bin
            dw, db = dw.sum(0), db.sum()
        return dx, dw, db.reshape(ctx.bias_shape), None, None


class Step(torch.autograd.Function):
    """Heaviside(h) with the surrogate backward, one fused elementwise kernel each way."""

    @staticmethod
    def forward(ctx, h: Tensor, kind: str, alpha: float) -> Tensor:
        h = h.contiguous()
        s = torch.empty_like(h)
        _step_fwd[(triton.cdiv(h.numel(), 1024),)](h, s, h.numel(), BLOCK=1024)
        ctx.save_for_backward(h)
        ctx.kind, ctx.alpha = kind, float(alpha)
        return s

    @staticmethod
    def backward(ctx, g: Tensor):
        (h,) = ctx.saved_tensors
        out = torch.empty_like(h)
        _step_bwd[(triton.cdiv(h.numel(), 1024),)](g.contiguous(), h, out, ctx.alpha, h.numel(),
                                                   SURR=SURR_CODE[ctx.kind], BLOCK=1024)
        return out, None, None


def banded_spikes(x: Tensor, w: Tensor, b: Tensor, kind: str, alpha: float) -> Tensor:
    """x [T, ...] -> spikes [T, ...] (masked or sliding PSN, fused)."""
    T = x.shape[0]
    return BandedPSN.apply(x.reshape(T, -1), w, b, kind, alpha).view(x.shape)


def dense_spikes(x: Tensor, w: Tensor, b: Tensor, kind: str, alpha: float) -> Tensor:
    """x [T, ...] -> spikes (PSN): cuBLAS GEMM for H, fused step and surrogate."""
    T = x.shape[0]
    h = torch.addmm(b[:, None], w, x.reshape(T, -1))
    return Step.apply(h, kind, alpha).view(x.shape)
