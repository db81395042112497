"""The suite passes from any working directory (`cd /tmp && python -m pytest /path/to/repo/tests`):
a few representative test files, run by a child pytest whose working directory is an empty folder,
pass and leave that folder empty. Models, fixtures and golden files must be found through
tests/repo_paths.py (or __file__), never relative to the working directory, and nothing
(example databases, caches, runs) may be written there."""

import os
import subprocess
import sys

from repo_paths import REPO

# file, -k subset: each loads models/ files or fixtures in its own way, several at import time
CASES = [
    ("tests/backends/test_cpu_engine.py", "grazing or t_end or spike_cap"),  # compiled kernels
    ("tests/runtime/test_recurrent_cpu.py", "vector_loop_bit_identical and cuba_lif"),  # "models/..." params
    ("tests/dsl/test_dsl_models.py", "golden or checks_clean or networks_structure"),  # golden files
    ("tests/dsl/test_dsl_cli.py", ""),  # the CLI, in-process and in a subprocess
    ("tests/dsl/test_dsl_fuzz.py", "mutations"),  # hypothesis (its ./.hypothesis storage)
]


def test_representative_files_pass_from_an_unrelated_directory(tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    # the child sets these up itself (tests/conftest.py); inheriting ours would hide a regression
    env = {k: v for k, v in os.environ.items() if k not in ("SPIKESCAN_CACHE", "HYPOTHESIS_STORAGE_DIRECTORY")}
    modules = [path.rsplit("/", 1)[1] for path, _ in CASES]
    k = " or ".join(f"({m} and ({sel}))" if sel else f"({m})" for m, (_, sel) in zip(modules, CASES))
    r = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "not slow and not gpu",
                        "--basetemp", str(tmp_path / "basetemp"), "-k", k, *[str(REPO / p) for p, _ in CASES]],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, out
    for path, _ in CASES:  # every file ran tests, all of them passed
        lines = [ln for ln in r.stdout.splitlines() if (path + "::") in ln]
        assert lines and all(" PASSED" in ln for ln in lines), out
    assert sorted(p.name for p in cwd.iterdir()) == [], "tests wrote into the working directory"
