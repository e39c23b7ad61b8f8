"""numba-demucs: Demucs v4 (Hybrid Transformer Demucs) inference with Numba kernels.

    >>> import numba_demucs
    >>> model = numba_demucs.load_model("955717e8-8726e21a.th")
    >>> stems = numba_demucs.apply_model(model, mix)   # (batch, sources, channels, samples)
    >>> numba_demucs.separate_file("song.flac", model="htdemucs")   # separated/htdemucs/song/*.wav

Nothing here imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .apply import apply_model
from .checkpoint import read_bag, read_package
from .errors import (AudioError, CheckpointError, ChecksumError, DownloadError, EvaluationError,
                     NumbaDemucsError, UnknownModelError, UnsafeCheckpointError,
                     UnsupportedModelError)
from .models.bag import BagOfModels
from .models.classes import from_package
from .models.hdemucs import HDemucs
from .models.htdemucs import HTDemucs
from .separator import Separator, separate_file
from . import pretrained  # noqa: E402  (imports load_model lazily)

__version__ = "0.1.0"

__all__ = [
    "apply_model", "load_model", "Separator", "separate_file", "HTDemucs", "HDemucs", "BagOfModels",
    "NumbaDemucsError",
    "CheckpointError", "UnsafeCheckpointError", "UnsupportedModelError", "AudioError",
    "EvaluationError", "UnknownModelError", "DownloadError", "ChecksumError", "pretrained",
]


def load_model(path, dtype=np.float32):
    """Load a ``.th`` or ``.safetensors`` model, or a bag ``.yaml`` (members beside it).

    ``dtype`` is float32 (as users run demucs) or float64 (for exactness checks).
    """
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        bag = read_bag(path)
        models = [from_package(read_package(member), dtype) for member in bag.members]
        return BagOfModels(models, bag.weights, bag.segment, str(path))
    if path.suffix not in (".th", ".safetensors"):
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint file")
        raise CheckpointError(f"{path}: unknown checkpoint type (expected .th, .safetensors or .yaml)")
    return from_package(read_package(path), dtype)
