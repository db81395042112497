"""conv2d / pool2d in the language (dsl/conv.py): shapes, options and the geometry the compiler
records (ConvSpec), beyond the one-per-code fixtures E080-E084."""

from pathlib import Path

import pytest

import spikescan.dsl as dsl
from spikescan.compiler.analysis import analyze_network
from spikescan.compiler.driver import analyze_module

FIXTURES = Path(__file__).parent / "fixtures"
HEAD = 'from "lib/base.snn" import CubaLIF, LI\nnetwork n {\n'


def _codes(body: str):
    _, diags = dsl.check_source(HEAD + body + "}\n", str(FIXTURES / "conv_inline.snn"))
    return [(d.code, d.message) for d in diags]


VALID = """    input  x[2, 9, 9]
    layer  c[4, 5, 5] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3, stride = 2, padding = 1)
    layer  p[4, 1, 1] = CubaLIF() <- pool2d(c, size = 5, init = constant(2.0))
    layer  out[3] = CubaLIF() <- dense(p)
    readout out: first_spike
"""


def test_valid_network_and_its_ir():
    assert _codes(VALID) == []
    module, diags = dsl.check_source(HEAD + VALID + "}\n", str(FIXTURES / "conv_inline.snn"))
    _, nets = analyze_module(module)
    net = nets["n"]
    assert net.inputs == {"x": 162} and net.shapes == {"x": (2, 9, 9)}
    c, p, out = net.layers
    assert (c.size, c.shape, p.size, p.shape, out.shape) == (100, (4, 5, 5), 4, (4, 1, 1), (3,))
    cs = c.connections[0].conv
    assert (cs.in_shape, cs.out_shape, cs.kernel, cs.stride, cs.padding) == ((2, 9, 9), (4, 5, 5), 3, 2, 1)
    ps = p.connections[0]
    assert ps.kind == "pool2d" and ps.conv.kernel == ps.conv.stride == 5 and ps.init.a == 2.0
    assert out.connections[0].conv is None  # dense over a 3-D layer: the flat index (flatten)


@pytest.mark.parametrize("body, code, words", [
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, kernel = 3, padding = 1)", "E080", "needs `channels`"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3, padding = 1, "
     "delays = fixed(1 ms))", "E080", "unknown option `delays`"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3 ms, padding = 1)", "E080", "without unit"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 0, kernel = 3, padding = 1)", "E080", "positive"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3, padding = -1)", "E080", "non-negative"),
    ("layer c[2, 4, 4] = CubaLIF() <- pool2d(x, 2, init = normal(0, 1))", "E080", "constant(value)"),
    ("layer c[2, 2, 2] = CubaLIF() <- pool2d(x, 3)", "E082", "does not divide"),
    ("layer c[4, 1, 1] = CubaLIF() <- conv2d(x, channels = 4, kernel = 9)", "E082", "larger than"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3, padding = 3)", "E082", "smaller than"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(d, channels = 4, kernel = 3, padding = 1)\n"
     "layer d[2, 8, 8] = CubaLIF() <- dense(x)", "E081", "later layer"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3, padding = 1), recurrent(c)",
     "E083", "1 other"),
    ("layer c[4, 8, 8, 1] = CubaLIF() <- dense(x)", "E084", "4 dimensions"),
    ("layer c[4, 8, 8] = CubaLIF() <- conv2d(x, channels = 4, kernel = 3, padding = 1, init = constant(1.0), "
     "init = constant(2.0))", "E080", "given twice"),
])
def test_invalid(body, code, words):
    codes = _codes(f"    input x[2, 8, 8]\n    {body}\n    readout c: first_spike\n")
    assert [c for c, _ in codes] == [code], codes
    assert words in codes[0][1] or words in str(codes), codes


def test_positional_pool_size_is_the_size_option():
    a = _codes("    input x[2, 8, 8]\n    layer p[2, 4, 4] = CubaLIF() <- pool2d(x, 2)\n    readout p: first_spike\n")
    b = _codes("    input x[2, 8, 8]\n    layer p[2, 4, 4] = CubaLIF() <- pool2d(x, size = 2)\n    readout p: first_spike\n")
    assert a == b == []


def test_weight_limit_counts_the_kernel_not_a_dense_matrix():
    # 32 x 100 x 100 -> 32 x 100 x 100 would be 1e11 dense weights; the kernel holds 32*32*9
    ok = _codes("    input x[32, 100, 100]\n    layer c[32, 100, 100] = CubaLIF() <- conv2d(x, channels = 32, "
                "kernel = 3, padding = 1)\n    readout c: first_spike\n")
    assert ok == []
    big = _codes("    input x[32, 100, 100]\n    layer h[3000] = CubaLIF() <- dense(x)\n    readout h: first_spike\n")
    assert [c for c, _ in big] == ["E053"]


def test_unknown_kind_still_e046_and_suggests_conv2d():
    codes = _codes("    input x[2, 8, 8]\n    layer c[4, 8, 8] = CubaLIF() <- conv(x)\n    readout c: first_spike\n")
    assert [c for c, _ in codes] == ["E046"]
    _, diags = dsl.check_source(HEAD + "    input x[2, 8, 8]\n    layer c[4, 8, 8] = CubaLIF() <- conv2(x)\n"
                                "    readout c: first_spike\n}\n", str(FIXTURES / "conv_inline.snn"))
    assert "conv2d" in diags[0].hint
