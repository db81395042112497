"""Parallel Spiking Neuron layers: spikescan against SpikingJelly, forward + backward, same run.

One layer as in the issue: binned spike input [T, batch, 700] -> dense 700 -> 256 -> PSN over the
T bins, for psn, masked_psn (k) and sliding_psn (k), at T = 64 and 256, batch 32. Both sides get
the same weights and inputs (`spike_mismatch`: the fraction of spikes that differ), and one backward pass of
the same loss reaches the dense weights, the PSN weights and the bias. SpikingJelly runs its own
multi-step modules (PSN, MaskedPSN with lambda_ = 1, SlidingPSN); spikescan runs runtime/psn.py
on the CPU, the fused Triton kernels (compiler/backends/triton/psn.py) with --device cuda.

Records: kind "timing" (framework, neuron, T, batch, inputs, hidden, k, dtype, median_s ...) and
kind "ratio" (spikingjelly_s / spikescan_s: above 1 means spikescan is faster).

    python bench/psn.py            # T = 64, 256; batch 32; 700 -> 256; k = 4; f32
    python bench/psn.py --quick    # tiny sizes, seconds (tests/bench/test_bench.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import base_parser, make_emitter, peak_memory, time_fn  # noqa: E402
from spikescan.runtime import psn  # noqa: E402

KINDS = ("psn", "masked_psn", "sliding_psn")
DTYPES = {"f32": torch.float32, "f64": torch.float64}
BIAS = -0.1  # near the potential's scale, so that a fair share of bins spike (the cost is dense anyway)


def _inputs(T, batch, n_in, hidden, k, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, batch, n_in, generator=g) < 0.05).to(dtype)  # ~SHD-like: 5% of inputs per bin
    w_in = torch.randn(n_in, hidden, generator=g, dtype=dtype) * (3.0 / n_in ** 0.5)
    w_t = (torch.rand(T, T, generator=g, dtype=dtype) * 2 - 1) / T ** 0.5
    slide = 0.5 ** torch.arange(k - 1, -1, -1, dtype=dtype)
    gy = torch.randn(T, batch, hidden, generator=g, dtype=dtype)
    to = dict(device=device)
    return x.to(**to), w_in.to(**to), w_t.to(**to), slide.to(**to), gy.to(**to)


def _events(x):
    """The spikes of x [T, B, C] as event lists (times at bin centres, 1 ms bins), +inf padded."""
    T, B, C = x.shape
    nz = x.permute(1, 0, 2).nonzero()  # (b, t, c), sorted by sample
    n = torch.bincount(nz[:, 0], minlength=B)
    times = torch.full((B, int(n.max())), float("inf"), dtype=x.dtype, device=x.device)
    chans = torch.zeros((B, int(n.max())), dtype=torch.long, device=x.device)
    pos = torch.arange(len(nz), device=x.device) - torch.repeat_interleave(n.cumsum(0) - n, n)
    times[nz[:, 0], pos] = nz[:, 1].to(x.dtype) + 0.5
    chans[nz[:, 0], pos] = nz[:, 2]
    return times, chans


class Ours:
    """spikescan's layer from the input events: binned once (sparse counts on the CPU, as the
    network does for an input layer), counts @ W_in, then the PSN kind (torch on CPU, Triton on
    CUDA). Binning is inside the timed step; SpikingJelly gets the binned tensor for free."""

    def __init__(self, kind, x, w_in, w_t, slide, k, device):
        T = x.shape[0]
        self.kind, self.T, self.cuda = kind, T, str(device).startswith("cuda")
        self.x = x
        self.times, self.chans = _events(x)
        self.w_in = w_in.clone().requires_grad_(True)
        if kind == "psn":
            self.w = w_t.clone().requires_grad_(True)
        elif kind == "masked_psn":
            self.w = psn.band_from_dense(w_t, k).requires_grad_(True)
        else:
            self.w = slide.clone().requires_grad_(True)
        shape = (T,) if kind != "sliding_psn" else ()
        self.b = torch.full(shape, BIAS, dtype=x.dtype, device=x.device, requires_grad=True)
        self.params = [self.w_in, self.w, self.b]

    def forward(self):
        if self.cuda:
            z = psn.bin_events(self.times, self.chans, self.x.shape[2], self.T, 1.0, self.x.dtype) @ self.w_in
        else:
            z = psn.counts_matmul(psn.sparse_counts(self.times, self.chans, self.x.shape[2], self.T, 1.0,
                                                    self.x.dtype), self.w_in)
        if self.cuda:
            from spikescan.compiler.backends.triton import psn as triton_psn

            fn = triton_psn.dense_spikes if self.kind == "psn" else triton_psn.banded_spikes
            return fn(z, self.w, self.b, "atan", 2.0)
        if self.kind == "psn":
            return psn.spike(psn.psn_potential(z, self.w, self.b), psn.Surrogate("atan", 2.0))
        return psn.banded_spikes(z, self.w, self.b, psn.Surrogate("atan", 2.0))


class Theirs:
    """SpikingJelly: nn.Linear (multi-step over [T, B, C]) then PSN / MaskedPSN / SlidingPSN."""

    def __init__(self, kind, x, w_in, w_t, slide, k, device):
        from spikingjelly.activation_based import neuron, surrogate

        T, dtype = x.shape[0], x.dtype
        self.x = x
        self.lin = torch.nn.Linear(w_in.shape[0], w_in.shape[1], bias=False).to(device=device, dtype=dtype)
        sg = surrogate.ATan(alpha=2.0)
        if kind == "psn":
            self.mod = neuron.PSN(T, surrogate_function=sg)
        elif kind == "masked_psn":
            self.mod = neuron.MaskedPSN(k=k, T=T, surrogate_function=sg, step_mode="m")
        else:
            self.mod = neuron.SlidingPSN(k=k, surrogate_function=sg, step_mode="m")
        self.mod = self.mod.to(device=device, dtype=dtype)
        with torch.no_grad():
            self.lin.weight.copy_(w_in.T)
            if kind == "masked_psn":
                self.mod.lambda_ = 1.0  # the fully masked (banded) form
            self.mod.weight.copy_(slide if kind == "sliding_psn" else w_t)
            self.mod.bias.fill_(BIAS)
        self.params = [self.lin.weight, self.mod.weight, self.mod.bias]

    def forward(self):
        return self.mod(self.lin(self.x))


def _step(impl, gy):
    def run():
        for p in impl.params:
            p.grad = None
        (impl.forward() * gy).sum().backward()
    return run


def measure(em, args, kind, T, dtype_name):
    dtype = DTYPES[dtype_name]
    x, w_in, w_t, slide, gy = _inputs(T, args.batch, args.inputs, args.hidden, args.k, dtype, args.device, args.seed)
    sizes = dict(neuron=kind, T=T, batch=args.batch, inputs=args.inputs, hidden=args.hidden,
                 k=None if kind == "psn" else args.k, dtype=dtype_name, device=args.device)
    ours = Ours(kind, x, w_in, w_t, slide, args.k, args.device)
    try:
        theirs = Theirs(kind, x, w_in, w_t, slide, args.k, args.device)
    except ImportError as e:
        em.skip(f"spikingjelly is not installed ({e}); pip install spikingjelly", framework="spikingjelly", **sizes)
        theirs = None
    with torch.no_grad():  # the same spikes up to summation order (f32: a potential within ulps of 0 may differ)
        s_ours = ours.forward()
        equal = None if theirs is None else float((s_ours != theirs.forward()).double().mean())
    rate = float(s_ours.mean())
    res = {}
    for name, impl in (("spikescan", ours), ("spikingjelly", theirs)):
        if impl is None:
            continue
        fn = _step(impl, gy)
        t = time_fn(fn, args.device, repeats=args.repeats, warmup=1, max_seconds=args.max_seconds)
        mem = peak_memory(fn, args.device) if args.memory else None
        res[name] = t["median_s"]
        em.emit(kind="timing", framework=name, mode="forward+backward", spike_rate=rate, spike_mismatch=equal,
                peak_bytes=mem, **sizes, **t)
    if len(res) == 2:
        em.emit(kind="ratio", spikescan_s=res["spikescan"], spikingjelly_s=res["spikingjelly"],
                ratio=res["spikingjelly"] / res["spikescan"], spike_mismatch=equal, **sizes)


def main(argv=None):
    p = base_parser(__doc__.split("\n")[0], "psn")
    p.add_argument("--T", default=None, help="comma-separated bin counts (default 64,256; --quick 16)")
    p.add_argument("--batch", type=int, default=None, help="default 32 (--quick 4)")
    p.add_argument("--inputs", type=int, default=None, help="default 700 (--quick 40)")
    p.add_argument("--hidden", type=int, default=None, help="default 256 (--quick 16)")
    p.add_argument("--k", type=int, default=4, help="order of the masked and sliding PSN")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--dtypes", default="f32", help="f32 and/or f64")
    p.add_argument("--max-seconds", type=float, default=20.0, help="stop repeating a measurement after this")
    p.add_argument("--memory", action="store_true", help="also record the peak memory of one step")
    args = p.parse_args(argv)
    q = args.quick
    args.batch = args.batch or (4 if q else 32)
    args.inputs = args.inputs or (40 if q else 700)
    args.hidden = args.hidden or (16 if q else 256)
    args.repeats = args.repeats or (2 if q else 5)
    Ts = [int(t) for t in (args.T or ("16" if q else "64,256")).split(",")]
    em = make_emitter(args, "psn")
    for T in Ts:
        for kind in args.kinds.split(","):
            for dt in args.dtypes.split(","):
                measure(em, args, kind, T, dt)


if __name__ == "__main__":
    main()
