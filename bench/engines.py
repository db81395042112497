"""Engine benchmark on the SHD-like workload (DESIGN.md section 9).

Workload: batch B (32), 700 Poisson inputs at 12 Hz over 1 s (~8,400 events per sample),
H (256) hidden CubaLIF (tau_m 20 ms, tau_s 5 ms), 20 leaky-integrator readouts, f64 by default.
For each engine: hidden-layer-only forward and forward+backward time (the engine alone; backward
of the sum of hidden spike times), network forward time and forward+backward time (median of
repeats; sequential-cpu delegates the readout layer to torch-sequential, as the records say) at
chunk sizes
32, 128, 512 (sequential engines have no chunk: measured once), peak memory of forward+backward,
measured hidden firing rate, agreement of hidden spike counts with the first engine run, and the
speed ratio scan / sequential measured in the same run.

    python bench/engines.py [--quick] [--device cuda] [--batch 128 --hidden 512] [--dtype f32]
                            [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ENGINES, ShdLike, base_parser, get_engine, make_emitter, peak_memory, time_fn  # noqa: E402
from bench.shd_step import SILENT, hidden_rate_hz, make_problem, readout_engine_for, step  # noqa: E402

SEQUENTIAL = {"torch-sequential", "sequential-cpu", "triton-sequential"}
MODES = ("hidden-forward", "hidden-forward+backward", "forward", "forward+backward")


def main(argv=None):
    p = base_parser(__doc__, "engines")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--duration", type=float, default=None, help="ms of input per sample")
    p.add_argument("--chunks", default="32,128,512")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--dtype", default="f64", choices=["f32", "f64"])
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop repeating a measurement after this much time")
    args = p.parse_args(argv)
    em = make_emitter(args, "engines")
    dtype = torch.float64 if args.dtype == "f64" else torch.float32
    if args.quick:  # ~840 events per sample, 2 samples, 32 hidden
        batch, duration, hidden, repeats, max_s = args.batch or 2, args.duration or 100.0, \
            (args.hidden if args.hidden != 256 else 32), args.repeats or 3, args.max_seconds or 5.0
    else:
        batch, duration, hidden, repeats, max_s = args.batch or 32, args.duration or 1000.0, \
            args.hidden, args.repeats or 5, args.max_seconds or 60.0
    wl = ShdLike(batch=batch, duration_ms=duration, seed=args.seed)
    pb = make_problem(wl, hidden=hidden, dtype=dtype, device=args.device)
    n_events = int(torch.isfinite(pb.times).sum()) / batch
    sizes = dict(batch=batch, inputs=wl.n_inputs, hidden=hidden, readout=pb.readout,
                 events_per_sample=n_events, duration_ms=duration, dtype=args.dtype)
    chunks = [int(c) for c in args.chunks.split(",") if c]

    ref_counts = None
    results = {}  # (engine, chunk, mode) -> median seconds
    for name in [e for e in args.engines.split(",") if e]:
        eng, why = get_engine(name, args.device)
        if eng is None:
            em.skip(why, what="engine", engine=name, **sizes)
            continue
        try:
            ro_eng, ro_name = readout_engine_for(eng, pb)
        except Exception as e:  # noqa: BLE001
            em.skip(f"{type(e).__name__}: {e}", what="engine", engine=name, **sizes)
            continue
        for chunk in ([None] if name in SEQUENTIAL else chunks):
            kw = {"readout_eng": ro_eng}
            if chunk is not None:
                kw["chunk"] = chunk
            try:
                _, hid = step(eng, pb, backward=False, **kw)
            except Exception as e:  # noqa: BLE001
                em.skip(f"{type(e).__name__}: {e}", what="engine", engine=name, chunk=chunk, **sizes)
                continue
            counts = hid.counts.cpu()
            agree = None
            if ref_counts is None:
                ref_counts = counts
            else:
                agree = int((counts != ref_counts).sum())
            rate = hidden_rate_hz(hid, duration)

            def hidden_only(backward=False):
                # the hidden layer alone (no readout, so no delegated readout engine); backward:
                # gradient of the sum of its spike times w.r.t. W1
                W1 = pb.W1.detach().requires_grad_(backward)
                with torch.set_grad_enabled(backward):
                    res = eng.run_layer(pb.cuba, {}, pb.times, pb.channels, W1, max_spikes=64,
                                        **({} if chunk is None else {"chunk": chunk}))
                    if backward:
                        t = res.times
                        loss = torch.where(torch.isfinite(t), t, torch.zeros_like(t)).sum()
                        if not loss.requires_grad:
                            raise RuntimeError(SILENT)
                        loss.backward()
                return res

            for mode, hid_only, bw in (("hidden-forward", True, False),
                                       ("hidden-forward+backward", True, True),
                                       ("forward", False, False), ("forward+backward", False, True)):
                if hid_only:
                    fn = (lambda bw=bw: hidden_only(bw))
                else:
                    fn = (lambda bw=bw: step(eng, pb, backward=bw, **kw))
                try:
                    tm = time_fn(fn, args.device,
                                 repeats=repeats, warmup=1,
                                 max_seconds=max_s)
                    mem = peak_memory(fn, args.device)
                except Exception as e:  # noqa: BLE001
                    em.skip(f"{type(e).__name__}: {e}", what=mode, engine=name, chunk=chunk,
                            **sizes)
                    continue
                results[(name, chunk, mode)] = tm["median_s"]
                em.emit(kind="timing", engine=name, chunk=chunk, mode=mode, **sizes, **tm,
                        peak_bytes=mem["peak_bytes"], memory=mem, hidden_rate_hz=rate,
                        hidden_spikes=int(counts.sum()), count_mismatch_vs_first=agree,
                        readout_engine=ro_name or name)

    # scan / sequential speed ratios, same run, same sizes
    for mode in MODES:
        seqs = {k[0]: v for k, v in results.items() if k[0] in SEQUENTIAL and k[2] == mode}
        for (name, chunk, m), t in results.items():
            if m != mode or name in SEQUENTIAL:
                continue
            for sname, st in seqs.items():
                em.emit(kind="ratio", mode=mode, scan=name, chunk=chunk, sequential=sname,
                        scan_s=t, sequential_s=st, speedup=st / t, **sizes)


if __name__ == "__main__":
    main()
