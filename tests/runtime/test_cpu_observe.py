"""sequential-cpu readouts (observe=max_potential / li_integral, neurons without threshold):
the observable replayed from the compiled loop's spikes (runtime/engines/observe_replay.py)
against the torch-sequential reference (values and autograd gradients) and against central
finite differences in float64, for every example neuron, with and without delays."""

from pathlib import Path

import pytest
import torch

from spikescan.runtime.engines import sequential_cpu, torch_sequential

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]
T_END = 60.0
# (file, neuron, weight mean, weight std): spiking neurons get enough drive to spike a few times
MODELS = [("cuba_lif.snn", "CubaLIF", 1.2, 1.5), ("lif.snn", "LIF", 0.3, 0.4),
          ("adaptive_lif.snn", "AdaptiveLIF", 1.5, 1.5), ("alpha_lif.snn", "AlphaLIF", 2.5, 2.0),
          ("li_readout.snn", "LI", 0.5, 1.0)]


def _ir(fname, name):
    from spikescan.compiler.driver import load_model

    return load_model(ROOT / "models" / fname).neurons[name]


def _inputs(seed, mean, std, B=3, n=14, C=5, N=4, delays=False):
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(B, n, generator=g, dtype=F64) * 40.0
    times[0, -2:] = float("inf")  # padding
    ch = torch.randint(0, C, (B, n), generator=g)
    W = torch.randn(C, N, generator=g, dtype=F64) * std + mean
    dl = torch.rand(C, N, generator=g, dtype=F64) * 5.0 if delays else None
    return times, ch, W, dl


def _run(engine, ir, times, ch, W, dl, kind, params=None):
    times = times.clone().requires_grad_(True)
    W = W.clone().requires_grad_(True)
    leaves = [times, W]
    if dl is not None:
        dl = dl.clone().requires_grad_(True)
        leaves.append(dl)
    res = engine.run_layer(ir, params or {}, times, ch, W, dl, observe=kind, t_end=T_END, max_spikes=32,
                           on_overflow="raise")
    coef = torch.linspace(-1.0, 1.5, res.observed.numel(), dtype=F64).reshape(res.observed.shape)
    loss = (res.observed * coef).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return res, [torch.zeros_like(v) if g is None else g for v, g in zip(leaves, grads)]


CASES = [(m, kind, dl) for m in MODELS for kind in ("max_potential", "li_integral") for dl in (False, True)]


@pytest.mark.parametrize("model,kind,delays", CASES, ids=[f"{m[1]}-{k}-{'delays' if d else 'nodelay'}"
                                                           for m, k, d in CASES])
def test_matches_torch_sequential(model, kind, delays):
    fname, name, mean, std = model
    ir = _ir(fname, name)
    times, ch, W, dl = _inputs(3, mean, std, delays=delays)
    ref, gref = _run(torch_sequential, ir, times, ch, W, dl, kind)
    got, ggot = _run(sequential_cpu, ir, times, ch, W, dl, kind)
    assert torch.equal(ref.counts, got.counts)
    if ir.c is not None:
        assert int(got.counts.sum()) > 0, "the test input should make the neurons spike"
    assert torch.allclose(got.observed, ref.observed, rtol=1e-12, atol=1e-12)
    for a, b in zip(ggot, gref):
        scale = b.abs().max().clamp(min=1e-300)
        assert (a - b).abs().max() <= 1e-10 * scale, ((a - b).abs().max(), scale)


def _fd(fn, x, idx, h=1e-6):
    out = []
    for i in idx:
        xp, xm = x.clone(), x.clone()
        xp.view(-1)[i] += h
        xm.view(-1)[i] -= h
        out.append((fn(xp) - fn(xm)) / (2 * h))
    return torch.tensor(out, dtype=F64)


FD_CASES = [(MODELS[0], "max_potential", True), (MODELS[0], "li_integral", False),
            (MODELS[3], "max_potential", False), (MODELS[1], "max_potential", False),
            (MODELS[4], "max_potential", True), (MODELS[4], "li_integral", True)]


@pytest.mark.parametrize("model,kind,delays", FD_CASES, ids=[f"{m[1]}-{k}-{'delays' if d else 'nodelay'}"
                                                             for m, k, d in FD_CASES])
def test_gradients_match_finite_differences(model, kind, delays):
    """Ground truth: central differences of the sequential-cpu forward itself (float64)."""
    fname, name, mean, std = model
    ir = _ir(fname, name)
    times, ch, W, dl = _inputs(5, mean, std, delays=delays)
    res, grads = _run(sequential_cpu, ir, times, ch, W, dl, kind)
    coef = torch.linspace(-1.0, 1.5, res.observed.numel(), dtype=F64).reshape(res.observed.shape)

    def loss(t=times, w=W, d=dl):
        with torch.no_grad():
            r = sequential_cpu.run_layer(ir, {}, t, ch, w, d, observe=kind, t_end=T_END, max_spikes=32)
        return float((r.observed * coef).sum())

    g = torch.Generator().manual_seed(1)
    fin = torch.isfinite(times).view(-1).nonzero().squeeze(1)
    it = fin[torch.randperm(fin.numel(), generator=g)[:6]].tolist()
    iw = torch.randperm(W.numel(), generator=g)[:6].tolist()
    checks = [(_fd(lambda t: loss(t=t), times, it), grads[0].reshape(-1)[it]),
              (_fd(lambda w: loss(w=w), W, iw), grads[1].reshape(-1)[iw])]
    if dl is not None:
        idl = torch.randperm(dl.numel(), generator=g)[:4].tolist()
        checks.append((_fd(lambda d: loss(d=d), dl, idl), grads[2].reshape(-1)[idl]))
    for fd, an in checks:
        assert fd.abs().max() > 0, "the checked entries should matter"
        assert (fd - an).abs().max() <= 1e-5 * max(1.0, float(fd.abs().max())), (fd, an)


