"""Compiled readouts on the sequential-cpu engine (issue 10 item 3): `max_potential` and
`li_integral`, forward and exact backward in generated MLIR, as one autograd Function, run over
fixed batch slices on the engine's threads (runtime/engines/parallel.py: bit-identical for any
thread count). A layer without threshold: compiler/backends/mlir/readout.py. A spiking layer (the
first-spike loss's max potential, observe_vmax): compiler/backends/mlir/readout_spikes.py, with
the spikes the compiled layer found as resets; its spike times get the readout's partial
gradient, and the layer's own adjoint carries them on.

`applicable` says when it is used; otherwise sequential_cpu falls back to the vectorised torch
replay (observe_replay.py), which stays the reference (and also where a recorded spike does not
replay consistently):

- no delays, a plain port name (not a per-channel port map), CPU float32/float64 tensors;
- parameters shared by all neurons (scalars) and none of them learned (no tensor parameter that
  requires a gradient);
- max_potential: the potential has at most one stationary point per inter-event interval (an
  isolation chain of at most two rows, e.g. LI / CubaLIF-type readouts); li_integral: A invertible.
"""

from __future__ import annotations

import ctypes
import math
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines import parallel

Tensor = torch.Tensor
USE_COMPILED_READOUT = True  # tests and bench/cpu_step.py switch it off to time / compare the replay
_DTYPES = {torch.float64: "f64", torch.float32: "f32"}
_WHY: dict = {}


def _unsupported(ir: NeuronIR, kind: str) -> Optional[str]:
    from spikescan.compiler.backends.mlir import readout as mlir_readout, readout_spikes as mlir_readout_spikes

    key = (id(ir), kind)
    hit = _WHY.get(key)
    if hit is None or hit[0] is not ir:
        spiking = ir.c is not None and ir.theta is not None  # a spiking layer: its spikes as resets
        hit = (ir, (mlir_readout_spikes if spiking else mlir_readout).unsupported(ir, kind))
        _WHY[key] = hit
    return hit[1]


def fallback_reason(ir: NeuronIR, params: Optional[dict], times: Tensor, weight: Tensor,
                    delays: Optional[Tensor], port, observe: Optional[str]) -> Optional[str]:
    """None when the compiled readout applies to this layer call, else why not."""
    if not USE_COMPILED_READOUT:
        return "switched off (readout_cpu.USE_COMPILED_READOUT)"
    if observe is None:
        return "no readout"
    if port is not None and not isinstance(port, str):
        return "per-channel port map"
    if port is not None and port not in ir.ports:
        return f"no port {port!r}"
    if delays is not None:
        return "delays"
    if times.dtype not in _DTYPES or weight.dtype not in _DTYPES or times.device.type != "cpu":
        return "not CPU float32/float64"
    for name, v in (params or {}).items():
        if torch.is_tensor(v) and (v.requires_grad or (v.dim() > 0 and v.numel() > 1)):
            return f"parameter {name!r} is learned or per neuron"
    return _unsupported(ir, observe)


def applicable(ir, params, times, weight, delays, port, observe) -> bool:
    return fallback_reason(ir, params, times, weight, delays, port, observe) is None


def check_inputs(times: Tensor, channels: Tensor, weight: Tensor, t_end) -> None:
    """The checks build_events makes on the replay's path (validate.check_inputs, channels)."""
    from spikescan.runtime.engines.validate import check_inputs as check

    if times.dim() != 2 or channels.shape != times.shape:
        raise ValueError(f"times and channels must both be [B, n]; got {tuple(times.shape)} and "
                         f"{tuple(channels.shape)}")
    check(times, weight, None, t_end, channels)
    C = weight.shape[-2]
    with torch.no_grad():
        chd = torch.where(torch.isfinite(times.detach()), channels.detach(), 0)  # padding: any channel
        if bool(((chd < 0) | (chd >= C)).any()):
            raise ValueError(f"channels must lie in [0, {C}) for real events")


def _call(eng, name: str, tensors: list) -> None:
    from spikescan.compiler.backends.mlir.cpu_jit import memref_of

    descs = [memref_of(t) for t in tensors]
    eng.invoke(name, *[ctypes.pointer(ctypes.pointer(x)) for x in descs])


