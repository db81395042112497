"""`spikescan train` / `eval`: every expected user error is one line on stderr (a .snn
diagnostic as `check` prints it) and a non-zero exit, never a traceback; a genuine bug prints
a short "internal error" line, and its traceback only with SPIKESCAN_DEBUG=1."""

import errno
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = """from "cuba_lif.snn" import CubaLIF

network tiny {
    input  x[5]
    layer  hidden[12] = CubaLIF() <- dense(x, init = normal(1.5, 0.8))
    layer  out[3]     = CubaLIF() <- dense(hidden, init = normal(0.5, 0.4))
    readout out: first_spike
}
"""
FAST = ["--data", "yinyang", "--epochs", "1", "--batch-size", "16", "--limit-train", "16", "--limit-eval", "16",
        "--no-progress", "--engine", "torch"]


@pytest.fixture()
def tiny(tmp_path):
    shutil.copy(ROOT / "models" / "cuba_lif.snn", tmp_path / "cuba_lif.snn")
    (tmp_path / "tiny.snn").write_text(TINY)
    return tmp_path / "tiny.snn"


def _cli(capsys, *argv):
    from spikescan.cli import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line(rc, err, *needles):
    assert rc == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def test_train_on_a_bad_snn_prints_the_diagnostic(tmp_path, capsys):
    bad = tmp_path / "bad.snn"
    bad.write_text("network n {\n  input x[2]\n  layer h[2] = NoSuchNeuron() <- dense(x)\n  readout h: first_spike\n}\n")
    rc, out, err = _cli(capsys, "train", bad, *FAST, "--out", tmp_path / "run")
    assert rc == 1 and "Traceback" not in err
    assert "bad.snn:3:" in err and "error[E" in err and "^" in err  # file:line:col, code, caret
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needles", [
    (["--data-opt", "foo=1"], ["--data-opt", "'foo'"]),
    (["--loss", '{"bogus": 1}'], ["--loss", "'bogus'", "known: tau"]),
    (["--loss", '{"tau": "x"}'], ["--loss", "tau must be a finite number"]),
    (["--loss", "[1, 2]"], ["--loss must be a JSON object"]),
    (["--loss", "{oops"], ["--loss is not valid JSON"]),
    (["--threads", "-1"], ["--threads must be an integer >= 0"]),
    (["--engine", "bogus"], ["unknown engine 'bogus'", "sequential-cpu"]),
    (["--engine", "triton-scan"], ["'triton-scan' runs on CUDA tensors", "--engine auto"]),
    (["--epochs", "0"], ["--epochs must be an integer > 0"]),
    (["--batch-size", "-3"], ["--batch-size must be an integer > 0"]),
    (["--clip-grad", "nan"], ["--clip-grad must be a finite number > 0"]),
    (["--max-spikes", "0"], ["--max-spikes must be an integer > 0"]),
    (["--limit-train", "0"], ["--limit-train must be an integer > 0"]),
])
def test_bad_options_are_one_line(tiny, tmp_path, capsys, monkeypatch, args, needles):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rc, out, err = _cli(capsys, "train", tiny, *FAST, "--out", tmp_path / "run", *args)
    _one_line(rc, err, *needles)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_out_pointing_at_a_file(tiny, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    rc, out, err = _cli(capsys, "train", tiny, *FAST, "--out", f)
    _one_line(rc, err, str(f))
    rc, out, err = _cli(capsys, "train", tiny, *FAST, "--out", f / "sub")
    _one_line(rc, err, "a-file")
    assert f.read_text() == "x"


def test_out_on_a_read_only_filesystem(tiny, tmp_path, capsys, monkeypatch):
    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # what a read-only mount answers
    rc, out, err = _cli(capsys, "train", tiny, *FAST, "--out", tmp_path / "ro")
    _one_line(rc, err, "cannot write to the output folder", "Read-only file system")


def test_full_filesystem_keeps_the_last_checkpoint(tiny, tmp_path, capsys, monkeypatch):
    from spikescan.runtime import checkpoint as ckpt

    run = tmp_path / "run"
    assert _cli(capsys, "train", tiny, *FAST, "--out", run)[0] == 0
    before = (run / "last.pt").read_bytes()

    def full(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    rc, out, err = _cli(capsys, "train", tiny, *FAST, "--epochs", "2", "--resume", "--out", run)
    last = err.strip().splitlines()[-1]  # after the "resuming from" notes
    _one_line(rc, last + "\n", "cannot write checkpoint", "No space left on device", "is unchanged")
    assert "Traceback" not in err
    assert (run / "last.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.suffix == ".tmp"]


def test_eval_channel_mismatch_is_as_clear_as_train(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli(capsys, "train", tiny, *FAST, "--out", run)[0] == 0
    rc, out, err = _cli(capsys, "eval", run / "best.pt", "--data", "digits", "--limit", "8")
    _one_line(rc, err, "input channels", "takes 5", "--data-opt")


@pytest.mark.parametrize("args, needles", [
    (["--engine", "bogus"], ["unknown engine 'bogus'"]),
    (["--limit", "-1"], ["must be an integer > 0"]),
    (["--batch-size", "0"], ["--batch-size must be an integer > 0"]),
])
def test_eval_bad_options(tiny, tmp_path, capsys, args, needles):
    run = tmp_path / "run"
    assert _cli(capsys, "train", tiny, *FAST, "--out", run)[0] == 0
    rc, out, err = _cli(capsys, "eval", run / "best.pt", "--data", "yinyang", *args)
    _one_line(rc, err, *needles)


def test_internal_errors_are_short_unless_debugging(capsys, monkeypatch):
    from spikescan.runtime import cli_eval

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli_eval, "run", bug)
    monkeypatch.delenv("SPIKESCAN_DEBUG", raising=False)
    rc, out, err = _cli(capsys, "eval", "x.pt")
    assert rc == 70 and err.startswith("internal error: KeyError") and "SPIKESCAN_DEBUG=1" in err
    assert "Traceback" not in err
    monkeypatch.setenv("SPIKESCAN_DEBUG", "1")
    rc, out, err = _cli(capsys, "eval", "x.pt")
    assert rc == 70 and "Traceback" in err and "a bug" in err
