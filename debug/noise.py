"""Measured noise bands: how far float32 rounding alone moves each trace point (Monte Carlo).

The ``floor`` of a golden trace (``diff.with_floor``) is one sample of rounding: PyTorch
float32 against PyTorch float64. Here the same question is asked K times of our own model:
every trace point's float32 output is moved to one of its two neighbouring float32 values,
up or down at random per element (a seeded generator, one stream per run), and the run goes
on from the moved values. Each run is compared with our float64 run (the oracle) as ``diff``
compares two traces, and per point the mean and the standard deviation (over the K runs) of
the point's error are kept as its ``band``. One ulp per element at every layer is at least
as much as round-to-nearest does (half an ulp at most per operation, and a layer's output
already carries its own), so a correct float32 implementation's error sits inside the band.

Cost: K perturbed float32 runs, one float64 run and one plain float32 run (whose trace the
bands are saved on): K + 2 forward passes of one model segment.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from numba_demucs import trace
from numba_demucs._version import __version__
from numba_demucs.errors import NumbaDemucsError

from .diff import diff
from .traces import Trace

MIN_RUNS = 8


def statistic_error(point) -> float | None:
    """The error a band measures: the largest relative error of the point's statistics, as
    ``diff`` measures them (``point["errors"]``; tensors left out so that a stats-only trace,
    a golden one or a port's printout, is judged on the same measure)."""
    values = [v for v in point["errors"].values() if v is not None]
    return max(values, default=None)


def random_round(array: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """``array`` (float32 or complex64) with every nonzero finite element moved one ulp up or
    down at random (``rng``); None for other dtypes. Zeros stay zero: padding and masked values
    are exact, no rounding reaches them."""
    array = np.asarray(array)
    if array.dtype == np.complex64:
        parts = np.ascontiguousarray(array).view(np.float32)
        return random_round(parts, rng).view(np.complex64).reshape(array.shape)
    if array.dtype != np.float32:
        return None
    up = rng.integers(0, 2, size=array.shape, dtype=np.int8).astype(bool)
    moved = np.where(up, np.nextafter(array, np.float32(np.inf)), np.nextafter(array, np.float32(-np.inf)))
    keep = (array == 0) | ~np.isfinite(array)
    return np.ascontiguousarray(np.where(keep, array, moved), dtype=np.float32)


def _run(model, batch, recorder, perturb=None):
    """One forward pass recording every point; ``perturb(array)`` may replace each output."""
    def replace(name, context, array):
        moved = None if perturb is None else perturb(array)
        recorder(name, context, array if moved is None else moved)
        return moved

    with trace.capture(record=lambda *a: None, replace=replace):
        return model(batch)[0]


def measure_bands(checkpoint, mix, runs: int = MIN_RUNS, seed: int = 0) -> Trace:
    """Our float32 trace of one model call on ``mix``, each record carrying its ``band``.

    ``band`` = ``{"mean", "std", "runs"}`` of the point's statistic error (``statistic_error``)
    over ``runs`` randomly rounded runs against the float64 run. Same ``seed``, same bands.
    """
    from numba_demucs.loading import load_model

    from .collect import _header, _Recorder, segment_of

    if runs < MIN_RUNS:
        raise NumbaDemucsError(f"--runs {runs}: at least {MIN_RUNS} runs make a band")
    checkpoint = Path(checkpoint)
    model64 = load_model(checkpoint, dtype="float64")
    mix = segment_of(mix, model64, True)
    traces = {}
    for dtype, model in (("float64", model64), ("float32", load_model(checkpoint, dtype="float32"))):
        recorder = _Recorder(False)
        output = _run(model, np.asarray(mix, dtype=dtype)[None], recorder)
        header = _header(f"numba-demucs {__version__} (noise)", model, checkpoint, mix, dtype, True)
        traces[dtype] = recorder.trace(header, output)
    oracle, plain = traces["float64"], traces["float32"]
    batch = np.asarray(mix, dtype=np.float32)[None]
    errors = np.full((runs, len(oracle.records)), np.nan)
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        recorder = _Recorder(False)
        _run(model, batch, recorder, lambda array: random_round(array, rng))
        moved = recorder.trace(plain.header, None)
        for point in diff(oracle, moved, use_floor=False).points:
            error = statistic_error(point)
            if error is not None and math.isfinite(error):
                errors[r, point["position_reference"]] = error
    records = []
    for i, record in enumerate(plain.records):
        column = errors[:, i][np.isfinite(errors[:, i])]
        record = dict(record)
        if column.size:
            record["band"] = {"mean": float(column.mean()), "std": float(column.std(ddof=1)) if column.size > 1
                              else 0.0, "runs": int(column.size)}
        records.append(record)
    header = dict(plain.header,
                  bands={"runs": runs, "seed": seed, "rounding": "one ulp up or down per element",
                         "oracle": "numba-demucs float64"})
    return Trace(header, records, output=plain.output)
