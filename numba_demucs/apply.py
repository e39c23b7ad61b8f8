"""Apply a model to a whole mix: overlapping segments, transition weights, shifts, bags.

This follows ``demucs.apply.apply_model`` operation for operation (the same chunk
padding, triangular weights, centre trimming and shift offsets, and the same float32
accumulation order), so that a track separated here matches one separated by demucs.
Random shifts draw from Python's ``random`` exactly as demucs does, including the one
draw per model call that demucs' transformer makes: with the same seed both programs
pick the same offsets.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable

import numpy as np

from . import trace
from ._threads import (blas_threads, default_jobs, release_free_memory, set_blas_threads,
                       tune_malloc)
from .errors import NumbaDemucsError
from .models.bag import BagOfModels


@dataclasses.dataclass
class _Chunk:
    """A window ``[offset, offset + length)`` on ``base (batch, channels, samples)``; demucs' TensorChunk."""

    base: np.ndarray
    offset: int = 0
    length: int | None = None

    def __post_init__(self):
        total = self.base.shape[-1]
        if self.length is None:
            self.length = total - self.offset
        self.length = min(total - self.offset, self.length)

    def sub(self, offset, length=None):
        length = self.length - offset if length is None else min(self.length - offset, length)
        return _Chunk(self.base, self.offset + offset, length)

    def padded(self, target_length):
        """``target_length`` samples centred on the window, zeros outside ``base``."""
        delta = target_length - self.length
        start = self.offset - delta // 2
        end = start + target_length
        total = self.base.shape[-1]
        inside_start, inside_end = max(0, start), min(total, end)
        out = np.zeros(self.base.shape[:-1] + (target_length,), dtype=self.base.dtype)
        out[..., inside_start - start: inside_end - start] = self.base[..., inside_start:inside_end]
        return out


