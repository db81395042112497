"""Training and evaluation data from names, torch Datasets or DataLoaders, checked up front;
and the public helpers ``spikescan.evaluate`` and ``spikescan.load_network``.

``spikescan.train(model, data=...)`` takes:

- a built-in name (``spikescan.DATASETS``): its train/val/test splits;
- a ``torch.utils.data.Dataset`` of samples ``(times, channels, label)`` (or tonic-style
  ``(events, label)`` pairs that ``pad_collate`` accepts): batched with ``pad_collate``;
- a ``DataLoader`` yielding batches ``(times [B, n], channels [B, n], labels [B])``, +inf padded:
  used as it is, every epoch;
- a dict ``{"train": ..., "val": ..., "test": ...}`` of Datasets or DataLoaders.

``val_data=`` / ``test_data=`` give the other splits. Without them, a seeded 10% of a training
Dataset is held out for validation (a DataLoader cannot be split: it validates on itself), and
the test split is the validation split; the start-up summary says so.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from spikescan.runtime.train_setup import check_channels, loader, open_dataset, subset, t_max_of

DataLike = Union[str, Dataset, DataLoader, dict]

VAL_FRACTION = 0.1


def is_named(data) -> bool:
    return isinstance(data, str)


def _kind(x) -> str:
    return "DataLoader" if isinstance(x, DataLoader) else type(x).__name__


def _check_custom(x, role: str):
    if isinstance(x, (DataLoader, Dataset)) or (hasattr(x, "__len__") and hasattr(x, "__getitem__")):
        return x
    if hasattr(x, "__iter__"):
        raise ValueError(f"{role}: a plain iterable ({type(x).__name__}) cannot be re-read every epoch; pass a "
                         "torch Dataset or DataLoader")
    raise ValueError(f"{role} must be a dataset name ({', '.join(_names())}), a torch Dataset or a DataLoader, "
                     f"got {type(x).__name__}")


def _names() -> tuple[str, ...]:
    from spikescan.runtime.data import NAMES

    return NAMES


def _holdout(ds, seed: int) -> tuple[Subset, Subset]:
    n = len(ds)
    if n < 2:
        raise ValueError(f"the training dataset has {n} sample(s): pass val_data= (at least 2 samples are needed "
                         "to hold one out for validation)")
    k = max(1, int(math.floor(n * VAL_FRACTION + 0.5)))
    perm = np.random.default_rng([int(seed) % 2**63, 0x7A1]).permutation(n)
    return Subset(ds, sorted(perm[k:].tolist())), Subset(ds, sorted(perm[:k].tolist()))


def open_splits(data: DataLike, *, val_data=None, test_data=None, data_root=None, data_opts=None,
                limit_train=None, limit_eval=None, seed: int = 0, net=None) -> tuple[dict, dict]:
    """{"train", "val", "test"} -> Dataset or DataLoader, every one checked against `net`
    (channels, labels, padding) before the first epoch; and notes on where each came from."""
    if isinstance(data, dict):
        unknown = set(data) - {"train", "val", "test"}
        if unknown or "train" not in data:
            raise ValueError(f"data as a dict needs the key 'train' (and optionally 'val', 'test'), got {sorted(data)}")
        val_data = data.get("val", val_data)
        test_data = data.get("test", test_data)
        data = data["train"]
    if is_named(data):
        if val_data is not None or test_data is not None:
            raise ValueError(f"val_data/test_data are for custom data; the dataset {data!r} brings its own splits")
        out = {}
        for split, limit in (("train", limit_train), ("val", limit_eval), ("test", limit_eval)):
            ds = open_dataset(data, split, data_root, data_opts or {})
            check_channels(ds, net)
            out[split] = subset(ds, limit, seed)
        return out, {s: f"{data} {s}" for s in out}
    if data_opts:
        raise ValueError("data_opts are options of the built-in datasets; a custom dataset takes none")
    train = _check_custom(data, "data")
    notes = {"train": _kind(train)}
    if val_data is not None:
        val, notes["val"] = _check_custom(val_data, "val_data"), _kind(val_data)
    elif isinstance(train, DataLoader):
        val, notes["val"] = train, "the training DataLoader (pass val_data=)"
    else:
        train, val = _holdout(train, seed)
        notes["val"] = f"{VAL_FRACTION:.0%} of the training Dataset, held out (pass val_data=)"
    if test_data is not None:
        test, notes["test"] = _check_custom(test_data, "test_data"), _kind(test_data)
    else:
        test, notes["test"] = val, "the validation split (pass test_data=)"
    out = {"train": train, "val": val, "test": test}
    for split, limit in (("train", limit_train), ("val", limit_eval), ("test", limit_eval)):
        if limit is not None:
            if isinstance(out[split], DataLoader):
                raise ValueError(f"limit_{'train' if split == 'train' else 'eval'} needs a Dataset, not a DataLoader")
            out[split] = subset(out[split], limit, seed)
    checked = set()
    for split, x in out.items():
        if id(x) not in checked:
            check_batch(first_batch(x), net, f"{split} data ({notes[split]})")
            checked.add(id(x))
    return out, notes


def first_batch(x):
    if isinstance(x, DataLoader):
        try:
            return next(iter(x))
        except StopIteration:
            raise ValueError("the DataLoader yields no batch") from None
    if len(x) == 0:
        raise ValueError("the dataset is empty")
    from spikescan.runtime.data import pad_collate

    return pad_collate([x[0]])


def check_batch(batch, net, where: str) -> None:
    """ValueError unless `batch` is (times [B, n] float, channels [B, n] int, labels [B] int) that fits `net`."""
    from spikescan.runtime.data import check_not_zero_padded

    if not isinstance(batch, (tuple, list)) or len(batch) != 3:
        raise ValueError(f"{where}: a batch must be (times, channels, labels), got "
                         f"{type(batch).__name__}{f' of {len(batch)}' if isinstance(batch, (tuple, list)) else ''}; "
                         "batch samples with collate_fn=spikescan.pad_collate")
    times, channels, labels = (torch.as_tensor(b) for b in batch)
    if times.dim() != 2 or channels.shape != times.shape:
        raise ValueError(f"{where}: times {tuple(times.shape)} and channels {tuple(channels.shape)} must both be "
                         "[B, n]")
    if not times.is_floating_point() or channels.is_floating_point() or labels.is_floating_point():
        raise ValueError(f"{where}: times must be float, channels and labels integers (got {times.dtype}, "
                         f"{channels.dtype}, {labels.dtype})")
    if labels.shape != times.shape[:1]:
        raise ValueError(f"{where}: labels {tuple(labels.shape)} must be [B] = [{times.shape[0]}]")
    if bool(torch.isnan(times).any()) or bool((times < 0).any()):
        raise ValueError(f"{where}: event times must be >= 0 ms (NaN found or negative)")
    if channels.numel() and (int(channels.min()) < 0 or int(channels.max()) >= net.n_inputs):
        raise ValueError(f"{where}: channels span [{int(channels.min())}, {int(channels.max())}] but network "
                         f"'{net.ir.name}' takes {net.n_inputs} input channels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= net.n_out):
        raise ValueError(f"{where}: labels span [{int(labels.min())}, {int(labels.max())}] but the readout "
                         f"has {net.n_out} neurons (classes 0..{net.n_out - 1})")
    check_not_zero_padded(times, channels)


def batches(x, batch_size: int, shuffle: bool, seed: int):
    """A DataLoader as given, or a Dataset batched with pad_collate (seeded shuffling)."""
    return x if isinstance(x, DataLoader) else loader(x, batch_size, shuffle, seed)


def size(x) -> Optional[int]:
    """Number of samples (None for a DataLoader without a sized dataset)."""
    if isinstance(x, DataLoader):
        try:
            return len(x.dataset)
        except TypeError:
            return None
    return len(x)


def guess_t_end(splits: dict, t_end: Optional[float]) -> float:
    """t_end as given, else twice the dataset's t_max (built-in sets), else an error."""
    if t_end is not None:
        return float(t_end)
    x = splits["train"]
    base = t_max_of(x.dataset if isinstance(x, DataLoader) else x)
    if base is None:
        raise ValueError("the dataset has no t_max attribute: pass t_end= (the trial length in ms, e.g. twice the "
                         "latest input event)")
    return 2.0 * base


