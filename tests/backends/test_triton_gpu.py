"""Compiled (GPU) Triton engines: scan == sequential kernel on a mid-size workload, spot checks
against mpref, and (run as a script) the SHD-like timing:

    python tests/backends/test_triton_gpu.py   # prints JSON lines
"""

import functools
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs a CUDA GPU (compiled Triton)")


@functools.lru_cache(maxsize=None)
def cuba_ir():
    pkl = os.environ.get("SPIKESCAN_IR_PICKLE")
    if pkl:  # machines without the DSL's dependencies: an IR pickled elsewhere
        import pickle

        return pickle.loads(Path(pkl).read_bytes())
    from spikescan.compiler.driver import load_model

    return load_model(ROOT / "models" / "cuba_lif.snn").neurons["CubaLIF"]


def workload(B, n, C, N, rate_scale, seed=0, dev="cuda"):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=torch.float64) * 1000.0
    channels = torch.randint(0, C, (B, n), generator=g)
    weight = torch.randn(C, N, generator=g, dtype=torch.float64) * rate_scale + rate_scale / 2
    return times.to(dev), channels.to(dev), weight.to(dev)


def _run(mode, *a, **kw):
    from spikescan.runtime.engines.triton_engine import run_layer

    return run_layer(cuba_ir(), {}, *a, mode=mode, **kw)


@needs_cuda
def test_gpu_backward_matches_compiled_cpu_adjoint():
    """The compiled adjoint kernel (atomics, reverse scan) against the CPU JIT adjoint."""
    from spikescan.runtime.engines import sequential_cpu

    times, channels, weight = workload(4, 300, 40, 32, 0.6)
    grads = []
    for dev in ("cuda", "cpu"):
        t = times.to(dev).clone().requires_grad_()
        w = weight.to(dev).clone().requires_grad_()
        if dev == "cuda":
            res = _run("scan", t, channels, w, chunk=64, max_spikes=256)
        else:
            res = sequential_cpu.run_layer(cuba_ir(), {}, t, channels.cpu(), w, max_spikes=256)
        fin = torch.isfinite(res.times)
        loss = torch.where(fin, res.times, torch.zeros((), dtype=res.times.dtype)).sum()
        grads.append([g.cpu() for g in torch.autograd.grad(loss, [t, w])])
    for a, b in zip(*grads):
        assert b.abs().max() > 0
        assert (a - b).abs().max().item() <= 1e-9 * max(1.0, b.abs().max().item())


@needs_cuda
def test_gpu_scan_equals_sequential_and_mpref():
    import mpref

    times, channels, weight = workload(4, 600, 40, 64, 0.6)
    seq = _run("sequential", times, channels, weight, max_spikes=256)
    for chunk in (7, 128):
        scn = _run("scan", times, channels, weight, chunk=chunk, max_spikes=256)
        assert torch.equal(seq.counts, scn.counts)
        k = seq.times.shape[-1]
        assert torch.allclose(seq.times, scn.times[..., :k], atol=1e-12, rtol=0)
    assert int(seq.counts.sum()) > 50
    for b, j in [(0, 0), (3, 17)]:
        order = torch.argsort(times[b])
        ref = mpref.simulate_model("CubaLIF", None, times[b][order].tolist(),
                                   weight[channels[b][order], j].tolist(), dps=30)
        got = seq.times[b, j, : int(seq.counts[b, j])].tolist()
        assert len(got) == len(ref)
        assert max([abs(g - float(r)) for g, r in zip(got, ref)], default=0) < 1e-11


def bench(B=32, n=8400, C=700, N=256, scale=0.08, reps=3):
    times, channels, weight = workload(B, n, C, N, scale)
    out = {}
    for mode, kw in [("sequential", {}), ("scan", {"chunk": 128})]:
        t0 = time.perf_counter()
        res = _run(mode, times, channels, weight, max_spikes=512, t_end=1000.0, **kw)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res = _run(mode, times, channels, weight, max_spikes=512, t_end=1000.0, **kw)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[mode] = res
        print(json.dumps({"engine": f"triton-{mode}", "B": B, "events": n, "N": N,
                          "first_call_s": round(first, 3), "ms": round(1000 * min(ts), 2),
                          "spikes_per_neuron": round(float(res.counts.double().mean()), 2),
                          "device": torch.cuda.get_device_name()}), flush=True)
    a, b = out["sequential"], out["scan"]
    same = torch.equal(a.counts, b.counts)
    k = a.times.shape[-1]
    err = float((a.times - b.times[..., :k]).nan_to_num(0.0, 0.0, 0.0).abs().max()) if same else None
    print(json.dumps({"scan_equals_sequential": same, "max_abs_diff_ms": err}), flush=True)


if __name__ == "__main__":
    bench(**{k: int(v) for k, v in (a.split("=") for a in sys.argv[1:])})
