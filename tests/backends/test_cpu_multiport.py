"""The compiled CPU loops with several ports per layer (pmap[C] as their last argument,
NeuronEmitter.select_port / port_B): the event-outer vector loop equals the per-neuron loop bit
for bit, the per-neuron adjoint (with delays) equals the torch engine's autograd, and an engine
compiled for a tuple of ports insists on its map."""

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
pytest.importorskip("torch_mlir")

F64 = torch.float64


@pytest.fixture(scope="module")
def eilif(tmp_path_factory):
    from spikescan.compiler.driver import load_model

    text = (ROOT / "models" / "ei_ports.snn").read_text()
    p = tmp_path_factory.mktemp("ei") / "ei.snn"
    p.write_text(text[: text.index("network ")])
    return load_model(str(p)).neurons["EILIF"]


def _case(seed, B=3, n=40, C=6, N=11):
    from spikescan.runtime.engines.ports import PortMap

    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * 40
    times[:, n // 2: n // 2 + n // 4] = times[:, : n // 4]  # mixed ports at equal times
    times[0, -2:] = math.inf
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.rand(C, N, generator=g, dtype=F64) * 5.0
    return times, ch, W, PortMap(("exc", "inh"), torch.tensor([0, 1, 1, 0, 1, 0]))


def test_vector_loop_equals_per_neuron_loop(eilif, monkeypatch):
    from spikescan.runtime.engines import sequential_cpu

    times, ch, W, pm = _case(1)
    a = sequential_cpu.run_layer(eilif, {}, times, ch, W, port=pm, t_end=60.0)
    monkeypatch.setattr(sequential_cpu, "USE_SHARED_PATH", False)
    b = sequential_cpu.run_layer(eilif, {}, times, ch, W, port=pm, t_end=60.0)
    assert int(a.counts.sum()) > 10
    assert torch.equal(a.counts, b.counts) and torch.equal(a.times, b.times)


def test_per_neuron_adjoint_with_delays(eilif):
    """Gradients to weights, delays, input times and a time constant on the per-neuron path
    (delays) against the torch engine's autograd."""
    from spikescan.runtime.engines import get_engine

    times, ch, W, pm = _case(2, B=2, n=16, N=4)
    dl = torch.rand(6, 4, generator=torch.Generator().manual_seed(3), dtype=F64) * 3.0

    def grads(engine):
        Wr, dr, tr = W.clone().requires_grad_(), dl.clone().requires_grad_(), times.clone().requires_grad_()
        tm = torch.full((4,), 20.0, dtype=F64, requires_grad=True)
        res = get_engine(engine).run_layer(eilif, {"tau_m": tm}, tr, ch, Wr, dr, port=pm, t_end=60.0)
        t = res.times
        loss = torch.where(torch.isfinite(t), t * t, torch.zeros_like(t)).sum()
        return res.counts, torch.autograd.grad(loss, [Wr, dr, tr, tm])

    (ca, ga), (cb, gb) = grads("sequential-cpu"), grads("torch")
    assert torch.equal(ca, cb) and int(ca.sum()) > 3
    for x, y in zip(ga, gb):
        assert float(y.abs().sum()) > 0
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-10), (x, y)


def test_compiled_for_ports_needs_the_map(eilif):
    from spikescan.compiler.backends.mlir.cpu_jit import compile_neuron

    eng = compile_neuron(eilif, "f64", ("exc", "inh"))
    assert eng is not compile_neuron(eilif, "f64", "exc")  # one cache entry per port layout
    z = torch.zeros((1, 1), dtype=F64)
    i = torch.zeros((1, 1), dtype=torch.int64)
    with pytest.raises(ValueError, match="pmap"):
        eng.layer(z, i, i.unsqueeze(0), z.unsqueeze(0), z, i[0], z, [z[0]] * 5, z.unsqueeze(0), i, i)
