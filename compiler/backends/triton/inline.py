"""Inline the generated @triton.jit helpers into the kernels (source-to-source, with `ast`).

On a GPU, Triton inlines device functions anyway; the CPU interpreter (TRITON_INTERPRET=1)
instead re-patches triton.language on every device-function call (about a millisecond each),
which dominated the test time. Inlining a statement-level call `a, b = helper(x, y)` copies the
helper's body with its locals renamed to a unique prefix and turns its final `return e` into
`a, b = e`. Calls nested inside expressions, and functions passed as values (the scan's
`combine`), are left as calls.
"""

from __future__ import annotations

import ast
import copy
import itertools


def _stored_names(fn: ast.FunctionDef) -> set[str]:
    out = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    return out


def _clone(node, mapping: dict[str, ast.expr | str]):
    """Deep copy of an AST subtree with the names in `mapping` replaced by a new name or a copy
    of the argument, in one pass (copy.deepcopy plus a NodeTransformer took ~90% of generating
    a module for a neuron with 50 ports). expr_context objects (Load, Store) are immutable."""
    if isinstance(node, list):
        return [_clone(n, mapping) for n in node]
    if not isinstance(node, ast.AST) or isinstance(node, ast.expr_context):
        return node
    if isinstance(node, ast.Name) and node.id in mapping:
        rep = mapping[node.id]
        new = ast.Name(id=rep, ctx=node.ctx) if isinstance(rep, str) else _clone(rep, {})
        return ast.copy_location(new, node)
    new = node.__class__.__new__(node.__class__)
    new.__dict__.update({k: _clone(v, mapping) if isinstance(v, (list, ast.AST)) else v
                         for k, v in node.__dict__.items()})
    return new


class _Inliner:
    def __init__(self, funcs: dict[str, ast.FunctionDef]):
        self.funcs = funcs
        self.counter = itertools.count()
        self.stored: dict[str, set[str]] = {}  # helper -> the names it assigns

    def body(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for st in stmts:
            if isinstance(st, (ast.For, ast.While, ast.If)):
                st.body = self.body(st.body)
                st.orelse = self.body(st.orelse)
                out.append(st)
            elif (isinstance(st, ast.Assign) and len(st.targets) == 1
                  and isinstance(st.value, ast.Call) and isinstance(st.value.func, ast.Name)
                  and st.value.func.id in self.funcs and not st.value.keywords):
                out += self.expand(st.targets[0], st.value)
            else:
                out.append(st)
        return out

    def expand(self, target: ast.expr, call: ast.Call) -> list[ast.stmt]:
        f = self.funcs[call.func.id]
        params = [a.arg for a in f.args.args]
        if len(params) != len(call.args):
            raise ValueError(f"inlining {f.name}: expected {len(params)} arguments, got {len(call.args)}")
        if not f.body or not isinstance(f.body[-1], ast.Return):
            raise ValueError(f"inlining {f.name}: the helper must end with its only return")
        pre = f"_{f.name}{next(self.counter)}_"
        if f.name not in self.stored:
            self.stored[f.name] = _stored_names(f)
        stored = self.stored[f.name]
        mapping: dict[str, ast.expr | str] = {}
        stmts: list[ast.stmt] = []
        for p, arg in zip(params, call.args):
            # plain names and constants are substituted (keeps constexpr-ness); anything else,
            # or a parameter the helper reassigns, gets a local copy
            if isinstance(arg, (ast.Name, ast.Constant)) and p not in stored:
                mapping[p] = arg
            else:
                mapping[p] = pre + p
                stmts.append(ast.Assign(targets=[ast.Name(id=pre + p, ctx=ast.Store())],
                                        value=arg, lineno=0))
        for name in stored:
            if name not in mapping:
                mapping[name] = pre + name
        stmts += _clone(f.body[:-1], mapping)
        ret = _clone(f.body[-1], mapping).value
        stmts.append(ast.Assign(targets=[target], value=ret, lineno=0))
        return self.body(stmts)


def inline_helpers(source: str, into: callable) -> str:
    """Inline every statement-level helper call inside the functions whose name satisfies
    `into(name)`; the helpers themselves stay in the module unchanged."""
    tree = ast.parse(source)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    helpers = {k: copy.deepcopy(v) for k, v in funcs.items() if not into(k)}
    inl = _Inliner(helpers)
    for name, fn in funcs.items():
        if into(name):
            fn.body = inl.body(fn.body)
    return ast.unparse(tree) + "\n"  # unparse needs no line numbers (no fix_missing_locations)
