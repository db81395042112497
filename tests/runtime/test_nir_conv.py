"""NIR Conv2d / SumPool2d / AvgPool2d / Scale / Flatten (docs/nir.md): `.snn` with conv2d, pool2d
and a flattening dense layer -> NIR -> `.snn` gives bit-identical spike trains; a graph built with
the `nir` package itself imports and simulates as an equivalent network of explicit dense
matrices computed here by plain loops (not by runtime/conv.py); what has no exact counterpart is
refused naming the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir", reason="the NIR tests need the `nir` package (pip install nir, in the test extra)")

from spikescan import load_network  # noqa: E402
from spikescan.runtime.network import SpikingNetwork  # noqa: E402
from spikescan.runtime.nir_io import NirError, export_nir, import_nir  # noqa: E402

CUBA = """
neuron CubaLIF {
    params { tau_m = 10 ms   tau_s = 5 ms   v_th = 1.0   v_reset = 0.0 }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }
    on input(w) { i += w }
    spike when v >= v_th
    on spike { v = v_reset }
}
"""

CONV_NET = CUBA + """
network convnet {
    input  x[2, 6, 6]
    layer  c1[3, 3, 3] = CubaLIF()
               <- conv2d(x, channels = 3, kernel = 3, stride = 2, padding = 1, init = normal(1.2, 0.8))
    layer  c2[2, 4, 4] = CubaLIF() <- conv2d(c1, channels = 2, kernel = 2, padding = 1, init = normal(1.5, 0.8))
    layer  p1[2, 2, 2] = CubaLIF(tau_s = 4 ms) <- pool2d(c2, 2, init = constant(0.75))
    layer  out[4]      = CubaLIF() <- dense(c1, init = normal(0.8, 0.5)), dense(p1, init = normal(1.5, 0.5))
    readout out: first_spike
}
"""


def _events(n_in, batch=3, n=40, t_max=30.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(batch, n, generator=g, dtype=torch.float64) * t_max, 1).values
    return t, torch.randint(0, n_in, (batch, n), generator=g)


def test_conv_pool_flatten_round_trip_is_bit_identical(tmp_path):
    src = tmp_path / "conv.snn"
    src.write_text(CONV_NET)
    s = export_nir(src, tmp_path / "conv.nir")
    assert s.layers == {"c1": "CubaLIF", "c2": "CubaLIF", "p1": "CubaLIF", "out": "CubaLIF"}
    g = nir.read(tmp_path / "conv.nir")
    orig = SpikingNetwork.from_file(src, seed=0, engine="torch")
    conv = g.nodes["x_to_c1"]
    assert isinstance(conv, nir.Conv2d) and np.array_equal(conv.weight, orig.layers["c1"].kernel.detach().numpy())
    assert list(conv.stride) == [2, 2] and list(conv.padding) == [1, 1] and list(conv.input_shape) == [6, 6]
    assert isinstance(g.nodes["c2_to_p1"], nir.SumPool2d) and list(g.nodes["c2_to_p1"].kernel_size) == [2, 2]
    assert isinstance(g.nodes["c2_to_p1_scale"], nir.Scale) and np.all(g.nodes["c2_to_p1_scale"].scale == 0.75)
    assert isinstance(g.nodes["c1_to_out_flatten"], nir.Flatten)  # [C, H, W] -> c*H*W + y*W + x
    assert g.nodes["c1"].tau_mem.shape == (3, 3, 3) and list(g.nodes["x"].output_type["output"]) == [2, 6, 6]
    imp = import_nir(tmp_path / "conv.nir", tmp_path / "b" / "conv.snn")
    text = imp.snn.read_text()
    assert "input  x[2, 6, 6]" in text and "layer  c1[3, 3, 3]" in text
    assert "conv2d(x, channels = 3, kernel = 3, stride = 2, padding = 1)" in text
    assert "pool2d(c2, 2, init = constant(0.75))" in text and "dense(c1), dense(p1)" in text
    back = load_network(imp.weights, engine="torch")
    sd_a, sd_b = orig.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    t, c = _events(72)
    oa, ob = orig(t, c), back(t, c)
    for ca, cb, sa, sb in zip(oa.counts, ob.counts, oa.spikes, ob.spikes):
        assert int(ca.sum()) > 0, "a layer is silent: the test would prove nothing"
        assert torch.equal(ca, cb) and torch.equal(sa, sb)


def _conv_matrix(K, in_shape, stride, pad):
    """[C_in*H*W, C_out*H'*W'] of a cross-correlation (torch/NIR Conv2d), by plain loops."""
    c_out, c_in, k, _ = K.shape
    _, h, w = in_shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    M = np.zeros((c_in * h * w, c_out * oh * ow))
    for co in range(c_out):
        for oy in range(oh):
            for ox in range(ow):
                for ci in range(c_in):
                    for ky in range(k):
                        for kx in range(k):
                            y, x = oy * stride - pad + ky, ox * stride - pad + kx
                            if 0 <= y < h and 0 <= x < w:
                                M[ci * h * w + y * w + x, co * oh * ow + oy * ow + ox] += K[co, ci, ky, kx]
    return M


def _pool_matrix(c, h, w, k, scale):
    M = np.zeros((c * h * w, c * (h // k) * (w // k)))
    for ci in range(c):
        for y in range(h):
            for x in range(w):
                M[ci * h * w + y * w + x, ci * (h // k) * (w // k) + (y // k) * (w // k) + x // k] = scale
    return M


def _cuba(shape, tau_syn=0.005):
    f = lambda v: np.full(shape, v)  # noqa: E731
    return nir.CubaLIF(tau_syn=f(tau_syn), tau_mem=f(0.01), r=f(1.0), v_leak=f(0.0), v_threshold=f(1.0),
                       v_reset=f(0.0), w_in=f(tau_syn))  # w_in = tau_syn: a spike of weight w jumps I by w


@pytest.mark.parametrize("pool", ["SumPool2d+Scale", "AvgPool2d+Scale"])
def test_conv_graph_from_the_nir_package_simulates_as_explicit_matrices(tmp_path, pool):
    rng = np.random.default_rng(3)
    K = rng.normal(1.0, 0.8, (3, 2, 3, 3))
    L = rng.normal(2.0, 1.0, (4, 12))
    nodes = {
        "in": nir.Input(input_type=np.array([2, 4, 4])),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=K, stride=1, padding="same", dilation=1, groups=1,
                           bias=np.zeros(3)),
        "c1": _cuba((3, 4, 4)),
        "pool": (nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
                 if pool.startswith("Sum") else
                 nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))),
        "scale": nir.Scale(scale=np.full((3, 2, 2), 2.5)),
        "p1": _cuba((3, 2, 2), tau_syn=0.004),
        "flat": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
        "lin": nir.Linear(weight=L),
        "o": _cuba((4,)),
        "out": nir.Output(output_type=np.array([4])),
    }
    edges = [("in", "conv"), ("conv", "c1"), ("c1", "pool"), ("p1", "flat"), ("flat", "lin"), ("lin", "o"),
             ("o", "out")]
    edges += [("pool", "scale"), ("scale", "p1")]
    if not pool.startswith("Sum"):  # an average over 2 x 2 is a sum times 0.25 (exact), then x 10
        nodes["scale"] = nir.Scale(scale=np.full((3, 2, 2), 10.0))
    scale = 2.5
    nir.write(tmp_path / "g.nir", nir.NIRGraph(nodes=nodes, edges=edges, type_check=True))
    s = import_nir(tmp_path / "g.nir", tmp_path / "g.snn")
    text = s.snn.read_text()
    assert "conv2d(in_, channels = 3, kernel = 3, stride = 1, padding = 1)" in text or \
        "conv2d(in, channels = 3, kernel = 3, stride = 1, padding = 1)" in text, text
    assert f"pool2d(c1, 2, init = constant({scale!r}))" in text
    net = load_network(s.weights, engine="torch")
    # the same network with explicit dense matrices
    ref = tmp_path / "dense.snn"
    ref.write_text(CUBA + """
