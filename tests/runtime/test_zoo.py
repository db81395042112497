"""The model zoo (models/zoo/): every checkpoint evaluates to exactly the test accuracy that
models/zoo/zoo.json records, and models/zoo/README.md shows the same figures.

zoo.json is the one source of truth (accuracy as `spikescan eval` prints it, test-set size,
checkpoint size and sha256, the training command); README.md is checked against it here. The
digits checkpoint goes through the real command line (`python -m spikescan eval`, a subprocess);
the others call the same `spikescan.cli.main` in-process to save the interpreter start-up.
N-MNIST reads the shared recordings in <repo>/../shared/data and is skipped when they are absent.
"""

import hashlib
import json
import subprocess
import sys

import pytest

from repo_paths import REPO

ZOO = REPO / "models" / "zoo"
DATA_ROOT = REPO.parent / "shared" / "data"
with open(ZOO / "zoo.json") as _f:
    INDEX = json.load(_f)
ENTRIES = {e["name"]: e for e in INDEX["models"]}
VIA_SUBPROCESS = "digits"


def _eval_argv(entry):
    argv = ["eval", str(ZOO / entry["checkpoint"]), "--split", entry["split"], "--no-progress"]
    if entry["data_root"] == "shared":
        if not (DATA_ROOT / "NMNIST" / "Train").is_dir():
            pytest.skip(f"{entry['name']}: the shared N-MNIST recordings ({DATA_ROOT}/NMNIST/Train) are absent")
        argv += ["--data-root", str(DATA_ROOT)]
    return argv


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON result in the output of spikescan eval:\n{stdout}"
    return json.loads(lines[-1])


def _check(entry, res):
    assert res["n"] == entry["n"] and res["split"] == entry["split"] and res["data"] == entry["data"]
    assert res["accuracy"] == entry["accuracy"], (
        f"{entry['name']}: spikescan eval gives {res['accuracy']!r}, models/zoo/zoo.json and README.md say "
        f"{entry['accuracy']!r}")
    assert res["overflow"] == 0


def test_zoo_lists_the_three_models():
    assert set(ENTRIES) == {"yinyang", "digits", "nmnist_small"}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_checkpoint_file_matches_index(name):
    """The file is the one the figures were measured on (size, sha256), small, loadable, and
    the .snn copies next to it are the sources embedded in it."""
    from spikescan.runtime.checkpoint import load_checkpoint

    e = ENTRIES[name]
    path = ZOO / e["checkpoint"]
    data = path.read_bytes()
    assert len(data) == e["size_bytes"] and len(data) < 2_000_000
    assert hashlib.sha256(data).hexdigest() == e["sha256"], f"{path} changed: re-measure it and update zoo.json"
    ck = load_checkpoint(path)
    assert ck["config"]["data"] == e["data"] and ck["seed"] == e["seed"] and ck["epoch"] == e["best_epoch"]
    embedded = {p.rsplit("/", 1)[-1]: text for p, text in ck["model_sources"].items()}
    assert sorted(embedded) == sorted(e["sources"])
    for fname, text in embedded.items():
        assert (path.parent / fname).read_text() == text, f"{path.parent / fname} differs from the source in {path}"


def test_readme_shows_the_index():
    """README.md repeats zoo.json's figures verbatim: accuracy, size, commands."""
    readme = (ZOO / "README.md").read_text()
    assert INDEX["commit"] in readme
    for e in INDEX["models"]:
        for text in (repr(e["accuracy"]), f"{e['size_bytes']:,}", e["train_command"], e["eval_command"],
                     e["checkpoint"]):
            assert text in readme, f"models/zoo/README.md lacks {text!r} ({e['name']})"


def test_eval_cli_reproduces_accuracy(tmp_path):
    """`spikescan eval` as a user runs it (a fresh process, another working directory)."""
    e = ENTRIES[VIA_SUBPROCESS]
    proc = subprocess.run([sys.executable, "-m", "spikescan", *_eval_argv(e)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check(e, _result(proc.stdout))


@pytest.mark.parametrize("name", sorted(set(ENTRIES) - {VIA_SUBPROCESS}))
def test_eval_reproduces_accuracy(name, capsys, monkeypatch, tmp_path):
    from spikescan.cli import main

    e = ENTRIES[name]
    argv = _eval_argv(e)
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    _check(e, _result(out))
