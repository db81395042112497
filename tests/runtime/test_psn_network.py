"""Discrete-time (PSN) networks end to end: .snn -> NetworkIR -> PSNNetwork forward/backward
equal to the formulas of runtime/psn.py, engine contract, bins, a tiny training run and a
checkpoint round trip."""

import math

import pytest
import torch

from spikescan.compiler.driver import load_model
from spikescan.dsl.diagnostics import DiagnosticError
from spikescan.runtime import psn
from spikescan.runtime.network import SpikingNetwork
from spikescan.runtime.psn_network import PSNNetwork

F64 = torch.float64

SRC = """
neuron M = masked_psn(k = 2, surrogate = sigmoid(alpha = 3))
neuron S = sliding_psn(k = 3)
neuron P = psn()
network n {
    input  a[3]
    input  b[2]
    time_bins = GRID
    layer  h1[4] = M() <- dense(a, init = normal(0.5, 0.5)), dense(b, init = normal(0.5, 0.5))
    layer  h2[4] = S() <- dense(h1, init = normal(0.4, 0.5))
    layer  out[2] = P() <- dense(h2, init = normal(0.3, 0.5)), dense(h1)
    readout out: READOUT
}
"""


def _net(tmp_path, grid="4", readout="spike_count", **kw):
    f = tmp_path / "m.snn"
    f.write_text(SRC.replace("GRID", grid).replace("READOUT", readout))
    return SpikingNetwork(load_model(f), **kw)


