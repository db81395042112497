"""Bounded fuzz of the whole pipeline (issue 11, "Done when"): seeded mutations of the shipped
models through `spikescan check`, `spikescan compile` and a tiny forward on two engines, for about
40 s in a child process (fuzz_pipeline_driver.py). Zero internal errors (exit code 70 or an
exception the CLI would call a bug), zero hangs (the child has a hard timeout) and no crash of the
JIT (a signal would kill the child)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUDGET_S = float(os.environ.get("SPIKESCAN_FUZZ_SECONDS", "40"))


def test_mutated_models_never_crash_hang_or_trace(tmp_path):
    env = dict(os.environ, SPIKESCAN_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(HERE / "fuzz_pipeline_driver.py"), str(BUDGET_S), "1"],
                       capture_output=True, text=True, timeout=BUDGET_S + 150, cwd=tmp_path, env=env)
    assert r.returncode == 0, f"the fuzz driver died (rc {r.returncode}): {r.stderr[-3000:]}"
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["internal"] == [], stats["internal"]
    # the mutations must reach the compiler and the engines, not only the parser
    assert stats["cases"] >= 50 and stats["compiled"] >= 5 and stats["ran"] >= 5, stats
