"""Engine "sequential-cpu": the exact sequential event loop, generated as MLIR from the neuron's
IR and JIT-compiled for the CPU (compiler/backends/mlir/cpu_jit.py). Differentiable: the backward
is the JIT-compiled adjoint event loop (compiler/backends/mlir/adjoint.py), exact gradients to
input times, weights, delays and tensor parameters (IFT at every spike). Readouts (observe=...,
neurons without threshold): max_potential / li_integral are compiled (runtime/engines/
readout_cpu.py, forward and backward in generated MLIR; a spiking layer's spikes from the
compiled loop are resets in it) where that applies; otherwise the compiled loop finds the
spikes, then runtime/engines/observe_replay.py
computes the observable from the known spikes, vectorised, with exact adjoint gradients (falls
back to "torch-sequential" only if the replay is inconsistent).

Per sample and neuron the loop visits the input events in arrival order (one argsort per sample
without delays, shared by every neuron through a stride-0 view; per-neuron orders with delays),
tests every inter-event interval with the IR's cheap no-crossing test, isolates and solves the
spike time exactly where that test fails, resets, honours the refractory period and the spike
cap, and continues to the horizon (t_end, else the last arrival + 60 slowest time constants,
the convention of runtime/events.py and tests/mpref.py)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines import adjoint_events, parallel, readout_cpu
from spikescan.runtime.engines.ports import is_multi, normalize
from spikescan.runtime.kernels import NeuronKernels
from spikescan.runtime.engines.validate import validate_layer
from spikescan.runtime.engines.result import LayerResult, SpikeCapExceeded
from spikescan.runtime.events import pad_no_events

Tensor = torch.Tensor
TAIL_TAUS = 60.0
USE_SHARED_PATH = True  # tests switch it off to compare the two generated loops
USE_EVENT_ADJOINT = True  # tests switch it off to compare the event-outer and per-neuron adjoints
_DTYPES = {torch.float64: "f64", torch.float32: "f32"}


def _param_vectors(ir: NeuronIR, params: dict, N: int, dtype) -> list[Tensor]:
    known = {p.name for p in ir.params}
    unknown = set(params or {}) - known
    if unknown:
        raise KeyError(f"{ir.name}: unknown parameters {sorted(unknown)}; known: {sorted(known)}")
    out = []
    for p in ir.params:
        v = (params or {}).get(p.name, p.default)
        v = torch.as_tensor(v, dtype=dtype).detach().cpu()
        if v.dim() == 0:
            v = v.reshape(1).expand(N)
        elif v.shape != (N,):
            raise ValueError(f"parameter {p.name!r} must be a scalar or [N={N}], got {tuple(v.shape)}")
        out.append(v.contiguous() if v.stride(0) != 0 else v)
    return out


_RATE_FNS: dict = {}  # id(ir) -> (ir, A, the diagonal of A as Python functions): lambdify costs ms


def _rate_fns(ir: NeuronIR) -> list:
    hit = _RATE_FNS.get(id(ir))
    if hit is None or hit[0] is not ir or hit[1] is not ir.A:
        import sympy

        syms = [p.symbol for p in ir.params]
        hit = (ir, ir.A, [sympy.lambdify(syms, ir.A[i, i], "math") for i in range(ir.d)])
        _RATE_FNS[id(ir)] = hit  # keeps the IR alive: its id is not reused
    return hit[2]


def _slowest_tau(ir: NeuronIR, pvec: list[Tensor]) -> float:
    """Largest 1/|rate| over the eigenvalues of A (triangular: its diagonal) and all neurons
    (each distinct parameter set evaluated once: shared parameters are one)."""
    if not pvec:
        rows = [()]
    elif all(v.stride(0) == 0 or v.numel() <= 1 for v in pvec):
        rows = [tuple(float(v[0]) for v in pvec)] if pvec[0].numel() else []
    else:
        rows = [tuple(r) for r in torch.unique(torch.stack(pvec, 1), dim=0).tolist()]
    best = 0.0
    for f in _rate_fns(ir):
        for vals in rows:
            lam = abs(float(f(*vals)))
            if lam > 0:
                best = max(best, 1.0 / lam)
    return best if best > 0 else 1.0


def _ordered_sum(parts: list[Tensor]) -> Tensor:
    """parts[0] + parts[1] + ... in this order (the slices' gradients: one order, any thread count)."""
    tot = parts[0]
    for p in parts[1:]:
        tot = tot + p
    return tot


class _Saved:
    """What the adjoint loop needs: the forward's prepared (CPU, dense or stride-0) inputs."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class _LayerGrad(torch.autograd.Function):
    """Identity on the forward's spike times; the backward runs the JIT-compiled adjoint event
    loop (compiler/backends/mlir/adjoint.py): exact gradients (IFT at every spike, adjoint of
    the flow, jumps and resets between) to input times, weights, delays and parameters."""

    @staticmethod
    def forward(ctx, out, sv, times, weight, delays, *ptens):
        ctx.sv = sv
        ctx.shapes = [None if v is None else (v.shape, v.dtype, v.device) for v in (times, weight, delays, *ptens)]
        return out.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        sv = ctx.sv
        B, N, S = sv.out_shape
        dt = sv.dtype
        n, C = sv.t.shape[1], sv.W.shape[1]
        npar = len(sv.pvec)
        counts = torch.zeros((B, N), dtype=torch.int64)
        gtimes = torch.zeros((B, n), dtype=dt)
        shared_w = len(ctx.shapes[1][0]) == 2
        gw = torch.zeros((C, N) if shared_w else (B, C, N), dtype=dt)
        M = n + sv.max_spikes + 2
        with_params = any(ctx.needs_input_grad[5:])

        events = USE_EVENT_ADJOINT and sv.xrec is not None and adjoint_events.applicable(sv.kern, sv.port, sv.P, None, with_params)
        if events:  # reads dL/ds at the recorded spikes only (slot m < count <= S)
            g = gout.detach().cpu().to(dt)
        else:
            g = torch.zeros((B, N, sv.max_spikes), dtype=dt)
            g[:, :, : gout.shape[2]] = gout.detach().cpu().to(dt)
            g = torch.where(torch.isfinite(sv.out_full), g, torch.zeros((), dtype=dt))  # padding

        def slice_backward(part):
            # one slice of samples; its shared-weight, delay and parameter gradients go to
            # buffers of its own (added below in slice order: the same sums for any thread count)
            b0, b1 = part
            gw_p = torch.zeros((C, N), dtype=dt) if shared_w else None
            # a shared [C, N] weight: every sample of the slice adds into gw_p through a
            # stride-0 view (the adjoint loop is sequential within a slice)
            gweight = gw_p.unsqueeze(0).expand(b1 - b0, C, N) if shared_w else gw[b0:b1]
            gdelays = torch.zeros((C, N), dtype=dt)
            gparams = torch.zeros((N, max(npar, 1)), dtype=dt)
            tape_f = torch.empty((M, sv.eng.ir.d + 2), dtype=dt)
            tape_i = torch.empty((M, 2), dtype=torch.int64)
            tpos = torch.zeros((1,), dtype=torch.int64)
            sv.eng.layer_backward(sv.t[b0:b1], sv.ch[b0:b1], sv.order[b0:b1], sv.W[b0:b1], sv.dl, sv.nvalid[b0:b1],
                                  sv.horizon[b0:b1], sv.pvec, g[b0:b1], counts[b0:b1], gtimes[b0:b1], gweight,
                                  gdelays, gparams, tape_f, tape_i, tpos, with_params=with_params, pmap=sv.pmap)
            return gw_p, gdelays, gparams

        if events:  # the event-outer adjoint (engines/adjoint_events.py): prepared once, kernel per slice
            gws = adjoint_events.backward(sv.kern, sv.port, sv.P, sv.t, sv.ch, sv.order[:, 0, :], sv.nvalid,
                                          sv.horizon[:, 0], sv.Wd if shared_w else sv.W, sv.out_full, sv.counts,
                                          sv.xrec, g, ctx.needs_input_grad[2], gw, gtimes, phit=sv.phirec, erec=sv.erec,
                                          parts=parallel.slices(B), run=parallel.run, threads=parallel.threads())
            parts = [(p, None, None) for p in gws]  # no delays, no parameter gradients on this path
            counts = sv.counts  # the event-outer adjoint replays nothing
        else:
            parts = parallel.run(slice_backward, parallel.slices(B))
        if shared_w:
            gw = _ordered_sum([p[0] for p in parts])
        if events:
            gdelays, gparams = torch.zeros((C, N), dtype=dt), torch.zeros((N, max(npar, 1)), dtype=dt)
        else:
            gdelays = _ordered_sum([p[1] for p in parts])
            gparams = _ordered_sum([p[2] for p in parts])
        if not torch.equal(counts, sv.counts):
            raise RuntimeError("sequential-cpu backward: the replayed forward disagrees with the "
                               "forward pass (spike counts differ); this is a bug, please report it")
        grads = [None, None]
        want = ctx.needs_input_grad[2:]
        shp = ctx.shapes

        def put(val, k):
            if not want[k] or shp[k] is None:
                return None
            shape, dtype, dev = shp[k]
            return val.reshape(shape).to(dtype=dtype, device=dev)

        grads.append(put(gtimes[:, : shp[0][0][1]], 0))  # [:, :0] when the forward padded n = 0
        grads.append(put(gw, 1))
        grads.append(put(gdelays, 2))
        for k, pi in zip(range(3, len(shp)), sv.pindex):
            col = gparams[:, pi]
            grads.append(put(col.sum() if len(shp[k][0]) == 0 else col, k))
        return tuple(grads)


def run_layer(ir: NeuronIR, params: dict, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Optional[Tensor] = None, *, port: Optional[str] = None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: Optional[str] = None,
              t_end: Optional[float] = None) -> LayerResult:
    del chunk  # one event at a time
    from spikescan.compiler.backends.mlir.cpu_jit import compile_neuron

    if on_overflow not in ("raise", "flag"):
        raise ValueError(f"on_overflow must be 'raise' or 'flag', got {on_overflow!r}")
    if weight.dim() in (2, 3):
        port = normalize(port, list(ir.ports), weight.shape[-2])
    if observe is not None or ir.c is None or ir.theta is None:
        # readouts: the compiled loop finds the spikes, the observable is replayed from them
        return _run_observed(ir, params, times, channels, weight, delays, port=port, max_spikes=max_spikes,
                             on_overflow=on_overflow, observe=observe, t_end=t_end)
    if max_spikes < 1:
        raise ValueError("max_spikes must be >= 1")
    if times.dtype not in _DTYPES:
        raise TypeError(f"times must be float32 or float64, got {times.dtype}")
    if port is not None and not is_multi(port) and port not in ir.ports:
        raise KeyError(f"{ir.name} has no input port {port!r}; ports: {list(ir.ports)}")
    # several ports: the loops are compiled for the tuple of names and take pmap[C] (each
    # channel's port index) as their last argument
    pmap = port.index.detach().cpu().to(torch.int64).contiguous() if is_multi(port) else None
    dtype = times.dtype
    dev = times.device
    B, n = times.shape
    if weight.dim() not in (2, 3):
        raise ValueError(f"weight must be [C, N] or [B, C, N], got {tuple(weight.shape)}")
    C, N = weight.shape[-2], weight.shape[-1]
    if weight.dim() == 3 and weight.shape[0] != B:
        raise ValueError(f"weight [B, C, N] has batch {weight.shape[0]}, times has {B}")

    validate_layer(ir, params, times, weight, delays, t_end, N, dtype, channels)
    t = times.detach().cpu()
    ch = channels.detach().cpu().to(torch.int64).contiguous()
    if n:  # (times were checked by validate_layer: >= 0 or +inf)
        lo, hi = torch.aminmax(ch)
        if int(lo) < 0 or int(hi) >= C:
            raise ValueError(f"channels must lie in [0, {C})")
    t, ch = pad_no_events(t, ch)  # n = 0: one +inf column keeps every index in range
    n = t.shape[1]
    t = t.contiguous()
    W = weight.detach().cpu().to(dtype)
    W = W.contiguous().unsqueeze(0).expand(B, C, N) if W.dim() == 2 else W.contiguous()
    pvec = _param_vectors(ir, params, N, dtype)
    fin = t < math.inf
    nvalid = fin.sum(1).to(torch.int64)

    if delays is None:
        if bool((t[:, 1:] >= t[:, :-1]).all()):  # already in time order (data loaders, flatten_spikes):
            # the stable argsort is the identity (~20x the cost of this check at SHD size)
            order = torch.arange(n, dtype=torch.int64).expand(B, N, n)
            # the last real event is the one before the padding (times >= 0: no event -> 0)
            last = t.gather(1, (nvalid - 1).clamp_min(0)[:, None]).masked_fill((nvalid == 0)[:, None], 0.0)
        else:
            order = torch.argsort(t, dim=1, stable=True).unsqueeze(1).expand(B, N, n)
            last = t.masked_fill(~fin, 0.0).amax(1, keepdim=True)
        last = last.expand(B, N)
        dl = torch.zeros((1, 1), dtype=dtype).expand(C, N)
    else:
        dl = delays.detach().cpu().to(dtype).contiguous()
        if dl.shape != (C, N):
            raise ValueError(f"delays must be [C={C}, N={N}], got {tuple(dl.shape)}")
        arr = t.unsqueeze(1) + dl.t()[:, ch].permute(1, 0, 2)  # [B, N, n] arrival times
        order = torch.argsort(arr, dim=2, stable=True)
        last = arr.masked_fill(~(arr < math.inf), 0.0).amax(2)
    if t_end is not None:
        horizon = torch.full((1, 1), float(t_end), dtype=dtype).expand(B, N)
    else:
        horizon = (last + TAIL_TAUS * _slowest_tau(ir, pvec)).contiguous()

    eng = compile_neuron(ir, _DTYPES[dtype], port.names if is_multi(port) else port)
    out = torch.full((B, N, max_spikes), math.inf, dtype=dtype)
    counts = torch.zeros((B, N), dtype=torch.int64)
    over = torch.zeros((B, N), dtype=torch.int64)
    shared = delays is None and USE_SHARED_PATH and all(v.stride(0) == 0 for v in pvec)
    Wd = weight.detach().cpu().to(dtype).contiguous() if shared else None  # [C, N] stays unexpanded (dense)
    grad_wanted = torch.is_grad_enabled() and any(
        v is not None and v.requires_grad for v in (times, weight, delays, *(params or {}).values())
        if torch.is_tensor(v) or v is None)
    # the state at every spike, for the event-outer adjoint (shared path only)
    xrec = torch.empty((B, N, max_spikes, ir.d), dtype=dtype) if shared and grad_wanted else None
    phirec = torch.empty((B, n + 1, ir.d ** 2), dtype=dtype) if xrec is not None else None  # Phi^T per interval
    erec = torch.empty((B, N, max_spikes), dtype=torch.int64) if xrec is not None else None  # spikes' intervals

    def slice_forward(part):  # samples [b0, b1): independent, so any split gives the same bits
        b0, b1 = part
        if shared:  # shared time constants, one event order per sample: the event-outer loop
            w = Wd if Wd.dim() == 2 else Wd[b0:b1]
            eng.layer_shared(t[b0:b1], ch[b0:b1], order[b0:b1, 0, :], w, nvalid[b0:b1], horizon[b0:b1, 0], pvec,
                             out[b0:b1], counts[b0:b1], over[b0:b1], xrec=None if xrec is None else xrec[b0:b1],
                             pmap=pmap, phirec=None if phirec is None else phirec[b0:b1],
                             erec=None if erec is None else erec[b0:b1])
        else:
            eng.layer(t[b0:b1], ch[b0:b1], order[b0:b1], W[b0:b1], dl, nvalid[b0:b1], horizon[b0:b1], pvec,
                      out[b0:b1], counts[b0:b1], over[b0:b1], pmap=pmap)

    parallel.run(slice_forward, parallel.forward_parts(B))  # samples independent: any cut, same bits

    out_full = out
    over_b = over.bool().any(1)
    if on_overflow == "raise" and bool(over_b.any()):
        b, j = [int(v) for v in over.nonzero()[0]]
        raise SpikeCapExceeded(b, j, max_spikes)
    S = max(1, int(counts.max())) if counts.numel() else 1
    out = out[:, :, :S].contiguous().to(dev)
    need = [v for v in (times, weight, delays) if v is not None and v.requires_grad]
    pnames = [p.name for p in ir.params]
    ptens = [(k, v) for k, v in (params or {}).items() if torch.is_tensor(v) and v.requires_grad]
    if (need or ptens) and torch.is_grad_enabled():
        sv = _Saved(eng=eng, t=t, ch=ch, order=order, W=W, dl=dl, nvalid=nvalid, horizon=horizon,
                    pvec=pvec, counts=counts, out_full=out_full, out_shape=tuple(out.shape),
                    max_spikes=max_spikes, dtype=dtype, pindex=[pnames.index(k) for k, _ in ptens],
                    xrec=xrec, phirec=phirec, erec=erec, Wd=Wd, port=port, pmap=pmap, kern=NeuronKernels.from_ir(ir),
                    P=tuple(float(v[0]) for v in pvec))
        out = _LayerGrad.apply(out, sv, times, weight, delays, *[v for _, v in ptens])
    return LayerResult(times=out, counts=counts.to(dev), overflow=over_b.to(dev), observed=None)


def _run_observed(ir: NeuronIR, params: dict, times: Tensor, channels: Tensor, weight: Tensor,
                  delays: Optional[Tensor], *, port, max_spikes: int, on_overflow: str,
                  observe: Optional[str], t_end: Optional[float]) -> LayerResult:
    """A readout layer: spikes from the compiled loop (if the neuron has a threshold), the
    observable replayed from them (observe_replay.observe_known_spikes); without a threshold,
    the compiled readout (readout_cpu.py) where it applies, else the same replay."""
    from spikescan.runtime.engines.common import check_layer_options
    from spikescan.runtime.engines.observe_replay import observe_known_spikes
    from spikescan.runtime.events import build_events
    from spikescan.runtime.kernels import NeuronKernels

    check_layer_options(times, t_end, observe, on_overflow, max_spikes)
    if weight.dim() not in (2, 3):
        raise ValueError(f"weight must be [C, N] or [B, C, N], got {tuple(weight.shape)}")
    dtype, dev = times.dtype, times.device
    B, N = times.shape[0], weight.shape[-1]
    kern = NeuronKernels.from_ir(ir)
    if port is not None and not is_multi(port) and port not in kern.port_names:
        raise KeyError(f"{ir.name} has no input port {port!r}; ports: {list(kern.port_names)}")
    if kern.spiking:
        res = run_layer(ir, params, times, channels, weight, delays, port=port, max_spikes=max_spikes,
                        on_overflow=on_overflow, observe=None, t_end=t_end)
        spikes = res.times
    else:
        res = LayerResult(times=torch.full((B, N, 1), math.inf, dtype=dtype, device=dev),
                          counts=torch.zeros((B, N), dtype=torch.int64, device=dev),
                          overflow=torch.zeros(B, dtype=torch.bool, device=dev), observed=None)
        spikes = None
    if observe is None:
        if not kern.spiking:  # still validate the inputs like the other engines
            build_events(times, channels, weight, delays, t_end, 1.0)
        return res
    if dev.type != "cpu":
        raise ValueError("the sequential-cpu engine needs CPU tensors")
    P = kern.param_tensors(params, N, dtype, dev)
    w = weight.to(dtype)
    if readout_cpu.applicable(ir, params, times, w, delays, port, observe):
        # the compiled readout (forward and backward in generated MLIR; a spiking layer's own
        # spikes are resets in it); None: a recorded spike did not replay consistently
        readout_cpu.check_inputs(times, channels, w, t_end)
        obs = readout_cpu.observe(ir, params, times, channels, w, port, observe, t_end, spikes=spikes,
                                  counts=None if spikes is None else res.counts)
        if obs is not None:
            return LayerResult(times=res.times, counts=res.counts, overflow=res.overflow, observed=obs)
    ev = build_events(times, channels, w, None if delays is None else delays.to(dtype), t_end, kern.slowest_tau(P))
    obs = observe_known_spikes(kern, P, port, ev, spikes, observe, B, N)
    if obs is None:  # the replay disagreed with the recorded spikes: the exact Python reference
        from spikescan.runtime.engines import torch_sequential

        return torch_sequential.run_layer(ir, params, times, channels, weight, delays, port=port,
                                          max_spikes=max_spikes, on_overflow=on_overflow,
                                          observe=observe, t_end=t_end)
    return LayerResult(times=res.times, counts=res.counts, overflow=res.overflow, observed=obs)
