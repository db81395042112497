"""Build spikescan AST nodes by hand from short strings (independent of the dsl parser), so the
analysis can be tested on exactly the neurons we intend, including malformed ones."""

from __future__ import annotations

import ast as pyast
import re

from spikescan.dsl import ast

SPAN = ast.Span("<test>", 1, 1, 1, 2)
_UNIT = re.compile(r"(\d+\.?\d*(?:[eE][+-]?\d+)?)\s*(ms|us|s)\b")


def expr(text: str) -> ast.Expr:
    src = _UNIT.sub(lambda m: f"__unit_{m.group(2)}({m.group(1)})", text).replace("^", "**")
    return _conv(pyast.parse(src, mode="eval").body)


def _conv(n) -> ast.Expr:
    if isinstance(n, pyast.Constant):
        return ast.Num(float(n.value), None, SPAN)
    if isinstance(n, pyast.Name):
        return ast.Name(n.id, SPAN)
    if isinstance(n, pyast.UnaryOp):
        return ast.UnaryOp("-" if isinstance(n.op, pyast.USub) else "+", _conv(n.operand), SPAN)
    if isinstance(n, pyast.BinOp):
        op = {pyast.Add: "+", pyast.Sub: "-", pyast.Mult: "*", pyast.Div: "/", pyast.Pow: "^"}[type(n.op)]
        return ast.BinOp(op, _conv(n.left), _conv(n.right), SPAN)
    if isinstance(n, pyast.Call):
        fname = n.func.id
        if fname.startswith("__unit_"):
            return ast.Num(float(n.args[0].value), fname[len("__unit_"):], SPAN)
        return ast.Call(fname, tuple(_conv(a) for a in n.args),
                        tuple((k.arg, _conv(k.value)) for k in n.keywords), SPAN)
    raise ValueError(f"cannot convert {pyast.dump(n)}")


def _assigns(text: str) -> tuple[ast.Assign, ...]:
    out = []
    for stmt in filter(None, (s.strip() for s in text.split(";"))):
        m = re.match(r"(\w+)\s*(\+=|-=|=)\s*(.+)", stmt)
        out.append(ast.Assign(m.group(1), m.group(2), expr(m.group(3)), SPAN))
    return tuple(out)


def neuron(name, params, state, dynamics, inputs=None, threshold=None, reset="", refractory=None):
    """params/state: dict name -> expression text; dynamics: dict var -> rhs text;
    inputs: dict port -> (weight name, "i += w; ..."); threshold: (lhs, rhs) texts."""
    inputs = inputs if inputs is not None else {"input": ("w", "i += w")}
    return ast.Neuron(
        name=name,
        params=tuple(ast.ParamDecl(k, expr(v), SPAN) for k, v in params.items()),
        state=tuple(ast.StateDecl(k, expr(v), SPAN) for k, v in state.items()),
        dynamics=tuple(ast.ODE(k, expr(v), SPAN) for k, v in dynamics.items()),
        inputs=tuple(ast.InputPort(p, w, _assigns(body), SPAN) for p, (w, body) in inputs.items()),
        threshold=ast.Threshold(expr(threshold[0]), expr(threshold[1]), SPAN) if threshold else None,
        reset=_assigns(reset),
        refractory=ast.Refractory(expr(refractory), SPAN) if refractory else None,
        span=SPAN,
        name_span=SPAN,
    )


def cuba_lif():
    return neuron(
        "CubaLIF",
        {"tau_m": "20 ms", "tau_s": "5 ms", "v_th": "1.0", "v_reset": "0.0"},
        {"v": "0.0", "i": "0.0"},
        {"v": "(i - v) / tau_m", "i": "-i / tau_s"},
        threshold=("v", "v_th"),
        reset="v = v_reset",
        refractory="0 ms",
    )


def lif():
    return neuron(
        "LIF",
        {"tau_m": "20 ms", "v_rest": "0.0", "v_th": "1.0", "v_reset": "0.0"},
        {"v": "0.0"},
        {"v": "(v_rest - v) / tau_m"},
        inputs={"input": ("w", "v += w")},
        threshold=("v", "v_th"),
        reset="v = v_reset",
    )


def alpha_lif():
    return neuron(
        "AlphaLIF",
        {"tau_m": "20 ms", "tau_s": "5 ms", "v_th": "1.0", "v_reset": "0.0"},
        {"v": "0.0", "i": "0.0", "g": "0.0"},
        {"v": "(i - v) / tau_m", "i": "(g - i) / tau_s", "g": "-g / tau_s"},
        inputs={"input": ("w", "g += w")},
        threshold=("v", "v_th"),
        reset="v = v_reset",
    )


def adaptive_lif():
    return neuron(
        "AdaptiveLIF",
        {"tau_m": "20 ms", "tau_s": "5 ms", "tau_a": "100 ms", "v_th": "1.0", "v_reset": "0.0", "beta": "0.2"},
        {"v": "0.0", "i": "0.0", "a": "0.0"},
        {"v": "(i - v) / tau_m", "i": "-i / tau_s", "a": "-a / tau_a"},
        threshold=("v - a", "v_th"),
        reset="v = v_reset; a += beta",
    )


def three_rate():
    """Three distinct rates on one path plus a bias: needs dexp2 in Phi and phi."""
    return neuron(
        "ThreeRate",
        {"tau_m": "20 ms", "tau_s": "5 ms", "tau_r": "2 ms", "bias": "0.3", "v_th": "1.0"},
        {"v": "0.0", "i": "0.0", "g": "0.0"},
        {"v": "(i - v) / tau_m", "i": "(g + bias - i) / tau_s", "g": "-g / tau_r"},
        inputs={"input": ("w", "g += w")},
        threshold=("v", "v_th"),
        reset="v -= v_th",
    )


def li():
    return neuron("LI", {"tau_m": "20 ms"}, {"v": "0.0"}, {"v": "-v / tau_m"},
                  inputs={"input": ("w", "v += w")})


def slow_synapse():
    """Synapse slower than the membrane (tau_s > tau_m): the prefactor must follow the defaults."""
    return neuron("SlowSyn", {"tau_m": "2 ms", "tau_s": "50 ms", "v_th": "1.0"}, {"v": "0.0", "i": "0.0"},
                  {"v": "(i - v) / tau_m", "i": "-i / tau_s"}, threshold=("v", "v_th"), reset="v = 0")
