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


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, ast.expr | str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name):
        rep = self.mapping.get(node.id)
        if rep is None:
            return node
        if isinstance(rep, str):
            return ast.copy_location(ast.Name(id=rep, ctx=node.ctx), node)
        return ast.copy_location(copy.deepcopy(rep), node)  # a Name or constant argument


class _Inliner:
    def __init__(self, funcs: dict[str, ast.FunctionDef]):
        self.funcs = funcs
        self.counter = itertools.count()

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
        stored = _stored_names(f)
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
        ren = _Rename(mapping)
        for st in copy.deepcopy(f.body[:-1]):
            stmts.append(ren.visit(st))
        ret = ren.visit(copy.deepcopy(f.body[-1])).value
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
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"