class _Saved:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _ordered_sum(parts: list) -> Tensor:
    tot = parts[0]
    for p in parts[1:]:
        tot = tot + p
    return tot


def _chunks(B: int) -> tuple[list, Tensor]:
    """The fixed slices of parallel.slices(B), grouped into one contiguous chunk per thread
    (one kernel call each), and the slice of every sample. A sample's results never depend on
    the chunks; gradients shared by the batch accumulate per slice (a row each, samples in
    order) and the rows are added in slice order: the same bits for any thread count."""
    sl = parallel.slices(B)
    chunks = parallel.spans(B)
    of = torch.empty(B, dtype=torch.int64)
    for s, (b0, b1) in enumerate(sl):
        of[b0:b1] = s
    return chunks, of


class _ReadoutFn(torch.autograd.Function):
    """obs [B, N] from the forward kernel; the backward kernel gives dL/dW, dL/d times and, for a
    spiking layer, the partial dL/d spike times (their own gradient is the layer's adjoint)."""

    @staticmethod
    def forward(ctx, obs, sv, times, weight, spikes):
        ctx.sv = sv
        ctx.shapes = [(v.shape, v.dtype, v.device) if v is not None else None for v in (times, weight, spikes)]
        return obs.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gobs):
        sv = ctx.sv
        dt = sv.dtype
        g = gobs.detach().cpu().to(dt).contiguous()
        B, n = sv.t.shape
        C, N = sv.W.shape[-2], sv.W.shape[-1]
        shared_w = sv.W.dim() == 2
        gt = torch.zeros((B, n), dtype=dt)
        chunks, of = _chunks(B)
        # shared weight: one gradient row per slice; per-sample weights: one per sample
        gw = torch.zeros((int(of[-1]) + 1 if B else 1, C, N) if shared_w else (B, C, N), dtype=dt)
        grow = of if shared_w else torch.arange(B, dtype=torch.int64)
        gs = None if sv.spikes is None else torch.zeros(sv.spikes.shape, dtype=dt)
        d = sv.d

        def chunk_backward(part):
            b0, b1 = part
            head = [sv.t[b0:b1], sv.ch[b0:b1], sv.order[b0:b1], sv.W3[b0:b1] if sv.W3.shape[0] > 1 else sv.W3,
                    sv.nvalid[b0:b1], sv.horizon[b0:b1], *sv.pvec, g[b0:b1], sv.estar[b0:b1], sv.off[b0:b1],
                    sv.tidx[b0:b1], sv.tcoef[b0:b1]]
            lam, seed = torch.empty((d, N), dtype=dt), torch.empty((d, N), dtype=dt)
            if sv.spikes is None:
                _call(sv.eng, "readout_backward", head + [gw, grow[b0:b1], gt[b0:b1], lam, seed])
            else:
                _call(sv.eng, "readout_spikes_backward",
                      head + [sv.sub[b0:b1], sv.spikes[b0:b1], sv.scount[b0:b1], sv.xrec[b0:b1], gw, grow[b0:b1],
                              gt[b0:b1], gs[b0:b1], lam, seed, torch.empty((N,), dtype=torch.int64)])

        parallel.run(chunk_backward, chunks)
        if shared_w:
            gw = _ordered_sum(list(gw))

        def put(val, k):
            if not ctx.needs_input_grad[2 + k] or ctx.shapes[k] is None:
                return None
            shape, dtype, dev = ctx.shapes[k]
            return val.reshape(shape).to(dtype=dtype, device=dev)

        ts = ctx.shapes[0][0]
        return (None, None, put(gt[:, : ts[1]], 0), put(gw, 1),
                None if gs is None else put(gs[:, :, : ctx.shapes[2][0][2]] if ctx.shapes[2] else gs, 2))


