"""Training curves to a PNG with matplotlib's Agg backend: loss and accuracy per epoch (with the
test point at the best epoch once the run has ended), the learning rate, and the mean spikes per
neuron and sample of every layer, when the metrics records have them.

    fig = curves_figure(history, final)           # a matplotlib Figure
    plot_curves(history, "runs/yy/curves.png")    # writes it (atomically), returns the path
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write `fig` to `path` atomically (temporary file, then rename) and close it."""
    plt = pyplot()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + (path.suffix or ".png"))
    try:
        fig.savefig(tmp, dpi=dpi, format=(path.suffix[1:] or "png"))
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def curves_figure(history: list[dict], final: Optional[dict] = None):
    """The curves of a run's metrics records (metrics.jsonl: one dict per epoch, then the
    `final` record with test_accuracy and best_epoch) as a matplotlib Figure."""
    plt = pyplot()
    ep = [h["epoch"] for h in history]
    has_lr = any("lr" in h for h in history)
    rates = [h.get("spikes_per_neuron") or {} for h in history]
    layers = list(dict.fromkeys(k for r in rates for k in r))
    n = 2 + has_lr + bool(layers)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.5), squeeze=False)
    axes = list(axes[0])
    a1, a2 = axes[0], axes[1]
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a1.plot(ep, [h["val_loss"] for h in history], "s-", label="val")
    a2.plot(ep, [h["train_accuracy"] for h in history], "o-", label="train")
    a2.plot(ep, [h["val_accuracy"] for h in history], "s-", label="val")
    if final and final.get("test_accuracy") is not None and final.get("best_epoch", -1) > 0:
        be = final["best_epoch"]
        a2.plot([be], [final["test_accuracy"]], "*", ms=14, color="C3",
                label=f"test {final['test_accuracy']:.3f} (best epoch)")
        if final.get("test_loss") is not None:
            a1.plot([be], [final["test_loss"]], "*", ms=14, color="C3", label="test")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.set_title("loss"), a1.legend()
    a2.set_xlabel("epoch"), a2.set_ylabel("accuracy"), a2.set_ylim(0, 1), a2.set_title("accuracy")
    a2.legend(loc="lower right")
    k = 2
    if has_lr:
        a = axes[k]
        a.plot([h["epoch"] for h in history if "lr" in h], [h["lr"] for h in history if "lr" in h], ".-", color="C2")
        a.set_xlabel("epoch"), a.set_ylabel("learning rate"), a.set_title("learning rate")
        a.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        k += 1
    if layers:
        a = axes[k]
        for i, name in enumerate(layers):
            a.plot(ep, [r.get(name, float("nan")) for r in rates], "o-", color=f"C{i + 4}", label=name)
        a.set_xlabel("epoch"), a.set_ylabel("spikes / neuron / sample"), a.set_title("training spike rates")
        a.set_ylim(bottom=0)
        a.legend()
    for a in axes:
        if len(ep) < 12:
            a.set_xticks(ep)
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict], path: str | os.PathLike, final: Optional[dict] = None) -> Path:
    """Write `curves_figure(history, final)` to `path` (PNG) and return the path."""
    return save_figure(curves_figure(history, final), path)
