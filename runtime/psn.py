"""The Parallel Spiking Neuron family (Fang et al., NeurIPS 2023) in plain PyTorch.

Without a reset the dynamics are not iterative: over T bins, H = W X + b is one product across
time, S = Heaviside(H) (spike where H >= 0; the bias plays the part of minus the threshold),
trained with a surrogate derivative of the step. Layouts follow SpikingJelly's
activation_based.neuron.psn, so weights copy across one to one:

- psn:         W [T, T] (row t = output bin t), b [T];
- masked_psn:  banded W stored as Wb [T, k], Wb[t, m] = W[t, t - k + 1 + m] (m = k - 1 is the
               diagonal; entries before bin 0 multiply zero padding), b [T]; the band is all
               SpikingJelly's MaskedPSN uses once its lambda_ reaches 1;
- sliding_psn: w [k] shared by every bin, w[k - 1] weighs the current bin, b a scalar; T free.

Tensors are [T, B, N] (SpikingJelly's multi-step layout). The banded forms never build a T x T
matrix: k shifted multiply-adds, O(k T B N). compiler/backends/triton/psn.py fuses the same
formulas for CUDA tensors; this module is the CPU path and the reference.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

SURROGATES = {"atan": 2.0, "sigmoid": 4.0}  # name -> default alpha (SpikingJelly's defaults)


@dataclass(frozen=True)
class Surrogate:
    kind: str = "atan"
    alpha: float = 2.0


def surrogate_grad(h: Tensor, s: Surrogate) -> Tensor:
    """d/dh of the smooth stand-in for Heaviside(h), as SpikingJelly's surrogate.ATan / Sigmoid:
    atan: alpha / 2 / (1 + (pi/2 alpha h)^2); sigmoid: alpha sig(alpha h) (1 - sig(alpha h))."""
    if s.kind == "atan":
        return (s.alpha / 2) / (1 + (math.pi / 2 * s.alpha * h) ** 2)
    if s.kind == "sigmoid":
        sg = torch.sigmoid(s.alpha * h)
        return s.alpha * sg * (1 - sg)
    raise ValueError(f"unknown surrogate {s.kind!r}; choose {', '.join(SURROGATES)}")


class _Spike(torch.autograd.Function):
    """Heaviside(h) forward (1 where h >= 0), surrogate derivative backward; saves h only."""

    @staticmethod
    def forward(ctx, h: Tensor, kind: str, alpha: float) -> Tensor:
        ctx.save_for_backward(h)
        ctx.surrogate = Surrogate(kind, alpha)
        return (h >= 0).to(h.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        (h,) = ctx.saved_tensors
        return _surrogate_times(g, h, ctx.surrogate), None, None


def spike(h: Tensor, s: Surrogate) -> Tensor:
    return _Spike.apply(h, s.kind, float(s.alpha))


def _surrogate_times(g: Tensor, h: Tensor, s: Surrogate) -> Tensor:
    """g * surrogate_grad(h) with one allocation (in-place chain): the backward is memory-bound."""
    if s.kind == "atan":
        out = h * (math.pi / 2 * s.alpha)
        return out.mul_(out).add_(1).reciprocal_().mul_(g).mul_(s.alpha / 2)
    out = torch.sigmoid(h * s.alpha)
    return (1 - out).mul_(out).mul_(g).mul_(s.alpha)


# ----------------------------------------------------------------------------- potentials


def psn_potential(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """H = W X + b for x [T, ...], W [T, T], b [T]: one matrix product over time."""
    T = x.shape[0]
    if weight.shape != (T, T):
        raise ValueError(f"psn: the input has {T} bins, the weight is {tuple(weight.shape)} (needs [T, T])")
    return torch.addmm(bias[:, None], weight, x.reshape(T, -1)).view(x.shape)


def banded_potential(x: Tensor, band: Tensor, bias: Tensor) -> Tensor:
    """H[t] = b[t] + sum_m band[t, m] x[t - k + 1 + m] (x before bin 0 is 0). band is [T, k] (masked
    PSN) or [k] (sliding PSN: one row for every bin); bias [T] or a scalar."""
    T, k = x.shape[0], band.shape[-1]
    if band.dim() == 2 and band.shape[0] != T:
        raise ValueError(f"masked_psn: the input has {T} bins, the weight is {tuple(band.shape)} (needs [T, k])")
    shape = (T,) + (1,) * (x.dim() - 1)
    h = (bias.reshape(shape) if bias.dim() else bias).expand(x.shape).clone()
    for m in range(k):  # m = k - 1 is the current bin, m = k - 1 - d the bin d steps back
        d = k - 1 - m
        if d >= T:
            continue
        w = band[d:, m].reshape((T - d,) + shape[1:]) if band.dim() == 2 else band[m]
        h[d:] = h[d:] + w * x[: T - d]
    return h


def _band_col(w: Tensor, m: int, d: int, ndim: int) -> Tensor:
    """Weights of look-back d for bins d..T-1, shaped to broadcast over [T - d, M]."""
    return w[d:, m, None] if w.dim() == 2 else w[m]


class _BandedSpikes(torch.autograd.Function):
    """Heaviside(banded_potential(x, w, b)) with the surrogate backward, x [T, M]: in-place k-term
    multiply-adds each way and per-bin dot products for dW (no [T, M] temporaries per term), the
    CPU counterpart of the fused Triton kernels. banded_potential stays the readable reference."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor, kind: str, alpha: float) -> Tensor:
        T, k = x.shape[0], w.shape[-1]
        h = x * _band_col(w, k - 1, 0, 2)
        h.add_(b[:, None] if b.dim() else b)
        for m in range(k - 1):
            d = k - 1 - m
            if d < T:
                h[d:].addcmul_(x[: T - d], _band_col(w, m, d, 2))
        ctx.save_for_backward(x, w, h)
        ctx.surrogate, ctx.b_dim = Surrogate(kind, alpha), b.dim()
        return (h >= 0).to(h.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w, h = ctx.saved_tensors
        T, k = x.shape[0], w.shape[-1]
        dh = _surrogate_times(g, h, ctx.surrogate)
        dx = dh * _band_col(w, k - 1, 0, 2)
        dw = torch.zeros((T, k) if w.dim() == 2 else (k,), dtype=x.dtype, device=x.device)
        for m in range(k):
            d = k - 1 - m
            if d >= T:
                continue
            if d:
                dx[: T - d].addcmul_(dh[d:], _band_col(w, m, d, 2))
            dots = torch.einsum("tm,tm->t", dh[d:], x[: T - d])  # batched dots, no temporary
            if w.dim() == 2:
                dw[d:, m] = dots
            else:
                dw[m] = dots.sum()
        db = dh.sum(1) if ctx.b_dim else dh.sum()
        return dx, dw, db, None, None


def banded_spikes(x: Tensor, w: Tensor, b: Tensor, s: Surrogate) -> Tensor:
    """Spikes of a masked (w [T, k], b [T]) or sliding (w [k], b scalar) PSN, x [T, ...]."""
    T = x.shape[0]
    return _BandedSpikes.apply(x.reshape(T, -1), w, b, s.kind, float(s.alpha)).view(x.shape)


# ----------------------------------------------------------------------------- layouts


def band_from_dense(weight: Tensor, k: int) -> Tensor:
    """SpikingJelly's MaskedPSN weight [T, T] -> our Wb [T, k] (the entries its mask keeps)."""
    T = weight.shape[0]
    out = weight.new_zeros(T, k)
    for m in range(k):
        d = k - 1 - m
        idx = torch.arange(d, T, device=weight.device)
        out[d:, m] = weight[idx, idx - d]
    return out


def dense_from_band(band: Tensor, T: Optional[int] = None) -> Tensor:
    """Wb [T, k] (or a sliding w [k] with T given) -> the dense lower-triangular [T, T] (tests)."""
    if band.dim() == 1:
        band = band.expand(T, band.shape[0])
    T, k = band.shape
    out = band.new_zeros(T, T)
    for m in range(k):
        d = k - 1 - m
        idx = torch.arange(d, T, device=band.device)
        out[idx, idx - d] = band[d:, m]
    return out


# ----------------------------------------------------------------------------- binning


def bin_events(times: Tensor, channels: Tensor, n_channels: int, T: int, width: float, dtype=torch.float64) -> Tensor:
    """Event lists -> counts [T, B, C]: the exact number of events of each channel in each bin.
    Bin t is [t width, (t + 1) width); an event at exactly T width (the run's end, which the
    exact engines include) counts in the last bin; +inf padding and events outside [0, T width]
    are dropped."""
    B = times.shape[0]
    ok = torch.isfinite(times) & (times >= 0) & (times <= T * width)
    idx = torch.clamp(torch.floor(torch.where(ok, times, torch.zeros_like(times)) / width), 0, T - 1).long()
    flat = (idx * B + torch.arange(B, device=times.device)[:, None]) * n_channels + channels.long()
    counts = torch.zeros(T * B * n_channels, dtype=dtype, device=times.device)
    counts.index_add_(0, flat[ok], torch.ones(int(ok.sum()), dtype=dtype, device=times.device))
    return counts.view(T, B, n_channels)


# ----------------------------------------------------------------------------- sparse input counts


@dataclass
class SparseCounts:
    """Binned input counts [T, B, C] as CSR matrices: `rows` [T*B, C] for the forward x @ W and
    `cols` [C, T*B] (its transpose) for dW = x^T dz. Event inputs fill a few percent of the bins
    (SHD: ~5%), so both products cost O(events x N) instead of O(T B C N)."""

    rows: Tensor
    cols: Tensor
    shape: tuple[int, int, int]


def _csr(major: Tensor, minor: Tensor, n_major: int, n_minor: int, dtype) -> Tensor:
    key, counts = torch.unique(major * n_minor + minor, return_counts=True)  # sorted: CSR order
    crow = torch.zeros(n_major + 1, dtype=torch.long, device=major.device)
    crow[1:] = torch.bincount(key // n_minor, minlength=n_major).cumsum(0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, key % n_minor, counts.to(dtype), (n_major, n_minor))


def sparse_counts(times: Tensor, channels: Tensor, n_channels: int, T: int, width: float, dtype=torch.float64
                  ) -> SparseCounts:
    """The counts of `bin_events` (same bins, same dropped events) as SparseCounts."""
    B = times.shape[0]
    ok = torch.isfinite(times) & (times >= 0) & (times <= T * width)
    t = torch.clamp(torch.floor(times[ok] / width), 0, T - 1).long()
    b = torch.arange(B, device=times.device)[:, None].expand_as(times)[ok]
    row, ch = t * B + b, channels.long()[ok]
    return SparseCounts(_csr(row, ch, T * B, n_channels, dtype), _csr(ch, row, n_channels, T * B, dtype),
                        (T, B, n_channels))


class _SparseLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, x: SparseCounts) -> Tensor:
        ctx.x = x
        T, B, _ = x.shape
        return (x.rows @ w).view(T, B, w.shape[1])

    @staticmethod
    def backward(ctx, g: Tensor):
        return ctx.x.cols @ g.reshape(-1, g.shape[-1]), None


def counts_matmul(x: SparseCounts, w: Tensor) -> Tensor:
    """x @ w for sparse input counts, [T, B, N]; differentiable in w (the counts are data)."""
    return _SparseLinear.apply(w, x)
