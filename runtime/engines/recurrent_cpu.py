"""Recurrent layers on the CPU JIT: the exact event loop of runtime/engines/recurrent.py (same
ordering rules, docs/engines.md), generated as MLIR (compiler/backends/mlir/recurrent.py) and
JIT-compiled; one sample at a time, all neurons' states in scratch buffers. Differentiable: the
backward replays each sample with a tape and runs the generated adjoint loop (IFT at every
spike; a recurrent event carries the adjoints of the jumps it caused back to its spike time),
giving exact gradients to input times, weight, delays, w_rec and tensor parameters.

run_recurrent_layer has the signature of recurrent.run_recurrent_layer. Readouts (observe=...)
and non-CPU tensors are delegated to recurrent.py.

Memory of the backward: the tape holds every lane's state before every delivery step of one
sample (steps x N x (d+1) floats, reused across samples), e.g. about 110 MB for 256 neurons and
13,000 steps per sample. Where it applies (shared parameters, no delays, refractory 0, c^T B = 0,
no parameter gradient) the event-outer adjoint (adjoint_events_rec.py) replaces the replay: no
tape, one backward walk over each sample's merged events (USE_EVENT_ADJOINT: a switch for tests).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines import adjoint_events_rec, parallel, recurrent
from spikescan.runtime.engines.common import setup
from spikescan.runtime.engines.result import LayerResult, SpikeCapExceeded
from spikescan.runtime.engines.sequential_cpu import _DTYPES, _ordered_sum, _param_vectors
from spikescan.runtime.kernels import NeuronKernels

Tensor = torch.Tensor
MAX_TAPE_BYTES = 8 << 30  # refuse (clearly) a backward tape beyond this
PARALLEL_TAPE_BYTES = 1 << 30  # above this per slice, slices run one at a time (one tape alive)
USE_EVENT_ADJOINT = True  # tests switch it off to compare the event-outer and replaying adjoints


def _vec_slice(vec_args: Optional[list], b0: int, b1: int) -> Optional[list]:
    """The vectorised loop's arguments (key[B,L], order[B,L], weight[Bw,C,N], nvalid[B], wrec) for
    samples [b0, b1); a shared weight (Bw = 1) is passed whole."""
    if vec_args is None:
        return None
    key, order, w, nvalid, wrec = vec_args
    return [key[b0:b1], order[b0:b1], w if w.shape[0] == 1 else w[b0:b1], nvalid[b0:b1], wrec]


class _Saved:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _RecGrad(torch.autograd.Function):
    """Identity on the forward's spike times; backward = the JIT-compiled adjoint loop."""

    @staticmethod
    def forward(ctx, out, sv, times, weight, delays, w_rec, *ptens):
        ctx.sv = sv
        ctx.shapes = [None if v is None else (v.shape, v.dtype, v.device)
                      for v in (times, weight, delays, w_rec, *ptens)]
        return out.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        sv = ctx.sv
        B, N = sv.counts.shape
        dt = sv.dtype
        d = sv.eng.ir.d
        g = torch.zeros((B, N, sv.max_spikes), dtype=dt)
        g[:, :, : gout.shape[2]] = gout.detach().cpu().to(dt)
        g = torch.where(torch.isfinite(sv.out_full), g, torch.zeros((), dtype=dt))
        n1 = sv.chan.shape[1]
        C = sv.W.shape[1]
        npar = len(sv.pvec)
        M = max(1, int(sv.stats[:, 0].max()))
        Ms = max(1, int(sv.stats[:, 1].max()))
        nbytes = Ms * N * ((d + 1) * 8 + 1)
        with_params = any(ctx.needs_input_grad[6:])
        # the event-outer adjoint (engines/adjoint_events_rec.py): no replay, no tape
        events = (USE_EVENT_ADJOINT and sv.xrec is not None
                  and adjoint_events_rec.applicable(sv.kern, sv.port, sv.P, with_params))
        if nbytes > MAX_TAPE_BYTES and not events:
            raise MemoryError(f"recurrent-cpu backward: the tape of one sample needs {nbytes / 2**30:.1f} GiB "
                              f"({Ms} delivery steps x {N} neurons); use a smaller batch of longer-horizon "
                              "samples or the engine 'torch-sequential'")
        counts = torch.zeros((B, N), dtype=torch.int64)
        gtimes = torch.zeros((B, n1), dtype=dt)
        shared_w = len(ctx.shapes[1][0]) == 2
        gw = torch.zeros((C, N) if shared_w else (B, C, N), dtype=dt)

        def slice_events(part):
            b0, b1 = part
            gw_p = torch.zeros((C, N), dtype=dt) if shared_w else None
            gwrec = torch.zeros((N, N), dtype=dt)
            k, p, w, nv, wr = _vec_slice(sv.vec_args, b0, b1)
            adjoint_events_rec.backward(sv.kern, sv.port, sv.P, k, p, sv.chan[b0:b1], nv, w, wr, sv.out_full[b0:b1],
                                        sv.counts[b0:b1], sv.xrec[b0:b1], g[b0:b1], ctx.needs_input_grad[2],
                                        gw_p if shared_w else gw[b0:b1], gwrec, gtimes[b0:b1])
            return gw_p, torch.zeros((C, N), dtype=dt), gwrec, torch.zeros((N, max(npar, 1)), dtype=dt)

        def slice_backward(part):
            # samples [b0, b1) with their own tape and gradient buffers (engines/parallel.py)
            b0, b1 = part
            gw_p = torch.zeros((C, N), dtype=dt) if shared_w else None
            gweight = gw_p.unsqueeze(0).expand(b1 - b0, C, N) if shared_w else gw[b0:b1]
            gdelays = torch.zeros((C, N), dtype=dt)
            gwrec = torch.zeros((N, N), dtype=dt)
            gparams = torch.zeros((N, max(npar, 1)), dtype=dt)
            tape_i = torch.empty((M, 3), dtype=torch.int64)
            tape_f = torch.empty((M, d + 2), dtype=dt)
            snap_f = torch.empty((Ms, N, d + 1), dtype=dt)
            snap_m = torch.empty((Ms, N), dtype=torch.int8)
            sv.eng.backward(sv.key[b0:b1], sv.order[b0:b1], sv.chan[b0:b1], sv.W[b0:b1], sv.nvalid[b0:b1], sv.wrec,
                            sv.pvec, g[b0:b1], counts[b0:b1], gtimes[b0:b1], gweight, gdelays, gwrec, gparams,
                            tape_i, tape_f, snap_f, snap_m, with_params=with_params,
                            vec_args=_vec_slice(sv.vec_args, b0, b1))
            return gw_p, gdelays, gwrec, gparams

        # one slice at a time when the tapes are large: the threads would each hold one
        if events:
            parts = parallel.run(slice_events, parallel.slices(B))
            counts = sv.counts  # nothing replayed
        else:
            parts = parallel.run(slice_backward, parallel.slices(B)) if nbytes <= PARALLEL_TAPE_BYTES \
                else [slice_backward(p) for p in parallel.slices(B)]
        if shared_w:
            gw = _ordered_sum([p[0] for p in parts])
        gdelays, gwrec, gparams = (_ordered_sum([p[k] for p in parts]) for k in (1, 2, 3))
        if not torch.equal(counts, sv.counts):
            raise RuntimeError("recurrent-cpu backward: the replayed forward disagrees with the forward pass "
                               "(spike counts differ); this is a bug, please report it")
        want = ctx.needs_input_grad[2:]
        shp = ctx.shapes

        def put(val, k):
            if not want[k] or shp[k] is None:
                return None
            shape, dtype, dev = shp[k]
            return val.reshape(shape).to(dtype=dtype, device=dev)

        grads = [None, None, put(gtimes[:, : shp[0][0][1]], 0), put(gw, 1), put(gdelays, 2), put(gwrec, 3)]
        for k, pi in zip(range(4, len(shp)), sv.pindex):
            col = gparams[:, pi]
            grads.append(put(col.sum() if len(shp[k][0]) == 0 else col, k))
        return tuple(grads)


