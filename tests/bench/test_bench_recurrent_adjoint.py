"""Smoke test of bench/recurrent_adjoint.py --quick: one JSON line per backward path (the
event-outer one ran, the replay did not: the script checks) and the gradient difference."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_recurrent_adjoint_bench_quick():
    r = subprocess.run([sys.executable, str(REPO / "bench" / "recurrent_adjoint.py"), "--quick", "--repeats", "1"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.strip().startswith("{")]
    paths = {x["path"]: x for x in recs if "path" in x}
    assert set(paths) == {"event_outer", "replay"}
    for x in paths.values():
        assert x["backward_s"] > 0 and x["spikes"] > 0 and (x["batch"], x["hidden"]) == (2, 64)
    diff = [x["max_rel_grad_diff"] for x in recs if "max_rel_grad_diff" in x][0]
    assert set(diff) == {"times", "weight", "w_rec"} and max(diff.values()) < 1e-12
