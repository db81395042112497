"""bench/gpu_check.sh --tiny (issue 16 item 3): the whole GPU check runs on the CPU under
TRITON_INTERPRET=1 at tiny sizes, writes its JSON lines and the measurement file that engine
"auto" reads, and autotunes the Triton tile size; bounded to ~2 minutes."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_TINY="1", SPIKESCAN_CACHE=str(cache),
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    recs = [json.loads(line) for line in (tmp_path / "out" / "gpu_check-tiny.jsonl").read_text().splitlines()]
    checks = {(r["engine"], r["dtype"]): r for r in recs if r.get("step") == "check"}
    for engine in ("torch", "torch-sequential", "triton-scan", "triton-sequential"):
        assert any(e == engine for e, _ in checks), (engine, res.stderr[-2000:])
    # the PyTorch engines agree with the CPU reference in both dtypes
    for dtype in ("float64", "float32"):
        assert checks[("torch", dtype)]["ok"] and checks[("torch", dtype)]["spikes"] > 0, checks
    assert checks[("torch", "float64")]["max_time_err_ms"] < 1e-9
    # the measurement file names this "GPU" and auto's training ranking is read from it
    measured = json.loads((cache / "gpu_measured.json").read_text())
    entry = measured["gpus"]["cpu-interpreter"]
    assert entry["torch"]["ok"] is True and entry["torch"]["train_step_s"] > 0
    auto = [r for r in recs if r.get("step") == "auto"][0]
    assert auto["training_ranking"][0] in entry and entry[auto["training_ranking"][0]]["ok"]
    # the tile-size autotune ran and cached its choice
    tune = json.loads((cache / "triton_tune.json").read_text())["entries"]
    assert any(k.endswith("|scan|cpu-interpreter") and v["block_n"] in (2, 4) for k, v in tune.items()), tune
    p1 = (tmp_path / "out" / "gpu_check-p1-tiny.jsonl")
    assert p1.exists() and p1.read_text().strip(), res.stderr[-2000:]
