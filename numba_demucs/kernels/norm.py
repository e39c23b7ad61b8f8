"""GroupNorm and LayerNorm, with moments accumulated in float64 whatever the input dtype.

Both moments come from one pass, as sums of the values' differences from a pivot (a value of
the group itself), in float64 summed in whatever order the compiler vectorises them in
(``reduction_kernel``: LLVM's ``reassoc`` alone, for these sums only). In float64 the order
does not matter at the precision of a float32 or float64 result.
"""
from __future__ import annotations

import math

import numpy as np

from ._config import kernel, reduction_kernel
from .activations import CHUNK, gelu_chunk_f32, logistic1_f32


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
    """``group_norm`` written into ``out`` (may be ``x``); both ``(batch, channels, n)``,
    possibly strided views with rows of n contiguous."""
    group_norm_channels_first(x.transpose(1, 0, 2), groups, weight, bias, eps,
                              out.transpose(1, 0, 2))


@kernel
def group_norm_channels_first(x, groups, weight, bias, eps, out):
    """GroupNorm of every item of ``x (channels, items, n)`` into ``out`` (may be ``x``):
    PyTorch's ``(items, channels, n)`` stored channels first, as DConv keeps it."""
    channels, items, n = x.shape
    scales, shifts = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    for b in range(items):
        _affine(x, b, groups, weight, bias, eps, scales, shifts)
        for c in range(channels):
            scale, shift = scales[c], shifts[c]
            row, dst = x[c, b], out[c, b]
            for i in range(n):
                dst[i] = row[i] * scale + shift


@reduction_kernel
def _shifted_sums(row, pivot):
    """``(sum(row - pivot), sum((row - pivot) ** 2))`` in float64, in the order the compiler
    chooses (``reassoc``: vector lanes); each difference and square in row's dtype."""
    total = sq = 0.0
    for i in range(row.size):
        d = row[i] - pivot
        total += d
        sq += d * d
    return total, sq


@kernel
def _affine(x, b, groups, weight, bias, eps, scales, shifts):
    """GroupNorm of item ``b`` of ``x (channels, items, n)`` as ``x * scales[c] + shifts[c]``.

    Moments in float64; ``scales`` and ``shifts`` are in x's dtype, so a float32 tensor is
    normalised in float32 arithmetic, as PyTorch does (and in vectors twice as wide)."""
    channels, _, n = x.shape
    per_group = channels // groups
    count = per_group * n
    for g in range(groups):
        c0 = g * per_group
        # One pass for both moments, about a value of the group itself: with float64 sums
        # of float32 data the variance then loses nothing to cancellation unless the mean
        # is millions of standard deviations from that value.
        pivot = float(x[c0, b, 0]) if n else 0.0
        total = sq_about_pivot = 0.0
        for c in range(c0, c0 + per_group):
            s, q = _shifted_sums(x[c, b], pivot)
            total += s
            sq_about_pivot += q
        offset = total / count
        mean = pivot + offset
        sq = max(sq_about_pivot - offset * total, 0.0)
        inv_std = 1.0 / math.sqrt(sq / count + eps)
        for c in range(c0, c0 + per_group):
            scale = inv_std * weight[c]
            scales[c] = scale
            shifts[c] = bias[c] - mean * scale


@kernel
def group_norm_gelu_f32(x, groups, weight, bias, eps, out):
    """``gelu(group_norm(x))`` in one pass after the statistics, for float32 ``x (channels,
    items, n)`` laid out as ``group_norm_channels_first`` takes it (``out`` may be ``x``).
    Each value is rounded to float32 after the norm, as the two layers give it."""
    channels, items, n = x.shape
    scales, shifts = np.empty(channels, np.float32), np.empty(channels, np.float32)
    normed = np.empty(CHUNK, np.float32)
    u, e = np.empty(CHUNK, np.float64), np.empty(CHUNK, np.float32)
    for b in range(items):
        _affine(x, b, groups, weight, bias, eps, scales, shifts)
        for c in range(channels):
            scale, shift = scales[c], shifts[c]
            row, dst = x[c, b], out[c, b]
            for start in range(0, n, CHUNK):
                stop = min(start + CHUNK, n)
                src, chunk = row[start:stop], normed[:stop - start]
                for i in range(chunk.size):
                    chunk[i] = src[i] * scale + shift
                gelu_chunk_f32(chunk, dst[start:stop], u, e)


@kernel
def gated_residual_f32(x, bias, weight, norm_bias, eps, layer_scale, residual, first):
    """The end of a DConv branch in one pass after the statistics, for float32 arrays:
    ``residual[:, first:first + items] += layer_scale * glu(group_norm(x + bias))`` with one
    group per item.

    ``x (2 * channels, items, n)`` is a 1x1 convolution's output without its bias (the bias
    is added in place first), ``residual (channels, all items, n)`` C-contiguous (whole, so
    that each of its rows is known contiguous and the gating loop vectorises; a sliced view
    made it scalar, 6x slower); each item (a frequency row) is normalised on its own, as in PyTorch's ``(items, channels, n)`` layout. Every
    step is rounded to float32 where the separate layers round it, so the result has the
    bits those layers give.
    """
    channels2, items, n = x.shape
    half = channels2 // 2
    for c in range(channels2):
        value = bias[c]
        for b in range(items):
            row = x[c, b]
            for i in range(n):
                row[i] += value
    scales, shifts = np.empty(channels2, np.float32), np.empty(channels2, np.float32)
    for b in range(items):
        _affine(x, b, 1, weight, norm_bias, eps, scales, shifts)
        for c in range(half):
            scale_a, shift_a = scales[c], shifts[c]
            scale_g, shift_g = scales[half + c], shifts[half + c]
            gain = layer_scale[c]
            values, gates, dst = x[c, b], x[half + c, b], residual[c, first + b]
            for i in range(n):
                gate = logistic1_f32(gates[i] * scale_g + shift_g)
                gated = (values[i] * scale_a + shift_a) * gate
                dst[i] = gated * gain + dst[i]


@kernel
def layer_norm(x, weight, bias, eps):
    """torch.nn.LayerNorm over the last axis of ``x (rows, features)``; returns a new array."""
    rows, features = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        pivot = float(x[r, 0])
        total, sq_about_pivot = _shifted_sums(x[r], pivot)
        offset = total / features
        mean = pivot + offset
        sq = max(sq_about_pivot - offset * total, 0.0)
        inv_std = 1.0 / math.sqrt(sq / features + eps)
        for i in range(features):
            out[r, i] = (x[r, i] - mean) * inv_std * weight[i] + bias[i]
    return out
