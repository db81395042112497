"""The GPU check's measurements (run by bench/gpu_check.sh): for every differentiable engine on the
device, forward and backward of a CubaLIF layer against the CPU reference in f64 and f32, the
SHD-like training step time and peak memory; the result goes to the measurement file that
`engine="auto"` reads (runtime/engines/gpu_measured.py), then the Triton tile sizes are tuned
(runtime/engines/triton_tune.py). One JSON line per result.

    python bench/gpu_check.py --device cuda [--out FILE]
    TRITON_INTERPRET=1 python bench/gpu_check.py --device cpu --tiny   # CI: tiny sizes, CPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ShdLike, base_parser, make_emitter  # noqa: E402

GPU_ENGINES = ("torch", "torch-sequential", "triton-scan", "triton-sequential")
TOL = {torch.float64: dict(time_ms=1e-9, grad_rel=1e-7), torch.float32: dict(time_ms=2e-3, grad_rel=5e-2)}


def _cuba():
    from spikescan.compiler.driver import load_model

    return load_model(str(Path(__file__).resolve().parent.parent / "models" / "cuba_lif.snn")).neurons["CubaLIF"]


def _reference():
    from spikescan.runtime.engines import get_engine

    try:
        return "sequential-cpu", get_engine("sequential-cpu")
    except Exception:  # noqa: BLE001 - no MLIR JIT: the PyTorch engine on the CPU
        return "torch", get_engine("torch")


def _run(eng, ir, times, channels, weight, max_spikes=256):
    t = times.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    res = eng.run_layer(ir, {}, t, channels, w, max_spikes=max_spikes, chunk=16)
    fin = torch.isfinite(res.times)
    loss = torch.where(fin, res.times, torch.zeros((), dtype=res.times.dtype, device=res.times.device)).sum()
    gt, gw = torch.autograd.grad(loss, [t, w], allow_unused=True)
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    return res, (gt if gt is not None else zero.expand_as(t)), (gw if gw is not None else zero.expand_as(w))


def check_engine(engine: str, dtype, device, *, B=4, n=300, C=40, N=32, seed=0) -> dict:
    """`engine` on `device` in `dtype` against the CPU reference (f64, on the same inputs rounded to
    `dtype`): spike counts, max |t - t_ref| (ms), gradient error relative to the largest gradient."""
    from spikescan.runtime.engines import get_engine

    ir = _cuba()
    g = torch.Generator().manual_seed(seed)
    times = (torch.rand(B, n, generator=g, dtype=torch.float64) * 10.0 * n / max(C, 1)).to(dtype).double()
    channels = torch.randint(0, C, (B, n), generator=g)
    weight = (torch.randn(C, N, generator=g, dtype=torch.float64) * 0.6 + 0.3).to(dtype).double()
    ref_name, ref = _reference()
    r_res, r_gt, r_gw = _run(ref, ir, times, channels, weight)
    eng = get_engine(engine, device=str(device))
    res, gt, gw = _run(eng, ir, times.to(device, dtype), channels.to(device), weight.to(device, dtype))
    counts_equal = bool(torch.equal(res.counts.cpu(), r_res.counts))
    S = min(res.times.shape[2], r_res.times.shape[2])
    a, b = res.times[..., :S].detach().double().cpu(), r_res.times[..., :S].detach()
    fin = torch.isfinite(b) & torch.isfinite(a)
    t_err = float((a - b)[fin].abs().max()) if bool(fin.any()) else 0.0
    g_err = max(float((x.double().cpu() - y).abs().max()) / max(float(y.abs().max()), 1e-300)
                for x, y in ((gt, r_gt), (gw, r_gw)))
    tol = TOL[dtype]
    ok = counts_equal and t_err <= tol["time_ms"] * max(1.0, float(b[fin].abs().max()) if bool(fin.any()) else 1.0) \
        and g_err <= tol["grad_rel"] and int(r_res.counts.sum()) > 0
    return dict(engine=engine, dtype=str(dtype).replace("torch.", ""), reference=ref_name, counts_equal=counts_equal,
                spikes=int(r_res.counts.sum()), max_time_err_ms=t_err, max_grad_rel_err=g_err, ok=bool(ok))


def train_step(engine: str, device, *, batch: int, hidden: int, duration_ms: float, repeats: int) -> dict:
    """Median forward+backward time of the SHD-like training step (bench/shd_step.py) and peak memory."""
    from bench.shd_step import make_problem, readout_engine_for, step
    from spikescan.runtime.engines import get_engine

    dev = torch.device(device)
    pb = make_problem(ShdLike(batch=batch, duration_ms=duration_ms), hidden=hidden, device=str(dev))
    eng = get_engine(engine, device=str(dev))
    ro, _ = readout_engine_for(eng, pb)
    step(eng, pb, backward=True, readout_eng=ro)  # compile, warm up
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        step(eng, pb, backward=True, readout_eng=ro)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        samples.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    return dict(engine=engine, batch=batch, hidden=hidden, duration_ms=duration_ms,
                train_step_s=sorted(samples)[len(samples) // 2], peak_cuda_bytes=peak)


def main(argv=None):
    p = base_parser(__doc__, "gpu_check")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CI on a CPU under TRITON_INTERPRET=1)")
    p.add_argument("--engines", default=",".join(GPU_ENGINES))
    p.add_argument("--budget-s", type=float, default=240.0, help="skip the remaining steps after this many seconds")
    args = p.parse_args(argv)
    em = make_emitter(args, "gpu_check")
    from spikescan.runtime.engines import gpu_measured, gpu_training_measured, triton_tune

    dev = torch.device(args.device)
    gpu = gpu_measured.gpu_name(dev)
    engines = [e for e in args.engines.split(",") if e]
    if args.tiny:
        sizes = dict(B=1, n=40, C=6, N=4)
        step_kw = dict(batch=1, hidden=8, duration_ms=20.0, repeats=1)
        tune_cfg, tune_shape = (2, 4), (1, 5.0, 4)
    else:
        sizes = dict(B=4, n=300, C=40, N=32)
        step_kw = dict(batch=32, hidden=256, duration_ms=1000.0, repeats=args.repeats or 3)
        tune_cfg, tune_shape = triton_tune.CONFIGS, (32, 1000.0, 256)
    t_start = time.perf_counter()

    def over() -> bool:
        return time.perf_counter() - t_start > args.budget_s

    for engine in engines:
        checks = []
        interp = args.tiny and engine.startswith("triton")  # the interpreter: ~25 s per kernel check
        for dtype in (torch.float64,) if interp else (torch.float64, torch.float32):
            if over():
                em.skip("time budget spent", what=f"check {engine} {dtype}")
                continue
            try:
                checks.append(check_engine(engine, dtype, dev, **sizes))
                em.emit(step="check", gpu=gpu, **checks[-1])
            except Exception as e:  # noqa: BLE001 - one failing engine must not hide the others
                checks.append(dict(ok=False))
                em.emit(step="check", gpu=gpu, engine=engine, dtype=str(dtype).replace("torch.", ""), ok=False,
                        error=repr(e)[:500])
        timing = None
        if interp:  # a training step under the interpreter times Python, not the kernels
            em.skip("not timed under TRITON_INTERPRET (--tiny)", what=f"train_step {engine}")
        elif not over():
            try:
                timing = train_step(engine, dev, **step_kw)
                em.emit(step="train_step", gpu=gpu, **timing)
            except Exception as e:  # noqa: BLE001
                em.emit(step="train_step", gpu=gpu, engine=engine, error=repr(e)[:500])
        ok = len(checks) == (1 if interp else 2) and all(c.get("ok") for c in checks) and (timing is not None or interp)
        gpu_measured.record(gpu, engine, ok=ok, train_step_s=timing["train_step_s"] if timing else None,
                            peak_cuda_bytes=(timing or {}).get("peak_cuda_bytes"), checks=checks)
    em.emit(step="auto", gpu=gpu, training_ranking=gpu_training_measured(dev), measured_file=str(gpu_measured.measured_path()))
    from bench.shd_step import make_problem

    for mode in ("scan", "sequential"):
        if f"triton-{mode}" not in engines:
            continue
        if over():
            em.skip("time budget spent", what=f"autotune {mode}")
            continue
        try:
            batch, dur, hidden = tune_shape
            pb = make_problem(ShdLike(batch=batch, duration_ms=dur), hidden=hidden, device=str(dev))
            res = triton_tune.autotune(pb.cuba, {}, pb.times, pb.channels, pb.W1, mode=mode, configs=tune_cfg,
                                       repeats=1 if args.tiny else 3, max_spikes=64,
                                       backward=not args.tiny)  # tiny: the interpreter's adjoint is slow
            em.emit(step="autotune", gpu=gpu, mode=mode, **res)
        except Exception as e:  # noqa: BLE001
            em.emit(step="autotune", gpu=gpu, mode=mode, error=repr(e)[:500])


if __name__ == "__main__":
    main()
