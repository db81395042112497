"""Errors raised by the dataset loaders.

They carry a complete, user-facing message (which files, where, how to get them, what to do) so
that a missing or broken dataset never surfaces as a traceback from deep inside tonic, h5py or
numpy. All are ValueError or FileNotFoundError, which the CLI prints as one line.
"""

REPLACE = "replace it with a fresh copy (re-download or re-extract it), or remove it"


class DatasetError(Exception):
    """Base class of all dataset errors."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """The files of a dataset are not on disk (and spikescan never downloads implicitly)."""


class CorruptDataFile(DatasetError, ValueError):
    """A data file exists but cannot be decoded or holds impossible values; the message names the
    file (and the sample inside it) and says what to do."""

    def __init__(self, path, reason, hint=REPLACE):
        self.path = str(path)
        self.reason = str(reason)
        self.hint = str(hint)
        super().__init__(f"corrupt data file {self.path}: {self.reason}; {self.hint}")


class DatasetLayoutError(DatasetError, ValueError):
    """Files or folders of a dataset are not where (or not named as) tonic's layout says."""

    def __init__(self, path, reason, hint):
        self.path = str(path)
        self.reason = str(reason)
        self.hint = str(hint)
        super().__init__(f"bad dataset layout at {self.path}: {self.reason}; {self.hint}")
