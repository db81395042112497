"""Checkpoints: written atomically (temp file in the same folder, fsync, os.replace), so a crash
or a diverged run never leaves a half-written or corrupted last.pt/best.pt behind.

A checkpoint is a dict (torch.save) with the model reference (absolute .snn path, its source
text and content hash, network name, constructor options), the state dict, the optimiser and
scheduler states, the epoch, the metrics and the seed: enough to resume training or to rebuild
the network for evaluation without the training script.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "spikescan-checkpoint-1"


def model_reference(path: str | os.PathLike) -> dict[str, str]:
    """Absolute path, source text and sha256 of a .snn file."""
    p = Path(path).resolve()
    text = p.read_text()
    return {"model_path": str(p), "model_source": text, "model_sha256": hashlib.sha256(text.encode()).hexdigest()}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write payload to path atomically. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, format=FORMAT)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path} is not a spikescan checkpoint (expected format {FORMAT!r})")
    return ck


def resolve_model_path(ck: dict[str, Any], scratch: str | os.PathLike | None = None) -> str:
    """The .snn path to rebuild the network from: the original file if it still has the same
    content; otherwise the stored source, written next to the original name in `scratch`
    (imports of other files then resolve relative to scratch and may fail: say so)."""
    p = Path(ck["model_path"])
    if p.is_file() and hashlib.sha256(p.read_text().encode()).hexdigest() == ck["model_sha256"]:
        return str(p)
    scratch = Path(scratch or tempfile.mkdtemp(prefix="spikescan-ck-"))
    scratch.mkdir(parents=True, exist_ok=True)
    q = scratch / p.name
    q.write_text(ck["model_source"])
    return str(q)
