"""Event datasets for spikescan: samples are (times float64[k] in ms, channels int64[k], label),
sorted by time; batches come from ``pad_collate`` (+inf padded times).

Built-in, no download: yinyang, randman, digits. Through tonic (files on disk, never downloaded
implicitly): shd, ssc, nmnist, dvsgesture.
"""
from .errors import CorruptDataFile, DatasetError, DatasetNotFound
from .events import EventDataset, make_sample, pad_collate
from .recordings import default_root
from .registry import NAMES, clear_cache, get_dataset, make_loader

__all__ = ["CorruptDataFile", "DatasetError", "DatasetNotFound", "EventDataset", "make_sample",
           "pad_collate", "default_root", "NAMES", "clear_cache", "get_dataset", "make_loader"]
