"""The NIR nodes of one spikescan connection (export side; export.network_graph calls these).

- dense / recurrent: source -> [Flatten] -> [Delay] -> Linear | Affine -> [Delay] -> layer.
  A [C, H, W] source is flattened first (NIR Flatten, start_dim 0, end_dim -1: the flat index
  c*H*W + y*W + x, spikescan's own). Delays that depend on the source neuron only become a Delay
  before the weights, on the target only a Delay after them; per-synapse delays are refused
  (`delay_vectors`). A recurrent connection is the same path from its source layer (the layer
  itself, or a later one: a cycle in the graph).
- conv2d: source -> Conv2d (weight [C_out, C_in, k, k], stride (s, s), padding (p, p),
  dilation 1, groups 1, input_shape (H, W), bias = the layer's constant input current) -> layer.
- pool2d: source -> SumPool2d (kernel = stride = (k, k), padding 0) -> [Scale] -> layer; the
  Scale (all entries the shared pooling weight) only when that weight is not 1. A pooled layer
  with a constant input current is refused: no NIR node adds a bias to a pooled signal."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .errors import NirError

PER_SYNAPSE = ("its delays depend on both the source and the target neuron (per-synapse delays, e.g. learned "
               "ones). NIR's Delay node delays each channel of a signal, so only delays that depend on the source "
               "neuron alone (a Delay before the weights) or on the target alone (after them) are exported. The "
               "exact NIR form of an [in, out] delay matrix is an expanded graph (a one-hot Linear fanning each "
               "source out to in x out channels, a Delay of in x out channels, a Linear summing them into the "
               "targets) of in x out x (in + out) weights, which no NIR tool reads back as delays")


def delay_vectors(D: Optional[np.ndarray], where: str) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(pre, post): per-source or per-target delay vectors (ms) equal to the synapse matrix D."""
    if D is None or not D.size or not np.any(D):
        return None, None
    if np.all(D == D[:, :1]):
        return D[:, 0].copy(), None
    if np.all(D == D[:1, :]):
        return None, D[0, :].copy()
    raise NirError(f"{where}: {PER_SYNAPSE}")


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


class PathWriter:
    """Adds the nodes and edges of connections to `nodes` / `edges` (names from `names`)."""

    def __init__(self, nir, nodes: dict, edges: list, names, shape_of: dict):
        self.nir, self.nodes, self.edges, self.names = nir, nodes, edges, names
        self.shape_of = shape_of  # NIR node of an input or layer -> the shape of its signal

    def _add(self, base: str, node, prev: str) -> str:
        name = self.names.new(base)
        self.nodes[name] = node
        self.edges.append((prev, name))
        return name

    def dense(self, src: str, target: str, w: np.ndarray, D: Optional[np.ndarray], bias: Optional[np.ndarray],
              where: str, base: str, recurrent: bool = False) -> None:
        """w [n_src, n_target]; D [n_src, n_target] ms or None; bias [n_target] or None (Linear);
        a recurrent connection's weight node carries metadata spikescan_connection = recurrent,
        so that import keeps spikescan's split of a cycle into feed-forward and recurrent."""
        nir = self.nir
        pre, post = delay_vectors(D, where)
        prev, shape = src, tuple(self.shape_of[src])
        if len(shape) > 1:
            prev = self._add(f"{base}_flatten", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                                             end_dim=-1), prev)
        if pre is not None:
            prev = self._add(f"{base}_delay", nir.Delay(delay=pre / 1000.0), prev)
        wt = np.ascontiguousarray(w.T)
        meta = {"spikescan_connection": "recurrent"} if recurrent else {}
        node = (nir.Affine(weight=wt, bias=bias.copy(), metadata=meta) if bias is not None else
                nir.Linear(weight=wt, metadata=meta))
        prev = self._add(base, node, prev)
        if post is not None:
            prev = self._add(f"{base}_delay_post", nir.Delay(delay=post / 1000.0), prev)
        self.edges.append((prev, target))

    def conv(self, lay, src: str, target: str, bias: np.ndarray, where: str, base: str) -> None:
        """A ConvLayer's conv2d / pool2d connection (runtime/conv.py: `kernel` or `weight`)."""
        nir, spec = self.nir, lay.conv
        shape = tuple(self.shape_of[src])
        if shape != tuple(spec.in_shape):
            raise NirError(f"{where}: its source '{src}' is a signal of shape {list(shape)} in the NIR graph, not "
                           f"[C, H, W] = {list(spec.in_shape)}: a layer declared [C, H, W] but fed by dense "
                           "connections is a 1-D NIR neuron node, and NIR has no node that reshapes a 1-D signal "
                           "into [C, H, W]; feed that layer by conv2d / pool2d, or declare it 1-D")
        k, s, p = spec.kernel, spec.stride, spec.padding
        if lay.kind == "conv2d":
            b = np.unique(bias)
            node = nir.Conv2d(input_shape=tuple(int(v) for v in spec.in_shape[1:]),
                              weight=np.ascontiguousarray(f64(lay.kernel)), stride=(s, s), padding=(p, p),
                              dilation=(1, 1), groups=1,
                              bias=np.full(spec.out_shape[0], float(b[0])))
            self.edges.append((self._add(base, node, src), target))
            return
        if np.any(bias):
            raise NirError(f"{where}: the pooled layer has a constant input current; NIR's SumPool2d has no bias "
                           "and no NIR node adds one to a [C, H, W] signal, so it has no exact NIR form")
        prev = self._add(base, nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                             padding=np.array([0, 0])), src)
        w = float(f64(lay.weight).reshape(()))
        if w != 1.0:
            prev = self._add(f"{base}_scale", nir.Scale(scale=np.full(spec.out_shape, w)), prev)
        self.edges.append((prev, target))