@pytest.mark.parametrize("kind", ["max_potential", "li_integral"])
def test_parameter_gradients(kind):
    """Per-neuron time constants with gradients (the general autograd path of the replay)."""
    ir = _ir("cuba_lif.snn", "CubaLIF")
    times, ch, W, _ = _inputs(7, 0.3, 1.0)  # some neurons silent: their max lies inside a segment
    vals = {}
    for eng in (torch_sequential, sequential_cpu):
        tau = torch.tensor([15.0, 20.0, 25.0, 30.0], dtype=F64, requires_grad=True)
        w = W.clone().requires_grad_(True)
        r = eng.run_layer(ir, {"tau_m": tau}, times, ch, w, observe=kind, t_end=T_END, max_spikes=32)
        coef = torch.linspace(-1.0, 1.5, r.observed.numel(), dtype=F64).reshape(r.observed.shape)
        vals[eng] = (r.observed.detach(), *torch.autograd.grad((r.observed * coef).sum(), [tau, w]))
    ref, got = vals[torch_sequential], vals[sequential_cpu]
    assert torch.allclose(got[0], ref[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(got[1:], ref[1:]):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    assert got[1].abs().max() > 1e-6

    def loss(tau):
        with torch.no_grad():
            r = sequential_cpu.run_layer(ir, {"tau_m": tau}, times, ch, W, observe=kind, t_end=T_END, max_spikes=32)
        return float((r.observed * coef).sum())

    tau0 = torch.tensor([15.0, 20.0, 25.0, 30.0], dtype=F64)
    fd = _fd(loss, tau0, range(4))
    assert (fd - got[1]).abs().max() <= 1e-5 * max(1.0, float(fd.abs().max()))


def test_no_threshold_without_observe_and_errors():
    ir = _ir("li_readout.snn", "LI")
    times, ch, W, _ = _inputs(2, 0.5, 1.0)
    r = sequential_cpu.run_layer(ir, {}, times, ch, W)
    assert r.observed is None and int(r.counts.sum()) == 0 and not bool(torch.isfinite(r.times).any())
    with pytest.raises(ValueError, match="t_end"):
        sequential_cpu.run_layer(ir, {}, times, ch, W, observe="max_potential")
    with pytest.raises(ValueError, match="observe"):
        sequential_cpu.run_layer(ir, {}, times, ch, W, observe="mean", t_end=T_END)


def test_network_training_step_matches_torch_sequential():
    """The Yin-Yang first-spike loss with the silent-label extension (max potential of the
    readout layer): loss and every parameter gradient as the reference engine's."""
    from spikescan.runtime import losses
    from spikescan.runtime.data import get_dataset, pad_collate
    from spikescan.runtime.network import SpikingNetwork
    from spikescan.runtime.train import DATASET_DEFAULTS

    d = DATASET_DEFAULTS["yinyang"]
    cfg = losses.LossConfig(**d["loss"])
    ds = get_dataset("yinyang", "train")
    times, chans, labels = pad_collate([ds[i] for i in range(6)])
    got = {}
    for eng in ("torch-sequential", "sequential-cpu"):
        net = SpikingNetwork.from_file(ROOT / "models" / "yinyang.snn", engine=eng, seed=0)
        out = net(times, chans, t_end=d["t_end"], observe_vmax=True)
        loss = losses.readout_loss(out, labels, cfg, d["t_end"], net.readout_theta())
        loss.backward()
        got[eng] = (float(loss.detach()), [p.grad.clone() for p in net.parameters() if p.requires_grad],
                    out.vmax.detach())
    (l1, g1, v1), (l2, g2, v2) = got["torch-sequential"], got["sequential-cpu"]
    assert abs(l1 - l2) <= 1e-12 * abs(l1)
    assert torch.allclose(v1, v2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() <= 1e-10 * max(float(a.abs().max()), 1e-300)


def test_inconsistent_spikes_are_refused():
    """A spike where u never reached theta cannot be replayed: None (the engine then falls back
    to torch-sequential); the true spikes replay to the reference value."""
    from spikescan.runtime.engines.observe_replay import observe_known_spikes
    from spikescan.runtime.events import build_events
    from spikescan.runtime.kernels import NeuronKernels

    ir = _ir("cuba_lif.snn", "CubaLIF")
    times, ch, W, _ = _inputs(3, 1.2, 1.5)
    ref = torch_sequential.run_layer(ir, {}, times, ch, W, observe="max_potential", t_end=T_END, max_spikes=32)
    kern = NeuronKernels.from_ir(ir)
    P = kern.param_tensors({}, W.shape[1], F64, "cpu")
    ev = build_events(times, ch, W, None, T_END, kern.slowest_tau(P))
    good = observe_known_spikes(kern, P, None, ev, ref.times, "max_potential", *ref.counts.shape)
    assert torch.allclose(good, ref.observed, rtol=1e-12, atol=1e-12)
    bad = torch.full_like(ref.times[:, :, :1], float("inf"))
    bad[0, 0, 0] = 0.5  # nothing has arrived yet: u = 0 < theta
    assert observe_known_spikes(kern, P, None, ev, bad, "max_potential", *ref.counts.shape) is None


def test_auto_engine_for_training_is_sequential_cpu():
    from spikescan.runtime.train import resolve_engine

    assert resolve_engine("auto") == "sequential-cpu"
    assert resolve_engine("torch") == "torch"
