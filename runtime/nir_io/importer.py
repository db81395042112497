"""`spikescan import in.nir -o model.snn`: a NIR file -> a .snn model plus a spikescan checkpoint
with its weights (model.pt next to it), loadable by `spikescan eval` and `spikescan.load_network`.

Steps: reader.read_raw (untrusted HDF5 -> checked plain arrays) -> graph.build (nodes -> layers,
refusals) -> snn_text (the model text) -> compile the written file -> copy the weights and delays
into the SpikingNetwork -> check that every compiled layer is the NIR neuron it came from
(recognise.py, the exporter's own matcher) -> save_checkpoint. The .snn file and the checkpoint
are written atomically; nothing is written when any step fails."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import NirError
from .graph import READOUTS, SPIKING, build
from .reader import read_raw
from .snn_text import Namer, ms_array, neuron_spec, neuron_text, num

_IDENT = "^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass
class ImportSummary:
    snn: Path
    weights: Path
    network: str
    readout: str
    readout_layer: str
    area_s: float
    layers: dict = field(default_factory=dict)  # layer -> NIR kind
    notes: list = field(default_factory=list)


def _area(raw, dt) -> tuple[float, str]:
    if dt is not None:
        dt = float(dt)
        if not (math.isfinite(dt) and dt > 0):
            raise NirError(f"--dt must be a positive number of seconds, got {dt!r}")
        return dt, "--dt"
    a = raw.metadata.get("spikescan_spike_area_s")
    if isinstance(a, float) and math.isfinite(a) and a > 0:
        return a, "the file's spikescan_spike_area_s"
    return 1.0, "default (NIR's unit Dirac delta)"


def _write_atomic(path: Path, data: str) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def render(g, network: str, readout: str, ro_layer: str, area: float, src_name: str, weights_name: str):
    """(.snn text, {node: layer name}, {node: NeuronSpec})."""
    names = Namer()
    net_name = names(network)
    specs, neuron_names, defaults, blocks = {}, {}, {}, []
    for lay in g.layers:
        spec = neuron_spec(lay.kind, lay.params, lay.bias, area)
        specs[lay.node] = spec
        if spec.key not in neuron_names:
            neuron_names[spec.key] = names(lay.kind if len(neuron_names) == 0 or lay.kind not in
                                           [k[0] for k in neuron_names] else f"{lay.kind}_{len(neuron_names)}")
            defaults[spec.key] = spec.params
            blocks.append(neuron_text(neuron_names[spec.key], spec))
    layer = {n: names(n) for n in g.inputs}
    layer.update({lay.node: names(lay.node) for lay in g.layers})
    out = [f"# Imported from {src_name} by `spikescan import` (NIR conventions: docs/nir.md).",
           f"# Weights and delays: {weights_name} (spikescan eval {weights_name} / spikescan.load_network).",
           f"# Times in ms (NIR seconds x 1000); a NIR spike is an input event of area {num(area)} s.", ""]
    out += [b + "\n" for b in blocks]
    out.append(f"network {net_name} {{")
    for n, shape in g.inputs.items():
        out.append(f"    input  {layer[n]}[{', '.join(map(str, shape))}]")
    for lay in g.layers:
        spec = specs[lay.node]
        base = defaults[spec.key]
        over = [f"{k} = {num(v)}{' ms' if k in spec.times else ''}" for k, v in spec.params.items() if base[k] != v]
        conns = [_conn_text(c, layer, lay.node) for c in lay.conns]
        dims = ", ".join(map(str, lay.shape or (lay.size,)))
        out.append(f"    layer  {layer[lay.node]}[{dims}] = {neuron_names[spec.key]}({', '.join(over)})"
                   f"  # NIR {lay.kind} '{lay.node}'")
        out.append(f"               <- {', '.join(conns)}")
    out.append(f"    readout {layer[ro_layer]}: {readout}")
    out.append("}")
    return "\n".join(out) + "\n", layer, specs


def _conn_text(c, layer: dict, target: str) -> str:
    src = layer[c.source]
    if c.kind == "conv2d":
        geo = c.geometry
        return (f"conv2d({src}, channels = {geo['channels']}, kernel = {geo['kernel']}, stride = {geo['stride']}, "
                f"padding = {geo['padding']})")
    if c.kind == "pool2d":
        init = f", init = constant({num(c.pool_weight)})" if c.pool_weight != 1 else ""
        return f"pool2d({src}, {c.geometry['size']}{init})"
    opt = ""
    if c.delay is not None:
        d = ms_array(c.delay)
        opt = (f", delays = fixed({num(float(d.flat[0]))} ms)" if np.all(d == d.flat[0]) else
               f", delays = learnable(max = {num(float(d.max()))} ms)")
    if c.kind == "recurrent":
        return "recurrent()" if c.source == target and not opt else f"recurrent({src}{opt})"
    return f"dense({src}{opt})"


def import_nir(path, out_snn, weights=None, network: Optional[str] = None, readout: Optional[str] = None,
               readout_layer: Optional[str] = None, dt: Optional[float] = None) -> ImportSummary:
    """Import a NIR file; see the module docstring. NirError (one line) when it has no exact
    spikescan form, OSError when a file cannot be read or written."""
    import re

    out_snn = Path(out_snn)
    if out_snn.suffix != ".snn":
        raise NirError(f"the output model must end in .snn, got {out_snn}")
    weights = Path(weights) if weights is not None else out_snn.with_suffix(".pt")
    raw = read_raw(path)
    g = build(raw)
    area, area_from = _area(raw, dt)
    notes = [f"spike area {area:g} s ({area_from})"]
    ro = readout_layer or g.readout_layer
    if ro is None:
        raise NirError(f"{len(g.outputs)} neuron nodes feed Output nodes ({', '.join(g.outputs)}): choose the readout "
                       "layer with --readout-layer NODE")
    layers = {lay.node: lay for lay in g.layers}
    if ro not in layers:
        raise NirError(f"--readout-layer {ro!r} is not a neuron node of the graph (those are {', '.join(layers)})")
    spiking = layers[ro].kind in SPIKING
    kind = readout or (g.readout_meta if g.readout_meta in READOUTS and ro == g.readout_layer else None)
    if kind is None:
        kind = "first_spike" if spiking else "max_potential"
        notes.append(f"readout {kind} (the default for a {layers[ro].kind} layer; choose with --readout)")
    if kind not in READOUTS:
        raise NirError(f"unknown readout {kind!r}; choose one of {', '.join(READOUTS)}")
    if kind in ("first_spike", "spike_count") and not spiking:
        raise NirError(f"readout {kind} needs a spiking layer, but '{ro}' is a {layers[ro].kind} node")
    net_name = network or g.network or out_snn.stem
    if not re.match(_IDENT, net_name):
        net_name = re.sub(r"[^A-Za-z0-9_]", "_", net_name)
        net_name = net_name if re.match(_IDENT, net_name) else "imported"
    text, lname, specs = render(g, net_name, kind, ro, area, Path(path).name, weights.name)
    _write_atomic(out_snn, text)
    try:
        net = _network(out_snn, g, lname, area)
        _save(net, out_snn, weights)
    except BaseException:
        out_snn.unlink(missing_ok=True)
        raise
    return ImportSummary(snn=out_snn, weights=weights, network=net.ir.name, readout=kind, readout_layer=lname[ro],
                         area_s=area, layers={lname[lay.node]: lay.kind for lay in g.layers}, notes=notes)


def _network(out_snn: Path, g, lname: dict, area: float):
    import torch

    from spikescan.compiler.driver import load_model
    from spikescan.dsl.diagnostics import DiagnosticError
    from spikescan.runtime.network import SpikingNetwork

    from .export import layer_maps

    try:
        model = load_model(str(out_snn))
    except DiagnosticError as e:  # a language limit (sizes), else a bug in snn_text
        why = " ".join(str(e).split())
        raise NirError(f"the generated {out_snn} does not compile: {why} (a size limit of the language, "
                       "docs/language.md; otherwise please report it)") from None
    net = SpikingNetwork(model, None, seed=0)
    with torch.no_grad():
        for lay in g.layers:
            _load(net.layers[lname[lay.node]], lay)
            _self_check(net, lname[lay.node], lay, area, layer_maps)
    return net


def _load(L, lay) -> None:
    """Copy a layer's NIR weights and delays into the compiled layer (connections in text order)."""
    import torch

    from spikescan.runtime.recurrent_net import rec_weight_name

    ff = rec = 0
    for c in lay.conns:
        if c.kind == "conv2d":
            L.kernel.copy_(torch.from_numpy(c.weight))
        elif c.kind == "pool2d":
            L.weight.fill_(c.pool_weight)
        elif c.kind == "recurrent":
            getattr(L, rec_weight_name(rec)).copy_(torch.from_numpy(c.weight))
            if c.delay is not None:
                getattr(L, f"d_rec_{rec}").copy_(torch.from_numpy(ms_array(c.delay)))
            rec += 1
        else:
            L.weights[ff].copy_(torch.from_numpy(c.weight))
            if c.delay is not None:
                L.delays[ff].copy_(torch.from_numpy(ms_array(c.delay)))
            ff += 1