# ----------------------------------------------------------------------------- public helpers


def evaluate(net, data: DataLike, *, split: str = "test", t_end: Optional[float] = None, loss=None,
             batch_size: int = 250, data_root: Optional[str] = None, data_opts: Optional[dict] = None,
             max_spikes: Optional[int] = None, progress: bool = False) -> dict[str, Any]:
    """Loss and accuracy of `net` (no gradients) on a built-in dataset's `split`, a Dataset or a
    DataLoader of (times, channels, labels). Returns {"loss", "accuracy", "n", "events", ...spike-cap
    counts}. `t_end` (ms) defaults to twice the dataset's t_max; `loss` is a LossConfig or dict
    (default LossConfig())."""
    from spikescan.runtime.train_setup import evaluate as _evaluate, loss_config

    if is_named(data):
        ds = open_dataset(data, split, data_root, data_opts or {})
        check_channels(ds, net)
    else:
        ds = _check_custom(data, "data")
        check_batch(first_batch(ds), net, "data")
    t_end = guess_t_end({"train": ds}, t_end)
    res = _evaluate(net, batches(ds, batch_size, False, 0), loss_config({}, loss), t_end, max_spikes,
                    progress=progress, desc=f"eval {split if is_named(data) else ''}".strip())
    res.pop("cap", None)
    return res


def load_network(checkpoint, engine: Optional[str] = None):
    """The trained network of a checkpoint written by `spikescan train` (a path, or a dict from
    spikescan.load_checkpoint), compiled from the sources embedded in it; safe on untrusted files
    (weights_only loading, digest checked)."""
    from spikescan.runtime.checkpoint import load_checkpoint
    from spikescan.runtime.train import network_from_checkpoint

    if isinstance(checkpoint, dict):
        return network_from_checkpoint(checkpoint, engine=engine)
    return network_from_checkpoint(load_checkpoint(checkpoint), engine=engine, path=str(checkpoint))
