"""Absolute paths into the repository, so that tests pass from any working directory
(`cd /tmp && python -m pytest /path/to/repo/tests`). Import as `from repo_paths import REPO, repo`
(tests/conftest.py puts tests/ on sys.path)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"


def repo(rel) -> str:
    """`rel` (e.g. "models/cuba_lif.snn") as an absolute path string; absolute paths pass through."""
    return str(REPO / rel)
