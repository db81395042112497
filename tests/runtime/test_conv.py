"""conv2d / pool2d layers (runtime/conv.py): the connection matrix against torch's own conv2d and
sum-pooling, the receptive-field lanes against the explicit dense matrix (same spikes) on every
CPU engine, exact gradients of the kernel, the pooling weight and the input times against central
finite differences (float64), checkpoints, the camera layout guard, and a tiny N-MNIST training
run on the shared recordings (skipped when they are absent). Triton: tests/backends/test_triton_conv.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from repo_paths import REPO
from spikescan.compiler.driver import load_model
from spikescan.runtime.conv import ConvLayer, check_input_layout
from spikescan.runtime.engines import get_engine
from spikescan.runtime.network import SpikingNetwork

DATA_ROOT = REPO.parent / "shared" / "data"
CPU_ENGINES = ["torch", "torch-sequential", "sequential-cpu"]

NET = """from "cuba_lif.snn" import CubaLIF
network tiny {{
    input  x[{cin}, {h}, {w}]
    layer  c[{cout}, {oh}, {ow}] = CubaLIF(tau_m = 10 ms, tau_s = 5 ms)
               <- conv2d(x, channels = {cout}, kernel = {k}, stride = {s}, padding = {p}, init = normal(0.8, 0.6))
    layer  p[{cout}, {ph}, {pw}] = CubaLIF(tau_m = 10 ms, tau_s = 5 ms) <- pool2d(c, {q}, init = constant(2.5))
    layer  out[3] = CubaLIF(tau_m = 10 ms, tau_s = 5 ms) <- dense(p, init = normal(1.5, 0.5))
    readout out: first_spike
}}
"""


def _net(tmp_path, engine="torch", cin=2, h=6, w=6, cout=3, k=3, s=1, p=1, q=2, seed=0):
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    (tmp_path / "cuba_lif.snn").write_text((REPO / "models" / "cuba_lif.snn").read_text())
    f = tmp_path / "tiny.snn"
    f.write_text(NET.format(cin=cin, h=h, w=w, cout=cout, oh=oh, ow=ow, k=k, s=s, p=p, q=q, ph=oh // q, pw=ow // q))
    return SpikingNetwork(load_model(str(f)), engine=engine, seed=seed, max_spikes=16)


def _events(n_ch, B=2, n=40, T=20.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(B, n, generator=g, dtype=torch.float64) * T, 1).values
    c = torch.randint(0, n_ch, (B, n), generator=g)
    t[-1, -5:] = math.inf  # padding
    return t, c


def _conv_matrix(kernel, in_shape, stride, padding):
    """[C_in*H*W, C_out*H'*W'] of torch's conv2d, column by column of the identity."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=kernel.dtype).reshape(n, *in_shape)
    return F.conv2d(eye, kernel, stride=stride, padding=padding).reshape(n, -1)


@pytest.mark.parametrize("k, s, p, h, w", [(3, 1, 1, 6, 6), (3, 2, 1, 7, 5), (4, 2, 0, 8, 8), (5, 2, 2, 6, 9), (1, 1, 0, 3, 4)])
def test_dense_matrix_is_torch_conv2d(tmp_path, k, s, p, h, w):
    net = _net(tmp_path, k=k, s=s, p=p, h=h, w=w, q=1)
    c = net.layers["c"]
    ref = _conv_matrix(c.kernel.detach(), c.conv.in_shape, s, p)
    assert torch.equal(c.dense_weight().detach(), ref)
    pool = net.layers["p"]  # q = 1: identity pooling times the scalar
    assert torch.equal(pool.dense_weight().detach(), 2.5 * torch.eye(pool.size, dtype=torch.float64))


def test_pool_matrix_is_sum_pooling(tmp_path):
    net = _net(tmp_path, h=8, w=8, q=2)
    pool = net.layers["p"]
    n = math.prod(pool.conv.in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *pool.conv.in_shape)
    ref = 2.5 * 4 * F.avg_pool2d(eye, 2).reshape(n, -1)  # sum-pooling = k*k * average
    assert torch.allclose(pool.dense_weight().detach(), ref, rtol=0, atol=1e-15)


