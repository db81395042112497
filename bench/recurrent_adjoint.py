"""The recurrent layer's backward on the CPU, event-outer adjoint (runtime/engines/
adjoint_events_rec.py) against the replaying adjoint it replaces (recurrent_cpu.USE_EVENT_ADJOINT
= False), on models/shd.snn's sizes: the SHD-like input of bench/shd_step.py (batch 32, 700
Poisson channels at 12 Hz over 1 s, ~8,400 events per sample, input weights shd_weights) into
256 recurrent CubaLIF (tau_m 20 ms, tau_s 5 ms), w_rec normal(0, 0.05), t_end 1000 ms, f64, one
torch thread, one engine thread unless --threads. loss = sum_s (weight_s x spike time s).

One JSON line per path (median backward and forward seconds over --repeats after a warm-up), then one with
the ratio and the largest relative gradient difference (per tensor: max |new - old| / max |old|).
--quick: batch 2, 64 hidden, 200 ms (smoke test).

    python bench/recurrent_adjoint.py [--quick] [--repeats 3] [--engine-threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ShdLike  # noqa: E402
from bench.shd_step import make_problem  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--engine-threads", type=int, default=1)
    p.add_argument("--max-spikes", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from spikescan.runtime.engines import adjoint_events_rec, parallel, recurrent_cpu

    parallel.set_threads(args.engine_threads)
    wl = ShdLike(batch=2, duration_ms=200.0) if args.quick else ShdLike()
    pb = make_problem(wl, hidden=64 if args.quick else 256)
    N = pb.hidden
    Wr = torch.randn(N, N, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.05
    calls = []
    orig = adjoint_events_rec.backward
    adjoint_events_rec.backward = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    results = {}
    for name, flag in (("event_outer", True), ("replay", False)):
        recurrent_cpu.USE_EVENT_ADJOINT = flag
        fw, bw = [], []
        for rep in range(args.repeats + 1):  # the first: warm-up (JIT compiles), not timed
            leaf = [v.detach().clone().requires_grad_(True) for v in (pb.times, pb.W1, Wr)]
            t0 = time.perf_counter()
            r = recurrent_cpu.run_recurrent_layer(pb.cuba, {}, leaf[0], pb.channels, leaf[1], leaf[2],
                                                  max_spikes=args.max_spikes, on_overflow="flag", t_end=wl.duration_ms)
            fin = torch.isfinite(r.times)
            loss = (r.times[fin] * torch.linspace(0.5, 1.5, int(fin.sum()), dtype=torch.float64)).sum()
            t1 = time.perf_counter()
            n0 = len(calls)
            loss.backward()
            t2 = time.perf_counter()
            if rep:
                fw.append(t1 - t0)
                bw.append(t2 - t1)
        ran = len(calls) > n0
        if ran != flag or bool(r.overflow.any()):
            raise SystemExit(f"{name}: the event-outer adjoint ran={ran}, overflow={bool(r.overflow.any())}")
        results[name] = [v.grad for v in leaf]
        print(json.dumps(dict(bench="recurrent_adjoint", path=name, batch=wl.batch, hidden=N,
                              events=int(torch.isfinite(pb.times).sum()), spikes=int(r.counts.sum()),
                              forward_s=round(statistics.median(fw), 4), backward_s=round(statistics.median(bw), 4),
                              backward_all_s=[round(v, 4) for v in bw], engine_threads=args.engine_threads)))
    diff = {k: (a - b).abs().max().item() / b.abs().max().item()
            for k, a, b in zip(("times", "weight", "w_rec"), results["event_outer"], results["replay"])}
    print(json.dumps(dict(bench="recurrent_adjoint", max_rel_grad_diff=diff)))


if __name__ == "__main__":
    main()
