"""Validated NIR nodes (reader.RawGraph) -> spikescan layers and connections (import side).

What maps (docs/nir.md has the full table):
- Input ([N] or [C, H, W]) -> `input x[...]`; Output -> marks the readout layer;
- a neuron node (LIF, LI, IF, I, CubaLIF, CubaLI) -> one layer, of the shape of its parameter
  arrays ([N], or [C, H, W] for a layer fed by a convolution; arrays of one entry each take the
  shape of the node's input signal); every parameter array must hold one value (spikescan
  layers share their parameters);
- the path from a source (an Input or a spiking neuron node) to a neuron node is a connection
  (paths.py: dense with Flatten / Delay / Linear / Affine, conv2d from a Conv2d, pool2d from a
  SumPool2d [Scale]);
- the connections between layers that close a cycle (the back edges of a depth-first walk from
  the inputs; a node's connection to itself always) are `recurrent(src)` connections, with their
  delays; the others are feed-forward, in a topological order of the layers.
Refused with a message naming the node: Conv1d, Threshold, nested graphs, unknown node types or
fields, non-uniform parameters, layers no input reaches, connections from non-spiking neurons,
a conv2d / pool2d layer with another input, shape mismatches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import NirError
from .paths import connection

NEURON_FIELDS = {
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"),
    "IF": ("r", "v_threshold", "v_reset"),
    "I": ("r",),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
}
DEFAULTS = {"v_reset": 0.0, "w_in": 1.0}  # as nir's own classes default them
TIME_FIELDS = ("tau", "tau_syn", "tau_mem")
SPIKING = ("LIF", "IF", "CubaLIF")
PASS = ("Linear", "Affine", "Delay", "Flatten", "Conv2d", "SumPool2d", "AvgPool2d", "Scale")
CONNECTION_KEY = "spikescan_connection"  # "recurrent" on the weight node of a recurrent path (export)
READOUTS = ("first_spike", "spike_count", "max_potential", "li_integral")

_REFUSED = {
    "Conv1d": "1-D convolutions do not exist in spikescan (conv2d only)",
    "Threshold": "a Threshold node (a Heaviside of a continuous signal) has no spikescan counterpart",
}


def refusal(typ: str) -> Optional[str]:
    """Why node type `typ` cannot be imported (None if it may be)."""
    if typ in _REFUSED:
        return _REFUSED[typ] + "; spikescan imports no NIR graph with this node (docs/nir.md)"
    if typ in NEURON_FIELDS or typ in PASS or typ in ("Input", "Output"):
        return None
    return "unknown NIR node type; spikescan imports Input, Output, Linear, Affine, Delay, Flatten, Conv2d, " \
           "SumPool2d, AvgPool2d, Scale, LIF, LI, IF, I, CubaLIF and CubaLI (docs/nir.md)"


@dataclass
class Layer:
    node: str
    kind: str
    size: int
    params: dict  # NIR field -> float (seconds for times)
    conns: list = field(default_factory=list)  # paths.Conn: feed-forward first, then recurrent (graph order)
    bias: float = 0.0  # constant input current (sum of Affine / Conv2d biases)
    shape: tuple = ()  # (N,) or (C, H, W)


@dataclass
class Graph:
    inputs: dict  # node -> shape, (N,) or (C, H, W)
    layers: list  # topological order
    readout_layer: str
    readout_meta: Optional[str]  # the Output's spikescan_readout metadata, if any
    network: Optional[str]
    outputs: list  # the neuron nodes that feed an Output (readout candidates)


def _shape(node, where: str) -> tuple:
    s = node.fields.get("shape")
    if isinstance(s, dict):  # input_type / output_type as {port: shape}
        s = next(iter(s.values())) if len(s) == 1 else None
    if not isinstance(s, np.ndarray):
        raise NirError(f"{where} has no shape")
    s = np.asarray(s).reshape(-1)
    if s.size not in (1, 3) or s.dtype.kind not in "iuf" or not np.all(s == np.round(s)) or not np.all(s >= 1) \
            or not 1 <= float(np.prod(s.astype(np.float64))) <= 10_000_000:
        raise NirError(f"{where} has shape {s.tolist()}; spikescan imports inputs and outputs of shape [N] or "
                       "[C, H, W] of 1 to 10^7 channels")
    return tuple(int(v) for v in s)


def _neuron(name: str, node) -> tuple[tuple, dict]:
    kind, where = node.type, f"node '{name}' ({node.type})"
    allowed = NEURON_FIELDS[kind]
    extra = sorted(set(node.fields) - set(allowed))
    if extra:
        raise NirError(f"{where} has field(s) {', '.join(extra)} that spikescan does not know; refused rather "
                       "than ignored (docs/nir.md)")
    vals, size = {}, None
    for f in allowed:
        if f not in node.fields:
            if f in DEFAULTS:
                continue
            raise NirError(f"{where} has no '{f}'")
        a = node.fields[f]
        if isinstance(a, str):
            raise NirError(f"{where}: '{f}' must be numbers, found text")
        a = np.asarray(a)
        if a.size < 1 or a.ndim > 3:
            raise NirError(f"{where}: '{f}' must be a non-empty array of shape [N] or [C, H, W], found shape "
                           f"{list(a.shape)}")
        shape = tuple(int(v) for v in a.shape) or (1,)
        a = a.astype(np.float64).reshape(-1)
        if size is None:
            size = shape
        elif shape != size:
            raise NirError(f"{where}: '{f}' has shape {list(shape)}, the node's other parameters {list(size)}")
        if f in TIME_FIELDS and not np.all(a > 0):
            raise NirError(f"{where}: time constant '{f}' must be positive, found {float(a.min()):g}")
        if not np.all(a == a[0]):
            raise NirError(f"{where}: '{f}' differs between neurons (from {float(a.min()):g} to {float(a.max()):g}); "
                           "a spikescan layer has one value per parameter, so per-neuron values are refused")
        vals[f] = float(a[0])
    for f, v in DEFAULTS.items():
        if f in allowed:
            vals.setdefault(f, v)
    if vals["r"] == 0 or vals.get("w_in", 1.0) == 0:
        raise NirError(f"{where}: r = 0 or w_in = 0, so inputs have no effect; refused")
    return size, vals


def _edges(raw) -> tuple[dict, dict]:
    pred = {n: [] for n in raw.nodes}
    succ = {n: [] for n in raw.nodes}
    seen = set()
    for a, b in raw.edges:
        for n in (a, b):
            if n not in raw.nodes:
                raise NirError(f"an edge names node '{n}', which the graph does not have")
        if (a, b) in seen:
            raise NirError(f"the edge {a} -> {b} appears twice")
        seen.add((a, b))
        succ[a].append(b)
        pred[b].append(a)
    return pred, succ


def build(raw) -> Graph:
    """The layers of a structurally valid NIR graph; NirError naming the node otherwise."""
    nodes = raw.nodes
    for name, node in nodes.items():
        why = refusal(node.type)
        if why:
            raise NirError(f"node '{name}' is a {node.type} node: {why}")
    pred, succ = _edges(raw)
    inputs, shapes, layers = {}, {}, {}
    for name, node in nodes.items():
        where = f"node '{name}' ({node.type})"
        if node.type == "Input":
            if pred[name]:
                raise NirError(f"{where} has incoming edges")
            inputs[name] = shapes[name] = _shape(node, where)
        elif node.type in NEURON_FIELDS:
            shape, vals = _neuron(name, node)
            shape = shape if len(shape) == 3 else (int(np.prod(shape)),)
            shapes[name] = shape
            layers[name] = Layer(node=name, kind=node.type, size=int(np.prod(shape)), params=vals, shape=shape)
        elif node.type in PASS:
            if len(pred[name]) != 1 or len(succ[name]) != 1:
                raise NirError(f"{where} has {len(pred[name])} inputs and {len(succ[name])} outputs; spikescan maps "
                               "it only on a path with one source and one target (no fan-in or fan-out)")
        elif node.type == "Output":
            if succ[name]:
                raise NirError(f"{where} has outgoing edges")
    if not inputs:
        raise NirError("the graph has no Input node")
    if not layers:
        raise NirError("the graph has no neuron node (LIF, LI, IF, I, CubaLIF, CubaLI)")
    paths = {}
    for tname, lay in layers.items():  # the paths into each neuron node: (chain, source)
        if not pred[tname]:
            raise NirError(f"node '{tname}' ({lay.kind}) has no input")
        paths[tname] = [_walk_back(nodes, pred, p, tname) for p in pred[tname]]
    _broadcast(nodes, layers, shapes, paths)
    for tname, lay in layers.items():  # connections
        for chain, src in paths[tname]:
            conn, bias = connection(nodes, chain, src, shapes[src], tname)
            conn.marked = any(nodes[n].metadata.get(CONNECTION_KEY) == "recurrent" for n in chain)
            _fits(conn, lay, chain, src)
            lay.bias += bias
            lay.conns.append(conn)
        if any(c.kind != "dense" for c in lay.conns) and len(lay.conns) > 1:
            raise NirError(f"node '{tname}' ({lay.kind}) is fed by a Conv2d / SumPool2d and by {len(lay.conns) - 1} "
                           "other path(s); spikescan's conv2d / pool2d is its layer's only input")
    order = _order(inputs, layers)
    return Graph(inputs=inputs, layers=[layers[n] for n in order], **_outputs(raw, pred, layers))


def _walk_back(nodes, pred, p: str, target: str) -> tuple[list, str]:
    chain, cur = [], p
    while nodes[cur].type in PASS:
        chain.insert(0, cur)
        cur = pred[cur][0]
        if len(chain) > len(nodes):
            raise NirError(f"the nodes before '{target}' form a cycle without a neuron node")
    styp = nodes[cur].type
    if styp == "Output":
        raise NirError(f"node '{cur}' (Output) feeds node '{target}'")
    if styp in NEURON_FIELDS and styp not in SPIKING:
        raise NirError(f"node '{cur}' ({styp}) feeds node '{target}', but {styp} neurons do not spike: a "
                       "spikescan layer receives spike events only (its potential is not a signal)")
    return chain, cur


def _broadcast(nodes, layers: dict, shapes: dict, paths: dict) -> None:
    """Neuron nodes whose parameters hold one value each (scalars, as snnTorch and others write a
    layer's shared parameters) take the shape of their input signal, as NumPy broadcasting
    would: the output shape of an input path whose source's shape is known."""
    pending = [n for n, lay in layers.items() if lay.size == 1]
    while pending:
        done = []
        for n in pending:
            for chain, src in paths[n]:
                if src in pending:
                    continue
                conn, _ = connection(nodes, chain, src, shapes[src], n)
                shape = tuple(conn.out_shape) if len(conn.out_shape) == 3 else (int(np.prod(conn.out_shape)),)
                lay = layers[n]
                lay.shape, lay.size, shapes[n] = shape, int(np.prod(shape)), shape
                done.append(n)
                break
        if not done:
            raise NirError(f"node '{pending[0]}' ({layers[pending[0]].kind}) has one value per parameter and only "
                           "inputs from other such nodes: its number of neurons cannot be inferred")
        pending = [n for n in pending if n not in done]


def _fits(conn, lay, chain, src) -> None:
    where = f"the path {' -> '.join([src] + chain + [lay.node])}"
    if conn.kind == "dense":
        if int(np.prod(conn.out_shape)) != lay.size:
            raise NirError(f"{where} carries {int(np.prod(conn.out_shape))} channels into node '{lay.node}' of "
                           f"{lay.size} neurons")
    elif tuple(conn.out_shape) != tuple(lay.shape):
        raise NirError(f"{where} gives a signal of shape {list(conn.out_shape)}, node '{lay.node}' has neurons of "
                       f"shape {list(lay.shape)} (its parameter arrays' shape)")


def _order(inputs: dict, layers: dict) -> list:
    """Mark the connections that close a cycle as recurrent and return a topological order of the
    layers along the others. A graph written by spikescan marks its recurrent connections
    (metadata spikescan_connection = recurrent on the weight node), and that split is kept when it
    is valid (the rest acyclic, each marked one closing a cycle), so the .snn comes back as it was
    written; otherwise the back edges of a depth-first walk from the inputs (in the order of the
    graph's edges) are the recurrent ones, and the order is its reverse post-order."""
    succ = {n: [] for n in layers}
    for t, lay in layers.items():
        for c in lay.conns:
            if c.source in layers:
                succ[c.source].append((t, c))
    walk = _walk_order(inputs, layers, succ)  # also refuses layers no input reaches
    kinds = {id(c): c.kind for lay in layers.values() for c in lay.conns}
    order = _marked_order(layers, succ)
    if order is None:
        order = walk
    else:
        for lay in layers.values():
            for c in lay.conns:
                c.kind = "recurrent" if c.marked else ("dense" if kinds[id(c)] == "recurrent" else kinds[id(c)])
    for lay in layers.values():
        if any(c.kind == "recurrent" for c in lay.conns) and any(c.kind in ("conv2d", "pool2d") for c in lay.conns):
            raise NirError(f"node '{lay.node}' ({lay.kind}) has a recurrent connection and a Conv2d / SumPool2d "
                           "input; spikescan's conv2d / pool2d is its layer's only input")
        lay.conns.sort(key=lambda c: c.kind == "recurrent")  # stable: feed-forward first, as the .snn text
    return order


def _reaches(succ: dict, a: str, b: str) -> bool:
    seen, todo = {a}, [a]
    while todo:
        for t, _ in succ[todo.pop()]:
            if t == b:
                return True
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return False


def _marked_order(layers: dict, succ: dict) -> Optional[list]:
    marked = [(t, c) for t, lay in layers.items() for c in lay.conns if c.marked]
    if not marked or any(c.source not in layers or not _reaches(succ, t, c.source) for t, c in marked):
        return None
    indeg = {n: 0 for n in layers}
    for t, lay in layers.items():
        indeg[t] = sum(1 for c in lay.conns if c.source in layers and not c.marked)
    ready = [n for n in layers if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for t, c in succ[n]:
            if not c.marked:
                indeg[t] -= 1
                if indeg[t] == 0:
                    ready.append(t)
    return order if len(order) == len(layers) else None


def _walk_order(inputs: dict, layers: dict, succ: dict) -> list:
    state, post = {}, []
    roots = [t for t, lay in layers.items() if any(c.source in inputs for c in lay.conns)]
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[n] = 2
                post.append(n)
                continue
            t, c = nxt
            if state.get(t) == 1:  # t is on the walk: c closes a cycle (t itself included)
                c.kind = "recurrent"
            elif t not in state:
                state[t] = 1
                stack.append((t, iter(succ[t])))
    lost = [n for n in layers if n not in state]
    if lost:
        raise NirError(f"node '{lost[0]}' ({layers[lost[0]].kind}) receives nothing from any Input (it is fed only "
                       "by a cycle of neuron nodes that nothing drives); spikescan needs every layer reachable from an "
                       "input")
    return post[::-1]


def _outputs(raw, pred, layers) -> dict:
    fed = {}
    for name, node in raw.nodes.items():
        if node.type != "Output":
            continue
        where = f"node '{name}' (Output)"
        if len(pred[name]) != 1 or pred[name][0] not in layers:
            raise NirError(f"{where} must be fed directly by one neuron node (spikescan reads out a layer)")
        src = pred[name][0]
        shape = _shape(node, where)
        if int(np.prod(shape)) != layers[src].size:
            raise NirError(f"{where} has shape {list(shape)}, its source '{src}' has {layers[src].size} neurons")
        fed[src] = node.metadata.get("spikescan_readout")
    if not fed:
        raise NirError("the graph has no Output node fed by a neuron node: nothing to read out")
    marked = [n for n, m in fed.items() if m not in (None, "none")]
    if len(fed) == 1:
        ro = next(iter(fed))
    elif len(marked) == 1:
        ro = marked[0]
    else:
        ro = None
    meta = raw.metadata.get("spikescan_network")
    return dict(readout_layer=ro, readout_meta=fed.get(ro) if ro else None,
                network=meta if isinstance(meta, str) else None, outputs=sorted(fed))
