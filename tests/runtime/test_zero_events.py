"""A layer call with no input events at all (times [B, 0]) on every CPU engine, with and without
delays, with and without a readout observable: it must behave like the same call with one
+inf padding column (no spikes; a readout sees its initial state) and give gradients of the
right shapes, instead of failing on an empty reduction."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")

from spikescan.runtime.engines import available, get_engine  # noqa: E402
from spikescan.runtime.kernels import NeuronKernels  # noqa: E402

from bench.common import load_neuron  # noqa: E402

F64 = torch.float64
ENGINES = [e for e in ("sequential-cpu", "torch", "torch-sequential", "triton-scan", "triton-sequential")
           if available(e)]
B, C, N = 2, 3, 4


@pytest.fixture(scope="module")
def neurons():
    return {"CubaLIF": load_neuron("cuba_lif.snn", "CubaLIF"), "LI": load_neuron("li_readout.snn", "LI")}


def _call(eng, ir, times, channels, W, delays, observe):
    return get_engine(eng).run_layer(ir, {}, times, channels, W, delays, observe=observe, t_end=10.0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("delays", [False, True])
@pytest.mark.parametrize("case", [("CubaLIF", None), ("CubaLIF", "max_potential"), ("LI", "max_potential")])
def test_no_events_equals_one_padding_column(neurons, engine, delays, case):
    name, observe = case
    ir = neurons[name]
    g = torch.Generator().manual_seed(3)
    W = (torch.rand(C, N, generator=g, dtype=F64) * 2.0).requires_grad_()
    dl = torch.rand(C, N, generator=g, dtype=F64) if delays else None
    t0 = torch.empty((B, 0), dtype=F64, requires_grad=True)
    empty = _call(engine, ir, t0, torch.empty((B, 0), dtype=torch.int64), W, dl, observe)
    padded = _call(engine, ir, torch.full((B, 1), float("inf"), dtype=F64), torch.zeros((B, 1), dtype=torch.int64),
                   W, dl, observe)
    assert int(empty.counts.sum()) == 0 and torch.equal(empty.counts, padded.counts)
    if observe is None:
        assert bool(torch.isinf(empty.times).all())
        return
    assert torch.equal(empty.observed, padded.observed)
    # no input: the potential stays at its initial value (0 for these neurons) over [0, t_end]
    kern = NeuronKernels.from_ir(ir)
    P = kern.param_tensors({}, N, F64, torch.device("cpu"))
    x0 = [0.0 if v is None else float(v) if not torch.is_tensor(v) else float(v.reshape(-1)[0])
          for v in kern.init(P)]
    c = [0.0 if v is None else float(v) for v in kern.c(P)]
    u0 = sum(a * b for a, b in zip(c, x0))
    assert torch.allclose(empty.observed, torch.full((B, N), u0, dtype=F64), atol=0.0, rtol=0.0)
    if empty.observed.requires_grad:
        gt, gw = torch.autograd.grad(empty.observed.sum(), [t0, W], allow_unused=True)
        assert gt is None or gt.shape == (B, 0)
        assert gw is None or float(gw.abs().max()) == 0.0  # no event: no weight is ever applied
