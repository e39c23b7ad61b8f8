"""BSS Eval v4 (SDR, ISR, SIR, SAR) computing exactly what ``museval.evaluate`` computes.

museval's defaults are reproduced step by step:

* ``museval.evaluate``: estimates are zero-padded or truncated to the references' length
  (``pad_or_truncate``), then ``metrics.bss_eval`` runs with ``window = hop = 44100``,
  ``filters_len = 512``, ``framewise_filters=False`` (the "v4" mode) and the
  ``bss_eval_images`` criteria (``bsseval_sources_version=False``).
* ``metrics.bss_eval`` fits the distortion filters once over the whole track:
  the Gram matrix of the 512 delayed copies of every reference channel
  (``_compute_reference_correlations``), the correlations of those copies with each
  estimate channel, and one regularised linear solve per estimate for the filters built from
  all references and one for the filters built from the estimate's own reference
  (``_compute_projection_filters``).
* Each frame is then decomposed (``_bss_decomp_mtifilt``): the frame of every reference is
  filtered (``_project``, whose output is ``frame + 511`` samples long) and the energy ratios
  of ``_bss_crit`` are taken, or NaN for every source when any reference or estimate is
  silent in that frame.

What differs is only how the numbers are obtained. museval correlates full-length signals
with FFTs of ``2**ceil(log2(n + 511))`` points and keeps 1023 lags of each; here the same
lags come from short overlapping blocks whose cross-spectra are summed, so memory stays
proportional to the block size. The regularised Gram matrix is never formed: it is block
Toeplitz in the lags, and a block Levinson recursion with iterative refinement solves it
from the lags for all estimates at once (:mod:`.toeplitz`); only when that breaks down or
does not refine to LU accuracy (singular or nearly singular systems) is the explicit matrix
built and solved by LU as museval does. The frame projections reuse the filter spectra
across frames, with frames spread over threads (after the solve, frames are independent;
there are many more frames than sources). Everything is float64.

For 4 stereo sources, memory beyond the input is about 640 bytes per sample of ``window +
511`` for the filter spectra (29 MiB at one second), plus the 128 MiB Gram matrix when the
LU fallback runs, so scoring a whole 4-minute track as one frame (``window=math.inf``)
needs several GiB, as it does in museval.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba_demucs.kernels._config import kernel

from numba_demucs.errors import EvaluationError

from .correlations import FILTERS_LEN, gather_blocks, lag_correlations
from .toeplitz import block_lags, solve_block_toeplitz

try:  # scipy ships with museval; its LAPACK wrapper lets the big solve overwrite its input.
    from scipy.linalg import lapack as _lapack
except ImportError:  # pragma: no cover
    _lapack = None


_CPUS = os.cpu_count() or 1


def _fast_fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: FFTs of such lengths are fast in pocketfft."""
    best = 1 << max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            length = power35
            while length < n:
                length *= 2
            best = min(best, length)
            power35 *= 3
        power5 *= 5
    return best


# --------------------------------------------------------------------------------------
# Framing and silence (museval ``metrics.Framing`` and ``_any_source_silent``)
# --------------------------------------------------------------------------------------


def frame_bounds(n_samples: int, window: float, hop: float) -> list[tuple[int, int]]:
    """Sample ranges of the frames, as ``museval.metrics.Framing`` yields them.

    With ``window < n_samples`` there are ``floor((n - window + hop) / hop)`` frames of
    exactly ``window`` samples, so samples after the last whole frame are not scored (they
    still count in the filter fit). Otherwise there is one frame spanning the whole track,
    which is how a track shorter than one window gets a single, shorter frame.
    """
    if window < n_samples:
        count = int(math.floor((n_samples - window + hop) / hop))
    else:
        count = 1
    bounds = []
    for index in range(count):
        start = index * hop
        if math.isnan(start) or math.isinf(start):
            start = 0
        stop = min(index * hop + window, n_samples)
        if math.isnan(stop) or math.isinf(stop):
            stop = n_samples
        bounds.append((int(math.floor(start)), int(math.floor(stop))))
    return bounds


@kernel
def _silent_sources(signals, start, stop):
    """True per source when its channel sum is exactly zero on every sample of the range.

    This is museval's ``_any_source_silent`` test, including its quirk that a source whose
    channels cancel (left == -right) counts as silent.
    """
    n_sources, _, n_channels = signals.shape
    silent = np.ones(n_sources, dtype=np.bool_)
    for source in range(n_sources):
        for sample in range(start, stop):
            total = 0.0
            for channel in range(n_channels):
                total += signals[source, sample, channel]
            if total != 0.0:
                silent[source] = False
                break
    return silent


