"""SpikingNetwork -> NIR graph (`spikescan export model.snn --nir out.nir`).

Per layer one NIR neuron node (recognised from the neuron's equations, recognise.py) with
per-neuron parameter arrays; per connection a Linear (or Affine, carrying the layer's constant
input current as its bias) with the weights transposed to NIR's (out, in), preceded or followed
by a Delay node when the connection has delays that depend on the source or on the target neuron
only; a recurrent connection is a Linear from the layer back to itself; every input population
is an Input node and the readout layer (and any other layer nothing reads) feeds an Output node,
whose metadata names the spikescan readout. Times are written in seconds (x / 1000, correctly
rounded). The graph is type-checked by `nir.NIRGraph` and written atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import NirError
from .export_paths import PathWriter, f64
from .recognise import NeuronMap, recognise

READOUT_KEY = "spikescan_readout"
AREA_KEY = "spikescan_spike_area_s"
NETWORK_KEY = "spikescan_network"


def require_nir():
    try:
        import nir
    except ImportError:
        raise NirError("NIR export needs the `nir` package (neuromorphs/NIR): pip install nir") from None
    return nir


@dataclass
class ExportSummary:
    path: Optional[Path]
    network: str
    layers: dict = field(default_factory=dict)  # layer -> NIR neuron kind
    nodes: int = 0
    edges: int = 0


def _values(lay) -> tuple[list[str], np.ndarray]:
    """Parameter names and a [N, P] float64 array of the layer's per-neuron values."""
    names = list(lay.param_names)
    cols = []
    for name in names:
        v = lay.params()[name].detach().to(torch.float64).cpu().reshape(-1).numpy()
        cols.append(np.broadcast_to(v, (lay.size,)) if v.size == 1 else v)
    return names, (np.stack(cols, 1) if cols else np.zeros((lay.size, 0)))


def layer_maps(net, name: str, area_s: float) -> tuple[str, dict, np.ndarray]:
    """(kind, NIR parameter arrays [N], bias [N]) of layer `name`."""
    lay = net.layers[name]
    ir = net.neurons[lay.neuron]
    where = f"layer '{name}' (neuron {ir.name})"
    if lay.port is None:
        raise NirError(f"{where}: the layer has no input connection")
    if not isinstance(lay.port, str):  # a PortMap (runtime/engines/ports.py)
        raise NirError(f"{where}: its connections use several input ports {list(lay.port.names)}; a NIR "
                       "neuron node has one input, so the layer has no exact NIR counterpart")
    names, vals = _values(lay)
    uniq, inverse = np.unique(vals, axis=0, return_inverse=True) if vals.shape[1] else (vals[:1], np.zeros(lay.size, int))
    maps: list[NeuronMap] = [recognise(ir, dict(zip(names, row.tolist())), lay.port, area_s, where) for row in uniq]
    kinds = {m.kind for m in maps}
    if len(kinds) > 1:
        raise NirError(f"{where}: its neurons map to different NIR neuron types {sorted(kinds)} (learned "
                       "time constants made some leaky and some not); NIR needs one type per node")
    inverse = np.asarray(inverse).reshape(-1)
    params = {k: np.array([maps[i].params[k] for i in inverse], dtype=np.float64) for k in maps[0].params}
    bias = np.array([maps[i].bias for i in inverse], dtype=np.float64)
    return maps[0].kind, params, bias


def _neuron_node(nir, kind: str, p: dict, metadata: dict):
    cls = getattr(nir, kind)
    return cls(**p, metadata=metadata)


