"""Precision: spike-time and gradient error of each engine against the mpmath reference, and the
error a discrete-time (clock-driven) simulation makes on the same inputs.

For each neuron model (LIF, CubaLIF, AlphaLIF, AdaptiveLIF from models/*.snn) we draw B samples of
n random input events on C channels over T ms and N neurons with random weights, then compare
  - each exact engine in float64 and float32 against tests/mpref.py (50 digits, independent of
    the compiler). Inputs are rounded to float32 first, so both dtypes see the same exact inputs
    and the error is the engine's arithmetic alone (reported in ms and in ulps of the spike time);
  - the time-stepped simulator of bench/discrete.py (exact-decay and Euler) at dt = 1, 0.1,
    0.01 ms (input events moved to the nearest grid point, threshold checked at grid points);
  - gradients d(sum of output spike times)/d(weights, input times) from each engine's autograd
    (float64), against float64 central finite differences of the engine itself (h = 1e-6) and,
    on a few entries, against central differences of the mpmath reference (h = 1e-10 at 30
    digits: error ~1e-19, the true derivative for our purposes).
Spike trains whose count differs from the reference count as `count_mismatch`; time errors are
taken over trains with the right count.

    python bench/precision.py [--quick] [--models CubaLIF,LIF] [--engines torch,...]
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import ENGINES, add_repo_to_path, base_parser, get_engine, load_neuron, make_emitter  # noqa: E402
from bench.discrete import simulate_discrete  # noqa: E402

MODELS = {  # name -> (model file, weight mean, weight std): a few spikes per neuron in 100 ms
    "LIF": ("lif.snn", 0.15, 0.3),
    "CubaLIF": ("cuba_lif.snn", 0.6, 0.8),
    "AlphaLIF": ("alpha_lif.snn", 0.6, 0.8),
    "AdaptiveLIF": ("adaptive_lif.snn", 0.7, 0.8),
}


# ----------------------------------------------------------------------------- inputs, reference


def make_inputs(model: str, B: int, N: int, C: int, n: int, T: float, seed: int):
    """Random events and weights, rounded to float32 so that f32 and f64 runs see equal inputs."""
    _, mean, std = MODELS[model]
    g = torch.Generator().manual_seed(seed)
    times = (torch.rand(B, n, generator=g, dtype=torch.float64) * T).sort(1).values
    channels = torch.randint(0, C, (B, n), generator=g)
    W = mean + std * torch.randn(C, N, generator=g, dtype=torch.float64)
    return times.float().double(), channels, W.float().double()


def _mp():
    add_repo_to_path()
    import mpref  # tests/mpref.py

    return mpref


def mp_train(mats: dict, times_row, ch_row, w_col, t_end: float, dps: int = 50):
    """Reference spike times (mpf) of one neuron: events of one sample, weights of one neuron."""
    mpref = _mp()
    ts = [float(t) for t in times_row]
    ws = [float(w_col[int(c)]) for c in ch_row]
    return mpref.mp_simulate(mats["A"], mats["a0"], mats["B"], mats["c"], mats["theta"], mats["R"],
                             mats["r"], mats["t_ref"], mats["x0"], ts, ws, dps=dps, t_end=t_end)


def mp_reference(model: str, times, channels, W, t_end: float, dps: int = 50):
    mats = _mp().HAND_MODELS[model](None)
    B, N = times.shape[0], W.shape[1]
    return [[mp_train(mats, times[b], channels[b], W[:, j], t_end, dps) for j in range(N)]
            for b in range(B)]


# ----------------------------------------------------------------------------- error statistics


def _ulp(t: float, dtype) -> float:
    if dtype == torch.float32:
        return float(np.spacing(np.float32(abs(t)))) if t else float(np.finfo(np.float32).tiny)
    return math.ulp(t)


def train_errors(ref, got, dtype=torch.float64) -> dict:
    """Compare [B][N] spike-time lists with the reference; time errors over equal-count trains."""
    import mpmath

    errs, ulps, first = [], [], []
    mismatch = total = n_spikes = 0
    for rb, gb in zip(ref, got):
        for r, s in zip(rb, gb):
            total += 1
            n_spikes += len(r)
            if r and s:
                first.append(abs(float(mpmath.mpf(s[0]) - r[0])))
            if len(r) != len(s):
                mismatch += 1
                continue
            for tr, ts in zip(r, s):
                e = abs(float(mpmath.mpf(ts) - tr))
                errs.append(e)
                ulps.append(e / _ulp(float(tr), dtype))
    out = {"trains": total, "ref_spikes": n_spikes, "count_mismatch": mismatch,
           "count_mismatch_frac": mismatch / max(total, 1), "matched_spikes": len(errs)}
    if errs:
        out.update(max_abs_err_ms=max(errs), median_abs_err_ms=float(np.median(errs)),
                   max_err_ulp=max(ulps), median_err_ulp=float(np.median(ulps)))
    if first:
        out.update(first_spike_max_err_ms=max(first), first_spike_median_err_ms=float(np.median(first)))
    return out


# ----------------------------------------------------------------------------- engines


def engine_trains(eng, ir, times, channels, W, dtype, t_end: float, max_spikes: int = 64):
    res = eng.run_layer(ir, {}, times.to(dtype), channels, W.to(dtype), max_spikes=max_spikes,
                        on_overflow="raise")
    out = []
    for b in range(res.times.shape[0]):
        row = []
        for j in range(res.times.shape[1]):
            ts = res.times[b, j, : int(res.counts[b, j])].double().tolist()
            row.append([t for t in ts if t <= t_end])
        out.append(row)
    return out


def _loss_of_result(res, t_end: float):
    t = res.times
    fin = torch.isfinite(t) & (t <= t_end)
    return torch.where(fin, t, torch.zeros_like(t)).sum()


def engine_grads(eng, ir, times, channels, W, t_end: float):
    """d(sum of spike times)/d(W, times) of sample 0 by the engine's autograd, float64."""
    tt = times[:1].clone().requires_grad_(True)
    WW = W.clone().requires_grad_(True)
    res = eng.run_layer(ir, {}, tt, channels[:1], WW, max_spikes=64, on_overflow="raise")
    loss = _loss_of_result(res, t_end)
    gW, gt = torch.autograd.grad(loss, (WW, tt), allow_unused=True)
    gW = torch.zeros_like(W) if gW is None else gW
    gt = torch.zeros_like(tt) if gt is None else gt
    return gW.detach(), gt[0].detach()