def observe(ir: NeuronIR, params: Optional[dict], times: Tensor, channels: Tensor, weight: Tensor,
            port: Optional[str], observe: str, t_end: float, spikes: Optional[Tensor] = None,
            counts: Optional[Tensor] = None) -> Optional[Tensor]:
    """The readout [B, N] over [0, t_end] (differentiable in times, weight and, for a spiking
    layer, its spike times `spikes` [B, N, S] (+inf padding) with `counts` [B, N], as the compiled
    layer returned them). None when a recorded spike does not replay consistently (u below theta
    just before it; the caller then falls back). The caller checked `applicable` and validated
    the inputs (sequential_cpu._run_observed)."""
    from spikescan.compiler.backends.mlir.readout import compiled_readout
    from spikescan.runtime.engines.sequential_cpu import _param_vectors

    dtype = times.dtype
    B, n = times.shape
    N = weight.shape[-1]
    t = times.detach().cpu()
    ch = channels.detach().cpu().to(torch.int64)
    if n == 0:  # one padding column keeps every index in range
        t = torch.full((B, 1), math.inf, dtype=dtype)
        ch = torch.zeros((B, 1), dtype=torch.int64)
    t = t.contiguous()
    fin = t < math.inf
    ch = torch.where(fin, ch, torch.zeros_like(ch)).contiguous()
    nvalid = fin.sum(1).to(torch.int64).contiguous()
    if n <= 1 or bool((t[:, 1:] >= t[:, :-1]).all()):  # already in time order (a layer's spikes)
        order = torch.arange(t.shape[1], dtype=torch.int64).expand(B, t.shape[1])
    else:
        order = torch.argsort(t, dim=1, stable=True).contiguous()
    horizon = torch.full((B,), float(t_end), dtype=dtype)
    W = weight.detach().cpu().to(dtype).contiguous()
    W3 = W if W.dim() == 3 else W.unsqueeze(0)
    pvec = [v[:1].contiguous() for v in _param_vectors(ir, params, N, dtype)]
    eng = compiled_readout(ir, observe, _DTYPES[dtype], port)
    obs = torch.empty((B, N), dtype=dtype)
    estar = torch.empty((B, N), dtype=torch.int64)
    off = torch.empty((B, N), dtype=dtype)
    tidx = torch.empty((B, N), dtype=torch.int64)
    tcoef = torch.empty((B, N), dtype=dtype)
    d = ir.d
    spk = scount = sub = xrec = bad = None
    if spikes is not None:
        spk = spikes.detach().cpu().to(dtype).contiguous()
        if spk.shape[2] == 0:
            spk = torch.full((B, N, 1), math.inf, dtype=dtype)
        scount = counts.detach().cpu().to(torch.int64).contiguous()
        sub = torch.empty((B, N), dtype=torch.int64)
        xrec = torch.empty((*spk.shape, d), dtype=dtype)
        bad = torch.empty((B, N), dtype=torch.int64)

    def chunk_forward(part):
        b0, b1 = part
        head = [t[b0:b1], ch[b0:b1], order[b0:b1], W3[b0:b1] if W3.shape[0] > 1 else W3, nvalid[b0:b1],
                horizon[b0:b1], *pvec]
        recs = [obs[b0:b1], estar[b0:b1], off[b0:b1], tidx[b0:b1], tcoef[b0:b1]]
        if spk is None:
            _call(eng, "readout_forward", head + recs + [torch.empty((d, N), dtype=dtype),
                                                         torch.empty((N,), dtype=torch.int64),
                                                         torch.empty((d, N), dtype=dtype)])
        else:
            _call(eng, "readout_spikes_forward",
                  head + [spk[b0:b1], scount[b0:b1]] + recs + [sub[b0:b1], xrec[b0:b1], bad[b0:b1],
                                                               torch.empty((d, N), dtype=dtype),
                                                               torch.empty((N,), dtype=torch.int64)])

    parallel.run(chunk_forward, _chunks(B)[0])
    if bad is not None and bool(bad.any()):
        return None
    out = obs.to(times.device)
    need = [v for v in (times, weight, spikes) if v is not None and v.requires_grad]
    if torch.is_grad_enabled() and need:
        sv = _Saved(eng=eng, t=t, ch=ch, order=order, W=W, W3=W3, nvalid=nvalid, horizon=horizon, pvec=pvec,
                    estar=estar, off=off, tidx=tidx, tcoef=tcoef, dtype=dtype, d=d, spikes=spk, scount=scount,
                    sub=sub, xrec=xrec)
        out = _ReadoutFn.apply(out, sv, times, weight, spikes)
    return out
