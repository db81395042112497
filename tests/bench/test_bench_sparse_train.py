"""bench/sparse_train.py --quick: every record kind, autograd = finite differences on one branch,
the loss decreasing (slow: a few training epochs)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sparse_train_bench_quick_smoke(tmp_path):
    out = tmp_path / "sparse_train.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "sparse_train.py"), "--quick", "--epochs", "3",
                        "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert {rec["kind"] for rec in recs} >= {"setup", "timing", "gradcheck", "epoch", "fit"}
    gc = next(rec for rec in recs if rec["kind"] == "gradcheck")
    assert gc["same_event_order"] and gc["rel_error"] < 1e-5
    fit = next(rec for rec in recs if rec["kind"] == "fit")
    assert fit["last_loss"] < fit["first_loss"]