network dense_ref {
    input  x[32]
    layer  c1[48] = CubaLIF() <- dense(x)
    layer  p1[12] = CubaLIF(tau_s = 4 ms) <- dense(c1)
    layer  o[4]   = CubaLIF() <- dense(p1)
    readout o: first_spike
}
""")
    dense = SpikingNetwork.from_file(ref, seed=0, engine="torch")
    with torch.no_grad():
        for name, M in (("c1", _conv_matrix(K, (2, 4, 4), 1, 1)), ("p1", _pool_matrix(3, 4, 4, 2, scale)), ("o", L.T)):
            dense.layers[name].weights[0].copy_(torch.from_numpy(np.ascontiguousarray(M)))
    t, c = _events(32, n=30, seed=5)
    a, b = net(t, c), dense(t, c)
    for ca, cb, sa, sb in zip(a.counts, b.counts, a.spikes, b.spikes):
        assert int(ca.sum()) > 0, "a layer is silent: the test would prove nothing"
        assert torch.equal(ca, cb)
        fin = torch.isfinite(sb)
        assert torch.equal(fin, torch.isfinite(sa))
        assert torch.allclose(sa[fin], sb[fin], rtol=0, atol=1e-9)


def _conv_graph(tmp_path, conv=None, pool=None, name="c.nir", shape=(1, 4, 4), out_shape=(2, 4, 4), extra=None):
    nodes = {"in": nir.Input(input_type=np.array(shape)), "c1": _cuba(out_shape), "out": nir.Output(
        output_type=np.array(out_shape))}
    node = conv if conv is not None else pool
    nodes["op"] = node
    edges = [("in", "op"), ("op", "c1"), ("c1", "out")]
    if extra:
        extra(nodes, edges)
    nir.write(tmp_path / name, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return tmp_path / name


def _conv2d(**over):
    kw = dict(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1, dilation=1, groups=1,
              bias=np.zeros(2))
    kw.update(over)
    return nir.Conv2d(**kw)


def _sumpool(k=2, s=2, p=0):
    return nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([s, s]), padding=np.array([p, p]))


def _second_input(nodes, edges):
    nodes["in2"] = nir.Input(input_type=np.array([32]))
    nodes["lin2"] = nir.Linear(weight=np.ones((32, 32)))
    edges += [("in2", "lin2"), ("lin2", "c1")]


REFUSED = [
    (dict(conv=_conv2d(dilation=2)), "dilation"),
    (dict(conv=_conv2d(groups=1, weight=np.ones((2, 1, 3, 2)))), "kernel is 3 x 2"),
    (dict(conv=_conv2d(stride=(1, 2), padding=0), out_shape=(2, 2, 1)), r"stride \(1, 2\)"),
    (dict(conv=_conv2d(padding="same", stride=2), out_shape=(2, 4, 4)), "padding 'same'"),
    (dict(conv=_conv2d(bias=np.array([0.1, 0.2]))), "'bias' differs between channels"),
    (dict(conv=_conv2d(), shape=(2, 4, 4)), "has 1 input channels, but receives a signal of shape"),
    (dict(conv=_conv2d(), out_shape=(2, 3, 3)), r"gives a signal of shape \[2, 4, 4\]"),
    (dict(conv=_conv2d(), extra=_second_input), "only input"),
    (dict(pool=_sumpool(2, 1), out_shape=(1, 3, 3)), "at a stride equal to the window"),
    (dict(pool=_sumpool(3, 3), out_shape=(1, 1, 1)), "does not divide"),
    (dict(pool=nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([3, 3]), padding=np.array([0, 0])),
          shape=(1, 6, 6), out_shape=(1, 2, 2)), "1/9, which is not exact"),
    (dict(pool=nir.Linear(weight=np.ones((2, 16))), out_shape=(2,)), "put a Flatten"),
    (dict(pool=nir.Flatten(input_type={"input": np.array([1, 4, 4])}, start_dim=1, end_dim=-1), out_shape=(16,)),
     "spikescan maps a Flatten of the whole signal only"),
]


@pytest.mark.parametrize("case, match", REFUSED)
def test_unmappable_conv_and_pool_nodes_are_refused(tmp_path, case, match):
    with pytest.raises(NirError, match=match):
        import_nir(_conv_graph(tmp_path, **case), tmp_path / "m.snn")
    assert not (tmp_path / "m.snn").exists()


def test_export_refuses_a_dense_fed_3d_layer_feeding_a_convolution(tmp_path):
    src = tmp_path / "m.snn"
    src.write_text(CUBA + """
