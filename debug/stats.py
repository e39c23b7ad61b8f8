"""The trace record: summary statistics of one tensor at one trace point.

A record is a plain dict of JSON-friendly Python values (see ``RECORD_KEYS``) so that it can be
written to a dump line as is. Statistics are accumulated in float64 whatever the tensor's
dtype: a float32 sum over 10^7 elements accumulated in float32 loses digits that a float64
comparison against the reference would then report as a divergence of ours.

NaN and Inf are counted (``nan``, ``inf``) and left out of every other statistic, so a single
bad element does not turn min/max/mean/std/sum/l2 into NaN and hide how the rest of the tensor
compares. ``count`` is the number of elements (``size``), non-finite ones included; the
moments are over the ``count - nan - inf`` finite ones. When no element is finite (or the
tensor is empty) the statistics and the arg indices are ``None``.
"""
from __future__ import annotations

import warnings

import numpy as np

# Statistics that are floats (or None); dumpfile encodes their non-finite values.
FLOAT_KEYS = ("min", "max", "mean", "std", "sum", "l2")

RECORD_KEYS = ("name", "context", "index", "shape", "dtype", "count",
               *FLOAT_KEYS,
               "argmin", "argmax", "argmin_index", "argmax_index", "nan", "inf")


def tensor_stats(name: str, array, context: dict | None = None, index: int | None = None) -> dict:
    """Return the record of ``array`` at trace point ``name``.

    ``context`` holds the call indices (``{"segment": 2, "shift": 0, "model": 1}``), ``index``
    the position of the point in the forward order. ``argmin``/``argmax`` are flat indices in
    C order (first occurrence, like numpy and torch), ``argmin_index``/``argmax_index`` the
    same positions as multi-indices.
    """
    a = np.asarray(array)
    if np.iscomplexobj(a):
        # The port keeps complex spectra as real channels; a complex tensor here is a bug
        # in the caller, and min/max of complex numbers has no meaning anyway.
        raise TypeError(f"trace point {name!r}: complex tensor ({a.dtype}); trace real and imaginary parts")
    record = {
        "name": str(name),
        "context": dict(context) if context else {},
        "index": None if index is None else int(index),
        "shape": [int(n) for n in a.shape],
        "dtype": str(a.dtype),
        "count": int(a.size),
    }
    for key in FLOAT_KEYS:
        record[key] = None
    record.update(argmin=None, argmax=None, argmin_index=None, argmax_index=None, nan=0, inf=0)
    if a.size == 0:
        return record

    # One float64 copy in C order: flat indices are then C-order positions whatever the
    # input's memory layout, and the arithmetic below can work in place on it.
    x = np.array(a, dtype=np.float64, order="C").reshape(-1)
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(x)
        n_finite = int(np.count_nonzero(finite))
    else:
        finite, n_finite = None, x.size
    if n_finite < x.size:
        nan = int(np.count_nonzero(np.isnan(x)))
        record["nan"] = nan
        record["inf"] = x.size - n_finite - nan
        if n_finite == 0:
            return record
        # Non-finite elements cannot win argmin/argmax once replaced by +/-inf, unless every
        # finite element were +/-inf, which n_finite > 0 excludes.
        argmin = int(np.argmin(np.where(finite, x, np.inf)))
        argmax = int(np.argmax(np.where(finite, x, -np.inf)))
        values = x[finite]
    else:
        argmin = int(np.argmin(x))
        argmax = int(np.argmax(x))
        values = x

    total = float(np.sum(values))          # numpy sums pairwise: error ~ log2(N) ulp of float64
    mean = total / n_finite
    l2 = float(np.sqrt(np.dot(values, values)))
    # Two passes (subtract the mean, then square) rather than E[x^2] - E[x]^2, which cancels
    # catastrophically for tensors whose mean is large compared with their spread.
    centred = values - mean
    std = float(np.sqrt(np.dot(centred, centred) / n_finite))

    record.update(
        min=float(x[argmin]), max=float(x[argmax]), mean=float(mean), std=std, sum=total, l2=l2,
        argmin=argmin, argmax=argmax,
        argmin_index=[int(i) for i in np.unravel_index(argmin, a.shape)],
        argmax_index=[int(i) for i in np.unravel_index(argmax, a.shape)],
    )
    return record


def snr_db(reference, estimate):
    """Per-source SNR in dB, ``10 log10(sum ref^2 / sum (ref - est)^2)`` over all but axis 0."""
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(estimate, dtype=np.float64)
    axes = tuple(range(1, reference.ndim))
    with np.errstate(divide="ignore"):
        return 10 * np.log10((reference ** 2).sum(axis=axes) / (error ** 2).sum(axis=axes))


def channel_stats(array, axis: int = 0):
    """Statistics of each slice of ``array`` along ``axis`` (a channel), as a pandas DataFrame.

    Columns ``mean``, ``std`` (population), ``min``, ``max``, ``rms`` and ``nonfinite``, one row
    per channel, computed in float64 over the finite elements. A single broken filter shows up
    as one channel whose row stands out, which a whole-tensor record averages away.
    """
    import pandas as pd

    a = np.moveaxis(np.asarray(array, dtype=np.float64), axis, 0).reshape(np.shape(array)[axis], -1)
    finite = np.isfinite(a)
    values = np.where(finite, a, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel gives NaN, not a warning
        frame = pd.DataFrame({
            "mean": np.nanmean(values, axis=1),
            "std": np.nanstd(values, axis=1),
            "min": np.nanmin(values, axis=1),
            "max": np.nanmax(values, axis=1),
            "rms": np.sqrt(np.nanmean(values ** 2, axis=1)),
            "nonfinite": (~finite).sum(axis=1),
        })
    frame.index.name = "channel"
    return frame
