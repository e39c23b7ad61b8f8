"""museval's public scoring API on our scorer: ``museval.metrics`` and ``museval.evaluate``.

Same names, signatures, defaults, return order and input contract as museval 0.4, so that
code written for museval (and museval's own test cases, re-created in
``tests/eval/test_museval_suite.py``) runs with these functions in museval's place:

* ``bss_eval(reference_sources, estimated_sources, window=2*44100, hop=1.5*44100,
  compute_permutation=False, filters_len=512, framewise_filters=False,
  bsseval_sources_version=False)`` returns ``(sdr, isr, sir, sar, perm)``. ``window`` and
  ``hop`` are in samples, as in museval (floats allowed, ``np.inf`` for one frame).
* ``framewise_filters=True`` is BSS Eval v3: the distortion filters are fitted anew on
  every frame instead of once over the whole signal (v4).
* ``bsseval_sources_version=True`` gives the ``bss_eval_sources`` criteria (the
  reference filtered by the estimate's own-source projection is the target; ISR is NaN).
* ``compute_permutation=True`` scores every (reference, estimate) pair and keeps the
  permutation of estimates with the highest mean SIR: one for the whole signal in v4, one
  per frame in v3. ``perm[j, t]`` is the estimate matched to reference ``j``.
* Input: ``(sources, samples, channels)`` or ``(sources, samples)`` (mono). Empty input
  warns (``UserWarning``) and returns five empty arrays; a source that is silent over the
  whole signal, mismatched shapes, more than 3 dimensions or more than ``MAX_SOURCES``
  sources raise ``ValueError``.

The museval defaults (v4, images criteria, no permutation) go through the fast path of
:mod:`numba_demucs.eval.bsseval`; the other modes reuse its filter fit
(:func:`~numba_demucs.eval.bsseval.distortion_filters`) and project frames in NumPy, as
they are rarely used on long signals (permutations grow as ``sources!``; v3 solves a
Gram system per frame, as museval does).
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from .bsseval import (_fast_fft_length, _safe_db, _silent_sources, distortion_filters,
                      frame_bounds, images_v4)
from .correlations import FILTERS_LEN

# More sources than this is refused, as in museval (its permutation search and Gram
# matrix grow too fast); callers may raise it.
MAX_SOURCES = 100


def _any_source_silent(sources):
    """museval's silence test: a source whose channel sum is zero on every sample."""
    return bool(_silent_sources(sources, 0, sources.shape[1]).any())


def _as_float(array):
    """Contiguous float32/float64 ``(sources, samples, channels)`` for the kernels."""
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return np.ascontiguousarray(array)


def validate(reference_sources, estimated_sources):
    """museval's input checks: ``ValueError`` for unusable input, ``UserWarning`` for empty."""
    if reference_sources.shape != estimated_sources.shape:
        raise ValueError(
            f"references {reference_sources.shape} and estimates {estimated_sources.shape} "
            "must have the same shape (sources, samples, channels)")
    if reference_sources.ndim > 3 or estimated_sources.ndim > 3:
        raise ValueError(
            f"references and estimates have {reference_sources.ndim} and "
            f"{estimated_sources.ndim} dimensions; at most 3 (sources, samples, channels)")
    for what, signals in (("references", reference_sources),
                          ("estimates", estimated_sources)):
        if signals.size == 0:
            warnings.warn(f"{what} are empty; sdr, isr, sir, sar and perm will be empty "
                          "arrays", UserWarning, stacklevel=3)
        elif _any_source_silent(_as_float(np.atleast_3d(signals))):
            raise ValueError(
                f"one of the {what} is silent (all zeros) over the whole signal; BSS Eval "
                "is undefined for it")
    if max(reference_sources.shape[0], estimated_sources.shape[0]) > MAX_SOURCES:
        raise ValueError(
            f"{max(reference_sources.shape[0], estimated_sources.shape[0])} sources is more "
            f"than MAX_SOURCES = {MAX_SOURCES} (raise numba_demucs.eval.metrics.MAX_SOURCES "
            "to allow it)")


class _Filters:
    """Distortion filters of one fit and their spectra, computed once per FFT length."""

    def __init__(self, references, estimates, filters_len, every_pair):
        self.every_pair = every_pair
        self.all_filters, self.own_filters = distortion_filters(
            references, estimates, filters_len, every_pair=every_pair)
        self._spectra = {}

    def spectra(self, fft_length):
        if fft_length not in self._spectra:
            self._spectra[fft_length] = (
                np.fft.rfft(self.all_filters, fft_length, axis=-1),
                np.fft.rfft(self.own_filters, fft_length, axis=-1))
        return self._spectra[fft_length]

    def own(self, own_spectra, true, estimate):
        """``(c, cs, bins)``: estimate ``estimate`` fitted on reference ``true`` alone."""
        return own_spectra[true, estimate] if self.every_pair else own_spectra[true]