def _same_spikes(a, b, tol=1e-11):
    assert torch.equal(a.counts, b.counts)
    S = min(a.times.shape[2], b.times.shape[2])
    assert torch.isinf(a.times[..., S:]).all() and torch.isinf(b.times[..., S:]).all()
    ta, tb = a.times[..., :S], b.times[..., :S]
    fin = torch.isfinite(ta)
    assert torch.equal(fin, torch.isfinite(tb))
    if fin.any():
        assert (ta[fin] - tb[fin]).abs().max() <= tol


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_lanes_equal_the_explicit_dense_matrix(tmp_path, engine):
    """Each conv / pool layer on its receptive-field lanes gives the spikes of the same layer run
    with torch's conv2d matrix (one weight row per input channel) on the same input events."""
    net = _net(tmp_path, engine=engine, k=3, s=2, p=1, h=7, w=7, q=2)
    t, ch = _events(2 * 7 * 7, n=60)
    eng = get_engine(engine)
    kw = dict(chunk=8, max_spikes=16, on_overflow="raise", t_end=80.0)
    c = net.layers["c"]
    lanes = c.run(eng, net.neurons[c.neuron], t, ch, **kw)
    W = _conv_matrix(c.kernel.detach(), c.conv.in_shape, 2, 1)
    dense = eng.run_layer(net.neurons[c.neuron], c.params(), t, ch, W, None, port=c.port, **kw)
    assert lanes.counts.sum() > 10  # the layer fires, at several positions and channels
    assert (lanes.counts > 0).sum() >= 6
    _same_spikes(lanes, dense)
    from spikescan.runtime.network import flatten_spikes

    t2, c2 = flatten_spikes(lanes.times, lanes.counts)
    pool = net.layers["p"]
    pl = pool.run(eng, net.neurons[pool.neuron], t2, c2, **kw)
    pd = eng.run_layer(net.neurons[pool.neuron], pool.params(), t2, c2, pool.dense_weight().detach(), None, **kw)
    assert pl.counts.sum() > 0
    _same_spikes(pl, pd)


@pytest.mark.slow  # the per-layer comparison above runs every CPU engine in the default suite
def test_engines_agree_on_the_whole_network(tmp_path):
    t, ch = _events(2 * 6 * 6, n=50, seed=3)
    outs = []
    for engine in CPU_ENGINES:
        net = _net(tmp_path, engine=engine)
        outs.append(net(t, ch, t_end=80.0))
    assert sum(int(c.sum()) for c in outs[0].counts) > 10
    for o in outs[1:]:
        for a, b in zip(outs[0].spikes, o.spikes):
            fa, fb = torch.isfinite(a), torch.isfinite(b)
            S = min(a.shape[2], b.shape[2])
            assert fa.sum() == fb.sum() and torch.equal(fa[..., :S], fb[..., :S])
            assert (a[..., :S][fa[..., :S]] - b[..., :S][fb[..., :S]]).abs().max() < 1e-11


def _loss(out):
    # smooth in the parameters while no spike appears or vanishes: sum of the finite spike times
    return sum(torch.where(torch.isfinite(s), s, torch.zeros_like(s)).sum() for s in out.spikes)


@pytest.mark.parametrize("engine", ["torch", "sequential-cpu"])
def test_gradients_match_central_differences(tmp_path, engine):
    """1 x 6 x 6 input, 2 channels, kernel 3: d loss / d kernel, pooling weight and input times."""
    net = _net(tmp_path, engine=engine, cin=1, h=6, w=6, cout=2, k=3, s=1, p=1, q=2, seed=1)
    t, ch = _events(36, B=1, n=30, T=15.0, seed=5)
    t = t.requires_grad_(True)
    out = net(t, ch, t_end=80.0)
    counts = [c.clone() for c in out.counts]
    assert int(counts[0].sum()) > 5 and int(counts[1].sum()) > 0
    _loss(out).backward()
    kernel, pw = net.layers["c"].kernel, net.layers["p"].weight

    def f():
        with torch.no_grad():
            o = net(t.detach(), ch, t_end=80.0)
            assert all(torch.equal(a, b) for a, b in zip(o.counts, counts)), "a spike appeared or vanished"
            return float(_loss(o))

    h = 1e-6
    checked = 0
    for param, idx in [(kernel, (0, 0, 1, 1)), (kernel, (1, 0, 0, 2)), (kernel, (0, 0, 2, 0)), (pw, ())]:
        g = float(param.grad[idx])
        with torch.no_grad():
            param[idx] += h
            up = f()
            param[idx] -= 2 * h
            dn = f()
            param[idx] += h
        fd = (up - dn) / (2 * h)
        assert abs(g - fd) <= 1e-6 * max(1.0, abs(fd)), (param.shape, idx, g, fd)
        checked += fd != 0
    assert checked >= 3
    tg = t.grad
    for k in [0, 7, 15]:
        tt = t.detach().clone()
        tt[0, k] += h
        with torch.no_grad():
            up = float(_loss(net(tt, ch, t_end=80.0)))
        tt[0, k] -= 2 * h
        with torch.no_grad():
            dn = float(_loss(net(tt, ch, t_end=80.0)))
        fd = (up - dn) / (2 * h)
        assert abs(float(tg[0, k]) - fd) <= 1e-6 * max(1.0, abs(fd)), (k, float(tg[0, k]), fd)


