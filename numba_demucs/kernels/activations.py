"""Pointwise activations: GELU (exact erf form, PyTorch's default), GLU, sigmoid, softmax.

float64 arrays take the exact path: each element computed in float64 with libm's erf/exp
and rounded once. float32 arrays take a vectorisable path: libm calls are scalar and stop
LLVM from vectorising a loop (numba has no SVML here), so exp is a Cephes-style
polynomial with the power of two built from its exponent bits (within 1.5 float32 ulp,
as PyTorch's Sleef exp is within 1) and erf is Numerical Recipes' erfc (relative error
below 1.2e-7, tighter than the 1.5e-7 absolute of PyTorch's own vectorised float32 erf).
The float32 path therefore stays at the float32 rounding level PyTorch itself works at,
while the float64 path, which the 200 dB parity checks use, is unchanged.
"""
from __future__ import annotations

import math

import numpy as np

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ._config import kernel, reduction_kernel

_INV_SQRT2 = 0.7071067811865476
# Chunk of elements a fused float32 kernel works on at once (its scratch arrays' length).
CHUNK = 1024


# -- float32 exp ------------------------------------------------------------------------
@intrinsic
def _float32_with_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 ``bits``: a register move, so a loop
    building a power of two this way stays one vectorisable loop."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@kernel
def exp1_f32(v):
    """``exp`` of one float32 ``v``, for loops that inline it.

    Arguments are clamped to [-87, 88] (results below ~1.6e-38 come out as that instead of a
    subnormal: every caller adds them to 1 or to a sum of at least 1). Rounding to nearest
    by the 1.5 * 2**23 trick, not floor(), which would be a scalar libm call.
    """
    v = v if v > np.float32(-87.0) else np.float32(-87.0)
    v = v if v < np.float32(88.0) else np.float32(88.0)
    k = (v * np.float32(1.4426950408889634) + np.float32(12582912.0)) - np.float32(12582912.0)
    r = v - k * np.float32(0.693359375)
    r = r - k * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    mantissa = p * r * r + r + np.float32(1.0)
    # k is within [-126, 127] after the clamp: the biased exponent fits, shifted, in an int32
    return mantissa * _float32_with_bits(np.int32((np.int32(k) + np.int32(127)) << 23))


@kernel
def exp_f32(x):
    """``exp`` in place on a 1-D float32 ``x`` (exp1_f32 of every element)."""
    for i in range(x.size):
        x[i] = exp1_f32(x[i])


# -- GELU -------------------------------------------------------------------------------
@kernel
def _gelu_exact(flat, out):
    for i in range(flat.size):
        v = float(flat[i])
        out[i] = 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))


@kernel
def gelu_chunk_f32(src, dst, u, e):
    """GELU of a float32 ``src`` (at most ``CHUNK`` elements) into ``dst`` (may be ``src``);
    ``u`` (float64) and ``e`` (float32) are scratch at least as long.

    Every loop indexes its arrays from 0: an index such as ``flat[start + i]``, which the
    compiler cannot prove non-negative, gets numba's negative-index wraparound check, and
    that alone stops a loop from vectorising.
    """
    n = src.size
    u_n, e_n = u[:n], e[:n]
    # erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z = |v| / sqrt(2)
    for i in range(n):
        z = abs(float(src[i])) * _INV_SQRT2
        t = 1.0 / (1.0 + 0.5 * z)
        p = 0.17087277
        p = p * t - 0.82215223
        p = p * t + 1.48851587
        p = p * t - 1.13520398
        p = p * t + 0.27886807
        p = p * t - 0.18628806
        p = p * t + 0.09678418
        p = p * t + 0.37409196
        p = p * t + 1.00002368
        p = p * t - 1.26551223
        u_n[i] = t
        e_n[i] = -z * z + p
    exp_f32(e_n)
    for i in range(n):
        v = float(src[i])
        half_erfc = 0.5 * u_n[i] * e_n[i]
        phi = 1.0 - half_erfc if v >= 0 else half_erfc
        dst[i] = v * phi


