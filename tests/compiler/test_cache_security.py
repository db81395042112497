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
    from spikescan.compiler.backends import triton_codegen as tc

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
    from spikescan.compiler.backends import triton_codegen as tc

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
    assert mod.seq_kernel_input.src.lstrip().startswith("def seq_kernel_input(")
    assert inspect.getsource(mod.propagate.fn).lstrip().startswith("@triton.jit\ndef propagate(")


def test_triton_module_loads_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    import errno

    from spikescan.compiler.backends import triton_codegen as tc

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tc, "_LOADED", {})
    monkeypatch.setattr(Path, "write_text", full)
    root = tmp_path / "full"
    mod = tc.load_module(model_ir("CubaLIF"), "f64", root=root)
    assert mod.SPIKING and not list(root.glob("*.py"))
