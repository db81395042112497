"""Untrusted files and imports (issue 11 items 3 and 7): imports stay inside the search path,
only .snn files are read as imports, only regular files are read at all, and nothing about a
foreign file's content reaches a diagnostic."""

import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

import spikescan.dsl as dsl
from spikescan.cli import main
from spikescan.dsl.diagnostics import render_all

ROOT = Path(__file__).resolve().parents[2]
CUBA = (ROOT / "models" / "cuba_lif.snn").read_text()
NET = "network n {\n  input x[2]\n  layer h[3] = CubaLIF() <- dense(x)\n  readout h: spike_count\n}\n"


@contextmanager
def deadline(seconds=10):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""
    def boom(*_):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _codes(path):
    with deadline():
        _, diags = dsl.check_file(path)
    return [d.code for d in diags], diags


def _model(folder: Path, imp: str, name="main.snn") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(f'from "{imp}" import CubaLIF\n' + NET)
    return p


@pytest.mark.parametrize("imp,code", [("/etc/passwd", "E070"), ("/proc/self/environ", "E070"),
                                      ("/abs/lib.snn", "E070"), ("~/lib.snn", "E070"),
                                      ("lib.txt", "E071"), ("lib", "E071"), (".snn", "E071"),
                                      ("a\x00b.snn", "E072"), ("a" * 300 + ".snn", "E072"),
                                      ("b/" * 2100 + "x.snn", "E072")])
def test_refused_import_strings(tmp_path, imp, code):
    codes, diags = _codes(_model(tmp_path, imp))
    assert codes == [code]  # and the layer using CubaLIF is no follow-on E041
    assert diags[0].span.line == 1 and diags[0].hint


def test_environment_never_echoed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKESCAN_SECRET_MARKER", "hunter2-do-not-print")
    (tmp_path / "env.snn").symlink_to("/proc/self/environ")
    (tmp_path / "pw.snn").symlink_to("/etc/passwd")
    for imp in ("/proc/self/environ", "env.snn", "pw.snn", "../" * 20 + "etc/passwd"):
        p = _model(tmp_path, imp)
        assert main(["check", str(p)]) == 1
        err = capsys.readouterr().err
        assert "hunter2" not in err and "root:" not in err and "Traceback" not in err
        assert "error[E07" in err


def test_dotdot_and_symlinks_outside_the_search_path(tmp_path):
    (tmp_path / "lib.snn").write_text(CUBA)
    assert _codes(_model(tmp_path / "proj", "../lib.snn"))[0] == ["E070"]
    (tmp_path / "proj" / "link.snn").symlink_to(tmp_path / "lib.snn")
    assert _codes(_model(tmp_path / "proj", "link.snn"))[0] == ["E070"]
    (tmp_path / "proj" / "sub").mkdir()
    (tmp_path / "proj" / "sub" / "lib.snn").write_text(CUBA)
    assert _codes(_model(tmp_path / "proj", "sub/../sub/lib.snn"))[0] == []  # stays inside
    # a .snn name pointing at a non-.snn file inside the folder: not read either
    (tmp_path / "proj" / "notes.txt").write_text("secret line\n")
    (tmp_path / "proj" / "notes.snn").symlink_to(tmp_path / "proj" / "notes.txt")
    codes, diags = _codes(_model(tmp_path / "proj", "notes.snn"))
    assert codes == ["E071"] and "secret" not in render_all(diags)


def test_files_below_import_parent_folders_inside_the_root(tmp_path):
    """A file in lib/ may import `../x.snn` while that stays inside the main file's folder."""
    (tmp_path / "cuba.snn").write_text(CUBA)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mid.snn").write_text('import "../cuba.snn"\n')
    assert _codes(_model(tmp_path, "lib/mid.snn"))[0] == []


def test_spikescan_path(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "cuba.snn").write_text(CUBA)
    main_file = _model(tmp_path / "proj", "cuba.snn")
    assert _codes(main_file)[0] == ["E007"]
    monkeypatch.setenv("SPIKESCAN_PATH", f"/nonexistent:{shared}")
    codes, _ = _codes(main_file)
    assert codes == []
    module = dsl.load(main_file)
    assert "CubaLIF" in module.visible_neurons
    # a library file cannot climb out of its own root either
    (tmp_path / "outside.snn").write_text(CUBA)
    (shared / "bad.snn").write_text('import "../outside.snn"\n')
    codes, diags = _codes(_model(tmp_path / "proj", "bad.snn", "m2.snn"))
    assert codes == ["E070", "E009"] and diags[0].span.file.endswith("bad.snn")


def test_non_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo.snn")
    assert _codes(_model(tmp_path, "fifo.snn"))[0] == ["E004"]
    assert _codes(tmp_path / "fifo.snn")[0] == ["E004"]  # as the main file too
    (tmp_path / "dir.snn").mkdir()
    assert _codes(_model(tmp_path, "dir.snn", "m2.snn"))[0] == ["E004"]
    assert _codes("/dev/zero")[0] == ["E004"]
    assert _codes("/dev/null")[0] == ["E004"]
    (tmp_path / "zero.snn").symlink_to("/dev/zero")
    assert _codes(tmp_path / "zero.snn")[0] == ["E004"]


def test_bad_main_paths(tmp_path):
    assert _codes("a\x00b.snn")[0] == ["E004"]
    assert _codes(str(tmp_path / ("a" * 300 + ".snn")))[0] == ["E004"]
    assert _codes(str(tmp_path) + "/b" * 3000 + ".snn")[0] == ["E004"]


def test_foreign_main_file_lines_are_not_echoed(tmp_path, capsys):
    p = tmp_path / "notes.txt"
    p.write_text("password = hunter2 $\n")
    assert main(["check", str(p)]) == 1
    err = capsys.readouterr().err
    assert "error[E0" in err and "hunter2" not in err and "Traceback" not in err