# --------------------------------------------------------------------------------------
# Correlations over the whole track (museval ``_compute_reference_correlations`` and the
# cross-correlations inside ``_compute_projection_filters``)
# --------------------------------------------------------------------------------------


@kernel
def _pair_table(first, second, n_refs):
    """``table[p, q]``: the index of the pair ``(min(p, q), max(p, q))`` in ``first, second``
    (reference/reference pairs are stored once, with ``p <= q``)."""
    table = np.full((n_refs, n_refs), -1, dtype=np.int64)
    for pair in range(first.shape[0]):
        p = first[pair]
        q = second[pair]
        if q < n_refs:
            table[p, q] = pair
            table[q, p] = pair
    return table


@kernel
def _fill_gram(first, second, values, n_refs, low, high, filters_len, gram):
    """Lay the correlations of reference channels ``low <= p < high`` out as museval's
    reshaped ``G`` (``_reshape_G`` order: source, channel, delay).

    ``gram[(p, a), (q, b)] = R[p, q](b - a)``: the inner product of reference channel ``p``
    delayed by ``a`` with channel ``q`` delayed by ``b``; below the diagonal blocks (``p >
    q``) it is ``R[q, p](a - b)``, the same number, and inside a diagonal block ``R[p, p](-|a -
    b|)``, so the matrix is exactly symmetric. With ``low = 0, high = n_refs`` this is
    the whole matrix; one source's channels give its own-source system, the diagonal block
    of the whole. Written row by row, each row contiguous: filling a 128 MiB matrix by
    mirrored pairs wrote one of the two halves column-wise, a cache miss per element.
    """
    centre = filters_len - 1
    table = _pair_table(first, second, n_refs)
    for p in range(low, high):
        for a in range(filters_len):
            row = (p - low) * filters_len + a
            for q in range(low, high):
                pair = table[p, q]
                column = (q - low) * filters_len
                if p == q:  # the negative lag of an autocorrelation, on both sides of the
                    # diagonal: what the mirrored fill this replaced left there (R(k) and
                    # R(-k) of one channel differ in the last bits)
                    for b in range(filters_len):
                        gram[row, column + b] = values[pair, centre - abs(b - a)]
                elif p < q:
                    for b in range(filters_len):
                        gram[row, column + b] = values[pair, b - a + centre]
                else:
                    for b in range(filters_len):
                        gram[row, column + b] = values[pair, a - b + centre]


@kernel
def _fill_targets(first, second, values, n_refs, filters_len, targets):
    """museval's ``D``: ``targets[(p, k), e] = R[p, e](-k)``, reference channel ``p``
    delayed by ``k`` against estimate channel ``e``."""
    centre = filters_len - 1
    for pair in range(first.shape[0]):
        p = first[pair]
        q = second[pair]
        if q >= n_refs:
            for k in range(filters_len):
                targets[p * filters_len + k, q - n_refs] = values[pair, centre - k]


def _solve_in_place(regularised, targets):
    """``solve(regularised, targets)`` by LU with partial pivoting (LAPACK ``gesv``, as
    ``np.linalg.solve`` does), overwriting ``regularised`` instead of copying it.

    ``regularised`` is exactly symmetric, so its C-ordered buffer is also the Fortran-ordered
    matrix LAPACK wants, and a 4096 x 4096 system costs no copy (128 MiB saved).
    """
    if _lapack is None:
        return np.linalg.solve(regularised, targets)
    _, _, solution, info = _lapack.dgesv(regularised.T, targets, overwrite_a=1, overwrite_b=0)
    if info > 0:
        raise np.linalg.LinAlgError("singular matrix")
    return solution


def _regularised_solve(gram, targets, in_place=False):
    """museval ``_compute_projection_filters``: ``solve(G + eps I, D)``, lstsq if singular.

    With ``in_place`` the caller's ``gram`` already carries ``+ eps`` on its diagonal and is
    destroyed; the lstsq fallback then removes ``eps`` from a rebuilt copy (see
    ``distortion_filters``), so museval's unregularised lstsq is kept.
    """
    eps = np.finfo(np.float64).eps
    if not in_place:
        gram = gram.copy()
        gram.flat[:: gram.shape[0] + 1] += eps
    return _solve_in_place(gram, targets)


