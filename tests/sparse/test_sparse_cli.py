"""`spikescan run` and spikescan.run_sparse: outputs, JSON summary, npz without pickle, errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikescan
from spikescan.cli import main

from sparse_nets import LIF, network, write

ROOT = Path(__file__).resolve().parents[2]


def test_cli_run_writes_npz_and_summary(tmp_path, capsys):
    model = write(tmp_path, network(LIF, 80, 20, 10, 0.5))
    out = tmp_path / "spikes.npz"
    assert main(["run", str(model), "--duration", "50ms", "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["neurons"] == 100 and summary["synapses"] == 100 * 10
    assert summary["spikes"] > 0 and summary["wall_s"] >= 0 and summary["spikes_per_s"] > 0
    d = np.load(out, allow_pickle=False)
    assert d["times"].shape == d["neurons"].shape == d["population"].shape == (summary["spikes"],)
    assert np.all(np.diff(d["times"]) >= 0) and d["times"].max() <= 50.0
    assert list(d["layer_names"]) == ["E", "I"]
    assert np.array_equal(d["population"], (d["neurons"] >= 80).astype(np.int64))
    # the Python API gives the same spikes
    train = spikescan.run_sparse(model, duration="50ms", seed=1)
    assert np.array_equal(train.neurons, d["neurons"]) and np.array_equal(train.times, d["times"])


@pytest.mark.parametrize("args,msg", [
    (["--duration", "5 parsec"], "invalid duration"),
    (["--duration=-1ms"], "duration"),
    (["--seed", "-2"], "seed"),
    (["--network", "nope"], "no network 'nope'"),
])
def test_cli_run_errors(tmp_path, capsys, args, msg):
    model = write(tmp_path, network(LIF, 8, 2, 2, 0.5))
    assert main(["run", str(model), "--no-progress"] + args) == 1
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_cli_run_refuses_dense_models(capsys):
    assert main(["run", str(ROOT / "models" / "yinyang.snn"), "--no-progress"]) == 1
    assert "no sparse network" in capsys.readouterr().err


def test_cli_run_example_model_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spikescan", "run", str(ROOT / "models" / "balanced_ei.snn"),
                        "--duration", "20ms", "--out", str(tmp_path / "s.npz")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["neurons"] == 1000 and summary["synapses"] == 100_000 and summary["spikes"] > 0
