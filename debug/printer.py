"""Print a tensor's statistics the way demucs.cpp's debug helpers do.

People porting Demucs to C++ (demucs.cpp and its descendants) compare runs by printing, at
the same places on both sides, blocks like::

    Debugging tensor!: x_enc_1
    	shape: (1, 96, 128, 336)
    	min: -0.28594133257865906
    	...
    FINISHED DEBUG FOR TENSOR x_enc_1

This prints our records in that layout so the two texts can be put side by side. Differences
from demucs.cpp that matter when reading them: our numbers are float64 statistics of the
tensor (the C++ side accumulates in float32), ``stddev`` is the population std (as the C++
helpers compute it; demucs.cpp's Python script prints torch.std, which is unbiased), NaN/Inf
elements are left out (the C++ loops let them propagate). Values are printed with Python's
shortest round-trip repr, as that script does, or with ``precision`` significant digits
(6 reproduces ``std::cout``'s default).
"""
from __future__ import annotations

import sys

import numpy as np

from .stats import tensor_stats


def _number(value, precision):
    if value is None:
        return "nan"
    return repr(float(value)) if precision is None else f"{value:.{precision}g}"


def _tuple(values):
    # "(2, 3)" for every rank, "(5)" for one axis as the C++ helpers print it
    return "(" + ", ".join(str(int(v)) for v in values) + ")"


def print_demucs_cpp(record_or_array, name: str | None = None, file=None, precision: int | None = None) -> None:
    """Print a record (from ``tensor_stats`` or a dump) or an array under ``name``.

    ``name`` defaults to the record's own name. An index that does not exist (a tensor with
    no finite element) is printed as -1 on every axis, like the C++ initial values.
    """
    if isinstance(record_or_array, dict):
        record = record_or_array
    else:
        record = tensor_stats(name or "tensor", np.asarray(record_or_array))
    name = name or record["name"]
    out = sys.stdout if file is None else file
    missing = [-1] * len(record["shape"])
    lines = [
        f"Debugging tensor!: {name}",
        f"\tshape: {_tuple(record['shape'])}",
        f"\tmin: {_number(record['min'], precision)}",
        f"\tmax: {_number(record['max'], precision)}",
        f"\tmean: {_number(record['mean'], precision)}",
        f"\tstddev: {_number(record['std'], precision)}",
        f"\tsum: {_number(record['sum'], precision)}",
        f"\tmin idx: {_tuple(record['argmin_index'] if record['argmin_index'] is not None else missing)}",
        f"\tmax idx: {_tuple(record['argmax_index'] if record['argmax_index'] is not None else missing)}",
        f"FINISHED DEBUG FOR TENSOR {name}",
    ]
    print("\n".join(lines), file=out)