def distortion_filters(references, estimates, filters_len=FILTERS_LEN, every_pair=False):
    """The distortion filters, fitted over the whole of the signals given (v4: the track;
    v3: one frame).

    Returns ``(all_filters, own_filters)``:

    * ``all_filters[j, c, s, cs, k]``: museval's ``C[j]`` (``compute_GsfC``), the filter from
      channel ``cs`` of reference ``s`` to channel ``c`` of estimate ``j``, fitted against
      every reference at once;
    * ``own_filters[j, c, cs, k]``: museval's ``Cj[j, j]`` (``compute_Cj``), fitted against
      reference ``j`` alone (the diagonal block of the same Gram matrix). With
      ``every_pair`` it is ``own_filters[t, j, c, cs, k]``, museval's ``Cj[t, j]``: estimate
      ``j`` fitted against reference ``t`` alone, for every pair (what
      ``compute_permutation`` needs); each reference's system is then solved once for the
      channels of every estimate.
    """
    n_sources, _, n_channels = references.shape
    n_refs = n_sources * n_channels
    first, second, values = lag_correlations(references, estimates, filters_len)
    size = n_refs * filters_len

    eps = np.finfo(np.float64).eps

    def gram_of(low, high, regularised=True):
        """``G + eps I`` (or ``G``) over reference channels ``[low, high)``, from the lags."""
        gram = np.empty(((high - low) * filters_len, (high - low) * filters_len))
        _fill_gram(first, second, values, n_refs, low, high, filters_len, gram)
        if regularised:
            gram.flat[:: gram.shape[0] + 1] += eps
        return gram

    targets = np.empty((size, n_refs))
    _fill_targets(first, second, values, n_refs, filters_len, targets)

    def solve(low, high, columns):
        """``(G + eps I)^-1 D`` over reference channels ``[low, high)`` and the target
        columns given: block Levinson on the lags (no explicit matrix), or, when it breaks
        down or does not refine to LU accuracy, museval's LU (lstsq if singular) on the
        explicit matrix."""
        m = high - low
        rows = slice(low * filters_len, high * filters_len)
        rhs = targets[rows, columns]  # (p, k) x r -> (k, p, r), the block-Toeplitz order
        rhs = rhs.reshape(m, filters_len, rhs.shape[1]).transpose(1, 0, 2)
        gamma = block_lags(first, second, values, n_refs, low, high, filters_len)
        solution = solve_block_toeplitz(gamma, rhs, eps)
        if solution is not None:
            return np.ascontiguousarray(
                solution.transpose(1, 0, 2)).reshape(m * filters_len, rhs.shape[2])
        gram = gram_of(low, high)
        try:
            return _regularised_solve(gram, targets[rows, columns], in_place=True)
        except np.linalg.LinAlgError:  # the LU overwrote the matrix: lstsq on plain G
            del gram
            gram = gram_of(low, high, regularised=False)
            return np.linalg.lstsq(gram, targets[rows, columns], rcond=None)[0]

    # The all-sources system in a second thread (its recursion is sequential and drops
    # the GIL) while this one solves the own-source systems: the diagonal blocks of the
    # same matrix, one source's channels, block Toeplitz in turn.
    pool = ThreadPoolExecutor(1) if _CPUS > 1 else None
    if pool is not None:
        big = pool.submit(solve, 0, n_refs, slice(0, n_refs))
    estimates_solved = n_sources if every_pair else 1
    own_filters = np.empty((n_sources, estimates_solved, n_channels, n_channels, filters_len))
    try:
        for source in range(n_sources):
            if every_pair:  # (s, cs, k) x (j, c): all estimates against this reference
                columns = slice(0, n_refs)
            else:
                columns = slice(source * n_channels, (source + 1) * n_channels)
            own = solve(source * n_channels, (source + 1) * n_channels, columns)
            # (cs, k, j, c) -> (j, c, cs, k)
            own_filters[source] = own.reshape(
                n_channels, filters_len, estimates_solved, n_channels).transpose(2, 3, 0, 1)
        # (s, cs, k) x (j, c)
        solved = big.result() if pool is not None else solve(0, n_refs, slice(0, n_refs))
    finally:
        if pool is not None:
            pool.shutdown()
    all_filters = solved.reshape(n_sources, n_channels, filters_len, n_sources, n_channels)
    all_filters = np.ascontiguousarray(all_filters.transpose(3, 4, 0, 1, 2))
    if not every_pair:
        own_filters = own_filters[:, 0]
    return all_filters, own_filters


# --------------------------------------------------------------------------------------
# Per-frame decomposition (museval ``_bss_decomp_mtifilt``, ``_project``, ``_bss_crit``)
# --------------------------------------------------------------------------------------


