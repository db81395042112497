"""Several input ports per layer in the generated Triton engines (PMAP kernels,
compiler/backends/triton/ports.py) under TRITON_INTERPRET=1, at tiny sizes: spike trains against
the torch-sequential reference (itself checked against mpmath in tests/runtime/test_multiport.py)
with mixed-port inputs at equal times, and gradients against the torch engine's autograd."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

F64 = torch.float64


@pytest.fixture(scope="module")
def eilif(tmp_path_factory):
    from spikescan.compiler.driver import load_model

    text = (ROOT / "models" / "ei_ports.snn").read_text()
    p = tmp_path_factory.mktemp("ei") / "ei.snn"
    p.write_text(text[: text.index("network ")])
    return load_model(str(p)).neurons["EILIF"]


def _case(delays=False):
    from spikescan.runtime.engines.ports import PortMap

    g = torch.Generator().manual_seed(21)
    B, n, C, N = 2, 12, 4, 3
    times = torch.rand(B, n, generator=g, dtype=F64) * 30
    times[:, 6:9] = times[:, :3]  # equal times, mixed ports
    times[1, -1] = math.inf
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.rand(C, N, generator=g, dtype=F64) * 5.0 + 0.5
    dl = torch.rand(C, N, generator=g, dtype=F64) * 3.0 if delays else None
    return times, ch, W, dl, PortMap(("exc", "inh"), torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize("mode,delays", [
    ("scan", False),
    pytest.param("scan", True, marks=pytest.mark.slow),
    pytest.param("sequential", False, marks=pytest.mark.slow),
    pytest.param("sequential", True, marks=pytest.mark.slow)])
def test_forward_matches_reference(eilif, mode, delays):
    from spikescan.runtime.engines import get_engine
    from spikescan.runtime.engines.triton_engine import run_layer

    times, ch, W, dl, pm = _case(delays)
    ref = get_engine("torch-sequential").run_layer(eilif, {}, times, ch, W, dl, port=pm, t_end=50.0)
    res = run_layer(eilif, {}, times, ch, W, dl, port=pm, t_end=50.0, mode=mode, chunk=4)
    assert int(ref.counts.sum()) >= 3
    assert torch.equal(res.counts, ref.counts)
    fin = torch.isfinite(ref.times)
    S = ref.times.shape[2]
    assert torch.allclose(res.times[..., :S][fin], ref.times[fin], rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # about 90 s under the interpreter
def test_gradients_match_torch(eilif):
    """Weights, input times and the per-neuron time constants: the adjoint kernel against the
    torch engine's autograd (whose gradients tests/runtime/test_multiport.py checks against
    finite differences)."""
    from spikescan.runtime.engines import get_engine
    from spikescan.runtime.engines.triton_engine import run_layer

    times, ch, W, _, pm = _case()

    def grads(fn):
        Wr, tr = W.clone().requires_grad_(), times.clone().requires_grad_()
        te = torch.full((3,), 5.0, dtype=F64, requires_grad=True)
        res = fn(Wr, tr, {"tau_e": te})
        t = res.times
        loss = torch.where(torch.isfinite(t), t, torch.zeros_like(t)).sum()
        return [g if g is not None else torch.zeros(()) for g in
                torch.autograd.grad(loss, [Wr, tr, te], allow_unused=True)]

    got = grads(lambda w, t, p: run_layer(eilif, p, t, ch, w, port=pm, t_end=50.0, mode="scan", chunk=4))
    ref = grads(lambda w, t, p: get_engine("torch").run_layer(eilif, p, t, ch, w, port=pm, t_end=50.0))
    for a, b in zip(got, ref):
        assert float(b.abs().sum()) > 0
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10), (a, b)