def engine_fd(eng, ir, times, channels, W, t_end, w_idx, t_idx, h=1e-6):
    """Float64 central differences of the engine's own loss (sample 0)."""
    def loss(tt, WW):
        with torch.no_grad():
            res = eng.run_layer(ir, {}, tt, channels[:1], WW, max_spikes=64, on_overflow="raise")
        return float(_loss_of_result(res, t_end))

    gW, gt = {}, {}
    for (c, j) in w_idx:
        Wp, Wm = W.clone(), W.clone()
        Wp[c, j] += h
        Wm[c, j] -= h
        gW[(c, j)] = (loss(times[:1], Wp) - loss(times[:1], Wm)) / (2 * h)
    for k in t_idx:
        tp, tm = times[:1].clone(), times[:1].clone()
        tp[0, k] += h
        tm[0, k] -= h
        gt[k] = (loss(tp, W) - loss(tm, W)) / (2 * h)
    return gW, gt


def mp_fd(model, times, channels, W, t_end, w_idx, t_idx, h="1e-10", dps=30):
    """Central differences of the 30-digit reference: truncation ~h^2, rounding ~1e-30/h, so
    the true gradient to ~1e-19 (far below float64 resolution)."""
    import mpmath

    mats = _mp().HAND_MODELS[model](None)
    hh = mpmath.mpf(h)

    def total(times_row, w_col_fn, neurons):
        s = mpmath.mpf(0)
        for j in neurons:
            ts = [mpmath.mpf(t) for t in times_row]
            ws = [w_col_fn(j, int(c)) for c in channels[0]]
            mpref = _mp()
            sp = mpref.mp_simulate(mats["A"], mats["a0"], mats["B"], mats["c"], mats["theta"],
                                   mats["R"], mats["r"], mats["t_ref"], mats["x0"], ts, ws, dps=dps,
                                   t_end=t_end)
            s += mpmath.fsum(sp)
        return s

    base_w = lambda j, c: mpmath.mpf(float(W[c, j]))  # noqa: E731
    row = [float(t) for t in times[0]]
    gW, gt = {}, {}
    with mpmath.workdps(dps):
        for (c0, j0) in w_idx:
            def wfn(sign):
                return lambda j, c: base_w(j, c) + (sign * hh if (j, c) == (j0, c0) else 0)
            gW[(c0, j0)] = (total(row, wfn(1), [j0]) - total(row, wfn(-1), [j0])) / (2 * hh)
        N = W.shape[1]
        for k in t_idx:
            rp = [mpmath.mpf(t) for t in row]
            rm = list(rp)
            rp[k] += hh
            rm[k] -= hh
            gt[k] = (total(rp, base_w, range(N)) - total(rm, base_w, range(N))) / (2 * hh)
    return gW, gt


