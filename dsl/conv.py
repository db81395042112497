"""Convolution and pooling connections (`conv2d`, `pool2d`): their options, the shapes they
produce, and the checks E080-E084. One source of truth for the geometry: the checks here and the
compiler (compiler/analysis.py -> ConvSpec) both call `geometry`.

Populations are `[n]` or `[C, H, W]`; a 3-D population's flat index is c*H*W + y*W + x (the
layout of PyTorch and NIR), which is what `dense(...)` of a 3-D population sees (flatten).

- `conv2d(src, channels = C, kernel = k, stride = s, padding = p)`: square kernels shared over
  positions, output H' = (H + 2p - k) // s + 1 (as torch.nn.Conv2d), weights [C, C_in, k, k].
- `pool2d(src, size)`: sum-pooling by channel merging: input neuron (c, y, x) feeds pooled neuron
  (c, y // size, x // size) with one shared learnable scalar weight (`init = constant(v)`,
  default 1); H and W must be multiples of `size`.
"""

from __future__ import annotations

from typing import Optional

from . import ast
from .units import DIMENSIONLESS

CONV_KINDS = ("conv2d", "pool2d")
# option -> default (None: required); `init` and `port` are handled like dense's.
INT_OPTIONS = {
    "conv2d": {"channels": None, "kernel": None, "stride": 1, "padding": 0},
    "pool2d": {"size": None},
}
OPTIONS = {k: tuple(v) + ("init", "port") for k, v in INT_OPTIONS.items()}
SYNTAX = {
    "conv2d": "conv2d(x, channels = 8, kernel = 5, stride = 1, padding = 2)",
    "pool2d": "pool2d(c1, 2)",
}
MAX_KERNEL = 64


