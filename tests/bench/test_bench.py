"""Tests of the benchmark harness (bench/): the pieces whose numbers end up in docs/benchmarks.md.

Fast unit tests check the workload generator, binning, timing/memory helpers, the discrete-time
simulator (against closed forms and the mpmath reference) and the report; one slow test runs
every script with --quick on tiny sizes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import (ShdLike, bin_events, loglog_slope, peak_memory, shd_weights,  # noqa: E402
                          spikes_to_events, time_fn)
from bench.discrete import cuba_lif_matrices, simulate_discrete  # noqa: E402


# ----------------------------------------------------------------------------- workload


def test_shd_like_events_are_poisson_sorted_and_padded():
    wl = ShdLike(batch=8, seed=3)
    t, c = wl.events()
    n = torch.isfinite(t).sum(1).double()
    # Poisson total: mean 8,400, sd ~92 per sample; the batch mean is within 4 sd of the mean
    assert abs(n.mean().item() - wl.mean_events) < 4 * math.sqrt(wl.mean_events / 8)
    for b in range(8):
        k = int(n[b])
        assert torch.all(t[b, 1:k] >= t[b, : k - 1])  # sorted
        assert torch.all(torch.isinf(t[b, k:])) and torch.all(c[b, k:] == 0)  # padding
        assert t[b, :k].min() >= 0 and t[b, :k].max() < wl.duration_ms
    assert c.max() < 700 and c.min() >= 0
    # every channel fires at about 12 Hz: the per-channel count over the batch is ~ 8 * 12
    per_ch = torch.bincount(c[torch.isfinite(t)], minlength=700).double()
    assert abs(per_ch.mean().item() - 96.0) < 2.0


def test_shd_like_is_deterministic_per_seed():
    a = ShdLike(batch=2, seed=5).events()[0]
    b = ShdLike(batch=2, seed=5).events()[0]
    c = ShdLike(batch=2, seed=6).events()[0]
    assert torch.equal(a, b) and not torch.equal(a[:, :10], c[:, :10])


def test_bin_events_counts_every_event_in_its_bin():
    times = torch.tensor([[0.2, 0.9, 1.0, 2.7, math.inf], [5.5, 0.0, math.inf, math.inf, math.inf]],
                         dtype=torch.float64)
    ch = torch.tensor([[1, 1, 0, 2, 0], [2, 0, 0, 0, 0]])
    x = bin_events(times, ch, 3, 1.0, 4)
    assert x.shape == (4, 2, 3)
    assert x[0, 0, 1] == 2 and x[1, 0, 0] == 1 and x[2, 0, 2] == 1 and x[0, 1, 0] == 1
    assert x.sum() == 5  # the event at 5.5 ms lies past the 4 bins and is dropped


def test_spikes_to_events_flattens_with_source_channels():
    t = torch.tensor([[[1.0, math.inf], [0.5, 2.0]]])
    tt, cc = spikes_to_events(t)
    assert tt.tolist() == [[0.5, 1.0, 2.0]] and cc.tolist() == [[1, 0, 1]]  # time order, padding cut


def test_loglog_slope_recovers_exponents():
    xs = [1, 2, 4, 8, 16]
    assert loglog_slope(xs, [3 * x**1.5 for x in xs]) == pytest.approx(1.5)
    assert loglog_slope(xs, [7.0] * 5) == pytest.approx(0.0)
    assert loglog_slope([1], [1]) is None


def test_time_fn_reports_median_of_the_runs():
    calls = []
    r = time_fn(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and r["runs"] == 5
    assert r["median_s"] == sorted(r["all_s"])[2]


def test_peak_memory_sees_a_large_torch_allocation():
    def alloc():
        x = torch.ones(64 * 2**20 // 8, dtype=torch.float64)  # 64 MiB, touched
        return float(x[-1])

    m = peak_memory(alloc)
    assert m["peak_bytes"] >= 48 * 2**20, m
    small = peak_memory(lambda: torch.ones(10))
    assert small["peak_bytes"] < 16 * 2**20, small


def test_threads_option_sets_torch_and_every_record_names_threads_and_load(tmp_path):
    from bench.common import base_parser, make_emitter

    before = torch.get_num_threads()
    try:
        args = base_parser("t", "x").parse_args(["--out", str(tmp_path / "x.jsonl")])
        assert args.threads == 1  # the default for CPU benchmarks
        em = make_emitter(args, "x")
        assert torch.get_num_threads() == 1
        rec = em.emit(kind="timing", median_s=1.0)
        line = json.loads((tmp_path / "x.jsonl").read_text())
        assert line["torch_threads"] == rec["torch_threads"] == 1
        assert len(line["loadavg"]) == 3 and all(v >= 0 for v in line["loadavg"])
        # 0 leaves torch's setting alone
        torch.set_num_threads(2)
        make_emitter(base_parser("t", "x").parse_args(["--threads", "0", "--no-out"]), "x")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- discrete-time simulator


def _closed_form_first_spike(w, tau_m=20.0, tau_s=5.0):
    """One input of weight w at t=0 into CubaLIF: v(t) = w ts/(tm-ts) (e^{-t/tm} - e^{-t/ts});
    first crossing of 1 by bisection in float64 (the rising flank is monotone)."""
    from scipy.optimize import brentq

    def v(t):
        return w * tau_s / (tau_m - tau_s) * (math.exp(-t / tau_m) - math.exp(-t / tau_s)) - 1.0

    tp = tau_m * tau_s / (tau_m - tau_s) * math.log(tau_m / tau_s)
    return brentq(v, 1e-12, tp, xtol=1e-14)


def test_discrete_simulator_converges_to_the_exact_spike_time():
    w = 8.0  # peak of v is 1.26 > 1: exactly one spike on the rising flank
    t_star = _closed_form_first_spike(w)
    times = torch.tensor([[0.0]], dtype=torch.float64)
    ch = torch.zeros((1, 1), dtype=torch.int64)
    W = torch.tensor([[w]], dtype=torch.float64)
    errs = {}
    for dt in (1.0, 0.1, 0.01):
        out = simulate_discrete(cuba_lif_matrices(), times, ch, W, dt, 40.0, method="exact")
        assert len(out[0][0]) == 1
        s = out[0][0][0]
        # the threshold is only checked at grid points: the spike is reported at the first grid
        # point at or after the true crossing
        assert t_star - 1e-9 <= s < t_star + dt + 1e-9
        errs[dt] = s - t_star
    assert errs[0.01] < 0.011 and errs[0.01] < errs[1.0]


def test_discrete_euler_and_exact_agree_as_dt_shrinks():
    # strong drive -> several spikes
    times = torch.tensor([[1.0, 2.0, 20.0]], dtype=torch.float64)
    ch = torch.zeros((1, 3), dtype=torch.int64)
    W = torch.tensor([[9.0]], dtype=torch.float64)
    ex = simulate_discrete(cuba_lif_matrices(), times, ch, W, 0.02, 50.0, method="exact")[0][0]
    eu = simulate_discrete(cuba_lif_matrices(), times, ch, W, 0.02, 50.0, method="euler")[0][0]
    assert len(ex) == len(eu) >= 3
    # Euler's O(dt) drift moves each grid-detected spike by a few steps at most
    assert max(abs(a - b) for a, b in zip(ex, eu)) <= 5 * 0.02 + 1e-9
    with pytest.raises(ValueError):
        simulate_discrete(cuba_lif_matrices(), times, ch, W, 0.1, 10.0, method="rk4")


def test_discrete_simulator_matches_mpmath_reference_to_within_dt():
    sys.path.insert(0, str(REPO / "tests"))
    mpref = pytest.importorskip("mpref")
    g = torch.Generator().manual_seed(1)
    times = (torch.rand(1, 12, generator=g, dtype=torch.float64) * 60).sort(1).values
    w = 1.0 + 0.5 * torch.rand(12, generator=g, dtype=torch.float64)
    ref = [float(s) for s in mpref.simulate_model("CubaLIF", None, times[0].tolist(), w.tolist(),
                                                  dps=30, t_end=100)]
    assert ref, "inputs chosen to make the neuron fire"
    out = simulate_discrete(cuba_lif_matrices(), times, torch.arange(12)[None], w[:, None], 0.01,
                            100.0)[0][0]
    assert len(out) == len(ref)
    # inputs move by <= dt/2 and the threshold check adds < dt: the error stays within 2 dt
    assert max(abs(a - b) for a, b in zip(out, ref)) < 0.02


def test_default_weights_put_hidden_neurons_at_a_few_hz():
    wl = ShdLike(batch=1, duration_ms=400.0, seed=0)
    t, c = wl.events()
    W = shd_weights(700, 64)
    out = simulate_discrete(cuba_lif_matrices(), t, c, W, 0.5, 400.0)
    rate = sum(len(s) for row in out for s in row) / 64 / 0.4
    assert 1.0 < rate < 15.0, rate


# ----------------------------------------------------------------------------- report


def test_report_renders_tables_and_plots(tmp_path):
    from bench.report import load, render

    env = {"torch": "x", "cpu": "test-cpu", "cpu_count": 2, "device": "cpu", "date": "d",
           "quick": True}
    recs = {
        "engines-quick": [
            dict(env, kind="timing", engine="torch", chunk=32, mode="forward", batch=2, inputs=700,
                 hidden=8, readout=20, events_per_sample=100.0, duration_ms=10.0, dtype="f64",
                 median_s=0.5, runs=1, peak_bytes=2**20, hidden_rate_hz=3.0),
            dict(env, kind="ratio", mode="forward", scan="torch", chunk=32,
                 sequential="torch-sequential", speedup=4.0),
            dict(env, skipped="engine", engine="triton-scan", reason="no GPU"),
        ],
        "precision-quick": [
            dict(env, kind="spike_time_error", model="CubaLIF", engine="torch", dtype="f64", batch=1,
                 neurons=1, channels=2, events=5, T_ms=10.0, trains=1, ref_spikes=2,
                 count_mismatch=0, max_abs_err_ms=1e-14, median_abs_err_ms=1e-15, max_err_ulp=1.0),
            dict(env, kind="spike_time_error", model="CubaLIF", engine="discrete-exact", dt_ms=0.1,
                 dtype="f64", batch=1, neurons=1, channels=2, events=5, T_ms=10.0, trains=1,
                 ref_spikes=2, count_mismatch=1, max_abs_err_ms=0.05),
        ],
        "scaling-quick": [
            dict(env, kind="point", engine="torch", sweep="batch", mode="forward", x=x,
                 median_s=0.1 * x, peak_bytes=1000 * x) for x in (1, 2, 4)
        ] + [dict(env, kind="fit", engine="torch", sweep="batch", x_name="batch", mode="forward",
                  points=3, time_exponent=1.0, memory_exponent=1.0,
                  base=dict(batch=1, neurons=8, rate=12.0, duration=10.0, chunk=128))],
    }
    gpu = dict(env, device="cuda", gpu="Test GPU", quick=False, cpu_count=16, date="2026-01-01T00:00:00+00:00")
    cpu_env = dict(env, torch_threads=1, loadavg=[1.5, 1.0, 0.5], date="2026-01-02T00:00:00+00:00")
    recs["engines-quick"] = [dict(r, **{k: v for k, v in cpu_env.items() if k != "date"})
                             for r in recs["engines-quick"]]
    recs["engines-cuda"] = [
        dict(gpu, kind="timing", engine="torch", chunk=512, mode=m, batch=32, inputs=700,
             hidden=256, readout=20, events_per_sample=8400.0, duration_ms=1000.0, dtype="f64",
             median_s=t, runs=2, peak_bytes=2**30, hidden_rate_hz=4.5)
        for m, t in (("forward", 1.25), ("forward+backward", 1.5))]
    recs["peers-quick"] = [
        dict(cpu_env, kind="timing", framework=f, mode=m, batch=2, inputs=700, hidden=32,
             readout=20, duration_ms=100.0, events_per_sample=840.0, tau_m_ms=20.0, tau_s_ms=5.0,
             median_s=t, runs=3, dtype="f32", exact=f.startswith("spikescan"), dt_ms=1.0)
        for f, m, t in (("norse", "forward", 0.03), ("norse", "forward+backward", 0.06),
                        ("spikescan:torch:f64", "forward", 0.09),
                        ("spikescan:torch:f64", "forward+backward", 0.12))
    ] + [dict(cpu_env, kind="ratio", framework="norse", spikescan="spikescan:torch:f64", mode=m,
              ratio=r) for m, r in (("forward", 0.03 / 0.09), ("forward+backward", 0.5))]
    files = []
    for name, rs in recs.items():
        f = tmp_path / f"{name}.jsonl"
        f.write_text("\n".join(json.dumps(r) for r in rs) + "\n")
        files.append(f)
    out = tmp_path / "docs" / "benchmarks.md"
    text = render(load(files), out)
    assert out.exists() and "| torch | 32 | forward | 500.0 ms" in text
    assert "4.00x" in text and "skipped engine triton-scan: no GPU" in text
    assert "| CubaLIF | discrete-exact dt=0.1 ms | f64 | 2 | 1/1 |" in text
    # sections say where, when and under which conditions they were measured
    assert "Engines on the SHD-like workload: CPU (test-cpu, 1 torch thread(s)), --quick sizes" in text
    assert "Engines on the SHD-like workload: CUDA (Test GPU), full sizes, 2026-01-01" in text
    assert "1-min load average 1.5" in text and "machine load not recorded" in text
    assert "Older measurement, kept as measured" in text  # engines-cuda carries its note
    # CPU sections come before the CUDA ones; the summary puts both sets side by side
    assert text.index("workload: CPU") < text.index("workload: CUDA")
    summary = text[text.index("## Summary"):text.index("## Engines")]
    assert "| torch | 512 | - | - | 1.25 s | 1.50 s |" in summary and "older code" in summary
    # peer ratios in both passes, < 1 when the peer is faster (not hidden)
    assert "| norse | forward | 0.33 |" in text and "| norse | forward+backward | 0.50 |" in text
    assert (tmp_path / "docs" / "img" / "precision.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "img" / "scaling.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- scripts, tiny sizes


def _run(args, tmp_path, name):
    out = tmp_path / f"{name}.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), "--quick", "--out",
                        str(out)] + args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert recs and all(rec["bench"] == name and "torch" in rec and "date" in rec for rec in recs)
    # stdout carries the same JSON lines
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == len(recs)
    return recs


@pytest.mark.slow
def test_scripts_run_quick_on_tiny_sizes(tmp_path):
    from spikescan.runtime.engines import available

    has_cpu = available("sequential-cpu")
    # 16 neurons over 100 ms: the hidden layer fires (6 spikes), so every backward has a path
    eng = _run(["--batch", "1", "--hidden", "16", "--duration", "100", "--repeats", "1",
                "--engines",
                "torch,torch-sequential,triton-scan" + (",sequential-cpu" if has_cpu else ""),
                "--chunks", "32"], tmp_path, "engines")
    timing = [r for r in eng if r.get("kind") == "timing"]
    assert all(r["hidden_spikes"] > 0 for r in timing)
    assert {r["engine"] for r in timing} >= {"torch", "torch-sequential"}
    assert all(r["torch_threads"] == 1 and len(r["loadavg"]) == 3 for r in eng)
    if has_cpu:  # the JIT backward is timed, hidden layer alone and whole network
        modes = {r["mode"] for r in timing if r["engine"] == "sequential-cpu"}
        assert modes >= {"hidden-forward+backward", "forward+backward"}
        assert not any(r.get("skipped") and r.get("engine") == "sequential-cpu" for r in eng)
    assert all(r["median_s"] > 0 and r["peak_bytes"] >= 0 for r in timing)
    assert any(r.get("kind") == "ratio" for r in eng)
    assert any(r.get("skipped") and r.get("engine") == "triton-scan" for r in eng)

    sc = _run(["--engines", "torch", "--modes", "forward", "--sweeps", "batch", "--duration", "20"],
              tmp_path, "scaling")
    assert any(r.get("kind") == "fit" and r["time_exponent"] is not None for r in sc)

    pe = _run(["--batch", "1", "--hidden", "4", "--duration", "20", "--peers", "norse",
               "--spikescan-engines", "torch", "--spikescan-dtypes", "f64"], tmp_path, "peers")
    assert any(r.get("framework") == "spikescan:torch:f64" for r in pe)

    pr = _run(["--models", "LIF", "--engines", "torch" + (",sequential-cpu" if has_cpu else ""),
               "--dts", "1", "--size", "1,2,3,8,30", "--mp-grad-models", ""], tmp_path, "precision")
    errs = [r for r in pr if r.get("kind") == "spike_time_error" and r["engine"] == "torch"]
    assert errs and all(r["count_mismatch"] == 0 for r in errs if r["dtype"] == "f64")
    if has_cpu:  # gradients of the JIT backward against the engine's own f64 differences
        g = [r for r in pr if r.get("kind") == "gradient_error" and r["engine"] == "sequential-cpu"]
        assert {r["wrt"] for r in g} == {"weights", "input_times"}
        assert all(r["autograd_vs_f64_fd"]["max_rel_err"] < 1e-5 for r in g)

    r = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"),
                        *[str(p) for p in sorted(tmp_path.glob("*.jsonl"))],
                        "--out", str(tmp_path / "bench.md")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "## Engines" in (tmp_path / "bench.md").read_text()


def test_cpu_step_quick_smoke(tmp_path):
    """bench/cpu_step.py runs at --quick sizes: both adjoints, 1 and 2 engine threads, the C floor
    (or a skip record naming why), ratio records; the two adjoints' gradients agree."""
    from spikescan.runtime.engines import available

    if not available("sequential-cpu"):
        pytest.skip("sequential-cpu (torch-mlir) is not available")
    recs = _run(["--batch", "2", "--hidden", "16", "--repeats", "1"], tmp_path, "cpu_step")
    timing = [r for r in recs if r.get("kind") == "timing" and r["engine"] == "sequential-cpu"]
    assert {(r["adjoint"], r["engine_threads"]) for r in timing} == {("event-outer", 1), ("event-outer", 2),
                                                                       ("per-neuron", 1), ("per-neuron", 2)}
    assert all(r["ms_wall"] > 0 and r["batch"] == 2 and r["hidden"] == 16 for r in timing)
    ratio = next(r for r in recs if r.get("kind") == "ratio" and r["what"].startswith("per-neuron"))
    assert ratio["max_rel_grad_difference"] < 1e-12
    assert any(r.get("engine", "").startswith("C loop") or r.get("skipped") for r in recs)
    ro = [r for r in recs if r.get("kind") == "timing" and r["engine"] == "sequential-cpu, readout layer"]
    assert {(r["readout_impl"], r["engine_threads"], r["stage"]) for r in ro} == {
        (m, th, s) for m, th in (("compiled", 1), ("compiled", 2), ("replay", 1))
        for s in ("readout-forward", "readout-forward+backward")}
    assert {r["readout_neuron"] for r in ro} == {"LI", "CubaLIF outputs (first-spike vmax)"}
    ratios = [r for r in recs if r.get("kind") == "ratio" and r["what"].startswith("readout replay")]
    assert len(ratios) == 4 and all(r["max_rel_grad_difference"] < 1e-12 and r["ratio"] > 0 for r in ratios)


def test_shd_network_quick_smoke(tmp_path):
    """bench/shd_network.py runs models/shd.snn's whole step at --quick sizes on 1 and 2 engine
    threads, with a hidden layer that fires (so the backward is timed through spikes), and the
    report renders its section."""
    recs = _run(["--repeats", "1"], tmp_path, "shd_network")
    timing = [r for r in recs if r.get("kind") == "timing"]
    assert {(r["engine_threads"], r["stage"]) for r in timing} == {
        (th, s) for th in (1, 2) for s in ("forward", "forward+backward")}
    assert all(r["ms_wall"] > 0 and r["hidden_spikes_per_sample"] > 0 and r["model"] == "models/shd.snn"
               for r in timing)
    assert sum(r.get("kind") == "ratio" for r in recs) == 2
    r = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), str(tmp_path / "shd_network.jsonl"),
                        "--out", str(tmp_path / "bench.md")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "models/shd.snn, recurrent, whole training step" in (tmp_path / "bench.md").read_text()
