"""Smoke test of bench/psn.py --quick: JSON lines with the sizes, timings and ratios against
SpikingJelly (or the agreed skip line when it is not installed)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_psn_bench_quick(tmp_path):
    out = tmp_path / "psn.jsonl"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "psn.py"), "--quick", "--T", "8", "--batch", "2",
                        "--inputs", "12", "--hidden", "6", "--k", "3", "--repeats", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert recs and all(x["bench"] == "psn" and x["quick"] and "torch" in x for x in recs)
    ours = [x for x in recs if x.get("kind") == "timing" and x["framework"] == "spikescan"]
    assert {x["neuron"] for x in ours} == {"psn", "masked_psn", "sliding_psn"}
    for x in ours:
        assert (x["T"], x["batch"], x["inputs"], x["hidden"]) == (8, 2, 12, 6) and x["median_s"] > 0
        assert x["k"] == (None if x["neuron"] == "psn" else 3)
    try:
        import spikingjelly  # noqa: F401
    except ImportError:
        assert any(x.get("skipped") and x["framework"] == "spikingjelly" for x in recs)
        return
    ratios = [x for x in recs if x.get("kind") == "ratio"]
    assert len(ratios) == 3
    for x in ratios:
        assert x["ratio"] == x["spikingjelly_s"] / x["spikescan_s"] > 0
        assert x["spike_mismatch"] < 0.05  # the same layer: at most a potential within ulps of 0 differs
