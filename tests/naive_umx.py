"""Slow, obvious NumPy twins of the Open-Unmix kernels (lstm_umx, wiener), for tests only.

Written from the definitions (torch.nn.LSTM's equations, openunmix.filtering's tensor code
read as whole-array NumPy), not from the kernels.
"""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_direction(projected, w_hh, b_hh, reverse=False):
    """``projected (frames, 4H)`` = W_ih x + b_ih; returns h per frame ``(frames, H)``."""
    frames, gates = projected.shape
    hidden = gates // 4
    h = np.zeros(hidden)
    c = np.zeros(hidden)
    out = np.zeros((frames, hidden))
    order = range(frames - 1, -1, -1) if reverse else range(frames)
    for t in order:
        g = w_hh @ h + b_hh + projected[t]
        i, f, cell, o = sigmoid(g[:hidden]), sigmoid(g[hidden:2 * hidden]), \
            np.tanh(g[2 * hidden:3 * hidden]), sigmoid(g[3 * hidden:])
        c = f * c + i * cell
        h = o * np.tanh(c)
        out[t] = h
    return out


def lstm(x, weights):
    """Stacked bidirectional LSTM; ``weights[layer] = [(w_ih, w_hh, b_ih, b_hh)] * 2``."""
    for forward, backward in weights:
        x = np.concatenate([lstm_direction(x @ w_ih.T + b_ih, w_hh, b_hh, reverse)
                            for (w_ih, w_hh, b_ih, b_hh), reverse
                            in ((forward, False), (backward, True))], axis=1)
    return x


def _complex(a):
    return a[..., 0] + 1j * a[..., 1]


def _pairs(z):
    return np.stack([z.real, z.imag], axis=-1)


def wiener(spectrograms, x, iterations=1, softmask=False, residual=False, scale_factor=10.0,
           eps=1e-10):
    """openunmix.filtering.wiener in complex NumPy: ``(frames, bins, channels, 2, sources)``."""
    x = np.array(x, dtype=np.float64)
    spectrograms = np.asarray(spectrograms, dtype=np.float64)
    if softmask:
        ratio = spectrograms / (eps + spectrograms.sum(axis=-1, keepdims=True))
        y = _complex(x)[..., None] * ratio
    else:
        silent = (x[..., 0] == 0) & (x[..., 1] == 0)
        x[..., 0][silent] = 1.0  # openunmix's atan2 writes this into the mixture
        y = spectrograms * np.exp(1j * np.arctan2(x[..., 1], x[..., 0]))[..., None]
    mix = _complex(x)
    if residual:
        y = np.concatenate([y, (mix - y.sum(axis=-1))[..., None]], axis=-1)
    if iterations == 0:
        return _pairs(y).transpose(0, 1, 2, 4, 3)
    max_abs = max(1.0, np.abs(mix).max() / scale_factor)
    mix, y = mix / max_abs, y / max_abs
    channels = mix.shape[-1]
    for _ in range(iterations):
        v = np.mean(np.abs(y) ** 2, axis=2)  # (frames, bins, sources)
        # R_j = sum_t y y^H / (eps + sum_t v)
        R = np.einsum("tfaj,tfbj->jfab", y, y.conj()) / (eps + v.sum(axis=0)).T[:, :, None, None]
        Cxx = np.sqrt(eps) * np.eye(channels) + np.einsum("tfj,jfab->tfab", v, R)
        inverse = np.linalg.inv(Cxx)
        gains = np.einsum("jfak,tfkb->tfjab", R, inverse) * v[..., None, None]
        y = np.einsum("tfjab,tfb->tfaj", gains, mix)
    y = y * max_abs
    return _pairs(y).transpose(0, 1, 2, 4, 3)
