"""Text -> typed AST (dsl/ast.py) with spans, via the lark grammar in grammar.lark.

`parse_source(text, filename)` never raises on bad input: it returns (Module | None, diagnostics).
Syntax errors become E001/E002/E003 with the expected tokens turned into a readable hint; trees
deeper than MAX_DEPTH become E005 (checked iteratively, so 5000 nested parentheses cannot hit
Python's recursion limit in the conversion below or later in the checks).
"""

from __future__ import annotations

import math

import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

import lark
from lark import Token, Tree

from . import ast
from .diagnostics import Diagnostic

MAX_DEPTH = 200  # syntax-tree depth; real models stay below 30
MAX_BYTES = 1_000_000  # a .snn file is a few kB; refuse megabytes (lark lexes ~0.25 MB/s)

# How expected terminals are shown in hints.
_FRIENDLY = {
    "NAME": "a name",
    "NUMBER": "a number",
    "QUANTITY": "a number with a unit",
    "SIGNED_INT": "an integer",
    "STRING": 'a quoted path ("file.snn")',
    "ASSIGN_OP": "'=', '+=' or '-='",
    "POW": "'^'",
    "INPUT": "'input'",
    "SPIKE": "'spike'",
    "$END": "end of file",
}


_LARK_OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


@lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    """The LALR parser, built once per process from grammar.lark. There is deliberately no
    on-disk cache: lark's Lark.save/load is a pickle, and a file in a user-writable cache folder
    that every command loads would run code. Building the tables costs about 0.1 s (measured
    0.07 s warm, 0.10-0.16 s in a fresh process, against 0.01 s from the old pickle)."""
    grammar = (Path(__file__).with_name("grammar.lark")).read_text()
    return lark.Lark(grammar, **_LARK_OPTIONS)


def _terminal_display(name: str) -> str:
    if name in _FRIENDLY:
        return _FRIENDLY[name]
    try:
        term = _lark().get_terminal(name)
    except KeyError:
        return name.lower()
    if term.pattern.type == "str":
        return repr(term.pattern.value)
    return name.lower()


def expected_hint(expected) -> str:
    shown = sorted({_terminal_display(e) for e in expected if e != "SEMICOLON"})
    if not shown:
        return "check the syntax near this point"
    if len(shown) > 8:
        shown = shown[:8] + ["..."]
    return "expected " + ", ".join(shown)


def _span(file: str, line: int, col: int, end_line: int, end_col: int) -> ast.Span:
    return ast.Span(file, line, col, end_line, end_col)


def _tok_span(file: str, tok: Token) -> ast.Span:
    return _span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _tree_span(file: str, tree: Tree) -> ast.Span:
    m = tree.meta
    if getattr(m, "empty", True):
        return _span(file, 1, 1, 1, 1)
    return _span(file, m.line, m.column, m.end_line, m.end_column)


def _depth(tree: Tree) -> tuple[int, Optional[Tree]]:
    """Maximum depth, computed without recursion; also returns the deepest subtree."""
    best, deepest = 0, None
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        if d > best:
            best, deepest = d, node
        for ch in node.children:
            if isinstance(ch, Tree):
                stack.append((ch, d + 1))
    return best, deepest


_QUANTITY = re.compile(r"((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[ \t]*(ms|us|s|kHz|Hz)$")


