"""conv2d / pool2d lanes (runtime/conv.py) on the generated Triton engines under TRITON_INTERPRET=1
against the CPU engines: same spikes, same kernel / pooling-weight / input-time gradients. The
interpreter is slow (about a millisecond per op), so the network is tiny: a 1 x 4 x 4 input,
2 channels of 3 x 3 kernels, 2 x 2 sum-pooling, a dozen events."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process

import math

import pytest
import torch

from repo_paths import REPO
from spikescan.compiler.driver import load_model
from spikescan.runtime.network import SpikingNetwork

pytest.importorskip("triton")

SRC = """from "cuba_lif.snn" import CubaLIF
network tiny {
    input  x[1, 4, 4]
    layer  c[2, 4, 4] = CubaLIF(tau_m = 10 ms, tau_s = 5 ms)
               <- conv2d(x, channels = 2, kernel = 3, padding = 1, init = normal(1.2, 0.6))
    layer  p[2, 2, 2] = CubaLIF(tau_m = 10 ms, tau_s = 5 ms) <- pool2d(c, 2, init = constant(2.5))
    readout p: first_spike
}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    (d / "cuba_lif.snn").write_text((REPO / "models" / "cuba_lif.snn").read_text())
    (d / "tiny.snn").write_text(SRC)
    return load_model(str(d / "tiny.snn"))


def _run(model, engine, t, ch):
    net = SpikingNetwork(model, engine=engine, seed=3, max_spikes=8, chunk=4)
    tt = t.clone().requires_grad_(True)
    out = net(tt, ch, t_end=60.0)
    loss = sum(torch.where(torch.isfinite(s), s, torch.zeros_like(s)).sum() for s in out.spikes)
    loss.backward()
    return out, net.layers["c"].kernel.grad, net.layers["p"].weight.grad, tt.grad


def test_triton_conv_forward_matches_cpu(model):
    """Default suite: the triton-scan forward on 5 events at one pixel (no backward kernels;
    about 20 s under the interpreter). Both engines, with gradients: the slow test below."""
    t = torch.tensor([[0.5, 1.0, 1.2, 2.0, 2.5]], dtype=torch.float64)
    ch = torch.full((1, 5), 5)
    outs = {}
    for engine in ("sequential-cpu", "triton-scan"):
        net = SpikingNetwork(model, engine=engine, seed=3, max_spikes=4, chunk=4)
        with torch.no_grad():
            outs[engine] = net(t, ch, t_end=60.0)
    ref, out = outs["sequential-cpu"], outs["triton-scan"]
    assert int(ref.counts[0].sum()) >= 3 and int(ref.counts[1].sum()) >= 1
    for a, b in zip(ref.spikes, out.spikes):
        S = min(a.shape[2], b.shape[2])
        fa = torch.isfinite(a[..., :S])
        assert int(torch.isfinite(a).sum()) == int(torch.isfinite(b).sum()) and torch.equal(fa, torch.isfinite(b[..., :S]))
        assert (a[..., :S][fa] - b[..., :S][fa]).abs().max() < 1e-11


@pytest.mark.slow  # about 2.5 min per engine under the interpreter (forward and backward kernels)
@pytest.mark.parametrize("engine", ["triton-scan", "triton-sequential"])
def test_triton_conv_matches_cpu_engines(model, engine):
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(1, 12, generator=g, dtype=torch.float64) * 10, 1).values
    ch = torch.randint(0, 16, (1, 12), generator=g)
    t[0, -2:] = math.inf
    ref = _run(model, "sequential-cpu", t, ch)
    got = _run(model, engine, t, ch)
    assert int(ref[0].counts[0].sum()) >= 3 and int(ref[0].counts[1].sum()) >= 1
    for a, b in zip(ref[0].spikes, got[0].spikes):
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        S = min(a.shape[2], b.shape[2])
        assert fa.sum() == fb.sum() and torch.equal(fa[..., :S], fb[..., :S])
        assert (a[..., :S][fa[..., :S]] - b[..., :S][fb[..., :S]]).abs().max() < 1e-11
    for a, b in zip(ref[1:], got[1:]):
        assert a.abs().max() > 0
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)
