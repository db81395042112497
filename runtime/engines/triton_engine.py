"""Host side of the generated Triton engines ("triton-scan", "triton-sequential").

Prepares the event arrays once per layer call (one shared arrival order per sample without
delays, per-neuron permutations of the same arrays with delays), the per-neuron parameter
table, and launches the kernels generated from the NeuronIR (compiler/backends/triton_codegen).
Kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 (tests; slow).

Forward only: gradients (reverse scan of the adjoint + IFT at spike times) are not implemented
for the Triton engines yet; backward raises NotImplementedError (use engine="torch" to train).
"""

from __future__ import annotations

import os

import torch

from spikescan.compiler.ir import NeuronIR

from .result import LayerResult, SpikeCapExceeded

Tensor = torch.Tensor

_TORCH_DTYPES = {torch.float64: "f64", torch.float32: "f32"}


def _module(ir: NeuronIR, dtype: str):
    from spikescan.compiler.backends.triton_codegen import load_module

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
    port = port or next(iter(ir.ports))
    if port not in ir.ports:
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
    PRM = _param_table(ir, params, N, dtype, dev)
    S = int(max_spikes)
    OUT = torch.full((B, N, max(S, 1)), float("inf"), dtype=dtype, device=dev)
    CNT = torch.zeros(B, N, dtype=torch.int32, device=dev)
    OVF = torch.zeros(B, N, dtype=torch.int32, device=dev)
    mod = _module(ir, _TORCH_DTYPES[dtype])
    if block_n is None:
        block_n = min(_pow2(N), 32 if dev.type == "cuda" else 64)
    grid = (B, (N + block_n - 1) // block_n)
    args = (T, CH, PERM, NEV, TEND, W, DL, PRM, OUT, CNT, OVF, N, S, max(n, 1), max(n, 1),
            s_pb, s_pj, s_nb, s_nj, s_wb)
    if B > 0 and N > 0:
        if mode == "scan":
            kc = max(1, int(chunk))
            getattr(mod, f"scan_kernel_{port}")[grid](*args, kc, K=max(2, _pow2(kc)), BN=block_n,
                                                      HAS_DELAY=delays is not None, AUTO_END=auto)
        elif mode == "sequential":
            getattr(mod, f"seq_kernel_{port}")[grid](*args, BN=block_n,
                                                     HAS_DELAY=delays is not None, AUTO_END=auto)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    over = OVF.bool()
    if on_overflow == "raise" and bool(over.any()):
        b, j = [int(v) for v in over.nonzero()[0]]
        raise SpikeCapExceeded(b, j, S)
    counts = CNT.to(torch.int64)
    smax = max(1, int(counts.max()) if counts.numel() else 1)
    return LayerResult(times=OUT[:, :, :smax].contiguous(), counts=counts, overflow=over.any(1))


class _NoBackward(torch.autograd.Function):
    """Carries the spike times into the autograd graph so that a backward pass fails loudly
    instead of silently producing zero gradients."""

    @staticmethod
    def forward(ctx, out, *inputs):
        return out.clone()

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(
            "the Triton engines have no backward pass yet (reverse adjoint scan with the IFT at "
            "spike times is not implemented); train with engine='torch' or 'torch-sequential'")


def run_layer(ir: NeuronIR, params: dict, times: Tensor, channels: Tensor, weight: Tensor,
              delays: Tensor | None = None, *, port: str | None = None, chunk: int = 128,
              max_spikes: int = 64, on_overflow: str = "raise", observe: str | None = None,
              t_end: float | None = None, mode: str = "scan", block_n: int | None = None) -> LayerResult:
    """The interface-list `run_layer` (see runtime/engines/__init__.py); `mode` picks the
    chunk-scan kernel ("scan") or the sequential event-loop kernel ("sequential")."""
    if observe is not None:
        raise NotImplementedError(
            f"observe={observe!r} is not implemented by the Triton engines; use engine='torch'")
    res = _forward(ir, params, times, channels, weight, delays, port, chunk, max_spikes,
                   on_overflow, t_end, mode, block_n)
    grads = [t for t in [times, weight, delays, *((params or {}).values())]
             if isinstance(t, torch.Tensor) and t.requires_grad]
    if grads and torch.is_grad_enabled():
        res.times = _NoBackward.apply(res.times, *grads)
    return res