class _Names:
    def __init__(self, taken):
        self.taken = set(taken)

    def new(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


def network_graph(net, area_s: float = 1.0):
    """The NIRGraph of a SpikingNetwork (its current weights, delays and parameters)."""
    nir = require_nir()
    if not (np.isfinite(area_s) and area_s > 0):
        raise NirError(f"the spike area (--dt) must be a positive number of seconds, got {area_s!r}")
    ir = net.ir
    if getattr(ir, "discrete", None):
        raise NirError(f"network '{ir.name}' is a discrete-time (PSN) network; NIR's neurons are continuous-time ODEs, "
                       "so it has no exact NIR form (docs/nir.md)")
    from spikescan.runtime.recurrent_net import rec_delays, rec_weights

    names = _Names(list(ir.inputs) + [l.name for l in ir.layers])
    nodes, edges, kinds = {}, [], {}
    shapes = getattr(ir, "shapes", None) or {}
    shape_of = {pop: tuple(shapes.get(pop) or (size,)) for pop, size in ir.inputs.items()}
    for lir in ir.layers:  # a layer is a [C, H, W] neuron node when a conv2d / pool2d feeds it
        conv = any(getattr(c, "conv", None) is not None for c in lir.connections)
        shape_of[lir.name] = tuple(lir.shape) if conv and len(lir.shape or ()) == 3 else (lir.size,)
    for pop in ir.inputs:
        nodes[pop] = nir.Input(input_type=np.array(shape_of[pop]))
    paths = PathWriter(nir, nodes, edges, names, shape_of)
    fed: set[str] = set()

    def check_source(src: str, where: str) -> None:
        if src not in ir.inputs and net.neurons[net.layers[src].neuron].c is None:
            raise NirError(f"{where}: '{src}' does not spike (neuron {net.layers[src].neuron} has no threshold); "
                           "spikescan layers exchange spikes only")
        fed.add(src)

    for lir in ir.layers:
        lay = net.layers[lir.name]
        kind, params, bias = layer_maps(net, lir.name, area_s)
        kinds[lir.name] = kind
        shape = shape_of[lir.name]
        nodes[lir.name] = _neuron_node(nir, kind, {k: v.reshape(shape) for k, v in params.items()},
                                       {"spikescan_neuron": lay.neuron})
        ff = [c for c in lir.connections if c.kind != "recurrent"]
        if getattr(lay, "conv", None) is not None:  # runtime/conv.py: the layer's only connection
            conn = ff[0]
            where = f"layer '{lir.name}', {conn.kind} of '{conn.source}'"
            check_source(conn.source, where)
            paths.conv(lay, conn.source, lir.name, bias, where, f"{conn.source}_to_{lir.name}")
            continue
        for k, (conn, W) in enumerate(zip(ff, lay.weights)):
            where = f"layer '{lir.name}', connection from '{conn.source}'"
            check_source(conn.source, where)
            D = None
            if conn.delays is not None:
                D = f64(lay.delays[k].detach().clamp(0.0, lay.delay_max[k]))
            paths.dense(conn.source, lir.name, f64(W), D, bias.copy() if k == 0 and np.any(bias) else None, where,
                        f"{conn.source}_to_{lir.name}")
        rec = [c for c in lir.connections if c.kind == "recurrent"]
        for k, (conn, W, D) in enumerate(zip(rec, rec_weights(lay), rec_delays(lay))):
            src = conn.source or lir.name
            where = f"layer '{lir.name}', recurrent connection from '{src}'"
            if conn.port != lay.port:
                raise NirError(f"{where}: it arrives on port '{conn.port}', the layer's other connections on "
                               f"'{lay.port}'; a NIR neuron node has one input, so the layer has no exact NIR "
                               "counterpart")
            check_source(src, where)
            paths.dense(src, lir.name, f64(W), None if D is None else f64(D), None, where,
                        f"{lir.name}_recurrent" if src == lir.name else f"{src}_to_{lir.name}_recurrent",
                        recurrent=True)
    leaves = [l.name for l in ir.layers if l.name not in fed or l.name == ir.readout.layer]
    for name in leaves:
        on = names.new("output" if name == ir.readout.layer else f"{name}_output")
        kind = ir.readout.kind if name == ir.readout.layer else "none"
        nodes[on] = nir.Output(output_type=np.array(shape_of[name]), metadata={READOUT_KEY: kind})
        edges.append((name, on))
    from spikescan import __version__

    meta = {"producer": f"spikescan {__version__}", NETWORK_KEY: ir.name, AREA_KEY: float(area_s)}
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError) as e:
        raise NirError(f"internal: the exported graph does not type-check in nir: {e}") from None
    return graph, kinds


def write_graph(graph, out) -> Path:
    """nir.write to `out` atomically (temporary file in the same folder, then os.replace)."""
    nir = require_nir()
    out = Path(out)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
        os.close(fd)
        nir.write(tmp, graph)
        os.replace(tmp, out)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {out}: {e.strerror or e}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build_network(model=None, network: Optional[str] = None, checkpoint=None, seed: int = 0, warn=None):
    """The SpikingNetwork to export: from a checkpoint written by `spikescan train` (its
    weights, delays and parameters; the model from `model` if given, else the sources embedded
    in the checkpoint) or the model's seeded initial weights."""
    from spikescan.runtime.network import SpikingNetwork

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    if checkpoint is None:
        if model is None:
            raise NirError("export needs a .snn model or a --checkpoint")
        return SpikingNetwork.from_file(model, network, seed=seed)
    from spikescan.runtime.checkpoint import load_checkpoint, load_state, model_reference

    ck = load_checkpoint(checkpoint)
    if network is not None and network != ck["network"]:
        raise NirError(f"checkpoint {checkpoint} holds network {ck['network']!r}, not {network!r}")
    if model is None:
        from spikescan.runtime.train import network_from_checkpoint

        return network_from_checkpoint(ck, engine="torch", path=checkpoint)
    from spikescan.compiler.driver import load_model

    m = load_model(str(model))
    if ck.get("model_sha256") not in (None, model_reference(m)["model_sha256"]):
        warn(f"warning: {model} differs from the model {checkpoint} was trained with; exporting {model} with the "
             "checkpoint's weights and parameters")
    net = SpikingNetwork(m, ck["network"], seed=ck["seed"], learn_time_constants=bool(
        ck.get("net_kwargs", {}).get("learn_time_constants", False)))
    load_state(net, ck["state_dict"], checkpoint)
    return net


def export_nir(model=None, out=None, network: Optional[str] = None, checkpoint=None, dt: Optional[float] = None,
               seed: int = 0, warn=None) -> ExportSummary:
    """Export a .snn network (or a trained checkpoint) to a NIR file; `dt` (seconds) writes the
    graph for simulators that read a spike as a pulse of area dt (docs/nir.md), default: NIR's
    unit Dirac delta. Returns what was written; NirError when the network has no exact NIR form."""
    if out is None:
        raise NirError("export needs an output path (--nir out.nir)")
    net = build_network(model, network, checkpoint, seed, warn)
    with torch.no_grad():
        graph, kinds = network_graph(net, 1.0 if dt is None else float(dt))
    path = write_graph(graph, out)
    return ExportSummary(path=path, network=net.ir.name, layers=kinds, nodes=len(graph.nodes), edges=len(graph.edges))