def center_trim(array, length):
    delta = array.shape[-1] - length
    if delta < 0:
        raise NumbaDemucsError(f"cannot trim {array.shape[-1]} samples to {length}")
    return array[..., delta // 2: array.shape[-1] - (delta - delta // 2)]


def transition_weights(segment_length, transition_power, dtype):
    """demucs' triangular overlap-add weights, peak-normalised, raised to ``transition_power``."""
    ramp = np.concatenate([np.arange(1, segment_length // 2 + 1),
                           np.arange(segment_length - segment_length // 2, 0, -1)]).astype(dtype)
    return (ramp / ramp.max()) ** dtype.type(transition_power)


def _check_mix(mix, model):
    mix = np.asarray(mix)
    if mix.ndim != 3:
        raise NumbaDemucsError(
            f"mix must be (batch, channels, samples), got an array of shape {mix.shape}")
    if mix.shape[1] != model.audio_channels:
        raise NumbaDemucsError(
            f"the model takes {model.audio_channels} channels, the mix has {mix.shape[1]}")
    if mix.shape[-1] == 0:
        raise NumbaDemucsError("the mix is empty (zero samples)")
    if not np.all(np.isfinite(mix)):
        raise NumbaDemucsError("the mix contains NaN or infinite samples")
    return np.ascontiguousarray(mix, dtype=model.dtype)


class _Runner:
    def __init__(self, model, rng, overlap, transition_power, segment, jobs, callback, dry_run):
        self.model = model
        self.rng = rng
        self.overlap = overlap
        self.transition_power = transition_power
        self.segment = segment
        self.jobs = jobs
        self.callback = callback
        self.dry_run = dry_run

    def _sin_shift(self):
        """The draw demucs' transformer makes on every forward (``random.randrange(shift + 1)``)."""
        transformer = getattr(self.model, "crosstransformer", None)
        if transformer is None:
            return 0
        return self.rng.randrange(transformer.sin_random_shift + 1)

    def _forward(self, chunk: _Chunk, sin_shift):
        if self.segment is not None and getattr(self.model, "segment_fixes_input_length", True):
            valid_length = int(self.segment * self.model.samplerate)
        else:
            valid_length = self.model.valid_length(chunk.length)
        if self.dry_run:
            return None
        out = self.model(chunk.padded(valid_length), sin_shift)
        return center_trim(out, chunk.length)

    def shifted(self, mix: _Chunk, shifts, split):
        length = mix.length
        max_shift = int(0.5 * self.model.samplerate)
        padded = _Chunk(mix.padded(length + 2 * max_shift))
        out = 0.0
        for shift_index in range(shifts):
            offset = self.rng.randint(0, max_shift)
            shifted = padded.sub(offset, length + max_shift - offset)
            with trace.call_context(shift=shift_index):
                result = self.split(shifted) if split else self._forward(shifted, self._sin_shift())
            if result is not None:
                out = out + result[..., max_shift - offset:]
        return None if self.dry_run else out / self.model.dtype.type(shifts)

    def split(self, mix: _Chunk):
        model = self.model
        dtype = model.dtype
        batch, channels = mix.base.shape[:2]
        length = mix.length
        segment = self.segment if self.segment is not None else model.segment
        segment_length = int(model.samplerate * segment)
        stride = int((1 - self.overlap) * segment_length)
        offsets = list(range(0, length, stride))
        # Draw every segment's randomness first, in demucs' order, so segments may run in parallel.
        sin_shifts = [self._sin_shift() for _ in offsets]
        if self.dry_run:
            return None
        state = trace.snapshot()
        context = state[1]

        def run(index):
            with trace.carried(state), trace.call_context(segment=index):
                result = self._forward(mix.sub(offsets[index], segment_length), sin_shifts[index])
            if self.callback is not None:
                self.callback({**context, "segment_offset": offsets[index], "segments": len(offsets)})
            return result

        out = np.zeros((batch, len(model.sources), channels, length), dtype=dtype)
        sum_weight = np.zeros(length, dtype=dtype)
        weight = transition_weights(segment_length, self.transition_power, dtype)

        def accumulate(offset, chunk_out):
            chunk_length = chunk_out.shape[-1]
            out[..., offset:offset + segment_length] += weight[:chunk_length] * chunk_out
            sum_weight[offset:offset + segment_length] += weight[:chunk_length]

        # Each segment's output is added as soon as it is ready, in offset order (demucs'
        # accumulation order), so memory holds the output buffer and a few segments, not
        # every segment's output at once.
        if self.jobs is None:
            # Several segments: one per core, BLAS single-threaded in each. A trace capture
            # runs them one by one (demucs' record order) with the same single-threaded
            # BLAS, so a traced separation gives the very same bits as an untraced one.
            single_blas = len(offsets) > 1
            jobs = 1 if trace.snapshot()[0] is not None else min(default_jobs(), len(offsets))
        else:
            jobs = min(self.jobs, len(offsets))
            single_blas = jobs > 1
        tune_malloc(threads=jobs > 1)
        with blas_threads(1) if single_blas else contextlib.nullcontext():
            if jobs > 1:
                pool = ThreadPoolExecutor(jobs)
                try:
                    futures = [pool.submit(run, index) for index in range(len(offsets))]
                    pending, added = set(futures), 0
                    while pending:
                        _, pending = wait(pending, return_when=FIRST_COMPLETED)
                        if len(pending) == 1 and single_blas:
                            # One segment left and idle cores: let its remaining matrix
                            # products use them. OpenBLAS splits a GEMM over rows and
                            # columns, never over the summed axis, so the bits do not depend
                            # on its thread count; it takes the setting only from the main
                            # thread, which is why this loop (not a worker) makes it.
                            set_blas_threads(jobs)
                        while added < len(futures) and futures[added].done():
                            accumulate(offsets[added], futures[added].result())
                            futures[added] = None  # its 4-stem output is added: drop it
                            added += 1
                finally:
                    # On Ctrl-C or an error, drop the queued segments instead of running them.
                    pool.shutdown(wait=True, cancel_futures=True)
            else:
                for index, offset in enumerate(offsets):
                    accumulate(offset, run(index))
        out /= sum_weight
        return out


def apply_model(model, mix, shifts: int = 1, split: bool = True, overlap: float = 0.25,
                transition_power: float = 1.0, segment: float | None = None,
                seed: int | None = None, sources: list[str] | None = None, jobs: int | None = None,
                callback: Callable[[dict], None] | None = None):
    """Separate ``mix (batch, channels, samples)`` into ``(batch, sources, channels, samples)``.

    Semantics of ``demucs.apply.apply_model``: ``shifts`` random time shifts of up to half a
    second averaged; ``split`` into segments of ``segment`` seconds (the model's by default)
    overlapping by ``overlap`` and blended with triangular weights raised to
    ``transition_power``. ``seed`` makes the shifts reproducible (the offsets are those
    demucs draws after ``random.seed(seed)``); with ``seed=None`` Python's global ``random``
    is used, as demucs does. For a bag, ``sources`` (names) lets members whose weights are
    zero on every requested source be skipped; their random draws are still made so the
    other members' shifts do not change. ``jobs`` runs segments in that many threads, each
    with single-threaded BLAS. ``None`` (the default) is one thread per CPU core when there
    are several segments, which measured faster than one segment at a time on multi-threaded
    BLAS (docs/benchmarks.md); under a trace capture the segments run one by one, still with
    single-threaded BLAS, so tracing changes no bit of the result. ``jobs=1`` leaves BLAS
    as configured: multi-threaded BLAS may round differently in the last bits.
    """
    if transition_power < 1:
        raise NumbaDemucsError("transition_power < 1 is not allowed (demucs refuses it too)")
    if not 0 <= overlap < 1:
        raise NumbaDemucsError(f"overlap must be in [0, 1), got {overlap}")
    if shifts < 0:
        raise NumbaDemucsError(f"shifts must be >= 0, got {shifts}")
    if segment is not None:
        if segment <= 0:
            raise NumbaDemucsError(f"segment must be positive, got {segment}")
        if segment > model.segment and getattr(model, "segment_fixes_input_length", True):
            raise NumbaDemucsError(
                f"segment {segment} s is longer than the model's {float(model.segment):.2f} s; "
                "a transformer model cannot run on longer segments than it was trained on")
    if jobs is not None and jobs < 1:
        raise NumbaDemucsError(f"jobs must be >= 1, got {jobs}")
    rng = random if seed is None else random.Random(seed)
    mix = _check_mix(mix, model)
    try:
        return _apply_members(model, mix, rng, shifts, split, overlap, transition_power,
                              segment, sources, jobs, callback)
    finally:
        # the freed temporaries were kept for reuse between segments (tune_malloc)
        release_free_memory()


def _apply_members(model, mix, rng, shifts, split, overlap, transition_power, segment,
                   sources, jobs, callback):
    members = [(0, model, None)]
    if isinstance(model, BagOfModels):
        if sources is not None:
            unknown = set(sources) - set(model.sources)
            if unknown:
                raise NumbaDemucsError(f"unknown sources {sorted(unknown)}; the model has {model.sources}")
        used = set(model.members_for(sources))
        members = [(i, member, model.weight_array(i)) for i, member in enumerate(model.models)]
    estimates = None
    totals = np.zeros(len(model.sources))
    for index, member, weights in members:
        dry_run = weights is not None and index not in used
        runner = _Runner(member, rng, overlap, transition_power, segment, jobs, callback, dry_run)
        with trace.call_context(**({} if weights is None else {"model": index})):
            if shifts:
                out = runner.shifted(_Chunk(mix), shifts, split)
            elif split:
                out = runner.split(_Chunk(mix))
            else:
                out = runner._forward(_Chunk(mix), runner._sin_shift())
        if weights is None:
            return out
        if dry_run:
            continue
        for k, weight in enumerate(weights):
            out[:, k] *= member.dtype.type(weight)
            totals[k] += weight
        estimates = out if estimates is None else estimates + out
    for k in range(len(model.sources)):
        if totals[k] != 0:
            estimates[:, k] /= model.dtype.type(totals[k])
    return estimates
