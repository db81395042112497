"""bench/sparse.py --quick at smoke sizes: every record kind, a positive speedup over the O(N) loop
measured in the same run, memory per neuron and per synapse, and the log-log fit."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sparse_bench_quick_smoke(tmp_path):
    out = tmp_path / "sparse.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "sparse.py"), "--quick", "--sizes", "500,1000",
                        "--reference-sizes", "500", "--k", "10", "--spikes", "3000", "--reference-cap-s", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    kinds = {rec["kind"] for rec in recs}
    assert kinds >= {"compile", "build", "run", "reference", "ratio", "fit", "target"}
    assert all(rec["bench"] == "sparse" and rec["quick"] for rec in recs)
    runs = [rec for rec in recs if rec["kind"] == "run"]
    assert [rec["neurons"] for rec in runs] == [500, 1000] and all(rec["spikes"] == 3000 for rec in runs)
    build = [rec for rec in recs if rec["kind"] == "build"]
    assert all(rec["bytes_per_synapse"] == 4.0 and rec["state_bytes_per_neuron"] > 0 for rec in build)
    assert all(rec["synapses"] == rec["neurons"] * 10 for rec in build)
    ratio = next(rec for rec in recs if rec["kind"] == "ratio")
    assert ratio["neurons"] == 500 and ratio["speedup"] > 1
    fit = next(rec for rec in recs if rec["kind"] == "fit")
    assert fit["loglog_slope"] is not None and fit["neurons"] == [500, 1000]
