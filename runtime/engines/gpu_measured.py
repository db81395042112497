"""Which engines train correctly and fastest on a GPU: read from a measurement, never set by hand.

`bench/gpu_check.sh` (bench/gpu_check.py) runs every differentiable engine on the GPU against
the CPU reference and times a training step, then `record()`s the result under the GPU's name
in `measured_path()` ($SPIKESCAN_CACHE/gpu_measured.json, else ~/.cache/spikescan/...).
`choose_auto` (runtime/engines/__init__.py) trains with the fastest engine that passed on this
GPU; without a measurement (or with an unreadable file) it uses the safe default,
`GPU_TRAINING_MEASURED` ("torch"). The Triton tile sizes tuned by runtime/engines/triton_tune.py
live next to it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

FORMAT = 1


def cache_dir() -> Path:
    root = os.environ.get("SPIKESCAN_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "spikescan"


def measured_path() -> Path:
    return Path(os.environ.get("SPIKESCAN_GPU_MEASURED") or cache_dir() / "gpu_measured.json")


def gpu_name(device) -> str:
    """The key of a device's measurements: the CUDA device name, or "cpu-interpreter" for the
    Triton interpreter on the CPU (tests)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return "cpu-interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else dev.type


def read_json(path: Path) -> dict:
    """The file's object, or {} when it is missing or unreadable (a broken file never stops a run)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def write_json(path: Path, data: dict) -> None:
    """Atomic write (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(dict(data, format=FORMAT), f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def record(gpu: str, engine: str, *, ok: bool, train_step_s: Optional[float], **extra) -> None:
    """Store one engine's result on `gpu` (correct against the CPU reference, training-step time)."""
    path = measured_path()
    data = read_json(path)
    gpus = data.setdefault("gpus", {})
    gpus.setdefault(gpu, {})[engine] = dict(ok=bool(ok), train_step_s=train_step_s, **extra)
    write_json(path, data)


def training_ranking(gpu: str) -> list[str]:
    """Engines that passed on `gpu`, fastest training step first ([] without a measurement)."""
    entries = read_json(measured_path()).get("gpus", {}).get(gpu, {})
    good = []
    for name, e in entries.items():
        s = e.get("train_step_s") if isinstance(e, dict) else None
        if isinstance(e, dict) and e.get("ok") is True and isinstance(s, (int, float)) and s > 0:
            good.append((float(s), name))
    return [name for _, name in sorted(good)]
