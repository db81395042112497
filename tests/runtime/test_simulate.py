"""spikescan.simulate: one neuron per sample, against the mpmath reference."""

from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mpref  # noqa: E402
from test_engines_models import get_ir  # noqa: E402

import spikescan  # noqa: E402

torch.set_num_threads(1)


def test_simulate_matches_mpmath_and_traces():
    ir = get_ir("CubaLIF")
    times = torch.tensor([[3.0, 1.0, 7.0, math.inf], [2.0, 2.5, 30.0, 31.0]], dtype=torch.float64)
    weights = torch.tensor([[6.0, 7.0, 5.0, 0.0], [8.0, -2.0, 12.0, 4.0]], dtype=torch.float64)
    for engine in ("torch", "torch-sequential"):
        res = spikescan.simulate(ir, None, times, weights, engine=engine, return_trace=True)
        for b in range(2):
            keep = torch.isfinite(times[b])
            ref = [float(s) for s in mpref.simulate_model("CubaLIF", None, times[b][keep].tolist(),
                                                          weights[b][keep].tolist(), dps=30)]
            assert res.counts[b].item() == len(ref) > 0
            assert all(abs(a - r) < 1e-12 for a, r in zip(res.times[b].tolist(), ref))
        # the trace never exceeds threshold by more than rounding (hard reset at each spike)
        v = res.trace_x[..., 0]
        assert res.trace_x.shape[-1] == 2 and float(v.max()) <= 1.0 + 1e-9
        assert float(v.max()) > 0.5


def test_simulate_gradient_of_a_jump_crossing():
    # LIF only crosses at input jumps: t* is the second input's time, dt*/dt_2 = 1, dt*/dw = 0
    ir = get_ir("LIF")
    w = torch.tensor([0.6, 0.7], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    res = spikescan.simulate(ir, None, t, w, engine="torch")
    assert res.counts.item() == 1 and res.times[0].item() == 2.0
    res.times[0].backward()
    assert t.grad.tolist() == [0.0, 1.0]
    assert w.grad.tolist() == [0.0, 0.0]
