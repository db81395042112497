"""NIR and recurrent connections (docs/nir.md): feedback from a later layer and several recurrent
connections are cycles of the NIR graph, their delays Delay nodes when they depend on the source
or the target neuron only. `.snn -> NIR -> .snn` gives the same model (the same split into
feed-forward and recurrent connections) and bit-identical spike trains; a cyclic graph built with
the `nir` package imports and simulates as a hand-written event loop of NIR's IF equations says;
per-synapse delays are refused with the reason."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir", reason="the NIR tests need the `nir` package (pip install nir, in the test extra)")

from spikescan import load_network  # noqa: E402
from spikescan.runtime.network import SpikingNetwork  # noqa: E402
from spikescan.runtime.nir_io import NirError, import_nir  # noqa: E402
from spikescan.runtime.nir_io.export import network_graph, write_graph  # noqa: E402

LIF = """
neuron LIF {
    params { tau_m = 10 ms   v_th = 1.0   v_reset = 0.0 }
    state  { v = 0.0 }
    dynamics { dv/dt = -v / tau_m }
    on input(w) { v += w }
    spike when v >= v_th
    on spike { v = v_reset }
}
"""

# `zed` comes first in the file but after `alpha` by name: a depth-first walk from the input in
# name order would call zed <- alpha the feed-forward connection; the export's marks keep the file's.
FEEDBACK = LIF + """
network fb {
    input  x[4]
    layer  zed[5] = LIF() <- dense(x, init = normal(0.7, 0.3)),
                             recurrent(alpha, init = normal(0.3, 0.3), delays = learnable(max = 3 ms)),
                             recurrent(init = normal(0, 0.3))
    layer  alpha[3] = LIF() <- dense(zed, init = normal(0.6, 0.3)), dense(x, init = normal(0.2, 0.3)),
                               recurrent(init = normal(0.1, 0.2), delays = fixed(1.5 ms))
    readout alpha: first_spike
}
"""


def test_feedback_and_recurrent_delays_round_trip_bit_identical(tmp_path):
    src = tmp_path / "fb.snn"
    src.write_text(FEEDBACK)
    net = SpikingNetwork.from_file(src, seed=0, engine="torch")
    with torch.no_grad():  # per-source delays (one per alpha neuron): a Delay before the weights
        net.layers["zed"].d_rec_0.copy_(torch.tensor([0.5, 2.0, 2.75])[:, None].expand(3, 5))
    graph, kinds = network_graph(net)
    assert kinds == {"zed": "LIF", "alpha": "LIF"}
    assert ("alpha", "alpha_to_zed_recurrent_delay") in graph.edges and ("zed_recurrent", "zed") in graph.edges
    assert np.array_equal(graph.nodes["alpha_to_zed_recurrent_delay"].delay, [0.0005, 0.002, 0.00275])
    assert np.all(graph.nodes["alpha_recurrent_delay"].delay == 0.0015)
    write_graph(graph, tmp_path / "fb.nir")
    imp = import_nir(tmp_path / "fb.nir", tmp_path / "b" / "fb.snn")
    text = imp.snn.read_text()
    assert "<- dense(x), recurrent(alpha, delays = learnable(max = 2.75 ms)), recurrent()" in text
    assert "<- dense(zed), dense(x), recurrent(alpha, delays = fixed(1.5 ms))" in text
    assert text.index("layer  zed") < text.index("layer  alpha")
    back = load_network(imp.weights, engine="torch")
    sd_a, sd_b = net.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    g = torch.Generator().manual_seed(2)
    t = torch.sort(torch.rand(2, 16, generator=g, dtype=torch.float64) * 20, 1).values
    c = torch.randint(0, 4, (2, 16), generator=g)
    oa, ob = net(t, c), back(t, c)
    for ca, cb, sa, sb in zip(oa.counts, ob.counts, oa.spikes, ob.spikes):
        assert int(ca.sum()) > 0, "a layer is silent: the test would prove nothing"
        assert torch.equal(ca, cb) and torch.equal(sa, sb)


def test_per_synapse_recurrent_delays_are_refused_with_the_reason(tmp_path):
    src = tmp_path / "fb.snn"
    src.write_text(FEEDBACK)
    net = SpikingNetwork.from_file(src, seed=0)
    with torch.no_grad():  # as learned: one delay per synapse
        net.layers["zed"].d_rec_0.copy_(torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) * 3)
    with pytest.raises(NirError, match=r"layer 'zed', recurrent connection from 'alpha': its delays depend on both "
                                       r"the source and the target neuron .* expanded graph"):
        network_graph(net)


def _if(n, th=1.0):
    return nir.IF(r=np.ones(n), v_threshold=np.full(n, th), v_reset=np.zeros(n))


def _event_loop(inputs, conns, n, t_stop=200.0):
    """NIR IF neurons (dv/dt = r I, I a sum of weighted Dirac deltas, r = 1) by a plain event
    queue. conns: (source, target, W [out, in], delay [out, in] ms). Returns layer -> neuron ->
    spike times; asserts no two events reach a neuron at the same time (then the order of
    simultaneous deltas, which NIR leaves open, cannot matter)."""
    v = {k: np.zeros(m) for k, m in n.items()}
    spikes = {k: [[] for _ in range(m)] for k, m in n.items()}
    q, seen = [], set()
    for t, ch in inputs:
        heapq.heappush(q, (t, 0, "in", ch, None))
    seq = 1
    while q:
        t, _, layer, i, w = heapq.heappop(q)
        if t > t_stop:
            break
        if layer != "in":
            assert (layer, i, t) not in seen, "simultaneous events: the test input is ambiguous"
            seen.add((layer, i, t))
            v[layer][i] += w
            if v[layer][i] < 1.0:
                continue
            v[layer][i] = 0.0
            spikes[layer][i].append(t)
        for src, tgt, W, D in conns:
            if src != layer:
                continue
            for j in range(W.shape[0]):
                if W[j, i] != 0:
                    heapq.heappush(q, (t + D[j, i], seq, tgt, j, W[j, i]))
                    seq += 1
    return spikes


def test_cyclic_graph_from_the_nir_package_matches_an_event_loop(tmp_path):
    """in -> a (IF) -> [Delay per source, Linear] -> b (IF) -> [Linear, Delay per target] -> a,
    and b -> Linear -> b: import makes a <- dense(in), recurrent(b, delays); b <- dense(a, delays),
    recurrent(b, delays) (no metadata: the back edges of the walk from the input)."""
    W_in = np.array([[0.75], [0.5]])
    W_ab = np.array([[0.625, 0.0], [0.0, 0.75]])  # (out, in)
    W_ba = np.array([[0.25, 0.5], [0.375, 0.125]])
    W_bb = np.array([[0.0, 0.125], [0.25, 0.0]])
    d_ab, d_ba = np.array([0.0021, 0.00337]), np.array([0.00153, 0.00071])  # s: per source of ab, per target of ba
    d_bb = np.array([0.00091, 0.00129])  # per target: a zero-delay loop would make NIR's order of a reset and a
    # delta at the same instant matter
    nodes = {
        "in": nir.Input(input_type=np.array([1])), "lin_in": nir.Linear(weight=W_in), "a": _if(2), "b": _if(2),
        "lin_ab": nir.Linear(weight=W_ab), "del_ab": nir.Delay(delay=d_ab),
        "del_ba": nir.Delay(delay=d_ba), "lin_ba": nir.Linear(weight=W_ba),
        "lin_bb": nir.Linear(weight=W_bb), "del_bb": nir.Delay(delay=d_bb),
        "out": nir.Output(output_type=np.array([2])),
    }
    edges = [("in", "lin_in"), ("lin_in", "a"), ("a", "del_ab"), ("del_ab", "lin_ab"), ("lin_ab", "b"),
             ("b", "lin_ba"), ("lin_ba", "del_ba"), ("del_ba", "a"), ("b", "lin_bb"), ("lin_bb", "del_bb"),
             ("del_bb", "b"), ("b", "out")]
    nir.write(tmp_path / "g.nir", nir.NIRGraph(nodes=nodes, edges=edges, type_check=True))
    s = import_nir(tmp_path / "g.nir", tmp_path / "g.snn")
    text = s.snn.read_text()
    assert "<- dense(in), recurrent(b, delays = learnable(max = 1.5" in text
    assert "<- dense(a, delays = learnable(max = 3.37 ms)), recurrent(b, delays = learnable(max = 1.2" in text
    net = load_network(s.weights, engine="torch")
    times = [1.0, 2.6, 4.17, 5.3, 7.55, 8.9, 11.2, 15.45]
    out = net(torch.tensor([times], dtype=torch.float64), torch.zeros(1, len(times), dtype=torch.int64))
    ms = lambda d: d * 1000  # noqa: E731
    want = _event_loop([(t, 0) for t in times], [
        ("in", "a", W_in, np.zeros((2, 1))),
        ("a", "b", W_ab, np.repeat(ms(d_ab)[None, :], 2, 0)),  # [out, in]: by source
        ("b", "a", W_ba, np.repeat(ms(d_ba)[:, None], 2, 1)),  # by target
        ("b", "b", W_bb, np.repeat(ms(d_bb)[:, None], 2, 1)),
    ], {"a": 2, "b": 2})
    assert sum(len(x) for x in want["b"]) >= 3 and len(want["a"][1]) >= 2
    for k, layer in enumerate(("a", "b")):
        for j in range(2):
            n = int(out.counts[k][0, j])
            assert out.spikes[k][0, j, :n].tolist() == pytest.approx(want[layer][j], abs=1e-12, rel=0), (layer, j)


def test_recurrent_connection_on_another_port_is_refused(tmp_path):
    src = tmp_path / "p.snn"
    src.write_text(LIF.replace("on input(w) { v += w }", "on a(w) { v += w }\n    on b(w) { v += 0.5 * w }") + """
network p {
    input  x[2]
    layer  h[3] = LIF() <- dense(x), recurrent(port = b, delays = fixed(1 ms))
    readout h: first_spike
}
""")
    with pytest.raises(NirError, match="recurrent connection from 'h': it arrives on port 'b', the layer's other "
                                       "connections on 'a'; a NIR neuron node has one input"):
        network_graph(SpikingNetwork.from_file(src, seed=0))
