"""Local versus inherited error: run our model with every layer fed the reference's input.

Every trace point returns the value the forward pass continues with; here each point hands
back the reference's tensor for that point, so each of our layers computes from exactly the
reference's inputs. The error recorded at a point is then what that layer introduces by
itself (*local*); the ordinary run's error at the same point is what reaches it from
everything upstream as well (*total*). A broken layer has a large local error; the layers
after it keep a local error at the rounding floor while their total error is large.
"""
from __future__ import annotations

import numpy as np

from numba_demucs import trace
from numba_demucs.apply import apply_model

from .reference import leading_squeezed


def _key(name, context):
    return name, tuple(sorted(context.items()))


def _occurrences(points):
    """``{(key, k): tensor}`` for ``(name, context, tensor)`` points: a module used more than
    once per call (demucs' Demucs shares one nn.GLU among its layers) reports the same name
    and context each time, told apart here by the occurrence ``k``."""
    seen, keyed = {}, {}
    for name, context, tensor in points:
        key = _key(name, context)
        k = seen.get(key, 0)
        seen[key] = k + 1
        keyed[key, k] = tensor
    return keyed


def _relative_l2(reference, ours):
    reference = np.asarray(reference, dtype=np.float64)
    denominator = np.linalg.norm(reference)
    error = np.linalg.norm(reference - np.asarray(ours, dtype=np.float64).reshape(reference.shape))
    return float(error / denominator) if denominator > 0 else float(error)


def run_ours(model, mix, segment_only, substitute=None):
    """Our trace ``[(name, context, tensor)]``; ``substitute`` maps ((name, context), occurrence)
    to tensors (see ``_occurrences``)."""
    seen = {}

    def replace(name, context, array):
        if substitute is None:
            return None
        key = _key(name, context)
        k = seen.get(key, 0)
        seen[key] = k + 1
        reference = substitute.get((key, k))
        if reference is None or reference.size != array.size:
            return None
        return np.ascontiguousarray(reference.reshape(array.shape), dtype=array.dtype)

    batch = np.asarray(mix, dtype=model.dtype)[None]
    with trace.capture(replace=replace) as records:
        if segment_only or hasattr(model, "separate"):  # Open-Unmix runs the whole track
            model(batch)
        else:
            apply_model(model, batch, shifts=0)
    return [(name, context, leading_squeezed(array)) for name, context, array in records]


def isolate(reference, model, mix, segment_only=False):
    """Per point ``{name, context, total, local}`` relative L2 errors against the reference.

    ``reference`` is the PyTorch side's ``Trace`` on ``mix``, collected with its tensors
    (``collect.trace_reference(..., save_tensors=True)``).
    """
    if not reference.has_tensors:
        raise ValueError("isolate needs the reference's tensors: collect it with save_tensors=True")
    reference_points = [(name, context, tensor) for name, context, tensor in reference.points()
                        if tensor is not None]
    reference_points_names = _occurrences((n, c, (n, c)) for n, c, _ in reference_points)
    lookup = _occurrences(reference_points)
    normal = _occurrences(run_ours(model, mix, segment_only))
    isolated = _occurrences(run_ours(model, mix, segment_only, lookup))
    rows = []
    for (key, k), tensor in lookup.items():
        name, context = reference_points_names[key, k]
        if (key, k) not in normal or (key, k) not in isolated:
            continue
        rows.append({"name": name, "context": context,
                     "total": _relative_l2(tensor, normal[key, k]),
                     "local": _relative_l2(tensor, isolated[key, k])})
    return rows
