"""``collect`` for Open-Unmix: a checkpoint is a folder of ``TARGET-HASH8.pth`` files.

Both sides run the whole track (openunmix's Separator has no segments); records go through
the same ``_Recorder`` as Demucs' so dumps compare the same way. The hidden size is read
from the files (``fc1.weight``), so random toy widths trace as well as umxl itself.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from numba_demucs import trace
from numba_demucs._version import __version__
from numba_demucs.checkpoint import read_state_dict
from numba_demucs.loading import load_model
from numba_demucs.pretrained import openunmix as umx_files

from .collect import _Recorder
from .dumpfile import sha256_of_array, sha256_of_file


def is_openunmix_folder(checkpoint) -> bool:
    return checkpoint is not None and Path(checkpoint).is_dir()


def _files(folder):
    return umx_files.files_in_repo("openunmix", folder)


def load(folder, dtype=np.float32):
    """Our ``OpenUnmixSeparator`` from a folder, with the hidden size its files have, through
    the one load path (``load_model`` on the folder)."""
    return load_model(Path(folder), dtype=dtype)


def _header(producer, folder, mix, dtype):
    digest = hashlib.sha256()
    for target, path in _files(folder).items():
        digest.update(f"{target}:{sha256_of_file(path)}\n".encode())
    return {
        "producer": producer,
        "model": f"OpenUnmix[{','.join(umx_files.TARGETS)}]",
        "sources": list(umx_files.TARGETS),
        "checkpoint_sha256": digest.hexdigest(),
        "input_sha256": sha256_of_array(np.asarray(mix, dtype=np.float32)),
        "dtype": np.dtype(dtype).name,
        "mode": "whole track (Separator, niter=1, wiener_win_len=300)",
    }


def trace_ours(folder, mix, dtype="float32", save_tensors=False, model=None):
    """Our Open-Unmix on ``mix``; a ``Trace`` (its output as ``.output``) as collect.trace_ours."""
    model = model if model is not None else load(folder, dtype)
    recorder = _Recorder(save_tensors)
    with trace.capture(record=recorder):
        output = model.separate(np.asarray(mix, dtype=model.dtype))
    header = _header(f"numba-demucs {__version__}", folder, mix, model.dtype)
    return recorder.trace(header, output)


def trace_reference(folder, mix, dtype="float32", save_tensors=False):
    """openunmix's Separator (PyTorch) with forward hooks on the same files."""
    import torch

    from . import reference_umx

    files = _files(folder)  # our reader and hash check go first, before torch.load
    for path in files.values():
        read_state_dict(path)
    openunmix = reference_umx.import_openunmix()
    separator = reference_umx.load_separator(folder)
    recorder = _Recorder(save_tensors)
    output = reference_umx.run_reference(separator, mix, recorder, dtype=np.dtype(dtype))
    version = getattr(openunmix, "__version__", "1.3.0")
    header = _header(f"openunmix {version} (torch {torch.__version__})", folder, mix, dtype)
    return recorder.trace(header, output)
