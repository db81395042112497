"""Host side of the generated Triton engines ("triton-scan", "triton-sequential").

Prepares the event arrays once per layer call (one shared arrival order per sample without
delays, per-neuron permutations of the same arrays with delays), the per-neuron parameter
table, and launches the kernels generated from the NeuronIR (compiler/backends/triton/codegen).
Kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 (tests; slow).

Differentiable: the backward launches the generated adjoint kernel (compiler/backends/
triton_adjoint.py): per chunk of `chunk` events, restore the lane state checkpointed at the chunk
start, replay the chunk with a tape, reverse associative scan of the adjoint maps, the IFT at
every spike; exact gradients to input times, weights, delays and per-neuron parameters.
"""

from __future__ import annotations

import os

import torch

from spikescan.compiler.ir import NeuronIR
from spikescan.runtime.engines.validate import validate_layer

from .result import LayerResult, SpikeCapExceeded

Tensor = torch.Tensor

_TORCH_DTYPES = {torch.float64: "f64", torch.float32: "f32"}


def _module(ir: NeuronIR, dtype: str):
    from spikescan.compiler.backends.triton.codegen import load_module

    return load_module(ir, dtype)


def _check_device(dev: torch.device):
    if dev.type == "cuda":
        return
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "the Triton engines need CUDA tensors (or TRITON_INTERPRET=1 for the slow CPU "
            "interpreter, set before triton is imported); on a CPU use engine='torch' or "
            "'sequential-cpu'"
        )


