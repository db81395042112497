"""Bounded resources (issue 11 items 7 and 8): constant folding always ends quickly, network
sizes are limited, names are limited, and each bound is a diagnostic (docs/language.md, Limits)."""

import time

import pytest

import spikescan.dsl as dsl
from spikescan.dsl import checks

NEURON = ("neuron N {{ params {{ tau = 20 ms  a = {a} }} state {{ v = 0.0 }}\n"
          "  dynamics {{ dv/dt = -v / tau }} on input(w) {{ v += w }} }}\n")


def _codes(text, name="limits.snn"):
    _, diags = dsl.check_source(text, name)
    return [d.code for d in diags]


@pytest.mark.parametrize("a,code", [("10 ^ 10 ^ 10", "E035"), ("2 ^ 100000", "E035"),
                                    ("(10^300)^1000", "E037"), ("((10^300)^1000)^1000", "E037"),
                                    ("exp(exp(exp(100)))", "E037"), ("exp(exp(1000))", "E037"),
                                    ("-exp(1000)", "E037"), ("1e308 * 10", "E037"),
                                    ("10^400", "E037"), ("(1e-300)^1000", "E037")])
def test_constant_folding_is_bounded(a, code):
    t0 = time.perf_counter()
    assert _codes(NEURON.format(a=a)) == [code]
    assert time.perf_counter() - t0 < 2.0  # `10 ^ 10 ^ 10` never finished before


@pytest.mark.parametrize("a", ["2 ^ 1000 / 2 ^ 999", "exp(-1000)", "exp(709)", "10^-300 * 10^300",
                               "2^0.5", "exp(exp(-1000))"])
def test_large_but_fine_constants(a):
    assert _codes(NEURON.format(a=a)) == []


def test_huge_exponent_in_the_dynamics_and_state():
    src = ("neuron N { params { tau = 20 ms } state { v = 10^10^10 }\n"
           "  dynamics { dv/dt = -v / tau * (1 + tau/tau)^(10^10) } on input(w) { v += w } }\n")
    t0 = time.perf_counter()
    codes = _codes(src)
    assert codes and set(codes) <= {"E035", "E037"} and time.perf_counter() - t0 < 5


NET = ("neuron N { params { tau = 20 ms  v_th = 1.0 } state { v = 0.0 }\n"
       "  dynamics { dv/dt = -v / tau } on input(w) { v += w } spike when v >= v_th }\n"
       "network n {{ input x[{n_in}]\n  layer h[{n_h}] = N() <- dense(x){rec}\n"
       "  readout h: spike_count }}\n")


def _net(n_in, n_h, rec=""):
    return _codes(NET.replace("{{", "{").replace("}}", "}").replace("{n_in}", str(n_in))
                  .replace("{n_h}", str(n_h)).replace("{rec}", rec))


def test_population_limit():
    assert _net(5, checks.MAX_POPULATION) == []
    assert _net(5, checks.MAX_POPULATION + 1) == ["E053"]
    assert _net(5, 1_000_000_000) == ["E053"]  # 40 GB at run time before
    assert _net(10**30, 5) == ["E053"]


def test_weight_limit():
    side = int(checks.MAX_WEIGHTS ** 0.5)  # 10000 x 10000 = exactly the limit
    assert _net(side, side) == []
    assert _net(side, side + 1) == ["E053"]
    assert _net(1, side, ", recurrent()") == ["E053"]  # h x h recurrent weights count too


def test_name_limit():
    ok, long = "a" * checks.MAX_NAME, "a" * (checks.MAX_NAME + 1)
    src = NEURON.format(a=1)
    assert _codes(src.replace("neuron N", "neuron " + ok)) == []
    assert _codes(src.replace("neuron N", "neuron " + long)) == ["E026"]
    assert _codes(NEURON.format(a=1).replace("tau", long)) == ["E026"]
