"""Slow, obvious NumPy references for every kernel. Used only by the tests.

Each follows the PyTorch definition literally (loops over kernel taps, direct DFT
sums) so that a bug in the fast path cannot hide in a shared helper.
"""
from __future__ import annotations

import math

import numpy as np


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    batch, in_channels, length = x.shape
    out_channels, group_in, kernel_size = weight.shape
    group_out = out_channels // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    out_length = (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    out = np.zeros((batch, out_channels, out_length), dtype=np.float64)
    for o in range(out_channels):
        g = o // group_out
        for k in range(kernel_size):
            taps = xp[:, g * group_in:(g + 1) * group_in,
                      k * dilation: k * dilation + stride * (out_length - 1) + 1: stride]
            out[:, o] += np.einsum("bcl,c->bl", taps, weight[o, :, k])
        if bias is not None:
            out[:, o] += bias[o]
    return out


def conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
    channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    xp = np.pad(x, ((0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    out_h = (height + 2 * padding[0] - kernel_h) // stride[0] + 1
    out_w = (width + 2 * padding[1] - kernel_w) // stride[1] + 1
    out = np.zeros((out_channels, out_h, out_w), dtype=np.float64)
    for kh in range(kernel_h):
        for kw in range(kernel_w):
            patch = xp[:, kh: kh + stride[0] * (out_h - 1) + 1: stride[0],
                       kw: kw + stride[1] * (out_w - 1) + 1: stride[1]]
            out += np.einsum("chw,oc->ohw", patch, weight[:, :, kh, kw])
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_transpose2d(x, weight, bias=None, stride=(1, 1)):
    in_channels, in_h, in_w = x.shape
    _, out_channels, kernel_h, kernel_w = weight.shape
    out = np.zeros((out_channels, (in_h - 1) * stride[0] + kernel_h,
                    (in_w - 1) * stride[1] + kernel_w))
    for i in range(in_h):
        for j in range(in_w):
            contribution = np.einsum("c,cokl->okl", x[:, i, j], weight)
            out[:, i * stride[0]: i * stride[0] + kernel_h,
                j * stride[1]: j * stride[1] + kernel_w] += contribution
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_transpose1d(x, weight, bias=None, stride=1):
    return conv_transpose2d(x[:, None, :], weight[:, :, None, :], bias, (1, stride))[:, 0]


def group_norm(x, groups, weight, bias, eps):
    batch, channels = x.shape[:2]
    grouped = x.reshape(batch, groups, -1).astype(np.float64)
    mean = grouped.mean(axis=2, keepdims=True)
    var = grouped.var(axis=2, keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + eps)).reshape(batch, channels, -1)
    return normed * weight[:, None] + bias[:, None]


def layer_norm(x, weight, bias, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    erf = np.vectorize(math.erf)
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def glu(x):
    half = x.shape[1] // 2
    return x[:, :half].astype(np.float64) * sigmoid(x[:, half:])


def softmax_rows(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def multi_head_attention(query, key, in_proj_weight, in_proj_bias, out_proj_weight,
                         out_proj_bias, heads):
    channels = query.shape[1]
    dim = channels // heads
    q = query @ in_proj_weight[:channels].T + in_proj_bias[:channels]
    k = key @ in_proj_weight[channels:2 * channels].T + in_proj_bias[channels:2 * channels]
    v = key @ in_proj_weight[2 * channels:].T + in_proj_bias[2 * channels:]
    out = np.zeros((query.shape[0], channels))
    for h in range(heads):
        cols = slice(h * dim, (h + 1) * dim)
        weights = softmax_rows(q[:, cols] @ k[:, cols].T / math.sqrt(dim))
        out[:, cols] = weights @ v[:, cols]
    return out @ out_proj_weight.T + out_proj_bias


def hann_window(n):
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def stft(x, n_fft, hop):
    """Direct DFT of reflect-padded, Hann-windowed frames, scaled by 1/sqrt(n_fft)."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    count = 1 + (padded.shape[1] - n_fft) // hop
    window = hann_window(n_fft)
    bins = np.arange(n_fft // 2 + 1)
    basis = np.exp(-2j * np.pi * np.outer(bins, np.arange(n_fft)) / n_fft)
    out = np.zeros((x.shape[0], n_fft // 2 + 1, count), dtype=np.complex128)
    for f in range(count):
        frame = padded[:, f * hop: f * hop + n_fft] * window
        out[:, :, f] = frame @ basis.T
    return out / math.sqrt(n_fft)


def istft(z, hop, length):
    """Inverse DFT per frame, windowed overlap-add, divided by the summed squared window."""
    rows, freqs, count = z.shape
    n_fft = 2 * (freqs - 1)
    window = hann_window(n_fft)
    full = np.concatenate([z, np.conj(z[:, -2:0:-1])], axis=1) * math.sqrt(n_fft)
    full[:, 0] = full[:, 0].real
    full[:, freqs - 1] = full[:, freqs - 1].real
    basis = np.exp(2j * np.pi * np.outer(np.arange(n_fft), np.arange(n_fft)) / n_fft)
    total = n_fft + hop * (count - 1)
    out = np.zeros((rows, total))
    envelope = np.zeros(total)
    for f in range(count):
        frame = (full[:, :, f] @ basis.T).real / n_fft
        out[:, f * hop: f * hop + n_fft] += frame * window
        envelope[f * hop: f * hop + n_fft] += window ** 2
    start = n_fft // 2
    result = np.zeros((rows, length))
    stop = min(start + length, total)
    result[:, :stop - start] = out[:, start:stop] / envelope[start:stop]
    return result
