"""The compiled CPU forward loop for shared time constants (DESIGN.md section 9): the earlier
scalar event-outer loop (mlir_emit.build_layer_shared_scalar, "old") against the vectorised one
(mlir/shared.py, "new"), measured in the same run, interleaved repeat by repeat.

Workloads (batch 32, 700 inputs at 12 Hz over 1 s: ~8,400 events per sample, 256 CubaLIF with
tau_m 20 ms, tau_s 5 ms, f64): "shd-like" (bench/common.shd_weights: the mean current sits near
threshold, so the cheap no-crossing test fails on ~25% of neuron-events and the spike solver
runs) and "pure-update" (the same weights times 1e-3: nothing ever crosses; the cost of the
state update and the tests alone). One JSON line per (workload, loop): ns per neuron-event from
wall time (median) and from process CPU time (min; robust to other processes on the machine),
ms per batch, spikes, and whether the two loops gave bit-identical spike trains.

    python bench/cpu_forward.py [--quick] [--batch 32] [--hidden 256] [--duration 1000] [--repeats 5]
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ShdLike, base_parser, load_neuron, make_emitter, shd_weights  # noqa: E402

LOOPS = {"old": "scalar", "new": "vector"}


def prepare(wl: ShdLike, nir, N: int):
    """The arguments sequential_cpu.run_layer passes to CompiledNeuron.layer_shared."""
    from spikescan.runtime.engines import sequential_cpu

    t, ch = wl.events(dtype=torch.float64)
    fin = t < math.inf
    nvalid = fin.sum(1).to(torch.int64)
    order = torch.argsort(t, dim=1, stable=True)
    pvec = sequential_cpu._param_vectors(nir, {}, N, torch.float64)
    tail = sequential_cpu.TAIL_TAUS * sequential_cpu._slowest_tau(nir, pvec)
    horizon = (t.masked_fill(~fin, 0.0).amax(1) + tail).contiguous()
    return t.contiguous(), ch.contiguous(), order, nvalid, horizon, pvec


def main(argv=None):
    p = base_parser(__doc__, "cpu_forward")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--duration", type=float, default=1000.0, help="ms of input per sample")
    args = p.parse_args(argv)
    em = make_emitter(args, "cpu_forward")
    from spikescan.compiler.backends.mlir.cpu_jit import compile_neuron
    from spikescan.compiler.backends.mlir.shared import LANES

    batch = args.batch or (4 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 5)
    N = args.hidden
    wl = ShdLike(batch=batch, duration_ms=args.duration, seed=args.seed)
    nir = load_neuron("cuba_lif.snn", "CubaLIF")
    t0 = time.perf_counter()
    eng = compile_neuron(nir, "f64")
    eng._scalar_shared_engine()  # compile both before timing
    compile_s = time.perf_counter() - t0
    t, ch, order, nvalid, horizon, pvec = prepare(wl, nir, N)
    W0 = shd_weights(wl.n_inputs, N, seed=args.seed + 1)
    nev = int(nvalid.sum())
    sizes = dict(batch=batch, inputs=wl.n_inputs, hidden=N, events_per_sample=nev / batch,
                 neuron_events=nev * N, dtype="f64", lanes=LANES["f64"], compile_s=compile_s)
    for workload, W in (("shd-like", W0), ("pure-update", W0 * 1e-3)):
        wall = {k: [] for k in LOOPS}
        cpu = {k: [] for k in LOOPS}
        res = {}
        for rep in range(repeats + 1):  # the first round is the warm-up
            for name, impl in LOOPS.items():
                out = torch.full((batch, N, 64), math.inf, dtype=torch.float64)
                counts = torch.zeros((batch, N), dtype=torch.int64)
                over = torch.zeros((batch, N), dtype=torch.int64)
                w0, c0 = time.perf_counter(), time.process_time()
                eng.layer_shared(t, ch, order, W, nvalid, horizon, pvec, out, counts, over, impl=impl)
                c1, w1 = time.process_time(), time.perf_counter()
                if rep:
                    wall[name].append(w1 - w0)
                    cpu[name].append(c1 - c0)
                res[name] = (out, counts, over)
        same = all(torch.equal(a, b) for a, b in zip(res["old"], res["new"]))
        spikes = int(res["new"][1].sum())
        if bool(res["new"][2].any()):
            em.skip("spike cap of 64 exceeded", what=workload, **sizes)
            continue
        for name in LOOPS:
            wm, cm = statistics.median(wall[name]), min(cpu[name])
            em.emit(kind="timing", workload=workload, loop=name, impl=LOOPS[name],
                    ns_per_neuron_event_wall=wm / (nev * N) * 1e9,
                    ns_per_neuron_event_cpu=cm / (nev * N) * 1e9,
                    ms_per_batch_wall=wm * 1e3, ms_per_batch_cpu=cm * 1e3, runs=len(wall[name]),
                    all_wall_s=wall[name], all_cpu_s=cpu[name], spikes=spikes,
                    hidden_rate_hz=spikes / (batch * N) / (wl.duration_ms / 1000.0),
                    bitwise_equal_old_new=same, **sizes)
        em.emit(kind="ratio", workload=workload,
                speedup_wall=statistics.median(wall["old"]) / statistics.median(wall["new"]),
                speedup_cpu=min(cpu["old"]) / min(cpu["new"]), bitwise_equal_old_new=same, **sizes)


if __name__ == "__main__":
    main()