def _self_check(net, name, lay, area, layer_maps) -> None:
    """The compiled layer, read back by the exporter's matcher, must be the NIR neuron (to a few
    ulps: times went through ms)."""
    kind, params, bias = layer_maps(net, name, area)
    want, want_bias = dict(lay.params), lay.bias
    if lay.kind in ("LIF", "LI") and want_bias != 0:  # the matcher folds r * bias into v_leak
        want["v_leak"], want_bias = want["v_leak"] + want["r"] * want_bias, 0.0
    if kind != lay.kind:
        raise NirError(f"internal: layer '{name}' compiled to a {kind}, not the NIR {lay.kind}; please report it")
    for k, v in want.items():
        got = float(params[k][0])
        if not math.isclose(got, v, rel_tol=1e-14, abs_tol=0.0) and not (v == 0 and got == 0):
            raise NirError(f"internal: layer '{name}': {k} is {got!r} after import, {v!r} in the NIR file; please "
                           "report it")
    if not math.isclose(float(bias[0]), want_bias, rel_tol=1e-14) and not (want_bias == 0 and bias[0] == 0):
        raise NirError(f"internal: layer '{name}': bias {float(bias[0])!r} after import, {want_bias!r} in the file")


def _save(net, out_snn: Path, weights: Path) -> None:
    from spikescan.compiler.driver import load_model
    from spikescan.runtime.checkpoint import model_reference, save_checkpoint

    ref = model_reference(load_model(str(out_snn)))
    payload = dict(ref, network=net.ir.name, state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
                   optimizer={}, epoch=0, metrics={}, history=[], seed=0, config={"imported_from_nir": True},
                   best_val_accuracy=0.0, best_epoch=0,
                   net_kwargs=dict(engine="auto", chunk=net.chunk, max_spikes=net.max_spikes,
                                   on_overflow=net.on_overflow, learn_time_constants=False))
    save_checkpoint(weights, payload)