class _Builder:
    """Converts a lark tree to AST nodes, collecting structural diagnostics on the way."""

    def __init__(self, file: str):
        self.file = file
        self.diags: list[Diagnostic] = []

    def error(self, code: str, msg: str, span: ast.Span, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, msg, span, hint))

    # ---------------------------------------------------------------- expressions
    def expr(self, t) -> ast.Expr:
        sp = _tree_span(self.file, t) if isinstance(t, Tree) else _tok_span(self.file, t)
        if isinstance(t, Token):  # bare INPUT keyword in `port = input`
            return ast.Name(str(t), sp)
        d = t.data
        if d == "number":
            return ast.Num(float(t.children[0]), None, sp)
        if d == "quantity":
            m = _QUANTITY.match(str(t.children[0]))
            return ast.Num(float(m.group(1)), m.group(2), sp)
        if d == "name":
            return ast.Name(str(t.children[0]), sp)
        if d in ("add", "sub", "mul", "div"):
            op = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[d]
            return ast.BinOp(op, self.expr(t.children[0]), self.expr(t.children[1]), sp)
        if d == "pow":
            return ast.BinOp("^", self.expr(t.children[0]), self.expr(t.children[2]), sp)
        if d in ("neg", "pos"):
            return ast.UnaryOp("-" if d == "neg" else "+", self.expr(t.children[0]), sp)
        if d == "call":
            args, kwargs = self.arglist(t.children[1])
            return ast.Call(str(t.children[0]), tuple(a for a, _ in args),
                            tuple((k, v) for k, v, _ in kwargs), sp)
        raise AssertionError(f"unhandled expression node {d}")  # grammar and builder out of sync

    def arglist(self, t: Optional[Tree]):
        """-> ([(expr, span)], [(name, expr, span)]) in source order within each list."""
        pos, kw = [], []
        if t is None:
            return pos, kw
        for a in t.children:
            sp = _tree_span(self.file, a)
            if a.data == "posarg":
                pos.append((self.expr(a.children[0]), sp))
            else:
                kw.append((str(a.children[0]), self.expr(a.children[1]), sp))
        return pos, kw

    # ---------------------------------------------------------------- neurons
    def decls(self, t: Tree):
        out = []
        for c in t.children:
            if isinstance(c, Tree) and c.data == "decl":
                out.append((str(c.children[0]), self.expr(c.children[1]), _tree_span(self.file, c)))
        return out

    def assigns(self, children) -> tuple[ast.Assign, ...]:
        out = []
        for c in children:
            if isinstance(c, Tree) and c.data == "assign":
                out.append(ast.Assign(str(c.children[0]), str(c.children[1]),
                                      self.expr(c.children[2]), _tree_span(self.file, c)))
        return tuple(out)

    def neuron(self, t: Tree) -> ast.Neuron:
        name_tok = t.children[0]
        sections: dict[str, ast.Span] = {}
        params, state, dynamics, inputs, reset = (), (), (), [], ()
        threshold = refractory = None
        for item in t.children[1:]:
            if not isinstance(item, Tree):
                continue
            sp = _tree_span(self.file, item)
            kind = item.data
            if kind != "input_port":
                if kind in sections:
                    first = sections[kind]
                    self.error("E017", f"duplicate `{_SECTION_NAMES[kind]}` section in neuron "
                               f"{name_tok}", sp, f"merge it with the one at line {first.line}")
                    continue
                sections[kind] = sp
            if kind == "params":
                params = tuple(ast.ParamDecl(n, e, s) for n, e, s in self.decls(item))
            elif kind == "state":
                state = tuple(ast.StateDecl(n, e, s) for n, e, s in self.decls(item))
            elif kind == "dynamics":
                dynamics = tuple(self.ode(c) for c in item.children if isinstance(c, Tree))
            elif kind == "input_port":
                port = str(item.children[0].children[0])
                inputs.append(ast.InputPort(port, str(item.children[1]),
                                            self.assigns(item.children[2:]), sp))
            elif kind == "threshold":
                threshold = ast.Threshold(self.expr(item.children[1]), self.expr(item.children[2]), sp)
            elif kind == "reset":
                reset = self.assigns(item.children[1:])
            elif kind == "refractory":
                refractory = ast.Refractory(self.expr(item.children[0]), sp)
        return ast.Neuron(str(name_tok), params, state, dynamics, tuple(inputs), threshold, reset,
                          refractory, _tree_span(self.file, t), _tok_span(self.file, name_tok))

    def ode(self, t: Tree) -> ast.ODE:
        num, den = t.children[0], t.children[1]
        sp = _tree_span(self.file, t)
        var = str(num)[1:] if str(num).startswith("d") else str(num)
        if not str(num).startswith("d") or len(str(num)) < 2 or str(den) != "dt":
            bad = num if not (str(num).startswith("d") and len(str(num)) > 1) else den
            self.error("E016", f"malformed derivative `{num}/{den}`", _tok_span(self.file, bad),
                       "write the time derivative of a state variable v as `dv/dt`")
        return ast.ODE(var, self.expr(t.children[2]), sp)

    # ---------------------------------------------------------------- networks
    def size(self, t: Tree) -> tuple[int, ast.Span]:
        tok = t.children[0]
        return int(str(tok)), _tok_span(self.file, tok)

    def shape(self, t: Tree) -> tuple[int, tuple[int, ...], ast.Span]:
        """`[n]` or `[C, H, W]`: (size, shape, span). The size is the product of the dimensions
        (the first non-positive one when there is one, so the size checks (E040) report it)."""
        dims = [self.size(c) for c in t.children]
        shape = tuple(d for d, _ in dims)
        bad = [d for d in shape if d <= 0]
        size = bad[0] if bad else math.prod(shape)
        first, last = dims[0][1], dims[-1][1]
        span = first if len(dims) == 1 else ast.Span(first.file, first.line, first.col,
                                                      last.end_line, last.end_col)
        return size, shape, span

    def discrete_neuron(self, t: Tree) -> ast.DiscreteNeuron:
        name, kind, args = t.children
        pos, kw = self.arglist(args)
        for _, psp in pos:
            self.error("E051", f"arguments of {kind}() must be named", psp, f"write e.g. `{kind}(k = 4)`")
        return ast.DiscreteNeuron(str(name), str(kind), tuple((k, v) for k, v, _ in kw),
                                  _tree_span(self.file, t), _tok_span(self.file, name), _tok_span(self.file, kind))

    def network(self, t: Tree) -> ast.Network:
        inputs, layers, readouts, settings, constants = [], [], [], [], []
        for item in t.children[1:]:
            if not isinstance(item, Tree):
                continue
            sp = _tree_span(self.file, item)
            if item.data == "input_pop":
                size, shape, size_span = self.shape(item.children[2])
                inputs.append(ast.InputPop(str(item.children[1]), size, sp, shape, size_span))
            elif item.data == "layer":
                layers.append(self.layer(item, sp))
            elif item.data == "setting":
                settings.append(ast.Setting(str(item.children[0]), self.expr(item.children[1]), sp))
            elif item.data == "net_param":
                constants.append(ast.Setting(str(item.children[0]), self.expr(item.children[1]), sp))
            elif item.data == "readout":
                lt, kt, args = item.children
                pos, kw = self.arglist(args)
                for _, psp in pos:
                    self.error("E051", "readout arguments must be named", psp,
                               "readouts take no arguments: write e.g. `readout out: li_integral`")
                readouts.append(ast.Readout(str(lt), str(kt), tuple((k, v) for k, v, _ in kw), sp,
                                            _tok_span(self.file, lt)))
        return ast.Network(str(t.children[0]), tuple(inputs), tuple(layers), tuple(readouts),
                           _tree_span(self.file, t), tuple(settings), tuple(constants))

    def layer(self, t: Tree, sp: ast.Span) -> ast.Layer:
        name, size_t, neuron, args = t.children[:4]
        size, shape, size_span = self.shape(size_t)
        pos, kw = self.arglist(args)
        for _, psp in pos:
            self.error("E051", f"parameter overrides of {neuron} must be named", psp,
                       f"write e.g. `{neuron}(tau_m = 20 ms)`")
        overrides = tuple(ast.ParamOverride(k, v, s) for k, v, s in kw)
        conns, inits = [], []
        for c in t.children[4:]:
            if c is None:
                continue
            if c.data == "layer_body":
                inits = [ast.StateInit(str(s.children[0]), self.expr(s.children[1]), _tree_span(self.file, s))
                         for s in c.children if isinstance(s, Tree)]
                continue
            kind_tok, cargs = c.children
            csp = _tree_span(self.file, c)
            cpos, ckw = self.arglist(cargs)
            if cpos:
                src_expr, src_span = cpos[0]
                if isinstance(src_expr, ast.Name):
                    source = src_expr.id
                else:
                    source = ""
                    self.error("E043", "the source of a connection must be a population name",
                               src_span, "write e.g. `dense(x)`")
            elif str(kind_tok) == "recurrent":
                source, src_span = str(name), csp
            else:
                source, src_span = "", csp
                self.error("E047", f"`{kind_tok}` needs a source population", csp,
                           f"write e.g. `{kind_tok}(x)`")
            if str(kind_tok) == "pool2d" and len(cpos) == 2:  # `pool2d(c1, 2)`: the window size
                ckw = [("size", cpos[1][0], cpos[1][1])] + list(ckw)
                cpos = cpos[:1]
            for _, psp in cpos[1:]:
                self.error("E051", "connection options must be named", psp,
                           "write e.g. `dense(x, init = normal(0.0, 0.5))`")
            conns.append(ast.Connection(str(kind_tok), source, tuple((k, v) for k, v, _ in ckw),
                                        csp, src_span))
        return ast.Layer(str(name), size, str(neuron), overrides, tuple(conns), sp, size_span,
                         _tok_span(self.file, neuron), tuple(inits), shape=shape)

    # ---------------------------------------------------------------- files
    def module(self, t: Tree) -> ast.Module:
        imports, neurons, networks, discrete = [], [], [], []
        for item in t.children:
            if not isinstance(item, Tree):
                continue
            sp = _tree_span(self.file, item)
            if item.data == "import_all":
                imports.append(ast.Import(str(item.children[0])[1:-1], None, sp))
            elif item.data == "import_from":
                names = tuple(str(n) for n in item.children[1:] if n is not None)
                imports.append(ast.Import(str(item.children[0])[1:-1], names, sp))
            elif item.data == "neuron":
                neurons.append(self.neuron(item))
            elif item.data == "network":
                networks.append(self.network(item))
            elif item.data == "discrete_neuron":
                discrete.append(self.discrete_neuron(item))
        return ast.Module(self.file, tuple(imports), tuple(neurons), tuple(networks),
                          discrete_neurons=tuple(discrete))