network m {
    input  x[8]
    layer  d[1, 4, 4] = CubaLIF() <- dense(x)
    layer  c[2, 4, 4] = CubaLIF() <- conv2d(d, channels = 2, kernel = 3, padding = 1)
    readout c: first_spike
}
""")
    with pytest.raises(NirError, match="NIR has no node that reshapes a 1-D signal into"):
        export_nir(src, tmp_path / "m.nir")
    assert not (tmp_path / "m.nir").exists()


def test_nmnist_conv_model_exports_and_imports(tmp_path):
    models = Path(__file__).resolve().parents[2] / "models"
    export_nir(models / "nmnist_conv.snn", tmp_path / "n.nir")
    imp = import_nir(tmp_path / "n.nir", tmp_path / "n.snn")
    a = SpikingNetwork.from_file(models / "nmnist_conv.snn", seed=0)
    b = load_network(imp.weights)
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


BIAS = CUBA.replace("v_reset = 0.0 }", "v_reset = 0.0   i_bias = 0.0 }").replace(
    "di/dt = -i / tau_s", "di/dt = (i_bias - i) / tau_s")


def test_conv_layer_constant_current_is_the_conv2d_bias(tmp_path):
    src = tmp_path / "b.snn"
    src.write_text(BIAS + """
network b {
    input  x[1, 5, 5]
    layer  c1[2, 3, 3] = CubaLIF(i_bias = 0.3) <- conv2d(x, channels = 2, kernel = 3)
    layer  o[3] = CubaLIF(i_bias = 0.1) <- dense(c1)
    readout o: spike_count
}
""")
    export_nir(src, tmp_path / "b.nir")
    conv = nir.read(tmp_path / "b.nir").nodes["x_to_c1"]
    assert np.array_equal(conv.bias, [60.0, 60.0])  # i_bias = w_in * bias, w_in = tau_s = 0.005 s
    imp = import_nir(tmp_path / "b.nir", tmp_path / "back" / "b.snn")
    text = imp.snn.read_text()
    assert "i_bias = 0.3" in text and "layer  o[3] = CubaLIF(i_bias = 0.1)" in text
    a, b = SpikingNetwork.from_file(src, seed=0), load_network(imp.weights)
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_pooled_layer_with_a_constant_current_is_refused(tmp_path):
    src = tmp_path / "p.snn"
    src.write_text(BIAS + """
