"""Whole-track metrics: the MDX challenge's SDR ("uSDR") and SI-SDR, one value per source.

These are the numbers papers quote next to museval's framewise median ("cSDR"):

* **uSDR**, the SDR of the Music Demixing Challenge 2021 (and of SDX 2023, and demucs'
  ``nsdr``): over the whole track, samples and channels together,
  ``10 log10((sum s^2 + 1e-7) / (sum (s - e)^2 + 1e-7))``; the challenge's evaluator
  (AIcrowd ``music-demixing-challenge-starter-kit``, ``evaluator/music_demixing.py``)
  adds ``delta = 1e-7`` to both sums. It is aggregated by the mean over tracks.
* **SI-SDR** (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019): the
  estimate is compared with the best-scaled reference ``a s``, ``a = <e, s> / <s, s>``,
  and ``SI-SDR = 10 log10(|a s|^2 / |a s - e|^2)``, over the whole track with one scale
  for all channels, no mean removed and no epsilon.

Both come from two passes over the signals, with no temporary arrays: the sums are
accumulated in float64 whatever the input dtype. (The challenge's evaluator casts to
float32 before summing, which moves its figures by about 1e-6 dB.)
"""
from __future__ import annotations

import numpy as np

from numba_demucs.kernels._config import kernel

MDX_DELTA = 1e-7
"""The MDX 2021 evaluator's ``delta``, added to both energies of uSDR."""


@kernel
def _energies(references, estimates, out):
    """Per source ``j``: ``out[j] = (sum s^2, sum (s - e)^2, sum (a s - e)^2, a)``.

    ``references`` and ``estimates`` are ``(sources, samples, channels)``. The scale ``a``
    needs the first pass (``<e, s>`` and ``<s, s>``), the SI-SDR residual a second one,
    which is more accurate than ``|e|^2 - <e, s>^2 / <s, s>`` for a near-perfect estimate.
    """
    n_sources, n_samples, n_channels = references.shape
    for j in range(n_sources):
        target = 0.0
        error = 0.0
        product = 0.0
        for n in range(n_samples):
            for c in range(n_channels):
                s = np.float64(references[j, n, c])
                e = np.float64(estimates[j, n, c])
                target += s * s
                error += (s - e) * (s - e)
                product += s * e
        scale = product / target  # NaN for a silent reference (error_model="numpy")
        residual = 0.0
        for n in range(n_samples):
            for c in range(n_channels):
                r = scale * np.float64(references[j, n, c]) - np.float64(estimates[j, n, c])
                residual += r * r
        out[j, 0] = target
        out[j, 1] = error
        out[j, 2] = residual
        out[j, 3] = scale


def track_metrics(references, estimates) -> dict:
    """``{"uSDR": (sources,), "SI-SDR": (sources,)}`` in dB for whole tracks.

    ``references`` and ``estimates`` are ``(sources, samples, channels)`` (or ``(sources,
    samples)``), same shape, float32 or float64.
    """
    references = np.asarray(references)
    estimates = np.asarray(estimates)
    if references.ndim == 2:
        references, estimates = references[:, :, None], estimates[:, :, None]
    if references.shape != estimates.shape:
        from numba_demucs.errors import EvaluationError

        raise EvaluationError(f"references {references.shape} and estimates "
                              f"{estimates.shape} differ in shape")
    out = np.empty((references.shape[0], 4))
    _energies(np.ascontiguousarray(references), np.ascontiguousarray(estimates), out)
    target, error, residual, scale = out.T
    with np.errstate(divide="ignore", invalid="ignore"):
        usdr = 10.0 * np.log10((target + MDX_DELTA) / (error + MDX_DELTA))
        si_sdr = 10.0 * np.log10(scale * scale * target / residual)
    return {"uSDR": usdr, "SI-SDR": si_sdr}
