"""Exceptions raised by numba-demucs. Every one names the file or object at fault."""


class NumbaDemucsError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(NumbaDemucsError):
    """A checkpoint file is missing, corrupted, truncated or not a demucs checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks for code we refuse to run (a pickled global outside the allow list)."""


class UnsupportedModelError(NumbaDemucsError):
    """A checkpoint describes a model class or constructor argument we do not implement."""


class AudioError(NumbaDemucsError):
    """An audio file cannot be read or written, or its content is unusable."""


class EvaluationError(NumbaDemucsError):
    """References and estimates cannot be scored (missing stem, shape mismatch, ...)."""


class UnknownModelError(NumbaDemucsError):
    """A model name is neither a known pretrained name nor a file in the given ``--repo``.

    ``known`` lists the names that would have been accepted.
    """

    def __init__(self, message: str, known=()):
        super().__init__(message)
        self.known = list(known)


class DownloadError(NumbaDemucsError):
    """A model file could not be fetched (server unreachable, HTTP error, connection cut)."""


class ChecksumError(CheckpointError):
    """A file's content does not match the checksum it is published (or cached) with."""