def _score_frame(references, estimates, start, stop, filters, pairs, sources_version,
                 filters_len, out, frame):
    """museval ``_bss_decomp_mtifilt`` + ``_bss_crit`` for the pairs ``(true, estimate)``
    of one frame, written to ``out[:, true, estimate, frame]``."""
    length = stop - start
    padded = length + filters_len - 1  # projections are that long (filter tails)
    fft_length = _fast_fft_length(padded)
    all_spectra, own_spectra = filters.spectra(fft_length)
    # (sources, samples, channels) -> (sources, bins, channels)
    reference_spectra = np.fft.rfft(references[:, start:stop].astype(np.float64),
                                    fft_length, axis=1)
    # every estimate's projection on all references: (estimates, channels, padded)
    projected_all = np.fft.irfft(
        np.einsum("jcsub,sbu->jcb", all_spectra, reference_spectra), fft_length)[..., :padded]
    n_channels = references.shape[2]
    for true, estimate in pairs:
        own = filters.own(own_spectra, true, estimate)
        projected_own = np.fft.irfft(
            np.einsum("cub,bu->cb", own, reference_spectra[true]), fft_length)[:, :padded]
        s = np.zeros((n_channels, padded))
        s[:, :length] = references[true, start:stop].T
        e = np.zeros((n_channels, padded))
        e[:, :length] = estimates[estimate, start:stop].T
        p, q = projected_all[estimate], projected_own
        if sources_version:  # the target is the reference as the estimate's filter sees it
            target = np.sum(q * q)
            sdr = _safe_db(target, np.sum((e - q) ** 2))
            isr = np.nan
        else:
            target = np.sum(s * s)
            sdr = _safe_db(target, np.sum((e - s) ** 2))
            isr = _safe_db(target, np.sum((q - s) ** 2))
        sir = _safe_db(np.sum(q * q), np.sum((p - q) ** 2))
        sar = _safe_db(np.sum(p * p), np.sum((e - p) ** 2))
        out[:, true, estimate, frame] = (sdr, isr, sir, sar)


def bss_eval(reference_sources, estimated_sources, window=2 * 44100, hop=1.5 * 44100,
             compute_permutation=False, filters_len=FILTERS_LEN, framewise_filters=False,
             bsseval_sources_version=False):
    """BSS Eval v4 (or v3 with ``framewise_filters``), as ``museval.metrics.bss_eval``.

    Parameters
    ----------
    reference_sources, estimated_sources : array_like, ``(sources, samples[, channels])``
    window, hop : number of samples (``np.inf``: the whole signal as one frame)
    compute_permutation : match estimates to references by the best mean SIR
    filters_len : length of the distortion filters
    framewise_filters : fit the filters on every frame (v3) instead of once (v4)
    bsseval_sources_version : ``bss_eval_sources`` criteria instead of ``bss_eval_images``

    Returns
    -------
    (sdr, isr, sir, sar, perm) : ``(sources, frames)`` arrays in dB and ``perm``,
    ``(sources, frames)`` with ``framewise_filters``, else ``(sources, 1)``. A frame where
    any reference or estimate is silent is NaN for every source.
    """
    references = np.atleast_3d(reference_sources)
    estimates = np.atleast_3d(estimated_sources)
    validate(references, estimates)
    if references.size == 0 or estimates.size == 0:
        return (np.array([]), np.array([]), np.array([]), np.array([]), np.array([]))
    references = _as_float(references)
    estimates = _as_float(estimates)
    n_sources, n_samples, _ = estimates.shape
    bounds = frame_bounds(n_samples, window, hop)
    identity = np.arange(n_sources)

    if not (compute_permutation or framewise_filters or bsseval_sources_version):
        sdr, isr, sir, sar = images_v4(references, estimates, bounds, filters_len)
        return sdr, isr, sir, sar, identity[:, None]

    if compute_permutation:
        candidates = np.array(list(itertools.permutations(range(n_sources))))
        pairs = list(itertools.product(range(n_sources), repeat=2))
    else:
        candidates = identity[None, :]
        pairs = [(source, source) for source in range(n_sources)]

    # scores[metric, true, estimate, frame]
    scores = np.full((4, n_sources, n_sources, len(bounds)), np.nan)
    whole = None if framewise_filters else _Filters(references, estimates, filters_len,
                                                    compute_permutation)
    for frame, (start, stop) in enumerate(bounds):
        if (_silent_sources(references, start, stop).any()
                or _silent_sources(estimates, start, stop).any()):
            continue  # NaN for every source, as museval
        filters = whole or _Filters(np.ascontiguousarray(references[:, start:stop]),
                                    np.ascontiguousarray(estimates[:, start:stop]),
                                    filters_len, compute_permutation)
        _score_frame(references, estimates, start, stop, filters, pairs,
                     bsseval_sources_version, filters_len, scores, frame)

    # The permutation with the highest mean SIR: per frame in v3, over all frames in v4
    # (a NaN mean, from a silent frame, wins as in museval: argmax stops at the first NaN).
    sir = scores[2]
    if framewise_filters:
        mean_sir = np.array([sir[identity, perm, :].mean(axis=0) for perm in candidates])
    else:
        mean_sir = np.array([[sir[identity, perm, :].mean()] for perm in candidates])
    perm = candidates[np.argmax(mean_sir, axis=0)].T  # (sources, frames or 1)
    if framewise_filters:
        result = np.stack([scores[:, identity, perm[:, frame], frame]
                           for frame in range(len(bounds))], axis=-1)
    else:
        result = scores[:, identity, perm[:, 0], :]
    return result[0], result[1], result[2], result[3], perm


