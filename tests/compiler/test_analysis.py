"""AST -> NeuronIR / NetworkIR: linear system extraction, ordering, diagnostics, networks."""

from __future__ import annotations

import astbuild
import pytest
import sympy

from spikescan.compiler.analysis import analyze_network, analyze_neuron
from spikescan.compiler.driver import load_model
from spikescan.compiler.errors import CompileError
from spikescan.dsl.diagnostics import DiagnosticError


def sym(ir, name):
    return next(p.symbol for p in ir.params if p.name == name)


def test_cuba_lif_linear_system(models_dir):
    ir = load_model(models_dir / "cuba_lif.snn").neurons["CubaLIF"]
    tm, ts = sym(ir, "tau_m"), sym(ir, "tau_s")
    assert ir.state == ("i", "v")  # ordered so that A is lower triangular
    assert ir.A == sympy.Matrix([[-1 / ts, 0], [1 / tm, -1 / tm]])
    assert ir.a0 == sympy.zeros(2, 1)
    assert ir.ports == {"input": sympy.Matrix([1, 0])}
    assert ir.c == sympy.Matrix([0, 1]) and ir.theta == sym(ir, "v_th")
    assert ir.R == sympy.Matrix([[1, 0], [0, 0]]) and ir.r == sympy.Matrix([0, sym(ir, "v_reset")])
    assert ir.t_ref == 0
    assert ir.defaults() == {"tau_m": 20.0, "tau_s": 5.0, "v_th": 1.0, "v_reset": 0.0}
    assert [p.dim for p in ir.params] == [1, 1, 0, 0]
    assert ir.potential == ir.c


def test_units_convert_to_ms():
    n = astbuild.neuron("U", {"tau": "0.02 s", "tr": "500 us", "v_th": "1"}, {"v": "0"}, {"v": "-v / tau"},
                        inputs={"input": ("w", "v += w")}, threshold=("v", "v_th"), refractory="2000 us")
    ir = analyze_neuron(n)
    assert ir.defaults()["tau"] == 20.0 and ir.defaults()["tr"] == 0.5
    assert ir.t_ref == 2


def test_parameter_units_come_from_the_dsl():
    """Dimensions and defaults are the dsl's (dsl.checks.neuron_param_info): a rate, a time
    written in s, a square root of a time."""
    n = astbuild.neuron("U", {"tau": "0.02 s", "k": "2 / tau_x", "tau_x": "4 ms", "r": "1 / (5 ms)",
                              "q": "sqrt(4 ms)", "v_th": "1"},
                        {"v": "0"}, {"v": "-v / tau"}, inputs={"input": ("w", "v += w")},
                        threshold=("v", "v_th"))
    d = _err(analyze_neuron, n)  # defaults are constants: `2 / tau_x` is refused as by the dsl
    assert d.code == "E024" and "tau_x" in d.message
    n = astbuild.neuron("U", {"tau": "0.02 s", "r": "1 / (5 ms)", "q": "sqrt(4 ms)", "v_th": "1"},
                        {"v": "0"}, {"v": "-v / tau"}, inputs={"input": ("w", "v += w")},
                        threshold=("v", "v_th"))
    ir = analyze_neuron(n)
    assert {p.name: p.dim for p in ir.params} == {"tau": 1, "r": -1, "q": 0.5, "v_th": 0}
    assert ir.defaults() == {"tau": 20.0, "r": 0.2, "q": 2.0, "v_th": 1.0}


@pytest.mark.parametrize("field,code", [("dyn", "E010"), ("fn", "E019"), ("default", "E037")])
def test_unchecked_ast_errors_are_diagnostics(field, code):
    """analyze_neuron on an AST that skipped the dsl checks still ends in a diagnostic."""
    kw = dict(name="Bad", params={"tau": "10 ms", "v_th": "1"}, state={"v": "0"}, dynamics={"v": "-v / tau"},
              inputs={"input": ("w", "v += w")}, threshold=("v", "v_th"))
    if field == "dyn":
        kw["dynamics"] = {"v": "-v / tau_nope"}
    elif field == "fn":
        kw["dynamics"] = {"v": "-v / tau * sin(1)"}
    else:
        kw["params"] = {"tau": "1e999 ms", "v_th": "1"}
    d = _err(analyze_neuron, astbuild.neuron(**kw))
    assert d.code == code and d.span is not None


def test_li_readout_potential_is_first_declared_variable(models_dir):
    ir = load_model(models_dir / "li_readout.snn").neurons["LI"]
    assert ir.c is None and ir.theta is None and ir.solver == "none"
    assert ir.state == ("i", "v")
    assert ir.potential == sympy.Matrix([0, 1])  # v, declared first, stored second


