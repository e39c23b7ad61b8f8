"""Apply a model to a whole mix in memory: overlapping segments, transition weights,
shifts, bags.

This follows ``demucs.apply.apply_model`` operation for operation (the same chunk
padding, triangular weights, centre trimming and shift offsets, and the same float32
accumulation order), so that a track separated here matches one separated by demucs. The
plan of calls and every rule that fixes an output bit live in ``segments.py``, shared with
``--stream``; this module runs the plan over an array, one pass at a time.
"""
from __future__ import annotations

import random
from typing import Callable

import numpy as np

from . import segments
from ._threads import release_free_memory
from .errors import NumbaDemucsError
from .models.bag import BagOfModels
from .segments import center_trim, transition_weights  # noqa: F401  (public helpers)


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
    other members' shifts do not change. ``jobs`` runs segments in that many threads.
    ``None`` (the default) is one thread per CPU core, which measured faster than one segment
    at a time on multi-threaded BLAS (docs/benchmarks.md); whenever a separation makes more
    than one call, every call runs on single-threaded BLAS, so the result does not depend on
    which calls ran together, and a trace capture (which runs them one by one) changes no
    bit of it. ``jobs=1`` leaves BLAS as configured: multi-threaded BLAS rounds differently.
    """
    return _apply(model, mix, None, shifts=shifts, split=split, overlap=overlap,
                  transition_power=transition_power, segment=segment, seed=seed,
                  sources=sources, jobs=jobs, callback=callback)


def apply_standardised(model, mix, standard, **options):
    """``apply_model(model, standard.apply(mix.copy()), **options)`` without the copy.

    Each segment's input is standardised as it is read (the same float32 operations on the
    same samples, so the same bits; zeros outside the track, as demucs pads the standardised
    mix): the Separator's in-memory path holds the track once, not twice (issue 16).
    """
    mix = np.asarray(mix)
    if mix.dtype != np.float32 or model.dtype != np.float32:
        # demucs standardises the float32 mix before any conversion to the model's dtype
        return _apply(model, standard.apply(mix.astype(np.float32)), None, **options)
    return _apply(model, mix, standard, **options)


def _apply(model, mix, standard, *, shifts: int = 1, split: bool = True, overlap: float = 0.25,
           transition_power: float = 1.0, segment: float | None = None,
           seed: int | None = None, sources: list[str] | None = None, jobs: int | None = None,
           callback: Callable[[dict], None] | None = None):
    if transition_power < 1:
        raise NumbaDemucsError("transition_power < 1 is not allowed (demucs refuses it too)")
    if not 0 <= overlap < 1:
        raise NumbaDemucsError(f"overlap must be in [0, 1), got {overlap}")
    if shifts < 0:
        raise NumbaDemucsError(f"shifts must be >= 0, got {shifts}")
    if segment is not None:
        if segment <= 0:
            raise NumbaDemucsError(f"segment must be positive, got {segment}")
        if segment > segments.longest_segment(model):
            raise NumbaDemucsError(
                f"segment {segment} s is longer than the model's "
                f"{segments.longest_segment(model):.2f} s; a transformer model cannot run on "
                "longer segments than it was trained on")
    if jobs is not None and jobs < 1:
        raise NumbaDemucsError(f"jobs must be >= 1, got {jobs}")
    rng = random if seed is None else random.Random(seed)
    mix = _check_mix(mix, model)
    if isinstance(model, BagOfModels) and sources is not None:
        unknown = set(sources) - set(model.sources)
        if unknown:
            raise NumbaDemucsError(f"unknown sources {sorted(unknown)}; the model has {model.sources}")
    passes = segments.plan(model, mix.shape[-1], shifts=shifts, split=split, overlap=overlap,
                           transition_power=transition_power, segment=segment, rng=rng,
                           sources=sources)
    try:
        return segments.combine(model, shifts,
                                _member_estimates(passes, mix, standard, jobs, callback))
    finally:
        # the freed temporaries were kept for reuse between segments (tune_malloc)
        release_free_memory()


def _member_estimates(passes, mix, standard, jobs, callback):
    """``(member, shift estimates)`` per bag member, each pass run only when asked for, so
    memory holds one pass's output buffer at a time besides the running sums."""
    members = {}
    for one in passes:
        if not one.skipped:
            members.setdefault(one.member, []).append(one)
    total = sum(len(one.calls) for member in members.values() for one in member)
    single_blas = segments.single_threaded_blas(passes, jobs)
    for member, member_passes in members.items():
        yield member, (_run_pass(one, mix, standard, jobs, single_blas, callback, total)
                       for one in member_passes)


def _run_pass(one, mix, standard, jobs, single_blas, callback, total):
    """The pass's estimate over the track, ``(batch, sources, channels, samples)``."""
    batch, channels, length = mix.shape
    accumulator = segments.Accumulator(one, (batch, len(one.model.sources), channels),
                                       capacity=one.length)

    def read(start, stop):
        window = segments.read_window(mix, start, stop)
        if standard is not None:
            standard.apply(window[..., max(0, -start):max(0, min(stop, length) - start)])
        return window

    def consume(call, out):
        accumulator.add(call, out)
        if callback is not None:
            callback(segments.progress_event(one, call, total))

    segments.run_calls(one.calls, lambda call: segments.run_call(one, call, read), consume, jobs,
                       single_blas=single_blas)
    return accumulator.take(0, length)
