"""One fixture per error code (tests/dsl/fixtures/EXXX.snn, first line `# expect EXXX at L:C`),
the rendering format, and pathological inputs that must end in a diagnostic, never a traceback."""

import os
import re
from pathlib import Path

import pytest

import spikescan.dsl as dsl
from spikescan.dsl import parser as dsl_parser
from spikescan.dsl.diagnostics import CODES, Diagnostic, render_all, source_excerpt

FIXTURES = Path(__file__).parent / "fixtures"
CODE_FILES = sorted(FIXTURES.glob("E*.snn"))
# Codes whose inputs are generated in this file instead of stored as fixtures.
GENERATED = {"E004", "E005", "E006", "E072"}  # E072: tests/dsl/test_dsl_files.py
EXPECT = re.compile(r"# expect (E\d{3}) at (\d+):(\d+)(?: in (\S+))?$")


def test_every_code_has_a_test():
    covered = {p.stem for p in CODE_FILES} | GENERATED | {p.stem for p in FIXTURES.glob("W*.snn")}
    assert covered == set(CODES), sorted(set(CODES) ^ covered)


@pytest.mark.parametrize("path", CODE_FILES, ids=lambda p: p.stem)
def test_fixture(path):
    m = EXPECT.match(path.read_text().split("\n")[0])
    assert m, f"{path.name}: first line must be `# expect EXXX at L:C`"
    code, line, col, other = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    assert code == path.stem
    module, diags = dsl.check_file(path)
    assert diags, "no diagnostic"
    # exactly the intended error, no follow-on noise
    assert [d.code for d in diags] == [code], render_all(diags)
    d = diags[0]
    assert d.severity == "error" and d.hint and d.message
    expected_file = path.parent / other if other else path
    assert os.path.samefile(d.span.file, expected_file)
    assert (d.span.line, d.span.col) == (line, col)
    # rendering: header, the offending source line, a caret under the span, the hint
    text = expected_file.read_text()
    out = d.render(text).split("\n")
    assert out[0] == f"{d.span.file}:{line}:{col}: error[{code}]: {d.message}"
    assert out[1] == "    " + text.split("\n")[line - 1]
    caret = out[2][4:]
    assert caret.index("^") == col - 1 and set(caret.strip()) <= {"^", "~"}
    if d.span.end_line == line:
        assert len(caret.strip()) == max(1, d.span.end_col - d.span.col)
    assert out[-1] == f"hint: {d.hint}"
    # load() raises DiagnosticError carrying the same diagnostics and renders them
    with pytest.raises(dsl.DiagnosticError) as ei:
        dsl.load(path)
    assert [x.code for x in ei.value.diagnostics] == [code]
    assert f"error[{code}]" in str(ei.value) and "^" in str(ei.value)


def test_several_errors_in_one_run():
    src = (FIXTURES / "E010.snn").read_text().replace("spike when v >= v_th", "spike when v * v >= v_th")
    src = src.replace("tau_m = 20 ms", "tau_m = -20 ms").replace("on input(w) { i += w }", "on input(w) { i += w * w }")
    _, diags = dsl.check_source(src, str(FIXTURES / "multi.snn"))
    assert {"E010", "E021", "E022", "E034"} <= {d.code for d in diags}
    lines = [d.span.line for d in diags]
    assert lines == sorted(lines)


def test_unit_mismatch_of_override_and_missing_unit_in_delay():
    src = ('from "lib/base.snn" import CubaLIF\n'
           "network n { input x[2]\n"
           "  layer h[3] = CubaLIF(tau_m = 20) <- dense(x, delays = learnable(max = 5))\n"
           "  readout h: max_potential }\n")
    _, diags = dsl.check_source(src, str(FIXTURES / "inline.snn"))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [
        ("E030", 3, 32), ("E033", 3, 73)]


# ------------------------------------------------------------------- pathological inputs

def _check_text(text: str, name="patho.snn"):
    module, diags = dsl.check_source(text, str(FIXTURES / name))
    assert all(isinstance(d, Diagnostic) for d in diags)
    render_all(diags, {str(FIXTURES / name): text})  # rendering never fails either
    return module, diags


def test_empty_file_is_an_empty_module():
    module, diags = _check_text("")
    assert diags == [] and module.neurons == () and module.networks == ()
    module, diags = _check_text("# only a comment\n\n")
    assert diags == [] and module is not None


def test_binary_garbage():
    data = bytes(range(256)) * 8
    module, diags = _check_text(data.decode("latin-1"))
    assert module is None and diags[0].code == "E003"


def test_non_utf8_file(tmp_path):
    p = tmp_path / "bad.snn"
    p.write_bytes(b"neuron A {\n  params { a = 1 }\xff\xfe\n}\n")
    module, diags = dsl.check_file(p)
    assert module is None and [d.code for d in diags] == ["E004"]
    assert (diags[0].span.line, diags[0].span.col) == (2, 19)
    with pytest.raises(dsl.DiagnosticError):
        dsl.load(p)


