"""Event ordering for one layer: one shared sorted order per sample without delays, per-neuron
permutations (int indices into the original events, never per-neuron copies) with delays.

Conventions (shared with tests/mpref.py): the neuron starts at t = 0; events arriving after the
horizon t_end are dropped; a virtual zero-weight event at t_end closes the last interval (so the
trailing interval is an ordinary interval); padding after it has gap 0 and is masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

Tensor = torch.Tensor

TAIL_TAUS = 60.0  # t_end=None: last arrival + 60 slowest time constants (as tests/mpref.py)


@dataclass
class LayerEvents:
    """Sorted arrivals of one layer. Nd = 1 (shared order) or N (per-neuron order, delays)."""

    times_ext: Tensor  # [B, n+1] input times, +inf dropped, last column = horizon (no grad there)
    ch_ext: Tensor  # [B, n+1] int64 channels (0 at padding / virtual)
    perm: Tensor  # [B, Nd, n+1] int64 order into the extended events
    key: Tensor  # [B, Nd, n+1] sorted arrival times without grad (+inf = padding)
    t_end: Tensor  # [B, Nd] horizon per sample (or per lane with delays)
    weight: Tensor  # [C, N] or [B, C, N]
    delays: Optional[Tensor]  # [C, N] or None
    n: int  # number of real event columns
    N: int

    @property
    def length(self) -> int:
        return self.perm.shape[-1]

    @property
    def shared(self) -> bool:
        return self.perm.shape[1] == 1

    def slice(self, s: int, e: int):
        """Events s..e-1 of every order: (t [B, Nd, K] with grad, clamped to the horizon at
        padding; valid [B, Nd, K] = the interval ending at that event is real; w [B, N, K])."""
        idx = self.perm[..., s:e]
        B, Nd, K = idx.shape
        N = self.N
        key = self.key[..., s:e]
        valid = torch.isfinite(key)
        real = valid & (idx < self.n)
        if self.shared:
            t = self.times_ext.gather(1, idx[:, 0]).unsqueeze(1)
            ch = self.ch_ext.gather(1, idx[:, 0])  # [B, K]
            if self.weight.dim() == 2:
                w = self.weight[ch].transpose(1, 2)
            else:
                w = self.weight.gather(1, ch.unsqueeze(-1).expand(B, K, N)).transpose(1, 2)
        else:
            t = self.times_ext.unsqueeze(1).expand(B, N, self.length).gather(2, idx)
            ch = self.ch_ext.unsqueeze(1).expand(B, N, self.length).gather(2, idx)  # [B, N, K]
            wT = self.weight.transpose(-1, -2)  # [N, C] or [B, N, C]
            C = wT.shape[-1]
            w = wT.expand(B, N, C).gather(2, ch)
            dl = self.delays.t().expand(B, N, C).gather(2, ch)
            t = t + torch.where(idx < self.n, dl, torch.zeros_like(dl))
        hz = self.t_end.unsqueeze(-1).to(t.dtype)
        t = torch.where(real, t, hz.expand_as(t))  # virtual event and padding sit at the horizon
        w = torch.where(real if real.shape[1] == N else real.expand(B, N, K), w, torch.zeros_like(w))
        return t, valid, w

    def at_horizon(self, s: int, e: int) -> Tensor:
        """[B, Nd, K] bool: the interval ending at event s..e-1 ends at the virtual horizon event.
        A run covers the closed interval [0, t_end], so a refractory period that ends exactly at
        t_end may still give a spike there (elsewhere an input at the period's end comes first)."""
        return torch.isfinite(self.key[..., s:e]) & (self.perm[..., s:e] == self.n)


def pad_no_events(times: Tensor, channels: Tensor) -> tuple[Tensor, Tensor]:
    """A batch with no events at all (n = 0) gets one +inf padding column, which keeps every
    index in range; the concatenation is differentiable, so a gradient for times comes back as
    [B, 0]. Other batches are returned unchanged."""
    if times.shape[1] != 0:
        return times, channels
    return (torch.cat([times, times.detach().new_full((times.shape[0], 1), math.inf)], 1),
            torch.cat([channels, channels.new_zeros((channels.shape[0], 1))], 1))


def _last(arr: Tensor, dim: int) -> Tensor:
    """The latest arrival along dim (-inf padding), at least 0; 0 where there is no event at all
    (n = 0: max of an empty dimension is an error in torch)."""
    if arr.shape[dim] == 0:
        return arr.new_zeros(arr.shape[:dim] + arr.shape[dim + 1:])
    return arr.max(dim).values.clamp(min=0.0)


def build_events(times: Tensor, channels: Tensor, weight: Tensor, delays: Optional[Tensor],
                 t_end: Optional[float], tau_max: float) -> LayerEvents:
    if times.dim() != 2 or channels.shape != times.shape:
        raise ValueError(f"times and channels must both be [B, n]; got {tuple(times.shape)} and "
                         f"{tuple(channels.shape)}")
    times, channels = pad_no_events(times, channels)
    B, n = times.shape
    N = weight.shape[-1]
    C = weight.shape[-2]
    with torch.no_grad():
        tt = times.detach()
        fin = torch.isfinite(tt)
        if bool((tt[fin] < 0).any()):
            raise ValueError("event times must be >= 0 ms (neurons start at t = 0)")
        if bool(torch.isnan(tt).any()):
            raise ValueError("event times contain NaN")
        chd = channels.detach()
        if bool(((chd[fin] < 0) | (chd[fin] >= C)).any()):
            raise ValueError(f"channels must lie in [0, {C}) for real events")
    ch = torch.where(fin, channels, torch.zeros_like(channels)).long()
    ch_ext = torch.cat([ch, torch.zeros_like(ch[:, :1])], 1)
    with torch.no_grad():
        if delays is None:
            arr = torch.where(fin, tt, torch.full_like(tt, -math.inf))
            last = _last(arr, 1)  # [B]
            hz = torch.full_like(last, float(t_end)) if t_end is not None else last + TAIL_TAUS * tau_max
            hz = hz[:, None]  # [B, 1]
            key = torch.where(fin & (tt <= hz), tt, torch.full_like(tt, math.inf))
            key = torch.cat([key, hz], 1)
            perm = torch.sort(key, dim=1, stable=True).indices.unsqueeze(1)
            key = key.gather(1, perm[:, 0]).unsqueeze(1)
        else:
            if delays.shape != (C, N):
                raise ValueError(f"delays must be [C, N] = [{C}, {N}], got {tuple(delays.shape)}")
            dl = delays.detach().t()  # [N, C]
            arr = tt.unsqueeze(1) + dl[:, ch].permute(1, 0, 2)  # [B, N, n]
            finb = fin.unsqueeze(1).expand_as(arr)
            last = _last(torch.where(finb, arr, torch.full_like(arr, -math.inf)), 2)
            hz = torch.full_like(last, float(t_end)) if t_end is not None else last + TAIL_TAUS * tau_max
            key = torch.where(finb & (arr <= hz.unsqueeze(-1)), arr, torch.full_like(arr, math.inf))
            key = torch.cat([key, hz.unsqueeze(-1)], 2)
            key, perm = torch.sort(key, dim=2, stable=True)
            del arr
    times_ext = torch.cat([torch.where(fin, times, torch.zeros_like(times)),
                           torch.zeros_like(times[:, :1])], 1)
    # The virtual event's time comes from t_end (set in slice via `valid`); keep finite values.
    return LayerEvents(times_ext=times_ext, ch_ext=ch_ext, perm=perm, key=key, t_end=hz,
                       weight=weight, delays=delays, n=n, N=N)
