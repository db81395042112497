"""Long gaps never change a decision (issue 17 item 1): intervals of 1e3 to 1e6 time constants,
where exp(-D/tau) underflows to 0, keep every spike on every CPU engine, against the mpmath
reference (tests/mpref.py). Two mechanisms are covered: the isolation chain over a gap whose
derivative underflows to an exact 0 (compiler/backends/mlir/emit.py isolate/quick_no_cross), and
propagators exp(p D) * F(z D) whose factors underflow and overflow when run-time parameters
reorder the rates (tau_m = 10 us below tau_s = 5 ms: compiler/backends/stable_exp.py)."""

from __future__ import annotations

import math
from pathlib import Path

import mpmath as mp
import pytest
import torch

import mpref
import spikescan

F64 = torch.float64
CUBA = str(Path(__file__).resolve().parents[2] / "models" / "cuba_lif.snn")
CPU_ENGINES = ["sequential-cpu", "torch", "torch-sequential"]
TAU_M = 20.0
GAPS_TAU = [1e3, 1e4, 1e5, 1e6]


def _spikes(times, weights, engine, **kw):
    r = spikescan.simulate(CUBA, "CubaLIF", times=torch.tensor([times], dtype=F64),
                           weights=torch.tensor([weights], dtype=F64), engine=engine,
                           max_spikes=4096, **kw)
    return [x for x in r.times[0].tolist() if math.isfinite(x)]


def _ref(times, weights, params=None, **kw):
    return [float(s) for s in mpref.simulate_model("CubaLIF", params, times, weights, dps=30, **kw)]


@pytest.fixture(scope="module")
def burst_ref():
    return _ref([1.0, 2.0, 3.0], [5.0] * 3, t_end=100.0)


@pytest.mark.parametrize("gap", GAPS_TAU)
@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_t_end_far_beyond_underflow(engine, gap, burst_ref):
    # the spikes of a burst do not depend on how far past it the run ends
    assert len(burst_ref) == 3
    got = _spikes([1.0, 2.0, 3.0], [5.0] * 3, engine, t_end=3.0 + gap * TAU_M)
    assert got == pytest.approx(burst_ref, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("gap", GAPS_TAU)
@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_burst_after_long_gap(engine, gap, burst_ref):
    # after gap * tau_m of silence the state has decayed to (numerically) nothing, so a second
    # burst spikes as the first one did, shifted by G (to the ulp of the absolute times)
    G = gap * TAU_M
    times = [1.0, 2.0, 3.0, G + 1.0, G + 2.0, G + 3.0]
    got = _spikes(times, [5.0] * 6, engine, t_end=G + 100.0)
    want = burst_ref + [G + s for s in burst_ref]
    assert got == pytest.approx(want, rel=1e-13, abs=1e-12)


def test_burst_after_long_gap_reference_is_independent(burst_ref):
    # the shifted copy used above is what the mpmath reference gives across the gap too
    G = 1e3 * TAU_M
    full = _ref([1.0, 2.0, 3.0, G + 1.0, G + 2.0, G + 3.0], [5.0] * 6, t_end=G + 100.0)
    assert full == pytest.approx(burst_ref + [G + s for s in burst_ref], rel=1e-14)


@pytest.fixture(scope="module")
def fast_membrane_ref():
    # tau_m = 10 us: the 10 ms between inputs are 1000 tau_m, and tau_m < tau_s reorders the rates
    with mp.workdps(30):
        return _ref([10.0, 20.0], [1.2, 1.2], {"tau_m": 0.01}, t_end=40.0)


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_fast_membrane_long_gaps_between_inputs(engine, fast_membrane_ref):
    assert len(fast_membrane_ref) > 100
    got = _spikes([10.0, 20.0], [1.2, 1.2], engine, t_end=40.0, params={"tau_m": 0.01})
    assert got == pytest.approx(fast_membrane_ref, rel=1e-11)


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_fast_membrane_gradients_stay_finite(engine):
    # the overflow-free factors keep the weight gradient finite and equal to a central difference
    def first_spike(w):
        r = spikescan.simulate(CUBA, "CubaLIF", times=torch.tensor([[10.0, 20.0]], dtype=F64),
                               weights=w, engine=engine, t_end=40.0, params={"tau_m": 0.01},
                               max_spikes=4096)
        return r.times[0, 0]

    w = torch.tensor([[1.2, 1.2]], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(first_spike(w), w)
    h = 1e-6
    fd = (first_spike(torch.tensor([[1.2 + h, 1.2]], dtype=F64))
          - first_spike(torch.tensor([[1.2 - h, 1.2]], dtype=F64))) / (2 * h)
    assert torch.isfinite(g).all() and float(g[0, 0]) == pytest.approx(float(fd), rel=1e-6)
