"""STFT and iSTFT exactly as demucs' ``spec.py`` calls torch.stft / torch.istft.

That is: periodic Hann window of length ``n_fft``, ``center=True`` with reflect padding,
one-sided spectrum, ``normalized=True`` (scaled by 1/sqrt(n_fft) forward, sqrt(n_fft)
backward), and for the inverse a window-power envelope division and trimming to
``length``. The transform itself is NumPy's pocketfft, run in float64; the Numba kernels
do the framing and the overlap-add around it.
"""
from __future__ import annotations

import math

import numpy as np

from .._threads import share
from ._config import kernel


def hann_window(n, dtype=np.float32):
    """torch.hann_window(n) (periodic), computed in float64 and rounded once."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(dtype)


@kernel
def reflect_pad(x, left, right):
    """``x (rows, length)`` padded by reflection (edge sample not repeated), like torch 'reflect'."""
    rows, length = x.shape
    out = np.empty((rows, length + left + right), dtype=x.dtype)
    for r in range(rows):
        for i in range(length + left + right):
            j = i - left
            if j < 0:
                j = -j
            elif j >= length:
                j = 2 * (length - 1) - j
            out[r, i] = x[r, j]
    return out


@kernel
def frame_signal(x, n_fft, hop, window):
    """Windowed frames ``(rows, frames, n_fft)`` in float64 of an already padded ``x (rows, length)``."""
    rows, length = x.shape
    frames = 1 + (length - n_fft) // hop
    out = np.empty((rows, frames, n_fft), dtype=np.float64)
    for r in range(rows):
        for f in range(frames):
            start = f * hop
            for i in range(n_fft):
                out[r, f, i] = float(x[r, start + i]) * float(window[i])
    return out


@kernel
def overlap_add(frames, hop, window):
    """Sum of windowed ``frames (rows, count, n_fft)`` and the summed squared window."""
    rows, count, n_fft = frames.shape
    length = n_fft + hop * (count - 1)
    out = np.zeros((rows, length), dtype=np.float64)
    envelope = np.zeros(length, dtype=np.float64)
    for f in range(count):
        start = f * hop
        for i in range(n_fft):
            w = float(window[i])
            envelope[start + i] += w * w
            for r in range(rows):
                out[r, start + i] += frames[r, f, i] * w
    return out, envelope


def stft(x, n_fft, hop):
    """``x (rows, length)`` -> complex ``(rows, n_fft // 2 + 1, frames)`` in x's precision.

    One row at a time, so the float64 frames and spectrum exist for one row only.
    """
    complex_dtype = np.complex64 if x.dtype == np.float32 else np.complex128
    window = hann_window(n_fft, x.dtype)
    padded = reflect_pad(np.ascontiguousarray(x), n_fft // 2, n_fft // 2)
    frames_count = 1 + (padded.shape[1] - n_fft) // hop
    out = np.empty((x.shape[0], n_fft // 2 + 1, frames_count), dtype=complex_dtype)

    def row(r):
        frames = frame_signal(padded[r:r + 1], n_fft, hop, window)[0]
        spectrum = np.fft.rfft(frames, axis=-1)
        spectrum *= 1.0 / math.sqrt(n_fft)
        out[r] = spectrum.T

    share(row, x.shape[0])  # rows are independent: a spare core may take some
    return out


def istft(z, hop, length):
    """complex ``z (rows, freqs, frames)`` -> real ``(rows, length)``, n_fft = 2 * (freqs - 1).

    One row at a time (the float64 spectrum and frames of every source and channel at once
    were the largest temporaries of a whole forward pass).
    """
    real_dtype = np.float32 if z.dtype == np.complex64 else np.float64
    rows, freqs, count = z.shape
    n_fft = 2 * (freqs - 1)
    window = hann_window(n_fft, real_dtype)
    start = n_fft // 2
    out = np.zeros((rows, length), dtype=real_dtype)

    def row(r):
        spectrum = z[r].T.astype(np.complex128)
        spectrum *= math.sqrt(n_fft)
        frames = np.fft.irfft(spectrum, n=n_fft, axis=-1)
        summed, envelope = overlap_add(frames[None], hop, window)
        stop = min(start + length, summed.shape[1])
        if np.any(envelope[start:stop] < 1e-11):
            raise ValueError("istft: window overlap-add is zero somewhere; hop too large for n_fft")
        out[r, :stop - start] = summed[0, start:stop] / envelope[start:stop]

    share(row, rows)  # rows are independent: a spare core may take some
    return out
