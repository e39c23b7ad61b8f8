"""GroupNorm and LayerNorm, with moments accumulated in float64 whatever the input dtype."""
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
    for b in range(x.shape[0]):
        _group_norm_item(x[b], groups, weight, bias, eps, out[b])
    return out


@kernel
def _group_norm_item(x, groups, weight, bias, eps, out):
    channels, n = x.shape
    per_group = channels // groups
    count = per_group * n
    for g in range(groups):
        c0 = g * per_group
        total = 0.0
        for c in range(c0, c0 + per_group):
            for i in range(n):
                total += x[c, i]
        mean = total / count
        sq = 0.0
        for c in range(c0, c0 + per_group):
            for i in range(n):
                d = x[c, i] - mean
                sq += d * d
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
        total = 0.0
        for i in range(features):
            total += x[r, i]
        mean = total / features
        sq = 0.0
        for i in range(features):
            d = x[r, i] - mean
            sq += d * d
        inv_std = 1.0 / math.sqrt(sq / features + eps)
        for i in range(features):
            out[r, i] = (x[r, i] - mean) * inv_std * weight[i] + bias[i]
    return out
