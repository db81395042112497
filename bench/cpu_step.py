"""The exact training step on the CPU at the issue's full size, against its own floor, in one run:

- the SHD-like step (batch 32; 700 Poisson inputs at 12 Hz over 1 s, ~8,400 events per sample;
  700 -> 256 CubaLIF (tau_m 20 ms, tau_s 5 ms) -> 20 LI readouts; cross-entropy of the max
  potential; f64) on `sequential-cpu`: hidden forward, network forward, forward+backward;
- with the event-outer adjoint (runtime/engines/adjoint_events.py) and with the per-neuron one
  it replaced (sequential_cpu.USE_EVENT_ADJOINT = False), gradients compared;
- on 1 and on 2 engine threads (runtime/engines/parallel.py; torch keeps 1 intra-op thread);
- the readout layer alone (20 LI, max potential, on the hidden layer's spikes; and 20 spiking
  CubaLIF outputs, the max potential a first-spike loss reads), forward and
  forward+backward, compiled (runtime/engines/readout_cpu.py, generated MLIR) and replayed
  (runtime/engines/observe_replay.py, torch ops; readout_cpu.USE_COMPILED_READOUT = False), values
  and gradients compared;
- the floor: a plain C loop doing the same exact forward state updates with the shared
  propagator (no root solves), compiled here with the system compiler (`cc -O3`).

One JSON line per measurement (median wall time of --repeats after a warm-up; process CPU time
too), then ratio lines. `--quick` (batch 2, 32 hidden, 100 ms) is a smoke test only.

    python bench/cpu_step.py [--quick] [--batch 32] [--hidden 256] [--repeats 5]
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ShdLike, base_parser, make_emitter, spikes_to_events  # noqa: E402
from bench.shd_step import make_problem  # noqa: E402

C_LOOP = r"""
#include <math.h>
#include <stdint.h>
/* CubaLIF, shared tau_m != tau_s: per event one exp pair, then every neuron: exact propagation
   over the gap, the input jump, a threshold test at the event (no root solve), hard reset. */
