"""SpikingNetwork wiring: shapes, event flattening between layers, merged sources with channel
offsets, delays, parameters, readouts and clear errors. A recording fake engine (same
`run_layer` signature as the real ones) checks exactly what each layer is given; the real
engines are exercised in test_network_engine.py."""

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import sympy
import torch

from spikescan.compiler.ir import ConnectionIR, DelaySpec, InitSpec, LayerIR, NetworkIR, NeuronIR, ParamIR, ReadoutIR
from spikescan.runtime.network import SpikingNetwork, flatten_spikes

INF = math.inf


def hand_neuron(name="CubaLIF", spiking=True):
    """A CubaLIF NeuronIR written by hand (fields the network module reads)."""
    tm, ts, th, vr = sympy.symbols("tau_m tau_s v_th v_reset", real=True)
    params = (ParamIR("tau_m", 20.0, 1, tm), ParamIR("tau_s", 5.0, 1, ts), ParamIR("v_th", 1.0, 0, th),
              ParamIR("v_reset", 0.0, 0, vr))
    A = sympy.Matrix([[-1 / ts, 0], [1 / tm, -1 / tm]])  # state (i, v)
    return NeuronIR(
        name=name, state=("i", "v"), params=params, init=sympy.zeros(2, 1), A=A, a0=sympy.zeros(2, 1),
        ports={"input": sympy.Matrix([1, 0])}, c=sympy.Matrix([0, 1]) if spiking else None,
        theta=th if spiking else None, R=sympy.Matrix([[1, 0], [0, 0]]), r=sympy.Matrix([0, vr]), t_ref=sympy.Integer(0),
    )


class FakeEngine:
    """Neuron j of a layer spikes at (sum of its weighted input times) mod 7 + j, once per input
    event with a positive weight (capped at max_spikes); records every call."""

    def __init__(self):
        self.calls = []

    def run_layer(self, ir, params, times, channels, weight, delays=None, *, port=None, chunk=128,
                  max_spikes=64, on_overflow="raise", observe=None, t_end=None):
        self.calls.append(SimpleNamespace(ir=ir, params=params, times=times, channels=channels, weight=weight,
                                          delays=delays, port=port, observe=observe, t_end=t_end))
        B, n = times.shape
        N = weight.shape[-1]
        w = weight[channels]  # [B, n, N]
        valid = torch.isfinite(times)
        tz = torch.where(valid, times, torch.zeros_like(times))
        base = (tz[:, :, None] * w).sum(1).remainder(7.0) + torch.arange(N, dtype=times.dtype)  # [B, N]
        cnt = ((w > 0) & valid[:, :, None]).sum(1).clamp(max=max_spikes)
        S = max(int(cnt.max()), 1)
        k = torch.arange(S, dtype=times.dtype)
        out = base[:, :, None] + k
        out = torch.where(k < cnt[:, :, None], out, torch.full_like(out, INF))
        observed = None if observe is None else (w * valid[:, :, None]).sum(1)
        return SimpleNamespace(times=out, counts=cnt, overflow=torch.zeros(B, dtype=torch.bool), observed=observed)


def two_layer_ir(readout="first_spike", delays=None, extra_source=False, hidden_port="input", recurrent=False,
                 out_spiking=True):
    conns_h = [ConnectionIR("dense", "x", "input", None, InitSpec("normal", 0.5, 0.1))]
    if recurrent:
        conns_h.append(ConnectionIR("recurrent", "hidden", "input", None, InitSpec("default")))
    if hidden_port != "input":
        conns_h.append(ConnectionIR("dense", "y", hidden_port, None, InitSpec("default")))
    conns_o = [ConnectionIR("dense", "hidden", "input", delays, InitSpec("uniform", 0.1, 0.3))]
    if extra_source:
        conns_o.append(ConnectionIR("dense", "x", "input", None, InitSpec("uniform", 0.1, 0.3)))
    layers = [
        LayerIR("hidden", 4, "CubaLIF", {"tau_m": 10.0, "tau_s": 5.0, "v_th": 1.0, "v_reset": 0.0}, tuple(conns_h)),
        LayerIR("out", 3, "CubaLIF" if out_spiking else "LI", {"tau_m": 20.0, "tau_s": 5.0, "v_th": 1.5, "v_reset": 0.0},
                tuple(conns_o)),
    ]
    inputs = {"x": 5, "y": 2} if hidden_port != "input" else {"x": 5}
    neurons = {"CubaLIF": hand_neuron(), "LI": hand_neuron("LI", spiking=False)}
    return NetworkIR("tiny", inputs, layers, ReadoutIR("out", readout, {})), neurons


