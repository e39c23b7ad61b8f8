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

from .._threads import share
from . import activations
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
        # one item: each product written straight into its rows of ``out`` (rows of unit
        # stride, which BLAS takes as they are), not formed apart and copied in
        if batch == 1 and kernel_size == 1 and stride == 1 and padding == 0:
            np.matmul(wg, xg[0], out=out[0, channels])  # a 1x1 conv's columns are the input
        elif batch == 1:
            for t0, t1 in _blocks(out_length, wg.shape[1]):
                cols = im2col_1d(xg, kernel_size, stride, padding, dilation, t0, t1)
                np.matmul(wg, cols, out=out[0, channels, t0:t1])
        else:
            for b0, b1 in _blocks(batch, wg.shape[1] * out_length):
                cols = im2col_1d(xg[b0:b1], kernel_size, stride, padding, dilation, 0, out_length)
                block = (wg @ cols).reshape(group_out, b1 - b0, out_length)
                out[b0:b1, channels] = block.transpose(1, 0, 2)
    if bias is not None:
        out += bias[:, None]
    return out


# Output positions accumulated at once by the direct convolution: a tile of every output
# channel's row stays in L1 while the inputs stream past it.
DIRECT_TILE = 1024


@kernel
def _taps_into(acc, base, source, weight, o, c, t0, t1, padding, dilation):
    """``acc[t - base] += weight[o, c, k] * source[t + k * dilation - padding]`` for every
    tap k in order, over the outputs ``[t0, t1)`` where that input exists."""
    length = source.size
    for k in range(weight.shape[2]):
        shift = k * dilation - padding
        lo, hi = max(t0, -shift), min(t1, length - shift)
        if hi > lo:
            w = weight[o, c, k]
            dst, src = acc[lo - base:hi - base], source[lo + shift:hi + shift]
            for t in range(hi - lo):
                dst[t] += w * src[t]


# Row ranges of a direct convolution handed out at once (share): enough pieces for a
# helper to balance, few enough that each is a long run of the kernel.
DIRECT_PIECES = 16


