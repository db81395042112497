"""Exact gradients (IFT spike times + autograd through the scan) against central finite
differences in float64 on a small two-layer network: weights, delays, time constants, theta and
input times."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_engines_models import get_ir  # noqa: E402

from spikescan.runtime.engines import get_engine  # noqa: E402

F64 = torch.float64
torch.set_num_threads(1)  # the test machine is shared: avoid OpenMP contention on tiny tensors


def _flatten(res):
    B, N, S = res.times.shape
    t = res.times.reshape(B, N * S)
    ch = torch.arange(N).repeat_interleave(S).expand(B, N * S)
    return t, ch


def _net_loss(engine, model, times, W1, W2, D2, tau_m, v_th, chunk):
    ir = get_ir(model)
    eng = get_engine(engine)
    r1 = eng.run_layer(ir, {"tau_m": tau_m}, times, torch.zeros_like(times, dtype=torch.long) + _CH, W1, chunk=chunk)
    t1, c1 = _flatten(r1)
    r2 = eng.run_layer(ir, {"v_th": v_th}, t1, c1, W2, D2, chunk=chunk)
    loss = 0.0
    for r in (r1, r2):
        t = r.times
        coef = torch.linspace(0.5, 1.5, t.numel(), dtype=F64).reshape(t.shape)
        loss = loss + torch.where(torch.isfinite(t), t * coef, torch.zeros_like(t)).sum()
    return loss, (r1.counts, r2.counts)


_CH = None


def _setup(seed):
    global _CH
    g = torch.Generator().manual_seed(seed)
    B, n, C, H, O = 2, 8, 3, 4, 2
    times = torch.rand(B, n, generator=g, dtype=F64) * 20
    _CH = torch.randint(0, C, (B, n), generator=g)
    W1 = 0.6 + 1.2 * torch.rand(C, H, generator=g, dtype=F64)
    W2 = 0.8 + 1.5 * torch.rand(H, O, generator=g, dtype=F64)
    D2 = 3.0 * torch.rand(H, O, generator=g, dtype=F64)
    return times, W1, W2, D2


CASES = [
    ("CubaLIF", "torch", 3),
    pytest.param("CubaLIF", "torch", 128, marks=pytest.mark.slow),
    pytest.param("CubaLIF", "torch-sequential", 1, marks=pytest.mark.slow),
    pytest.param("LIF", "torch", 3, marks=pytest.mark.slow),
    pytest.param("LIF", "torch-sequential", 1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("model,engine,chunk", CASES)
def test_gradients_match_finite_differences(engine, chunk, model):
    times, W1, W2, D2 = _setup(11)
    tau_m = torch.tensor(18.0, dtype=F64)
    v_th = torch.tensor(1.0, dtype=F64)
    leaves = [times, W1, W2, D2, tau_m, v_th]
    for x in leaves:
        x.requires_grad_(True)
    loss, counts = _net_loss(engine, model, times, W1, W2, D2, tau_m, v_th, chunk)
    assert counts[0].sum() >= 3 and counts[1].sum() >= 2, "network too quiet to test anything"
    grads = torch.autograd.grad(loss, leaves)
    h = 1e-6
    names = ["times", "W1", "W2", "D2", "tau_m", "v_th"]
    for name, x, g in zip(names, leaves, grads):
        flat = x.detach().reshape(-1)
        # a fixed subset of coordinates keeps the default run fast (all of them are checked
        # across the slow cases' different leaves)
        picks = range(flat.numel()) if flat.numel() <= 4 else \
            torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(3))[:4].tolist()
        for i in picks:
            if name == "times" and not math.isfinite(float(flat[i])):
                continue
            vals = []
            for s in (+1, -1):
                xs = [y.detach().clone() for y in leaves]
                k = names.index(name)
                xs[k].reshape(-1)[i] += s * h
                with torch.no_grad():
                    l, c = _net_loss(engine, model, *xs, chunk)
                assert all(torch.equal(a, b) for a, b in zip(c, counts)), "FD step changed spike counts"
                vals.append(float(l))
            fd = (vals[0] - vals[1]) / (2 * h)
            an = float(g.reshape(-1)[i])
            assert abs(an - fd) <= 1e-5 * max(1.0, abs(fd)), (name, i, an, fd)
