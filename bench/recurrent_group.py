"""Recurrent group loop (runtime/engines/recurrent_group.py): cost of recurrent delays. One
recurrent CubaLIF layer (tau_m 20 ms, tau_s 5 ms), forward and forward + backward, in the same
run: the plain zero-delay PyTorch loop (runtime/engines/recurrent.py), the group loop on the same
zero-delay case (its overhead; spike trains must be identical), and the group loop with random
recurrent delays in [0, 5 ms] (one delivery step per distinct arrival time: about spikes x N
steps). steps = loop iterations of the group loop.

Workload: batch B, n input events per sample uniform over 200 ms on 100 channels, N neurons,
input weights normal(0, 0.1) x 20, recurrent normal(0, 0.05) x 5, t_end = 200 ms, float64.
--quick: B 1, n 40, N 16. Default: B 2, n 150, N 64.

    python -m bench.recurrent_group [--quick]
"""

from __future__ import annotations

import time

import torch

from bench.common import base_parser, load_neuron, make_emitter

F64 = torch.float64
T_END = 200.0


def workload(B: int, n: int, N: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(B, n, generator=g, dtype=F64) * T_END, 1).values
    ch = torch.randint(0, 100, (B, n), generator=g)
    W = torch.randn(100, N, generator=g, dtype=F64) * 0.1 * 20.0
    Wr = torch.randn(N, N, generator=g, dtype=F64) * 0.05 * 5.0
    D = torch.rand(N, N, generator=g, dtype=F64) * 5.0
    return times, ch, W, Wr, D


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], "recurrent_group")
    args = p.parse_args(argv)
    em = make_emitter(args, "recurrent_group")
    from spikescan.runtime.engines import recurrent_group as rg
    from spikescan.runtime.engines.recurrent import run_recurrent_layer

    B, n, N = (1, 40, 16) if args.quick else (2, 150, 64)
    ir = load_neuron("cuba_lif.snn", "CubaLIF")
    P = {"tau_m": 20.0, "tau_s": 5.0}
    times, ch, W, Wr, D = workload(B, n, N, args.seed)
    sizes = dict(batch=B, events_per_sample=n, inputs=100, hidden=N, t_end_ms=T_END, dtype="float64")

    steps = {"n": 0}
    orig = rg.first_crossing

    def counting(*a, **kw):  # one solver call per loop step that has candidates
        steps["n"] += 1
        return orig(*a, **kw)

    def plain(t, w, wr, d):
        return run_recurrent_layer(ir, P, t, ch, w, wr, t_end=T_END, max_spikes=256, on_overflow="flag")

    def group(t, w, wr, d):
        return rg.run_recurrent_group([rg.GroupLayer(ir, P, N, t, ch, w)], [rg.Coupling(0, 0, wr, d)], t_end=T_END,
                                      max_spikes=256, on_overflow="flag")[0]

    ref = None
    for name, fn, d in (("plain zero-delay", plain, None), ("group zero-delay", group, None),
                        ("group delays [0, 5] ms", group, D)):
        for mode in ("forward", "forward+backward"):
            leaf = [v.clone().requires_grad_(mode != "forward") for v in (times, W, Wr)]
            dd = None if d is None else d.clone().requires_grad_(mode != "forward")
            steps["n"] = 0
            rg.first_crossing = counting
            t0 = time.perf_counter()
            try:
                r = fn(leaf[0], leaf[1], leaf[2], dd)
                if mode != "forward":
                    torch.where(torch.isfinite(r.times), r.times, torch.zeros_like(r.times)).sum().backward()
            finally:
                rg.first_crossing = orig
            wall = time.perf_counter() - t0
            rec = dict(engine=name, mode=mode, seconds=wall, hidden_spikes=int(r.counts.sum()),
                       overflow=bool(r.overflow.any()), **sizes)
            if name.startswith("group"):
                rec["solver_steps"] = steps["n"]
            if name == "plain zero-delay" and mode == "forward":
                ref = r
            if name == "group zero-delay" and mode == "forward":
                rec["bit_identical_to_plain"] = bool(torch.equal(ref.counts, r.counts)
                                                     and torch.equal(ref.times, r.times))
            em.emit(**rec)


if __name__ == "__main__":
    main()
