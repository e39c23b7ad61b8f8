"""Checkpoint class -> our model class (a stand-in until numba_demucs.registry lands)."""
from __future__ import annotations

import numpy as np

from ..checkpoint import ModelPackage


def model_class(package: ModelPackage):
    """Our class for the demucs class a checkpoint names; UnsupportedModelError otherwise."""
    name = package.class_name
    if name == "HTDemucs":
        from .htdemucs import HTDemucs
        return HTDemucs
    if name == "HDemucs":
        from .hdemucs import HDemucs
        return HDemucs
    from .demucs import Demucs
    return Demucs


def from_package(package: ModelPackage, dtype=np.float32):
    return model_class(package).from_package(package, dtype)