def batch():
    times = torch.tensor([[0.0, 3.0, 1.5, INF], [2.0, 0.5, INF, INF]], dtype=torch.float64)
    chans = torch.tensor([[0, 4, 2, 0], [1, 3, 0, 0]])
    return times, chans


def test_flatten_spikes_channels_and_padding():
    t = torch.tensor([[[1.0, 4.0, INF], [INF, INF, INF]], [[2.0, INF, INF], [0.5, INF, INF]]], dtype=torch.float64)
    counts = torch.tensor([[2, 0], [1, 1]])
    ft, fc = flatten_spikes(t, counts)
    # each sample's spikes in time order with their neuron as channel, cut at the busiest
    # sample (2 spikes): no column is padding in its own sample but for the quieter ones
    assert ft.tolist() == [[1.0, 4.0], [0.5, 2.0]]
    assert fc.tolist() == [[0, 0], [1, 0]]
    # equal times keep the neuron order (as a stable argsort of the unflattened layout would)
    tie = torch.tensor([[[3.0, INF], [1.0, 3.0], [3.0, INF]]], dtype=torch.float64)
    ft, fc = flatten_spikes(tie, torch.tensor([[1, 2, 1]]))
    assert ft.tolist() == [[1.0, 3.0, 3.0, 3.0]] and fc.tolist() == [[1, 0, 1, 2]]
    # gradients flow back to the spike times they came from
    src = t.clone().requires_grad_(True)
    ft, _ = flatten_spikes(src, counts)
    (ft[torch.isfinite(ft)] * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).sum().backward()
    assert src.grad.tolist() == [[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], [[4.0, 0.0, 0.0], [3.0, 0.0, 0.0]]]
    # silent layer: one padding column
    ft, fc = flatten_spikes(torch.full((2, 3, 4), INF, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.long))
    assert ft.shape == (2, 1) and not torch.isfinite(ft).any()


def test_forward_shapes_and_layer_wiring():
    eng = FakeEngine()
    net = SpikingNetwork(two_layer_ir(), engine=eng, seed=3)
    times, chans = batch()
    out = net(times, chans)
    assert out.readout.shape == (2, 3) and out.first_spike.shape == (2, 3)
    assert [c.shape for c in out.counts] == [(2, 4), (2, 3)]
    assert out.layer_names == ["hidden", "out"] and out.overflow.shape == (2,)
    h, o = eng.calls
    assert h.weight.shape == (5, 4) and o.weight.shape == (4, 3)
    assert h.port == "input" and h.delays is None
    assert h.params["tau_m"].item() == 10.0 and o.params["v_th"].item() == 1.5
    # the output layer receives exactly the hidden spikes, channel = hidden neuron index
    hs = out.spikes[0]
    for b in range(2):
        got = sorted((t, c) for t, c in zip(o.times[b].tolist(), o.channels[b].tolist()) if t < INF)
        want = sorted((hs[b, j, s].item(), j) for j in range(4) for s in range(hs.shape[2]) if hs[b, j, s] < INF)
        assert got == want
    assert out.events == int(torch.isfinite(times).sum()) + int(torch.isfinite(hs).sum())
    # readout = first spike of the readout layer
    assert torch.equal(out.readout, out.spikes[1][:, :, 0])


