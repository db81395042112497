"""A one-page summary of a training run folder (`spikescan report RUN_DIR`): the curves, the
confusion matrix of the best checkpoint on the test split, per-layer spike rates, timing and the
run's settings, as one PNG.

    records, final = read_metrics("runs/yy/metrics.jsonl")   # validated JSON lines
    conf = confusion(net, loader, t_end, n_classes)          # [true, predicted] counts
    fig = report_figure(records, final, config, conf)        # a matplotlib Figure
    path = write_report("runs/yy")                           # runs/yy/report.png

metrics.jsonl and the checkpoint are untrusted files: only JSON is parsed (numbers and strings
checked), and the checkpoint goes through the safe loader (runtime/checkpoint.py).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import torch

from spikescan.runtime.plots import curves_figure, pyplot, save_figure

_NUMBER_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "train_s", "events_per_s", "lr")


class ReportError(ValueError):
    """The run folder cannot be summarised (missing or malformed files); the message says which."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(path: str | os.PathLike) -> tuple[list[dict], Optional[dict]]:
    """(epoch records, final record or None) of a metrics.jsonl; ReportError on a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such file; a run folder written by `spikescan train` has metrics.jsonl")
    records, final = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{path}:{i}: not a JSON line ({e.msg}); the file is damaged") from None
            if not isinstance(rec, dict):
                raise ReportError(f"{path}:{i}: expected a JSON object")
            if rec.get("final") is True:
                final = rec
                continue
            bad = [k for k in _NUMBER_KEYS[:5] if not _number(rec.get(k))]
            if bad:
                raise ReportError(f"{path}:{i}: the epoch record lacks numeric {', '.join(bad)}")
            rates = rec.get("spikes_per_neuron")
            if rates is not None and not (isinstance(rates, dict) and all(
                    isinstance(k, str) and _number(v) for k, v in rates.items())):
                raise ReportError(f"{path}:{i}: spikes_per_neuron must map layer names to numbers")
            records.append(rec)
    if not records:
        raise ReportError(f"{path}: no epoch record yet (train for at least one epoch)")
    return records, final


@torch.no_grad()
def confusion(net, data_loader, t_end: float, n_classes: int, max_spikes: Optional[int] = None) -> torch.Tensor:
    """[n_classes, n_classes + 1] counts of (true label, predicted label); the last column counts
    samples without a prediction (ties, all readout neurons silent)."""
    from spikescan.runtime import losses, spike_cap

    net.eval()
    conf = torch.zeros(n_classes, n_classes + 1, dtype=torch.int64)
    for times, channels, labels in data_loader:
        out = spike_cap.forward(net, times, channels, t_end=t_end, max_spikes=max_spikes)
        pred = losses.predict(out.readout_kind, out.readout).clone()
        pred[pred < 0] = n_classes
        for t, p in zip(labels.tolist(), pred.tolist()):
            conf[t, p] += 1
    return conf


def _text_lines(records: list[dict], final: Optional[dict], config: dict) -> list[str]:
    """The settings, results and timing, as lines of text."""
    lines = []
    if final is not None and _number(final.get("test_accuracy")):
        lines.append(f"test accuracy {final['test_accuracy']:.4f} (best epoch {final.get('best_epoch', '?')}, "
                     f"best val {final.get('best_val_accuracy', float('nan')):.4f})")
    else:
        lines.append("no final record: the run has not finished (no test accuracy)")
    last = records[-1]
    lines.append(f"last epoch {last['epoch']}: train acc {last['train_accuracy']:.4f}, val acc "
                 f"{last['val_accuracy']:.4f}")
    secs = [r["train_s"] for r in records if _number(r.get("train_s"))]
    if secs:
        per = sum(secs) / len(secs)
        evs = [r["events_per_s"] for r in records if _number(r.get("events_per_s"))]
        lines.append(f"timing: {per:.1f} s per epoch (training), {sum(secs):.0f} s in all"
                     + (f"; {sum(evs) / len(evs):.3g} input events/s" if evs else ""))
    if final is not None and _number(final.get("wall_s")):
        lines.append(f"wall time of the run {final['wall_s']:.0f} s")
    trunc = sum(int(r["overflow"]) for r in records if _number(r.get("overflow")))
    if trunc:
        lines.append(f"spike cap: {trunc} samples truncated over all epochs (docs/engines.md, Spike caps)")
    keys = ("network", "data", "engine", "epochs", "batch_size", "lr", "schedule", "seed", "t_end")
    lines.append("; ".join(f"{k} {config[k]}" for k in keys if isinstance(config.get(k), (str, int, float))))
    return lines


def report_figure(records: list[dict], final: Optional[dict], config: dict,
                  conf: Optional[torch.Tensor] = None, conf_note: str = ""):
    """The page: the curves (runtime/plots.py), the confusion matrix (or why there is none), and
    the text lines of `_text_lines`."""
    plt = pyplot()
    curves = curves_figure(records, final)
    # render the curves once and place them as an image: one source for their layout
    curves.canvas.draw()
    img = curves.canvas.buffer_rgba()
    import numpy as np

    img = np.asarray(img).copy()
    plt.close(curves)
    fig = plt.figure(figsize=(max(8.4, img.shape[1] / 100), img.shape[0] / 100 + 5.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[img.shape[0] / 100, 5.0], width_ratios=[1, 1.25])
    top = fig.add_subplot(grid[0, :])
    top.imshow(img)
    top.axis("off")
    ax = fig.add_subplot(grid[1, 0])
    if conf is not None:
        n = conf.shape[0]
        shown = conf if int(conf[:, -1].sum()) else conf[:, :n]
        ax.imshow(shown.numpy(), cmap="Blues")
        for (i, j), v in np.ndenumerate(shown.numpy()):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8 if n <= 10 else 6,
                        color="white" if v > shown.max().item() / 2 else "black")
        ax.set_xticks(range(shown.shape[1]))
        ax.set_xticklabels([str(k) for k in range(n)] + (["none"] if shown.shape[1] > n else []))
        ax.set_yticks(range(n))
        ax.set_xlabel("predicted"), ax.set_ylabel("true label")
        acc = float(conf.diagonal().sum()) / max(int(conf.sum()), 1)
        ax.set_title(f"confusion, {conf_note} (accuracy {acc:.4f})", fontsize=10)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no confusion matrix:\n{conf_note}", ha="center", va="center", wrap=True)
    tx = fig.add_subplot(grid[1, 1])
    tx.axis("off")
    import textwrap

    body = "\n".join(textwrap.fill(line, 62, subsequent_indent="   ") for line in _text_lines(records, final, config))
    tx.text(0.0, 1.0, body, va="top", ha="left", family="monospace", fontsize=8.5)
    fig.suptitle(f"spikescan run: {config.get('network', '?')} on {config.get('data') or 'custom data'}")
    fig.tight_layout()
    return fig


def gather(run_dir: str | os.PathLike, *, checkpoint: str = "best.pt", data_root: Optional[str] = None,
           split: str = "test", limit: Optional[int] = None, engine: Optional[str] = None) -> dict:
    """What the page shows: {"records", "final", "config", "confusion" (or None), "note"}. The
    confusion matrix is measured on `split` of the run's built-in dataset with the weights of
    `checkpoint` (on the run's own --limit-eval subset unless `limit` is given); runs on custom
    data (no dataset name in the checkpoint) get none, and `note` says why."""
    from spikescan.runtime.checkpoint import load_checkpoint
    from spikescan.runtime.train import network_from_checkpoint
    from spikescan.runtime.train_setup import check_channels, loader, open_dataset, subset, t_max_of

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a folder; pass the output folder of `spikescan train` (e.g. runs/yinyang)")
    records, final = read_metrics(run_dir / "metrics.jsonl")
    ck_path = run_dir / checkpoint
    conf, note, config = None, "", {}
    if not ck_path.is_file():
        note = f"{ck_path.name} is missing"
    else:
        ck = load_checkpoint(ck_path)
        config = ck.get("config") or {}
        data = config.get("data")
        if not isinstance(data, str):
            note = "the run trained on custom data"
        else:
            net = network_from_checkpoint(ck, engine=engine, path=str(ck_path))
            root = data_root if data_root is not None else config.get("data_root")
            opts = config.get("data_opts") or {}
            try:  # the checkpoint is untrusted: options it names must be the dataset's own
                ds = open_dataset(data, split, root, dict(opts))
            except TypeError as e:
                raise ReportError(f"{ck_path}: its dataset options {opts!r} do not fit {data!r}: {e}") from None
            check_channels(ds, net)
            if limit is None and isinstance(config.get("limit_eval"), int):
                limit = config["limit_eval"]  # the subset the run itself tested on
            ds = subset(ds, limit, int(config.get("seed", 0) or 0))
            t_end = config.get("t_end") or 2.0 * (t_max_of(ds) or 0.0)
            if not (isinstance(t_end, (int, float)) and math.isfinite(t_end) and t_end > 0):
                raise ReportError(f"{ck_path}: the run's t_end {t_end!r} is not a positive number")
            conf = confusion(net, loader(ds, 250, False, 0), float(t_end), net.n_out, config.get("max_spikes"))
            note = f"{ck_path.name} on {data} {split} ({int(conf.sum())} samples)"
    return dict(records=records, final=final, config=config, confusion=conf, note=note)


def write_report(run_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None, **kw) -> Path:
    """Write the one-page report of `run_dir` (default `run_dir`/report.png; `kw` as for
    `gather`) and return its path."""
    g = gather(run_dir, **kw)
    fig = report_figure(g["records"], g["final"], g["config"], g["confusion"], g["note"])
    return save_figure(fig, Path(out) if out is not None else Path(run_dir) / "report.png", dpi=100)