def geometry(kind: str, in_shape: tuple[int, ...], opts: dict[str, int]
             ) -> tuple[Optional[tuple[int, int, int]], str]:
    """(output shape [C, H, W], "") for a conv2d / pool2d of a population of shape `in_shape`,
    or (None, why) when the options do not fit the input."""
    c, h, w = in_shape
    if kind == "pool2d":
        k = opts["size"]
        if h % k or w % k:
            return None, (f"the pooling size {k} does not divide the input's height and width "
                          f"{h} x {w}")
        return (c, h // k, w // k), ""
    k, s, p = opts["kernel"], opts["stride"], opts["padding"]
    if p >= k:
        return None, f"padding {p} must be smaller than the kernel {k}"
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if oh <= 0 or ow <= 0:
        return None, f"the kernel {k} is larger than the padded input {h + 2 * p} x {w + 2 * p}"
    return (opts["channels"], oh, ow), ""


def weight_count(kind: str, in_shape: tuple[int, ...], opts: dict[str, int]) -> int:
    if kind == "pool2d":
        return 1
    return opts["channels"] * in_shape[0] * opts["kernel"] ** 2


def int_options(checks, c: ast.Connection) -> Optional[dict[str, int]]:
    """The integer options of a conv2d / pool2d connection with defaults filled in (E080 for a
    missing, unknown, repeated or non-positive-integer option); None after an error."""
    spec = INT_OPTIONS[c.kind]
    out: dict[str, int] = {}
    seen: set[str] = set()
    ok = True
    for key, value in c.options:
        if key in seen:
            checks.err("E080", f"option `{key}` given twice", value.span, "give each option once")
            ok = False
            continue
        seen.add(key)
        if key in ("init", "port"):
            continue
        if key not in spec:
            checks.err("E080", f"unknown option `{key}` of {c.kind}", value.span,
                       f"options: {', '.join(OPTIONS[c.kind])}; e.g. `{SYNTAX[c.kind]}`")
            ok = False
            continue
        v = checks.constant(value, {}, f"`{key}` of {c.kind}")
        d = checks.dim(value, {})
        least = 0 if key == "padding" else 1
        if v is None or d is None:
            ok = False
        elif d != DIMENSIONLESS or v != int(v) or v < least or v > (MAX_KERNEL if key in ("kernel", "size")
                                                                     else 1_000_000):
            what = "a non-negative integer" if key == "padding" else "a positive integer"
            checks.err("E080", f"`{key}` of {c.kind} must be {what}"
                       f"{f' at most {MAX_KERNEL}' if key in ('kernel', 'size') else ''}, got "
                       f"{v:g}" if d == DIMENSIONLESS else f"`{key}` of {c.kind} must be a "
                       "number without unit", value.span, f"e.g. `{SYNTAX[c.kind]}`")
            ok = False
        else:
            out[key] = int(v)
    missing = [k for k, dflt in spec.items() if dflt is None and k not in out
               and not any(key == k for key, _ in c.options)]
    if missing:
        checks.err("E080", f"{c.kind} needs `{missing[0]}`", c.span, f"write e.g. `{SYNTAX[c.kind]}`")
        return None
    if not ok:
        return None
    return {k: out.get(k, dflt) for k, dflt in spec.items()}


def check_shape(checks, pop) -> None:
    """E084: a population is `[n]` or `[C, H, W]`."""
    shape = getattr(pop, "shape", ()) or (pop.size,)
    if len(shape) not in (1, 3):
        checks.err("E084", f"`{pop.name}` has {len(shape)} dimensions {list(shape)}",
                   getattr(pop, "size_span", None) or pop.span,
                   "a population is `[n]` or `[C, H, W]` (channels, height, width), e.g. "
                   "`input x[2, 34, 34]`")


def check_connection(checks, layer: ast.Layer, c: ast.Connection, neuron,
                     index: int, order: dict[str, int]) -> None:
    """E080-E083 for a conv2d / pool2d connection of `layer`; `port` and `init` go through the
    checks' own option checks (E047 / E050), with pool2d's init restricted to constant()."""
    if len(layer.connections) > 1:
        checks.err("E083", f"layer `{layer.name}` has a {c.kind} connection and "
                   f"{len(layer.connections) - 1} other(s)", c.span,
                   f"a {c.kind} connection must be the layer's only input; add a layer for the "
                   "other connections")
    opts = int_options(checks, c)
    once = len({k for k, _ in c.options}) == len(c.options)  # a repeated option is E080 already
    for key, value in c.options if once else ():
        if key == "port":
            checks.port_option(value, neuron)
        elif key == "init":
            if c.kind == "pool2d" and not (isinstance(value, ast.Call) and value.func == "constant"):
                checks.err("E080", "the pooling weight is one shared scalar: its init is "
                           "`constant(value)`", value.span, "write e.g. `pool2d(c1, 2, init = "
                           "constant(2.0))`")
            else:
                checks.init_option(value)
    src = checks.pops.get(c.source) if c.source else None
    if src is None:
        if c.source:
            from .checks import _suggest

            checks.err("E043", f"connection from unknown population `{c.source}`", c.source_span,
                       _suggest(c.source, checks.pops))
        return
    if isinstance(src, ast.Layer) and order[c.source] >= index:
        checks.err("E081", f"{c.kind} from `{c.source}`, which is "
                   f"{'this layer' if c.source == layer.name else 'a later layer'}",
                   c.source_span, f"{c.kind} takes an input or an earlier layer")
        return
    in_shape = getattr(src, "shape", ()) or (src.size,)
    if len(in_shape) != 3:
        checks.err("E081", f"{c.kind} from `{c.source}`, which has shape {list(in_shape)}, not "
                   "[C, H, W]", c.source_span, f"declare it with three dimensions, e.g. "
                   f"`{'input' if isinstance(src, ast.InputPop) else 'layer'} {c.source}[2, 34, 34]`")
        return
    if opts is None or any(d <= 0 for d in in_shape):
        return
    out, why = geometry(c.kind, in_shape, opts)
    if out is None:
        checks.err("E082", f"{c.kind} of `{c.source}` {list(in_shape)}: {why}", c.span,
                   "change the kernel, stride, padding or pooling size")
        return
    shape = tuple(layer.shape or (layer.size,))
    if shape != out:
        checks.err("E082", f"layer `{layer.name}` is declared {list(shape)}, but {c.kind} of "
                   f"`{c.source}` {list(in_shape)} gives {list(out)}", layer.size_span,
                   f"declare `layer {layer.name}[{', '.join(map(str, out))}]`")


def weights_of(c: ast.Connection, src, layer: ast.Layer) -> int:
    """Number of weights a connection holds (for the E053 limit): source x target for dense and
    recurrent, the shared kernel for conv2d, one for pool2d."""
    src_size = getattr(src, "size", 0) or 0
    if c.kind not in CONV_KINDS:
        return src_size * max(layer.size, 0)
    if c.kind == "pool2d":
        return 1
    shape = getattr(src, "shape", ()) or ()
    vals = dict(c.options)
    try:
        k = int(float(vals["kernel"].value)) if "kernel" in vals else 1  # a plain number; else bounded by E080
        ch = int(float(vals["channels"].value)) if "channels" in vals else 1
    except (AttributeError, TypeError, ValueError):
        return 0
    c_in = shape[0] if len(shape) == 3 else src_size
    return max(ch, 0) * max(c_in, 0) * min(max(k, 0), MAX_KERNEL) ** 2


__all__ = ["CONV_KINDS", "OPTIONS", "geometry", "weight_count", "check_shape", "check_connection",
           "weights_of", "int_options"]
