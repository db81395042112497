"""Nothing a cache folder holds can run code or be served unverified (issue 11 item 2): the
generated Triton module runs from its verified text (never from bytecode or an edited file), the
parser cache is no pickle, and build folders are checked against their manifest on a hit."""

from __future__ import annotations

import importlib.util
import inspect
import linecache
import marshal
import hashlib
from pathlib import Path

import pytest

from example_models import model_ir


def _plant_pyc(py: Path, payload: str) -> Path:
    """A .pyc for `py` that importlib accepts (the .py's mtime and size in its header)."""
    st = py.stat()
    code = compile(payload, str(py), "exec")
    pyc = Path(importlib.util.cache_from_source(str(py)))
    pyc.parent.mkdir(parents=True, exist_ok=True)
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


def test_planted_pyc_in_triton_cache_never_runs(tmp_path, monkeypatch):
    from spikescan.compiler.backends.triton import codegen as tc

    monkeypatch.setattr(tc, "_LOADED", {})
    ir = model_ir("CubaLIF")
    src = tc.generate(ir, "f64")
    h = hashlib.sha256(src.encode()).hexdigest()[:20]
    root = tmp_path / "triton"
    root.mkdir()
    py = root / f"CubaLIF_f64_{h}.py"
    py.write_text(src)
    marker = tmp_path / "pwned"
    pyc = _plant_pyc(py, f"open({str(marker)!r}, 'w').write('ran')\nSTATE = ('pwned',)\n")
    mod = tc.load_module(ir, "f64", root=root)
    assert not marker.exists(), "a planted .pyc was executed"
    assert mod.STATE == tuple(ir.state) and Path(mod.__file__) == py
    assert pyc.read_bytes().startswith(importlib.util.MAGIC_NUMBER)  # left alone, just never read


def test_edited_triton_file_never_runs_and_no_bytecode_written(tmp_path, monkeypatch):
    from spikescan.compiler.backends.triton import codegen as tc

    monkeypatch.setattr(tc, "_LOADED", {})
    ir = model_ir("CubaLIF")
    root = tmp_path / "triton"
    tc.load_module(ir, "f64", root=root)
    [py] = root.glob("CubaLIF_f64_*.py")
    assert not (root / "__pycache__").exists()  # no bytecode cache is written
    marker = tmp_path / "pwned"
    py.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setattr(tc, "_LOADED", {})
    mod = tc.load_module(ir, "f64", root=root)
    assert not marker.exists() and mod.STATE == tuple(ir.state)
    assert py.read_text() == tc.generate(ir, "f64")  # the copy on disk is restored
    # Triton's @jit reads its source through inspect/linecache: the verified text, even after
    # linecache re-validates its entries and the file on disk is edited again
    py.write_text("# edited\n")
    linecache.checkcache()
    kern = mod.seq_kernel_input  # a JITFunction, or an InterpretedFunction under TRITON_INTERPRET=1
    src = kern.src if hasattr(kern, "src") else inspect.getsource(kern.fn)
    assert src.lstrip().removeprefix("@triton.jit\n").startswith("def seq_kernel_input(")
    assert inspect.getsource(mod.propagate.fn).lstrip().startswith("@triton.jit\ndef propagate(")


def test_triton_module_loads_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    import errno

    from spikescan.compiler.backends.triton import codegen as tc

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tc, "_LOADED", {})
    monkeypatch.setattr(Path, "write_text", full)
    root = tmp_path / "full"
    mod = tc.load_module(model_ir("CubaLIF"), "f64", root=root)
    assert mod.SPIKING and not list(root.glob("*.py"))


# ------------------------------------------------------------------ the lark parser


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _old_parser_cache_names() -> list[str]:
    """Where the old dsl/parser.py looked for its pickled parser (same key formula)."""
    import lark

    from spikescan.dsl import parser as dsl_parser

    grammar = (Path(dsl_parser.__file__).with_name("grammar.lark")).read_text()
    key = hashlib.sha256(f"{lark.__version__} {sorted(dsl_parser._LARK_OPTIONS.items())}\n{grammar}"
                         .encode()).hexdigest()
    return [f"parser-{key[:20]}.lark"]


def test_poisoned_parser_cache_never_runs(tmp_path, models_dir):
    import os
    import pickle
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    folders = [tmp_path / "pc", tmp_path / "xdg" / "spikescan", tmp_path / "home" / ".cache" / "spikescan"]
    for folder in folders:
        folder.mkdir(parents=True)
        for name in _old_parser_cache_names():
            (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    envs = [{"SPIKESCAN_PARSER_CACHE": str(folders[0])}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
            {"HOME": str(tmp_path / "home")}]
    for extra in envs:
        env = {k: v for k, v in os.environ.items() if k not in ("SPIKESCAN_PARSER_CACHE", "XDG_CACHE_HOME")}
        env.update(extra)
        r = subprocess.run([sys.executable, "-m", "spikescan.cli", "check", str(models_dir / "cuba_lif.snn")],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert not marker.exists(), f"a poisoned parser cache ran with {extra}"
    assert all(len(list(f.iterdir())) == 1 for f in folders)  # nothing written beside it


def test_parser_needs_no_cache_folder(tmp_path, monkeypatch, models_dir):
    from spikescan.dsl import parser as dsl_parser

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    p = dsl_parser._lark.__wrapped__()
    assert p.parse((models_dir / "cuba_lif.snn").read_text()).children
    assert not any(tmp_path.iterdir())  # the parser is built in memory, nothing is written
