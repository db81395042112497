"""Pieces shared by the PyTorch engines: argument checks, per-layer constants, the spike record
(spikes are appended as (lane, rank, time) triples and scattered into [B, N, S] once at the end,
so that recording costs nothing per restart step), and the cap handling."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.events import LayerEvents, build_events
from spikescan.runtime.kernels import NeuronKernels, densify
from spikescan.runtime.engines.validate import check_auto_horizon, check_inputs
from spikescan.runtime.engines.result import LayerResult, SpikeCapExceeded
from spikescan.runtime.engines.spike_time import spike_offset
from spikescan.runtime.engines.ports import is_multi, normalize

Tensor = torch.Tensor

OBSERVE_KINDS = ("max_potential", "li_integral")


@dataclass
class Layer:
    kern: NeuronKernels
    P: tuple  # params, 0-d or [N]
    Bvec: Optional[list]  # jump vector of the port (entries tensor/float/None); None with a PortMap
    x0: list  # initial state, d tensors [B, N]
    ev: LayerEvents
    B: int
    N: int
    dtype: torch.dtype
    device: torch.device
    port: object = None  # the port name (or None), or a PortMap (runtime/engines/ports.py)


def check_layer_options(times: Tensor, t_end: Optional[float], observe: Optional[str],
                        on_overflow: str, max_spikes: int) -> None:
    """The run_layer options every engine validates the same way."""
    if on_overflow not in ("raise", "flag"):
        raise ValueError(f"on_overflow must be 'raise' or 'flag', got {on_overflow!r}")
    if observe is not None and observe not in OBSERVE_KINDS:
        raise ValueError(f"observe must be one of {OBSERVE_KINDS} or None, got {observe!r}")
    if observe is not None and t_end is None:
        raise ValueError(f"observe={observe!r} needs t_end (the trial length in ms)")
    if max_spikes < 1:
        raise ValueError("max_spikes must be >= 1")
    if not times.is_floating_point():
        raise TypeError("times must be a floating-point tensor (ms)")


def setup(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor,
          delays: Optional[Tensor], port, t_end: Optional[float],
          observe: Optional[str], on_overflow: str, max_spikes: int) -> Layer:
    check_layer_options(times, t_end, observe, on_overflow, max_spikes)
    kern = NeuronKernels.from_ir(ir)
    dtype, device = times.dtype, times.device
    if weight.dim() not in (2, 3):
        raise ValueError(f"weight must be [C, N] or [B, C, N], got {tuple(weight.shape)}")
    weight = weight.to(dtype)
    if delays is not None:
        delays = delays.to(dtype)
    B = times.shape[0]
    N = weight.shape[-1]
    if weight.dim() == 3 and weight.shape[0] != B:
        raise ValueError(f"weight [B, C, N] has batch {weight.shape[0]}, times has {B}")
    P = kern.param_tensors(params, N, dtype, device)
    check_inputs(times, weight, delays, t_end, channels)
    if t_end is None:
        check_auto_horizon(kern, P)
    tau = kern.slowest_tau(P)
    ev = build_events(times, channels.to(device), weight, delays, t_end, tau)
    PB = tuple(p for p in P)
    port = normalize(port, kern.port_names, weight.shape[-2])
    Bvec = None if is_multi(port) else kern.B(port, PB)
    like = torch.zeros(B, N, dtype=dtype, device=device)
    x0 = densify(kern.init(PB), like)
    return Layer(kern, P, Bvec, x0, ev, B, N, dtype, device, port)


class SpikeRecord:
    """Per-lane spike counts and the cap; spikes kept as triples until `result`."""

    def __init__(self, B: int, N: int, max_spikes: int, on_overflow: str, device):
        self.B, self.N, self.cap, self.mode = B, N, max_spikes, on_overflow
        self.counts = torch.zeros(B * N, dtype=torch.long, device=device)
        self.dead = torch.zeros(B * N, dtype=torch.bool, device=device)
        self.overflow = torch.zeros(B, dtype=torch.bool, device=device)
        self.lanes: list = []
        self.ranks: list = []
        self.times: list = []

    def add(self, lane: Tensor, t: Tensor) -> Tensor:
        """Record spikes of flat lanes `lane` at times t; returns the mask of spikes kept (False:
        the lane hit the cap and is now dead, on_overflow='flag')."""
        rank = self.counts[lane]
        over = rank >= self.cap
        if bool(over.any()):
            bad = lane[over]
            if self.mode == "raise":
                l0 = int(bad[0])
                raise SpikeCapExceeded(l0 // self.N, l0 % self.N, self.cap)
            self.overflow[bad // self.N] = True
            self.dead[bad] = True
        keep = ~over
        self.lanes.append(lane[keep])
        self.ranks.append(rank[keep])
        self.times.append(t[keep])
        self.counts = self.counts.index_add(0, lane[keep], torch.ones_like(lane[keep]))
        return keep

    def fork(self) -> "SpikeRecord":
        """An empty record that continues from this one's counts and cap state without touching
        it (dead/overflow are cloned: `add` updates them in place). A checkpointed chunk records
        into a fork, so that recomputing the chunk in the backward records nothing twice."""
        f = SpikeRecord.__new__(SpikeRecord)
        f.B, f.N, f.cap, f.mode = self.B, self.N, self.cap, self.mode
        f.counts, f.dead, f.overflow = self.counts, self.dead.clone(), self.overflow.clone()
        f.lanes, f.ranks, f.times = [], [], []
        return f

    def absorb(self, f: "SpikeRecord") -> None:
        """Take over a fork's spikes and its counts / cap state."""
        self.lanes += f.lanes
        self.ranks += f.ranks
        self.times += f.times
        self.counts, self.dead, self.overflow = f.counts, f.dead, f.overflow

    def result(self, dtype, device, observed=None) -> LayerResult:
        S = max(1, int(self.counts.max())) if self.counts.numel() else 1
        out = torch.full((self.B * self.N, S), math.inf, dtype=dtype, device=device)
        if self.lanes:
            lane = torch.cat(self.lanes)
            if lane.numel():
                out = out.index_put((lane, torch.cat(self.ranks)), torch.cat(self.times).to(dtype))
        return LayerResult(times=out.reshape(self.B, self.N, S), counts=self.counts.reshape(self.B, self.N),
                           overflow=self.overflow.clone(), observed=observed)