def test_kernel_gradient_equals_dense_path(tmp_path):
    """The lanes' kernel gradient (summed over positions) equals the dense path's (the gradient
    of the explicit matrix scattered back onto the kernel)."""
    grads = {}
    t, ch = _events(72, n=50, seed=9)
    for path in ("lanes", "dense"):
        net = _net(tmp_path, engine="sequential-cpu", seed=2)
        for lay in net.layers.values():
            if isinstance(lay, ConvLayer):
                lay.path = path
        tt = t.clone().requires_grad_(True)
        _loss(net(tt, ch, t_end=80.0)).backward()
        grads[path] = (net.layers["c"].kernel.grad, net.layers["p"].weight.grad, tt.grad)
    for a, b in zip(grads["lanes"], grads["dense"]):
        assert a.abs().max() > 0
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_checkpoint_round_trip(tmp_path):
    from spikescan.runtime.checkpoint import load_checkpoint
    from spikescan.runtime.train import network_from_checkpoint

    out = tmp_path / "run"
    from spikescan.runtime.train import train

    (tmp_path / "cuba_lif.snn").write_text((REPO / "models" / "cuba_lif.snn").read_text())
    src = tmp_path / "tiny.snn"
    _net(tmp_path)  # writes tiny.snn
    t, ch = _events(72, B=4, n=40, seed=4)
    data = [(t[i][torch.isfinite(t[i])], ch[i][torch.isfinite(t[i])], i % 3) for i in range(4)]
    train(str(src), data=data, val_data=data, epochs=1, batch_size=4, lr=1e-3, out=str(out), quiet=True,
          progress=False, engine="sequential-cpu", t_end=80.0)
    ck = load_checkpoint(out / "last.pt")
    net = network_from_checkpoint(ck, engine="torch")
    assert isinstance(net.layers["c"], ConvLayer) and net.layers["c"].kernel.shape == (3, 2, 3, 3)
    state = ck["state_dict"]
    assert torch.equal(net.layers["c"].kernel.detach(), state["layers.c.kernel"])
    assert torch.equal(net.layers["p"].weight.detach(), state["layers.p.weight"])


def test_camera_layout_guard(tmp_path):
    class Cam:  # what the camera datasets expose
        name, layout, chw = "nmnist", (6, 6, 2), False

    net = _net(tmp_path)
    with pytest.raises(ValueError, match="chw=true"):
        check_input_layout(Cam(), net)
    Cam.chw = True
    check_input_layout(Cam(), net)
    Cam.layout = (6, 5, 2)
    with pytest.raises(ValueError, match=r"delivers \[2, 5, 6\]"):
        check_input_layout(Cam(), net)


def test_camera_chw_channels():
    import numpy as np

    from spikescan.runtime.data.camera import camera_channels

    x, y, p = np.array([0, 5, 33]), np.array([1, 0, 33]), np.array([1, 0, 1])
    assert camera_channels(x, y, p, (34, 34, 2), chw=True).tolist() == [1156 + 34, 5, 1156 + 33 * 34 + 33]
    assert camera_channels(x, y, p, (34, 34, 2)).tolist() == [3, 5 * 68, 33 * 68 + 66 + 1]
    # downsampled: [P', H', W'] = [2, 17, 17]
    assert camera_channels(x, y, p, (34, 34, 2), downsample=2, chw=True).tolist() == [289, 2, 289 + 16 * 17 + 16]


