"""Errors raised by the dataset loaders.

They carry a complete, user-facing message (which files, where, how to get them) so that a missing
or broken dataset never surfaces as a traceback from deep inside tonic, h5py or numpy.
"""


class DatasetError(Exception):
    """Base class of all dataset errors."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """The files of a dataset are not on disk (and spikescan never downloads implicitly)."""


class CorruptDataFile(DatasetError, ValueError):
    """A data file exists but cannot be decoded; the message names the file."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"corrupt data file {self.path}: {self.reason}")
