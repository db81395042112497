"""The documented semantics at ties and edges (docs/engines.md, "Common semantics"), on every CPU
engine, against closed forms: exact ties at threshold after a reset, inputs at the end of a
refractory period, the closed run interval [0, t_end], near-tangent crossings, and the
run-time validation of inputs and parameters (issue 17 items 3, 10, 11, 12, 13)."""

from __future__ import annotations

import math
from pathlib import Path

import mpmath as mp
import pytest
import torch

import mpref
import spikescan

F64 = torch.float64
CPU_ENGINES = ["sequential-cpu", "torch", "torch-sequential"]
MODELS = str(Path(__file__).resolve().parents[2] / "models") + "/"


def _variant(tmp_path, src: str, name: str, **edits) -> str:
    text = open(MODELS + src).read()
    for old, new in edits.values():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.snn"
    path.write_text(text)
    return str(path)


def _spikes(path, neuron, times, weights, engine, **kw):
    r = spikescan.simulate(path, neuron, times=torch.tensor([times], dtype=F64),
                           weights=torch.tensor([weights], dtype=F64), engine=engine, **kw)
    return [x for x in r.times[0].tolist() if math.isfinite(x)]


@pytest.fixture(scope="module")
def lif_th2(tmp_path_factory):
    return _variant(tmp_path_factory.mktemp("m"), "lif.snn", "lif_th2", th=("v_th    = 1.0", "v_th    = 2.0"))


@pytest.fixture(scope="module")
def lif_sub_ref(tmp_path_factory):
    """LIF with a subtractive reset and a 1 ms refractory period."""
    return _variant(tmp_path_factory.mktemp("m"), "lif.snn", "lif_sub_ref",
                    reset=("v = v_reset", "v -= v_th"), ref=("refractory 0 ms", "refractory 1 ms"))


@pytest.fixture(scope="module")
def lif_ref(tmp_path_factory):
    return _variant(tmp_path_factory.mktemp("m"), "lif.snn", "lif_ref", ref=("refractory 0 ms", "refractory 1 ms"))


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_jump_exactly_to_threshold_after_reset(lif_th2, engine):
    # v_th = 2, w = 2: after each hard reset to 0 the next input lands exactly on theta
    times = [0.5, 40.0, 54.147]
    assert _spikes(lif_th2, "LIF", times, [2.0] * 3, engine) == times


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_ties_at_equal_times_after_reset(engine, tmp_path):
    # LIF v_th = 1: 1.0 at 1.25 after a reset at 0.39 is exactly theta; at 3.0 two inputs
    # (4.2, then 1.0) give two spikes at 3.0, the third (-1.0) none (inputs in list order)
    path = MODELS + "lif.snn"
    times = [0.39, 1.25, 1.75, 3.0, 3.0, 3.0, 3.25]
    weights = [1.0, 1.0, 2.0, 4.2, 1.0, -1.0, 0.5]
    assert _spikes(path, "LIF", times, weights, engine, t_end=4.0, chunk=3) == [0.39, 1.25, 1.75, 3.0, 3.0]


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_input_at_refractory_end_is_applied_first(lif_sub_ref, engine):
    # spike at 1.0 (v = 3 -> 2), refractory until 2.0. At 2.0 the input comes first:
    # -1.5 takes v to 2 e^{-1/20} - 1.5 < 1, so there is no spike at the period's end
    v = 2 * math.exp(-1 / 20) - 1.5
    assert v < 1.0
    assert _spikes(lif_sub_ref, "LIF", [1.0, 2.0], [3.0, -1.5], engine, t_end=10.0) == [1.0]
    # +1.0 at 2.0: one spike at 2.0 with the post-jump state, then (v still >= 1 after the
    # subtractive reset) one at the next period's end, 3.0
    v2 = 2 * math.exp(-1 / 20) + 1.0 - 1.0
    assert v2 * math.exp(-1 / 20) >= 1.0 and (v2 * math.exp(-1 / 20) - 1.0) < 1.0
    assert _spikes(lif_sub_ref, "LIF", [1.0, 2.0], [3.0, 1.0], engine, t_end=10.0) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("engine", ["sequential-cpu", "torch", "torch-sequential"])
def test_run_covers_closed_interval(lif_ref, lif_sub_ref, engine):
    lif = MODELS + "lif.snn"
    # an input exactly at t_end is applied and its spike recorded
    assert _spikes(lif, "LIF", [1.0, 5.0], [0.5, 2.0], engine, t_end=5.0) == [5.0]
    assert _spikes(lif_ref, "LIF", [10.0], [2.0], engine, t_end=10.0) == [10.0]
    # a refractory period ending exactly at t_end with v above threshold spikes there
    got = _spikes(lif_sub_ref, "LIF", [0.0], [20.0], engine, t_end=4.0)
    assert got == [0.0, 1.0, 2.0, 3.0, 4.0]
    # inputs after t_end are ignored
    assert _spikes(lif, "LIF", [1.0, 5.0 + 1e-9], [0.5, 2.0], engine, t_end=5.0) == []