@kernel
def _project_spectra(reference_spectra, all_spectra, own_spectra, all_out, own_out):
    """Filter the frame spectra: sum over reference channels of filter times reference.

    ``all_out[j, c]`` is the spectrum of museval's ``_project(references, C[j])``,
    ``own_out[j, c]`` that of ``_project(references[j], Cj[j, j])``. The frequency loop
    is innermost so every array streams.
    """
    n_sources, n_channels, _, _, n_bins = all_spectra.shape
    for job in range(n_sources * n_channels):
        j = job // n_channels
        c = job % n_channels
        for k in range(n_bins):
            all_out[j, c, k] = 0j
            own_out[j, c, k] = 0j
        for s in range(n_sources):
            for cs in range(n_channels):
                for k in range(n_bins):
                    all_out[j, c, k] += all_spectra[j, c, s, cs, k] * reference_spectra[s, cs, k]
        for cs in range(n_channels):
            for k in range(n_bins):
                own_out[j, c, k] += own_spectra[j, c, cs, k] * reference_spectra[j, cs, k]


@kernel
def _safe_db(numerator, denominator):
    """museval ``_safe_db``: +inf for a zero denominator, else ``10 log10(num / den)``."""
    if denominator == 0.0:
        return np.inf
    if numerator == 0.0:
        return -np.inf
    return 10.0 * np.log10(numerator / denominator)


@kernel
def _frame_criteria(references, estimates, start, stop, projected_all, projected_own, padded,
                    out, frame):
    """museval ``_bss_crit`` (images version) for every source of one frame.

    With ``s`` the reference frame, ``e`` the estimate frame (both zero-padded by
    ``filters_len - 1``), ``P`` the projection on all references and ``Q`` the projection
    on the source's own reference: ``e_spat = Q - s``, ``e_interf = P - Q``,
    ``e_artif = e - P``, and

    SDR = |s|^2 / |e - s|^2, ISR = |s|^2 / |Q - s|^2,
    SIR = |Q|^2 / |P - Q|^2, SAR = |P|^2 / |e - P|^2.
    """
    n_sources, _, n_channels = references.shape
    length = stop - start  # the projections are used up to ``padded = length + 511``
    for j in range(n_sources):
        target = 0.0
        distortion = 0.0
        spatial = 0.0
        own_energy = 0.0
        interference = 0.0
        all_energy = 0.0
        artifacts = 0.0
        for c in range(n_channels):
            for n in range(length):
                s = np.float64(references[j, start + n, c])
                e = np.float64(estimates[j, start + n, c])
                p = projected_all[j, c, n]
                q = projected_own[j, c, n]
                target += s * s
                distortion += (e - s) * (e - s)
                spatial += (q - s) * (q - s)
                own_energy += q * q
                interference += (p - q) * (p - q)
                all_energy += p * p
                artifacts += (e - p) * (e - p)
            for n in range(length, padded):  # the filters' tail past the frame end
                p = projected_all[j, c, n]
                q = projected_own[j, c, n]
                spatial += q * q
                own_energy += q * q
                interference += (p - q) * (p - q)
                all_energy += p * p
                artifacts += p * p
        out[0, j, frame] = _safe_db(target, distortion)
        out[1, j, frame] = _safe_db(target, spatial)
        out[2, j, frame] = _safe_db(own_energy, interference)
        out[3, j, frame] = _safe_db(all_energy, artifacts)


def _as_sources(array, what):
    array = np.asarray(array)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.ndim == 2:  # (sources, samples): mono, as museval's np.atleast_3d makes it
        array = array[:, :, None]
    if array.ndim != 3:
        raise EvaluationError(
            f"{what} must be shaped (sources, samples, channels), got shape {array.shape}")
    return np.ascontiguousarray(array)


def _window_samples(value, sr):
    if math.isinf(value):
        return math.inf
    samples = int(value * sr)
    if samples <= 0:
        raise EvaluationError(f"window and hop must be at least one sample, got {value} s")
    return samples


