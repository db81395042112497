"""Fixtures of the data tests: the real recordings folder (../shared/data from the repo root)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def _need(sub):
    if not (SHARED_DATA / sub).is_dir():
        pytest.skip(f"real recordings not found: {SHARED_DATA / sub} is absent (../shared/data "
                    "from the repo root; see its README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nmnist_root():
    return _need("NMNIST/Train")


@pytest.fixture(scope="session")
def dvsgesture_root():
    return _need("DVSGesture/ibmGestureTrain")