network p {
    input  x[1, 4, 4]
    layer  p1[1, 2, 2] = CubaLIF(i_bias = 0.3) <- pool2d(x, 2)
    readout p1: first_spike
}
""")
    with pytest.raises(NirError, match="layer 'p1', pool2d of 'x': the pooled layer has a constant input current"):
        export_nir(src, tmp_path / "p.nir")


def test_scalar_parameters_broadcast_to_the_input_signal(tmp_path):
    """Neuron nodes with one value per parameter (as snnTorch writes a layer's shared beta) take
    the shape of their input: the import equals the one with full parameter arrays."""
    rng = np.random.default_rng(0)
    K, L = rng.normal(1.5, 0.5, (2, 1, 3, 3)), rng.normal(1.5, 0.5, (3, 32))

    def graph(shape_c, shape_o):
        return nir.NIRGraph(nodes={
            "in": nir.Input(input_type=np.array([1, 4, 4])),
            "conv": nir.Conv2d(input_shape=(4, 4), weight=K, stride=1, padding=1, dilation=1, groups=1,
                               bias=np.zeros(2)),
            "c": _cuba(shape_c), "flat": nir.Flatten(input_type={"input": np.array([2, 4, 4])}, start_dim=0),
            "lin": nir.Linear(weight=L), "o": _cuba(shape_o), "out": nir.Output(output_type=np.array([3])),
        }, edges=[("in", "conv"), ("conv", "c"), ("c", "flat"), ("flat", "lin"), ("lin", "o"), ("o", "out")],
            type_check=False)

    nets = []
    for name, g in (("full", graph((2, 4, 4), (3,))), ("scalar", graph((1,), (1,)))):
        nir.write(tmp_path / f"{name}.nir", g)
        s = import_nir(tmp_path / f"{name}.nir", tmp_path / f"{name}.snn")
        assert "layer  c[2, 4, 4]" in s.snn.read_text() and "layer  o[3]" in s.snn.read_text()
        nets.append(load_network(s.weights, engine="torch"))
    t, c = _events(16, n=30, seed=2)
    a, b = nets[0](t, c), nets[1](t, c)
    assert int(a.counts[-1].sum()) > 0
    for ca, cb, sa, sb in zip(a.counts, b.counts, a.spikes, b.spikes):
        assert torch.equal(ca, cb) and torch.equal(sa, sb)
