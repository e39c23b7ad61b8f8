"""The one load path: a checkpoint file, a bag yaml or a pretrained name -> a model.

Files are read by ``checkpoint`` (no torch, nothing a file names is imported), names are
turned into verified local files by ``pretrained``, and ``registry`` says which of our model
classes computes the class a checkpoint names. Every caller (the Python API, ``separate``,
``debug``, ``eval``, the notebooks) loads through :func:`load_model`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import registry
from .checkpoint import BagDescription, ModelPackage, read_bag, read_package
from .errors import CheckpointError, UnsupportedModelError
from .quantized import QuantizedStateError, dequantize
from .models.bag import BagOfModels
from .pretrained import Progress, check_name_checksum, locate

CHECKPOINT_SUFFIXES = (".th", ".safetensors")
BAG_SUFFIXES = (".yaml", ".yml")


def load_model(path_or_name, *, repo=None, dtype=np.float32, cache_dir=None,
               progress: Progress = False):
    """A model (or ``BagOfModels``) from a ``.th``/``.safetensors`` file, a bag ``.yaml``
    (members beside it) or a pretrained name or signature (see ``numba_demucs.pretrained``).

    A ``Path``, a string ending in one of those suffixes or naming an existing file is a file
    (a ``SIG-CHECKSUM.th`` name is checked against its content, as demucs does); anything
    else, or anything with ``repo`` (a demucs ``--repo`` folder), is a name. ``dtype`` is
    float32 (as users run demucs) or float64 (for exactness checks). ``cache_dir`` and
    ``progress`` (``True`` for a rich bar on stderr, or a callable ``(bytes_done,
    total_or_None)``) apply to downloads.
    """
    if repo is None and _names_a_file(path_or_name):
        return load_file(path_or_name, dtype)
    return load_named(str(path_or_name), repo=repo, dtype=dtype, cache_dir=cache_dir,
                      progress=progress)


def _names_a_file(value) -> bool:
    if isinstance(value, os.PathLike):
        return True
    path = Path(value)
    return path.suffix in CHECKPOINT_SUFFIXES + BAG_SUFFIXES or path.is_file()


def load_named(name: str, *, repo=None, dtype=np.float32, cache_dir=None,
               progress: Progress = False):
    """A pretrained name or signature (or one in a ``--repo`` folder), always as a name."""
    found = locate(name, repo=repo, cache_dir=cache_dir, progress=progress)
    if isinstance(found, BagDescription):
        return load_bag(found, dtype)
    return model_from_package(read_package(found), dtype)


def load_file(path, dtype=np.float32):
    """One ``.th``/``.safetensors`` model or a bag ``.yaml``; a ``SIG-CHECKSUM.th`` name is
    checked against its content first."""
    path = Path(path)
    check_name_checksum(path)
    if path.suffix in BAG_SUFFIXES:
        return load_bag(read_bag(path), dtype)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint file")
        raise CheckpointError(
            f"{path}: unknown checkpoint type (expected .th, .safetensors or .yaml)")
    return model_from_package(read_package(path), dtype)


def load_bag(bag: BagDescription, dtype=np.float32) -> BagOfModels:
    """The bag's members (``bag.members``: their files), weighted as the yaml says."""
    models = [model_from_package(read_package(member), dtype) for member in bag.members]
    return BagOfModels(models, bag.weights, bag.segment, str(bag.path))


def model_from_package(package: ModelPackage, dtype=np.float32):
    """Our model for what a checkpoint holds, through the family its class registered."""
    origin = str(package.path)
    family = registry.lookup(package.klass, origin)
    config = family.read_config(package.args, package.kwargs, origin)
    state = package.state
    if package.quantized is not None:
        if family.layout is None:
            raise UnsupportedModelError(
                f"{origin}: diffq layout of a quantized {family.class_name} is not supported")
        try:
            state = dequantize(package.quantized, family.layout(config), origin)
        except QuantizedStateError as error:
            raise CheckpointError(f"{origin}: corrupted quantized (DiffQ) state: {error}") from None
    return family.model(config, state, dtype, origin)
