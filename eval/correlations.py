"""The lagged correlations behind museval's distortion filters, block by block.

museval correlates full-length signals with FFTs of ``2**ceil(log2(n + 511))`` points and
keeps 1023 lags of each; here the same lags come from short overlapping blocks whose
cross-spectra are summed in two threads, so memory stays proportional to the block size.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba_demucs.kernels._config import kernel

FILTERS_LEN = 512
"""Number of taps of museval's distortion filters (``metrics.bss_eval(filters_len=512)``)."""

_CORRELATION_FFT = 16384
"""FFT length of one correlation block; each block then covers ``16384 - 1022`` samples."""

_BLOCKS_PER_BATCH = 2
"""Blocks transformed together by one stream."""

_STREAMS = 2
"""Independent sums of the blocks' cross-spectra, one thread each when there are CPUs."""

_CPUS = os.cpu_count() or 1


@kernel
def gather_blocks(signals, starts, offset, length, fft_length, out):
    """Copy ``length`` samples from ``start + offset`` of every channel into ``out``.

    ``signals`` is ``(sources, samples, channels)`` in any float dtype; ``out`` is
    ``(blocks, sources * channels, fft_length)`` float64. Samples outside the signal are
    zero, which is museval's zero padding.
    """
    n_sources, n_samples, n_channels = signals.shape
    for block in range(starts.shape[0]):
        first = starts[block] + offset
        for source in range(n_sources):
            for channel in range(n_channels):
                row = source * n_channels + channel
                for index in range(fft_length):
                    sample = first + index
                    if index < length and 0 <= sample < n_samples:
                        out[block, row, index] = signals[source, sample, channel]
                    else:
                        out[block, row, index] = 0.0


@kernel
def _accumulate_cross_spectra(leading, trailing, first, second, acc, begin, end):
    """``acc[pair] += sum over blocks of leading[first[pair]] * conj(trailing[second[pair]])``
    for the pairs ``begin <= pair < end`` (threads take disjoint ranges)."""
    n_blocks = leading.shape[0]
    n_bins = leading.shape[2]
    for pair in range(begin, end):
        a = first[pair]
        b = second[pair]
        for block in range(n_blocks):
            for k in range(n_bins):
                acc[pair, k] += leading[block, a, k] * np.conj(trailing[block, b, k])


def lag_correlations(references, estimates, filters_len=FILTERS_LEN):
    """Correlations ``R[p, q](k) = sum_n x_p[n + k] x_q[n]`` for ``|k| < filters_len``.

    ``x_p`` ranges over the reference channels (source-major, as museval flattens them) and
    ``x_q`` over the reference channels followed by the estimate channels. Only the pairs
    museval uses are computed: reference/reference with ``p <= q`` and every
    reference/estimate pair. Returns ``(pairs_p, pairs_q, values)`` with ``values[i, k +
    filters_len - 1]``.

    museval obtains the same numbers from full-length FFTs (``scipy.fftpack.fft`` of
    ``2**ceil(log2(n + filters_len - 1))`` points per channel, one full inverse FFT per
    pair). Here the trailing signal is cut into blocks and each block is correlated with
    the leading signal extended by ``filters_len - 1`` samples on both sides; the
    cross-spectra of all blocks are summed and inverted once per pair.
    """
    n_sources, n_samples, n_channels = references.shape
    n_refs = n_sources * n_channels
    margin = filters_len - 1
    fft_length = min(_CORRELATION_FFT, 1 << (n_samples + 2 * margin - 1).bit_length())
    fft_length = max(fft_length, 1 << (4 * margin).bit_length())
    block = fft_length - 2 * margin
    first, second = [], []
    for p in range(n_refs):
        for q in range(p, n_refs):
            first.append(p)
            second.append(q)
    for p in range(n_refs):
        for q in range(n_refs):
            first.append(p)
            second.append(n_refs + q)
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)

    n_bins = fft_length // 2 + 1
    starts_all = np.arange(0, n_samples, block, dtype=np.int64)
    # Blocks are dealt to _STREAMS fixed streams (block i to stream i % _STREAMS), each with
    # its own buffers and accumulator and run in its own thread (gather, FFT and
    # cross-spectra; every step drops the GIL); the streams' sums are added at the end.
    # The grouping does not depend on the number of CPUs, so neither do the bits.
    streams = [starts_all[index::_STREAMS] for index in range(_STREAMS)]
    streams = [starts for starts in streams if starts.shape[0]]

    def run_stream(starts_stream):
        # One set of buffers per stream for all its batches: allocating them per batch
        # makes glibc raise its mmap threshold and keep tens of MiB of freed heap, which
        # shows in the peak memory.
        acc = np.zeros((first.shape[0], n_bins), dtype=np.complex128)
        batch_size = min(_BLOCKS_PER_BATCH, starts_stream.shape[0])
        lead = np.empty((batch_size, n_refs, fft_length))
        trail = np.empty((batch_size, 2 * n_refs, fft_length))
        lead_spectra = np.empty((batch_size, n_refs, n_bins), dtype=np.complex128)
        trail_spectra = np.empty((batch_size, 2 * n_refs, n_bins), dtype=np.complex128)
        for batch in range(0, starts_stream.shape[0], batch_size):
            starts = starts_stream[batch : batch + batch_size]
            count = starts.shape[0]
            gather_blocks(references, starts, -margin, block + 2 * margin, fft_length,
                          lead[:count])
            gather_blocks(references, starts, 0, block, fft_length, trail[:count, :n_refs])
            gather_blocks(estimates, starts, 0, block, fft_length, trail[:count, n_refs:])
            np.fft.rfft(lead[:count], fft_length, axis=-1, out=lead_spectra[:count])
            np.fft.rfft(trail[:count], fft_length, axis=-1, out=trail_spectra[:count])
            _accumulate_cross_spectra(lead_spectra[:count], trail_spectra[:count], first,
                                      second, acc, 0, first.shape[0])
        return acc

    if len(streams) == 1 or _CPUS == 1:
        sums = [run_stream(starts) for starts in streams]
    else:
        with ThreadPoolExecutor(min(_CPUS, len(streams))) as pool:
            sums = list(pool.map(run_stream, streams))
    acc = sums[0]
    for other in sums[1:]:
        acc += other
    del sums
    values = np.fft.irfft(acc, fft_length, axis=-1)[:, : 2 * margin + 1]
    return first, second, np.ascontiguousarray(values)
