"""GroupNorm and LayerNorm, with moments accumulated in float64 whatever the input dtype.

Sums run in four interleaved float64 accumulators rather than one: a single running sum is
a serial chain of dependent additions that the compiler may not reorder (no fastmath),
four independent ones keep the adder busy. In float64 the order does not matter at the
precision of a float32 or float64 result.
"""
from __future__ import annotations

import math

import numpy as np

from ._config import kernel


@kernel
def group_norm(x, groups, weight, bias, eps):
    """torch.nn.GroupNorm on ``x (batch, channels, n)`` (spatial axes flattened into n).

    Statistics are biased (divide by N) as in PyTorch; affine per channel. Returns a new array.
    """
    out = np.empty_like(x)
    group_norm_into(x, groups, weight, bias, eps, out)
    return out


@kernel
def group_norm_into(x, groups, weight, bias, eps, out):
    """``group_norm`` written into ``out``; both may be strided views (rows of n contiguous),
    e.g. ``(channels, batch, n)`` arrays seen through ``transpose(1, 0, 2)``."""
    for b in range(x.shape[0]):
        _group_norm_item(x[b], groups, weight, bias, eps, out[b])


@kernel
def _sum(row, shift, squares):
    """Sum of ``row - shift`` (or of its squares) in float64, four accumulators."""
    s0 = s1 = s2 = s3 = 0.0
    n = row.size
    full = n - n % 4
    for i in range(0, full, 4):
        d0, d1 = row[i] - shift, row[i + 1] - shift
        d2, d3 = row[i + 2] - shift, row[i + 3] - shift
        if squares:
            d0, d1, d2, d3 = d0 * d0, d1 * d1, d2 * d2, d3 * d3
        s0 += d0
        s1 += d1
        s2 += d2
        s3 += d3
    for i in range(full, n):
        d = row[i] - shift
        s0 += d * d if squares else d
    return (s0 + s1) + (s2 + s3)


@kernel
def _group_norm_item(x, groups, weight, bias, eps, out):
    channels, n = x.shape
    per_group = channels // groups
    count = per_group * n
    for g in range(groups):
        c0 = g * per_group
        total = 0.0
        for c in range(c0, c0 + per_group):
            total += _sum(x[c], 0.0, False)
        mean = total / count
        sq = 0.0
        for c in range(c0, c0 + per_group):
            sq += _sum(x[c], mean, True)
        inv_std = 1.0 / math.sqrt(sq / count + eps)
        for c in range(c0, c0 + per_group):
            scale = inv_std * weight[c]
            shift = bias[c] - mean * scale
            for i in range(n):
                out[c, i] = x[c, i] * scale + shift


@kernel
def layer_norm(x, weight, bias, eps):
    """torch.nn.LayerNorm over the last axis of ``x (rows, features)``; returns a new array."""
    rows, features = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        mean = _sum(x[r], 0.0, False) / features
        sq = _sum(x[r], mean, True)
        inv_std = 1.0 / math.sqrt(sq / features + eps)
        for i in range(features):
            out[r, i] = (x[r, i] - mean) * inv_std * weight[i] + bias[i]
    return out
