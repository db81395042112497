"""Several input ports in one layer call: `PortMap`, the port of every input channel.

An engine's `port=` argument is either a port name (or None: the neuron's first port), the
single-port fast path, or a PortMap: names (the ports used, in a fixed order) and index [C]
int64, the position in `names` of the port of each input channel. An event on channel c then
jumps x += B[names[index[c]]] * weight[c, j]; events at equal times keep their input order
whatever their ports (docs/language.md, "Semantics of events").

SpikingNetwork builds the map from a layer's connections (runtime/network.py): the merged
weight stacks the connections along the channel axis, so each connection's channel range gets
its port. A map whose channels all use one port collapses to that name (`normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class PortMap:
    names: tuple  # port names, distinct, as used by `index`
    index: Tensor  # [C] int64: port of input channel c is names[index[c]]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))  # the compiled engines key on a tuple
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"PortMap names must be distinct and non-empty, got {self.names!r}")
        idx = self.index
        if not torch.is_tensor(idx) or idx.dim() != 1 or idx.dtype != torch.int64:
            raise TypeError("PortMap.index must be a 1-d int64 tensor (one port index per channel)")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self.names)):
            raise ValueError(f"PortMap.index must lie in [0, {len(self.names)})")

    @classmethod
    def from_blocks(cls, ports: Sequence[str], sizes: Sequence[int]) -> "PortMap":
        """Consecutive channel blocks (the connections of a layer, in merge order) and their ports."""
        names = tuple(dict.fromkeys(ports))
        index = torch.cat([torch.full((int(n),), names.index(p), dtype=torch.int64) for p, n in zip(ports, sizes)]) \
            if sizes else torch.zeros(0, dtype=torch.int64)
        return cls(names, index)

    @property
    def C(self) -> int:
        return self.index.numel()

    def to(self, device) -> "PortMap":
        return PortMap(self.names, self.index.to(device))


Port = Union[None, str, PortMap]


def normalize(port: Port, port_names: Sequence[str], C: int, engine: str = "") -> Port:
    """Check `port` against the neuron's ports and the weight's C channels; a PortMap that uses
    one port becomes that name (the single-port path, unchanged)."""
    if port is None or isinstance(port, str):
        return port  # checked where it is used (kern.B names the neuron)
    if not isinstance(port, PortMap):
        raise TypeError(f"port must be a port name, None or a PortMap, got {type(port).__name__}")
    bad = [p for p in port.names if p not in port_names]
    if bad:
        raise KeyError(f"neuron has no input port(s) {bad}; ports: {list(port_names)}")
    if port.C != C:
        raise ValueError(f"PortMap covers {port.C} channels, the weight has C = {C}")
    used = sorted(set(port.index.tolist())) if port.C else [0]
    if len(used) == 1:
        return port.names[used[0]]
    return port


def is_multi(port: Port) -> bool:
    return isinstance(port, PortMap)


def event_ports(ev, pm: PortMap, s: int, e: int) -> Tensor:
    """[B, Nd, K] int64 port index of events s..e-1 of LayerEvents `ev` (the layout of the times of
    ev.slice; padding and the virtual horizon event get port 0, their weight is 0)."""
    idx = ev.perm[..., s:e]
    B, Nd, K = idx.shape
    ch = ev.ch_ext.gather(1, idx.reshape(B, Nd * K)).reshape(B, Nd, K)
    return pm.index.to(ch.device)[ch]


def jump_vectors(kern, port: Port, P, pe: Optional[Tensor], dtype=None) -> list:
    """B per event: d entries (None where no port touches the component). Single port: the
    port's B (floats / tensors as kern.B gives). PortMap: the entry of each event's port, selected
    by pe (int64, broadcast against P like the engines' weights), in `dtype`."""
    if not is_multi(port):
        return kern.B(port, P)
    Bs = [kern.B(name, P) for name in port.names]
    out = []
    for comp in zip(*Bs):
        val = None
        for k, b in enumerate(comp):
            if b is None:
                continue
            term = (pe == k).to(dtype) * b
            val = term if val is None else val + term
        out.append(val)
    return out


def apply_jump(x: list, Bvec: list, w: Tensor) -> list:
    """x + B w, entry by entry (B entries None: no jump there)."""
    return [v if b is None else v + b * w for v, b in zip(x, Bvec)]


def refuse(engine: str, instead: str) -> None:
    """The clear error of an engine that cannot take a PortMap, naming what can."""
    raise NotImplementedError(
        f"engine {engine!r} does not support layers whose input channels use several ports (a "
        f"PortMap); use {instead}")
