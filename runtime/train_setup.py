"""What `train` and `eval` check and build before the first batch: the options (a bad value is a
one-line ValueError naming the option, never a traceback from deep inside), the engine, every
dataset split, seeded stratified subsets, loaders, and the evaluation pass."""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from spikescan.runtime import losses, spike_cap
from spikescan.runtime.devices import module_device, to_device
from spikescan.runtime.losses import LossConfig



def _positive(name: str, v, integer: bool, allow_none: bool = True, zero: bool = False) -> None:
    if v is None and allow_none:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if zero else v > 0)
    if not ok or (integer and int(v) != v):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>= 0' if zero else '> 0'}, got {v!r}")


def check_options(*, epochs, batch_size, lr, clip_grad=None, threads=None, limit_train=None, limit_eval=None,
                  max_spikes=None, t_end=None, schedule="none") -> None:
    """ValueError naming the first bad option (the CLI spells them --epochs, --lr, ...)."""
    _positive("--epochs", epochs, True, allow_none=False)
    _positive("--batch-size", batch_size, True, allow_none=False)
    _positive("--lr", lr, False, allow_none=False)
    _positive("--clip-grad", clip_grad, False)
    _positive("--threads", threads, True, zero=True)
    _positive("--limit-train", limit_train, True)
    _positive("--limit-eval", limit_eval, True)
    _positive("--max-spikes", max_spikes, True)
    _positive("t_end", t_end, False)
    if schedule not in ("cosine", "none"):
        raise ValueError(f"unknown schedule {schedule!r} (cosine|none)")


def loss_config(base: dict, extra) -> LossConfig:
    """LossConfig from the dataset defaults and --loss: unknown keys and non-numbers are refused."""
    if isinstance(extra, LossConfig):
        return extra
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"--loss must be a JSON object, got {type(extra).__name__}")
    known = {f.name: f for f in fields(LossConfig)}
    merged = {**base, **(extra or {})}
    for k, v in merged.items():
        if k not in known:
            raise ValueError(f"--loss: unknown option {k!r}; known: {', '.join(known)}")
        if k == "hidden_mode":
            if not isinstance(v, str):
                raise ValueError(f"--loss: hidden_mode must be a string, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"--loss: {k} must be a finite number, got {v!r}")
    return LossConfig(**merged)


def resolve_engine(name, device=None, dtype=torch.float64) -> str:
    """The engine for `device` (default CPU) and `dtype`: see runtime/devices.py resolve_engine.
    "auto" on the CPU is the MLIR-compiled "sequential-cpu" ("torch" without torch-mlir); the
    Triton engines need CUDA (or TRITON_INTERPRET=1); unknown names are a ValueError."""
    from spikescan.runtime.devices import resolve_engine as _resolve

    return _resolve(name, device, dtype)


# ----------------------------------------------------------------------------- data


def open_dataset(data: str, split: str, root, opts: dict):
    """get_dataset with option errors (unknown --data-opt keys) as one-line ValueErrors."""
    from spikescan.runtime.data import get_dataset

    if not isinstance(opts, dict):
        raise ValueError(f"dataset options must be KEY=VALUE pairs, got {type(opts).__name__}")
    try:
        return get_dataset(data, split, root=root, **opts)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        bad = str(e).split("argument")[-1].strip(" '\"")
        raise ValueError(f"--data-opt: dataset {data} has no option {bad!r} (see the docstring of "
                         f"spikescan/runtime/data/ for its options)") from None


def check_channels(ds, net) -> None:
    """The dataset's channels must fit the network's input populations: say how to fix it."""
    from spikescan.runtime.conv import check_input_layout

    check_input_layout(ds, net)  # a [C, H, W] input needs the camera sets' chw layout
    n = int(getattr(ds, "n_channels", getattr(getattr(ds, "dataset", None), "n_channels", 0)) or 0)
    if n > net.n_inputs:
        raise ValueError(
            f"dataset {getattr(ds, 'name', '?')} has {n} input channels but network "
            f"'{net.ir.name}' takes {net.n_inputs} (input {dict(net.ir.inputs)}); change the input "
            "size in the .snn file or reduce the data (e.g. --data-opt downsample=2 --data-opt "
            "merge_polarity=true for the event cameras)")


def _labels(ds) -> Optional[np.ndarray]:
    lab = getattr(ds, "labels", None)
    if lab is None:
        return None
    lab = np.asarray(lab)
    return lab if lab.ndim == 1 and len(lab) == len(ds) else None


def subset(ds, limit: Optional[int], seed: int = 0):
    """At most `limit` samples: a seeded, class-stratified subset (each class keeps its share,
    largest remainders first, picked by a permutation seeded with `seed`), in dataset order.
    Without readable labels, a seeded uniform subset. The whole set when limit >= len(ds)."""
    if limit is None or limit >= len(ds):
        return ds
    rng = np.random.default_rng([int(seed) % 2**63, 0x5EED])
    labels = _labels(ds)
    if labels is None:
        return Subset(ds, sorted(rng.permutation(len(ds))[:limit].tolist()))
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * limit / len(ds)
    take = np.floor(share).astype(int)
    for k in np.argsort(-(share - take), kind="stable")[: limit - int(take.sum())]:
        take[k] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    return Subset(ds, sorted(np.concatenate(picked).tolist()))


def loader(ds, batch_size: int, shuffle: bool, seed: int):
    from spikescan.runtime.data import pad_collate

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=pad_collate, num_workers=0)