def bss_eval_sources(reference_sources, estimated_sources, compute_permutation=True):
    """v3 ``bss_eval_sources`` over the whole signal: ``(sdr, sir, sar, perm)``."""
    sdr, _, sir, sar, perm = bss_eval(
        reference_sources, estimated_sources, window=np.inf, hop=np.inf,
        compute_permutation=compute_permutation, filters_len=FILTERS_LEN,
        framewise_filters=True, bsseval_sources_version=True)
    return sdr, sir, sar, perm


def bss_eval_sources_framewise(reference_sources, estimated_sources, window=30 * 44100,
                               hop=15 * 44100, compute_permutation=False):
    """v3 ``bss_eval_sources`` frame by frame: ``(sdr, sir, sar, perm)``."""
    sdr, _, sir, sar, perm = bss_eval(
        reference_sources, estimated_sources, window=window, hop=hop,
        compute_permutation=compute_permutation, filters_len=FILTERS_LEN,
        framewise_filters=True, bsseval_sources_version=True)
    return sdr, sir, sar, perm


def bss_eval_images(reference_sources, estimated_sources, compute_permutation=True):
    """v3 ``bss_eval_images`` over the whole signal: ``(sdr, isr, sir, sar, perm)``."""
    return bss_eval(
        reference_sources, estimated_sources, window=np.inf, hop=np.inf,
        compute_permutation=compute_permutation, filters_len=FILTERS_LEN,
        framewise_filters=True, bsseval_sources_version=False)


def bss_eval_images_framewise(reference_sources, estimated_sources, window=30 * 44100,
                              hop=15 * 44100, compute_permutation=False):
    """v3 ``bss_eval_images`` frame by frame: ``(sdr, isr, sir, sar, perm)``."""
    return bss_eval(
        reference_sources, estimated_sources, window=window, hop=hop,
        compute_permutation=compute_permutation, filters_len=FILTERS_LEN,
        framewise_filters=True, bsseval_sources_version=False)


def pad_or_truncate(audio_reference, audio_estimates):
    """``museval.pad_or_truncate``: estimates cut or zero-padded at the end to the
    references' length (axis 1); returns ``(references, estimates)``."""
    wanted = audio_reference.shape[1]
    have = audio_estimates.shape[1]
    if have > wanted:
        audio_estimates = audio_estimates[:, :wanted]
    elif have < wanted:
        grown = np.zeros((audio_estimates.shape[0], wanted) + audio_estimates.shape[2:],
                         dtype=audio_estimates.dtype)
        grown[:, :have] = audio_estimates
        audio_estimates = grown
    return audio_reference, audio_estimates


def evaluate(references, estimates, win=1 * 44100, hop=1 * 44100, mode="v4", padding=True):
    """``museval.evaluate``: the images criteria ``(SDR, ISR, SIR, SAR)``, v4 or v3."""
    references = np.asarray(references)
    estimates = np.asarray(estimates)
    if padding:
        references, estimates = pad_or_truncate(references, estimates)
    sdr, isr, sir, sar, _ = bss_eval(
        references, estimates, window=win, hop=hop, compute_permutation=False,
        framewise_filters=(mode == "v3"), bsseval_sources_version=False)
    return sdr, isr, sir, sar
