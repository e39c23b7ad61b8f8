"""STFT and iSTFT exactly as demucs' ``spec.py`` calls torch.stft / torch.istft.

That is: periodic Hann window of length ``n_fft``, ``center=True`` with reflect padding,
one-sided spectrum, ``normalized=True`` (scaled by 1/sqrt(n_fft) forward, sqrt(n_fft)
backward), and for the inverse a window-power envelope division and trimming to
``length``. The transform itself is NumPy's pocketfft, in the signal's precision as
torch.stft runs it (float32 frames and spectrum for a float32 signal, where NumPy 2 keeps
single precision; float64 otherwise); the Numba kernels do the framing and the overlap-add
around it, the overlap-add summing in float64.
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
def _frame_signal_into(x, n_fft, hop, window, out):
    rows, frames, _ = out.shape
    for r in range(rows):
        for f in range(frames):
            src, dst = x[r, f * hop:f * hop + n_fft], out[r, f]
            for i in range(n_fft):
                dst[i] = src[i] * window[i]


def frame_signal(x, n_fft, hop, window, dtype=np.float64):
    """Windowed frames ``(rows, frames, n_fft)`` of an already padded ``x (rows, length)``:
    each sample times the window rounded once to x's dtype, as torch.stft windows, stored
    in ``dtype`` (float64 for a transform in double precision)."""
    rows, length = x.shape
    out = np.empty((rows, 1 + (length - n_fft) // hop, n_fft), dtype=dtype)
    _frame_signal_into(x, n_fft, hop, window, out)
    return out


# NumPy 2's pocketfft transforms float32 in single precision; NumPy 1 returns complex128.
SINGLE_PRECISION_FFT = np.fft.rfft(np.zeros(4, np.float32)).dtype == np.complex64


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

    One row at a time, so the frames and spectrum exist for one row only.
    """
    complex_dtype = np.complex64 if x.dtype == np.float32 else np.complex128
    window = hann_window(n_fft, x.dtype)
    padded = reflect_pad(np.ascontiguousarray(x), n_fft // 2, n_fft // 2)
    native = x.dtype == np.float64 or SINGLE_PRECISION_FFT
    frames_count = 1 + (padded.shape[1] - n_fft) // hop
    out = np.empty((x.shape[0], n_fft // 2 + 1, frames_count), dtype=complex_dtype)

    def row(r):
        frames = frame_signal(padded[r:r + 1], n_fft, hop, window,
                              x.dtype if native else np.float64)[0]  # (frames, n_fft)
        spectrum = np.fft.rfft(frames, axis=-1)  # (frames, freqs), complex in frames' precision
        spectrum *= spectrum.real.dtype.type(1.0 / math.sqrt(n_fft))
        out[r] = spectrum.T

    share(row, x.shape[0])  # rows are independent: a spare core may take some
    return out


def istft(z, hop, length):
    """complex ``z (rows, freqs, frames)`` -> real ``(rows, length)``, n_fft = 2 * (freqs - 1).

    One row at a time (the spectrum and frames of every source and channel at once were the
    largest temporaries of a whole forward pass).
    """
    real_dtype = np.float32 if z.dtype == np.complex64 else np.float64
    rows, freqs, count = z.shape
    n_fft = 2 * (freqs - 1)
    window = hann_window(n_fft, real_dtype)
    start = n_fft // 2
    out = np.zeros((rows, length), dtype=real_dtype)
    transform_dtype = z.dtype if z.dtype == np.complex128 or SINGLE_PRECISION_FFT else np.complex128

    def row(r):
        spectrum = z[r].T.astype(transform_dtype)  # (frames, freqs)
        spectrum *= spectrum.real.dtype.type(math.sqrt(n_fft))
        frames = np.fft.irfft(spectrum, n=n_fft, axis=-1)  # (frames, n_fft)
        summed, envelope = overlap_add(frames[None], hop, window)
        stop = min(start + length, summed.shape[1])
        if np.any(envelope[start:stop] < 1e-11):
            raise ValueError("istft: window overlap-add is zero somewhere; hop too large for n_fft")
        out[r, :stop - start] = summed[0, start:stop] / envelope[start:stop]

    share(row, rows)  # rows are independent: a spare core may take some
    return out
