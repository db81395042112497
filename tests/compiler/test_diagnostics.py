"""Compiler diagnostics E060-E064: one fixture per code a source can trigger
(tests/compiler/fixtures/EXXX.snn, first line `# expect EXXX at L:C`), the others provoked here;
every code is documented in docs/language.md and reported by `spikescan check` as well as by
`spikescan compile`."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

import spikescan.dsl as dsl
from spikescan.cli import main
from spikescan.compiler.driver import compile_model, load_model
from spikescan.compiler.errors import COMPILER_CODES
from spikescan.dsl.diagnostics import DiagnosticError

FIXTURES = Path(__file__).parent / "fixtures"
CODE_FILES = sorted(FIXTURES.glob("E06*.snn"))
PROVOKED = {"E062", "E064"}  # a backend failure or a compiler bug: no source triggers them
EXPECT = re.compile(r"# expect (E\d{3}) at (\d+):(\d+)$")
DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"


def _expected(path: Path) -> tuple[str, int, int]:
    m = EXPECT.match(path.read_text().split("\n")[0])
    assert m, f"{path.name}: first line must be `# expect EXXX at L:C`"
    return m.group(1), int(m.group(2)), int(m.group(3))


def test_every_compiler_code_has_a_test():
    covered = {p.stem for p in CODE_FILES} | PROVOKED
    assert covered == set(COMPILER_CODES), sorted(covered ^ set(COMPILER_CODES))


@pytest.mark.parametrize("path", CODE_FILES, ids=lambda p: p.stem)
def test_fixture(path):
    code, line, col = _expected(path)
    assert code == path.stem
    assert dsl.check_file(path)[1] == []  # the language accepts it: only the compiler refuses
    with pytest.raises(DiagnosticError) as exc:
        load_model(path)
    [d] = exc.value.diagnostics
    assert d.code == code and d.hint and d.message
    assert (Path(d.span.file).resolve(), d.span.line, d.span.col) == (path.resolve(), line, col)
    out = str(exc.value).split("\n")
    assert out[0] == f"{d.span.file}:{line}:{col}: error[{code}]: {d.message}"
    assert out[1] == "    " + path.read_text().split("\n")[line - 1]
    assert out[2][4:].index("^") == col - 1 and out[-1] == f"hint: {d.hint}"


@pytest.mark.parametrize("path", CODE_FILES, ids=lambda p: p.stem)
def test_check_and_compile_report_it(path, capsys, tmp_path):
    code, line, col = _expected(path)
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"{path}:{line}:{col}: error[{code}]" in err and "failed:" in err and "(1 error)" in err
    assert "Traceback" not in err and out == ""
    assert main(["check", "--no-analysis", str(path)]) == 0  # language checks alone pass
    capsys.readouterr()
    assert main(["compile", str(path), "-o", str(tmp_path / "c"), "--emit", ""]) == 1
    err = capsys.readouterr().err
    assert f"error[{code}]" in err and "1 error; nothing was compiled" in err
    assert not (tmp_path / "c").exists()  # a refused model never touches the cache


def _copy_model(tmp_path: Path, models_dir: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copy(models_dir / name, dst)
    return dst


def test_E062_backend_failure(tmp_path, models_dir, monkeypatch):
    import spikescan.compiler.backends.triton.codegen as tc

    def boom(ir, dtype):
        raise RuntimeError("synthetic failure\nwith a long traceback-ish tail")

    monkeypatch.setattr(tc, "generate", boom)
    src = _copy_model(tmp_path, models_dir, "lif.snn")
    with pytest.raises(DiagnosticError) as exc:
        compile_model(src, out_dir=tmp_path / "c", emit=("triton",), progress=None)
    [d] = exc.value.diagnostics
    assert d.code == "E062" and "synthetic failure" in d.message and "traceback-ish" not in d.message
    decl = next(k for k, l in enumerate(src.read_text().split("\n"), 1) if l.startswith("neuron LIF"))
    assert d.span.line == decl and "neuron LIF" in str(exc.value)  # at the neuron, line shown
    assert not list((tmp_path / "c").glob("*/manifest.json"))  # nothing half-written


@pytest.mark.parametrize("missing", ["backend module", "its dependency"])
def test_E062_backend_not_installed(missing, tmp_path, models_dir, monkeypatch):
    if missing == "backend module":
        monkeypatch.setitem(sys.modules, "spikescan.compiler.backends.mlir.emit", None)  # import fails
    else:
        import spikescan.compiler.backends.mlir.emit as me

        def no_bindings(ir, dtype):
            raise ModuleNotFoundError("No module named 'torch_mlir'", name="torch_mlir")

        monkeypatch.setattr(me, "emit_module", no_bindings)
    src = _copy_model(tmp_path, models_dir, "lif.snn")
    with pytest.raises(DiagnosticError) as exc:
        compile_model(src, out_dir=tmp_path / "c", emit=("mlir",), progress=None)
    [d] = exc.value.diagnostics
    assert d.code == "E062" and "mlir backend is not available" in d.message and "--emit" in d.hint
    if missing != "backend module":
        assert "torch_mlir" in d.message


@pytest.mark.parametrize("where", ["neuron", "network"])
def test_E064_internal_error(where, models_dir, monkeypatch):
    import spikescan.compiler.analysis as an
    import spikescan.compiler.driver as drv

    def broken(*args):
        raise ZeroDivisionError("synthetic bug")

    monkeypatch.setattr(an, "analyze_neuron" if where == "neuron" else "analyze_network", broken)
    monkeypatch.setattr(drv, "_ANALYSIS_CACHE", {})
    path = models_dir / ("lif.snn" if where == "neuron" else "yinyang.snn")
    with pytest.raises(DiagnosticError) as exc:
        load_model(path)
    [d] = exc.value.diagnostics
    assert d.code == "E064" and "ZeroDivisionError: synthetic bug" in d.message and "bug" in d.hint
    assert f"{path.name}:" in str(exc.value) and "Traceback" not in str(exc.value)


def test_language_doc_documents_every_compiler_code():
    doc = DOC.read_text()
    assert "## Compiler diagnostics" in doc
    section = doc.split("## Compiler diagnostics", 1)[1].split("\n## ", 1)[0]
    for code, title in COMPILER_CODES.items():
        assert f"| {code} |" in section, code
        assert f"error[{code}]" in section, f"{code}: no example output"


# ------------------------------------------- files that checked cleanly and then failed (E062)

CASES = sorted(p for p in FIXTURES.glob("*.snn") if not p.stem.startswith("E06"))
EXPECT_ANY = re.compile(r"# expect (E\d{3}) at (\d+):(\d+)$")


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_no_backend_failure_after_a_clean_check(path, tmp_path):
    """Each case of issue 17 item 6 is either refused by `check` (with its code and place) or
    compiles with every backend; none ends in E062 "compiler bug" any more."""
    m = EXPECT_ANY.match(path.read_text().split("\n")[0])
    if m:
        with pytest.raises(DiagnosticError) as exc:
            load_model(path)
        [d] = exc.value.diagnostics
        assert (d.code, d.span.line, d.span.col) == (m.group(1), int(m.group(2)), int(m.group(3)))
        assert d.hint and "Traceback" not in str(exc.value)
    else:
        assert path.read_text().startswith("# valid")
        model = compile_model(path, out_dir=tmp_path / "c", progress=None)
        assert set(model.manifest["neurons"]) and model.manifest["emit"] == ["mlir", "triton", "cpu"]
