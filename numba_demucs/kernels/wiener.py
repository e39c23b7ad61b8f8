"""openunmix's multichannel Wiener post-filter (``openunmix.filtering.wiener``), per block.

Arrays use openunmix's layout: a complex value is a trailing pair of reals, so the mixture
is ``x (frames, bins, channels, 2)`` and the estimates ``y (frames, bins, channels, 2,
sources)``. Every elementwise step is computed in the array dtype in the order openunmix
writes it with torch tensor operations (products and sums rounded one by one, no fused
multiply-add), including the 2x2 complex channel-covariance inversion. The sums over frames
(spatial covariances and their weights) accumulate in float64 and are rounded once.

One quirk of openunmix is kept: its ``atan2`` adds 1 to the real part of the mixture
wherever a bin is exactly zero (digital silence), in the tensor the rest of the filter uses
(the residual target and the EM's input and scaling see that 1).
"""
from __future__ import annotations

import numpy as np

from ._config import kernel


@kernel
def phase_estimates(spectrograms, x, pi):
    """Magnitudes with the mixture's phase: ``spectrograms (frames, bins, channels, sources)``.

    Returns ``y (frames, bins, channels, 2, sources)``. openunmix's atan2 replaces a zero
    real part of an all-zero bin by 1 in ``x`` itself; so does this kernel.
    """
    frames, bins, channels, sources = spectrograms.shape
    y = np.empty((frames, bins, channels, 2, sources), dtype=spectrograms.dtype)
    zero = x.dtype.type(0.0)
    half_pi = pi / x.dtype.type(2.0)
    for t in range(frames):
        for f in range(bins):
            for c in range(channels):
                re = x[t, f, c, 0]
                im = x[t, f, c, 1]
                if re == zero and im == zero:
                    re = x.dtype.type(1.0)
                    x[t, f, c, 0] = re
                angle = np.arctan(im / re)
                if re < zero:
                    angle = angle + pi if im >= zero else angle - pi
                elif re == zero:
                    angle = half_pi if im > zero else -half_pi
                cos = np.cos(angle)
                sin = np.sin(angle)
                for j in range(sources):
                    y[t, f, c, 0, j] = spectrograms[t, f, c, j] * cos
                    y[t, f, c, 1, j] = spectrograms[t, f, c, j] * sin
    return y


@kernel
def softmask_estimates(spectrograms, x, eps):
    """``x * spectrogram_j / (eps + sum of spectrograms)``: the ratio-mask initial estimates."""
    frames, bins, channels, sources = spectrograms.shape
    y = np.empty((frames, bins, channels, 2, sources), dtype=spectrograms.dtype)
    for t in range(frames):
        for f in range(bins):
            for c in range(channels):
                total = spectrograms[t, f, c, 0]
                for j in range(1, sources):
                    total += spectrograms[t, f, c, j]
                total = eps + total
                for j in range(sources):
                    ratio = spectrograms[t, f, c, j] / total
                    y[t, f, c, 0, j] = x[t, f, c, 0] * ratio
                    y[t, f, c, 1, j] = x[t, f, c, 1] * ratio
    return y


@kernel
def add_residual(y, x):
    """``y`` with one more source, the mixture minus the sum of the others."""
    frames, bins, channels, parts, sources = y.shape
    out = np.empty((frames, bins, channels, parts, sources + 1), dtype=y.dtype)
    for t in range(frames):
        for f in range(bins):
            for c in range(channels):
                for p in range(parts):
                    total = y[t, f, c, p, 0]
                    out[t, f, c, p, 0] = total
                    for j in range(1, sources):
                        out[t, f, c, p, j] = y[t, f, c, p, j]
                        total += y[t, f, c, p, j]
                    out[t, f, c, p, sources] = x[t, f, c, p] - total
    return out


@kernel
def _source_models(y, eps):
    """Per source the PSD ``v (frames, bins, sources)`` (channel mean of |y|^2) and the
    spatial covariances ``R (sources, bins, 2, 2, 2)``: sum over frames of y y^H divided by
    eps plus the sum of v over frames."""
    frames, bins, channels, _, sources = y.shape
    v = np.empty((frames, bins, sources), dtype=y.dtype)
    two = y.dtype.type(channels)
    for t in range(frames):
        for f in range(bins):
            for j in range(sources):
                total = y[t, f, 0, 0, j] * y[t, f, 0, 0, j] + y[t, f, 0, 1, j] * y[t, f, 0, 1, j]
                for c in range(1, channels):
                    total += y[t, f, c, 0, j] * y[t, f, c, 0, j] + y[t, f, c, 1, j] * y[t, f, c, 1, j]
                v[t, f, j] = total / two
    covariance = np.zeros((sources, bins, channels, channels, 2), dtype=np.float64)
    weight = np.zeros((sources, bins), dtype=np.float64)
    for t in range(frames):
        for f in range(bins):
            for j in range(sources):
                weight[j, f] += v[t, f, j]
                for a in range(channels):
                    for b in range(channels):
                        ar, ai = y[t, f, a, 0, j], y[t, f, a, 1, j]
                        br, bi = y[t, f, b, 0, j], -y[t, f, b, 1, j]
                        covariance[j, f, a, b, 0] += ar * br - ai * bi
                        covariance[j, f, a, b, 1] += ar * bi + ai * br
    R = np.empty((sources, bins, channels, channels, 2), dtype=y.dtype)
    for j in range(sources):
        for f in range(bins):
            w = eps + y.dtype.type(weight[j, f])
            for a in range(channels):
                for b in range(channels):
                    for p in range(2):
                        R[j, f, a, b, p] = y.dtype.type(covariance[j, f, a, b, p]) / w
    return v, R


