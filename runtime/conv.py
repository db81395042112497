"""Event-driven `conv2d` and `pool2d` layers (ConvSpec, compiler/ir.py; shapes [C, H, W] with
flat index c*H*W + y*W + x).

A feed-forward layer's neurons are independent given their input events, so each output
neuron can be simulated on its own sub-list of events: those in its receptive field. All output
channels at one position (oy, ox) share that receptive field, so the layer runs as B * H' * W'
*lanes* of the existing exact engines (batch entries of `run_layer`), each lane holding the
events of one receptive field with local channel = kernel index (c_in, ky, kx) and the shared
weight matrix [C_in * k * k, C_out] (the kernel itself, reshaped). An input event is copied into
the lanes of its footprint only, about (k / stride)^2 of them, so the cost is events x
footprint x C_out neuron updates, never a dense [C_in*H*W, C_out*H'*W'] matrix. Every engine
(torch, torch-sequential, the MLIR sequential-cpu, Triton) runs the lanes unchanged, forward and
backward: the kernel gradient is the engines' weight gradient summed over the lanes (the
dense-path terms, accumulated per footprint), and input-time gradients flow back through the
differentiable gather of the event times.

pool2d (sum-pooling by channel merging) is the same with one lane per pooled neuron: input
neuron (c, y, x) -> lane (c, y // k, x // k), one local channel, weight [1, 1] = the layer's shared
learnable scalar. Nothing is approximated: a pooled neuron receives exactly the events of its
window, each with the shared weight.

`path = "dense"` runs the same connection through the explicit dense matrix (`dense_weight`,
a differentiable scatter of the kernel) instead: the correct-first reference the tests compare
the lanes against.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from spikescan.compiler.ir import ConvSpec, LayerIR, NeuronIR
from spikescan.runtime.engines.result import LayerResult, SpikeCapExceeded

PATHS = ("lanes", "dense")


def footprint(kind: str, spec: ConvSpec) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """(lane [C_in*H*W, F], local [C_in*H*W, F], G, L, N_g): for every input channel, the lanes
    (output positions; -1 pads) its events go to and their local channel (kernel index) there;
    G lanes per sample, L local channels and N_g neurons per lane. Output neuron j of lane g is
    neuron j * G + g of the layer."""
    c_in, h, w = spec.in_shape
    c_out, oh, ow = spec.out_shape
    k, s, p = spec.kernel, spec.stride, spec.padding
    ci, y, x = np.meshgrid(np.arange(c_in), np.arange(h), np.arange(w), indexing="ij")
    ci, y, x = ci.reshape(-1, 1), y.reshape(-1, 1), x.reshape(-1, 1)
    if kind == "pool2d":
        lane = ci * (oh * ow) + (y // k) * ow + x // k
        return lane.astype(np.int64), np.zeros_like(lane, dtype=np.int64), c_in * oh * ow, 1, 1
    ky, kx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    ky, kx = ky.reshape(1, -1), kx.reshape(1, -1)
    ny, nx = y + p - ky, x + p - kx  # = o * s for the output position o that sees (y, x) at (ky, kx)
    oy, ox = ny // s, nx // s
    ok = (ny % s == 0) & (nx % s == 0) & (oy >= 0) & (oy < oh) & (ox >= 0) & (ox < ow)
    lane = np.where(ok, oy * ow + ox, -1)
    local = np.where(ok, ci * k * k + ky * k + kx, 0)
    # drop the kernel offsets no input channel uses (F = about (k / s)^2 instead of k^2)
    order = np.argsort(~ok, axis=1, kind="stable")
    lane, local = np.take_along_axis(lane, order, 1), np.take_along_axis(local, order, 1)
    f = max(int(ok.sum(1).max()), 1)
    return lane[:, :f].astype(np.int64), local[:, :f].astype(np.int64), oh * ow, c_in * k * k, c_out


def gather_lanes(times: Tensor, channels: Tensor, lane_of: Tensor, local_of: Tensor, G: int
                 ) -> tuple[Tensor, Tensor]:
    """Events [B, n] -> lane events [B*G, M] (times +inf padded, local channels): each event is
    copied into the lanes of its footprint, each lane in time order (ties keep the input order,
    as the engines' stable sort does on the dense path). Differentiable in `times`."""
    B, n = times.shape
    dev = times.device
    fin = torch.isfinite(times)
    ch = torch.where(fin, channels, torch.zeros_like(channels))
    if ch.numel() and (int(ch.min()) < 0 or int(ch.max()) >= lane_of.shape[0]):
        raise ValueError(f"input channels span [{int(ch.min())}, {int(ch.max())}] but the conv2d / pool2d "
                         f"source has {lane_of.shape[0]} channels")
    g, l = lane_of[ch], local_of[ch]  # [B, n, F]
    bi, ei, fi = ((g >= 0) & fin.unsqueeze(-1)).nonzero(as_tuple=True)  # (sample, event, f) order
    lane = bi * G + g[bi, ei, fi]
    t = times[bi, ei]
    o1 = torch.argsort(t.detach(), stable=True)
    order = o1[torch.argsort(lane[o1], stable=True)]
    lane, t, loc = lane[order], t[order], l[bi, ei, fi][order]
    counts = torch.bincount(lane, minlength=B * G)
    M = max(int(counts.max()) if counts.numel() else 0, 1)
    pos = torch.arange(lane.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[lane]
    lt = torch.full((B * G, M), math.inf, dtype=times.dtype, device=dev).index_put((lane, pos), t)
    lc = torch.zeros((B * G, M), dtype=torch.int64, device=dev).index_put((lane, pos), loc)
    return lt, lc


def _from_lanes(x: Tensor, B: int, G: int) -> Tensor:
    """[B*G, N_g, ...] per-lane results -> [B, N_g*G, ...] in layer order (neuron j*G + g)."""
    rest = x.shape[2:]
    x = x.reshape(B, G, x.shape[1], *rest).transpose(1, 2)
    return x.reshape(B, -1, *rest)


class ConvLayer(nn.Module):
    """A layer fed by one conv2d or pool2d connection; the same attributes as network._Layer that
    SpikingNetwork reads (name, size, neuron, port, sources, source_sizes, w_rec, params(),
    clamp_()). Learnable parameter: `kernel` [C_out, C_in, k, k] (conv2d) or the scalar `weight`
    (pool2d)."""

    def __init__(self, layer: LayerIR, neuron: NeuronIR, source_sizes: dict[str, int],
                 gen: Optional[torch.Generator], learn_time_constants: bool):
        super().__init__()
        from spikescan.runtime.network import DTYPE, init_weight

        if len(layer.connections) != 1:
            raise ValueError(f"layer {layer.name!r}: a conv2d / pool2d connection must be the layer's only input")
        if learn_time_constants:
            raise NotImplementedError(
                f"layer {layer.name!r}: learnable time constants on conv2d / pool2d layers are not supported (the "
                "lanes share one parameter set); train without learn_time_constants, or use dense layers")
        c = layer.connections[0]
        self.name, self.size, self.neuron, self.kind, self.conv = layer.name, layer.size, neuron.name, c.kind, c.conv
        self.port, self.w_rec, self.path = c.port, None, "lanes"
        self.sources, self.source_sizes = [c.source], [source_sizes[c.source]]
        self.learned, self.has_delays = set(), False
        lane, local, self.G, self.L, self.N_g = footprint(c.kind, c.conv)
        self.register_buffer("lane_of", torch.from_numpy(lane), persistent=False)
        self.register_buffer("local_of", torch.from_numpy(local), persistent=False)
        if c.kind == "pool2d":
            value = float(c.init.a) if c.init.kind == "constant" else 1.0
            self.weight = nn.Parameter(torch.tensor(value, dtype=DTYPE))
        else:
            w = init_weight(c.init, self.L, self.N_g, gen)  # [C_in*k*k, C_out], fan-in C_in*k*k
            k = c.conv.kernel
            self.kernel = nn.Parameter(w.t().reshape(self.N_g, c.conv.in_shape[0], k, k).contiguous())
        self.param_names = [p.name for p in neuron.params]
        for p in neuron.params:
            self.register_buffer("p_" + p.name, torch.tensor(float(layer.params.get(p.name, p.default)), dtype=DTYPE))

    def params(self) -> dict[str, Tensor]:
        return {name: getattr(self, "p_" + name) for name in self.param_names}

    def merged_delays(self) -> None:
        return None

    @torch.no_grad()
    def clamp_(self) -> None:
        pass

    def lane_weight(self) -> Tensor:
        """[L, N_g]: the weights every lane shares (the kernel as [C_in*k*k, C_out], or [[w]])."""
        if self.kind == "pool2d":
            return self.weight.reshape(1, 1)
        return self.kernel.reshape(self.N_g, self.L).t()

    def dense_weight(self) -> Tensor:
        """The explicit [C_in*H*W, N] matrix of the connection (differentiable in the kernel):
        W[ch, j*G + g] = lane_weight[local, j] for every (lane g, local) in ch's footprint."""
        wl = self.lane_weight()
        rows = torch.arange(self.lane_of.shape[0], device=wl.device).unsqueeze(1).expand_as(self.lane_of)
        ok = self.lane_of >= 0
        r, g, l = rows[ok], self.lane_of[ok], self.local_of[ok]
        j = torch.arange(self.N_g, device=wl.device)
        cols = (j.unsqueeze(0) * self.G + g.unsqueeze(1)).reshape(-1)
        vals = wl[l].reshape(-1)  # [entries, N_g]
        W = torch.zeros((self.lane_of.shape[0], self.size), dtype=wl.dtype, device=wl.device)
        return W.index_put((r.repeat_interleave(self.N_g), cols), vals)

    def merged_weight(self) -> Tensor:
        return self.dense_weight()

    def run(self, engine, ir: NeuronIR, times: Tensor, channels: Tensor, **kw) -> LayerResult:
        """The layer's spikes for input events [B, n] (source neuron indices), on `engine`."""
        if self.path == "dense":
            return engine.run_layer(ir, self.params(), times, channels, self.dense_weight(), None, port=self.port, **kw)
        if self.path != "lanes":
            raise ValueError(f"ConvLayer.path must be one of {PATHS}, got {self.path!r}")
        B, G = times.shape[0], self.G
        lt, lc = gather_lanes(times, channels.to(self.lane_of.device), self.lane_of, self.local_of, G)
        try:
            res = engine.run_layer(ir, self.params(), lt, lc, self.lane_weight(), None, port=self.port, **kw)
        except SpikeCapExceeded as e:  # name the sample and neuron of the layer, not the lane
            raise SpikeCapExceeded(e.sample // G, e.neuron * G + e.sample % G, e.max_spikes) from None
        return LayerResult(
            times=_from_lanes(res.times, B, G), counts=_from_lanes(res.counts, B, G),
            overflow=res.overflow.reshape(B, G).any(1),
            observed=None if res.observed is None else _from_lanes(res.observed, B, G),
        )


def is_conv_layer(layer: LayerIR) -> bool:
    return any(getattr(c, "conv", None) is not None for c in layer.connections)


def check_input_layout(ds, net) -> None:
    """A network with a [C, H, W] input population reads channels as c*H*W + y*W + x: an event
    camera dataset (a `layout` (W, H, P) attribute) must then deliver that layout (data option
    `chw=true`) and the same shape, else the convolution would silently see scrambled pixels."""
    base = ds
    while not hasattr(base, "layout") and hasattr(base, "dataset"):
        base = base.dataset  # Subset
    layout = getattr(base, "layout", None)
    shapes = getattr(getattr(net, "ir", None), "shapes", None) or {}
    spatial = {k: tuple(s) for k, s in shapes.items() if len(s) == 3}
    if layout is None or not spatial or not isinstance(layout, tuple) or len(layout) != 3:
        return
    name, shape = next(iter(spatial.items()))
    w, h, p = layout
    want = f"input {name}[{', '.join(map(str, shape))}]"
    if not getattr(base, "chw", False):
        raise ValueError(f"network '{net.ir.name}' declares `{want}` ([C, H, W], channel c*H*W + y*W + x) but "
                         f"dataset {getattr(base, 'name', '?')} delivers the camera layout x*H*P + y*P + p: add "
                         "--data-opt chw=true (Python: chw=True)")
    if (p, h, w) != shape:
        raise ValueError(f"network '{net.ir.name}' declares `{want}` but dataset {getattr(base, 'name', '?')} "
                         f"delivers [{p}, {h}, {w}] (P, H, W); change the shape or the downsample / "
                         "merge_polarity options")
