"""Every example model parses and checks; golden AST dumps; the dsl never imports torch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sympy

import spikescan.dsl as dsl
from spikescan.dsl import ast
from spikescan.dsl.dump import dump
from spikescan.dsl.sym import to_sympy

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted((ROOT / "models").glob("*.snn"))
GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("SPIKESCAN_REGEN_GOLDEN") == "1"


def test_models_exist():
    names = {p.name for p in MODELS}
    assert {"lif.snn", "cuba_lif.snn", "alpha_lif.snn", "adaptive_lif.snn", "li_readout.snn",
            "yinyang.snn", "shd.snn", "nmnist.snn"} <= names


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_model_checks_clean(path):
    module, diags = dsl.check_file(path)
    assert module is not None and diags == [], dsl.diagnostics.render_all(diags)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_golden_ast(path):
    """Compact AST dump vs tests/dsl/golden; regenerate with SPIKESCAN_REGEN_GOLDEN=1."""
    text = dump(dsl.load(path)) + "\n"
    golden = GOLDEN / (path.stem + ".txt")
    if REGEN:
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}; run with SPIKESCAN_REGEN_GOLDEN=1"
    assert text == golden.read_text()


def _neuron(file, name):
    return dsl.load(ROOT / "models" / file).visible_neurons[name]


def test_cuba_lif_is_exactly_the_design():
    """DESIGN.md section 2, checked through sympy rather than the dump."""
    n = _neuron("cuba_lif.snn", "CubaLIF")
    syms = {k: sympy.Symbol(k, real=True) for k in ("v", "i", "tau_m", "tau_s", "v_th", "v_reset", "w")}
    v, i, tau_m, tau_s, w = (syms[k] for k in ("v", "i", "tau_m", "tau_s", "w"))
    defaults = {p.name: to_sympy(p.default, {}) for p in n.params}
    assert defaults == {"tau_m": 20, "tau_s": 5, "v_th": 1, "v_reset": 0}
    odes = {o.var: to_sympy(o.rhs, syms) for o in n.dynamics}
    assert sympy.simplify(odes["v"] - (i - v) / tau_m) == 0
    assert sympy.simplify(odes["i"] + i / tau_s) == 0
    assert [(a.target, a.op, to_sympy(a.value, syms)) for a in n.inputs[0].body] == [("i", "+=", w)]
    assert n.inputs[0].name == "input" and n.inputs[0].weight == "w"
    assert to_sympy(n.threshold.lhs, syms) == v and to_sympy(n.threshold.rhs, syms) == syms["v_th"]
    assert [(a.target, a.op, to_sympy(a.value, syms)) for a in n.reset] == [("v", "=", syms["v_reset"])]
    assert to_sympy(n.refractory.period, {}) == 0


def test_adaptive_and_alpha_structure():
    ad = _neuron("adaptive_lif.snn", "AdaptiveLIF")
    assert [s.name for s in ad.state] == ["v", "i", "a"]
    assert [(a.target, a.op) for a in ad.reset] == [("v", "="), ("a", "+=")]
    syms = {k: sympy.Symbol(k, real=True) for k in ("v", "a", "v_th")}
    lhs = to_sympy(ad.threshold.lhs, syms) - to_sympy(ad.threshold.rhs, syms)
    assert sympy.expand(lhs - (syms["v"] - syms["a"] - syms["v_th"])) == 0
    al = _neuron("alpha_lif.snn", "AlphaLIF")
    assert [s.name for s in al.state] == ["v", "i", "g"] and al.inputs[0].body[0].target == "g"
    li = _neuron("li_readout.snn", "LI")
    assert li.threshold is None and li.reset == () and [s.name for s in li.state] == ["v", "i"]


def test_networks_structure():
    yy = dsl.load(ROOT / "models" / "yinyang.snn")
    net = yy.networks[0]
    assert [(p.name, p.size) for p in net.inputs] == [("x", 5)]
    assert [(l.name, l.size, l.neuron) for l in net.layers] == [("hidden", 120, "CubaLIF"), ("out", 3, "CubaLIF")]
    assert [(c.kind, c.source) for c in net.layers[1].connections] == [("dense", "hidden")]
    assert [(r.layer, r.kind) for r in net.readouts] == [("out", "first_spike")]
    # imported neurons keep the span of their own file
    assert yy.visible_neurons["CubaLIF"].span.file.endswith("cuba_lif.snn")
    shd = dsl.load(ROOT / "models" / "shd.snn").networks[0]
    assert [(c.kind, c.source) for c in shd.layers[0].connections] == [("dense", "x"), ("recurrent", "hidden")]
    assert shd.layers[1].neuron == "LI" and shd.readouts[0].kind == "max_potential"
    nm = dsl.load(ROOT / "models" / "nmnist.snn").networks[0]
    assert (nm.inputs[0].size, nm.layers[0].size, nm.layers[1].size) == (2312, 350, 10)


def test_full_network_syntax():
    """Every network construct of the issue, in one file (delays, ports, li_integral, ...)."""
    src = '''
    neuron Two {
        params { tau = 10 ms  v_th = 1.0 }
        state { v = 0.0 }
        dynamics { dv/dt = -v / tau }
        on input_exc(w) { v += w }
        on input_inh(w) { v -= w }
        spike when v >= v_th
        on spike { v -= v_th }
        refractory 2 ms
    }
    network n {
        input x[4]
        layer h[8] = Two(tau = 0.015 s) <- dense(x, delays = learnable(max = 5 ms), port = input_exc),
                                           dense(x, delays = fixed(2 ms), port = input_inh, init = uniform(0, 1)),
                                           recurrent(init = constant(0.1))
        readout h: li_integral
        readout h: spike_count
    }
    '''
    module, diags = dsl.check_source(src, "inline.snn")
    assert diags == []
    h = module.networks[0].layers[0]
    assert to_sympy(h.overrides[0].value, {}) == 15  # 0.015 s -> 15 ms
    kinds = [(c.kind, c.source, [k for k, _ in c.options]) for c in h.connections]
    assert kinds == [("dense", "x", ["delays", "port"]), ("dense", "x", ["delays", "port", "init"]),
                     ("recurrent", "h", ["init"])]
    assert dict(h.connections[1].options)["port"] == ast.Name("input_inh", dict(h.connections[1].options)["port"].span)
    assert module.networks[0].readouts[0].args == ()


def test_dsl_does_not_import_torch_nor_the_compiler():
    # the language package never imports the compiler; `spikescan check` (which runs the
    # compiler's analysis) still never imports torch
    code = ("import sys, spikescan.dsl as d; d.load(sys.argv[1]); "
            "assert not [m for m in sys.modules if m.startswith('spikescan.compiler')]; "
            "from spikescan.cli import main; assert main(['check', sys.argv[1]]) == 0; "
            "assert 'spikescan.compiler.analysis' in sys.modules; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "models" / "shd.snn")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
