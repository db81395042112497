"""Sparse-network language (docs/sparse.md): `sparse(...)` connections, `param` constants, seeded
initial states, and what the analysis makes of them (compiler/sparse_ir.py). The diagnostics
E085-E090 have their fixtures in tests/dsl/fixtures."""

import math
from pathlib import Path

import pytest

import spikescan.dsl as dsl
from spikescan.compiler.driver import analyze_module, load_model
from spikescan.dsl.diagnostics import DiagnosticError

ROOT = Path(__file__).resolve().parents[2]
NEURON = ("neuron D { params { tau_m = 10 ms  mu = 1.5 } state { v = 0.0 } "
          "dynamics { dv/dt = (mu - v) / tau_m } on input(w) { v += w } spike when v >= 1.0 "
          "on spike { v = 0.0 } }\n")


def _codes(net_text):
    _, diags = dsl.check_source(NEURON + net_text, "inline.snn")
    return [d.code for d in diags]


def test_balanced_model_analysis():
    m = load_model(ROOT / "models" / "balanced_ei.snn")
    net = m.networks["balanced_ei"]
    assert net.readout is None and net.inputs == {}
    E, I = net.layers
    assert (E.name, E.size, I.name, I.size) == ("E", 800, "I", 200)
    ee, ei = E.connections
    assert (ee.kind, ee.source, ee.k, ee.seed) == ("sparse", "E", 80, 1)
    assert (ei.source, ei.k, ei.seed) == ("I", 20, 2)
    assert ee.init.kind == "constant" and ee.init.a == pytest.approx(0.5 / math.sqrt(100))
    assert ei.init.a == pytest.approx(-16 * 0.5 / math.sqrt(100))
    assert E.state_init["v"].kind == "uniform" and (E.state_init["v"].a, E.state_init["v"].b) == (0.0, 1.0)
    nir = m.neurons["DrivenLIF"]
    assert str(nir.a0[0]) == "p_mu/p_tau_m"  # the constant drive is the a0 term


@pytest.mark.parametrize("text,codes", [
    ("network n { layer E[80] = D() <- sparse(E, k = 0) }", ["E085"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 2.5) }", ["E085"]),
    ("network n { layer E[80] = D() <- sparse(E) }", ["E085"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 81) }", ["E085"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 80, seed = -1) }", ["E086"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 8, init = gamma(1, 2)) }", ["E086"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 8, init = uniform(2, 1)) }", ["E086"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 8, k = 9) }", ["E086"]),
    ("network n { input x[3] layer E[80] = D() <- sparse(E, k = 8) }", ["E092"]),  # x drives nothing
    ("network n { input x[3] layer E[80] = D() <- sparse(x, k = 4) }", ["E085"]),  # k > |x|
    ("network n { input x[3] layer E[80] = D() <- sparse(x, k = 2), dense(x) }", ["E091"]),
    ("network n { input x[3] layer E[80] = D() <- dense(x, init = auto(rate = 10 Hz)), sparse(E, k = 2) }",
     ["E091"]),
    ("network n { input x[3] layer E[80] = D() <- recurrent(x), sparse(E, k = 2) }", ["E087", "E047"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 8) readout E: spike_count }", ["E087"]),
    ("network n { param K = 10 param K = 11 layer E[80] = D() <- sparse(E, k = K) }", ["E088"]),
    ("network n { param K = 10 ms layer E[80] = D() <- sparse(E, k = 8) }", ["E088"]),
    ("network n { input x[2] param K = 10 layer E[80] = D() <- dense(x) readout E: spike_count }", ["E088"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 8) { init v = uniform(0, 1) init v = 0.5 } }", ["E089"]),
    ("network n { input x[2] layer E[80] = D() <- dense(x) { init v = 0.5 } readout E: spike_count }", ["E089"]),
    ("network n { layer E[80] = D() <- sparse(E, k = 8) { init v = normal(0, -1) } }", ["E089"]),
])
def test_sparse_diagnostics(text, codes):
    assert _codes(text) == codes


def test_valid_variants_and_constants():
    text = ("network n { param K = 4  param J = 2 * K\n"
            "  layer E[10] = D(mu = 2.0) <- sparse(itself_is_not_a_name_here_E_is, k = K) }")
    assert "E043" in _codes(text)  # an unknown source is the ordinary E043
    text = ("network n { param K = 4  param J = 2 * K\n"
            "  layer E[10] = D(mu = 2.0) <- sparse(itself, k = K, init = normal(0, J / sqrt(K)), seed = 7)\n"
            "  { init v = 0.25 } }")
    module, diags = dsl.check_source(NEURON + text, "inline.snn")
    assert diags == []
    _, nets = analyze_module(module)
    (c,) = nets["n"].layers[0].connections
    assert (c.source, c.k, c.seed, c.init.kind, c.init.a, c.init.b) == ("E", 4, 7, "normal", 0.0, 4.0)
    assert nets["n"].layers[0].params["mu"] == 2.0
    assert nets["n"].layers[0].state_init["v"].kind == "constant"


def test_dense_networks_unchanged():
    m = load_model(ROOT / "models" / "yinyang.snn")
    for net in m.networks.values():
        assert net.readout is not None
        assert all(c.kind != "sparse" and c.k == 0 for l in net.layers for c in l.connections)


def test_spiking_network_refuses_sparse_networks():
    from spikescan.runtime.network import SpikingNetwork

    with pytest.raises(ValueError, match="spikescan run"):
        SpikingNetwork(load_model(ROOT / "models" / "balanced_ei.snn"))