@kernel
def _filter(y, x, v, R, regularization):
    """y_j = v_j R_j Cxx^-1 x per bin, Cxx = regularization I + sum_j v_j R_j (2x2, complex)."""
    frames, bins, channels, _, sources = y.shape
    dt = y.dtype.type
    M = np.empty((2, 2, 2), dtype=y.dtype)
    inv = np.empty((2, 2, 2), dtype=y.dtype)
    gain = np.empty((2, 2, 2), dtype=y.dtype)
    for t in range(frames):
        for f in range(bins):
            for a in range(2):
                for b in range(2):
                    M[a, b, 0] = regularization if a == b else dt(0.0)
                    M[a, b, 1] = dt(0.0)
            for j in range(sources):
                for a in range(2):
                    for b in range(2):
                        for p in range(2):
                            M[a, b, p] = M[a, b, p] + v[t, f, j] * R[j, f, a, b, p]
            # det = M00 M11 - M01 M10, then its inverse 1/det = conj(det) / |det|^2
            det_r = (M[0, 0, 0] * M[1, 1, 0] - M[0, 0, 1] * M[1, 1, 1]) \
                - (M[0, 1, 0] * M[1, 0, 0] - M[0, 1, 1] * M[1, 0, 1])
            det_i = (M[0, 0, 0] * M[1, 1, 1] + M[0, 0, 1] * M[1, 1, 0]) \
                - (M[0, 1, 0] * M[1, 0, 1] + M[0, 1, 1] * M[1, 0, 0])
            norm = det_r * det_r + det_i * det_i
            id_r = det_r / norm
            id_i = -det_i / norm
            for a, b, sign in ((0, 0, 1.0), (1, 0, -1.0), (0, 1, -1.0), (1, 1, 1.0)):
                # the cofactor of (a, b) is M[1-b, 1-a] (times the sign)
                s_r = id_r * dt(sign)
                s_i = id_i * dt(sign)
                m_r = M[1 - b, 1 - a, 0] if a == b else M[a, b, 0]
                m_i = M[1 - b, 1 - a, 1] if a == b else M[a, b, 1]
                inv[a, b, 0] = s_r * m_r - s_i * m_i
                inv[a, b, 1] = s_r * m_i + s_i * m_r
            for j in range(sources):
                for a in range(2):
                    for b in range(2):
                        g_r = dt(0.0)
                        g_i = dt(0.0)
                        for k in range(2):
                            r_r, r_i = R[j, f, a, k, 0], R[j, f, a, k, 1]
                            g_r = g_r + (r_r * inv[k, b, 0] - r_i * inv[k, b, 1])
                            g_i = g_i + (r_r * inv[k, b, 1] + r_i * inv[k, b, 0])
                        gain[a, b, 0] = g_r * v[t, f, j]
                        gain[a, b, 1] = g_i * v[t, f, j]
                for a in range(2):
                    out_r = dt(0.0)
                    out_i = dt(0.0)
                    for k in range(2):
                        out_r = out_r + (gain[a, k, 0] * x[t, f, k, 0] - gain[a, k, 1] * x[t, f, k, 1])
                        out_i = out_i + (gain[a, k, 0] * x[t, f, k, 1] + gain[a, k, 1] * x[t, f, k, 0])
                    y[t, f, a, 0, j] = out_r
                    y[t, f, a, 1, j] = out_i


def expectation_maximization(y, x, iterations, eps, regularization):
    """openunmix's ``expectation_maximization``: refine ``y`` in place ``iterations`` times."""
    for _ in range(iterations):
        v, R = _source_models(y, eps)
        _filter(y, x, v, R, regularization)
    return y


def wiener(spectrograms, x, iterations=1, softmask=False, residual=False, scale_factor=10.0,
           eps=1e-10):
    """``openunmix.filtering.wiener`` on one block: ``(frames, bins, channels, 2, sources)``.

    ``spectrograms (frames, bins, channels, sources)`` are the target magnitudes, ``x
    (frames, bins, channels, 2)`` the mixture STFT (modified where openunmix modifies it).
    Constants are made in the arrays' dtype, as openunmix makes them in torch's default dtype
    (float32 normally; the float64 reference runs with the default dtype set to float64).
    """
    dt = x.dtype.type
    if x.shape[2] != 2:
        raise ValueError(f"the Wiener filter takes stereo, got {x.shape[2]} channels")
    if softmask:
        y = softmask_estimates(spectrograms, x, dt(eps))
    else:
        y = phase_estimates(spectrograms, x, dt(np.pi))
    if residual:
        y = add_residual(y, x)
    if iterations == 0:
        return y
    peak = np.sqrt(x[..., 0] * x[..., 0] + x[..., 1] * x[..., 1]).max() / dt(scale_factor)
    max_abs = max(dt(1.0), peak)
    x = x / max_abs
    y /= max_abs
    regularization = np.sqrt(dt(eps))
    expectation_maximization(y, x, iterations, dt(eps), regularization)
    y *= max_abs
    return y
