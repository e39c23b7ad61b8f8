"""Run one side (ours or the PyTorch reference) on an input and gather its ``Trace``.

Both sides go through the same record function, so a difference between two traces is a
difference in the numbers, never in how they were summarised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from numba_demucs import trace
from numba_demucs._version import __version__
from numba_demucs.apply import apply_model
from numba_demucs.checkpoint import read_package
from numba_demucs.loading import load_model

from .dumpfile import sha256_of_array, sha256_of_file
from .stats import tensor_stats
from .traces import Trace


class _Recorder:
    """Turns trace points into records (and optionally kept tensors)."""

    def __init__(self, save_tensors: bool):
        self.records: list[dict] = []
        self.tensors: list = []
        self.save_tensors = save_tensors

    def __call__(self, name, context, array):
        from .reference import leading_squeezed

        array = leading_squeezed(array)
        self.records.append(tensor_stats(name, array, context, index=len(self.records)))
        self.tensors.append(np.array(array, copy=True) if self.save_tensors else None)
        return self.records[-1]

    def trace(self, header, output) -> Trace:
        return Trace(header, self.records, self.tensors if self.save_tensors else None, output=output)


def _header(producer, model, checkpoint, mix, dtype, segment_only):
    return {
        "producer": producer,
        "model": _model_name(type(model).__name__, model.sources),
        "sources": list(model.sources),
        "checkpoint_sha256": sha256_of_file(checkpoint),
        "input_sha256": sha256_of_array(np.asarray(mix, dtype=np.float32)),
        "dtype": np.dtype(dtype).name,
        "mode": "segment" if segment_only else "apply_model(split=True, overlap=0.25, shifts=0)",
    }


def segment_of(mix, model, segment_only):
    """With ``segment_only``, the first model segment of ``mix`` (the model pads a shorter one)."""
    if not segment_only:
        return mix
    return mix[:, : int(model.segment * model.samplerate)]


def _model_name(class_name, sources):
    """``HDemucs[drums,bass,other,vocals]``: ours and PyTorch's classes have the same names."""
    return f"{class_name}[{','.join(sources)}]"


def trace_ours(checkpoint: Path, mix, dtype="float32", segment_only=False, save_tensors=False,
               model=None):
    """Our model's ``Trace`` on ``mix (channels, samples)``, its output as ``.output``.

    ``model`` may be a loaded (possibly edited) model of ``checkpoint``. With ``save_tensors``
    the trace keeps a copy of every tensor.
    """
    model = model if model is not None else load_model(Path(checkpoint), dtype=dtype)
    mix = segment_of(mix, model, segment_only)
    recorder = _Recorder(save_tensors)
    batch = np.asarray(mix, dtype=model.dtype)[None]
    with trace.capture(record=recorder):
        if segment_only:
            output = model(batch)
        else:
            output = apply_model(model, batch, shifts=0)
    header = _header(f"numba-demucs {__version__}", model,
                     checkpoint, mix, model.dtype, segment_only)
    return recorder.trace(header, output[0])


def trace_reference(checkpoint: Path, mix, dtype="float32", segment_only=False, save_tensors=False):
    """demucs' (PyTorch) ``Trace`` on the same input through forward hooks, as ``trace_ours``."""
    import demucs
    import torch

    from . import reference

    # Our restricted reader goes first: demucs' loader unpickles with torch.load(weights_only=False)
    # and imports what a .safetensors names, so a crafted file must be refused before it runs.
    read_package(checkpoint).class_name
    model = reference.load_reference(checkpoint)
    mix = segment_of(mix, model, segment_only)
    recorder = _Recorder(save_tensors)
    previous = torch.get_default_dtype()
    if np.dtype(dtype) == np.float64:
        # demucs makes windows, embeddings and apply_model's accumulators in the default dtype
        torch.set_default_dtype(torch.float64)
        model = model.double()
    try:
        output = reference.run_reference(model, np.asarray(mix, dtype=dtype), recorder,
                                         segment_only=segment_only)
    finally:
        torch.set_default_dtype(previous)
    header = _header(f"demucs {demucs.__version__} (torch {torch.__version__})",
                     model, checkpoint, mix, dtype, segment_only)
    return recorder.trace(header, output)
