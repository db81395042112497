"""Training curves (loss and accuracy per epoch) to a PNG with matplotlib's Agg backend."""

from __future__ import annotations

import os
from pathlib import Path


def plot_curves(history: list[dict], path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a1.plot(ep, [h["val_loss"] for h in history], "s-", label="val")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    a2.plot(ep, [h["train_accuracy"] for h in history], "o-", label="train")
    a2.plot(ep, [h["val_accuracy"] for h in history], "s-", label="val")
    a2.set_xlabel("epoch"), a2.set_ylabel("accuracy"), a2.set_ylim(0, 1), a2.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
