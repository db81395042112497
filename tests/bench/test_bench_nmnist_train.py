"""Smoke test of bench/nmnist_train.py on a few real N-MNIST recordings: one JSON line per
(variant, epoch) with the throughput fields, the auto variant's record, and no spike-cap re-runs
for the auto variant (the explicit one's output layer re-runs most samples)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_nmnist_train_bench_smoke(tmp_path):
    from spikescan.runtime.data import DatasetNotFound, get_dataset

    try:
        get_dataset("nmnist", "train")
    except DatasetNotFound:
        pytest.skip("the shared N-MNIST recordings are not available")
    out = tmp_path / "nm.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "nmnist_train.py"), "--quick", "--samples", "16",
                        "--eval", "8", "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert [(x["variant"], x["epoch"]) for x in recs] == [("explicit", 1), ("auto", 1)]
    for x in recs:
        assert x["bench"] == "nmnist_train" and x["samples"] == 16 and x["samples_per_s"] > 0
        assert set(x["spikes_per_neuron"]) == {"hidden", "out"}
    explicit, auto = recs
    assert explicit["auto_init"] is None and explicit["spikes_per_neuron"]["out"] > 100  # the old init's output
    assert auto["spike_cap_reruns"] == 0 and auto["auto_init_s"] > 0
    assert [r["layer"] for r in auto["auto_init"]["layers"]] == ["hidden", "out"]
    assert all(r["converged"] for r in auto["auto_init"]["layers"])
