"""Several input ports per layer (runtime/engines/ports.py): the cost of a PortMap against the
single-port call on the same events and weights, forward and forward + backward, same run.

Workload (default): an SHD-like batch (bench/common.ShdLike: batch 8, 700 Poisson inputs at
12 Hz over 1 s, ~8,400 events per sample) into 128 CubaLIF neurons (tau_m 20 ms, tau_s 5 ms)
with two identical ports `a` and `b` (both `i += w`): the 2-port case sends channels 0-349 to
`a` and 350-699 to `b` through a PortMap, the 1-port case every channel to `a`. The spike trains
are the same (checked), so the ratio is the price of the per-event port selection alone.
Weights bench/common.shd_weights, t_end 1 s, f64, loss = sum of the spike times (gradients to
weights and input times). One JSON line per measurement, then one ratio line per engine and pass
(2-port / 1-port).
--quick: batch 2, 32 neurons, 200 ms (a smoke test; its timings mean nothing).

    python -m bench.multiport [--quick] [--engines sequential-cpu,torch]
"""

from __future__ import annotations

import torch

from bench.common import ShdLike, base_parser, get_engine, make_emitter, shd_weights, time_fn

TWO_PORTS = """
neuron CubaLIF2 {
    params { tau_m = 20 ms   tau_s = 5 ms   v_th = 1.0   v_reset = 0.0 }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }
    on a(w) { i += w }
    on b(w) { i += w }
    spike when v >= v_th
    on spike { v = v_reset }
}
"""


def _neuron():
    import tempfile
    from pathlib import Path

    from spikescan.compiler.driver import load_model

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "two_ports.snn"
        f.write_text(TWO_PORTS)
        return load_model(str(f)).neurons["CubaLIF2"]


def main(argv=None) -> None:
    p = base_parser(__doc__.splitlines()[0], "multiport")
    p.add_argument("--engines", default="sequential-cpu,torch")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    args = p.parse_args(argv)
    em = make_emitter(args, "multiport")
    from spikescan.runtime.engines.ports import PortMap

    B = args.batch or (2 if args.quick else 8)
    N = args.hidden or (32 if args.quick else 128)
    dur = 200.0 if args.quick else 1000.0
    reps = args.repeats or (1 if args.quick else 3)
    times, ch = ShdLike(batch=B, duration_ms=dur, seed=args.seed).events()
    C = 700
    W = shd_weights(C, N)
    ir = _neuron()
    ports = {"1-port": "a", "2-port": PortMap.from_blocks(["a", "b"], [C // 2, C - C // 2])}
    for name in args.engines.split(","):
        eng, why = get_engine(name, args.device)
        if eng is None:
            em.skip(why, engine=name)
            continue
        med, spikes = {}, {}
        for case, port in ports.items():
            def fwd(port=port):
                with torch.no_grad():
                    return eng.run_layer(ir, {}, times, ch, W, port=port, t_end=dur, max_spikes=256)

            def step(port=port):
                Wr, tr = W.clone().requires_grad_(), times.clone().requires_grad_()
                r = eng.run_layer(ir, {}, tr, ch, Wr, port=port, t_end=dur, max_spikes=256)
                t = r.times
                torch.where(torch.isfinite(t), t, torch.zeros_like(t)).sum().backward()
                return r

            res = spikes[case] = fwd()
            rate = float(res.counts.double().mean()) / (dur / 1000.0)
            for pas, fn in (("forward", fwd), ("forward+backward", step)):
                t = time_fn(fn, repeats=reps, warmup=1)
                med[(case, pas)] = t["median_s"]
                em.emit(engine=name, case=case, pass_=pas, batch=B, hidden=N, duration_ms=dur,
                        events_per_sample=float(torch.isfinite(times).sum(1).double().mean()),
                        hidden_rate_hz=rate, **t)
        same = torch.equal(spikes["1-port"].times, spikes["2-port"].times)
        for pas in ("forward", "forward+backward"):
            em.emit(engine=name, pass_=pas, same_spikes=same,
                    ratio_2port_over_1port=med[("2-port", pas)] / med[("1-port", pas)])


if __name__ == "__main__":
    main()
