"""Recurrent connections of a SpikingNetwork beyond one zero-delay self-connection: delays on
recurrent connections, feedback from later layers and several recurrent connections per layer.

- `init_recurrent` gives a layer its recurrent weights and delays: the first recurrent
  connection keeps the name `w_rec` (checkpoints of plain recurrent layers load unchanged), the
  k-th further one is `w_rec_<k>`; delays are `d_rec_<k>` (k = 0 for the first), a Parameter
  when learnable, clamped to [0, max] like feed-forward delays.
- `plan` finds the strongly connected groups of layers (edges: every connection from a layer)
  and a run order in which each group's outside inputs are ready. A layer whose recurrence is
  plain (one `recurrent(itself)`, no delays) and which is alone in its group keeps its own
  engines (runtime/engines/recurrent.py, recurrent_cpu.py); every other group runs jointly on
  runtime/engines/recurrent_group.py, the exact PyTorch event loop, whatever the network's engine
  (it is the only engine for these; docs/engines.md).
- `run_group` assembles a group's outside events and couplings and runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from spikescan.compiler.ir import LayerIR, NetworkIR


@dataclass(frozen=True)
class RecConn:
    source: str
    port: Optional[str]
    delay_max: float  # 0 without delays
    has_delays: bool


def rec_weight_name(k: int) -> str:
    return "w_rec" if k == 0 else f"w_rec_{k}"


def init_recurrent(lay: nn.Module, layer: LayerIR, sizes: dict, gen, init_weight, dtype) -> None:
    """Register the recurrent weights (then delays) of `layer` on `lay`, in connection order."""
    rec = [c for c in layer.connections if c.kind == "recurrent"]
    for c in rec:
        if c.source not in sizes:
            raise ValueError(f"layer {layer.name!r}: recurrent({c.source}) names no layer of the network")
    ff = [c for c in layer.connections if c.kind != "recurrent"]
    lay.ff_ports = [c.port for c in ff]
    lay.ff_has_delays = [c.delays is not None for c in ff]
    lay.rec_conns = [RecConn(c.source, c.port, float(c.delays.max) if c.delays else 0.0, c.delays is not None)
                     for c in rec]
    for k, c in enumerate(rec):
        lay.register_parameter(rec_weight_name(k), nn.Parameter(init_weight(c.init, sizes[c.source], layer.size, gen)))
    if not rec:
        lay.w_rec = None
    for k, c in enumerate(rec):
        if c.delays is None:
            continue
        shape, dmax = (sizes[c.source], layer.size), float(c.delays.max)
        if c.delays.init < 0:
            d = torch.rand(shape, generator=gen, dtype=dtype) * min(-c.delays.init, dmax)
        else:
            d = torch.full(shape, min(float(c.delays.init), dmax), dtype=dtype)
        lay.register_parameter(f"d_rec_{k}", nn.Parameter(d, requires_grad=c.delays.learnable))


def rec_weights(lay) -> list[Tensor]:
    return [getattr(lay, rec_weight_name(k)) for k in range(len(getattr(lay, "rec_conns", ())))]


def rec_delays(lay) -> list[Optional[Tensor]]:
    """Per recurrent connection: its delays clamped to [0, max], or None."""
    out = []
    for k, rc in enumerate(getattr(lay, "rec_conns", ())):
        out.append(getattr(lay, f"d_rec_{k}").clamp(0.0, rc.delay_max) if rc.has_delays else None)
    return out


@torch.no_grad()
def clamp_recurrent_(lay) -> None:
    for k, rc in enumerate(getattr(lay, "rec_conns", ())):
        if rc.has_delays:
            getattr(lay, f"d_rec_{k}").clamp_(0.0, rc.delay_max)


def is_plain(layer: LayerIR) -> bool:
    """One zero-delay `recurrent(itself)` on the port of the layer's other connections: the case
    the plain recurrent engines run."""
    rec = [c for c in layer.connections if c.kind == "recurrent"]
    ff = [c for c in layer.connections if c.kind != "recurrent"]
    return (len(rec) == 1 and rec[0].source == layer.name and rec[0].delays is None and bool(ff)
            and all(c.port == rec[0].port for c in ff))


def _sccs(names: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), members in `names` order."""
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]
    for root in names:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(edges[nxt])))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                pos = {n: i for i, n in enumerate(names)}
                comps.append(sorted(comp, key=pos.__getitem__))
    return comps


@dataclass
class Plan:
    order: list  # run steps: a layer name, or a tuple of layer names run jointly (a group)
    group_of: dict  # layer name -> its group tuple (only layers run by run_group)