def bss_eval(references, estimates, sr=44100, window=1.0, hop=1.0, padding=True,
             filters_len=FILTERS_LEN):
    """BSS Eval v4 images metrics, frame by frame, equal to ``museval.evaluate``'s.

    Parameters
    ----------
    references, estimates : array_like, ``(sources, samples, channels)``
        Same source order in both. float32 input is read as is and widened to float64
        block by block (museval would compute in the input's precision).
    sr : int
        Sample rate; ``window`` and ``hop`` are seconds and become ``int(seconds * sr)``
        samples, as in ``museval.eval_mus_track``. ``math.inf`` scores the whole track as
        one frame.
    padding : bool
        Zero-pad or truncate the estimates to the references' length first (museval's
        ``pad_or_truncate``); otherwise a length mismatch is an error.

    Returns
    -------
    (SDR, ISR, SIR, SAR) : four float64 arrays ``(sources, frames)`` in dB, the order of
    ``museval.evaluate``. A frame where any reference or estimate is silent is NaN for
    every source.
    """
    references = _as_sources(references, "references")
    estimates = _as_sources(estimates, "estimates")
    if references.shape[0] != estimates.shape[0] or references.shape[2] != estimates.shape[2]:
        raise EvaluationError(
            f"references {references.shape} and estimates {estimates.shape} differ in "
            "number of sources or channels")
    n_sources, n_samples, n_channels = references.shape
    if estimates.shape[1] != n_samples:
        if not padding:
            raise EvaluationError(
                f"references have {n_samples} samples but estimates {estimates.shape[1]}")
        if estimates.shape[1] > n_samples:
            estimates = np.ascontiguousarray(estimates[:, :n_samples])
        else:
            grown = np.zeros((n_sources, n_samples, n_channels), dtype=estimates.dtype)
            grown[:, : estimates.shape[1]] = estimates
            estimates = grown
    if n_samples == 0 or n_sources == 0:
        raise EvaluationError("references and estimates are empty")
    for what, signals in (("reference", references), ("estimate", estimates)):
        silent = _silent_sources(signals, 0, n_samples)
        if silent.any():
            raise EvaluationError(
                f"{what} source {int(np.flatnonzero(silent)[0])} is silent over the whole "
                "track; BSS Eval is undefined for it")

    window_samples = _window_samples(window, sr)
    hop_samples = _window_samples(hop, sr)
    bounds = frame_bounds(n_samples, window_samples, hop_samples)
    return images_v4(references, estimates, bounds, filters_len)


def images_v4(references, estimates, bounds, filters_len=FILTERS_LEN):
    """The v4 images criteria of checked ``(sources, samples, channels)`` arrays, one frame
    per ``(start, stop)`` of ``bounds``: ``(SDR, ISR, SIR, SAR)``, each ``(sources, frames)``.
    """
    n_sources, _, n_channels = references.shape
    all_filters, own_filters = distortion_filters(references, estimates, filters_len)
    longest = max(stop - start for start, stop in bounds)
    padded = longest + filters_len - 1
    fft_length = _fast_fft_length(padded)
    all_spectra = np.fft.rfft(all_filters, fft_length, axis=-1)
    own_spectra = np.fft.rfft(own_filters, fft_length, axis=-1)
    del all_filters, own_filters

    results = np.full((4, n_sources, len(bounds)), np.nan)
    scored = [frame for frame, (start, stop) in enumerate(bounds)
              if not (_silent_sources(references, start, stop).any()
                      or _silent_sources(estimates, start, stop).any())]
    threads = max(1, min(_CPUS, len(scored)))
    chunks = [scored[index::threads] for index in range(threads)]

    def score_frames(frames):
        """Frames are independent once the filters are known: one thread per chunk."""
        n_bins = fft_length // 2 + 1
        projected_all = np.empty((n_sources, n_channels, n_bins), dtype=np.complex128)
        projected_own = np.empty((n_sources, n_channels, n_bins), dtype=np.complex128)
        # Buffers reused for every frame (numpy's FFTs write into them), so that frames
        # allocate nothing: per-frame arrays of a few MiB each would stay in the threads'
        # malloc arenas after use and raise the process's peak memory.
        frame_signal = np.empty((1, n_sources * n_channels, fft_length))
        spectra = np.empty((n_sources, n_channels, n_bins), dtype=np.complex128)
        time_all = np.empty((n_sources, n_channels, fft_length))
        time_own = np.empty((n_sources, n_channels, fft_length))
        for frame in frames:
            start, stop = bounds[frame]
            gather_blocks(references, np.array([start], dtype=np.int64), 0, stop - start,
                           fft_length, frame_signal)
            np.fft.rfft(frame_signal[0], fft_length, axis=-1,
                        out=spectra.reshape(n_sources * n_channels, n_bins))
            _project_spectra(spectra, all_spectra, own_spectra, projected_all, projected_own)
            np.fft.irfft(projected_all, fft_length, axis=-1, out=time_all)
            np.fft.irfft(projected_own, fft_length, axis=-1, out=time_own)
            _frame_criteria(references, estimates, start, stop, time_all, time_own,
                            stop - start + filters_len - 1, results, frame)

    if threads == 1:
        score_frames(scored)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(score_frames, chunks))
    sdr, isr, sir, sar = results
    return sdr, isr, sir, sar
