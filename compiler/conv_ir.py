"""ConvSpec of a checked `conv2d` / `pool2d` connection (geometry from dsl/conv.py, the one
source of the shapes; the checks have already reported anything that does not fit)."""

from __future__ import annotations

from spikescan.dsl import ast
from spikescan.dsl.conv import CONV_KINDS, INT_OPTIONS, geometry

from .errors import CompileError
from .ir import ConvSpec


def conv_spec(conn: ast.Connection, opts: dict, shapes: dict[str, tuple]) -> ConvSpec:
    """Pop the integer options of a conv2d / pool2d connection from `opts` and build its spec."""
    from .analysis import _const

    vals = {}
    for key, default in INT_OPTIONS[conn.kind].items():
        expr = opts.pop(key, None)
        if expr is None and default is None:
            raise CompileError("E080", f"{conn.kind} needs `{key}`", conn.span)
        vals[key] = default if expr is None else int(_const(expr, f"{key} of {conn.kind}"))
    in_shape = tuple(shapes.get(conn.source, ()))
    if len(in_shape) != 3:
        raise CompileError("E081", f"{conn.kind} from '{conn.source}', which is not [C, H, W]",
                           conn.source_span)
    out, why = geometry(conn.kind, in_shape, vals)
    if out is None:
        raise CompileError("E082", f"{conn.kind} of '{conn.source}': {why}", conn.span)
    if conn.kind == "pool2d":
        return ConvSpec(in_shape, out, vals["size"], vals["size"], 0)
    return ConvSpec(in_shape, out, vals["kernel"], vals["stride"], vals["padding"])


__all__ = ["CONV_KINDS", "conv_spec"]
