"""NIR interchange (docs/nir.md): `.snn -> NIR -> .snn` gives identical spike trains, graphs
written by the `nir` package itself import and simulate as an independent mpmath reference of
NIR's equations says (tests/mpref.py), refusals and malformed files give one-line messages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir", reason="the NIR tests need the `nir` package (pip install nir, in the test extra)")
h5py = pytest.importorskip("h5py")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mpref  # noqa: E402

from spikescan import load_network  # noqa: E402
from spikescan.cli import main  # noqa: E402
from spikescan.runtime.network import SpikingNetwork  # noqa: E402
from spikescan.runtime.nir_io import NirError, export_nir, import_nir  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "models"


def _events(n_in, batch=6, n=12, t_max=30.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(batch, n, generator=g, dtype=torch.float64) * t_max
    c = torch.randint(0, n_in, (batch, n), generator=g)
    t, order = torch.sort(t, 1)
    return t, torch.gather(c, 1, order)


def _same_run(a, b, n_in, t_end=None):
    t, c = _events(n_in)
    oa, ob = a(t, c, t_end=t_end), b(t, c, t_end=t_end)
    assert sum(int(x.sum()) for x in oa.counts) > 0, "the test input makes no spike: it would prove nothing"
    for sa, sb, ca, cb in zip(oa.spikes, ob.spikes, oa.counts, ob.counts):
        assert torch.equal(ca, cb)
        assert torch.equal(sa, sb)
    if oa.readout is not None:
        assert torch.equal(oa.readout, ob.readout)


def test_yinyang_round_trip_through_the_cli_is_bit_identical(tmp_path, capsys):
    out = tmp_path / "yy.nir"
    assert main(["export", str(MODELS / "yinyang.snn"), "--nir", str(out)]) == 0
    assert main(["import", str(out), "-o", str(tmp_path / "back" / "yy.snn")]) == 0
    text = (tmp_path / "back" / "yy.snn").read_text()
    assert "dv/dt = (i - v) / tau_m" in text and "readout out: first_spike" in text
    orig = SpikingNetwork.from_file(MODELS / "yinyang.snn", seed=0, engine="torch")
    back = load_network(tmp_path / "back" / "yy.pt", engine="torch")
    for (k, v), (k2, v2) in zip(orig.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    _same_run(orig, back, 5)
    # the checkpoint exports again to the same graph (export from a checkpoint)
    assert main(["export", str(tmp_path / "back" / "yy.pt"), "--nir", str(tmp_path / "yy2.nir"), "-q"]) == 0
    g1, g2 = nir.read(out), nir.read(tmp_path / "yy2.nir")
    assert sorted(g1.nodes) == sorted(g2.nodes)
    assert np.array_equal(g1.nodes["hidden_to_out"].weight, g2.nodes["hidden_to_out"].weight)
    assert g1.nodes["hidden"].tau_mem[0] == 0.02 and g1.nodes["hidden"].w_in[0] == 0.005


SMALL = """
neuron LIF {
    params { tau_m = 10 ms   v_th = 1.0   v_reset = -0.25 }
    state  { v = 0.0 }
    dynamics { dv/dt = (0.125 - v) / tau_m }
    on input(w) { v += w }
    spike when v >= v_th
    on spike { v = v_reset }
}
neuron LI {
    params { tau_m = 20 ms   tau_s = 5 ms }
    state  { v = 0.0   i = 0.0 }
    dynamics {
        dv/dt = (i - v) / tau_m
        di/dt = -i / tau_s
    }
    on input(w) { i += w }
}
network small {
    input x[4]
    layer h[6] = LIF() <- dense(x, init = normal(0.7, 0.3), delays = fixed(1.5 ms)), recurrent(init = normal(0, 0.3))
    layer o[2] = LI() <- dense(h, init = normal(0.5, 0.2))
    readout o: max_potential
}
"""


def test_lif_delays_recurrent_li_readout_round_trip(tmp_path):
    src = tmp_path / "small.snn"
    src.write_text(SMALL)
    s = export_nir(src, tmp_path / "s.nir")
    assert s.layers == {"h": "LIF", "o": "CubaLI"}
    g = nir.read(tmp_path / "s.nir")
    assert isinstance(g.nodes["x_to_h_delay"], nir.Delay) and np.all(g.nodes["x_to_h_delay"].delay == 0.0015)
    assert g.nodes["h"].v_leak[0] == 0.125 and g.nodes["h"].v_reset[0] == -0.25
    imp = import_nir(tmp_path / "s.nir", tmp_path / "b" / "small.snn")
    assert imp.readout == "max_potential" and imp.readout_layer == "o"
    assert "delays = fixed(1.5 ms)" in imp.snn.read_text() and "recurrent()" in imp.snn.read_text()
    orig = SpikingNetwork.from_file(src, seed=0, engine="torch")
    back = load_network(imp.weights, engine="torch")
    _same_run(orig, back, 4, t_end=40.0)


def _mp_spikes(A, a0, B, c, theta, R, r, times, weights):
    return [float(s) for s in mpref.mp_simulate(A, a0, B, c, theta, R, r, 0, [0] * len(a0), times, weights,
                                                 dps=30)]


def _imported_spikes(graph, tmp_path, times, chans, **kw):
    nir.write(tmp_path / "g.nir", graph)
    s = import_nir(tmp_path / "g.nir", tmp_path / "g.snn", **kw)
    net = load_network(s.weights, engine="torch")
    out = net(torch.tensor([times], dtype=torch.float64), torch.tensor([chans]))
    n = int(out.counts[-1][0, 0])
    return out.spikes[-1][0, 0, :n].tolist(), s


def test_cubalif_graph_from_the_nir_package_matches_the_mpmath_reference(tmp_path):
    """NIR CubaLIF with r, v_leak, w_in, v_reset and an Affine bias; spikes read as Dirac deltas."""
    p = dict(tau_syn=4e-3, tau_mem=1e-2, r=1.5, v_leak=0.05, v_threshold=1.0, v_reset=-0.1, w_in=0.8)
    W, b = np.array([[0.004, 0.003]]), 0.5
    g = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([2])),
        "aff": nir.Affine(weight=W, bias=np.array([b])),
        "lif": nir.CubaLIF(**{k: np.array([v]) for k, v in p.items()}),
        "out": nir.Output(output_type=np.array([1])),
    }, edges=[("in", "aff"), ("aff", "lif"), ("lif", "out")])
    times, chans = [1.0, 2.0, 2.5, 3.0, 6.0, 9.0, 9.5], [0, 0, 1, 0, 1, 1, 0]
    got, s = _imported_spikes(g, tmp_path, times, chans)
    assert s.layers == {"lif": "CubaLIF"} and s.readout == "first_spike"
    # NIR's equations in ms, written here from docs/nir.md (state (I, v)):
    # tau_syn dI/dt = -I + w_in (W S + b), tau_mem dv/dt = v_leak - v + r I, S a Dirac delta in seconds
    mp = mpref.mp
    ts, tm = mp.mpf(p["tau_syn"]) * 1000, mp.mpf(p["tau_mem"]) * 1000
    A = [[-1 / ts, 0], [mp.mpf(p["r"]) / tm, -1 / tm]]
    a0 = [mp.mpf(p["w_in"]) * b / ts, mp.mpf(p["v_leak"]) / tm]
    B = [mp.mpf(p["w_in"]) / mp.mpf(p["tau_syn"]), 0]
    want = _mp_spikes(A, a0, B, [0, 1], p["v_threshold"], [[1, 0], [0, 0]], [0, p["v_reset"]], times,
                      [W[0, ch] for ch in chans])
    assert len(want) >= 2
    assert got == pytest.approx(want, abs=1e-9, rel=0)


def test_lif_graph_with_delay_and_time_step_area(tmp_path):
    """NIR LIF behind a Delay, imported with --dt 1e-3 (a spike is a pulse of area 1 ms)."""
    p = dict(tau=np.array([0.02] * 3), r=np.array([2.0] * 3), v_leak=np.array([0.2] * 3),
             v_threshold=np.array([1.0] * 3), v_reset=np.array([0.0] * 3))
    W = np.array([[5.0, 0.0], [3.0, 3.0], [0.0, 1.0]])
    g = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([2])), "d": nir.Delay(delay=np.array([0.002, 0.0005])),
        "lin": nir.Linear(weight=W), "lif": nir.LIF(**p), "out": nir.Output(output_type=np.array([3])),
    }, edges=[("in", "d"), ("d", "lin"), ("lin", "lif"), ("lif", "out")])
    times, chans = [1.0, 1.5, 4.0, 4.2, 7.0], [0, 1, 0, 1, 0]
    nir.write(tmp_path / "g.nir", g)
    s = import_nir(tmp_path / "g.nir", tmp_path / "g.snn", dt=1e-3)
    assert "learnable(max = 2.0 ms)" in s.snn.read_text()  # per-channel delays: values in the checkpoint
    net = load_network(s.weights, engine="torch")
    out = net(torch.tensor([times], dtype=torch.float64), torch.tensor([chans]))
    mp = mpref.mp
    tau = mp.mpf(0.02) * 1000
    delay = {0: 2.0, 1: 0.5}
    total = 0
    for j in range(3):
        ev = sorted((t + delay[c], W[j, c]) for t, c in zip(times, chans) if W[j, c] != 0)
        want = _mp_spikes([[-1 / tau]], [mp.mpf(0.2) / tau], [mp.mpf(2.0) * mp.mpf(1e-3) / mp.mpf(0.02)], [1], 1.0,
                          [[0]], [0.0], [e[0] for e in ev], [e[1] for e in ev])
        n = int(out.counts[-1][0, j])
        assert out.spikes[-1][0, j, :n].tolist() == pytest.approx(want, abs=1e-9, rel=0)
        total += n
    assert total >= 2


def _write(tmp_path, nodes, edges, name="g.nir"):
    nir.write(tmp_path / name, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return tmp_path / name


def _lif(n=2, **over):
    p = dict(tau=np.full(n, 0.01), r=np.full(n, 1.0), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    p.update(over)
    return nir.LIF(**p)


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case, match", [
    ("per_neuron_tau", r"'tau' differs between neurons"),
    ("negative_tau", r"time constant 'tau' must be positive"),
    ("unknown_field", r"field\(s\) refractory that spikescan does not know"),
    ("li_source", r"LI neurons do not spike"),
    ("nan_weight", r"NaN or infinite"),
    ("undriven_cycle", r"'lif2' \(LIF\) receives nothing from any Input"),
    ("conv1d", r"'lin' is a Conv1d node: 1-D convolutions do not exist in spikescan"),
    ("bias_per_neuron", r"the bias differs between neurons"),
])
def test_unsupported_graphs_are_refused(tmp_path, case, match):
    inp, out = nir.Input(input_type=np.array([2])), nir.Output(output_type=np.array([2]))
    lin = nir.Linear(weight=np.eye(2))
    nodes = {"in": inp, "lin": lin, "lif": _lif(), "out": out}
    edges = [("in", "lin"), ("lin", "lif"), ("lif", "out")]
    if case == "per_neuron_tau":
        nodes["lif"] = _lif(tau=np.array([0.01, 0.02]))
    elif case == "negative_tau":
        nodes["lif"] = _lif(tau=np.array([-0.01, -0.01]))
    elif case == "li_source":
        nodes = {"in": inp, "l0": nir.Linear(weight=np.eye(2)),
                 "li": nir.LI(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2)), "lin": lin, "lif": _lif(),
                 "out": out}
        edges = [("in", "l0"), ("l0", "li"), ("li", "lin"), ("lin", "lif"), ("lif", "out")]
    elif case == "nan_weight":
        nodes["lin"] = nir.Linear(weight=np.array([[1.0, np.nan], [0.0, 1.0]]))
    elif case == "undriven_cycle":  # lif2 <-> lif3 drive each other, nothing drives them
        nodes.update(lif2=_lif(), lif3=_lif(), l2=nir.Linear(weight=np.eye(2)), back=nir.Linear(weight=np.eye(2)))
        edges += [("lif3", "l2"), ("l2", "lif2"), ("lif2", "back"), ("back", "lif3")]
    elif case == "conv1d":
        nodes["lin"] = nir.Conv1d(input_shape=2, weight=np.ones((1, 1, 1)), stride=1, padding=0, dilation=1, groups=1,
                                  bias=np.zeros(1))
    elif case == "bias_per_neuron":
        nodes["lin"] = nir.Affine(weight=np.eye(2), bias=np.array([0.1, 0.2]))
    path = _write(tmp_path, nodes, edges)
    if case == "unknown_field":
        with h5py.File(path, "a") as f:
            f["node/nodes/lif"].create_dataset("refractory", data=np.full(2, 0.002))
    with pytest.raises(NirError, match=match):
        import_nir(path, tmp_path / "m.snn")
    assert not (tmp_path / "m.snn").exists()


def test_malformed_files_give_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.nir"
    junk.write_text("not hdf5 at all\n")
    assert "is not a readable NIR file (HDF5)" in _cli_error(capsys, ["import", str(junk), "-o", str(tmp_path / "a.snn")])
    (tmp_path / "empty.nir").write_bytes(b"")
    assert "is empty" in _cli_error(capsys, ["import", str(tmp_path / "empty.nir"), "-o", str(tmp_path / "a.snn")])
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    assert "not a NIR graph" in _cli_error(capsys, ["import", str(tmp_path / "plain.h5"), "-o", str(tmp_path / "a.snn")])
    assert "does not exist" in _cli_error(capsys, ["import", str(tmp_path / "none.nir"), "-o", str(tmp_path / "a.snn")])
    # an edge to a missing node, and an external link (could read another file): refused
    path = _write(tmp_path, {"in": nir.Input(input_type=np.array([2])), "lin": nir.Linear(weight=np.eye(2)),
                             "lif": _lif(), "out": nir.Output(output_type=np.array([2]))},
                  [("in", "lin"), ("lin", "lif"), ("lif", "out")])
    with h5py.File(path, "a") as f:
        del f["node/edges"]
        f["node/edges"] = np.array([[b"in", b"lin"], [b"lin", b"ghost"]])
    with pytest.raises(NirError, match="names node 'ghost'"):
        import_nir(path, tmp_path / "a.snn")
    with h5py.File(path, "a") as f:
        f["node/nodes/lin/weight_ext"] = h5py.ExternalLink("/etc/passwd", "/x")
    with pytest.raises(NirError, match="ExternalLink"):
        import_nir(path, tmp_path / "a.snn")
    assert not list(tmp_path.glob("a.*"))


EXPORT_REFUSED = [
    ("on spike { v -= v_th }", "subtractive reset"),
    ("on spike { v = v_reset }\n    refractory 2 ms", "refractory period 2 ms"),
]


@pytest.mark.parametrize("reset, match", EXPORT_REFUSED)
def test_export_refuses_neurons_without_an_exact_nir_counterpart(tmp_path, capsys, reset, match):
    src = tmp_path / "m.snn"
    src.write_text(SMALL.split("neuron LI {")[0].replace("on spike { v = v_reset }", reset) + """
network m {
    input x[2]
    layer h[3] = LIF() <- dense(x)
    readout h: first_spike
}
""")
    err = _cli_error(capsys, ["export", str(src), "--nir", str(tmp_path / "m.nir")])
    assert "layer 'h' (neuron LIF)" in err and match in err and "no exact counterpart" in err
    assert not (tmp_path / "m.nir").exists()