def t_max_of(ds) -> Optional[float]:
    base = getattr(ds, "t_max", None)
    if base is None and isinstance(ds, Subset):
        base = getattr(ds.dataset, "t_max", None)
    return None if base is None else float(base)


def trial_length(ds, t_end: Optional[float]) -> float:
    if t_end is not None:
        return float(t_end)
    base = t_max_of(ds)
    if base is None:
        raise ValueError("the dataset has no t_max; pass t_end= (trial length in ms)")
    return 2.0 * base


def evaluate(net, data_loader, loss_cfg: LossConfig, t_end: float, max_spikes: Optional[int] = None, *,
             progress: bool = False, desc: str = "eval") -> dict[str, Any]:
    """Loss and accuracy of `net` over a loader (no gradients), with the spike-cap record
    (runtime/spike_cap.py: samples re-run with a larger cap up to max_spikes, those truncated);
    `progress` shows a bar named `desc` on stderr."""
    from spikescan.runtime.progress import Progress

    try:
        total = len(data_loader)
    except TypeError:
        total = None
    bar = Progress(total, desc, enabled=progress)
    try:
        return _evaluate(net, data_loader, loss_cfg, t_end, max_spikes, bar)
    finally:
        bar.close()


def _evaluate(net, data_loader, loss_cfg, t_end, max_spikes, bar) -> dict[str, Any]:
    net.eval()
    theta = net.readout_theta()
    need_vmax = net.readout_kind == "first_spike" and loss_cfg.silent_slope > 0
    stats = spike_cap.CapStats(cap=int(max_spikes or net.max_spikes))
    tot_loss, correct, n, events = 0.0, 0, 0, 0
    with torch.no_grad():
        for batch in data_loader:
            times, channels, labels = to_device(batch, module_device(net))
            tb = time.perf_counter()
            out = spike_cap.forward(net, times, channels, t_end=t_end, observe_vmax=need_vmax,
                                    max_spikes=max_spikes, stats=stats)
            tot_loss += float(losses.readout_loss(out, labels, loss_cfg, t_end, theta)) * len(labels)
            correct += int((losses.predict(out.readout_kind, out.readout) == labels).sum())
            n += len(labels)
            events += out.events
            bar.update(tot_loss / n, correct / n, out.events / max(time.perf_counter() - tb, 1e-9))
    return {"loss": tot_loss / max(n, 1), "accuracy": correct / max(n, 1), "n": n, "events": events,
            "cap": stats, **stats.record()}
