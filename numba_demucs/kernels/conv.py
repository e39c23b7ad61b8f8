"""Convolutions as im2col + one GEMM, and transposed convolutions as GEMM + col2im.

The Numba kernels only move data (gather into columns, scatter-add from columns);
the arithmetic is a single BLAS matrix product done by NumPy, so every convolution
of the model runs at the machine's GEMM speed. Layouts, all without a batch axis
unless stated:

- conv1d: x ``(batch, in_channels, length)``, weight ``(out, in // groups, kernel)``
- conv2d: x ``(in_channels, height, width)``, weight ``(out, in, kh, kw)``
- conv_transpose1d: x ``(in_channels, length)``, weight ``(in, out, kernel)``
- conv_transpose2d: x ``(in_channels, height, width)``, weight ``(in, out, kh, kw)``
"""
from __future__ import annotations

import numpy as np

from ._config import kernel


@kernel
def _valid_range(out_length, stride, offset, length):
    """Outputs ``t`` in [first, stop) whose source ``t * stride + offset`` is inside [0, length).

    Computed once per row so the copy loop has no bounds branch and vectorises.
    """
    first = 0
    if offset < 0:
        first = min((-offset + stride - 1) // stride, out_length)
    stop = 0
    if length - 1 - offset >= 0:
        stop = (length - 1 - offset) // stride + 1
    stop = min(stop, out_length)
    return first, max(first, stop)


@kernel
def _gather(source, dest, start, stride):
    """``dest[i] = source[start + i * stride]``, through slices indexed from 0: an index the
    compiler cannot prove non-negative gets numba's wraparound check, which stops the loop
    from vectorising."""
    count = dest.size
    if count == 0:
        return
    if stride == 1:
        dest[:] = source[start:start + count]
    else:
        strided = source[start:start + (count - 1) * stride + 1:stride]
        for i in range(count):
            dest[i] = strided[i]


@kernel
def im2col_1d(x, kernel_size, stride, padding, dilation, t0, t1):
    """Columns ``(channels * kernel_size, batch * (t1 - t0))`` of a zero-padded 1-D input,
    for the output positions ``[t0, t1)`` of every batch item."""
    batch, channels, length = x.shape
    out_length = (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    n = t1 - t0
    cols = np.empty((channels * kernel_size, batch * n), dtype=x.dtype)
    for c in range(channels):
        for k in range(kernel_size):
            row = c * kernel_size + k
            offset = k * dilation - padding
            first, stop = _valid_range(out_length, stride, offset, length)
            lo = min(max(first, t0), t1)
            hi = max(min(stop, t1), lo)
            for b in range(batch):
                base = b * n - t0
                cols[row, base + t0:base + lo] = 0
                _gather(x[b, c], cols[row, base + lo:base + hi], lo * stride + offset, stride)
                cols[row, base + hi:base + t1] = 0
    return cols


@kernel
def im2col_2d(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, i0, i1):
    """Columns ``(channels * kh * kw, (i1 - i0) * out_w)`` of a zero-padded 2-D input, for
    the output rows ``[i0, i1)``."""
    channels, height, width = x.shape
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    cols = np.empty((channels * kernel_h * kernel_w, (i1 - i0) * out_w), dtype=x.dtype)
    for c in range(channels):
        for kh in range(kernel_h):
            for kw in range(kernel_w):
                row = (c * kernel_h + kh) * kernel_w + kw
                first, stop = _valid_range(out_w, stride_w, kw - pad_w, width)
                for i in range(i0, i1):
                    base = (i - i0) * out_w
                    src_h = i * stride_h + kh - pad_h
                    if src_h < 0 or src_h >= height:
                        cols[row, base:base + out_w] = 0
                        continue
                    cols[row, base:base + first] = 0
                    _gather(x[c, src_h], cols[row, base + first:base + stop],
                            first * stride_w + kw - pad_w, stride_w)
                    cols[row, base + stop:base + out_w] = 0
    return cols


@kernel
def col2im_transposed_2d(cols, out, kernel_h, kernel_w, i0, i1, j0, j1, stride_h, stride_w):
    """Scatter-add ``cols (out * kh * kw, (i1 - i0) * (j1 - j0))``, the columns of input rows
    ``[i0, i1)`` and columns ``[j0, j1)``, into the transposed-conv output ``out``."""
    out_channels = out.shape[0]
    width = j1 - j0
    for c in range(out_channels):
        for kh in range(kernel_h):
            for kw in range(kernel_w):
                row = (c * kernel_h + kh) * kernel_w + kw
                for i in range(i0, i1):
                    src = cols[row, (i - i0) * width:(i - i0 + 1) * width]
                    first = j0 * stride_w + kw
                    dst = out[c, i * stride_h + kh, first:first + (width - 1) * stride_w + 1:stride_w]
                    for j in range(width):
                        dst[j] += src[j]


@kernel
def add_channel_bias(x, bias):
    """``x[c, ...] += bias[c]`` in place for x viewed as ``(channels, n)``."""
    for c in range(x.shape[0]):
        value = bias[c]
        for i in range(x.shape[1]):
            x[c, i] += value


def _with_bias(out2d, bias):
    if bias is not None:
        add_channel_bias(out2d, bias)
    return out2d


# Largest column matrix built at once, in elements (8 MB of float32): the full im2col of
# a decoder's 3x3 rewrite would be 300 MB per segment, and GEMMs on column blocks of this
# size already run at full speed.
COLUMN_BUDGET = 2 << 20


def _blocks(total, per_item, budget=None):
    """``[start, stop)`` ranges over ``total`` items of ``per_item`` column elements each."""
    step = max(1, (budget or COLUMN_BUDGET) // max(1, per_item))
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d for ``x (batch, in, length)`` -> ``(batch, out, out_length)``."""
    batch, in_channels, length = x.shape
    out_channels, group_in, kernel_size = weight.shape
    if group_in * groups != in_channels or out_channels % groups:
        raise ValueError(
            f"conv1d: weight {weight.shape} with groups={groups} does not fit input {x.shape}"
        )
    group_out = out_channels // groups
    out_length = (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    out = np.empty((batch, out_channels, out_length), dtype=np.result_type(x, weight))
    for g in range(groups):
        xg = np.ascontiguousarray(x[:, g * group_in:(g + 1) * group_in])
        wg = weight[g * group_out:(g + 1) * group_out].reshape(group_out, -1)
        channels = slice(g * group_out, (g + 1) * group_out)
        if batch == 1 and kernel_size == 1 and stride == 1 and padding == 0:
            out[0, channels] = wg @ xg[0]  # a 1x1 convolution's columns are the input itself
        elif batch == 1:
            for t0, t1 in _blocks(out_length, wg.shape[1]):
                cols = im2col_1d(xg, kernel_size, stride, padding, dilation, t0, t1)
                out[0, channels, t0:t1] = wg @ cols
        else:
            for b0, b1 in _blocks(batch, wg.shape[1] * out_length):
                cols = im2col_1d(xg[b0:b1], kernel_size, stride, padding, dilation, 0, out_length)
                block = (wg @ cols).reshape(group_out, b1 - b0, out_length)
                out[b0:b1, channels] = block.transpose(1, 0, 2)
    if bias is not None:
        out += bias[:, None]
    return out


def conv1d_rows(x, weight, bias=None, padding=0, dilation=1):
    """conv1d (stride 1, one group) along the last axis of every row of ``x (in, rows, n)``:
    ``(out, rows, out_n)``, channels first. A kernel-size-1 convolution is one GEMM on ``x``
    itself; otherwise columns are built for a block of rows at a time."""
    in_channels, rows, length = x.shape
    out_channels, weight_in, kernel_size = weight.shape
    if weight_in != in_channels:
        raise ValueError(f"conv1d: weight {weight.shape} does not fit input of {in_channels} channels")
    w2d = weight.reshape(out_channels, -1)
    if kernel_size == 1 and padding == 0:
        out = w2d @ np.ascontiguousarray(x).reshape(in_channels, -1)
        return _with_bias(out, bias).reshape(out_channels, rows, length)
    out_length = length + 2 * padding - dilation * (kernel_size - 1)
    out = np.empty((out_channels, rows, out_length), dtype=np.result_type(x, weight))
    # im2col_1d reads (batch, channels, n): the transposed view is that, rows unchanged
    items = x.transpose(1, 0, 2)
    for b0, b1 in _blocks(rows, w2d.shape[1] * out_length):
        cols = im2col_1d(items[b0:b1], kernel_size, 1, padding, dilation, 0, out_length)
        out[:, b0:b1] = (w2d @ cols).reshape(out_channels, b1 - b0, out_length)
    return _with_bias(out.reshape(out_channels, -1), bias).reshape(out.shape)


def pointwise_conv(x2d, weight, bias=None):
    """A kernel-size-1 convolution on ``x (in, n)``: one GEMM, ``(out, n)``."""
    out = weight.reshape(weight.shape[0], -1) @ x2d
    return _with_bias(out, bias)


def conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
    """torch.nn.functional.conv2d for one item ``x (in, h, w)`` -> ``(out, out_h, out_w)``."""
    channels, height, width = x.shape
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if in_channels != channels:
        raise ValueError(f"conv2d: weight {weight.shape} does not fit input {x.shape}")
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding
    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    if kernel_h == kernel_w == 1 and stride_h == stride_w == 1 and pad_h == pad_w == 0:
        return pointwise_conv(x.reshape(channels, -1), weight, bias).reshape(out_channels, out_h, out_w)
    x = np.ascontiguousarray(x)
    w2d = weight.reshape(out_channels, -1)
    out = np.empty((out_channels, out_h, out_w), dtype=np.result_type(x, weight))
    for i0, i1 in _blocks(out_h, w2d.shape[1] * out_w):
        cols = im2col_2d(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, i0, i1)
        out[:, i0:i1] = (w2d @ cols).reshape(out_channels, i1 - i0, out_w)
    return _with_bias(out.reshape(out_channels, -1), bias).reshape(out.shape)


def conv_transpose2d(x, weight, bias=None, stride=(1, 1)):
    """torch.nn.functional.conv_transpose2d (no padding) for ``x (in, h, w)``.

    GEMM then scatter-add, a block of input rows (or of columns when there is one row) at a
    time. Each output of the official models' kernel = 2 x stride receives exactly two
    contributions, so the blocks do not change any sum.
    """
    in_channels, in_h, in_w = x.shape
    w_in, out_channels, kernel_h, kernel_w = weight.shape
    if w_in != in_channels:
        raise ValueError(f"conv_transpose2d: weight {weight.shape} does not fit input {x.shape}")
    stride_h, stride_w = stride
    out = np.zeros((out_channels, (in_h - 1) * stride_h + kernel_h, (in_w - 1) * stride_w + kernel_w),
                   dtype=np.result_type(x, weight))
    wt = weight.reshape(in_channels, -1).T  # BLAS reads wᵀ in place
    rows = out_channels * kernel_h * kernel_w
    if in_h > 1:
        for i0, i1 in _blocks(in_h, rows * in_w):
            cols = wt @ x[:, i0:i1].reshape(in_channels, -1)
            col2im_transposed_2d(cols, out, kernel_h, kernel_w, i0, i1, 0, in_w, stride_h, stride_w)
    else:
        for j0, j1 in _blocks(in_w, rows):
            cols = wt @ x[:, 0, j0:j1]
            col2im_transposed_2d(cols, out, kernel_h, kernel_w, 0, 1, j0, j1, stride_h, stride_w)
    if bias is not None:
        add_channel_bias(out.reshape(out_channels, -1), bias)
    return out


def conv_transpose1d(x, weight, bias=None, stride=1):
    """torch.nn.functional.conv_transpose1d (no padding) for ``x (in, length)``."""
    out = conv_transpose2d(x[:, None, :], weight[:, :, None, :], bias, (1, stride))
    return out[:, 0, :]
