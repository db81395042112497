"""Dataset registry: ``get_dataset(name, split, root=None, **opts)`` and ``make_loader``.

Built datasets are memoised per process on (name, split, root, opts), so repeated calls (one per
epoch, one per evaluation) reuse the decoded samples.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from .events import check_split, pad_collate

NAMES = ("yinyang", "randman", "digits", "shd", "ssc", "nmnist", "dvsgesture")
_BUILT = {}


def _build(name, split, root, opts):
    if name == "yinyang":
        from .yinyang import YinYang
        return YinYang(split, **opts)
    if name == "randman":
        from .randman import Randman
        return Randman(split, **opts)
    if name == "digits":
        from .digits import Digits
        return Digits(split, **opts)
    if name in ("shd", "ssc"):
        from .hsd import HSDEvents
        return HSDEvents(name, split, root, **opts)
    if name == "nmnist":
        from .nmnist import NMNISTEvents
        return NMNISTEvents(split, root, **opts)
    from .dvsgesture import DVSGestureEvents
    return DVSGestureEvents(split, root, **opts)


def _key(name, split, root, opts):
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v
    from .recordings import resolve_root
    r = str(resolve_root(root).resolve()) if name in ("shd", "ssc", "nmnist", "dvsgesture") \
        else None
    return (name, split, r, tuple(sorted((k, freeze(v)) for k, v in opts.items())))


def get_dataset(name, split, root=None, **opts):
    """Dataset ``name`` (one of NAMES), ``split`` in train|val|test.

    ``root`` is the tonic ``save_to`` folder for the recorded sets (default: see
    recordings.default_root); the built-in sets (yinyang, randman, digits) ignore it.
    ``opts`` go to the dataset's constructor (see each module's docstring).
    """
    name = str(name).lower()
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(NAMES)}")
    check_split(split)
    if root is not None and name in ("yinyang", "randman", "digits"):
        root = None
    try:
        key = _key(name, split, root, opts)
        hash(key)
    except TypeError:  # unhashable option values: build without memoising
        return _build(name, split, root, opts)
    if key not in _BUILT:
        _BUILT[key] = _build(name, split, root, opts)
    return _BUILT[key]


def clear_cache():
    """Forget the memoised datasets (and with them their decoded samples)."""
    _BUILT.clear()


def make_loader(name, split, batch_size, root=None, shuffle=False, seed=0, drop_last=False,
                num_workers=0, **opts):
    """A DataLoader of padded batches (see events.pad_collate); shuffling uses a generator seeded
    with ``seed``, so the batch order is reproducible."""
    ds = get_dataset(name, split, root, **opts)
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(ds, batch_size=int(batch_size), shuffle=bool(shuffle), generator=gen,
                      drop_last=bool(drop_last), collate_fn=pad_collate,
                      num_workers=int(num_workers))
