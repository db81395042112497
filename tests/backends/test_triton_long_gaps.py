"""Long gaps on the Triton engines under TRITON_INTERPRET=1 (issue 17 item 1; the CPU engines are
in tests/runtime/test_long_gaps.py): a burst's spikes do not depend on how far past it t_end lies
(up to 1e6 tau_m), a second burst after 1e6 tau_m spikes as the first, and a 10 us membrane under
inputs 1000 tau_m apart (rates reordered: exp(p D) * exprel(z D) printed overflow-free) matches
mpmath."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import mpref  # noqa: E402

import spikescan  # noqa: E402

CUBA = str(ROOT / "models" / "cuba_lif.snn")
ENGINES = ["triton-sequential", "triton-scan"]


def _spikes(times, weights, engine, **kw):
    r = spikescan.simulate(CUBA, "CubaLIF", times=torch.tensor([times], dtype=torch.float64),
                           weights=torch.tensor([weights], dtype=torch.float64), engine=engine,
                           max_spikes=512, **kw)
    return [x for x in r.times[0].tolist() if math.isfinite(x)]


@pytest.fixture(scope="module")
def burst_ref():
    return [float(s) for s in mpref.simulate_model("CubaLIF", None, [1.0, 2.0, 3.0], [5.0] * 3,
                                                   dps=30, t_end=100.0)]


@pytest.mark.parametrize("engine", ENGINES)
def test_t_end_and_bursts_across_long_gaps(engine, burst_ref):
    assert len(burst_ref) == 3
    for gap in (1e3, 1e5, 1e6):
        got = _spikes([1.0, 2.0, 3.0], [5.0] * 3, engine, t_end=3.0 + gap * 20.0)
        assert got == pytest.approx(burst_ref, rel=1e-12, abs=1e-12), gap
    G = 1e6 * 20.0
    got = _spikes([1.0, 2.0, 3.0, G + 1.0, G + 2.0, G + 3.0], [5.0] * 6, engine, t_end=G + 100.0)
    assert got == pytest.approx(burst_ref + [G + s for s in burst_ref], rel=1e-13, abs=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_membrane_long_gaps(engine):
    ref = [float(s) for s in mpref.simulate_model("CubaLIF", {"tau_m": 0.01}, [10.0], [1.2], dps=30,
                                                  t_end=20.0)]
    assert len(ref) > 30
    got = _spikes([10.0], [1.2], engine, t_end=20.0, params={"tau_m": 0.01})
    assert got == pytest.approx(ref, rel=1e-11)


ALPHA = str(ROOT / "models" / "alpha_lif.snn")


def _alpha(engine, **kw):
    """AlphaLIF with tau_m = 10 us (below tau_s = 5 ms) under one input 1000 tau_m after t = 0: the
    propagator's phi2/dexp2 products would overflow unless printed shifted (phi2s, dexp2s)."""
    return spikescan.simulate(ALPHA, "AlphaLIF", times=torch.tensor([[10.0]], dtype=torch.float64), t_end=20.0,
                              engine=engine, max_spikes=64, **kw)


@pytest.fixture(scope="module")
def alpha_ref():
    return [float(s) for s in mpref.simulate_model("AlphaLIF", {"tau_m": 0.01}, [10.0], [2.74], dps=30,
                                                   t_end=20.0)]


@pytest.mark.parametrize("engine", ENGINES)
def test_alpha_fast_membrane_long_gap(engine, alpha_ref):
    """Was 0 spikes on both Triton engines (against 24 on the CPU engines and mpmath)."""
    assert len(alpha_ref) == 24
    r = _alpha(engine, weights=torch.tensor([[2.74]], dtype=torch.float64), params={"tau_m": 0.01})
    got = [x for x in r.times[0].tolist() if math.isfinite(x)]
    assert got == pytest.approx(alpha_ref, rel=1e-12)


@pytest.mark.slow
def test_alpha_fast_membrane_long_gap_gradients():
    """The Triton adjoint's parameter forms are printed shifted too: d(sum of spike times)/d(w,
    tau_m) equal the compiled CPU adjoint's (about 60 s under the interpreter)."""
    grads = {}
    for engine in ("sequential-cpu", "triton-sequential"):
        w = torch.tensor([[2.74]], dtype=torch.float64, requires_grad=True)
        tau = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
        r = _alpha(engine, weights=w, params={"tau_m": tau})
        fin = torch.isfinite(r.times)
        assert int(fin.sum()) == 24
        r.times[fin].sum().backward()
        grads[engine] = (w.grad.item(), tau.grad.item())
    for a, b in zip(grads["triton-sequential"], grads["sequential-cpu"]):
        assert a == pytest.approx(b, rel=1e-9) and abs(b) > 1.0