@kernel
def _gelu_f32(flat, out):
    u = np.empty(CHUNK, np.float64)
    e = np.empty(CHUNK, np.float32)
    for start in range(0, flat.size, CHUNK):
        stop = min(start + CHUNK, flat.size)
        gelu_chunk_f32(flat[start:stop], out[start:stop], u, e)


@kernel
def bias_gelu_rows_f32(x, bias):
    """``x = gelu(x + bias)`` in place for float32 ``x (rows, features)``, ``bias (features,)``;
    ``x + bias`` rounded to float32 first, as a linear layer's output is."""
    u, e = np.empty(CHUNK, np.float64), np.empty(CHUNK, np.float32)
    biased = np.empty(CHUNK, np.float32)
    rows, features = x.shape
    for r in range(rows):
        row = x[r]
        for start in range(0, features, CHUNK):
            stop = min(start + CHUNK, features)
            src, add, chunk = row[start:stop], bias[start:stop], biased[:stop - start]
            for i in range(chunk.size):
                chunk[i] = src[i] + add[i]
            gelu_chunk_f32(chunk, src, u, e)


@kernel
def bias_gelu_channels_f32(x, bias, out):
    """``out[c] = gelu(x[c] + bias[c])`` for float32 ``x (channels, rows, n)`` (a view with rows
    of n contiguous, e.g. a cropped convolution output) into ``out`` of the same shape."""
    u, e = np.empty(CHUNK, np.float64), np.empty(CHUNK, np.float32)
    biased = np.empty(CHUNK, np.float32)
    channels, rows, n = x.shape
    for c in range(channels):
        value = bias[c]
        for r in range(rows):
            row, dst = x[c, r], out[c, r]
            for start in range(0, n, CHUNK):
                stop = min(start + CHUNK, n)
                src, chunk = row[start:stop], biased[:stop - start]
                for i in range(chunk.size):
                    chunk[i] = src[i] + value
                gelu_chunk_f32(chunk, dst[start:stop], u, e)


def gelu(x, out=None):
    """``x * Phi(x)`` with the normal CDF; any shape. Into ``out`` (may be ``x``) or a new array."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x) if out is None else out
    if not out.flags.c_contiguous or out.shape != x.shape:
        raise ValueError("gelu: out must be a C-contiguous array of the input's shape")
    (_gelu_f32 if x.dtype == np.float32 else _gelu_exact)(x.reshape(-1), out.reshape(-1))
    return out


# -- sigmoid and GLU --------------------------------------------------------------------
@kernel
def _logistic(v):
    # two branches so that exp never overflows
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@kernel
def _sigmoid_exact(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = _logistic(float(flat[i]))
    return out.reshape(x.shape)


@kernel
def logistic1_f32(v):
    """``logistic(v)`` of one float32, from exp(-|v|), which never overflows; float32
    arithmetic, as PyTorch's float32 sigmoid and GLU."""
    e = exp1_f32(-abs(v))
    num = np.float32(1.0) if v >= 0 else e
    return num / (np.float32(1.0) + e)


@kernel
def logistic_f32(v, out):
    """``out[i] = logistic(v[i])`` for 1-D float32 ``v`` into ``out`` (may be ``v``)."""
    for i in range(v.size):
        out[i] = logistic1_f32(v[i])


