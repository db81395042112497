"""Validated NIR nodes (reader.RawGraph) -> spikescan layers and connections (import side).

What maps (docs/nir.md has the full table):
- Input (1-D shape) -> `input x[N]`; Output -> marks the readout layer;
- a neuron node (LIF, LI, IF, I, CubaLIF, CubaLI) -> one layer; its parameter arrays must hold
  one value each (spikescan layers share their parameters);
- the path from a source (an Input or a spiking neuron node) to a neuron node is a connection:
  [Delay] [Flatten of a 1-D signal] [Linear | Affine] [Delay], in this order, each node on it
  with one input and one output. No Linear means identity weights. Delays before the Linear
  delay a source channel, after it a target neuron; spikescan holds the sum per synapse.
  An Affine bias is a constant input current: a neuron parameter, so it must be one value for
  the whole layer. A Linear from a neuron node back to itself is a recurrent connection.
Refused with a message naming the node: convolution, pooling, Scale, Threshold, nested graphs,
unknown node types or fields, non-uniform parameters, feedback between different layers,
delays on recurrent connections, connections from non-spiking neurons, shape mismatches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import NirError

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
PASS = ("Linear", "Affine", "Delay", "Flatten")
READOUTS = ("first_spike", "spike_count", "max_potential", "li_integral")

_REFUSED = {
    "Conv1d": "convolutions do not exist in spikescan yet (dense layers only)",
    "Conv2d": "convolutions do not exist in spikescan yet (dense layers only)",
    "SumPool2d": "pooling does not exist in spikescan yet (dense layers only)",
    "AvgPool2d": "pooling does not exist in spikescan yet (dense layers only)",
    "Scale": "a Scale node has no spikescan counterpart (connections carry spikes through dense weights only)",
    "Threshold": "a Threshold node (a Heaviside of a continuous signal) has no spikescan counterpart",
}


def refusal(typ: str) -> Optional[str]:
    """Why node type `typ` cannot be imported (None if it may be)."""
    if typ in _REFUSED:
        return _REFUSED[typ] + "; spikescan imports no NIR graph with this node (docs/nir.md)"
    if typ in NEURON_FIELDS or typ in PASS or typ in ("Input", "Output"):
        return None
    return "unknown NIR node type; spikescan imports Input, Output, Linear, Affine, Delay, Flatten (1-D), " \
           "LIF, LI, IF, I, CubaLIF and CubaLI (docs/nir.md)"


@dataclass
class Conn:
    source: str  # an Input or a neuron node
    weight: np.ndarray  # [n_source, n_target] (spikescan's orientation)
    delay: Optional[np.ndarray] = None  # [n_source, n_target] seconds, None when no Delay node


@dataclass
class Layer:
    node: str
    kind: str
    size: int
    params: dict  # NIR field -> float (seconds for times)
    conns: list = field(default_factory=list)
    w_rec: Optional[np.ndarray] = None  # [N, N] (source, target)
    bias: float = 0.0  # constant input current (sum of Affine biases)


@dataclass
class Graph:
    inputs: dict  # node -> size
    layers: list  # topological order
    readout_layer: str
    readout_meta: Optional[str]  # the Output's spikescan_readout metadata, if any
    network: Optional[str]
    outputs: list  # the neuron nodes that feed an Output (readout candidates)


def _vector(a, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] < 1:
        raise NirError(f"{where} must be a non-empty 1-D array, found shape {tuple(a.shape)}")
    return a


def _shape(node, where: str) -> int:
    s = node.fields.get("shape")
    if not isinstance(s, np.ndarray):
        raise NirError(f"{where} has no shape")
    s = np.asarray(s).reshape(-1)
    if s.size != 1 or s.dtype.kind not in "iuf" or s[0] != int(s[0]) or not 1 <= int(s[0]) <= 10_000_000:
        raise NirError(f"{where} has shape {s.tolist()}; spikescan imports 1-D inputs and outputs of 1 to 10^7 "
                       "channels (flatten images before the graph)")
    return int(s[0])


def _neuron(name: str, node) -> tuple[int, dict]:
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
        a = _vector(a, f"{where}: '{f}'").astype(np.float64)
        if size is None:
            size = a.shape[0]
        elif a.shape[0] != size:
            raise NirError(f"{where}: '{f}' has {a.shape[0]} entries, the node's other parameters {size}")
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
    inputs, sizes, layers = {}, {}, {}
    for name, node in nodes.items():
        where = f"node '{name}' ({node.type})"
        if node.type == "Input":
            if pred[name]:
                raise NirError(f"{where} has incoming edges")
            inputs[name] = sizes[name] = _shape(node, where)
        elif node.type in NEURON_FIELDS:
            size, vals = _neuron(name, node)
            sizes[name] = size
            layers[name] = Layer(node=name, kind=node.type, size=size, params=vals)
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
    # connections: walk back from each neuron node to its source
    deps = {n: set() for n in layers}
    for tname, lay in layers.items():
        if not pred[tname]:
            raise NirError(f"node '{tname}' ({lay.kind}) has no input")
        for p in pred[tname]:
            chain, cur = [], p
            while nodes[cur].type in PASS:
                chain.insert(0, cur)
                cur = pred[cur][0]
            src = cur
            styp = nodes[src].type
            if styp == "Output":
                raise NirError(f"node '{src}' (Output) feeds node '{tname}'")
            if styp in NEURON_FIELDS and styp not in SPIKING:
                raise NirError(f"node '{src}' ({styp}) feeds node '{tname}', but {styp} neurons do not spike: a "
                               "spikescan layer receives spike events only (its potential is not a signal)")
            conn, bias = _connection(nodes, chain, src, sizes[src], tname, lay.size)
            lay.bias += bias
            if src == tname:
                if conn.delay is not None:
                    raise NirError(f"the recurrent connection of node '{tname}' has a Delay; spikescan's recurrent "
                                   "connections have no delays")
                if lay.w_rec is not None:
                    raise NirError(f"node '{tname}' has two recurrent connections onto itself; merge them")
                lay.w_rec = conn.weight
            else:
                lay.conns.append(conn)
                if src in layers:
                    deps[tname].add(src)
        if not lay.conns:
            raise NirError(f"node '{tname}' ({lay.kind}) has no input other than itself")
    order = _toposort(deps)
    # outputs and the readout layer
    fed = {}
    for name, node in nodes.items():
        if node.type != "Output":
            continue
        where = f"node '{name}' (Output)"
        if len(pred[name]) != 1 or pred[name][0] not in layers:
            raise NirError(f"{where} must be fed directly by one neuron node (spikescan reads out a layer)")
        src = pred[name][0]
        if _shape(node, where) != layers[src].size:
            raise NirError(f"{where} has shape {_shape(node, where)}, its source '{src}' has {layers[src].size} neurons")
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
    return Graph(inputs=inputs, layers=[layers[n] for n in order], readout_layer=ro,
                 readout_meta=fed.get(ro) if ro else None, network=meta if isinstance(meta, str) else None, outputs=sorted(fed))


def _connection(nodes, chain, src, width, target, tsize) -> tuple[Conn, float]:
    where = f"the path {' -> '.join([src] + chain + [target])}"
    pre = post = None
    W, bias, n_in = None, 0.0, width
    for name in chain:
        node = nodes[name]
        f = node.fields
        if node.type == "Delay":
            d = f.get("delay")
            if not isinstance(d, np.ndarray):
                raise NirError(f"node '{name}' (Delay) has no 'delay' array")
            d = _vector(d, f"node '{name}' (Delay): 'delay'").astype(np.float64)
            if d.shape[0] != width:
                raise NirError(f"node '{name}' (Delay) has {d.shape[0]} entries on a signal of {width} channels ({where})")
            if not np.all(d >= 0):
                raise NirError(f"node '{name}' (Delay): delays must be >= 0, found {float(d.min()):g}")
            if W is None:
                pre = d if pre is None else pre + d
            else:
                post = d if post is None else post + d
        elif node.type == "Flatten":
            shapes = [v for v in (f.get("input_type") or {}).values() if isinstance(v, np.ndarray)]
            if len(shapes) != 1 or shapes[0].reshape(-1).tolist() != [width]:
                raise NirError(f"node '{name}' (Flatten) flattens a signal of shape "
                               f"{[s.reshape(-1).tolist() for s in shapes] or 'unknown'}; spikescan accepts Flatten only "
                               f"as the identity on a 1-D signal ({where})")
        else:  # Linear | Affine
            if W is not None:
                raise NirError(f"{where} has two Linear/Affine nodes in a row; spikescan maps one weight matrix per "
                               "connection (multiply them out before exporting)")
            w = f.get("weight")
            if not isinstance(w, np.ndarray) or w.ndim != 2:
                raise NirError(f"node '{name}' ({node.type}): 'weight' must be a 2-D (out, in) array")
            if w.shape[1] != width:
                raise NirError(f"node '{name}' ({node.type}): weight is {tuple(w.shape)} (out, in), its input has "
                               f"{width} channels")
            extra = sorted(set(f) - ({"weight", "bias"} if node.type == "Affine" else {"weight"}))
            if extra:
                raise NirError(f"node '{name}' ({node.type}) has field(s) {', '.join(extra)} that spikescan does not know")
            W = np.ascontiguousarray(w.astype(np.float64).T)
            width = w.shape[0]
            if node.type == "Affine":
                b = f.get("bias")
                if not isinstance(b, np.ndarray):
                    raise NirError(f"node '{name}' (Affine) has no 'bias' array")
                b = np.asarray(b, dtype=np.float64).reshape(-1)
                if b.shape[0] != width and b.shape[0] != 1:
                    raise NirError(f"node '{name}' (Affine): bias has {b.shape[0]} entries, weight {width} outputs")
                if not np.all(b == b[0]):
                    raise NirError(f"node '{name}' (Affine): the bias differs between neurons; spikescan holds a "
                                   "constant input current as one parameter per layer, so it is refused")
                bias = float(b[0])
    if width != tsize:
        raise NirError(f"{where} carries {width} channels into node '{target}' of {tsize} neurons")
    if W is None:
        W = np.eye(n_in, dtype=np.float64)
    delay = None
    if pre is not None or post is not None:
        delay = np.zeros(W.shape)
        if pre is not None:
            delay = delay + pre[:, None]
        if post is not None:
            delay = delay + post[None, :]
    return Conn(source=src, weight=W, delay=delay), bias


def _toposort(deps: dict) -> list:
    order, state = [], {}

    def visit(n, stack):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cyc = stack[stack.index(n):] + [n]
            raise NirError(f"the layers form a cycle ({' -> '.join(reversed(cyc))}); spikescan runs layers in order and "
                           "supports recurrence only from a layer onto itself")
        state[n] = 1
        for d in sorted(deps[n]):
            visit(d, stack + [n])
        state[n] = 2
        order.append(n)

    for n in deps:
        visit(n, [])
    return order
