"""compile_model / load_compiled / the build cache / `spikescan compile` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spikescan.cli import main
from spikescan.compiler.driver import compile_model, load_compiled, load_model
from spikescan.dsl import parser as dsl_parser
from spikescan.dsl.diagnostics import DiagnosticError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def shd_copy(tmp_path, models_dir):
    src = tmp_path / "m"
    src.mkdir()
    for f in ("shd.snn", "cuba_lif.snn", "li_readout.snn"):
        shutil.copy(models_dir / f, src / f)
    return src / "shd.snn"


def test_load_model_writes_nothing(tmp_path, models_dir):
    m = load_model(models_dir / "cuba_lif.snn")
    assert m.build_dir is None and m.manifest is None
    assert not (tmp_path / "cache").exists()


def test_compile_writes_self_contained_build_and_hits_cache(shd_copy, tmp_path):
    log = []
    m = compile_model(shd_copy, emit=("triton",), progress=log.append)
    b = m.build_dir
    assert b.parent == tmp_path / "cache" and not m.cache_hit
    assert (b / "manifest.json").is_file() and (b / "CubaLIF_triton.py").is_file() and (b / "LI_triton.py").is_file()
    assert sorted(p.name for p in (b / "src").iterdir()) == ["cuba_lif.snn", "li_readout.snn", "shd.snn"]
    man = json.loads((b / "manifest.json").read_text())
    assert man["hash"] == b.name and man["source"] == "shd.snn" and man["dtype"] == "f64"
    cl = man["neurons"]["CubaLIF"]
    assert cl["state"] == ["i", "v"] and cl["solver"] == "peak2" and cl["reset_invariant"] == ["i"]
    assert [p["name"] for p in cl["params"]] == ["tau_m", "tau_s", "v_th", "v_reset"]
    assert cl["params"][0]["default"] == 20.0 and cl["params"][0]["dim"] == 1
    assert cl["kernels"] == {"triton": "CubaLIF_triton.py"}
    assert set(man["hashes"]) == {"CubaLIF_triton.py", "LI_triton.py"}
    net = man["networks"]["shd"]
    assert net["inputs"] == {"x": 700} and [l["name"] for l in net["layers"]] == ["hidden", "out"]
    assert net["readout"]["kind"] == "max_potential"
    # second compile: a cache hit that says so, same folder, no rewrite
    mtime = (b / "manifest.json").stat().st_mtime_ns
    log2 = []
    m2 = compile_model(shd_copy, emit=("triton",), progress=log2.append)
    assert m2.cache_hit and m2.build_dir == b and any("cache hit" in s for s in log2)
    assert (b / "manifest.json").stat().st_mtime_ns == mtime
    # --force rebuilds
    m3 = compile_model(shd_copy, emit=("triton",), force=True, progress=None)
    assert not m3.cache_hit and m3.build_dir == b
    # the folder is self-contained: delete the originals and read it back
    shutil.rmtree(shd_copy.parent)
    back = load_compiled(b)
    assert set(back.neurons) == {"CubaLIF", "LI"} and back.manifest["hash"] == b.name
    assert back.neurons["CubaLIF"].Phi == m.neurons["CubaLIF"].Phi


def test_hash_depends_on_imports_options_and_text(shd_copy, tmp_path):
    a = compile_model(shd_copy, emit=(), progress=None).build_dir
    assert compile_model(shd_copy, emit=(), dtype="f32", progress=None).build_dir != a
    out = compile_model(shd_copy, emit=(), out_dir=tmp_path / "elsewhere", progress=None).build_dir
    assert out.parent == tmp_path / "elsewhere" and out.name == a.name
    imp = shd_copy.parent / "li_readout.snn"
    imp.write_text(imp.read_text().replace("tau_m = 20 ms", "tau_m = 21 ms"))
    assert compile_model(shd_copy, emit=(), progress=None).build_dir != a  # imported file changed


def test_cache_hit_neither_analyses_nor_runs_a_backend(shd_copy, monkeypatch):
    import spikescan.compiler.analysis as an
    import spikescan.compiler.backends.triton.codegen as tc
    import spikescan.compiler.driver as drv

    cold = compile_model(shd_copy, emit=("triton",), progress=None)
    calls = {"analysis": 0, "triton": 0}
    real_analyze, real_generate = an.analyze_neuron, tc.generate

    def counting_analyze(n):
        calls["analysis"] += 1
        return real_analyze(n)

    def counting_generate(ir, dtype):
        calls["triton"] += 1
        return real_generate(ir, dtype)

    monkeypatch.setattr(an, "analyze_neuron", counting_analyze)
    monkeypatch.setattr(tc, "generate", counting_generate)
    monkeypatch.setattr(drv, "_ANALYSIS_CACHE", {})
    hit = compile_model(shd_copy, emit=("triton",), progress=None)
    assert hit.cache_hit and hit.build_dir == cold.build_dir and calls == {"analysis": 0, "triton": 0}
    # the model analyses on first use and gives the same IR as the cold compile
    assert hit.neurons["CubaLIF"].Phi == cold.neurons["CubaLIF"].Phi and calls["analysis"] == 2
    assert [l.name for l in hit.networks["shd"].layers] == ["hidden", "out"]
    forced = compile_model(shd_copy, emit=("triton",), force=True, progress=None)
    assert not forced.cache_hit and calls["triton"] == 2  # CubaLIF and LI regenerated


@pytest.mark.parametrize("which", ["main", "imported"])
def test_compile_reads_sources_through_the_dsl_guards(shd_copy, which, monkeypatch, tmp_path):
    target = shd_copy if which == "main" else shd_copy.parent / "li_readout.snn"
    target.write_bytes(target.read_bytes() + b"\n# caf\xe9\n")  # latin-1, not UTF-8
    with pytest.raises(DiagnosticError) as exc:
        compile_model(shd_copy, emit=(), progress=None)
    assert [d.code for d in exc.value.diagnostics] == ["E004"] and "UTF-8" in str(exc.value)
    target.write_text(target.read_text(encoding="latin-1"), encoding="utf-8")
    monkeypatch.setattr(dsl_parser, "MAX_BYTES", target.stat().st_size - 1)
    with pytest.raises(DiagnosticError) as exc:
        compile_model(shd_copy, emit=(), progress=None)
    assert "E006" in [d.code for d in exc.value.diagnostics]
    assert not (tmp_path / "cache").exists()  # refused before the cache is touched


def test_cli_compile_ok_and_cache_hit(shd_copy, capsys, tmp_path):
    out = tmp_path / "o"
    assert main(["compile", str(shd_copy), "-o", str(out), "--emit", "triton"]) == 0
    first = capsys.readouterr().out
    assert "build folder:" in first and "cache hit" not in first
    assert main(["compile", str(shd_copy), "-o", str(out), "--emit", "triton"]) == 0
    second = capsys.readouterr().out
    assert "cache hit" in second and "(cache hit)" in second.splitlines()[-1] and "wrote" not in second


def test_cli_explain(models_dir, capsys, tmp_path):
    assert main(["compile", str(models_dir / "yinyang.snn"), "-o", str(tmp_path), "--emit", "", "--explain"]) == 0
    text = capsys.readouterr().out
    for needle in ("neuron CubaLIF", "A =", "Phi[v,i] =", "exprel", "reset-invariant state: i",
                   "isolation chain", "solver: peak2", "no-crossing test", "network yinyang",
                   "layer hidden[120] = CubaLIF", "readout out: first_spike"):
        assert needle in text, needle


def test_cli_errors_exit_1_with_diagnostics(tmp_path, capsys):
    bad = tmp_path / "osc.snn"
    shutil.copy(FIXTURES / "E060.snn", bad)
    assert main(["compile", str(bad), "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "error[E060]" in err and "osc.snn:6:" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
    assert main(["compile", str(tmp_path / "missing.snn")]) == 1
    assert "no such file" in capsys.readouterr().err
    syntax = tmp_path / "syntax.snn"
    syntax.write_text("neuron X { params { tau = } }\n")
    assert main(["compile", str(syntax)]) == 1
    assert "error[E0" in capsys.readouterr().err


def test_mlir_artifact_written_and_listed(models_dir, tmp_path):
    m = compile_model(models_dir / "cuba_lif.snn", emit=("mlir",), dtype="f32", progress=None)
    k = m.manifest["neurons"]["CubaLIF"]["kernels"]
    assert k == {"mlir": "CubaLIF.f32.mlir"}
    text = (m.build_dir / "CubaLIF.f32.mlir").read_text()
    assert "func.func" in text and "f32" in text
    assert m.manifest["hashes"]["CubaLIF.f32.mlir"]


@pytest.mark.slow
def test_full_compile_all_backends(models_dir):
    m = compile_model(models_dir / "alpha_lif.snn", progress=None)
    assert set(m.manifest["neurons"]["AlphaLIF"]["kernels"]) == {"mlir", "triton", "cpu"}


# ------------------------------------------------------------------ a hit is verified (issue 11 item 2)


def _cold(shd_copy):
    m = compile_model(shd_copy, emit=("triton",), progress=None)
    assert not m.cache_hit
    return m.build_dir


@pytest.mark.parametrize("tamper", ["artifact", "manifest_field", "manifest_truncated", "manifest_empty",
                                    "manifest_not_object", "src_copy", "extra_file", "missing_file"])
def test_cache_hit_rebuilds_a_tampered_or_corrupt_folder(shd_copy, tamper):
    b = _cold(shd_copy)
    art, man = b / "CubaLIF_triton.py", b / "manifest.json"
    good_art, good_man = art.read_bytes(), man.read_bytes()
    if tamper == "artifact":
        art.write_text(art.read_text().replace("import triton", "import os; os.system('x'); import triton", 1))
    elif tamper == "manifest_field":
        data = json.loads(good_man)
        data["neurons"]["CubaLIF"]["state"] = ["x", "y"]
        man.write_text(json.dumps(data, indent=2))
    elif tamper == "manifest_truncated":
        man.write_bytes(good_man[: len(good_man) // 2])
    elif tamper == "manifest_empty":
        man.write_bytes(b"")
    elif tamper == "manifest_not_object":
        man.write_text("[1, 2]")
    elif tamper == "src_copy":
        (b / "src" / "shd.snn").write_text("# edited\n")
    elif tamper == "extra_file":
        (b / "evil.py").write_text("print('hi')\n")
    else:
        (b / "LI_triton.py").unlink()
    log = []
    m = compile_model(shd_copy, emit=("triton",), progress=log.append)
    assert not m.cache_hit and m.build_dir == b
    assert any("is not valid" in s and "rebuilding" in s for s in log), log
    assert art.read_bytes() == good_art and not (b / "evil.py").exists() and (b / "LI_triton.py").is_file()
    assert json.loads(man.read_bytes())["neurons"]["CubaLIF"]["state"] == ["i", "v"]
    assert compile_model(shd_copy, emit=("triton",), progress=None).cache_hit  # and now it hits again
    assert [p.name for p in b.parent.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_cli_compile_with_truncated_manifest_rebuilds(shd_copy, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compile", str(shd_copy), "-o", str(out), "--emit", "triton"]) == 0
    [b] = out.iterdir()
    (b / "manifest.json").write_text('{"hash": "')
    capsys.readouterr()
    assert main(["compile", str(shd_copy), "-o", str(out), "--emit", "triton"]) == 0
    text = capsys.readouterr()
    assert "not valid JSON" in text.out and "Traceback" not in text.err + text.out
    assert json.loads((b / "manifest.json").read_text())["hash"] == b.name


def test_load_compiled_refuses_a_tampered_folder(shd_copy):
    from spikescan.compiler.errors import BuildFolderError

    b = _cold(shd_copy)
    assert load_compiled(b).manifest["hash"] == b.name
    (b / "CubaLIF_triton.py").write_text("# edited\n")
    with pytest.raises(BuildFolderError, match="CubaLIF_triton.py was modified"):
        load_compiled(b)
    (b / "manifest.json").write_text("{")
    with pytest.raises(BuildFolderError, match="not valid JSON"):
        load_compiled(b)


# ------------------------------------------------------------------ folders left by killed compiles


def test_stale_tmp_folders_of_killed_compiles_are_cleaned(shd_copy, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from spikescan.compiler import build_cache as bc

    root = tmp_path / "cache"
    root.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    now_ns = time.time_ns()
    hour, day = 3600, 25 * 3600

    def leftover(name, age_s):
        p = root / name
        (p / "src").mkdir(parents=True)
        (p / "src" / "x.snn").write_text("half a build\n")
        os.utime(p, (time.time() - age_s,) * 2)
        return p

    key = "0123456789abcdef0123"
    ns_of = lambda age: now_ns - age * 10**9  # noqa: E731
    killed = leftover(f".{key}.tmp-{bc._HOST}-{dead}-{ns_of(hour)}", hour)  # dead process, an hour old
    fresh_dead = leftover(f".{key}.tmp-{bc._HOST}-{dead}-{ns_of(10)}", 10)  # may still be starting up
    live = leftover(f".{key}.tmp-{bc._HOST}-{os.getpid()}-{ns_of(hour)}", hour)  # a running compile
    other_host = leftover(f".{key}.tmp-otherhost-{dead}-{ns_of(hour)}", hour)  # cannot tell: keep
    ancient = leftover(f".{key}.tmp-otherhost-{os.getpid()}-{ns_of(day)}", day)  # over a day: stale
    legacy_old = leftover(f".{key}.tmp-{dead}-{ns_of(day)}", day)  # the old naming
    legacy_new = leftover(f".{key}.tmp-{dead}-{ns_of(hour)}", hour)
    user_dir = leftover("my-notes.tmp-1-2", day)  # not ours: never touched
    compile_model(shd_copy, emit=(), progress=None)
    gone = {p for p in (killed, fresh_dead, live, other_host, ancient, legacy_old, legacy_new, user_dir)
            if not p.exists()}
    assert gone == {killed, ancient, legacy_old}


# ------------------------------------------------------------------ each neuron compiles once (item 8)


def test_each_neuron_compiles_once_however_many_layers_use_it(tmp_path, models_dir, monkeypatch):
    import spikescan.compiler.driver as drv

    shutil.copy(models_dir / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    layers = "\n".join(f"    layer l{i}[4] = CubaLIF() <- dense({'x' if i == 0 else f'l{i - 1}'})"
                       for i in range(10))
    (tmp_path / "deep.snn").write_text(f'from "cuba_lif.snn" import CubaLIF\nnetwork deep {{\n'
                                       f"    input x[3]\n{layers}\n    readout l9: first_spike\n}}\n")
    calls, real = [], drv._emit_one
    monkeypatch.setattr(drv, "_emit_one", lambda ir, backend, *rest: calls.append((ir.name, backend))
                        or real(ir, backend, *rest))
    log = []
    m = compile_model(tmp_path / "deep.snn", emit=("mlir", "triton"), progress=log.append)
    assert calls == [("CubaLIF", "mlir"), ("CubaLIF", "triton")]
    assert [s for s in log if s.startswith("  ")] == ["  CubaLIF: mlir", "  CubaLIF: triton"]
    assert len(m.manifest["networks"]["deep"]["layers"]) == 10


def test_cli_compile_prints_each_backend_once_for_yinyang(models_dir, tmp_path, capsys):
    assert main(["compile", str(models_dir / "yinyang.snn"), "-o", str(tmp_path), "--emit", "mlir,triton"]) == 0
    steps = [s for s in capsys.readouterr().out.splitlines() if s.startswith("  ")]
    assert steps == ["  CubaLIF: mlir", "  CubaLIF: triton"]


# ------------------------------------------------------------------ unwritable -o (issue 11 item 7)


def _fail_with(errno_code, message):
    def fail(self, *a, **k):
        raise OSError(errno_code, message, str(self))
    return fail


@pytest.mark.parametrize("case", ["file", "file_parent", "read_only", "full_disk_mkdir", "full_disk_write"])
def test_cli_compile_unwritable_out_is_one_line(shd_copy, tmp_path, capsys, monkeypatch, case):
    import errno

    out = tmp_path / "o"
    if case == "file":
        out.write_text("not a folder\n")
    elif case == "file_parent":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "o"
    elif case == "read_only":  # chmod does not stop root: refuse the way a read-only folder does
        out.mkdir()
        monkeypatch.setattr(Path, "mkdir", _fail_with(errno.EACCES, "Permission denied"))
    elif case == "full_disk_mkdir":
        monkeypatch.setattr(Path, "mkdir", _fail_with(errno.ENOSPC, "No space left on device"))
    else:
        monkeypatch.setattr(Path, "write_bytes", _fail_with(errno.ENOSPC, "No space left on device"))
    rc = main(["compile", str(shd_copy), "-o", str(out), "--emit", "triton"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    reason = {"file": "it is a file, not a folder", "file_parent": "part of the path is a file",
              "read_only": "Permission denied"}.get(case, "No space left on device")
    assert err.startswith(f"error: cannot write the build folder under '{out}': {reason}"), err
    if case == "full_disk_write":
        assert list(out.iterdir()) == []  # the half-written temporary folder is removed


def test_help_says_where_the_build_goes(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "DIR/<hash>/" in text and "$SPIKESCAN_CACHE" in text