def _rel_err(got: dict, ref: dict) -> dict:
    keys = list(ref)
    if not keys:
        return {}
    import mpmath

    diff = [abs(float(mpmath.mpf(got[k]) - ref[k])) for k in keys]
    scale = max(abs(float(ref[k])) for k in keys) or 1.0
    return {"max_abs_err": max(diff), "max_rel_err": max(diff) / scale, "n": len(keys),
            "ref_scale": scale}


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = base_parser(__doc__, "precision")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--dts", default="1,0.1,0.01")
    p.add_argument("--mp-grad-models", default=None,
                   help="models whose gradients are also checked against mpmath finite "
                        "differences (slow: 2 reference runs per entry; default: CubaLIF in "
                        "--quick, all otherwise)")
    p.add_argument("--size", default=None,
                   help="override sizes as B,N,C,n,T (samples, neurons, channels, events, ms)")
    args = p.parse_args(argv)
    em = make_emitter(args, "precision")
    # sizes: B samples x N neurons, n events on C channels over T ms
    if args.quick:
        B, N, C, n, T, n_grad, n_mp_grad = 3, 3, 6, 30, 100.0, 6, 2
    else:
        B, N, C, n, T, n_grad, n_mp_grad = 8, 8, 10, 60, 200.0, 16, 4
    if args.size:
        B, N, C, n = (int(v) for v in args.size.split(",")[:4])
        T = float(args.size.split(",")[4])
    mp_grad_models = (args.mp_grad_models if args.mp_grad_models is not None
                      else ("CubaLIF" if args.quick else ",".join(MODELS))).split(",")
    t_end = T + 50.0
    sizes = dict(batch=B, neurons=N, channels=C, events=n, T_ms=T, t_end_ms=t_end)
    dts = [float(x) for x in args.dts.split(",") if x]
    engines = [e for e in args.engines.split(",") if e]
    rng = random.Random(args.seed)

    for mi, model in enumerate([m for m in args.models.split(",") if m]):
        times, channels, W = make_inputs(model, B, N, C, n, T, args.seed + 17 * mi)
        t0 = time.perf_counter()
        try:
            ref = mp_reference(model, times, channels, W, t_end)
        except Exception as e:  # noqa: BLE001
            em.skip(f"mpmath reference failed: {type(e).__name__}: {e}", what="reference",
                    model=model, **sizes)
            continue
        em.emit(kind="reference", model=model, dps=50, seconds=time.perf_counter() - t0,
                spikes=sum(len(s) for row in ref for s in row), **sizes)

        # --- exact engines, f64 and f32
        try:
            ir = load_neuron(MODELS[model][0], model)
        except Exception as e:  # noqa: BLE001
            ir = None
            em.skip(f"cannot load models/{MODELS[model][0]}: {type(e).__name__}: {e}",
                    what="engines", model=model)
        for name in engines if ir is not None else []:
            eng, why = get_engine(name, args.device)
            if eng is None:
                em.skip(why, what="engine", engine=name, model=model)
                continue
            for dtype in (torch.float64, torch.float32):
                dt_name = "f64" if dtype == torch.float64 else "f32"
                try:
                    got = engine_trains(eng, ir, times, channels, W, dtype, t_end)
                except Exception as e:  # noqa: BLE001
                    em.skip(f"{type(e).__name__}: {e}", what="engine", engine=name, model=model,
                            dtype=dt_name)
                    continue
                em.emit(kind="spike_time_error", model=model, engine=name, dtype=dt_name,
                        **sizes, **train_errors(ref, got, dtype))

        # --- discrete-time simulation on the same inputs
        mats = _mp().HAND_MODELS[model](None)
        for dt in dts:
            for method in ("exact", "euler"):
                t1 = time.perf_counter()
                got = simulate_discrete(mats, times, channels, W, dt, t_end, method=method)
                em.emit(kind="spike_time_error", model=model, engine=f"discrete-{method}",
                        dt_ms=dt, dtype="f64", seconds=time.perf_counter() - t1, **sizes,
                        **train_errors(ref, got, torch.float64))

        # --- gradients (float64) of sample 0
        if ir is None:
            continue
        w_idx = rng.sample([(c, j) for c in range(C) for j in range(N)], min(n_grad, C * N))
        t_idx = rng.sample(range(n), min(n_grad, n))
        ref_g = None
        mp_w, mp_t = w_idx[:n_mp_grad], t_idx[:n_mp_grad]
        for name in engines:
            eng, why = get_engine(name, args.device)
            if eng is None:
                continue
            try:
                gW, gt = engine_grads(eng, ir, times, channels, W, t_end)
            except Exception as e:  # noqa: BLE001
                em.skip(f"backward failed: {type(e).__name__}: {e}", what="gradient",
                        engine=name, model=model)
                continue
            if ref_g is None:
                ref_g = ({}, {})
                if model in mp_grad_models:
                    t1 = time.perf_counter()
                    ref_g = mp_fd(model, times, channels, W, t_end, mp_w, mp_t)
                    em.emit(kind="gradient_reference", model=model, method="mpmath central FD",
                            h=1e-10, dps=30, entries=len(mp_w) + len(mp_t),
                            seconds=time.perf_counter() - t1, **sizes)
            got_w = {k: float(gW[k]) for k in w_idx}
            got_t = {k: float(gt[k]) for k in t_idx}
            fd_w, fd_t = engine_fd(eng, ir, times, channels, W, t_end, w_idx, t_idx)
            for wrt, got_, ref_, fd_ in (("weights", got_w, ref_g[0], fd_w),
                                         ("input_times", got_t, ref_g[1], fd_t)):
                em.emit(kind="gradient_error", model=model, engine=name, dtype="f64", wrt=wrt,
                        autograd_vs_mp=_rel_err(got_, ref_), f64_fd_vs_mp=_rel_err(fd_, ref_),
                        autograd_vs_f64_fd=_rel_err(got_, {k: fd_[k] for k in fd_}), **sizes)


if __name__ == "__main__":
    main()
