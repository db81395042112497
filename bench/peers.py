"""spikescan against the discrete-time frameworks on the SHD-like training step, in one run.

Workload (the default, full size): batch 32; 700 Poisson inputs at 12 Hz over 1 s (~8,400
events per sample); 700 -> 256 CubaLIF (tau_m 20 ms, tau_s 5 ms, threshold 1, reset 0) -> 20 LI
readouts; loss = cross-entropy of the readouts' max potential; one step = forward + backward (no
optimiser update). spikescan runs exact, in float64 and float32 (`--spikescan-dtypes`), through
bench/shd_step.py. On the same batch and weights, each in its own subprocess
(bench/peer_compare.py, bench/peer_runner.py, the networks in bench/peer_models.py):
snnTorch, Norse and SpikingJelly at dt = 1 ms (float32 as they normally run, and float64), and a
hand-written PyTorch loop at dt = 1 ms; plus the C floor (bench/cpu_step.py's loop: the exact
hidden-layer updates without root solves). 1 torch thread unless --threads says otherwise.

Records: one per framework x dtype x pass (kind "timing": median of --repeats after a warm-up,
peak memory, hidden firing rate, sizes, threads, machine), each with `spikescan_over_peer`
{counterpart: spikescan time / peer time, same pass, same run} and the hidden rates of every
framework in the run; flat kind "ratio" records; "skipped" records (reason) for whatever could
not run, e.g. a peer that is not installed for --peer-python. `--quick` (batch 2, 32 hidden,
100 ms) is a smoke test: its times are per-call overhead, never a result.

    python bench/peers.py --peer-python /work/peers-venv/bin/python       # full size
    python bench/peers.py --quick                                          # CI smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import peer_compare  # noqa: E402
from bench.common import ShdLike, base_parser, get_engine, make_emitter, peak_memory, time_fn  # noqa: E402


def engine_threads() -> int | None:
    try:
        from spikescan.runtime.engines import parallel

        return parallel.threads()
    except Exception:  # noqa: BLE001
        return None


def measure_spikescan(args, wl, hidden, repeats, max_s) -> list[dict]:
    """Timing/skipped records of every --spikescan-engines x --spikescan-dtypes."""
    from bench.shd_step import hidden_rate_hz, make_problem, readout_engine_for, step

    out = []
    for dname in [d for d in args.spikescan_dtypes.split(",") if d]:
        dtype = torch.float64 if dname == "f64" else torch.float32
        try:
            pb = make_problem(wl, hidden=hidden, dtype=dtype, device=args.device)
        except Exception as e:  # noqa: BLE001
            out.append(dict(skipped="spikescan", framework=f"spikescan:{dname}", dtype=dname,
                            reason=f"spikescan problem: {type(e).__name__}: {e}"))
            continue
        for ename in [e for e in args.spikescan_engines.split(",") if e]:
            label = f"spikescan:{ename}:{dname}"
            eng, why = get_engine(ename, args.device)
            if eng is None:
                out.append(dict(skipped="spikescan", framework=label, dtype=dname, reason=why))
                continue
            try:
                ro_eng, ro_name = readout_engine_for(eng, pb)
                _, hid = step(eng, pb, readout_eng=ro_eng)
            except Exception as e:  # noqa: BLE001
                out.append(dict(skipped="spikescan", framework=label, dtype=dname,
                                reason=f"{type(e).__name__}: {e}"))
                continue
            tag = dict(framework=label, label=label, dtype=dname, engine=ename, exact=True, version="spikescan",
                       hidden_rate_hz=hidden_rate_hz(hid, wl.duration_ms), hidden_spikes=int(hid.counts.sum()),
                       readout_engine=ro_name or ename, engine_threads=engine_threads())
            passes = (("hidden-forward", lambda: eng.run_layer(pb.cuba, {}, pb.times, pb.channels, pb.W1,
                                                                max_spikes=64, on_overflow="raise")),
                      ("forward", lambda: step(eng, pb, readout_eng=ro_eng)),
                      ("forward+backward", lambda: step(eng, pb, backward=True, readout_eng=ro_eng)))
            for mode, fn in passes:
                try:
                    # one warm-up always: the first call JIT-compiles (sequential-cpu)
                    tm = time_fn(fn, args.device, repeats=repeats, warmup=1, max_seconds=max_s)
                    mem = peak_memory(fn, args.device)
                except Exception as e:  # noqa: BLE001
                    out.append(dict(skipped=mode, framework=label, dtype=dname, reason=f"{type(e).__name__}: {e}"))
                    continue
                out.append(dict(kind="timing", mode=mode, **tag, **tm, peak_bytes=mem["peak_bytes"], memory=mem))
    return out


def main(argv=None):
    p = base_parser(__doc__, "peers")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--duration", type=float, default=None, help="ms of input per sample")
    p.add_argument("--spikescan-engines", default=None,
                   help="default: sequential-cpu on the CPU, torch,triton-scan on CUDA")
    p.add_argument("--spikescan-dtypes", default="f64,f32")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop repeating a measurement after this much time")
    peer_compare.add_arguments(p)
    args = p.parse_args(argv)
    em = make_emitter(args, "peers")
    if args.spikescan_engines is None:
        args.spikescan_engines = "torch,triton-scan" if args.device.startswith("cuda") else "sequential-cpu"
    q = args.quick
    batch, hidden, duration = args.batch or (2 if q else 32), args.hidden or (32 if q else 256), \
        args.duration or (100.0 if q else 1000.0)
    repeats, max_s = args.repeats or (3 if q else 5), args.max_seconds or (5.0 if q else 60.0)
    wl = ShdLike(batch=batch, duration_ms=duration, seed=args.seed)
    t, _ = wl.events()
    sizes = dict(batch=batch, inputs=wl.n_inputs, hidden=hidden, readout=20, duration_ms=duration,
                 events_per_sample=float(torch.isfinite(t).sum()) / batch, tau_m_ms=peer_compare.TAU_M,
                 tau_s_ms=peer_compare.TAU_S, rate_hz_inputs=wl.rate_hz)

    out = peer_compare.Buffer(em)
    peer_compare.flush_on_sigterm()
    try:
        out.records += measure_spikescan(args, wl, hidden, repeats, max_s)
        run_others(args, out, wl, hidden, repeats, max_s, 300.0 if q else 1800.0)
    finally:  # whatever was measured is written, with the ratios it has
        out.flush(sizes)


def run_others(args, out, wl, hidden, repeats, max_s, timeout) -> None:
    """The C floor and the discrete-time frameworks on the batch of `wl`, into `out`."""
    from bench.shd_step import make_problem

    pb = make_problem(wl, hidden=hidden, dtype=torch.float64)  # the batch spikescan saw, in f64
    if not args.no_c_floor and not args.device.startswith("cuda"):
        out.records.append(peer_compare.c_floor(pb, repeats))
    out.records += peer_compare.run_discrete(
        peer_compare.problem_dict(pb), args.peers.split(","), peer_compare.peer_dtypes(args),
        python=peer_compare.peer_python(args.peer_python), threads=args.threads, repeats=repeats,
        max_seconds=max_s, device=args.device, timeout=args.peer_timeout or timeout)


if __name__ == "__main__":
    main()