def plan(net_ir: NetworkIR) -> Plan:
    names = [l.name for l in net_ir.layers]
    by = {l.name: l for l in net_ir.layers}
    succ = {n: [] for n in names}  # source layer -> layers it feeds
    for l in net_ir.layers:
        for c in l.connections:
            if c.source in by and l.name not in succ[c.source]:
                succ[c.source].append(l.name)
    comps = _sccs(names, succ)
    comp_of = {n: tuple(c) for c in comps for n in c}
    for l in net_ir.layers:
        for c in l.connections:
            if c.kind == "recurrent" and comp_of.get(c.source) != comp_of[l.name]:
                raise ValueError(f"layer {l.name!r}: recurrent({c.source}) closes no cycle ({c.source!r} does not "
                                 f"depend on {l.name!r}); use dense({c.source})")
    # Kahn over the groups, earliest declared ready group first
    pos = {n: i for i, n in enumerate(names)}
    deps = {c: {comp_of[s] for m in c for s in _layer_sources(by[m], by)} - {c} for c in map(tuple, comps)}
    order, done = [], set()
    while len(done) < len(deps):
        ready = [c for c in deps if c not in done and deps[c] <= done]
        c = min(ready, key=lambda g: pos[g[0]])
        done.add(c)
        order.append(c)
    group_of = {}
    steps = []
    for c in order:
        if len(c) == 1 and not any(x.kind == "recurrent" for x in by[c[0]].connections):
            steps.append(c[0])
        elif len(c) == 1 and is_plain(by[c[0]]):
            steps.append(c[0])
        else:
            for n in c:
                if any(x.kind not in ("dense", "recurrent") for x in by[n].connections):
                    raise NotImplementedError(f"layer {n!r}: the layers of a recurrent group {list(c)} take dense and "
                                              "recurrent connections only")
                group_of[n] = c
            steps.append(c)
    return Plan(steps, group_of)


def _layer_sources(l: LayerIR, by: dict) -> list[str]:
    return [c.source for c in l.connections if c.source in by]


def run_group(net, group: tuple, outputs: dict, times: Tensor, channels: Tensor, *, t_end, observe: dict) -> dict:
    """Run the layers `group` jointly. outputs: spikes of layers already run, as events
    (times [B, M], channels [B, M]); returns {layer name: (LayerResult, events it processed)}."""
    from spikescan.runtime.engines.recurrent_group import Coupling, GroupLayer, run_recurrent_group

    members = {n: k for k, n in enumerate(group)}
    glayers, couplings = [], []
    for n in group:
        lay = net.layers[n]
        ts, cs, ws, ds, ports = [], [], [], [], []
        off, ext_delays = 0, False
        for k, (src, size) in enumerate(zip(lay.sources, lay.source_sizes)):
            w = lay.weights[k]
            dl = lay.delays[k].clamp(0.0, lay.delay_max[k]) if lay.ff_has_delays[k] else None
            if src in members:  # a dense connection inside the cycle: delivered inside the loop
                couplings.append(Coupling(members[src], members[n], w, dl, lay.ff_ports[k]))
                continue
            t, c = net._input_events(times, channels, src) if src in net.ir.inputs else outputs[src]
            ts.append(t)
            cs.append(c + off)
            ws.append(w)
            ds.append(dl if dl is not None else torch.zeros_like(w))
            ext_delays = ext_delays or dl is not None
            ports.append(lay.ff_ports[k])
            off += size
        gl = dict(ir=net.neurons[lay.neuron], params=lay.params(), size=lay.size, observe=observe.get(n))
        if ts:
            gl.update(times=torch.cat(ts, 1), channels=torch.cat(cs, 1), weight=torch.cat(ws, 0),
                      delays=torch.cat(ds, 0) if ext_delays else None,
                      port=_port_of(ports, ws))
        glayers.append(GroupLayer(**gl))
        # couplings in the order of the ordering rule: target layer, its dense then recurrent ones
        for rc, w, dl in zip(lay.rec_conns, rec_weights(lay), rec_delays(lay)):
            couplings.append(Coupling(members[rc.source], members[n], w, dl, rc.port))
    res = run_recurrent_group(glayers, couplings, max_spikes=net.max_spikes, on_overflow=net.on_overflow, t_end=t_end)
    # events processed per layer: its outside arrivals and the spikes of its sources in the group
    out = {}
    for k, (n, r) in enumerate(zip(group, res)):
        ext = 0 if glayers[k].times is None else int(torch.isfinite(glayers[k].times).sum().item())
        inner = sum(int(res[c.src].counts.sum().item()) for c in couplings if c.dst == k)
        out[n] = (r, ext + inner)
    return out


def run_single(net, lay, t_in: Tensor, c_in: Tensor, *, observe=None, t_end=None):
    """A group of one layer (recurrent connections only from itself) on its merged input events,
    as SpikingNetwork.run_layer takes them; a LayerResult."""
    from spikescan.runtime.engines.recurrent_group import Coupling, GroupLayer, run_recurrent_group

    gl = GroupLayer(net.neurons[lay.neuron], lay.params(), lay.size, t_in, c_in, lay.merged_weight(),
                    lay.merged_delays(), lay.port, observe)
    couplings = [Coupling(0, 0, w, d, rc.port) for rc, w, d in zip(lay.rec_conns, rec_weights(lay), rec_delays(lay))]
    return run_recurrent_group([gl], couplings, max_spikes=net.max_spikes, on_overflow=net.on_overflow,
                               t_end=t_end)[0]


def _port_of(ports: list, ws: list):
    """The external events' port: a name, or a PortMap when the connections use several."""
    if len(set(ports)) <= 1:
        return ports[0] if ports else None
    from spikescan.runtime.engines.ports import PortMap

    return PortMap.from_blocks(ports, [w.shape[0] for w in ws])