def run_recurrent_layer(ir: NeuronIR, params, times: Tensor, channels: Tensor, weight: Tensor, w_rec: Tensor,
                        delays: Optional[Tensor] = None, *, port: Optional[str] = None, max_spikes: int = 64,
                        on_overflow: str = "raise", observe: Optional[str] = None,
                        t_end: Optional[float] = None, impl: str = "auto") -> LayerResult:
    """impl: "vector" (mlir/recurrent_vec.py: needs shared parameters and no delays), "scalar"
    (the per-neuron loop of mlir/recurrent.py, the reference) or "auto" (vector where it
    applies). Both give the same spike trains bit for bit."""
    if impl not in ("auto", "vector", "scalar"):
        raise ValueError(f"impl must be 'auto', 'vector' or 'scalar', got {impl!r}")
    if (observe is not None or ir.c is None or ir.theta is None or times.device.type != "cpu"
            or times.dtype not in _DTYPES):
        # readouts, GPU tensors and other dtypes: the PyTorch recurrent loop (same semantics;
        # it also gives the clear errors for neurons without threshold)
        return recurrent.run_recurrent_layer(ir, params, times, channels, weight, w_rec, delays, port=port,
                                             max_spikes=max_spikes, on_overflow=on_overflow, observe=observe,
                                             t_end=t_end)
    from spikescan.compiler.backends.mlir.cpu_recurrent import compile_recurrent

    with torch.no_grad():
        lay = setup(ir, params, times.detach(), channels, weight.detach(),
                    None if delays is None else delays.detach(), port, t_end, observe, on_overflow, max_spikes)
    ev, B, N, dtype = lay.ev, lay.B, lay.N, lay.dtype
    if lay.Bvec is None:  # a PortMap (runtime/engines/ports.py)
        from spikescan.runtime.engines.ports import refuse

        refuse("sequential-cpu (recurrent)", instead="the recurrent-group loop (runtime/engines/recurrent_group.py), which SpikingNetwork uses for such layers")
    if w_rec.shape != (N, N):
        raise ValueError(f"w_rec must be [N, N] = [{N}, {N}], got {tuple(w_rec.shape)}")
    Lk = ev.length
    key = ev.key.expand(B, N, Lk) if ev.shared else ev.key.contiguous()
    order = ev.perm.expand(B, N, Lk) if ev.shared else ev.perm.contiguous()
    nvalid = torch.isfinite(ev.key).sum(-1).to(torch.int64)
    nvalid = nvalid.expand(B, N) if ev.shared else nvalid.contiguous()
    chan = ev.ch_ext.detach().to(torch.int64).contiguous()
    W = weight.detach().to(dtype).contiguous()
    W = W.unsqueeze(0).expand(B, *W.shape) if W.dim() == 2 else W
    wrec = w_rec.detach().to(dtype).contiguous()
    pvec = _param_vectors(ir, params, N, dtype)

    eng = compile_recurrent(ir, _DTYPES[dtype], port)
    out = torch.full((B, N, max_spikes), math.inf, dtype=dtype)
    counts = torch.zeros((B, N), dtype=torch.int64)
    over = torch.zeros((B, N), dtype=torch.int64)
    stats = torch.zeros((B, 2), dtype=torch.int64)
    shared = ev.shared and all(bool((v == v[:1]).all()) for v in pvec)
    if impl == "vector" and not shared:
        raise ValueError("impl='vector' needs parameters shared by the layer and no delays; use 'auto'")
    vec_args = None
    if impl != "scalar" and shared:
        Wd = W[:1] if weight.dim() == 2 else W  # dense [Bw, C, N]
        vec_args = [ev.key[:, 0], ev.perm[:, 0], Wd, nvalid[:, 0].contiguous(), wrec]
    grad_wanted = torch.is_grad_enabled() and any(
        v is not None and v.requires_grad for v in (times, weight, delays, w_rec, *(params or {}).values())
        if torch.is_tensor(v) or v is None)
    # the state at every spike before its reset, for the event-outer adjoint (vectorised loop only)
    xrec = torch.empty((B, N, max_spikes, ir.d), dtype=dtype) if vec_args is not None and grad_wanted else None

    def slice_forward(part):  # samples [b0, b1): independent, so any split gives the same bits
        b0, b1 = part
        if vec_args is not None:
            k, p, w, nv, wr = _vec_slice(vec_args, b0, b1)
            kw = {} if xrec is None else {"xrec": xrec[b0:b1]}
            eng.forward_vec(k, p, chan[b0:b1], w, nv, wr, pvec, out[b0:b1], counts[b0:b1], over[b0:b1], stats[b0:b1],
                            **kw)
        else:
            eng.forward(key[b0:b1], order[b0:b1], chan[b0:b1], W[b0:b1], nvalid[b0:b1], wrec, pvec, out[b0:b1],
                        counts[b0:b1], over[b0:b1], stats[b0:b1])

    parallel.run(slice_forward, parallel.forward_parts(B))  # samples independent: any cut, same bits
    over_b = over.bool().any(1)
    if on_overflow == "raise" and bool(over_b.any()):
        b, j = [int(v) for v in over.nonzero()[0]]
        raise SpikeCapExceeded(b, j, max_spikes)
    S = max(1, int(counts.max())) if counts.numel() else 1
    res = out[:, :, :S].contiguous()
    pnames = [p.name for p in ir.params]
    ptens = [(k, v) for k, v in (params or {}).items() if torch.is_tensor(v) and v.requires_grad]
    need = [v for v in (times, weight, delays, w_rec) if v is not None and v.requires_grad]
    if (need or ptens) and torch.is_grad_enabled():
        sv = _Saved(eng=eng, key=key, order=order, chan=chan, W=W, nvalid=nvalid, wrec=wrec, pvec=pvec,
                    counts=counts, out_full=out, stats=stats, max_spikes=max_spikes, dtype=dtype, vec_args=vec_args,
                    pindex=[pnames.index(k) for k, _ in ptens], xrec=xrec,
                    kern=NeuronKernels.from_ir(ir), port=port, P=tuple(float(v[0]) for v in pvec))
        res = _RecGrad.apply(res, sv, times, weight, delays, w_rec, *[v for _, v in ptens])
    return LayerResult(times=res, counts=counts, overflow=over_b, observed=None)
