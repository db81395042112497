"""The bookkeeping of a training run (runtime/train.py): the output folder, what is on disk
(last.pt, best.pt, metrics.jsonl, curves.png) and resuming from it."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

from spikescan.runtime.checkpoint import check_state, load_checkpoint, load_optimizer, load_state
from spikescan.runtime.distributed import Dist


def prepare_out(out_dir: Path) -> Path:
    """Create the output folder and prove it is writable now, not after the first epoch."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(e.errno, f"cannot write to the output folder {out_dir}: {e.strerror or e}") from None
    return out_dir


class Run:
    """The mutable state of one training run: history, best weights, what is on disk."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.history: list[dict] = []
        self.start_epoch, self.best_acc, self.best_epoch = 0, -1.0, -1
        self.best_state: Optional[dict] = None
        self.saved: Optional[int] = None  # epoch of the last.pt written or resumed from
        self.auto_init: Optional[dict] = None  # the auto-init record (runtime/train_auto.py)

    def intact(self) -> str:
        if self.saved is None:
            return "No checkpoint was written yet (it diverged in the first epoch of this run)"
        best = f" and {self.out_dir / 'best.pt'} (epoch {self.best_epoch})" if self.best_state is not None else ""
        return f"The last good checkpoint is {self.out_dir / 'last.pt'} (epoch {self.saved}){best}, unchanged"


def _read_checkpoints(out_dir: Path) -> tuple[dict, Optional[dict]]:
    best = out_dir / "best.pt"
    return load_checkpoint(out_dir / "last.pt"), (load_checkpoint(best) if best.exists() else None)


def resume(run: Run, net, opt, ref, epochs: int, schedule: str, log, dist: Optional[Dist] = None) -> None:
    """Load last.pt (and validate best.pt now, not at the end); re-plan the schedule. Under
    --ddp rank 0 reads both files and broadcasts them (no shared file system needed)."""
    last = run.out_dir / "last.pt"
    ck, bk = (dist or Dist()).from_main(lambda: _read_checkpoints(run.out_dir))
    if ref and ck.get("model_sha256") not in (None, ref["model_sha256"]):
        log(f"warning: the model sources changed since {last} was written; resuming anyway")
    load_state(net, ck["state_dict"], last)
    load_optimizer(opt, ck["optimizer"], last)
    run.start_epoch, run.saved = ck["epoch"], ck["epoch"]
    if run.start_epoch > epochs:
        raise ValueError(f"{last} is at epoch {run.start_epoch}, beyond --epochs {epochs}: pass --epochs "
                         f"{run.start_epoch} or more to continue it")
    run.history = list(ck["history"])
    from spikescan.runtime.train_auto import checked_record

    run.auto_init = checked_record(ck.get("auto_init"))
    best = run.out_dir / "best.pt"
    if bk is not None:
        check_state(net, bk["state_dict"], best)
        run.best_state, run.best_acc, run.best_epoch = bk["state_dict"], ck["best_val_accuracy"], ck["best_epoch"]
    elif ck["best_epoch"] > 0:
        log(f"warning: {best} is missing; the best weights will be chosen again from the next epochs")
    old = ck["config"].get("epochs")
    if schedule == "cosine" and old not in (None, epochs):
        log(f"re-planning the cosine learning-rate schedule for {epochs} epochs (it was planned for {old})")
    log(f"resuming from {last} at epoch {run.start_epoch}")


def write_metrics(path: Path, records: list[dict], mode: str = "w") -> None:
    try:
        with open(path, mode) as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None



PLOT_EVERY_S = 30.0  # redraw curves.png during training at most this often (a draw takes ~0.5-1 s)
_last_plot: dict = {}


def plot(run: Run, log, final: Optional[dict] = None) -> None:
    """curves.png: always at the end (`final`), during training when PLOT_EVERY_S have passed."""
    now = time.monotonic()
    key = str(run.out_dir)
    if final is None and now - _last_plot.get(key, -math.inf) < PLOT_EVERY_S:
        return
    _last_plot[key] = now
    try:
        from spikescan.runtime.plots import plot_curves

        plot_curves(run.history, run.out_dir / "curves.png", final=final)
    except Exception as e:  # noqa: BLE001 - plotting must never stop training
        log(f"warning: could not write curves.png: {e}")
