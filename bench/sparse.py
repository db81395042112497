"""Sparse recurrent networks (docs/sparse.md): the compiled O(log N) engine against the plain O(N)
exact loop, on the balanced E/I LIF network of models/balanced_ei.snn resized to N neurons
(N_E = 0.8 N, K = 100: 0.8 K excitatory and 0.2 K inhibitory partners per neuron).

Records (JSON lines, bench/common.py):
- kind "build": connectivity build time and memory (bytes per neuron and per synapse);
- kind "run": the compiled engine, `spikes` network spikes (wall_s, spikes_per_s, us_per_spike);
- kind "reference": the O(N) loop, capped at --reference-cap-s of wall time; a capped run reports
  its spikes/s over the spikes it did (cost per spike is constant in time for a stationary
  network, so this extrapolates per spike) with "capped": true;
- kind "ratio": compiled / reference spikes per second at the same N, in the same run;
- kind "fit": the log-log slope of the compiled engine's cost per spike against N (near 0:
  O(log N) per spike);
- kind "target": the largest size against the issue's target (10^7 spikes in < 60 s at 10^6).

    python bench/sparse.py                  # full sizes (minutes; 10^6 neurons, 10^7 spikes)
    python bench/sparse.py --quick          # smoke sizes
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import base_parser, loglog_slope, make_emitter  # noqa: E402


def resized(net, nir, n: int, k: int):
    """The network with N_E = 0.8 n, N_I = 0.2 n and k partners (0.8 k E, 0.2 k I) per neuron;
    weights keep their J / sqrt(K) scaling with the new K."""
    import math

    sizes = {"E": int(round(0.8 * n)), "I": n - int(round(0.8 * n))}
    k_old = sum(c.k for c in net.layers[0].connections)
    layers = []
    for l in net.layers:
        conns = []
        for c in l.connections:
            kc = max(1, int(round(c.k * k / k_old)))
            init = dataclasses.replace(c.init, a=c.init.a * math.sqrt(k_old / k), b=c.init.b * math.sqrt(k_old / k))
            conns.append(dataclasses.replace(c, k=min(kc, sizes[c.source]), init=init))
        layers.append(dataclasses.replace(l, size=sizes[l.name], connections=tuple(conns)))
    return dataclasses.replace(net, layers=layers)


def main(argv=None) -> int:
    p = base_parser(__doc__.split("\n\n")[0], "sparse")
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "balanced_ei.snn"))
    p.add_argument("--sizes", default=None, help="comma-separated N (default 1000,10000,100000,1000000)")
    p.add_argument("--k", type=int, default=None, help="partners per neuron (default 100)")
    p.add_argument("--spikes", type=int, default=None,
                   help="network spikes per compiled run at the largest N (default 10^7); smaller N "
                        "run min(this, 100 N)")
    p.add_argument("--reference-sizes", default=None, help="N for the O(N) loop (default 1000,10000,100000)")
    p.add_argument("--reference-cap-s", type=float, default=None, help="wall-time cap of each O(N) run (default 60)")
    args = p.parse_args(argv)
    em = make_emitter(args, "sparse")
    q = args.quick
    sizes = [int(float(s)) for s in (args.sizes or ("1000,3000" if q else "1000,10000,100000,1000000")).split(",")]
    ref_sizes = [int(float(s)) for s in (args.reference_sizes or ("1000" if q else "1000,10000,100000")).split(",")]
    k = args.k or (20 if q else 100)
    top_spikes = args.spikes or (20_000 if q else 10_000_000)
    cap_s = args.reference_cap_s if args.reference_cap_s is not None else (3.0 if q else 60.0)

    from spikescan.compiler.driver import load_model
    from spikescan.runtime.sparse import SparseModel
    from spikescan.runtime.sparse.engine import compiled, memory_bytes, run_compiled
    from spikescan.runtime.sparse.reference import run_reference

    m = load_model(args.model)
    (name, net), = [(n, v) for n, v in m.networks.items() if v.readout is None][:1]
    nir = m.neurons[net.layers[0].neuron]
    t0 = time.perf_counter()
    compiled(nir)
    em.emit(kind="compile", network=name, neuron=nir.name, compile_s=time.perf_counter() - t0)
    per_spike, done = {}, {}
    for n in sorted(set(sizes) | set(ref_sizes)):
        t0 = time.perf_counter()
        model = SparseModel.from_ir(resized(net, nir, n, k), nir, seed=args.seed)
        build_s = time.perf_counter() - t0
        mem = memory_bytes(model)
        em.emit(kind="build", k=k, build_s=build_s, **mem)
        want = top_spikes if n == max(sizes) else min(top_spikes, 100 * n)
        duration = 1e6  # ms: the run stops at `want` spikes long before
        if n in sizes:
            tr = run_compiled(model, duration, max_spikes=want)
            per_spike[n] = tr.wall_s / max(len(tr), 1)
            done[n] = tr
            em.emit(kind="run", engine="compiled", neurons=n, k=k, spikes=len(tr), sim_ms=float(tr.times[-1]) if len(tr) else 0.0,
                    wall_s=tr.wall_s, spikes_per_s=len(tr) / tr.wall_s, us_per_spike=1e6 * per_spike[n],
                    rates_hz=tr.rates_hz().tolist() if tr.t_end else None, init_s=tr.stats["t_init_s"])
        if n in ref_sizes:
            rr = run_reference(model, duration, max_spikes=want, time_limit_s=cap_s)
            capped = not rr.complete or len(rr) < want
            ref_rate = len(rr) / rr.wall_s if rr.wall_s > 0 else None
            em.emit(kind="reference", engine="O(N) loop", neurons=n, k=k, spikes=len(rr), wall_s=rr.wall_s,
                    spikes_per_s=ref_rate, capped=capped,
                    note=("stopped at the wall-time cap: spikes/s over the spikes done, a per-spike "
                          "extrapolation (cost per spike is stationary)") if capped else None)
            if n in done and ref_rate:
                fast = len(done[n]) / done[n].wall_s
                em.emit(kind="ratio", neurons=n, compiled_spikes_per_s=fast, reference_spikes_per_s=ref_rate,
                        speedup=fast / ref_rate)
    ns = sorted(per_spike)
    em.emit(kind="fit", what="compiled cost per spike vs N", neurons=ns, us_per_spike=[1e6 * per_spike[n] for n in ns],
            loglog_slope=loglog_slope(ns, [per_spike[n] for n in ns]))
    big = max(sizes)
    tr = done[big]
    em.emit(kind="target", neurons=big, k=k, spikes=len(tr), wall_s=tr.wall_s, target_spikes=10_000_000,
            target_s=60.0, met=bool(big >= 1_000_000 and len(tr) >= 10_000_000 and tr.wall_s < 60.0),
            projected_s_for_1e7=1e7 * per_spike[big])
    return 0


if __name__ == "__main__":
    sys.exit(main())