def conv1d_rows_direct(x, weight, bias, padding, dilation):
    """Stride-1 conv1d along the last axis of every row of contiguous ``x (in, rows, n)``,
    computed directly: ``(out, rows, out_n)`` (see ``conv1d_rows_direct_into``). Rows are
    independent: ranges of them may go to a spare core (share), each computed alike."""
    in_channels, rows, length = x.shape
    out_channels, _, kernel_size = weight.shape
    out_length = length + 2 * padding - dilation * (kernel_size - 1)
    out = np.empty((out_channels, rows, out_length), dtype=x.dtype)
    step = -(-rows // DIRECT_PIECES)

    def piece(i):
        conv1d_rows_direct_into(x, weight, bias, padding, dilation, out, i * step,
                                min(rows, (i + 1) * step))

    share(piece, -(-rows // step))
    return out


@kernel
def conv1d_rows_direct_into(x, weight, bias, padding, dilation, out, row0, row1):
    """Rows ``[row0, row1)`` of the stride-1 conv1d along the last axis of every row of
    ``x (in, rows, n)``, computed directly into ``out (out, rows, out_n)``.

    DConv's dilated convolutions have few output channels (a quarter or an eighth of the
    input's): as im2col + GEMM they wrote and reread a column matrix ``in * kernel`` times
    the input for a product of a few rows, all memory traffic. Here each output tile is
    accumulated in float32 (as a float32 GEMM does), over input channels then taps; where
    every tap of a 3-wide kernel exists, two channels' six taps go through one load and
    store of the accumulator, in the same order.
    """
    in_channels, rows, length = x.shape
    out_channels, _, kernel_size = weight.shape
    out_length = out.shape[2]
    pairs = in_channels - in_channels % 2
    for r in range(row0, row1):
        for t0 in range(0, out_length, DIRECT_TILE):
            t1 = min(t0 + DIRECT_TILE, out_length)
            # [lo, hi): outputs whose three taps are all inside the input
            lo = min(max(t0, padding), t1)
            hi = max(min(t1, length + padding - 2 * dilation), lo)
            for o in range(out_channels):
                acc = out[o, r, t0:t1]
                acc[:] = 0
                if kernel_size != 3 or hi == lo:
                    for c in range(in_channels):
                        _taps_into(acc, t0, x[c, r], weight, o, c, t0, t1, padding, dilation)
                else:
                    middle, n, start = acc[lo - t0:hi - t0], hi - lo, lo - padding
                    for c in range(0, pairs, 2):
                        w0, w1, w2 = weight[o, c, 0], weight[o, c, 1], weight[o, c, 2]
                        v0, v1, v2 = weight[o, c + 1, 0], weight[o, c + 1, 1], weight[o, c + 1, 2]
                        a0 = x[c, r, start:start + n]
                        a1 = x[c, r, start + dilation:start + dilation + n]
                        a2 = x[c, r, start + 2 * dilation:start + 2 * dilation + n]
                        b0 = x[c + 1, r, start:start + n]
                        b1 = x[c + 1, r, start + dilation:start + dilation + n]
                        b2 = x[c + 1, r, start + 2 * dilation:start + 2 * dilation + n]
                        for t in range(n):
                            value = middle[t]
                            value += w0 * a0[t]
                            value += w1 * a1[t]
                            value += w2 * a2[t]
                            value += v0 * b0[t]
                            value += v1 * b1[t]
                            value += v2 * b2[t]
                            middle[t] = value
                    for c in range(pairs, in_channels):
                        _taps_into(acc, t0, x[c, r], weight, o, c, lo, hi, padding, dilation)
                    # the few outputs at the edges, over channels then taps as in the middle
                    for edge in range(2):
                        e0, e1 = (t0, lo) if edge == 0 else (hi, t1)
                        for t in range(e0, e1):
                            value = acc[t - t0]
                            for c in range(in_channels):
                                for k in range(3):
                                    source = t + k * dilation - padding
                                    if 0 <= source < length:
                                        value += weight[o, c, k] * x[c, r, source]
                            acc[t - t0] = value
                value = bias[o]
                for t in range(t1 - t0):
                    acc[t] += value


def conv1d_rows(x, weight, bias=None, padding=0, dilation=1):
    """conv1d (stride 1, one group) along the last axis of every row of ``x (in, rows, n)``:
    ``(out, rows, out_n)``, channels first. A kernel-size-1 convolution is one GEMM on ``x``
    itself; a wider one is computed directly (``conv1d_rows_direct``)."""
    in_channels, rows, length = x.shape
    out_channels, weight_in, kernel_size = weight.shape
    if weight_in != in_channels:
        raise ValueError(f"conv1d: weight {weight.shape} does not fit input of {in_channels} channels")
    if kernel_size == 1 and padding == 0:
        out = weight.reshape(out_channels, -1) @ np.ascontiguousarray(x).reshape(in_channels, -1)
        return _with_bias(out, bias).reshape(out_channels, rows, length)
    if bias is None:
        bias = np.zeros(out_channels, dtype=weight.dtype)
    return conv1d_rows_direct(np.ascontiguousarray(x), weight, bias, padding, dilation)


def conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
    """torch.nn.functional.conv2d for one item ``x (in, h, w)`` -> ``(out, out_h, out_w)``."""
    channels, height, width = x.shape
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if in_channels != channels:
        raise ValueError(f"conv2d: weight {weight.shape} does not fit input {x.shape}")
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding
    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    x = np.ascontiguousarray(x)
    w2d = weight.reshape(out_channels, -1)
    out = np.empty((out_channels, out_h, out_w), dtype=np.result_type(x, weight))
    flat_out = out.reshape(out_channels, -1)  # a view: out is C-contiguous

    def block(i0, i1, cols):
        # straight into the block's output rows (unit-stride rows BLAS takes as they are)
        np.matmul(w2d, cols, out=flat_out[:, i0 * out_w:i1 * out_w])

    _each_column_block(block, x, kernel_h, kernel_w, stride, padding, out_h, out_w)
    return _with_bias(out.reshape(out_channels, -1), bias).reshape(out.shape)


def _each_column_block(work, x, kernel_h, kernel_w, stride, padding, out_h, out_w):
    """``work(i0, i1, columns)`` for every block of output rows of a conv2d of contiguous
    ``x``; a 1x1 convolution's columns are the input rows themselves (a strided view, no
    copy). Blocks are independent (disjoint output rows): a spare core may take some
    (share), each block built and multiplied alike."""
    channels = x.shape[0]
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding
    pointwise = kernel_h == kernel_w == 1 and stride_h == stride_w == 1 and pad_h == pad_w == 0
    flat = x.reshape(channels, -1)
    blocks = _blocks(out_h, channels * kernel_h * kernel_w * out_w)

    def one(index):
        i0, i1 = blocks[index]
        if pointwise:
            work(i0, i1, flat[:, i0 * out_w:i1 * out_w])
        else:
            work(i0, i1, im2col_2d(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                   i0, i1))

    share(one, len(blocks))


def conv2d_glu(x, weight, bias, padding=(0, 0), out=None):
    """``glu(conv2d(x) + bias)`` over the channel halves (F.glu(dim=0)), stride 1, for one
    float32 item ``x (in, h, w)``: a block of output rows at a time, so the convolution's
    full output (twice the result) never exists. The same GEMM blocks, bias and GLU as
    ``conv2d`` followed by ``glu``, so the same bits. ``out``, if given, receives the result
    when it fits (contiguous float32 of the output's shape, apart from ``x``): a decoder
    writes into its own dead input instead of a new 33 MB array. A pointwise convolution
    may write into ``x`` itself: each block of output rows is written only after the GEMM
    has read the same rows of ``x``, and no other block reads them."""
    channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = height + 2 * padding[0] - kernel_h + 1
    out_w = width + 2 * padding[1] - kernel_w + 1
    half = out_channels // 2
    x = np.ascontiguousarray(x)
    w2d = weight.reshape(out_channels, -1)
    pointwise = kernel_h == kernel_w == 1 and tuple(padding) == (0, 0)
    if not (out is not None and out.shape == (half, out_h, out_w) and out.dtype == x.dtype
            and out.flags.c_contiguous and out.flags.writeable
            and (not np.may_share_memory(out, x)
                 or (pointwise and out.shape == x.shape and out.ctypes.data == x.ctypes.data))):
        out = np.empty((half, out_h, out_w), dtype=x.dtype)
    flat_out = out.reshape(half, -1)  # a view: out is C-contiguous

    def gated_block(i0, i1, cols):
        block = w2d @ cols  # (out_channels, (i1 - i0) * out_w)
        activations.bias_glu_into_f32(block, bias, flat_out, i0 * out_w)

    _each_column_block(gated_block, x, kernel_h, kernel_w, (1, 1), padding, out_h, out_w)
    return out


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
