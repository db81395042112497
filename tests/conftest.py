"""Suite-wide test set-up: one torch thread, make tests/mpref.py (the mpmath reference) importable as `mpref`,
keep generated code of the whole suite out of the user's ./.spikescan-cache, and write nothing into the
working directory (the suite passes from any directory: `cd /tmp && python -m pytest /path/to/repo/tests`)."""

import os
import sys

# The engines run many small tensor ops, where intra-op threads only add synchronisation cost
# (about 10x slower with 2 threads on a 2-core machine). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# Hypothesis keeps its example database and caches in ./.hypothesis of the working directory;
# anchor it to the repository's (git-ignored) .hypothesis so that a run from any directory
# neither litters that directory nor loses the saved failing examples.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(os.path.dirname(_TESTS), ".hypothesis"))


@pytest.fixture(autouse=True, scope="session")
def _suite_cache(tmp_path_factory):
    old = os.environ.get("SPIKESCAN_CACHE")
    os.environ["SPIKESCAN_CACHE"] = str(tmp_path_factory.mktemp("spikescan-cache"))
    yield
    if old is None:
        os.environ.pop("SPIKESCAN_CACHE", None)
    else:
        os.environ["SPIKESCAN_CACHE"] = old