def test_missing_file(tmp_path):
    module, diags = dsl.check_file(tmp_path / "nope.snn")
    assert module is None and [d.code for d in diags] == ["E004"]


@pytest.mark.parametrize("kind", ["parens", "unary", "chain", "calls"])
def test_deep_nesting_is_a_diagnostic(kind):
    n = 5000
    expr = {"parens": "(" * n + "1" + ")" * n, "unary": "-" * n + "1",
            "chain": "+".join(["1"] * n), "calls": "exp(" * n + "1" + ")" * n}[kind]
    module, diags = _check_text(f"neuron A {{ params {{ a = {expr} }} }}")
    if kind == "parens":  # parentheses leave no tree node: harmless, parses fine
        assert [d.code for d in diags] == ["E014"]
    else:
        assert module is None and [d.code for d in diags] == ["E005"]


def test_unclosed_parentheses():
    module, diags = _check_text("neuron A { params { a = " + "(" * 5000)
    assert module is None and diags[0].code == "E002"


def test_ten_megabyte_file(tmp_path):
    p = tmp_path / "big.snn"
    p.write_text("# padding\n" * 1_000_000)
    assert p.stat().st_size >= 10_000_000
    module, diags = dsl.check_file(p)
    assert module is None and [d.code for d in diags] == ["E006"]
    module, diags = _check_text(p.read_text())
    assert module is None and [d.code for d in diags] == ["E006"]


def test_size_limit_boundary(monkeypatch, tmp_path):
    monkeypatch.setattr(dsl_parser, "MAX_BYTES", 400)
    ok = "# c\n" * 100  # exactly 400 characters
    assert _check_text(ok) [1] == []
    assert [d.code for d in _check_text(ok + "\n")[1]] == ["E006"]
    p = tmp_path / "f.snn"
    p.write_text(ok + "\n")
    assert [d.code for d in dsl.check_file(p)[1]] == ["E006"]


@pytest.mark.parametrize("text", ["\x00", "neuron", "neuron {", "}", "network n { layer }",
                                  "import", 'import "', "from x import y", "neuron A { on }",
                                  "neuron A { spike when }", "neuron A { dynamics { dv/dt = } }",
                                  "\ufeffneuron A { }", "neuron A { params { a = 1 ns } }"])
def test_short_bad_inputs(text):
    module, diags = _check_text(text)
    assert module is None or diags  # every one of these is an error
    assert all(d.code in CODES for d in diags)


def test_caret_on_long_line_and_tabs():
    span = dsl.ast.Span("f", 1, 500, 1, 503)
    line, caret = source_excerpt("x" * 1000, span)
    assert len(line) < 200 and line[caret.index("^"):caret.index("^") + 3] == "xxx"
    line, caret = source_excerpt("\tab", dsl.ast.Span("f", 1, 2, 1, 4))
    assert line == " ab" and caret == " ^~"


def test_language_doc_lists_every_code():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "language.md").read_text()
    missing = [c for c in CODES if f"| {c} |" not in doc]
    assert not missing, missing


@pytest.mark.parametrize("imp,code", [('from "nope.snn" import CubaLIF', "E007"),
                                      ('import "nope.snn"', "E007"),
                                      ('from "lib/base.snn" import CubaLif', "E009")])
def test_failed_import_is_reported_once(imp, code):
    """A layer using a neuron from a failed import is not an extra E041; other unknown neurons
    still are, unless a whole-file import failed (it might have defined them)."""
    used = imp.split()[-1] if imp.startswith("from") else "CubaLIF"
    src = (f"{imp}\nnetwork n {{ input x[2]\n  layer h[3] = {used}() <- dense(x)\n"
           "  layer g[3] = Nowhere() <- dense(x)\n  readout h: li_integral }\n")
    _, diags = dsl.check_source(src, str(FIXTURES / "inline.snn"))
    expected = [(code, 1)] if imp.startswith("import") else [(code, 1), ("E041", 4)]
    assert [(d.code, d.span.line) for d in diags] == expected, render_all(diags)


@pytest.mark.parametrize("readout,col", [("li_integral(tau = 20 ms)", 32), ("li_integral(tau = 2)", 32),
                                         ("max_potential(tau = 5 ms)", 34)])
def test_readout_arguments_are_refused(readout, col):
    """`li_integral(tau = ...)` was accepted and ignored (every engine integrates the potential
    itself; its leak is the neuron's time constant): issue 17 item 6.1. Now E048 at the value."""
    src = ('from "lib/base.snn" import LI\nnetwork n { input x[2]\n'
           "  layer h[3] = LI() <- dense(x)\n"
           f"  readout h: {readout} }}\n")
    _, diags = dsl.check_source(src, str(FIXTURES / "inline.snn"))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("E048", 4, col)], render_all(diags)
    assert "li_integral" in diags[0].hint
