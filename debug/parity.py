"""Our model against PyTorch demucs on one checkpoint and input: both traces, their diff, SNR.

``parity`` is the one function behind ``numba-demucs debug parity``, notebook 02 and the
parity tests: it traces the reference and our model on the same checkpoint and mix, compares
the traces point by point and the outputs end to end, and optionally separates local from
inherited error (``isolate``) and measures the float32 rounding floor of PyTorch itself.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numba_demucs.errors import NumbaDemucsError

from .diff import DiffResult, diff
from .stats import snr_db
from .traces import Trace

# End-to-end SNR (dB) every source must reach. float32: the port sits near 120 dB, a 1 %
# weight error in one layer drops it below 90. float64: rounding alone is far above 200 dB.
END_TO_END_THRESHOLD_DB = {"float32": 90.0, "float64": 200.0}
SAMPLERATE = 44100
UMX_ARCHITECTURES = ("umxl", "umxhq", "umx")


def require_reference() -> None:
    """Refuse clearly when the reference extra (torch, demucs) is not installed."""
    try:
        import demucs  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise NumbaDemucsError(f"debug parity needs the reference extra (torch, demucs): {error}") from None


@dataclass
class ParityReport:
    """What ``parity`` found. ``snr_db`` and ``max_abs_error`` are per source, in the
    reference's source order; ``isolation`` holds ``isolate.isolate``'s rows when asked for,
    ``floor`` the diff of PyTorch float32 against PyTorch float64 when asked for."""

    reference: Trace
    ours: Trace
    diff: DiffResult
    dtype: str
    snr_db: np.ndarray
    max_abs_error: np.ndarray
    threshold_db: float
    isolation: list | None = None
    floor: DiffResult | None = None

    @property
    def sources(self) -> list[str]:
        return self.reference.sources

    @property
    def seconds(self) -> float:
        return self.reference.output.shape[-1] / SAMPLERATE

    @property
    def end_to_end_ok(self) -> bool:
        return bool(np.all(self.snr_db >= self.threshold_db))

    @property
    def passed(self) -> bool:
        """Every common point within tolerance and every source above the SNR threshold."""
        return self.diff.ok and self.end_to_end_ok


def _end_to_end(reference: Trace, ours: Trace):
    if reference.output is None or ours.output is None:
        raise ValueError("parity needs both runs' outputs: pass traces made by collect, not loaded ones")
    expected = reference.output.astype(np.float64)
    error = expected - ours.output
    return snr_db(expected, ours.output), np.abs(error).max(axis=(1, 2))


def parity(checkpoint, mix, *, dtype="float32", segment_only=False, isolate=False, floor=False,
           rtol=None, atol=None, overrides=None, seed=0, model=None, reference: Trace | None = None,
           save_tensors=False) -> ParityReport:
    """Trace PyTorch demucs and our model on ``mix (channels, samples)`` and compare them.

    ``checkpoint`` is a model file, or the name of an official architecture
    (``reference.ARCHITECTURES``: "htdemucs", "htdemucs_6s", "defaults";
    ``HDEMUCS_ARCHITECTURES``: "hdemucs_mmi", ...; ``DEMUCS_ARCHITECTURES``) whose seeded
    random weights (``seed``) are saved to a temporary file for both sides to load.
    ``model`` may be our loaded (possibly edited) model of that checkpoint; ``reference`` a
    reference trace already collected on the same checkpoint and mix (it must carry its
    output, and its tensors for ``isolate``), which saves running PyTorch again.
    ``save_tensors`` keeps every tensor in both traces (the diff then also compares
    tensors); ``isolate`` keeps the reference's. ``floor`` (float32 runs only) also runs the
    reference in float64. ``rtol``, ``atol`` and ``overrides`` go to ``diff.diff``.
    """
    require_reference()
    from numba_demucs.loading import load_model

    from . import collect, collect_umx
    from . import isolate as isolation
    from . import reference as torch_side

    dtype = np.dtype(dtype).name
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(checkpoint, str) and checkpoint in UMX_ARCHITECTURES:
            from . import reference_umx

            name, checkpoint = checkpoint, Path(folder) / checkpoint
            reference_umx.save_targets(reference_umx.build_separator(name, seed=seed), checkpoint)
        elif isinstance(checkpoint, str) and checkpoint in {
                **torch_side.ARCHITECTURES, **torch_side.HDEMUCS_ARCHITECTURES,
                **torch_side.DEMUCS_ARCHITECTURES}:
            checkpoint = torch_side.save_th(torch_side.build_model(checkpoint, seed=seed), Path(folder))
        if collect_umx.is_openunmix_folder(checkpoint):
            # Open-Unmix runs the whole track: no segments
            def trace_reference(dtype, tensors=False):
                return collect_umx.trace_reference(checkpoint, mix, dtype, tensors)

            def trace_ours():
                return collect_umx.trace_ours(checkpoint, mix, dtype, save_tensors, model=model)

            def our_model_and_mix():
                return (model if model is not None else collect_umx.load(checkpoint, dtype=dtype)), mix
        else:
            def trace_reference(dtype, tensors=False):
                return collect.trace_reference(checkpoint, mix, dtype, segment_only, tensors)

            def trace_ours():
                return collect.trace_ours(checkpoint, mix, dtype, segment_only, save_tensors,
                                          model=model)

            def our_model_and_mix():
                loaded = model if model is not None else load_model(Path(checkpoint), dtype=dtype)
                return loaded, collect.segment_of(mix, loaded, segment_only)
        if reference is None:
            reference = trace_reference(dtype, save_tensors or isolate)
        ours = trace_ours()
        rounding = None
        if floor and dtype == "float32":
            exact = trace_reference("float64")
            rounding = diff(exact, reference)  # no tensors on the float64 side: statistics only
        result = diff(reference, ours, rtol=rtol, atol=atol, overrides=overrides)
        rows = None
        if isolate:
            ours_model, model_mix = our_model_and_mix()
            rows = isolation.isolate(reference, ours_model, model_mix, segment_only)
    snr, worst = _end_to_end(reference, ours)
    return ParityReport(reference=reference, ours=ours, diff=result, dtype=dtype, snr_db=snr,
                        max_abs_error=worst, threshold_db=END_TO_END_THRESHOLD_DB[dtype],
                        isolation=rows, floor=rounding)
