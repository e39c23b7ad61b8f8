"""Pointwise activations: GELU (exact erf form, PyTorch's default), GLU, sigmoid, softmax.

Each computes in float64 per element and rounds once to the array's dtype, so a float32
result is the correctly rounded value (PyTorch's vectorised float32 versions are within
an ulp of it).
"""
from __future__ import annotations

import math

import numpy as np

from ._config import kernel

_INV_SQRT2 = 0.7071067811865476


@kernel
def gelu(x):
    """``x * Phi(x)`` with the exact normal CDF; any shape, returns a new array."""
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        v = float(flat[i])
        out[i] = 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))
    return out.reshape(x.shape)


@kernel
def _logistic(v):
    # two branches so that exp never overflows
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@kernel
def sigmoid(x):
    """Logistic function, any shape, returns a new array."""
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = _logistic(float(flat[i]))
    return out.reshape(x.shape)


@kernel
def glu(x):
    """torch.nn.functional.glu along axis 1 of ``x (batch, 2 * channels, n)``."""
    batch, channels, n = x.shape
    half = channels // 2
    out = np.empty((batch, half, n), dtype=x.dtype)
    for b in range(batch):
        for c in range(half):
            for i in range(n):
                out[b, c, i] = float(x[b, c, i]) * _logistic(float(x[b, half + c, i]))
    return out


@kernel
def softmax_rows(x):
    """Softmax over the last axis of ``x (rows, n)``, in place; returns x."""
    rows, n = x.shape
    for r in range(rows):
        peak = x[r, 0]
        for i in range(1, n):
            if x[r, i] > peak:
                peak = x[r, i]
        total = 0.0
        for i in range(n):
            x[r, i] = math.exp(float(x[r, i]) - peak)
            total += x[r, i]
        inv = 1.0 / total
        for i in range(n):
            x[r, i] = x[r, i] * inv
    return x
