"""Engine "torch": memory kept for the backward and fwd+bwd time, with and without per-chunk
checkpointing (DESIGN.md section 6), plus the Yin-Yang batch-32 training step.

Two kinds of JSON lines:
- case "layer": one CubaLIF layer, `events` inputs per sample, chunk K. saved_mb_* = bytes of the
  distinct storages autograd keeps for the backward (saved_tensors_hooks), plus, with
  checkpointing, what each chunk keeps besides for its recompute (spike-record state, decisions); peak_mb_* =
  peak extra resident memory of forward+backward (RSS sampler, a lower bound, noisy on CPU);
  fwdbwd_s_* / fwdbwd_min_s_* = median / min wall time of forward+backward (variants timed
  interleaved; time_ratio is ckpt/nockpt of the minima, the figure least hit by machine load).
- case "yinyang": models/yinyang.snn, batch 32 of the built-in data set, training loss forward +
  backward with checkpoint False / True / "auto" (the default).

    python -m bench.torch_memory [--quick] [--no-out]
"""

from __future__ import annotations

import torch

import statistics
import time

from bench.common import base_parser, load_neuron, make_emitter, peak_memory

MB = 1024.0 * 1024.0


class _Meter:
    """Counts what the backward keeps alive: storages saved by autograd (pack hook) and what
    each checkpointed chunk holds besides its saved inputs (run.held()), each storage once."""

    def __init__(self, ts_mod):
        self.ts_mod, self.real = ts_mod, ts_mod._checkpoint
        self.seen: dict = {}

    def _add(self, t):
        st = t.untyped_storage()
        self.seen[st.data_ptr()] = st.nbytes()

    def _ckpt(self, run, states, leaves):
        out = self.real(run, states, leaves)
        for t in run.held():
            self._add(t)
        return out

    def _pack(self, t):
        self._add(t)
        return t

    def measure(self, fn) -> float:
        self.seen = {}
        self.ts_mod._checkpoint = self._ckpt
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                out = fn()
        finally:
            self.ts_mod._checkpoint = self.real
        del out
        return sum(self.seen.values()) / MB


def interleaved(fns: dict, repeats: int) -> dict:
    """Wall time of each fn, runs interleaved (ABAB...) after one warm-up each, so that the load
    of a shared machine hits every variant alike: {name: (median_s, min_s)}."""
    for f in fns.values():
        f()
    got = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            got[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in got.items()}


def _layer_problem(B, n, C, N, seed):
    g = torch.Generator().manual_seed(seed)
    T = n / 8.0  # mean input rate per sample: 8 events/ms
    times = torch.rand(B, n, generator=g, dtype=torch.float64) * T
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.randn(C, N, generator=g, dtype=torch.float64) * 0.4 + 0.03
    return times, ch, W


def layer_case(em, ts_mod, cuba, B, n, C, N, chunk, repeats, seed):
    """Input times, weights and tau_m need gradients (a hidden layer of a deeper network)."""
    times0, ch, W0 = _layer_problem(B, n, C, N, seed)

    def run(ckpt, backward=True):
        W = W0.clone().requires_grad_(True)
        times = times0.clone().requires_grad_(True)
        tm = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
        res = ts_mod.run_layer(cuba, {"tau_m": tm}, times, ch, W, chunk=chunk, checkpoint=ckpt,
                               max_spikes=n + 1)
        t = res.times
        coef = torch.linspace(0.5, 1.5, t.numel(), dtype=t.dtype).reshape(t.shape)
        loss = torch.where(torch.isfinite(t), t * coef, torch.zeros_like(t)).sum()
        if backward:
            loss.backward()
        return res

    meter = _Meter(ts_mod)
    rec = {"case": "layer", "batch": B, "events": n, "neurons": N, "channels": C, "chunk": chunk,
           "chunks": -(-(n + 1) // chunk), "lane_events": B * N * (n + 1)}
    with torch.no_grad():
        rec["spikes"] = int(run(False, backward=False).counts.sum())
    variants = (("ckpt", True), ("nockpt", False))
    for name, ck in variants:
        rec[f"saved_mb_{name}"] = round(meter.measure(lambda: run(ck, backward=False)), 4)
        rec[f"peak_mb_{name}"] = round(peak_memory(lambda: run(ck))["peak_bytes"] / MB, 2)
    t = interleaved({name: (lambda ck=ck: run(ck)) for name, ck in variants}, repeats)
    for name, _ in variants:
        rec[f"fwdbwd_s_{name}"] = round(t[name][0], 4)
        rec[f"fwdbwd_min_s_{name}"] = round(t[name][1], 4)
    rec["saved_ratio"] = round(rec["saved_mb_nockpt"] / max(rec["saved_mb_ckpt"], 1e-12), 2)
    rec["time_ratio"] = round(t["ckpt"][1] / t["nockpt"][1], 3)  # of the minima
    rec["auto_checkpoints"] = ts_mod._use_checkpoint("auto", rec["chunks"], rec["lane_events"], True)
    em.emit(**rec)


def yinyang_case(em, ts_mod, repeats, batch=32):
    from spikescan.runtime import losses
    from spikescan.runtime.data import get_dataset, pad_collate
    from spikescan.runtime.losses import LossConfig
    from spikescan.runtime.network import SpikingNetwork
    from spikescan.runtime.train import DATASET_DEFAULTS

    from bench.common import REPO

    d = DATASET_DEFAULTS["yinyang"]
    cfg, t_end = LossConfig(**d["loss"]), d["t_end"]
    ds = get_dataset("yinyang", "train")
    times, channels, labels = pad_collate([ds[i] for i in range(batch)])
    net = SpikingNetwork.from_file(REPO / "models" / "yinyang.snn", engine="torch", seed=0)
    theta = net.readout_theta()

    def step():
        net.zero_grad()
        out = net(times, channels, t_end=t_end, observe_vmax=cfg.silent_slope > 0)
        losses.readout_loss(out, labels, cfg, t_end, theta).backward()

    rec = {"case": "yinyang", "batch": batch}
    old = ts_mod.CHECKPOINT

    def with_flag(ck):
        def f():
            ts_mod.CHECKPOINT = ck
            try:
                step()
            finally:
                ts_mod.CHECKPOINT = old
        return f

    variants = (("nockpt", False), ("ckpt", True), ("auto", "auto"))
    t = interleaved({name: with_flag(ck) for name, ck in variants}, repeats)
    for name, _ in variants:
        rec[f"fwdbwd_s_{name}"] = round(t[name][0], 4)
        rec[f"fwdbwd_min_s_{name}"] = round(t[name][1], 4)
    rec["time_ratio_ckpt"] = round(t["ckpt"][1] / t["nockpt"][1], 3)
    rec["time_ratio_auto"] = round(t["auto"][1] / t["nockpt"][1], 3)
    em.emit(**rec)


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], "torch_memory")
    args = p.parse_args(argv)
    em = make_emitter(args, "torch_memory")
    from spikescan.runtime.engines import torch_scan as ts_mod

    cuba = load_neuron("cuba_lif.snn", "CubaLIF")
    repeats = args.repeats or (3 if args.quick else 5)
    if args.quick:
        grid = [(4, n, 32, 32, 128) for n in (500, 1000)]
    else:
        grid = [(8, n, 64, 128, 128) for n in (1000, 2000, 4000)] + [(8, 2000, 64, 128, 32)]
    for B, n, C, N, k in grid:
        layer_case(em, ts_mod, cuba, B, n, C, N, k, repeats, args.seed)
    yinyang_case(em, ts_mod, 2 * repeats + 1)


if __name__ == "__main__":
    main()
