"""Property tests: mutated example models end in success or diagnostics, never another
exception; parsed arithmetic agrees with sympy's own parser."""

import re
from pathlib import Path

import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikescan.dsl as dsl
from spikescan.dsl import ast
from spikescan.dsl.diagnostics import CODES, render_all
from spikescan.dsl.sym import MAX_EXP_ARG, NumberRange, to_sympy

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {p.name: p.read_text() for p in sorted((ROOT / "models").glob("*.snn"))}
TOKEN = re.compile(r"\s+|[A-Za-z_]\w*|\d+\.?\d*|\S")


def _mutate(text: str, data) -> str:
    kind = data.draw(st.sampled_from(["del_tok", "dup_tok", "swap_tok", "del_line",
                                      "dup_line", "swap_line", "truncate", "insert_tok"]))
    if kind.endswith("line"):
        parts = text.split("\n")
    else:
        parts = TOKEN.findall(text)
    if kind == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    if not parts:
        return text
    i = data.draw(st.integers(0, len(parts) - 1))
    if kind.startswith("del"):
        del parts[i]
    elif kind.startswith("dup"):
        parts.insert(i, parts[i])
    elif kind.startswith("swap"):
        j = data.draw(st.integers(0, len(parts) - 1))
        parts[i], parts[j] = parts[j], parts[i]
    else:  # insert a token from elsewhere in the file
        parts.insert(i, parts[data.draw(st.integers(0, len(parts) - 1))])
    return ("\n" if kind.endswith("line") else "").join(parts)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SOURCES)), st.integers(1, 3), st.data())
def test_mutations_end_in_success_or_diagnostics(name, n_mutations, data):
    text = SOURCES[name]
    for _ in range(n_mutations):
        text = _mutate(text, data)
    filename = str(ROOT / "models" / ("mutant_" + name))  # imports resolve next to the models
    module, diags = dsl.check_source(text, filename)
    assert module is not None or diags
    assert all(d.code in CODES and (d.span is None or d.span.line >= 1) for d in diags)
    rendered = render_all(diags, {filename: text})
    assert rendered.count("error[") == sum(d.is_error for d in diags)


# ------------------------------------------------------------- expressions vs sympy's parser

_names = st.sampled_from(["a", "b", "c"])
_nums = st.integers(1, 9).map(str) | st.sampled_from(["0.5", "2.25", "1e-3"])


def _exprs():
    leaf = _names | _nums

    def extend(inner):
        binop = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "^"]), inner).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}" if t[1] != "^" else f"{t[0]}^2")
        return binop | inner.map(lambda s: f"({s})") | inner.map(lambda s: f"-{s}") | \
            inner.map(lambda s: f"exp({s})")

    return st.recursive(leaf, extend, max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(_exprs())
def test_precedence_matches_sympy(text):
    module, diags = dsl.check_source(f"neuron N {{ params {{ p = 1 }} state {{ x = {text} }} }}", "e.snn")
    expr = module.neurons[0].state[0].init
    syms = {k: sympy.Symbol(k) for k in "abc"}
    ref = sympy.sympify(text.replace("^", "**"), locals=syms, rational=True)
    try:
        ours = to_sympy(expr, syms)
    except NumberRange as err:  # E037 is right only if some exp() of a constant leaves float range
        big = [e for e in ref.atoms(sympy.exp) if e.args[0].is_number and e.args[0].evalf() > MAX_EXP_ARG]
        assert err.code == "E037" and big, (text, str(err))
        return
    assert sympy.simplify(ours - ref) == 0, (text, ours, ref)