def test_several_ports_and_scaled_jumps():
    n = astbuild.neuron("Two", {"tau": "10 ms", "k": "0.5", "v_th": "1"}, {"v": "0", "e": "0", "h": "0"},
                        {"v": "(e - h - v) / tau", "e": "-e / tau", "h": "-h / tau"},
                        inputs={"input_exc": ("w", "e += w"), "input_inh": ("w", "h += k * w; v -= w")},
                        threshold=("v", "v_th"), reset="v = 0")
    ir = analyze_neuron(n)
    assert list(ir.ports) == ["input_exc", "input_inh"]
    e, h, v = (ir.state.index(s) for s in "ehv")
    Bi = ir.ports["input_inh"]
    assert Bi[h] == sym(ir, "k") and Bi[v] == -1 and Bi[e] == 0
    assert ir.ports["input_exc"][e] == 1


def _err(fn, *args):
    with pytest.raises(CompileError) as exc:
        fn(*args)
    return exc.value.diagnostic


def test_cyclic_coupling_is_a_diagnostic():
    n = astbuild.neuron("Osc", {"tau": "10 ms", "v_th": "1"}, {"v": "0", "u": "0"},
                        {"v": "(u - v) / tau", "u": "(v - u) / tau"}, inputs={"input": ("w", "v += w")},
                        threshold=("v", "v_th"))
    d = _err(analyze_neuron, n)
    assert d.code == "E060" and "cyclic" in d.message and d.hint


@pytest.mark.parametrize("field,code", [
    ("dyn", "E020"), ("input", "E022"), ("input_offset", "E022"), ("threshold", "E021"), ("reset", "E023")])
def test_non_linear_constructs_are_diagnostics(field, code):
    kw = dict(name="Bad", params={"tau": "10 ms", "v_th": "1"}, state={"v": "0"}, dynamics={"v": "-v / tau"},
              inputs={"input": ("w", "v += w")}, threshold=("v", "v_th"), reset="v = 0")
    if field == "dyn":
        kw["dynamics"] = {"v": "-v * v / tau"}
    elif field == "input":
        kw["inputs"] = {"input": ("w", "v += w * w")}
    elif field == "input_offset":
        kw["inputs"] = {"input": ("w", "v += w + 1")}
    elif field == "threshold":
        kw["threshold"] = ("v * v", "v_th")
    else:
        kw["reset"] = "v = v * v"
    d = _err(analyze_neuron, astbuild.neuron(**kw))
    assert d.code == code


def test_propagator_with_four_distinct_rates_on_a_path_is_refused():
    n = astbuild.neuron("Deep", {"t1": "1 ms", "t2": "2 ms", "t3": "3 ms", "t4": "4 ms", "v_th": "1"},
                        {"v": "0", "a": "0", "b": "0", "c": "0"},
                        {"v": "(a - v) / t1", "a": "(b - a) / t2", "b": "(c - b) / t3", "c": "-c / t4"},
                        inputs={"input": ("w", "c += w")}, threshold=("v", "v_th"))
    d = _err(analyze_neuron, n)
    assert d.code == "E061"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_network_analysis_yinyang(models_dir):
    m = load_model(models_dir / "yinyang.snn")
    net = m.networks["yinyang"]
    assert net.inputs == {"x": 5}
    assert [l.name for l in net.layers] == ["hidden", "out"]
    h, o = net.layers
    assert h.size == 120 and h.neuron == "CubaLIF" and h.params["tau_m"] == 20.0 and h.params["v_th"] == 1.0
    assert h.connections[0].source == "x" and h.connections[0].port == "input"
    assert h.connections[0].init.kind == "normal" and h.connections[0].init.a == 1.5 and h.connections[0].init.b == 0.8
    assert o.connections[0].source == "hidden" and o.connections[0].delays is None
    assert net.readout.layer == "out" and net.readout.kind == "first_spike"


def test_network_analysis_shd_recurrent_and_readout(models_dir):
    net = load_model(models_dir / "shd.snn").networks["shd"]
    h = net.layers[0]
    kinds = [(c.kind, c.source) for c in h.connections]
    assert kinds == [("dense", "x"), ("recurrent", "hidden")]
    assert net.layers[1].neuron == "LI" and net.readout.kind == "max_potential"


