"""Scaling: time and peak memory of one CubaLIF layer (forward, and forward+backward of the sum
of output spike times) vs events per sample, neurons, batch and chunk size, per engine, with the
fitted log-log exponent of each sweep (time ~ size^p) in `kind="fit"` records.

Sweeps start from a base point (full: batch 8, 256 neurons, 700 inputs at 12 Hz over 1 s;
quick: batch 2, 32 neurons, 100 ms) and vary one size at a time. Events per sample are varied
through the input rate; the weight mean is scaled by 12 Hz / rate and the spread by its square
root, so the mean synaptic drive and its fluctuation, and so the hidden firing rate, stay about
the same (the records give the measured rate). --quick leaves out the one-event-at-a-time
torch-sequential engine (pure Python loop) unless --engines names it.

    python bench/scaling.py [--quick] [--device cuda] [--engines torch,sequential-cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import (ENGINES, ShdLike, base_parser, get_engine, load_neuron, loglog_slope,  # noqa: E402
                          make_emitter, peak_memory, shd_weights, time_fn)

SEQUENTIAL = {"torch-sequential", "sequential-cpu", "triton-sequential"}


def layer_step(eng, ir, times, channels, W, chunk, backward):
    W = W.detach().requires_grad_(backward)
    kw = {} if chunk is None else {"chunk": chunk}
    with torch.set_grad_enabled(backward):
        res = eng.run_layer(ir, {}, times, channels, W, max_spikes=64, on_overflow="raise", **kw)
        if backward:
            t = res.times
            torch.where(torch.isfinite(t), t, torch.zeros_like(t)).sum().backward()
    return res


def main(argv=None):
    p = base_parser(__doc__, "scaling")
    p.add_argument("--engines", default=None, help=f"default: {','.join(ENGINES)}")
    p.add_argument("--modes", default="forward,forward+backward")
    p.add_argument("--dtype", default="f64", choices=["f32", "f64"])
    p.add_argument("--duration", type=float, default=None, help="override the base ms per sample")
    p.add_argument("--sweeps", default="rate,neurons,batch,chunk")
    args = p.parse_args(argv)
    em = make_emitter(args, "scaling")
    dtype = torch.float64 if args.dtype == "f64" else torch.float32
    engines = args.engines or ",".join(e for e in ENGINES
                                        if not (args.quick and e == "torch-sequential"))
    if args.quick:
        base = dict(batch=2, neurons=32, rate=12.0, duration=100.0, chunk=128)
        sweeps = {"rate": [3.0, 12.0, 48.0], "neurons": [16, 128], "batch": [1, 8],
                  "chunk": [32, 128, 512]}
        repeats, max_s = args.repeats or 3, 4.0
    else:
        base = dict(batch=8, neurons=256, rate=12.0, duration=1000.0, chunk=128)
        sweeps = {"rate": [3.0, 6.0, 12.0, 24.0, 48.0], "neurons": [32, 64, 128, 256, 512, 1024],
                  "batch": [1, 2, 4, 8, 16, 32], "chunk": [16, 32, 64, 128, 256, 512, 1024]}
        repeats, max_s = args.repeats or 3, 30.0
    if args.duration:
        base["duration"] = args.duration
    sweeps = {k: v for k, v in sweeps.items() if k in args.sweeps.split(",")}
    modes = [m for m in args.modes.split(",") if m]
    try:
        ir = load_neuron("cuba_lif.snn", "CubaLIF")
    except Exception as e:  # noqa: BLE001
        em.skip(f"cannot load models/cuba_lif.snn: {type(e).__name__}: {e}", what="all")
        return

    for name in [e for e in engines.split(",") if e]:
        eng, why = get_engine(name, args.device)
        if eng is None:
            em.skip(why, what="engine", engine=name)
            continue
        failed: set[str] = set()  # modes this engine cannot do (reported once)
        for sweep, values in sweeps.items():
            if sweep == "chunk" and name in SEQUENTIAL:
                continue
            series: dict[str, list] = {m: [] for m in modes}
            for v in values:
                pt = dict(base, **{sweep: v})
                wl = ShdLike(batch=pt["batch"], rate_hz=pt["rate"], duration_ms=pt["duration"],
                             seed=args.seed)
                times, chans = wl.events(dtype=dtype, device=args.device)
                # keep the mean drive (rate x mean weight) and its shot-noise variance (rate x w^2)
                # as at 12 Hz, so the hidden firing rate stays about the same
                g = 12.0 / pt["rate"]
                W = shd_weights(wl.n_inputs, pt["neurons"], mean=0.02 * g, std=0.05 * g ** 0.5,
                                dtype=dtype, device=args.device)
                chunk = None if name in SEQUENTIAL else pt["chunk"]
                ev = float(torch.isfinite(times).sum()) / pt["batch"]
                sizes = dict(batch=pt["batch"], neurons=pt["neurons"], inputs=wl.n_inputs,
                             input_rate_hz=pt["rate"], events_per_sample=ev,
                             duration_ms=pt["duration"], chunk=chunk, dtype=args.dtype)
                for mode in [m for m in modes if m not in failed]:
                    bw = mode != "forward"
                    fn = lambda: layer_step(eng, ir, times, chans, W, chunk, bw)  # noqa: E731
                    try:
                        res = fn()  # warm-up, and the spike count for the record
                        tm = time_fn(fn, args.device, repeats=repeats, warmup=0, max_seconds=max_s)
                        mem = peak_memory(fn, args.device)
                    except Exception as e:  # noqa: BLE001
                        em.skip(f"{type(e).__name__}: {e}", what=mode, engine=name, sweep=sweep,
                                **sizes)
                        if isinstance(e, NotImplementedError):
                            failed.add(mode)
                        continue
                    rate = float(res.counts.double().mean()) / (pt["duration"] / 1000.0)
                    x = {"rate": ev, "neurons": v, "batch": v, "chunk": v}[sweep]
                    series[mode].append((x, tm["median_s"], mem["peak_bytes"]))
                    em.emit(kind="point", engine=name, sweep=sweep, mode=mode, x=x, **sizes, **tm,
                            peak_bytes=mem["peak_bytes"], hidden_rate_hz=rate)
            for mode, pts in series.items():
                if len(pts) >= 2:
                    xs = [q[0] for q in pts]
                    em.emit(kind="fit", engine=name, sweep=sweep, mode=mode, points=len(pts),
                            x_name="events_per_sample" if sweep == "rate" else sweep,
                            time_exponent=loglog_slope(xs, [q[1] for q in pts]),
                            memory_exponent=loglog_slope(xs, [q[2] for q in pts]),
                            base=base, dtype=args.dtype)


if __name__ == "__main__":
    main()