def _param_table(ir: NeuronIR, params: dict, N: int, dtype, device) -> Tensor:
    known = {p.name for p in ir.params}
    unknown = sorted(set(params or {}) - known)
    if unknown:
        raise ValueError(f"neuron {ir.name}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    rows = []
    for p in ir.params:
        v = (params or {}).get(p.name, p.default)
        v = torch.as_tensor(v, dtype=dtype, device=device).detach()
        if v.dim() == 0:
            v = v.expand(N)
        if v.shape != (N,):
            raise ValueError(f"parameter {p.name}: expected a scalar or shape [{N}], got {tuple(v.shape)}")
        rows.append(v)
    if not rows:
        return torch.zeros(1, N, dtype=dtype, device=device)
    return torch.stack(rows).contiguous()


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _prepare_events(times, channels, delays, N, t_end, dtype):
    """Arrival order, per-lane event counts (arrivals <= t_end) and end times.

    Returns (T, CH, PERM, s_pb, s_pj, NEV, TEND, s_nb, s_nj, auto_end)."""
    B, n = times.shape
    dev = times.device
    T = times.to(dtype).contiguous()
    CH = channels.to(torch.int32).contiguous()
    finite = torch.isfinite(T)
    if bool((T[finite] < 0).any()):
        raise ValueError("event times must be >= 0 ms (the neuron starts at t = 0)")
    if delays is None:
        arr = T  # [B, n]
    else:
        # per-neuron arrival times, only to sort and count: the kernels re-add the delay with
        # the same arithmetic, so the order matches bit for bit
        arr = (T.unsqueeze(2) + delays.to(dtype)[channels]).permute(0, 2, 1)  # [B, N, n]
    order = torch.argsort(arr, dim=-1, stable=True).to(torch.int32).contiguous()
    fin = torch.isfinite(arr)
    if t_end is None or not torch.isfinite(torch.as_tensor(float(t_end))):
        # to infinity: realised in the kernel as the last arrival + 60 slowest time constants
        nev = fin.sum(-1)
        tend = torch.where(fin, arr, torch.zeros((), dtype=dtype, device=dev)).amax(-1).clamp_min(0)
        auto = True
    else:
        inside = fin & (arr <= float(t_end))
        nev = inside.sum(-1)
        tend = torch.full(nev.shape, float(t_end), dtype=dtype, device=dev)
        auto = False
    NEV = nev.to(torch.int32).contiguous()
    TEND = tend.to(dtype).contiguous()
    if delays is None:
        s_pb, s_pj, s_nb, s_nj = n, 0, 1, 0
    else:
        s_pb, s_pj, s_nb, s_nj = N * n, n, N, 1
    return T, CH, order, s_pb, s_pj, NEV, TEND, s_nb, s_nj, auto


def _forward(ir, params, times, channels, weight, delays, port, chunk, max_spikes,
             on_overflow, t_end, mode, block_n):
    if ir.c is None or ir.theta is None:
        raise NotImplementedError(
            f"neuron {ir.name} has no threshold: the Triton engines only simulate spiking "
            f"neurons so far (observe=... readouts are not implemented for Triton)")
    if times.dim() != 2 or channels.shape != times.shape:
        raise ValueError(f"times and channels must both be [B, n], got {tuple(times.shape)} and "
                         f"{tuple(channels.shape)}")
    if times.dtype not in _TORCH_DTYPES:
        raise TypeError(f"times must be float32 or float64, got {times.dtype}")
    dtype = times.dtype
    dev = times.device
    _check_device(dev)
    from .ports import is_multi

    # several ports (a PortMap): the PMAP kernels (compiler/backends/triton/ports.py), whose
    # first argument is the port index of each input channel
    pre = (port.index.to(device=dev, dtype=torch.int32).contiguous(),) if is_multi(port) else ()
    port = "_multiport" if is_multi(port) else (port or next(iter(ir.ports)))
    if not pre and port not in ir.ports:
        raise ValueError(f"neuron {ir.name} has no input port {port!r}; ports: {list(ir.ports)}")
    if on_overflow not in ("raise", "flag"):
        raise ValueError(f"on_overflow must be 'raise' or 'flag', got {on_overflow!r}")
    B, n = times.shape
    if weight.dim() == 2:
        C, N = weight.shape
        s_wb = 0
    elif weight.dim() == 3 and weight.shape[0] == B:
        _, C, N = weight.shape
        s_wb = C * N
    else:
        raise ValueError(f"weight must be [C, N] or [B, C, N], got {tuple(weight.shape)}")
    if n and bool(((channels < 0) | (channels >= C)).any()):
        raise ValueError(f"channels must lie in [0, {C})")
    if delays is not None and tuple(delays.shape) != (C, N):
        raise ValueError(f"delays must be [C, N] = [{C}, {N}], got {tuple(delays.shape)}")
    W = weight.detach().to(dtype).contiguous()
    DL = delays.detach().to(dtype).contiguous() if delays is not None else torch.zeros(1, dtype=dtype, device=dev)
    T, CH, PERM, s_pb, s_pj, NEV, TEND, s_nb, s_nj, auto = _prepare_events(
        times.detach(), channels, None if delays is None else delays.detach(), N, t_end, dtype)
    validate_layer(ir, params, times, weight, delays, t_end, N, dtype, channels)
    PRM = _param_table(ir, params, N, dtype, dev)
    S = int(max_spikes)
    OUT = torch.full((B, N, max(S, 1)), float("inf"), dtype=dtype, device=dev)
    CNT = torch.zeros(B, N, dtype=torch.int32, device=dev)
    OVF = torch.zeros(B, N, dtype=torch.int32, device=dev)
    mod = _module(ir, _TORCH_DTYPES[dtype])
    if block_n is None:  # tuned for this module and GPU (runtime/engines/triton_tune.py), else the default
        from spikescan.runtime.engines.triton_tune import lookup

        block_n = min(_pow2(N), lookup(mod.__name__, mode, dev) or (32 if dev.type == "cuda" else 64))
    grid = (B, (N + block_n - 1) // block_n)
    args = (T, CH, PERM, NEV, TEND, W, DL, PRM, OUT, CNT, OVF, N, S, max(n, 1), max(n, 1),
            s_pb, s_pj, s_nb, s_nj, s_wb)
    if B > 0 and N > 0:
        if mode == "scan":
            kc = max(1, int(chunk))
            getattr(mod, f"scan_kernel_{port}")[grid](*pre, *args, kc, K=max(2, _pow2(kc)), BN=block_n,
                                                      HAS_DELAY=delays is not None, AUTO_END=auto)
        elif mode == "sequential":
            getattr(mod, f"seq_kernel_{port}")[grid](*pre, *args, BN=block_n,
                                                     HAS_DELAY=delays is not None, AUTO_END=auto)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    over = OVF.bool()
    if on_overflow == "raise" and bool(over.any()):
        b, j = [int(v) for v in over.nonzero()[0]]
        raise SpikeCapExceeded(b, j, S)
    counts = CNT.to(torch.int64)
    smax = max(1, int(counts.max()) if counts.numel() else 1)
    saved = dict(mod=mod, port=port, pre=pre, args=args, grid=grid, block_n=block_n, S=S, N=N, C=C, B=B,
                 n=max(n, 1), n_user=n, out_full=OUT, cnt=CNT, kc=max(1, int(chunk)),
                 nev_max=int(NEV.max()) if NEV.numel() else 0, has_delay=delays is not None,
                 auto=auto, shared_w=weight.dim() == 2, d=ir.d, npar=len(ir.params),
                 pnames=[p.name for p in ir.params])
    return LayerResult(times=OUT[:, :, :smax].contiguous(), counts=counts, overflow=over.any(1)), saved


def _adjoint(sv: dict, gout: Tensor, with_params: bool):
    """Launch adj_kernel_<port>: returns (gtimes [B, n], gweight, gdelays [C, N], gparams [P, N])."""
    (T, CH, PERM, NEV, TEND, W, DL, PRM, _out, _cnt, _ovf, N, S, s_tb, s_chb, s_pb, s_pj, s_nb,
     s_nj, s_wb) = sv["args"]
    B, C, d, npar, kc = sv["B"], sv["C"], sv["d"], sv["npar"], sv["kc"]
    dt, dev = T.dtype, T.device
    G = torch.zeros((B, N, S), dtype=dt, device=dev)
    G[:, :, : gout.shape[2]] = gout.to(dt)
    G = torch.where(torch.isfinite(sv["out_full"]), G, torch.zeros((), dtype=dt, device=dev))
    nch = (sv["nev_max"] + 1 + kc - 1) // kc
    KT = _pow2(kc + S + 1)  # rows per chunk: kc arrivals + at most S + 1 spikes
    L = B * N
    CKF = torch.empty(L * nch * (d + 2), dtype=dt, device=dev)
    CKI = torch.empty(L * nch * 3, dtype=torch.int32, device=dev)
    TF = torch.empty(L * KT * (d + 1), dtype=dt, device=dev)
    TI = torch.empty(L * KT * 2, dtype=torch.int32, device=dev)
    GT = torch.zeros((B, sv["n"]), dtype=dt, device=dev)
    GW = torch.zeros((C, N) if sv["shared_w"] else (B, C, N), dtype=dt, device=dev)
    GD = torch.zeros((C, N), dtype=dt, device=dev)
    GP = torch.zeros((max(npar, 1), N), dtype=dt, device=dev)
    OUTS = torch.empty_like(sv["out_full"])
    CNT2 = torch.zeros((B, N), dtype=torch.int32, device=dev)
    OVF2 = torch.zeros((B, N), dtype=torch.int32, device=dev)
    args = (T, CH, PERM, NEV, TEND, W, DL, PRM, OUTS, CNT2, OVF2, N, S, s_tb, s_chb, s_pb, s_pj,
            s_nb, s_nj, s_wb, G, CKF, CKI, TF, TI, GT, GW, GD, GP, 0 if sv["shared_w"] else C * N,
            nch, kc)
    getattr(sv["mod"], f"adj_kernel_{sv['port']}")[sv["grid"]](
        *sv["pre"], *args, KT=KT, BN=sv["block_n"], HAS_DELAY=sv["has_delay"], AUTO_END=sv["auto"],
        WITH_PARAMS=bool(with_params and npar))
    if not torch.equal(CNT2, sv["cnt"]):
        raise RuntimeError("Triton backward: the replayed forward disagrees with the forward pass "
                           "(spike counts differ); this is a bug, please report it")
    return GT[:, : sv["n_user"]], GW, GD, GP


class _TritonGrad(torch.autograd.Function):
    """Identity on the forward's spike times; backward = the generated adjoint kernel."""

    @staticmethod
    def forward(ctx, out, sv, pkeys, times, weight, delays, *ptens):
        ctx.sv, ctx.pkeys = sv, pkeys
        ctx.shapes = [None if v is None else (v.shape, v.dtype, v.device)
                      for v in (times, weight, delays, *ptens)]
        return out.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        want = ctx.needs_input_grad[3:]
        gt, gw, gd, gp = _adjoint(ctx.sv, gout.detach(), with_params=any(want[3:]))
        shp = ctx.shapes

        def put(val, k):
            if not want[k] or shp[k] is None:
                return None
            shape, dtype, dev = shp[k]
            return val.reshape(shape).to(dtype=dtype, device=dev)

        grads = [None, None, None, put(gt, 0), put(gw, 1), put(gd, 2)]
        for k, name in enumerate(ctx.pkeys):
            row = gp[ctx.sv["pnames"].index(name)]
            grads.append(put(row.sum() if len(shp[3 + k][0]) == 0 else row, 3 + k))
        return tuple(grads)


def run_layer(ir: NeuronIR, params: dict, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Tensor | None = None, *, port: str | None = None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: str | None = None,
              t_end: float | None = None, mode: str = "scan", block_n: int | None = None) -> LayerResult:
    """The interface-list `run_layer` (see runtime/engines/__init__.py); `mode` picks the
    chunk-scan kernel ("scan") or the sequential event-loop kernel ("sequential")."""
    if observe is not None or ir.c is None or ir.theta is None:
        # readouts (observe=..., neurons without threshold) are not generated for Triton: the
        # PyTorch scan engine runs them on the same device, with the same exact semantics
        from .torch_scan import run_layer as torch_run_layer

        return torch_run_layer(ir, params, times, channels, weight, delays, port=port, chunk=chunk,
                               max_spikes=max_spikes, on_overflow=on_overflow, observe=observe, t_end=t_end)
    from .ports import normalize

    if weight.dim() in (2, 3):
        port = normalize(port, list(ir.ports), weight.shape[-2])
    res, sv = _forward(ir, params, times, channels, weight, delays, port, chunk, max_spikes,
                       on_overflow, t_end, mode, block_n)
    ptens = [(k, v) for k, v in (params or {}).items() if torch.is_tensor(v) and v.requires_grad]
    need = [v for v in (times, weight, delays) if v is not None and v.requires_grad]
    if (need or ptens) and torch.is_grad_enabled():
        res.times = _TritonGrad.apply(res.times, sv, [k for k, _ in ptens], times, weight, delays,
                                      *[v for _, v in ptens])
    return res