def test_init_specs_and_seed_determinism():
    a = SpikingNetwork(two_layer_ir(), engine=FakeEngine(), seed=1)
    b = SpikingNetwork(two_layer_ir(), engine=FakeEngine(), seed=1)
    c = SpikingNetwork(two_layer_ir(), engine=FakeEngine(), seed=2)
    wa = a.layers["hidden"].weights[0]
    assert torch.equal(wa, b.layers["hidden"].weights[0]) and not torch.equal(wa, c.layers["hidden"].weights[0])
    assert wa.dtype == torch.float64 and abs(wa.mean().item() - 0.5) < 0.15  # normal(0.5, 0.1)
    wo = a.layers["out"].weights[0]
    assert (wo >= 0.1).all() and (wo <= 0.3).all()  # uniform(0.1, 0.3)


def test_merged_sources_offsets_and_delays():
    eng = FakeEngine()
    net = SpikingNetwork(two_layer_ir(delays=DelaySpec(True, 5.0, -4.0), extra_source=True), engine=eng)
    times, chans = batch()
    net(times, chans)
    o = eng.calls[1]
    assert o.weight.shape == (4 + 5, 3) and o.delays.shape == (9, 3)
    lay = net.layers["out"]
    assert torch.equal(o.weight[:4], lay.weights[0]) and torch.equal(o.weight[4:], lay.weights[1])
    # learnable delays start uniform in [0, 4], the input source (no delays) contributes zeros
    assert (o.delays[:4] >= 0).all() and (o.delays[:4] <= 4.0).all() and o.delays[:4].std() > 0
    assert (o.delays[4:] == 0).all() and lay.delays[0].requires_grad and not lay.delays[1].requires_grad
    # input events arrive with channel offset 4 (after the 4 hidden neurons)
    n_h = o.times.shape[1] - times.shape[1]
    assert torch.equal(o.channels[:, n_h:], chans + 4)
    # clamp_ projects delays into [0, max]
    with torch.no_grad():
        lay.delays[0][0, 0] = 9.0
        lay.delays[0][0, 1] = -1.0
    net.clamp_()
    assert lay.delays[0][0, 0].item() == 5.0 and lay.delays[0][0, 1].item() == 0.0


def test_several_ports_in_one_layer_pass_a_port_map():
    """Connections on two ports: the engine gets one call with a PortMap (the port of every
    merged channel: x's 5 on `input`, y's 2 on `input_inh`; tests/runtime/test_multiport.py runs
    the real engines)."""
    from spikescan.runtime.engines.ports import PortMap

    eng = FakeEngine()
    net = SpikingNetwork(two_layer_ir(hidden_port="input_inh"), engine=eng)
    times, chans = batch()
    net(times, chans)
    port = eng.calls[0].port
    assert isinstance(port, PortMap) and port.names == ("input", "input_inh")
    assert port.index.tolist() == [0] * 5 + [1] * 2
    assert eng.calls[1].port == "input"


def test_two_input_populations_split_channels():
    """inputs x[5], y[2] (global channels 0-4 and 5-6): hidden <- dense(x), out <- dense(y)."""
    ir, neurons = two_layer_ir()
    ir.inputs["y"] = 2
    layers = list(ir.layers)
    layers[1] = LayerIR("out", 3, "CubaLIF", dict(layers[1].params),
                        (ConnectionIR("dense", "y", "input", None, InitSpec("default")),))
    ir.layers = layers
    eng = FakeEngine()
    net = SpikingNetwork((ir, neurons), engine=eng)
    assert net.n_inputs == 7
    times = torch.tensor([[1.0, 2.0, 3.0, INF]], dtype=torch.float64)
    chans = torch.tensor([[0, 5, 6, 0]])
    net(times, chans)
    h, o = eng.calls
    assert h.times[0].tolist() == [1.0, INF, INF, INF] and h.channels[0, 0].item() == 0
    assert o.times[0].tolist() == [INF, 2.0, 3.0, INF] and o.channels[0, 1:3].tolist() == [0, 1]
    assert o.weight.shape == (2, 3)


