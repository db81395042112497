"""Checks of recurrent connections over the whole network (codes E093-E095, docs/language.md).

`recurrent(src)` may name the layer itself or any layer that depends on it (feedback, also from
a later layer): the connection must close a cycle of the network's graph (edges: every
connection from a layer). The layers of a cycle form a recurrent group that the runtime
simulates jointly (runtime/recurrent_net.py).

- E093: `recurrent(src)` closes no cycle (src does not depend on the layer): it is a
  feed-forward connection, write `dense(src)`.
- E094: a recurrent connection from or into a layer whose neuron never spikes.
- E095: a recurrent group that receives no connection from outside the group (it would never
  be driven).
"""

from __future__ import annotations

from . import ast


def _reach(succ: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        for w in succ.get(v, ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def check_network(checks, net: ast.Network, neurons: dict) -> None:
    layers = {l.name: l for l in net.layers}
    succ: dict = {n: [] for n in layers}
    for l in net.layers:
        for c in l.connections:
            src = c.source or l.name
            if src in layers:
                succ[src].append(l.name)
    reach = {n: _reach(succ, n) for n in layers}
    in_group: dict = {}  # layer -> its recurrent group (frozenset), for layers with recurrence
    for l in net.layers:
        for c in l.connections:
            if c.kind != "recurrent":
                continue
            src = c.source or l.name
            if src not in layers:
                continue  # unknown name or an input: E043 / E047
            if src != l.name and src not in reach[l.name]:
                checks.err("E093", f"recurrent({src}) closes no cycle: `{src}` does not depend on `{l.name}`",
                           c.source_span, f"use `dense({src})` for a feed-forward connection (with "
                           "`delays = ...` if it needs delays)")
                continue
            for name, role in ((src, "from"), (l.name, "into")):
                nr = neurons.get(layers[name].neuron)
                if isinstance(nr, ast.Neuron) and nr.threshold is None:
                    checks.err("E094", f"recurrent connection {role} layer `{name}`, whose neuron {nr.name} never "
                               "spikes (no `spike when`)", c.span, "recurrent connections carry spikes: connect "
                               "spiking layers, or read a non-spiking layer out with a `readout`")
                    break
            else:
                group = frozenset({l.name} | {m for m in reach[l.name] if l.name in reach[m]})
                for m in group:
                    in_group[m] = group
    reported = set()
    for l in net.layers:
        group = in_group.get(l.name)
        if group is None or group in reported:
            continue
        reported.add(group)
        outside = [c for m in group for c in layers[m].connections if (c.source or m) not in group]
        if not outside:
            names = ", ".join(f"`{m}`" for m in layers if m in group)
            checks.err("E095", f"the recurrent group {names} receives no input from outside the group", l.span,
                       f"add a feed-forward connection, e.g. `layer {l.name}[{l.size}] = {l.neuron}() <- "
                       f"dense(x), recurrent(...)`")