def test_network_topological_order_delays_ports_overrides(tmp_path, models_dir):
    (tmp_path / "cuba_lif.snn").write_text((models_dir / "cuba_lif.snn").read_text())
    p = _write(tmp_path, "net.snn", """
import "cuba_lif.snn"
neuron Two {
    params { tau = 10 ms  v_th = 1.0 }
    state { v = 0.0  e = 0.0  h = 0.0 }
    dynamics {
        dv/dt = (e - h - v) / tau
        de/dt = -e / tau
        dh/dt = -h / tau
    }
    on input_exc(w) { e += w }
    on input_inh(w) { h += w }
    spike when v >= v_th
    on spike { v = 0.0 }
}
network n {
    input x[4]
    layer mid[3] = Two(tau = 0.015 s) <- dense(x, port = input_inh, delays = fixed(1.5 ms), init = uniform(-1, 1))
    layer out[2] = CubaLIF(tau_s = 2 ms, v_th = 0.5) <- dense(mid, delays = learnable(max = 5 ms), init = constant(0.25))
    readout out: li_integral
}
""")
    net = load_model(p).networks["n"]
    assert [l.name for l in net.layers] == ["mid", "out"]
    mid, out = net.layers
    assert mid.params == {"tau": 15.0, "v_th": 1.0}
    c = mid.connections[0]
    assert c.port == "input_inh" and not c.delays.learnable and c.delays.max == 1.5
    assert c.init.kind == "uniform" and (c.init.a, c.init.b) == (-1.0, 1.0)
    d = out.connections[0].delays
    assert d.learnable and d.max == 5.0 and d.init < 0  # uniform in [0, max]
    assert out.connections[0].init == type(c.init)(kind="constant", a=0.25, b=0.25)
    assert out.params["tau_s"] == 2.0 and out.params["v_th"] == 0.5 and out.params["tau_m"] == 20.0
    assert net.readout.kind == "li_integral" and net.readout.args == {}


def _net(layers, readout="out"):
    from astbuild import SPAN
    from spikescan.dsl import ast

    return ast.Network(
        name="h", inputs=(ast.InputPop("x", 3, SPAN),),
        layers=tuple(ast.Layer(n, 2, "CubaLIF", (), tuple(ast.Connection(k, s, (), SPAN, SPAN) for k, s in conns),
                               SPAN, SPAN, SPAN) for n, conns in layers),
        readouts=(ast.Readout(readout, "spike_count", (), SPAN, SPAN),), span=SPAN)


def test_layers_are_topologically_ordered_and_cycles_refused():
    neurons = {"CubaLIF": analyze_neuron(astbuild.cuba_lif())}
    net = analyze_network(_net([("out", [("dense", "b")]), ("b", [("dense", "a"), ("recurrent", "out")]),
                                ("a", [("dense", "x"), ("recurrent", "a")])]), neurons)
    assert [l.name for l in net.layers] == ["a", "b", "out"]
    assert net.layers[0].connections[1].source == "a"
    with pytest.raises(CompileError) as exc:
        analyze_network(_net([("out", [("dense", "b")]), ("b", [("dense", "out")])]), neurons)
    assert exc.value.diagnostic.code == "E063"
    with pytest.raises(CompileError) as exc:
        analyze_network(_net([("out", [("dense", "nowhere")])]), neurons)
    assert exc.value.diagnostic.code == "E043"


@pytest.mark.parametrize("option,ok", [("learnable(5 ms, init = 1 ms)", (True, 5.0, 1.0)),
                                       ("fixed(value = 0.002 s)", (False, 2.0, 2.0)),
                                       ("fixed(1 ms, 2 ms)", None), ("learnable(5 ms, max = 1 ms)", None),
                                       ("learnable(init = 1 ms)", None)])
def test_connection_options_bound_as_the_dsl_binds_them(option, ok):
    """Arguments of option calls go through dsl.checks.bind_args even on an unchecked AST."""
    from astbuild import SPAN, expr
    from spikescan.dsl import ast

    conn = ast.Connection("dense", "x", (("delays", expr(option)),), SPAN, SPAN)
    net = ast.Network(name="h", inputs=(ast.InputPop("x", 3, SPAN),),
                      layers=(ast.Layer("out", 2, "CubaLIF", (), (conn,), SPAN, SPAN, SPAN),),
                      readouts=(ast.Readout("out", "spike_count", (), SPAN, SPAN),), span=SPAN)
    neurons = {"CubaLIF": analyze_neuron(astbuild.cuba_lif())}
    if ok is None:
        with pytest.raises(CompileError) as exc:
            analyze_network(net, neurons)
        assert exc.value.diagnostic.code == "E047"
    else:
        d = analyze_network(net, neurons).layers[0].connections[0].delays
        assert (d.learnable, d.max, d.init) == ok
