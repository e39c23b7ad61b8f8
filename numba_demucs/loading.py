"""The one load path: a checkpoint file, a bag yaml or a pretrained name -> a model.

Files are read by ``checkpoint`` (no torch, nothing a file names is imported), names are
turned into verified local files by ``pretrained``, and ``registry`` says which of our model
classes computes the class a checkpoint names. Every caller (the Python API, ``separate``,
``debug``, ``eval``, the notebooks) loads through :func:`load_model`.

Open-Unmix goes the same way: ``umxl``/``umxhq``/``umx`` (or a folder of its
``TARGET-HASH8.pth`` files given as a path) are found by ``pretrained.openunmix``, read by
``checkpoint.read_state_dict`` into one package of per-target state dicts, and built by the
registry's ``OpenUnmix`` family. ``options`` (openunmix's ``niter``, ``softmask``,
``residual``, ``wiener_win_len``) reach only a family that declares them; any other refuses.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import registry
from .checkpoint import BagDescription, ModelPackage, read_bag, read_package, read_state_dict
from .errors import CheckpointError, UnsupportedModelError
from .quantized import QuantizedStateError, dequantize
from .models.bag import BagOfModels
from .pretrained import Progress, check_name_checksum, locate
from .pretrained.openunmix import OpenUnmixFiles, locate_folder

CHECKPOINT_SUFFIXES = (".th", ".safetensors")
BAG_SUFFIXES = (".yaml", ".yml")


def load_model(path_or_name, *, repo=None, dtype=np.float32, cache_dir=None,
               progress: Progress = False, options: dict | None = None):
    """A model (or ``BagOfModels``) from a ``.th``/``.safetensors`` file, a bag ``.yaml``
    (members beside it) or a pretrained name or signature (see ``numba_demucs.pretrained``).

    A ``Path``, a string ending in one of those suffixes or naming an existing file is a file
    (a ``SIG-CHECKSUM.th`` name is checked against its content, as demucs does); anything
    else, or anything with ``repo`` (a demucs ``--repo`` folder), is a name. ``dtype`` is
    float32 (as users run demucs) or float64 (for exactness checks). ``cache_dir`` and
    ``progress`` (``True`` for a rich bar on stderr, or a callable ``(bytes_done,
    total_or_None)``) apply to downloads. A folder given as a ``Path`` holds an Open-Unmix
    model (one ``TARGET-HASH8.pth`` per target). ``options``: run-time options of the model
    family (Open-Unmix's Wiener filter: ``niter``, ``softmask``, ``residual``,
    ``wiener_win_len``); a family without them refuses them naming the model.
    """
    if repo is None and _names_a_file(path_or_name):
        return load_file(path_or_name, dtype, options=options)
    return load_named(str(path_or_name), repo=repo, dtype=dtype, cache_dir=cache_dir,
                      progress=progress, options=options)


def _names_a_file(value) -> bool:
    if isinstance(value, os.PathLike):
        return True
    path = Path(value)
    return path.suffix in CHECKPOINT_SUFFIXES + BAG_SUFFIXES or path.is_file()


def load_named(name: str, *, repo=None, dtype=np.float32, cache_dir=None,
               progress: Progress = False, options: dict | None = None):
    """A pretrained name or signature (or one in a ``--repo`` folder), always as a name."""
    found = locate(name, repo=repo, cache_dir=cache_dir, progress=progress)
    if isinstance(found, BagDescription):
        return load_bag(found, dtype, options=options)
    if isinstance(found, OpenUnmixFiles):
        return _openunmix(found, dtype, options)
    return model_from_package(read_package(found), dtype, options=options)


def load_file(path, dtype=np.float32, options: dict | None = None):
    """One ``.th``/``.safetensors`` model, a bag ``.yaml`` or a folder of Open-Unmix
    ``TARGET-HASH8.pth`` files; a ``SIG-CHECKSUM.th`` name is checked against its content
    first."""
    path = Path(path)
    if path.is_dir():
        return _openunmix(locate_folder(path), dtype, options)
    check_name_checksum(path)
    if path.suffix in BAG_SUFFIXES:
        return load_bag(read_bag(path), dtype, options=options)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint file")
        raise CheckpointError(
            f"{path}: unknown checkpoint type (expected .th, .safetensors or .yaml)")
    return model_from_package(read_package(path), dtype, options=options)


def load_bag(bag: BagDescription, dtype=np.float32, options: dict | None = None) -> BagOfModels:
    """The bag's members (``bag.members``: their files), weighted as the yaml says."""
    models = [model_from_package(read_package(member), dtype, options=options)
              for member in bag.members]
    return BagOfModels(models, bag.weights, bag.segment, str(bag.path))


def openunmix_package(found: OpenUnmixFiles) -> ModelPackage:
    """One package for an Open-Unmix model: ``state`` maps each target to its file's state
    dict; the model name fixes the hidden size (a bare folder takes its files')."""
    states = {target: read_state_dict(path) for target, path in found.files.items()}
    hidden = found.hidden_size
    for target, state in states.items():
        weight = state.get("fc1.weight")
        if weight is None or weight.ndim != 2:
            raise CheckpointError(f"{found.files[target]}: no 2-d fc1.weight; not an "
                                  "Open-Unmix target model")
        if hidden is None:
            hidden = int(weight.shape[0])
        if weight.shape[0] != hidden:
            source = (f"{found.name} has {hidden}; the model name fixes the architecture"
                      if found.hidden_size is not None else f"the other targets have {hidden}")
            raise CheckpointError(f"{found.files[target]}: fc1.weight has {weight.shape[0]} "
                                  f"hidden units, but {source}")
    return ModelPackage("OpenUnmix", (), {"targets": tuple(found.files), "hidden_size": hidden},
                        states, found.folder, parts=dict(found.files))


def model_from_package(package: ModelPackage, dtype=np.float32, options: dict | None = None):
    """Our model for what a checkpoint holds, through the family its class registered.

    ``options`` join the checkpoint's keyword arguments when the family declares them."""
    origin = str(package.path)
    family = registry.lookup(package.klass, origin)
    kwargs = package.kwargs
    if options:
        refused = sorted(set(options) - set(family.options))
        if refused:
            if family.options:
                raise UnsupportedModelError(
                    f"{origin}: {family.class_name} has no option {', '.join(refused)} (its "
                    f"options: {', '.join(family.options)})")
            raise UnsupportedModelError(
                f"{origin}: {', '.join(refused)}: only Open-Unmix models take "
                f"{'this option' if len(refused) == 1 else 'these options'}, not "
                f"{family.class_name}")
        kwargs = {**kwargs, **options}
    config = family.read_config(package.args, kwargs, origin)
    state = package.state
    if package.quantized is not None:
        if family.layout is None:
            raise UnsupportedModelError(
                f"{origin}: diffq layout of a quantized {family.class_name} is not supported")
        try:
            state = dequantize(package.quantized, family.layout(config), origin)
        except QuantizedStateError as error:
            raise CheckpointError(f"{origin}: corrupted quantized (DiffQ) state: {error}") from None
    # a model of several files (Open-Unmix: one per target) names each in its messages
    return family.model(config, state, dtype, package.parts or origin)


def _openunmix(found: OpenUnmixFiles, dtype, options):
    model = model_from_package(openunmix_package(found), dtype, options=options)
    model.name = found.name
    return model
