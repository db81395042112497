"""A compact, stable text dump of the AST, one node per line with its span (line:col-line:col).
Used by the golden tests (tests/dsl/golden/) and handy when debugging the parser."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from . import ast


def expr_str(e: ast.Expr) -> str:
    """Fully parenthesised expression text, e.g. `((i - v) / tau_m)`."""
    if isinstance(e, ast.Num):
        return f"{e.value!r}{' ' + e.unit if e.unit else ''}"
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.UnaryOp):
        return f"({e.op}{expr_str(e.operand)})"
    if isinstance(e, ast.BinOp):
        return f"({expr_str(e.left)} {e.op} {expr_str(e.right)})"
    if isinstance(e, ast.Call):
        args = [expr_str(a) for a in e.args] + [f"{k}={expr_str(v)}" for k, v in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    raise TypeError(f"not an expression: {e!r}")


def _pos(span: ast.Span) -> str:
    return f"@{span.line}:{span.col}-{span.end_line}:{span.end_col}"


_EXPR = (ast.Num, ast.Name, ast.UnaryOp, ast.BinOp, ast.Call)


def dump(node, indent: int = 0) -> str:
    """Dump a Module (or any AST node). Expressions print inline with their span."""
    pad = "  " * indent
    if isinstance(node, _EXPR):
        return f"{pad}{expr_str(node)} {_pos(node.span)}"
    if isinstance(node, ast.Module):
        lines = [f"{pad}Module"]
        for part in (node.imports, node.neurons, node.discrete_neurons, node.networks):
            lines += [dump(x, indent + 1) for x in part]
        return "\n".join(lines)
    head, children = [], []
    for f in fields(node):
        if f.name in ("span",) or f.name.endswith("_span"):
            continue
        v = getattr(node, f.name)
        if f.name == "shape" and len(v) <= 1:  # `[n]`: the size says it all
            continue
        if isinstance(v, _EXPR):
            head.append(f"{f.name}={expr_str(v)}")
        elif is_dataclass(v):
            children.append(dump(v, indent + 1))
        elif isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
            head.append(f"{f.name}=[" + ", ".join(f"{k}={expr_str(e)}" for k, e in v) + "]")
        elif isinstance(v, tuple) and v and is_dataclass(v[0]):
            if f.name == "reset":  # tell `on spike` statements apart from other children
                children.append("  " * (indent + 1) + "reset:")
            children += [dump(x, indent + 1) for x in v]
        elif v is not None and v != ():
            head.append(f"{f.name}={v!r}")
    line = f"{pad}{type(node).__name__} " + " ".join(head) + f" {_pos(node.span)}"
    return "\n".join([line] + children)