_SECTION_NAMES = {"params": "params", "state": "state", "dynamics": "dynamics",
                  "threshold": "spike when", "reset": "on spike", "refractory": "refractory"}


def _syntax_diagnostic(e: lark.exceptions.UnexpectedInput, file: str, text: str) -> Diagnostic:
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else "?"
        shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
        return Diagnostic("E003", f"invalid character {shown}",
                          _span(file, e.line, e.column, e.line, e.column + 1),
                          expected_hint(e.allowed or ()) if e.allowed else
                          "names, numbers, operators and braces only; comments start with #")
    if isinstance(e, lark.exceptions.UnexpectedToken) and e.token.type != "$END":
        tok = e.token
        return Diagnostic("E001", f"unexpected {_describe_token(tok)}", _tok_span(file, tok),
                          expected_hint(e.expected))
    # end of input
    lines = text.split("\n")
    line, col = len(lines), len(lines[-1]) + 1
    while line > 1 and not lines[line - 1].strip():
        line -= 1
        col = len(lines[line - 1].rstrip()) + 1
    expected = getattr(e, "expected", None) or ()
    return Diagnostic("E002", "unexpected end of file", _span(file, line, col, line, col + 1),
                      expected_hint(expected) + " (is a closing '}' missing?)")


def _describe_token(tok: Token) -> str:
    v = str(tok)
    if tok.type == "NAME":
        return f"name `{v}`"
    if tok.type in ("NUMBER", "QUANTITY", "SIGNED_INT"):
        return f"number `{v}`"
    return f"`{v}`"


def parse_source(text: str, filename: str = "<string>") -> tuple[Optional[ast.Module], list[Diagnostic]]:
    """Parse .snn text into an ast.Module (imports unresolved). Never raises on bad input."""
    if len(text) > MAX_BYTES:
        return None, [Diagnostic("E006", f"file too large ({len(text)} characters; the limit is "
                                 f"{MAX_BYTES})", _span(filename, 1, 1, 1, 2),
                                 "split the model into several files joined with `import`")]
    try:
        tree = _lark().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        return None, [_syntax_diagnostic(e, filename, text)]
    except RecursionError:
        return None, [Diagnostic("E005", "input nested too deeply", _span(filename, 1, 1, 1, 2),
                                 "simplify the expression")]
    depth, deepest = _depth(tree)
    if depth > MAX_DEPTH:
        return None, [Diagnostic("E005", f"expression nested too deeply (depth {depth}, the limit "
                                 f"is {MAX_DEPTH})", _tree_span(filename, deepest),
                                 "simplify the expression or split it with parameters")]
    b = _Builder(filename)
    return b.module(tree), b.diags
