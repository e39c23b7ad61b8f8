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
def im2col_1d(x, kernel_size, stride, padding, dilation):
    """Columns ``(channels * kernel_size, batch * out_length)`` of a zero-padded 1-D input."""
    batch, channels, length = x.shape
    out_length = (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    cols = np.zeros((channels * kernel_size, batch * out_length), dtype=x.dtype)
    for c in range(channels):
        for k in range(kernel_size):
            row = c * kernel_size + k
            for b in range(batch):
                base = b * out_length
                for t in range(out_length):
                    src = t * stride + k * dilation - padding
                    if 0 <= src < length:
                        cols[row, base + t] = x[b, c, src]
    return cols


@kernel
def im2col_2d(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """Columns ``(channels * kh * kw, out_h * out_w)`` of a zero-padded 2-D input."""
    channels, height, width = x.shape
    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    cols = np.zeros((channels * kernel_h * kernel_w, out_h * out_w), dtype=x.dtype)
    for c in range(channels):
        for kh in range(kernel_h):
            for kw in range(kernel_w):
                row = (c * kernel_h + kh) * kernel_w + kw
                for i in range(out_h):
                    src_h = i * stride_h + kh - pad_h
                    if src_h < 0 or src_h >= height:
                        continue
                    for j in range(out_w):
                        src_w = j * stride_w + kw - pad_w
                        if 0 <= src_w < width:
                            cols[row, i * out_w + j] = x[c, src_h, src_w]
    return cols


@kernel
def col2im_transposed_2d(cols, out_channels, kernel_h, kernel_w, in_h, in_w, stride_h, stride_w):
    """Scatter-add ``cols (out * kh * kw, in_h * in_w)`` into the transposed-conv output."""
    out_h = (in_h - 1) * stride_h + kernel_h
    out_w = (in_w - 1) * stride_w + kernel_w
    out = np.zeros((out_channels, out_h, out_w), dtype=cols.dtype)
    for c in range(out_channels):
        for kh in range(kernel_h):
            for kw in range(kernel_w):
                row = (c * kernel_h + kh) * kernel_w + kw
                for i in range(in_h):
                    dst_h = i * stride_h + kh
                    for j in range(in_w):
                        out[c, dst_h, j * stride_w + kw] += cols[row, i * in_w + j]
    return out


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


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d for ``x (batch, in, length)`` -> ``(batch, out, out_length)``."""
    batch, in_channels, _ = x.shape
    out_channels, group_in, kernel_size = weight.shape
    if group_in * groups != in_channels or out_channels % groups:
        raise ValueError(
            f"conv1d: weight {weight.shape} with groups={groups} does not fit input {x.shape}"
        )
    group_out = out_channels // groups
    outputs = []
    for g in range(groups):
        xg = np.ascontiguousarray(x[:, g * group_in:(g + 1) * group_in])
        cols = im2col_1d(xg, kernel_size, stride, padding, dilation)
        wg = weight[g * group_out:(g + 1) * group_out].reshape(group_out, -1)
        outputs.append(wg @ cols)
    out = outputs[0] if groups == 1 else np.concatenate(outputs, axis=0)
    _with_bias(out, bias)
    out_length = out.shape[1] // batch
    return np.ascontiguousarray(out.reshape(out_channels, batch, out_length).transpose(1, 0, 2))


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
        out = pointwise_conv(x.reshape(channels, -1), weight, bias)
    else:
        cols = im2col_2d(np.ascontiguousarray(x), kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)
        out = _with_bias(weight.reshape(out_channels, -1) @ cols, bias)
    return out.reshape(out_channels, out_h, out_w)


def conv_transpose2d(x, weight, bias=None, stride=(1, 1)):
    """torch.nn.functional.conv_transpose2d (no padding) for ``x (in, h, w)``."""
    in_channels, in_h, in_w = x.shape
    w_in, out_channels, kernel_h, kernel_w = weight.shape
    if w_in != in_channels:
        raise ValueError(f"conv_transpose2d: weight {weight.shape} does not fit input {x.shape}")
    wt = np.ascontiguousarray(weight.reshape(in_channels, -1).T)
    cols = wt @ x.reshape(in_channels, -1)
    out = col2im_transposed_2d(cols, out_channels, kernel_h, kernel_w, in_h, in_w, stride[0], stride[1])
    if bias is not None:
        add_channel_bias(out.reshape(out_channels, -1), bias)
    return out


def conv_transpose1d(x, weight, bias=None, stride=1):
    """torch.nn.functional.conv_transpose1d (no padding) for ``x (in, length)``."""
    out = conv_transpose2d(x[:, None, :], weight[:, :, None, :], bias, (1, stride))
    return out[:, 0, :]
