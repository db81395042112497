import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # astbuild helpers

REPO = HERE.parent.parent
MODELS = REPO / "models"


@pytest.fixture(scope="session")
def models_dir():
    return MODELS


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # never write into the user's ./.spikescan-cache from tests
    monkeypatch.setenv("SPIKESCAN_CACHE", str(tmp_path / "cache"))