def lane_params(P: tuple, j: Tensor) -> tuple:
    """Params for flat lanes whose neuron index is j (floats and 0-d tensors are shared)."""
    return tuple(p if not torch.is_tensor(p) or p.dim() == 0 else p[j] for p in P)


def col(P: tuple) -> tuple:
    """Params shaped [N, 1] to broadcast against [B, N, K]."""
    return tuple(p if not torch.is_tensor(p) or p.dim() == 0 else p[:, None] for p in P)


def no_cross_safe(kern: NeuronKernels, x: list, Pb: tuple, theta) -> Optional[Tensor]:
    """The IR's cheap exact test: True where u provably stays below theta on the interval."""
    rows = kern.no_cross(Pb)
    if not rows:
        return None
    safe = None
    for row, off in rows:
        val = None
        for lj, xj in zip(row, x):
            if lj is None:
                continue
            term = lj * xj
            val = term if val is None else val + term
        if val is None:
            val = torch.zeros_like(x[0])
        if off is not None:
            val = val + off
        s = val < theta
        safe = s if safe is None else safe & s
    return safe


def fire(kern: NeuronKernels, obs, rec: "SpikeRecord", si: Tensor, xs: list, Ps: tuple, lo_s: Tensor,
         D_found: Tensor, x: list, t_cur: Tensor, ref_end: Tensor):
    """Spike the lanes `si` (interval-start states xs, params Ps) at offset D_found from t_cur:
    an offset at the interval start (a jump or the end of a refractory period) stays as it is,
    otherwise it becomes differentiable through the IFT (spike_offset). Propagate, reset, record
    and start the refractory period. Returns the new (x, t_cur, ref_end), the spike times and the
    record's `keep` mask (False where the spike cap dropped the spike)."""
    imm = D_found == lo_s.detach()
    Dg = torch.where(imm, lo_s, spike_offset(kern, D_found, xs, Ps))
    tstar = t_cur[si] + Dg
    if obs.kind is not None:
        obs.add(si, [v[:, None] for v in xs], Dg[:, None], torch.ones_like(Dg[:, None], dtype=torch.bool))
    xm = densify(kern.propagate(Dg, xs, Ps), Dg)
    xr = densify(kern.reset(xm, Ps), Dg)
    keep = rec.add(si, tstar)
    tr = kern.t_ref(Ps)
    ref_end = ref_end.index_put((si,), tstar + (0.0 if tr is None else tr))
    x = [v.index_put((si,), r) for v, r in zip(x, xr)]
    t_cur = t_cur.index_put((si,), tstar)
    return x, t_cur, ref_end, tstar, keep

