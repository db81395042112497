"""Checks on the parameter values a neuron is simulated with (dsl/effective.py, issue 17 item
6): a refractory period made negative by a layer's overrides (E036 at check time, it used to
pass the check), and W001, the warning for a reset that leaves the neuron at or above its
threshold (`v_th <= v_reset` used to pass silently and fire without end)."""

from pathlib import Path

import pytest

import spikescan.dsl as dsl
from spikescan.dsl.cli_check import run as check_run

FIXTURES = Path(__file__).parent / "fixtures"

REFRACTORY = """neuron R {
    params { tau_m = 20 ms  tau_s = 5 ms  v_th = 1.0 }
    state { v = 0.0  i = 0.0 }
    dynamics { dv/dt = (i - v) / tau_m
               di/dt = -i / tau_s }
    on input(w) { i += w }
    spike when v >= v_th
    on spike { v = 0 }
    refractory tau_m - tau_s
}
network n {
    input x[3]
    layer out[2] = R(OVERRIDES) <- dense(x)
    readout out: first_spike
}
"""


def _diags(src):
    module, diags = dsl.check_source(src, str(FIXTURES / "effective.snn"))
    return diags


def test_override_making_the_refractory_period_negative_is_E036():
    diags = _diags(REFRACTORY.replace("OVERRIDES", "tau_m = 2 ms, tau_s = 5 ms"))
    assert [(d.code, d.span.line, d.span.col, d.severity) for d in diags] == [("E036", 13, 20, "error")]
    d = diags[0]
    assert "-3 ms" in d.message and "`out`" in d.message and "line 9" in d.hint


@pytest.mark.parametrize("ov", ["", "tau_m = 5 ms", "tau_m = 30 ms, tau_s = 2 ms", "v_th = 2.0"])
def test_overrides_keeping_the_refractory_period_non_negative_are_clean(ov):
    assert _diags(REFRACTORY.replace("OVERRIDES", ov)) == []


def test_W001_fixture_is_a_warning_with_span_caret_and_hint(capsys):
    path = FIXTURES / "W001.snn"
    module, diags = dsl.check_file(path)
    assert module is not None and [(d.code, d.span.line, d.span.col) for d in diags] == [("W001", 9, 5)]
    d = diags[0]
    assert d.severity == "warning" and not d.is_error and d.hint
    out = d.render(path.read_text()).split("\n")
    assert out[0] == f"{d.span.file}:9:5: warning[W001]: {d.message}"
    assert out[2].strip().startswith("^~") and out[-1] == f"hint: {d.hint}"
    dsl.load(path)  # a warning does not stop loading
    # `spikescan check` prints it and still succeeds
    assert check_run(type("A", (), {"paths": [str(path)], "no_analysis": True})()) == 0
    assert "warning[W001]" in capsys.readouterr().err


NEURON = """neuron N {
    params { tau_m = 20 ms   v_th = TH   v_reset = VR }
    state  { v = 0.0   a = 0.0 }
    dynamics { dv/dt = -v / tau_m
               da/dt = -a / tau_m }
    on input(w) { v += w }
    spike when v - a >= v_th
    on spike { RESET }
}
"""


@pytest.mark.parametrize("th,vr,reset,warn", [
    ("1.0", "0.0", "v = v_reset", False),
    ("1.0", "1.0", "v = v_reset", False),      # v - a after the reset depends on a: undecided
    ("0.0", "0.5", "v = v_reset", False),
    ("1.0", "0.0", "v = v_reset  a = 0", False),
    ("1.0", "1.5", "v = v_reset  a = 0", True),  # v_th <= v_reset
    ("1.0", "1.0", "v = v_reset  a = 0", True),
    ("1.0", "0.0", "v -= v_th", False),        # subtractive reset lowers the potential
    ("1.0", "0.0", "v += 0.2", True),          # raises it
    ("1.0", "0.0", "a += 0.2", False),         # adaptation lowers v - a
])
def test_W001_cases(th, vr, reset, warn):
    diags = _diags(NEURON.replace("TH", th).replace("VR", vr).replace("RESET", reset))
    assert [d.code for d in diags] == (["W001"] if warn else [])


def test_W001_for_a_layer_override():
    src = (NEURON.replace("TH", "1.0").replace("VR", "0.0").replace("RESET", "v = v_reset  a = 0")
           + "network n {\n    input x[2]\n    layer h[3] = N(v_reset = 2.0) <- dense(x)\n"
           "    readout h: first_spike\n}\n")
    diags = _diags(src)
    assert [(d.code, d.span.line, d.span.col, d.severity) for d in diags] == [("W001", 12, 18, "warning")]
    assert "`h`" in diags[0].message