def test_spike_cap_names_the_layer_neuron(tmp_path):
    from spikescan.runtime.engines import SpikeCapExceeded

    net = _net(tmp_path, engine="torch")
    c = net.layers["c"]
    with torch.no_grad():
        c.kernel.fill_(5.0)
    t = torch.linspace(0, 10, 40, dtype=torch.float64).reshape(1, 40)
    ch = torch.full((1, 40), 36 + 6 * 3 + 3)  # channel 1, pixel (3, 3): every event there
    with pytest.raises(SpikeCapExceeded) as e:
        c.run(get_engine("torch"), net.neurons[c.neuron], t, ch, max_spikes=2, on_overflow="raise", t_end=80.0)
    assert e.value.sample == 0 and 0 <= e.value.neuron < c.size
    oy, ox = divmod(e.value.neuron % c.G, 6)
    assert abs(oy - 3) <= 1 and abs(ox - 3) <= 1  # inside the 3x3 footprint of pixel (3, 3)


@pytest.mark.skipif(not (DATA_ROOT / "NMNIST" / "Train").is_dir(), reason="shared N-MNIST recordings absent")
def test_nmnist_conv_trains_on_a_tiny_subset(tmp_path):
    """models/nmnist_conv.snn on 20 shared N-MNIST recordings, 2 epochs: the training loss falls."""
    from spikescan.runtime.train import train

    r = train(str(REPO / "models" / "nmnist_conv.snn"), data="nmnist", data_root=str(DATA_ROOT),
              data_opts=dict(chw=True, t_max=105, time_bin=1), epochs=2, limit_train=20, limit_eval=10,
              batch_size=10, engine="sequential-cpu", threads=1, quiet=True, progress=False,
              out=str(tmp_path / "run"), seed=0)
    first, second = (h["train_loss"] for h in r.history)
    assert second < 0.9 * first, r.history


def test_nir_export_writes_conv_layers(tmp_path):
    """NIR Conv2d / SumPool2d export (round trips: tests/runtime/test_nir_conv.py)."""
    nir = pytest.importorskip("nir")
    from spikescan.runtime.nir_io.export import network_graph

    graph, _ = network_graph(_net(tmp_path))
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Conv2d", "SumPool2d"} <= types, types


@pytest.mark.parametrize("observe", ["max_potential", "li_integral"])
def test_observed_readout_of_a_conv_layer(tmp_path, observe):
    """A conv layer read out by its potential: the lanes give the dense path's values, in the
    layer's neuron order."""
    net = _net(tmp_path, engine="sequential-cpu")
    c = net.layers["c"]
    t, ch = _events(72, n=40, seed=6)
    eng = get_engine("sequential-cpu")
    kw = dict(max_spikes=16, on_overflow="flag", observe=observe, t_end=60.0)
    lanes = c.run(eng, net.neurons[c.neuron], t, ch, **kw)
    c.path = "dense"
    dense = c.run(eng, net.neurons[c.neuron], t, ch, **kw)
    assert lanes.observed.shape == dense.observed.shape == (2, c.size)
    assert torch.allclose(lanes.observed, dense.observed, rtol=1e-12, atol=1e-12)
    assert lanes.observed.std() > 0


def test_refusals(tmp_path):
    with pytest.raises(NotImplementedError, match="learnable time constants on conv2d / pool2d"):
        _net(tmp_path).__class__(load_model(str(tmp_path / "tiny.snn")), learn_time_constants=True)
    net = _net(tmp_path)
    c = net.layers["c"]
    c.path = "sparse"
    t, ch = _events(72)
    with pytest.raises(ValueError, match="path must be one of"):
        c.run(get_engine("torch"), net.neurons[c.neuron], t, ch, t_end=60.0)
    c.path = "lanes"
    with pytest.raises(ValueError, match="source has 72 channels"):
        c.run(get_engine("torch"), net.neurons[c.neuron], t, ch + 72, t_end=60.0)


@pytest.mark.skipif(not (DATA_ROOT / "NMNIST" / "Train").is_dir(), reason="shared N-MNIST recordings absent")
def test_cli_train_without_chw_is_one_clear_line(tmp_path, capsys):
    from spikescan.cli import main

    rc = main(["train", str(REPO / "models" / "nmnist_conv.snn"), "--data", "nmnist", "--data-root", str(DATA_ROOT),
               "--epochs", "1", "--limit-train", "4", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "--data-opt chw=true" in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "last.pt").exists()
