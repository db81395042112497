"""Recurrent layer (models/shd.snn's hidden layer: 700 inputs -> N recurrent CubaLIF, tau_m 20 ms,
tau_s 5 ms): the JIT-compiled loop (runtime/engines/recurrent_cpu.py), per-neuron scalar loop
(impl="scalar", mlir/recurrent.py) and vectorised loop (impl="vector", mlir/recurrent_vec.py),
against the PyTorch loop (runtime/engines/recurrent.py), forward and forward + backward, in the
same run. ns_per_neuron_step = seconds / (loop steps x N), loop steps = spike rows + deliveries.

Workload (default, the case measured when recurrent.py landed): batch 2, 300 input events per
sample uniform over 1 s on 700 channels, N = 256, input weights normal(0, 0.1) x 30, recurrent
weights normal(0, 0.05) x 5 (about 5,000 hidden spikes per sample, mostly driven by the
recurrence), t_end = 1000 ms, float64, one thread. loss = sum of all hidden spike times.
--quick: batch 1, 150 events, N = 96 (the PyTorch loop is the slow part).

    python -m bench.recurrent [--quick] [--no-reference]
"""

from __future__ import annotations

import math
import time

import torch

from bench.common import base_parser, load_neuron, make_emitter

F64 = torch.float64


def workload(batch: int, n_events: int, hidden: int, seed: int, w_gain: float = 30.0, rec_gain: float = 5.0):
    g = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(batch, n_events, generator=g, dtype=F64) * 1000.0, 1).values
    ch = torch.randint(0, 700, (batch, n_events), generator=g)
    W = torch.randn(700, hidden, generator=g, dtype=F64) * 0.1 * w_gain
    Wr = torch.randn(hidden, hidden, generator=g, dtype=F64) * 0.05 * rec_gain
    return times, ch, W, Wr


def run(fn, ir, times, ch, W, Wr, backward: bool, **kw):
    P = {"tau_m": 20.0, "tau_s": 5.0}
    if not backward:
        with torch.no_grad():
            return fn(ir, P, times, ch, W, Wr, t_end=1000.0, max_spikes=512, on_overflow="flag", **kw), None
    leaf = [v.clone().requires_grad_() for v in (times, W, Wr)]
    r = fn(ir, P, leaf[0], ch, leaf[1], leaf[2], t_end=1000.0, max_spikes=512, on_overflow="flag", **kw)
    torch.where(torch.isfinite(r.times), r.times, torch.zeros_like(r.times)).sum().backward()
    return r, [v.grad for v in leaf]


def _steps(ir, times, ch, W, Wr) -> int:
    """Steps of the event loop (spike steps + delivery steps), from the compiled loop's stats."""
    from spikescan.compiler.backends.mlir.cpu_recurrent import compile_recurrent
    from spikescan.runtime.engines.recurrent_cpu import run_recurrent_layer

    box = {}
    eng = compile_recurrent(ir, "f64")
    orig = type(eng).forward_vec

    def spy(self, *a):
        orig(self, *a)
        box["stats"] = a[-1].clone()

    type(eng).forward_vec = spy
    try:
        with torch.no_grad():
            run_recurrent_layer(ir, {"tau_m": 20.0, "tau_s": 5.0}, times, ch, W, Wr, t_end=1000.0, max_spikes=512,
                                on_overflow="flag", impl="vector")
    finally:
        type(eng).forward_vec = orig
    return int(box["stats"][:, 0].sum())  # tape rows = spiking lanes + deliveries


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0], "recurrent")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) PyTorch loop")
    args = p.parse_args(argv)
    em = make_emitter(args, "recurrent")
    from spikescan.runtime.engines.recurrent import run_recurrent_layer as run_ref
    from spikescan.runtime.engines.recurrent_cpu import run_recurrent_layer as run_cpu
    from spikescan.compiler.backends.mlir.cpu_recurrent import compile_recurrent

    B, n, N = (1, 150, 96) if args.quick else (2, 300, 256)
    repeats = args.repeats or (2 if args.quick else 3)
    ir = load_neuron("cuba_lif.snn", "CubaLIF")
    times, ch, W, Wr = workload(B, n, N, args.seed)
    sizes = dict(batch=B, events_per_sample=n, inputs=700, hidden=N, t_end_ms=1000.0, dtype="float64",
                 neuron="CubaLIF(tau_m=20, tau_s=5)", w_gain=30.0, rec_gain=5.0)
    t0 = time.perf_counter()
    eng = compile_recurrent(ir, "f64")
    run(run_cpu, ir, times, ch, W, Wr, backward=True)  # also JIT-compiles the backward
    compile_s = time.perf_counter() - t0

    res = {}
    allres = {}
    for mode in ("forward", "forward+backward"):
        bw = mode != "forward"
        for impl in ("scalar", "vector"):  # the per-neuron loop (old) and mlir_recurrent_vec (new)
            walls = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                out, grads = run(run_cpu, ir, times, ch, W, Wr, bw, impl=impl)
                out.times = out.times.detach()
                walls.append(time.perf_counter() - t0)
            spikes = int(out.counts.sum())
            allres[mode, impl] = (min(walls), out, grads)
            steps = int(_steps(ir, times, ch, W, Wr))
            rec = dict(engine="recurrent-cpu", impl=impl, mode=mode, seconds=min(walls), all_s=walls,
                       hidden_spikes=spikes, overflow=bool(out.overflow.any()), loop_steps=steps,
                       ns_per_neuron_step=min(walls) / (steps * N) * 1e9, **sizes)
            if impl == "vector":
                old_s, old, ograds = allres[mode, "scalar"]
                rec["speedup_vs_scalar"] = old_s / min(walls)
                rec["bit_identical_to_scalar"] = bool(torch.equal(old.counts, out.counts)
                                                      and torch.equal(old.times, out.times))
                if bw:  # the vector loop's backward is the event-outer adjoint (adjoint_events_rec.py)
                    rec["grads_identical_to_scalar"] = all(torch.equal(a, b) for a, b in zip(ograds, grads))
                    rec["grads_max_rel_diff_vs_scalar"] = max(
                        ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item() for a, b in zip(ograds, grads))
            if mode == "forward" and impl == "scalar":
                rec["compile_s"] = compile_s
                rec["compile_forward_s"] = eng.t_compile
            em.emit(**rec)
        res[mode] = allres[mode, "vector"]
    if args.no_reference:
        return
    for mode in ("forward", "forward+backward"):
        bw = mode != "forward"
        t0 = time.perf_counter()
        out, grads = run(run_ref, ir, times, ch, W, Wr, bw)
        out.times = out.times.detach()
        wall = time.perf_counter() - t0
        mine_s, mine, mgrads = res[mode]
        same = torch.equal(out.counts, mine.counts)
        fin = torch.isfinite(out.times)
        S = out.times.shape[2]
        dt = float((torch.where(fin, out.times - mine.times[:, :, :S], torch.zeros_like(out.times))).abs().max()) \
            if same and S == mine.times.shape[2] else math.nan
        rec = dict(engine="recurrent (PyTorch)", mode=mode, seconds=wall, hidden_spikes=int(out.counts.sum()),
                   speedup_compiled=wall / mine_s, same_counts=same, max_time_diff_ms=dt, **sizes)
        if bw and grads is not None and same:
            rel = [float((a - b).abs().max() / a.abs().max().clamp_min(1e-300)) for a, b in zip(grads, mgrads)]
            rec["grad_rel_diff"] = dict(zip(("times", "weight", "w_rec"), rel))
        em.emit(**rec)


if __name__ == "__main__":
    main()