def test_recurrent_layer_gets_its_own_weights_and_delays():
    net = SpikingNetwork(two_layer_ir(recurrent=True), engine=FakeEngine())
    hidden = net.layers["hidden"]
    assert tuple(hidden.w_rec.shape) == (hidden.size, hidden.size) and hidden.w_rec.requires_grad
    assert net.rec_plan.group_of == {}  # one zero-delay self-connection: the plain recurrent engines
    net_ir, neurons = two_layer_ir(recurrent=True)
    conns = list(net_ir.layers[0].connections)
    conns[-1] = ConnectionIR("recurrent", "hidden", "input", DelaySpec(True, 2.0, 1.0), InitSpec("default"))
    net_ir.layers[0] = replace(net_ir.layers[0], connections=tuple(conns))
    net = SpikingNetwork((net_ir, neurons), engine=FakeEngine())
    hidden = net.layers["hidden"]
    # delays on a recurrent connection: learnable d_rec_0, clamped to [0, max]; run by the group loop
    assert hidden.d_rec_0.requires_grad and bool((hidden.d_rec_0 == 1.0).all())
    assert net.rec_plan.group_of == {"hidden": ("hidden",)}
    with torch.no_grad():
        hidden.d_rec_0[0, 0] = 7.0
    net.clamp_()
    assert hidden.d_rec_0[0, 0].item() == 2.0


def test_value_readouts_and_count_readout():
    eng = FakeEngine()
    net = SpikingNetwork(two_layer_ir(readout="max_potential"), engine=eng)
    times, chans = batch()
    with pytest.raises(ValueError, match="t_end"):
        net(times, chans)
    out = net(times, chans, t_end=30.0)
    assert eng.calls[-1].observe == "max_potential" and eng.calls[-1].t_end == 30.0
    assert out.readout.shape == (2, 3)
    net = SpikingNetwork(two_layer_ir(readout="spike_count"), engine=FakeEngine())
    out = net(times, chans)
    assert torch.equal(out.readout, out.counts[-1].double())
    # first_spike with observe_vmax asks the engine for the max potential of the readout layer only
    eng = FakeEngine()
    net = SpikingNetwork(two_layer_ir(), engine=eng)
    out = net(times, chans, t_end=30.0, observe_vmax=True)
    assert [c.observe for c in eng.calls] == [None, "max_potential"] and out.vmax is not None
    # a non-spiking readout layer cannot give first spikes
    with pytest.raises(ValueError, match="no threshold"):
        SpikingNetwork(two_layer_ir(out_spiking=False), engine=FakeEngine())
    net = SpikingNetwork(two_layer_ir(readout="li_integral", out_spiking=False), engine=FakeEngine())
    assert net(times, chans, t_end=30.0).first_spike is None


def test_learnable_time_constants_are_parameters():
    net = SpikingNetwork(two_layer_ir(), engine=FakeEngine(), learn_time_constants=True)
    names = {n for n, _ in net.named_parameters()}
    assert "layers.hidden.log_tau_m" in names and "layers.hidden.log_tau_s" in names
    assert "layers.hidden.log_v_th" not in names  # dimensionless params stay buffers
    p = net.layers["hidden"].params()
    assert p["tau_m"].shape == (4,) and torch.allclose(p["tau_m"], torch.full((4,), 10.0, dtype=torch.float64))
    assert net.readout_theta() == 1.5


def test_constant_init_from_a_snn_file(tmp_path):
    """`init = constant(v)` checks, compiles and gives every weight the value v (issue 17
    item 6: it used to end in "unknown weight init kind" at construction)."""
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).parents[2] / "models" / "cuba_lif.snn", tmp_path)
    p = tmp_path / "c.snn"
    p.write_text('from "cuba_lif.snn" import CubaLIF\n'
                 "network n {\n    input x[3]\n"
                 "    layer out[2] = CubaLIF() <- dense(x, init = constant(0.7))\n"
                 "    readout out: first_spike\n}\n")
    net = SpikingNetwork.from_file(p, engine=FakeEngine())
    w = net.layers["out"].weights[0]
    assert w.shape == (3, 2) and w.dtype == torch.float64 and (w == 0.7).all()