int64_t cuba_forward(const double *t, const int64_t *ch, const int64_t *nvalid, int64_t B, int64_t n,
                     const double *W, int64_t N, double tau_m, double tau_s, double *v, double *i) {
    int64_t spikes = 0;
    double k = tau_s / (tau_s - tau_m);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t j = 0; j < N; j++) { v[j] = 0.0; i[j] = 0.0; }
        double tp = 0.0;
        for (int64_t e = 0; e < nvalid[b]; e++) {
            double D = t[b * n + e] - tp;
            tp = t[b * n + e];
            double em = exp(-D / tau_m), es = exp(-D / tau_s), kd = k * (es - em);
            const double *w = W + ch[b * n + e] * N;
            for (int64_t j = 0; j < N; j++) {
                double vn = em * v[j] + kd * i[j];
                double in = es * i[j] + w[j];
                int s = vn >= 1.0;
                spikes += s;
                v[j] = s ? 0.0 : vn;
                i[j] = in;
            }
        }
    }
    return spikes;
}
"""


def build_c_loop():
    """The C floor as a ctypes function, or (None, reason)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler found (set CC)"
    d = Path(tempfile.mkdtemp(prefix="spikescan-bench-"))
    (d / "loop.c").write_text(C_LOOP)
    so = d / "loop.so"
    r = subprocess.run([cc, "-O3", "-march=native", "-shared", "-fPIC", str(d / "loop.c"), "-o", str(so), "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"cc failed: {r.stderr.strip()[:200]}"
    f = ctypes.CDLL(str(so)).cuba_forward
    f.restype = ctypes.c_int64
    # without argtypes ctypes passes Python ints as 32-bit C ints: garbage in the upper halves
    # of the int64_t arguments (seen to segfault)
    P, I, Dd = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    f.argtypes = [P, P, P, I, I, P, I, Dd, Dd, P, P]
    return f, None


def time_it(fn, repeats: int) -> tuple[float, float, list]:
    """(median wall s, min CPU s, all wall) after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(wall), min(cpu), wall


def time_readout(em, eng, pb, hid, repeats: int, sizes: dict, spiking: bool = False) -> dict:
    """The readout layer alone on the hidden layer's spikes: compiled vs replayed, same run.
    spiking=False: the 20 LI readouts; True: 20 CubaLIF outputs (weights 3 W2 + 0.1: a few spikes
    each), the max potential a first-spike loss reads (observe_vmax), the spikes as resets."""
    from spikescan.runtime.engines import parallel, readout_cpu

    t2, c2 = spikes_to_events(hid.times)
    neuron, W2base = (pb.cuba, pb.W2 * 3.0 + 0.1) if spiking else (pb.li, pb.W2)
    label = "CubaLIF outputs (first-spike vmax)" if spiking else "LI"

    def readout(backward: bool):
        tt = t2.detach().requires_grad_(backward)
        W2 = W2base.detach().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            out = eng.run_layer(neuron, {}, tt, c2, W2, max_spikes=64, on_overflow="raise",
                                observe="max_potential", t_end=pb.t_end)
            if backward:
                torch.nn.functional.cross_entropy(out.observed, pb.labels).backward()
        return out.observed.detach(), tt.grad, W2.grad

    res, vals = {}, {}
    for mode, threads in (("compiled", 1), ("compiled", 2), ("replay", 1)):
        readout_cpu.USE_COMPILED_READOUT = mode == "compiled"
        parallel.set_threads(threads)
        try:
            for name, fn in (("readout-forward", lambda: readout(False)),
                             ("readout-forward+backward", lambda: readout(True))):
                wall, cpu, allw = time_it(fn, repeats)
                res[(mode, threads, name)] = wall
                em.emit(kind="timing", engine="sequential-cpu, readout layer", readout_impl=mode, engine_threads=threads,
                        readout_neuron=label, stage=name, ms_wall=wall * 1e3, ms_cpu=cpu * 1e3, all_wall_s=allw,
                        readout_events_per_sample=float(torch.isfinite(t2).sum()) / t2.shape[0], **sizes)
            vals[mode] = readout(True)
        finally:
            readout_cpu.USE_COMPILED_READOUT = True
    rel = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
              for a, b in zip(vals["compiled"], vals["replay"]) if b is not None)
    for name in ("readout-forward", "readout-forward+backward"):
        em.emit(kind="ratio", what=f"readout replay / compiled, {label}, {name}, 1 thread",
                ratio=res[("replay", 1, name)] / res[("compiled", 1, name)], max_rel_grad_difference=rel, **sizes)
    return res


def main(argv=None):
    p = base_parser(__doc__, "cpu_step")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--duration", type=float, default=None, help="ms of input per sample")
    args = p.parse_args(argv)
    em = make_emitter(args, "cpu_step")
    torch.set_num_threads(1)
    from spikescan.runtime.engines import get_engine, parallel, sequential_cpu

    batch = args.batch or (2 if args.quick else 32)
    hidden = args.hidden or (32 if args.quick else 256)
    duration = args.duration or (100.0 if args.quick else 1000.0)
    repeats = args.repeats or (2 if args.quick else 5)
    wl = ShdLike(batch=batch, duration_ms=duration, seed=args.seed)
    pb = make_problem(wl, hidden=hidden)
    eng = get_engine("sequential-cpu")
    nev = int(torch.isfinite(pb.times).sum())
    sizes = dict(batch=batch, inputs=wl.n_inputs, hidden=hidden, readout=pb.readout, duration_ms=duration,
                 events_per_sample=nev / batch, dtype="f64")

    def hidden_fwd():
        return eng.run_layer(pb.cuba, {}, pb.times, pb.channels, pb.W1, max_spikes=64, on_overflow="raise")

    def network(backward: bool):
        W1 = pb.W1.detach().requires_grad_(backward)
        W2 = pb.W2.detach().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            hid = eng.run_layer(pb.cuba, {}, pb.times, pb.channels, W1, max_spikes=64, on_overflow="raise")
            t2, c2 = spikes_to_events(hid.times)
            out = eng.run_layer(pb.li, {}, t2, c2, W2, max_spikes=64, on_overflow="raise",
                                observe="max_potential", t_end=pb.t_end)
            loss = torch.nn.functional.cross_entropy(out.observed, pb.labels)
            if backward:
                loss.backward()
        return hid, (W1.grad, W2.grad)

    hid = hidden_fwd()
    rate = float(hid.counts.double().mean()) / (duration / 1000.0)
    results = {}
    grads = {}
    for adjoint in ("event-outer", "per-neuron"):
        sequential_cpu.USE_EVENT_ADJOINT = adjoint == "event-outer"
        for threads in (1, 2):
            parallel.set_threads(threads)
            passes = {"hidden-forward": hidden_fwd, "forward": lambda: network(False),
                      "forward+backward": lambda: network(True)}
            for name, fn in passes.items():
                if adjoint == "per-neuron" and name != "forward+backward":
                    continue
                wall, cpu, allw = time_it(fn, repeats)
                results[(adjoint, threads, name)] = wall
                em.emit(kind="timing", engine="sequential-cpu", adjoint=adjoint, readout_impl="compiled",
                        engine_threads=threads, stage=name,
                        ms_wall=wall * 1e3, ms_cpu=cpu * 1e3, all_wall_s=allw, hidden_rate_hz=rate, **sizes)
            grads[adjoint] = network(True)[1]
    sequential_cpu.USE_EVENT_ADJOINT = True
    time_readout(em, eng, pb, hid, repeats, sizes)
    time_readout(em, eng, pb, hid, repeats, sizes, spiking=True)
    parallel.set_threads(None)
    rel = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads["event-outer"], grads["per-neuron"]))

    f, why = build_c_loop()
    if f is None:
        em.skip(why, what="C floor", **sizes)
        c_wall = None
    else:
        order = torch.argsort(pb.times, 1)
        ts = torch.gather(pb.times, 1, order).contiguous()
        cs = torch.gather(pb.channels, 1, order).contiguous()
        nvalid = torch.isfinite(ts).sum(1).to(torch.int64).contiguous()
        W = pb.W1.detach().contiguous()
        v = torch.empty(hidden, dtype=torch.float64)
        i = torch.empty(hidden, dtype=torch.float64)
        ptr = lambda x: ctypes.c_void_p(x.data_ptr())  # noqa: E731
        call = lambda: f(ptr(ts), ptr(cs), ptr(nvalid), batch, ts.shape[1], ptr(W), hidden,  # noqa: E731
                         ctypes.c_double(20.0), ctypes.c_double(5.0), ptr(v), ptr(i))
        c_wall, c_cpu, allw = time_it(call, repeats)
        em.emit(kind="timing", engine="C loop (floor: exact updates, no solves)", engine_threads=1,
                stage="hidden-forward", ms_wall=c_wall * 1e3, ms_cpu=c_cpu * 1e3, all_wall_s=allw, **sizes)

    ev = results
    em.emit(kind="ratio", what="per-neuron / event-outer adjoint, forward+backward, 1 thread",
            ratio=ev[("per-neuron", 1, "forward+backward")] / ev[("event-outer", 1, "forward+backward")],
            max_rel_grad_difference=rel, **sizes)
    for name in ("hidden-forward", "forward", "forward+backward"):
        em.emit(kind="ratio", what=f"1 / 2 engine threads, {name}",
                ratio=ev[("event-outer", 1, name)] / ev[("event-outer", 2, name)], **sizes)
    if c_wall:
        em.emit(kind="ratio", what="hidden forward / C floor, 1 thread",
                ratio=ev[("event-outer", 1, "hidden-forward")] / c_wall, **sizes)


if __name__ == "__main__":
    main()
