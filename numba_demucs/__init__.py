"""numba-demucs: Demucs v4 (Hybrid Transformer Demucs) inference with Numba kernels.

    >>> import numba_demucs
    >>> model = numba_demucs.load_model("955717e8-8726e21a.th")   # or "htdemucs_ft", a bag .yaml
    >>> stems = numba_demucs.apply_model(model, mix)   # (batch, sources, channels, samples)
    >>> numba_demucs.separate_file("song.flac", model="htdemucs")   # separated/htdemucs/song/*.wav

Nothing here imports torch.
"""
from __future__ import annotations

from . import pretrained
from ._version import __version__
from .apply import apply_model
from .checkpoint import read_bag, read_package
from .errors import (AudioError, CheckpointError, ChecksumError, DownloadError, EvaluationError,
                     NumbaDemucsError, UnknownModelError, UnsafeCheckpointError,
                     UnsupportedModelError)
from .loading import load_model
from .models.bag import BagOfModels
from .models.demucs import Demucs
from .models.hdemucs import HDemucs
from .models.htdemucs import HTDemucs
from .separator import Separator, separate_file

__all__ = [
    "apply_model", "load_model", "Separator", "separate_file", "HTDemucs", "HDemucs", "Demucs",
    "BagOfModels",
    "NumbaDemucsError",
    "CheckpointError", "UnsafeCheckpointError", "UnsupportedModelError", "AudioError",
    "EvaluationError", "UnknownModelError", "DownloadError", "ChecksumError", "pretrained",
    "__version__",
]