@kernel
def _sigmoid_f32(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    logistic_f32(flat, out)
    return out.reshape(x.shape)


def sigmoid(x):
    """Logistic function, any shape, returns a new array."""
    return _sigmoid_f32(x) if x.dtype == np.float32 else _sigmoid_exact(x)


@kernel
def _glu_exact(x):
    batch, channels, n = x.shape
    half = channels // 2
    out = np.empty((batch, half, n), dtype=x.dtype)
    for b in range(batch):
        for c in range(half):
            for i in range(n):
                out[b, c, i] = float(x[b, c, i]) * _logistic(float(x[b, half + c, i]))
    return out


@kernel
def _glu_f32(x):
    batch, channels, n = x.shape
    half = channels // 2
    out = np.empty((batch, half, n), dtype=x.dtype)
    for b in range(batch):
        for c in range(half):
            values, gates, dst = x[b, c], x[b, half + c], out[b, c]
            for i in range(n):
                dst[i] = values[i] * logistic1_f32(gates[i])
    return out


@kernel
def bias_glu_into_f32(x, bias, out, first):
    """``out[:, first:first + n] = glu(x + bias)`` over the channel halves of float32
    ``x (2 * channels, n)``, ``out (channels, m)`` C-contiguous (whole, so that each of its
    rows is known contiguous and the loop vectorises); ``x + bias`` rounded to float32 first,
    as a convolution's output is, so the bits of the bias then ``glu``."""
    channels2, n = x.shape
    half = channels2 // 2
    for c in range(half):
        value_bias, gate_bias = bias[c], bias[half + c]
        values, gates, dst = x[c], x[half + c], out[c, first:first + n]
        for i in range(n):
            dst[i] = (values[i] + value_bias) * logistic1_f32(gates[i] + gate_bias)


def glu(x):
    """torch.nn.functional.glu along axis 1 of ``x (batch, 2 * channels, n)``."""
    return _glu_f32(x) if x.dtype == np.float32 else _glu_exact(x)


# -- softmax ----------------------------------------------------------------------------
_LANES = 16


@kernel
def _exp_rows_exact(x, inv_sums):
    rows, n = x.shape
    for r in range(rows):
        row = x[r]
        peak = row[0]
        for i in range(1, n):
            if row[i] > peak:
                peak = row[i]
        total = 0.0
        for i in range(n):
            row[i] = math.exp(float(row[i]) - peak)
            total += row[i]
        inv_sums[r] = 1.0 / total


@kernel
def _exp_rows_f32(x, inv_sums):
    rows, n = x.shape
    peaks = np.empty(_LANES, np.float32)
    full = n - n % _LANES
    for r in range(rows):
        row = x[r]
        # the max in _LANES independent lanes: a single running max is a serial chain that
        # the compiler may not vectorise (no fastmath); the max is exact in any order
        blocks = row[:full].reshape(full // _LANES, _LANES)
        peaks[:] = row[0]
        for k in range(full // _LANES):
            block = blocks[k]
            for j in range(_LANES):
                peaks[j] = block[j] if block[j] > peaks[j] else peaks[j]
        peak = peaks[0]
        for j in range(1, _LANES):
            peak = peaks[j] if peaks[j] > peak else peak
        for i in range(full, n):
            peak = row[i] if row[i] > peak else peak
        inv_sums[r] = 1.0 / _exp_shifted_and_sum(row, peak)


@reduction_kernel
def _exp_shifted_and_sum(row, peak):
    """``row[i] = exp(row[i] - peak)`` in place (float32, exp1_f32's rounding); returns the
    float64 sum of the results, in the order the compiler chooses (``reassoc``)."""
    total = 0.0
    for i in range(row.size):
        e = exp1_f32(row[i] - peak)
        row[i] = e
        total += e
    return total


def exp_rows(x):
    """Softmax's numerators in place: ``x (rows, n)`` becomes ``exp(x - max of its row)``.

    Returns the float64 ``1 / sum`` of every row. Attention multiplies its ``(rows, d)``
    output by these instead of dividing the ``(rows, n)`` weights, one pass less over the
    larger array (and the order PyTorch's fused CPU attention divides in).
    """
    inv_sums = np.empty(x.shape[0], np.float64)
    (_exp_rows_f32 if x.dtype == np.float32 else _exp_rows_exact)(x, inv_sums)
    return inv_sums


def softmax_rows(x):
    """Softmax over the last axis of ``x (rows, n)``, in place; returns x."""
    inv_sums = exp_rows(x)
    x *= inv_sums[:, None]
    return x
