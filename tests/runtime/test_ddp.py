"""Data-parallel training (issue 16 item 4): `spikescan train --ddp` under torchrun with 2 CPU
processes (gloo) gives the single-process run with the same global batch: the same metrics and
weights to float rounding, including a last batch of one sample (an empty shard on rank 1);
rank 0 alone writes and prints; --resume continues a DDP run exactly."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
# 33 training samples in batches of 16: 16, 16, 1 (rank 1 gets nothing of the last batch)
ARGS = [str(ROOT / "models" / "yinyang.snn"), "--data", "yinyang", "--limit-train", "33", "--limit-eval", "21",
        "--batch-size", "16", "--no-progress", "--threads", "1", "--device", "cpu", "--engine", "sequential-cpu"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "-m", "spikescan", "train", *ARGS, "--out", str(out), "--ddp", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=out.parent, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _close(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy", "test_accuracy",
                  "spikes_per_neuron"):
            if k in x:
                if isinstance(x[k], dict):
                    assert x[k].keys() == y[k].keys()
                    for n in x[k]:  # rates are summed in float32 (train_report.layer_rates)
                        assert abs(x[k][n] - y[k][n]) <= 1e-6 * max(1.0, abs(x[k][n])), (k, n, x[k], y[k])
                else:
                    assert abs(x[k] - y[k]) <= 1e-9 * max(1.0, abs(x[k])), (k, x[k], y[k])


def _weights(out: Path) -> dict:
    return torch.load(out / "last.pt", weights_only=True, map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from spikescan.cli import main

    base = tmp_path_factory.mktemp("ddp")
    single, ddp = base / "single", base / "ddp"
    assert main(["train", *ARGS, "--epochs", "2", "--out", str(single), "-q"]) == 0
    res = _torchrun(ddp, "--epochs", "2")
    return single, ddp, res


def test_ddp_equals_single_process(runs):
    single, ddp, res = runs
    a, b = _records(single), _records(ddp)
    _close(a, b)
    assert a[-1]["final"] and b[-1]["final"]
    wa, wb = _weights(single), _weights(ddp)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert float((wa[k] - wb[k]).abs().max()) <= 1e-10 * max(1.0, float(wa[k].abs().max())), k
    # rank 0 alone reports and writes
    assert res.stdout.count("test accuracy:") == 1, res.stdout
    assert res.stderr.count("epoch 2/2:") == 1, res.stderr
    assert sorted(p.name for p in ddp.iterdir() if not p.name.startswith(".")) == \
        ["best.pt", "curves.png", "last.pt", "metrics.jsonl"]
    ck = torch.load(ddp / "last.pt", weights_only=True)
    assert ck["config"]["processes"] == 2


@pytest.mark.slow
def test_ddp_resume_continues_exactly(runs, tmp_path):
    single, _, _ = runs
    out = tmp_path / "resumed"
    _torchrun(out, "--epochs", "1")
    _torchrun(out, "--epochs", "2", "--resume")
    _close(_records(single), _records(out))
    wa, wb = _weights(single), _weights(out)
    for k in wa:
        assert float((wa[k] - wb[k]).abs().max()) <= 1e-10 * max(1.0, float(wa[k].abs().max())), k
