"""One NIR path from a source (an Input or a spiking neuron node) to a neuron node -> one spikescan
connection (import side; graph.build walks the paths and calls `connection`).

Signals have shapes: [N] or [C, H, W] (flat index c*H*W + y*W + x, NIR's and spikescan's).
The paths that map exactly:

- dense:   [Flatten] [Delay] [Linear | Affine] [Delay]   (no Linear: identity weights). The Flatten
  must flatten the whole [C, H, W] signal (start_dim 0, end_dim -1) or be the identity on a 1-D
  one; Linear / Affine act on 1-D signals only. A Delay before the weights delays a source
  channel, after them a target neuron; spikescan holds the sum per synapse.
- conv2d:  Conv2d alone: square kernel, equal strides and paddings (or 'valid', or 'same' at
  stride 1 with an odd kernel), dilation 1, groups 1, padding < kernel <= 64, a bias equal for
  all output channels (a constant input current), input_shape = the source's (H, W).
- pool2d:  SumPool2d [Scale]: square window = stride, padding 0, dividing H and W; the Scale (one
  value for every channel) is the shared pooling weight. AvgPool2d is SumPool2d times 1/k^2,
  imported only when that factor is exact in binary (k a power of two).
Anything else on a path is refused with a message naming the node."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import numpy as np

from .errors import NirError

MAX_KERNEL = 64  # dsl/conv.py


@dataclass
class Conn:
    source: str  # an Input or a neuron node
    weight: Optional[np.ndarray]  # dense: [n_source, n_target]; conv2d: the kernel [C_out, C_in, k, k]; pool2d: None
    delay: Optional[np.ndarray] = None  # dense: [n_source, n_target] seconds, None when no Delay node
    kind: str = "dense"  # "dense" | "recurrent" (set by graph.build) | "conv2d" | "pool2d"
    geometry: dict = field(default_factory=dict)  # conv2d: kernel, stride, padding, channels; pool2d: size
    pool_weight: float = 1.0
    out_shape: tuple = ()
    marked: bool = False  # the graph marks it recurrent (spikescan_connection metadata)


def _ints(a, where: str, n: int = 2) -> tuple:
    a = np.asarray(a).reshape(-1)
    if a.dtype.kind not in "iuf" or a.size not in (1, n) or not np.all(a == np.round(a)) or np.any(np.abs(a) > 2**31):
        raise NirError(f"{where} must be {'an integer' if n == 1 else f'{n} integers'}, found {a.tolist()}")
    v = tuple(int(x) for x in a)
    return v * n if len(v) == 1 else v


def _int(a, where: str) -> int:
    return _ints(a, where, 1)[0]


def _uniform(a, where: str, what: str) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise NirError(f"{where}: '{what}' is empty")
    if not np.all(a == a[0]):
        raise NirError(f"{where}: '{what}' differs between channels (from {float(a.min()):g} to {float(a.max()):g}); "
                       "spikescan has one value per layer for it, so it is refused")
    return float(a[0])


def _flatten(name: str, f: dict, shape: tuple, where: str) -> tuple:
    it = f.get("input_type")
    if isinstance(it, dict):
        it = next(iter(it.values())) if len(it) == 1 else None
    if isinstance(it, np.ndarray) and tuple(int(v) for v in it.reshape(-1)) != shape:
        raise NirError(f"node '{name}' (Flatten) declares an input of shape {it.reshape(-1).tolist()}, but it "
                       f"receives {list(shape)} ({where})")
    nd = len(shape)
    start = _int(f["start_dim"], f"node '{name}' (Flatten): start_dim") if "start_dim" in f else 1
    end = _int(f["end_dim"], f"node '{name}' (Flatten): end_dim") if "end_dim" in f else -1
    if not (-nd <= start < nd and -nd <= end < nd):
        raise NirError(f"node '{name}' (Flatten): start_dim {start} / end_dim {end} outside a signal of {nd} "
                       f"dimensions ({where})")
    start, end = start % nd, end % nd
    if nd > 1 and (start != 0 or end != nd - 1):
        raise NirError(f"node '{name}' (Flatten) flattens dimensions {start} to {end} of a signal of shape "
                       f"{list(shape)}, leaving it {nd - (end - start)}-D; spikescan maps a Flatten of the whole "
                       f"signal only (start_dim 0, end_dim -1) ({where})")
    return (int(np.prod(shape)),)


def _conv(name: str, f: dict, shape: tuple, where: str) -> tuple[dict, np.ndarray, float, tuple]:
    node = f"node '{name}' (Conv2d)"
    extra = sorted(set(f) - {"weight", "bias", "stride", "padding", "dilation", "groups", "input_shape"})
    if extra:
        raise NirError(f"{node} has field(s) {', '.join(extra)} that spikescan does not know")
    w = f.get("weight")
    if not isinstance(w, np.ndarray) or w.ndim != 4:
        raise NirError(f"{node}: 'weight' must be a 4-D (C_out, C_in, kH, kW) array")
    c_out, c_in, kh, kw = (int(v) for v in w.shape)
    if len(shape) != 3 or shape[0] != c_in:
        raise NirError(f"{node} has {c_in} input channels, but receives a signal of shape {list(shape)} ({where}); "
                       "spikescan convolves [C, H, W] inputs and layers")
    if kh != kw:
        raise NirError(f"{node}: the kernel is {kh} x {kw}; spikescan's conv2d kernels are square")
    k = kh
    if not 1 <= k <= MAX_KERNEL:
        raise NirError(f"{node}: kernel size {k}; spikescan's conv2d takes 1 to {MAX_KERNEL}")
    sy, sx = _ints(f.get("stride", 1), f"{node}: stride")
    if sy != sx or sy < 1:
        raise NirError(f"{node}: stride ({sy}, {sx}); spikescan's conv2d has one positive stride for both axes")
    pad = f.get("padding", 0)
    if isinstance(pad, str):
        if pad == "valid":
            py = px = 0
        elif pad == "same" and sy == 1 and k % 2 == 1:
            py = px = (k - 1) // 2
        else:
            raise NirError(f"{node}: padding '{pad}' (with stride {sy}, kernel {k}); spikescan maps 'valid', and "
                           "'same' at stride 1 with an odd kernel (symmetric padding)")
    else:
        py, px = _ints(pad, f"{node}: padding")
    if py != px or py < 0 or py >= k:
        raise NirError(f"{node}: padding ({py}, {px}); spikescan's conv2d pads both axes equally, 0 <= padding < "
                       "kernel")
    if _ints(f.get("dilation", 1), f"{node}: dilation") != (1, 1):
        raise NirError(f"{node}: dilation {list(_ints(f['dilation'], 'dilation'))}; spikescan's conv2d has no "
                       "dilation (1 only)")
    if _int(f.get("groups", 1), f"{node}: groups") != 1:
        raise NirError(f"{node}: groups = {int(np.asarray(f['groups']).reshape(-1)[0])}; spikescan's conv2d "
                       "connects every input channel to every output channel (groups 1 only)")
    if "input_shape" in f and _ints(f["input_shape"], f"{node}: input_shape") != tuple(shape[1:]):
        raise NirError(f"{node}: input_shape {list(_ints(f['input_shape'], 'input_shape'))} but its source is "
                       f"{list(shape[1:])} ({where})")
    bias = _uniform(f["bias"], node, "bias") if isinstance(f.get("bias"), np.ndarray) and f["bias"].size else 0.0
    h, wd = shape[1:]
    oh, ow = (h + 2 * py - k) // sy + 1, (wd + 2 * py - k) // sy + 1
    if oh <= 0 or ow <= 0:
        raise NirError(f"{node}: the kernel {k} is larger than the padded input {h + 2 * py} x {wd + 2 * py}")
    geo = dict(channels=c_out, kernel=k, stride=sy, padding=py)
    return geo, np.ascontiguousarray(w.astype(np.float64)), bias, (c_out, oh, ow)


def _pool(name: str, node_type: str, f: dict, shape: tuple, where: str) -> tuple[int, float, tuple]:
    node = f"node '{name}' ({node_type})"
    extra = sorted(set(f) - {"kernel_size", "stride", "padding"})
    if extra:
        raise NirError(f"{node} has field(s) {', '.join(extra)} that spikescan does not know")
    if len(shape) != 3:
        raise NirError(f"{node} receives a signal of shape {list(shape)} ({where}); spikescan pools [C, H, W] signals")
    if "kernel_size" not in f:
        raise NirError(f"{node} has no kernel_size")
    ky, kx = _ints(f["kernel_size"], f"{node}: kernel_size")
    st = _ints(f.get("stride", f["kernel_size"]), f"{node}: stride")
    pad = _ints(f.get("padding", 0), f"{node}: padding")
    if ky != kx or st != (ky, kx) or pad != (0, 0) or not 1 <= ky <= MAX_KERNEL:
        raise NirError(f"{node}: kernel {[ky, kx]}, stride {list(st)}, padding {list(pad)}; spikescan's pool2d "
                       f"pools square windows of 1 to {MAX_KERNEL} at a stride equal to the window, without padding")
    c, h, w = shape
    if h % ky or w % ky:
        raise NirError(f"{node}: the window {ky} does not divide the input's {h} x {w}; spikescan's pool2d needs "
                       "a multiple (NIR would drop the last rows / columns)")
    scale = 1.0
    if node_type == "AvgPool2d":
        exact = Fraction(1, ky * ky)
        scale = float(exact)
        if Fraction(scale) != exact:
            raise NirError(f"{node}: an average over {ky} x {ky} multiplies by 1/{ky * ky}, which is not exact in "
                           "binary floating point; spikescan imports AvgPool2d with power-of-two windows only (or "
                           "write a SumPool2d and a Scale)")
    return ky, scale, (c, h // ky, w // ky)


def connection(nodes, chain: list, src: str, shape: tuple, target: str) -> tuple[Conn, float]:
    """(the connection of the path src -> chain -> target, its constant input current). `shape`:
    the source signal's shape."""
    where = f"the path {' -> '.join([src] + chain + [target])}"
    pre = post = None
    W, bias, n_in = None, 0.0, int(np.prod(shape))
    conv: Optional[Conn] = None
    for i, name in enumerate(chain):
        node = nodes[name]
        f, typ = node.fields, node.type
        after_pool = conv is not None and conv.kind == "pool2d" and chain[i - 1] == conv.geometry["node"]
        if conv is not None and not (typ == "Scale" and after_pool):
            raise NirError(f"node '{name}' ({typ}) follows node '{conv.geometry['node']}' on {where}; spikescan maps "
                           "a Conv2d alone, or a SumPool2d with at most a Scale after it, straight into a neuron node")
        if typ in ("Conv2d", "SumPool2d", "AvgPool2d"):
            if i != 0:
                raise NirError(f"node '{name}' ({typ}) is not the first node after the source on {where}; spikescan "
                               "maps a Conv2d / SumPool2d directly on a source's spikes")
            if typ == "Conv2d":
                geo, kernel, bias, out = _conv(name, f, shape, where)
                conv = Conn(source=src, weight=kernel, kind="conv2d", geometry=dict(geo, node=name), out_shape=out)
            else:
                size, scale, out = _pool(name, typ, f, shape, where)
                conv = Conn(source=src, weight=None, kind="pool2d", geometry=dict(size=size, node=name),
                            pool_weight=scale, out_shape=out)
            shape = out
        elif typ == "Scale":
            if conv is None:
                raise NirError(f"node '{name}' (Scale) on {where}: spikescan maps a Scale only right after a SumPool2d "
                               "(its value is the pooling weight); multiply other scales into the weights")
            s = _uniform(f.get("scale", np.zeros(0)), f"node '{name}' (Scale)", "scale")
            prod = Fraction(conv.pool_weight) * Fraction(s)
            if float(prod) != prod:
                raise NirError(f"node '{name}' (Scale): {s!r} x {conv.pool_weight!r} is not exact in floating point")
            conv.pool_weight = float(prod)
        elif typ == "Delay":
            d = f.get("delay")
            if not isinstance(d, np.ndarray) or d.size < 1:
                raise NirError(f"node '{name}' (Delay) has no 'delay' array")
            if d.size != int(np.prod(shape)) or (d.ndim > 1 and tuple(d.shape) != tuple(shape)):
                raise NirError(f"node '{name}' (Delay) has shape {list(d.shape)} on a signal of shape {list(shape)} "
                               f"({where})")
            d = d.astype(np.float64).reshape(-1)
            if not np.all(d >= 0):
                raise NirError(f"node '{name}' (Delay): delays must be >= 0, found {float(d.min()):g}")
            if W is None:
                pre = d if pre is None else pre + d
            else:
                post = d if post is None else post + d
        elif typ == "Flatten":
            if W is not None:
                raise NirError(f"node '{name}' (Flatten) after the weights on {where}; spikescan maps a Flatten "
                               "before them only")
            shape = _flatten(name, f, tuple(shape), where)
        else:  # Linear | Affine
            if W is not None:
                raise NirError(f"{where} has two Linear/Affine nodes in a row; spikescan maps one weight matrix per "
                               "connection (multiply them out before exporting)")
            if len(shape) != 1:
                raise NirError(f"node '{name}' ({typ}) receives a signal of shape {list(shape)} ({where}); NIR's "
                               "Linear acts on the last axis of it, spikescan's dense on a 1-D signal: put a Flatten "
                               "(start_dim 0, end_dim -1) before it")
            w = f.get("weight")
            if not isinstance(w, np.ndarray) or w.ndim != 2:
                raise NirError(f"node '{name}' ({typ}): 'weight' must be a 2-D (out, in) array")
            if w.shape[1] != shape[0]:
                raise NirError(f"node '{name}' ({typ}): weight is {tuple(w.shape)} (out, in), its input has "
                               f"{shape[0]} channels")
            extra = sorted(set(f) - ({"weight", "bias"} if typ == "Affine" else {"weight"}))
            if extra:
                raise NirError(f"node '{name}' ({typ}) has field(s) {', '.join(extra)} that spikescan does not know")
            W = np.ascontiguousarray(w.astype(np.float64).T)
            shape = (int(w.shape[0]),)
            if typ == "Affine":
                b = f.get("bias")
                if not isinstance(b, np.ndarray):
                    raise NirError(f"node '{name}' (Affine) has no 'bias' array")
                b = np.asarray(b, dtype=np.float64).reshape(-1)
                if b.shape[0] != shape[0] and b.shape[0] != 1:
                    raise NirError(f"node '{name}' (Affine): bias has {b.shape[0]} entries, weight {shape[0]} outputs")
                if not np.all(b == b[0]):
                    raise NirError(f"node '{name}' (Affine): the bias differs between neurons; spikescan holds a "
                                   "constant input current as one parameter per layer, so it is refused")
                bias = float(b[0])
    if conv is not None:
        conv.geometry.pop("node")
        return conv, bias
    if W is None:
        W = np.eye(n_in, dtype=np.float64)
    delay = None
    if pre is not None or post is not None:
        delay = np.zeros(W.shape)
        if pre is not None:
            delay = delay + pre[:, None]
        if post is not None:
            delay = delay + post[None, :]
    conn = Conn(source=src, weight=W, delay=delay, out_shape=shape)
    return conn, bias