BAD_INPUTS = [
    (dict(times=[-math.inf, 1.0]), "event times"),
    (dict(times=[math.nan, 1.0]), "NaN"),
    (dict(times=[-1e-3, 1.0]), "event times"),
    (dict(weights=[math.inf, 1.0]), "weights must be finite"),
    (dict(weights=[math.nan, 1.0]), "weights must be finite"),
    (dict(t_end=math.inf), "t_end"),
    (dict(t_end=math.nan), "t_end"),
    (dict(t_end=-1.0), "t_end"),
    (dict(params={"tau_s": 0.0}), "tau_s"),
    (dict(params={"tau_s": -5.0}), "tau_s"),
    (dict(params={"tau_m": math.nan}), "finite"),
    (dict(params={"v_th": math.inf}), "finite"),
]


@pytest.mark.parametrize("engine", CPU_ENGINES)
@pytest.mark.parametrize("case,match", BAD_INPUTS, ids=[f"{list(c)[0]}={list(c.values())[0]}" for c, _ in BAD_INPUTS])
def test_undefined_inputs_are_errors(engine, case, match):
    kw = dict(times=[1.0, 2.0], weights=[5.0, 5.0], t_end=None, params=None)
    kw.update(case)
    times, weights = kw.pop("times"), kw.pop("weights")
    with pytest.raises(ValueError, match=match):
        _spikes(MODELS + "cuba_lif.snn", "CubaLIF", times, weights, engine, **kw)


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_negative_refractory_parameter_is_an_error(engine, tmp_path):
    path = _variant(tmp_path, "lif.snn", "lif_tr", p=("v_reset = 0.0", "v_reset = 0.0  t_r = 1 ms"),
                    ref=("refractory 0 ms", "refractory t_r"))
    assert _spikes(path, "LIF", [1.0], [2.0], engine, params={"t_r": 1.0}) == [1.0]
    with pytest.raises(ValueError, match="refractory"):
        _spikes(path, "LIF", [1.0], [2.0], engine, params={"t_r": -1.0})


PINT = """
neuron PInt {
    params { tau_m = 20 ms   tau_s = 5 ms   mu = 0.1   v_th = 1.0 }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i + mu) / tau_m
        di/dt = -i / tau_s
    }
    on input(w) { i += w }
    spike when v >= v_th
    on spike { v = 0.0 }
}
"""


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_drive_without_decay_needs_t_end(engine, tmp_path):
    """A perfect integrator with constant drive fires every tau_m v_th / mu = 200 ms forever: an
    automatic horizon would silently cut it, so t_end is required."""
    path = tmp_path / "pint.snn"
    path.write_text(PINT)
    with pytest.raises(ValueError, match="pass t_end"):
        _spikes(str(path), "PInt", [1.0], [0.0], engine)
    got = _spikes(str(path), "PInt", [1.0], [0.0], engine, t_end=700.0)
    assert got == pytest.approx([200.0, 400.0, 600.0], rel=1e-13)


def test_drive_settling_above_threshold_needs_t_end(tmp_path):
    path = tmp_path / "driven.snn"
    path.write_text(open(MODELS + "lif.snn").read().replace("dv/dt = -v / tau_m", "dv/dt = (I0 - v) / tau_m")
                    .replace("v_reset = 0.0", "v_reset = 0.0  I0 = 1.5"))
    for engine in CPU_ENGINES:
        with pytest.raises(ValueError, match="fires forever"):
            _spikes(str(path), "LIF", [1.0], [0.0], engine)
        # below threshold it settles: the automatic horizon is exact, no spikes
        assert _spikes(str(path), "LIF", [1.0], [0.0], engine, params={"I0": 0.5}) == []


@pytest.mark.parametrize("engine", CPU_ENGINES)
@pytest.mark.parametrize("rel", [1e-15, 1e-13, 1e-11])
def test_near_tangent_crossing_is_the_crossing_not_the_peak(engine, rel):
    """CubaLIF peaking at theta (1 + rel): the spike is the first crossing, whose distance from
    the peak (~sqrt(rel) tau) is far above the float64 conditioning limit of the crossing."""
    mp.mp.dps = 50
    tp, vp = mpref.peak_cuba(1.0, 20.0, 5.0)
    w = float(1 / vp * (1 + mp.mpf(rel)))
    ref = mpref.simulate_model("CubaLIF", None, [1.0], [w])
    assert len(ref) == 1
    got = _spikes(MODELS + "cuba_lif.snn", "CubaLIF", [1.0], [w], engine)
    assert len(got) == 1
    peak = 1.0 + float(tp)
    cond = 4e-16 / float(mp.sqrt(mp.mpf(rel)))  # |dt| ~ eps / u'(t*), u' ~ sqrt(rel) / tau
    assert abs(got[0] - float(ref[0])) <= max(50 * cond, 1e-12), (got[0], float(ref[0]), peak)
    assert abs(peak - float(ref[0])) > 10 * abs(got[0] - float(ref[0]))