def _events(B=3, n=12, t_end=8.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(B, n, generator=g, dtype=F64) * t_end
    t[0, -2:] = math.inf
    return t, torch.randint(0, 5, (B, n), generator=g)


def test_network_is_psn_and_matches_the_formulas(tmp_path):
    net = _net(tmp_path, readout="max_potential")
    assert isinstance(net, PSNNetwork) and net.ir.time_grid.bins == 4
    assert [l.kind for l in net.layers.values()] == ["masked_psn", "sliding_psn", "psn"]
    t, c = _events()
    out = net(t, c, t_end=8.0)
    # by hand: bin width 2 ms, h1 <- [a, b], h2 <- h1, out <- [h2, h1]
    x = psn.bin_events(t, c, 5, 4, 2.0)
    L = net.layers
    s1 = psn.spike(psn.banded_potential(x @ L["h1"].merged_weight(), L["h1"].psn_weight, L["h1"].psn_bias),
                   psn.Surrogate("sigmoid", 3.0))
    s2 = psn.spike(psn.banded_potential(s1 @ L["h2"].merged_weight(), L["h2"].psn_weight, L["h2"].psn_bias),
                   psn.Surrogate())
    h3 = psn.psn_potential(torch.cat([s2, s1], -1) @ L["out"].merged_weight(), L["out"].psn_weight,
                           L["out"].psn_bias)
    torch.testing.assert_close(out.readout, h3.max(0).values)
    torch.testing.assert_close(out.bin_counts[0], s1.sum(0))
    assert torch.equal(out.counts[1], s2.sum(0).long())
    # spike trains for plots: bin ends, one per spiking bin
    assert torch.equal(torch.isfinite(out.spikes[0]).sum(-1), out.counts[0])
    fin = out.spikes[0][torch.isfinite(out.spikes[0])]
    assert set(fin.tolist()) <= {2.0, 4.0, 6.0, 8.0}
    assert out.events == int(torch.isfinite(t).sum())


def test_gradients_reach_every_parameter(tmp_path):
    net = _net(tmp_path, readout="spike_count")
    for p in net.parameters():  # make every layer active so every gradient is non-zero
        if p.dim() == 2 and p.shape[0] != p.shape[1]:
            torch.nn.init.normal_(p, 0.6, 0.3, generator=torch.Generator().manual_seed(1))
    t, c = _events(B=8, n=30)
    out = net(t, c, t_end=8.0)
    out.readout.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _width_net(tmp_path):
    f = tmp_path / "w.snn"
    f.write_text(SRC.replace("GRID", "2 ms").replace("READOUT", "spike_count")
                 .replace("masked_psn(k = 2", "masked_psn(T = 4, k = 2").replace("psn()", "psn(T = 4)"))
    return SpikingNetwork(load_model(f))


def test_bin_width_grid_and_bins_mismatch(tmp_path):
    net = _width_net(tmp_path)
    assert net.ir.time_grid.resolve(8.0) == (4, 2.0)
    assert net.ir.time_grid.resolve(7.0) == (4, 2.0)  # ceil: the last bin covers the end
    t, c = _events()
    assert net(t, c, t_end=8.0).readout.shape == (3, 2)
    with pytest.raises(ValueError, match="binned into 5"):  # 10 ms of 2 ms bins, but T = 4
        net(t, c, t_end=10.0)


def test_psn_without_T_on_a_width_grid_is_a_diagnostic(tmp_path):
    # masked_psn without T under a bin width: the check refuses it before any run (E057)
    f = tmp_path / "w.snn"
    f.write_text(SRC.replace("GRID", "2 ms").replace("READOUT", "spike_count")
                 .replace("masked_psn(k = 2", "masked_psn(T = 4, k = 2"))
    with pytest.raises(DiagnosticError) as ei:
        load_model(f)
    assert [d.code for d in ei.value.diagnostics] == ["E057"]


def test_engines_that_cannot_run_psn_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot run discrete-time"):
        _net(tmp_path, engine=object())
    with pytest.raises(ValueError, match="cannot run discrete-time"):
        _net(tmp_path, engine="no-such-engine")
    net = _net(tmp_path, engine="sequential-cpu")  # what train's "auto" resolves to on a CPU
    t, c = _events()
    assert net(t, c, t_end=8.0).readout.shape == (3, 2)


def test_exact_networks_are_unchanged(tmp_path):
    from spikescan.runtime.network import SpikingNetwork as SN

    f = tmp_path / "e.snn"
    f.write_text('from "cuba_lif.snn" import CubaLIF\nnetwork e { input x[2] layer o[2] = CubaLIF() <- dense(x) '
                 "readout o: first_spike }\n")
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[2] / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    net = SN(load_model(f), engine="torch")
    assert type(net) is SN and not net.ir.discrete and net.ir.time_grid is None


def test_tiny_training_run_learns_and_reloads(tmp_path):
    from pathlib import Path

    from spikescan.runtime.train import network_from_checkpoint, train

    root = Path(__file__).resolve().parents[2]
    res = train(str(root / "models" / "psn_digits.snn"), data="digits", epochs=2, batch_size=32, lr=2e-2,
                limit_train=300, limit_eval=200, out=str(tmp_path / "run"), progress=False, quiet=True)
    assert res.test_accuracy > 0.3  # chance is 0.1
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False) if (tmp_path / "run" / "last.pt").exists() \
        else torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    net = network_from_checkpoint(last)
    assert isinstance(net, PSNNetwork)
    t, c = _events(B=4, n=20, t_end=30.0)
    c = c * 12  # channels up to 48 of the 64
    a = net(t, c, t_end=30.0).readout
    assert a.shape == (4, 10) and torch.isfinite(a).all()
    for k, v in net.state_dict().items():  # the checkpoint's weights, not a fresh init
        assert torch.equal(v, last["state_dict"][k])


def test_sparse_input_path_equals_dense(monkeypatch):
    from pathlib import Path

    net = SpikingNetwork(load_model(Path(__file__).resolve().parents[2] / "models" / "psn_digits.snn"))
    assert not net._dense_inputs(next(net.parameters()))  # one input population, read alone
    t, c = _events(B=4, n=40, t_end=30.0)
    c = c * 12
    a = net(t, c, t_end=30.0)
    a.readout.sum().backward()
    ga = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    monkeypatch.setattr(PSNNetwork, "_dense_inputs", lambda self, like: True)
    b = net(t, c, t_end=30.0)
    b.readout.sum().backward()
    torch.testing.assert_close(a.readout, b.readout, rtol=1e-12, atol=1e-12)
    for x, p in zip(ga, net.parameters()):
        torch.testing.assert_close(x, p.grad, rtol=1e-12, atol=1e-12)
