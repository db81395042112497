"""conv2d layer on N-MNIST-sized input: receptive-field lanes (runtime/conv.py, the default)
against the same layer through its explicit dense matrix (path="dense"), forward and
forward+backward, on one engine.

Input: synthetic N-MNIST-like events (batch 32, [2, 34, 34], 2,000 events per sample over
105 ms, pixels normal around the centre with sd 6 px, seeded), into models/nmnist_conv.snn's c1 (8 kernels 4x4 stride 2 ->
[8, 16, 16], CubaLIF tau_m 20 ms, tau_s 5 ms), f64, one torch thread. loss = sum of the finite
spike times. One JSON line per path (median seconds over --repeats after a warm-up, spikes,
events), then one with the ratios and the largest kernel-gradient difference.
--quick: batch 2, 600 events (smoke test). Measure at full size on a quiet machine.

    python bench/conv.py [--quick] [--engine sequential-cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def events(batch: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(batch, n, generator=g, dtype=torch.float64) * 105.0, 1).values
    # pixels around the centre (sd 6 px), like a digit's strokes, both polarities; chw layout
    yx = (torch.randn(batch, n, 2, generator=g) * 6.0 + 17.0).round().clamp(0, 33).long()
    pol = torch.randint(0, 2, (batch, n), generator=g)
    return t, pol * 34 * 34 + yx[..., 0] * 34 + yx[..., 1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--engine", default="sequential-cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from spikescan.runtime.engines import get_engine
    from spikescan.runtime.network import SpikingNetwork

    net = SpikingNetwork.from_file(ROOT / "models" / "nmnist_conv.snn", engine=args.engine, seed=0, max_spikes=64)
    lay, eng = net.layers["c1"], get_engine(args.engine)
    ir = net.neurons[lay.neuron]
    B, n = (2, 600) if args.quick else (32, 2000)
    t, c = events(B, n)
    res, grads = {}, {}
    for path in ("lanes", "dense"):
        lay.path = path
        fw, fb = [], []
        for rep in range(args.repeats + 1):  # the first: warm-up (JIT compiles), not timed
            lay.kernel.grad = None
            with torch.no_grad():
                t0 = time.perf_counter()
                lay.run(eng, ir, t, c, max_spikes=64, on_overflow="flag", t_end=210.0)
                t1 = time.perf_counter()
            out = lay.run(eng, ir, t, c, max_spikes=64, on_overflow="flag", t_end=210.0)
            fin = torch.isfinite(out.times)
            out.times[fin].sum().backward()
            t2 = time.perf_counter()
            if rep:
                fw.append(t1 - t0)
                fb.append(t2 - t1)
        grads[path] = lay.kernel.grad.clone()
        res[path] = {"bench": "conv", "path": path, "engine": args.engine, "batch": B, "events": n,
                     "forward_s": statistics.median(fw), "forward_backward_s": statistics.median(fb),
                     "spikes": int(out.counts.sum())}
        print(json.dumps(res[path]), flush=True)
    diff = float((grads["lanes"] - grads["dense"]).abs().max() / grads["dense"].abs().max())
    print(json.dumps({"bench": "conv", "dense_over_lanes_forward": res["dense"]["forward_s"] / res["lanes"]["forward_s"],
                      "dense_over_lanes_forward_backward": res["dense"]["forward_backward_s"] /
                      res["lanes"]["forward_backward_s"], "max_rel_kernel_grad_diff": diff}), flush=True)


if __name__ == "__main__":
    main()
