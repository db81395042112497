"""Event datasets for spikescan: samples are (times float64[k] in ms, channels int64[k], label),
sorted by time; batches come from ``pad_collate`` (+inf padded times).
tonic datasets used directly: ``transform=ToSpikescan(sensor_size)`` and
``collate_fn=pad_collate``; ``check_not_zero_padded`` refuses tonic's zero padding.

Built-in, no download: yinyang, randman, digits. Through tonic (files on disk, never downloaded
implicitly): shd, ssc, nmnist, dvsgesture.
"""
from .errors import CorruptDataFile, DatasetError, DatasetNotFound
from .events import EventDataset, make_sample, pad_collate
from .padding import check_not_zero_padded
from .recordings import default_root
from .registry import NAMES, clear_cache, get_dataset, make_loader
from .tonic_events import ToSpikescan

__all__ = ["CorruptDataFile", "DatasetError", "DatasetNotFound", "EventDataset", "make_sample",
           "pad_collate", "check_not_zero_padded", "ToSpikescan", "default_root", "NAMES",
           "clear_cache", "get_dataset", "make_loader"]
