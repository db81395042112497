"""Engine benchmark on the SHD-like workload, with the discrete-time frameworks in the same run.

Workload (the default, full size): batch 32; 700 Poisson inputs at 12 Hz over 1 s (~8,400 events
per sample); 700 -> 256 CubaLIF (tau_m 20 ms, tau_s 5 ms) -> 20 LI readouts; cross-entropy of the
max potential; f64 (`--dtype`). For each engine: hidden-layer-only forward and forward+backward
(the engine alone; backward of the sum of hidden spike times), network forward and
forward+backward (median of repeats; the record names the engine that ran the readout layer), at
each chunk size (sequential engines have no chunk: measured once), peak memory, hidden firing
rate, hidden spike counts against the first engine run, and the scan / sequential speed ratio.
In the same run and on the same batch (bench/peer_compare.py): snnTorch, Norse, SpikingJelly and
a plain PyTorch loop at dt = 1 ms (`--peers`, `--peer-dtypes`, `--peer-python`), and the C floor
(bench/cpu_step.py's loop). Every timing record carries `spikescan_over_peer` (spikescan time /
peer time, same pass) and the hidden rates of every framework in the run (the peers and the C floor
as kind "peer_timing", their flat ratios as kind "peer_ratio"); "skipped" records say
why something did not run (a peer not installed, a Triton engine on the CPU).

Defaults: engines sequential-cpu,torch and chunk 512 on the CPU (torch-sequential, the slow
reference, takes minutes per pass at this size: add it with --engines); torch, triton-scan,
triton-sequential and chunks 32,128,512 on CUDA. `--quick` (batch 2, 32 hidden, 100 ms) is a
smoke test: its times are per-call overhead, never a result.

    python bench/engines.py --peer-python /work/peers-venv/bin/python     # full size
    python bench/engines.py --quick                                        # CI smoke
    python bench/engines.py [--device cuda] [--batch 128 --hidden 512] [--dtype f32] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import peer_compare  # noqa: E402
from bench.common import ShdLike, base_parser, get_engine, make_emitter, peak_memory, time_fn  # noqa: E402
from bench.peers import engine_threads, run_others  # noqa: E402
from bench.shd_step import SILENT, hidden_rate_hz, make_problem, readout_engine_for, step  # noqa: E402

SEQUENTIAL = {"torch-sequential", "sequential-cpu", "triton-sequential"}
MODES = ("hidden-forward", "hidden-forward+backward", "forward", "forward+backward")


def main(argv=None):
    p = base_parser(__doc__, "engines")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--duration", type=float, default=None, help="ms of input per sample")
    p.add_argument("--chunks", default=None, help="default: 512 on the CPU, 32,128,512 on CUDA")
    p.add_argument("--engines", default=None,
                   help="default: sequential-cpu,torch on the CPU, torch,triton-scan,triton-sequential on CUDA")
    p.add_argument("--dtype", default="f64", choices=["f32", "f64"])
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop repeating a measurement after this much time")
    peer_compare.add_arguments(p)
    args = p.parse_args(argv)
    em = make_emitter(args, "engines")
    # kinds "timing" / "ratio": the engines and their scan / sequential speed-ups
    out = peer_compare.Buffer(em, flat_kind="peer_ratio", peer_kind="peer_timing")
    peer_compare.flush_on_sigterm()
    cuda = args.device.startswith("cuda")
    if args.engines is None:
        args.engines = "torch,triton-scan,triton-sequential" if cuda else "sequential-cpu,torch"
    if args.chunks is None:
        args.chunks = "32,128,512" if cuda else "512"
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

    try:
        ref_counts = None
        results = {}  # (engine, chunk, mode) -> median seconds
        for name in [e for e in args.engines.split(",") if e]:
            eng, why = get_engine(name, args.device)
            if eng is None:
                out.skip(why, what="engine", engine=name, **sizes)
                continue
            try:
                ro_eng, ro_name = readout_engine_for(eng, pb)
            except Exception as e:  # noqa: BLE001
                out.skip(f"{type(e).__name__}: {e}", what="engine", engine=name, **sizes)
                continue
            for chunk in ([None] if name in SEQUENTIAL else chunks):
                kw = {"readout_eng": ro_eng}
                if chunk is not None:
                    kw["chunk"] = chunk
                try:
                    _, hid = step(eng, pb, backward=False, **kw)
                except Exception as e:  # noqa: BLE001
                    out.skip(f"{type(e).__name__}: {e}", what="engine", engine=name, chunk=chunk, **sizes)
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
                        out.skip(f"{type(e).__name__}: {e}", what=mode, engine=name, chunk=chunk,
                                **sizes)
                        continue
                    results[(name, chunk, mode)] = tm["median_s"]
                    label = f"spikescan:{name}" + ("" if chunk is None else f":chunk{chunk}") + f":{args.dtype}"
                    out.emit(kind="timing", engine=name, chunk=chunk, mode=mode, **sizes, **tm, label=label,
                             framework=label, engine_threads=engine_threads(),
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
                    out.emit(kind="ratio", mode=mode, scan=name, chunk=chunk, sequential=sname,
                             scan_s=t, sequential_s=st, speedup=st / t, **sizes)

        if results:
            run_others(args, out, wl, hidden, repeats, max_s, 300.0 if args.quick else 1800.0)
        else:
            out.skip("no engine was timed: nothing to compare the peers with", what="peers", **sizes)
    finally:  # whatever was measured is written, with the ratios it has
        out.flush(sizes)


if __name__ == "__main__":
    main()
