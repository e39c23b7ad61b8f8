"""The segment plan: which model calls a separation makes, on which samples, with which
random draws, and how their outputs are blended back into stems.

Both ways of separating use it: ``apply_model`` on an array in memory, and ``--stream``
on a file read block by block (``stream.py``). They differ only in where the samples come
from and when finished stretches of output are combined; every decision that fixes a
single output bit is taken here, once:

- the passes: one per bag member and per shift (``demucs.apply.apply_model``'s loops);
- the random draws, in demucs' order: per pass, the shift offset
  (``random.randint(0, max_shift)``), then each call's own draw
  (``model.draw_randomness``: HTDemucs' transformer draws ``randrange`` on every forward);
- the grid: segments of ``segment`` seconds every ``(1 - overlap) * segment`` seconds over
  the pass's window, each call reading a centred, zero-padded input of the model's valid
  length (demucs' ``TensorChunk.padded``) and keeping its centre (``center_trim``);
- the triangular transition weights of the overlap-add;
- the average over shifts and the per-source bag weights (``combine``);
- how calls are handed to worker threads and how many threads BLAS gets
  (``run_calls``, ``single_threaded_blas``).

All positions are track positions: sample 0 is the first sample of the mix; a pass under a
shift starts before it, and inputs read zeros outside the track, as demucs' padding does.
"""
from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterable

import numpy as np

from . import trace
from ._threads import blas_threads, default_jobs, segment_running, tune_malloc
from .errors import NumbaDemucsError
from .models.bag import BagOfModels

MAX_SHIFT_SECONDS = 0.5  # demucs: shifts move the track by up to half a second
WEIGHT_BLOCK = 1 << 18  # samples per block when an in-memory pass is divided by its weights


def center_trim(array, length):
    """The centre ``length`` samples of ``array`` (demucs.utils.center_trim)."""
    delta = array.shape[-1] - length
    if delta < 0:
        raise NumbaDemucsError(f"cannot trim {array.shape[-1]} samples to {length}")
    return array[..., delta // 2: array.shape[-1] - (delta - delta // 2)]


def transition_weights(segment_length, transition_power, dtype):
    """demucs' triangular overlap-add weights, peak-normalised, raised to ``transition_power``."""
    ramp = np.concatenate([np.arange(1, segment_length // 2 + 1),
                           np.arange(segment_length - segment_length // 2, 0, -1)]).astype(dtype)
    return (ramp / ramp.max()) ** dtype.type(transition_power)


def read_window(base, start: int, stop: int):
    """``base[..., start:stop]`` with zeros where the range leaves ``base``."""
    total = base.shape[-1]
    out = np.zeros(base.shape[:-1] + (stop - start,), dtype=base.dtype)
    first, last = max(0, start), min(total, stop)
    if last > first:
        out[..., first - start:last - start] = base[..., first:last]
    return out


def longest_segment(model) -> float:
    """The longest ``segment`` (seconds) a model or bag may be run with, as demucs'
    ``separate`` allows: a transformer model's (``segment_fixes_input_length``) own segment,
    the shortest of them in a bag; no limit for HDemucs and Demucs, which take any length."""
    members = model.models if isinstance(model, BagOfModels) else [model]
    limits = [float(member.segment) for member in members
              if getattr(member, "segment_fixes_input_length", False)]
    return min(limits, default=float("inf"))


def input_length(model, chunk_length: int, segment) -> int:
    """Samples the model is given for a chunk of ``chunk_length``, as demucs.apply pads.

    A transformer model (``segment_fixes_input_length``) given an explicit ``segment`` runs
    on exactly that many seconds; every other call is padded to ``model.valid_length``.
    """
    if segment is not None and model.segment_fixes_input_length:
        return int(segment * model.samplerate)
    return model.valid_length(chunk_length)


@dataclasses.dataclass(frozen=True)
class Call:
    """One model call: ``input_length`` samples from ``input_start`` in, the centre
    ``length`` samples kept, which land at track position ``start``."""

    index: int  # position in its pass (the trace context's ``segment``)
    start: int
    length: int
    input_start: int
    input_length: int
    draw: object  # the model's own random draw, passed to its forward


@dataclasses.dataclass
class Pass:
    """One bag member under one shift: the calls over a window of the track."""

    member: int | None  # index in the bag; None for a single model
    shift: int | None  # index of the shift; None without shifts
    model: object
    start: int  # track position of the window's first sample (negative under a shift)
    length: int  # the window's length
    split: bool
    calls: list
    weight: np.ndarray  # transition weights of one call (ones without split)
    skipped: bool = False  # a bag member with no weight on the requested sources

    def context(self, call: Call) -> dict:
        """The call indices trace records and progress events carry."""
        indices = {}
        if self.member is not None:
            indices["model"] = self.member
        if self.shift is not None:
            indices["shift"] = self.shift
        if self.split:
            indices["segment"] = call.index
        return indices


def plan(model, length: int, *, shifts: int, split: bool, overlap: float,
         transition_power: float, segment, rng, sources=None) -> list:
    """Every pass of a separation of ``length`` samples, with all random draws made in the
    order demucs makes them (so calls may then run in any order, or in parallel)."""
    if isinstance(model, BagOfModels):
        used = set(model.members_for(sources))
        members = [(index, member, index not in used) for index, member in enumerate(model.models)]
    else:
        members = [(None, model, False)]
    passes = []
    for index, member, skipped in members:
        max_shift = int(MAX_SHIFT_SECONDS * member.samplerate)
        for shift in range(max(shifts, 1)):
            if shifts:
                offset = rng.randint(0, max_shift)
                start, window = offset - max_shift, length + max_shift - offset
            else:
                start, window = 0, length
            if split:
                segment_length = int(member.samplerate * (segment if segment is not None
                                                          else member.segment))
                stride = int((1 - overlap) * segment_length)
                offsets = range(0, window, stride)
                chunk_lengths = [min(segment_length, window - offset) for offset in offsets]
                weight = transition_weights(segment_length, transition_power, member.dtype)
            else:
                offsets, chunk_lengths = [0], [window]
                weight = np.ones(window, member.dtype)
            draws = [member.draw_randomness(rng) for _ in offsets]
            calls = []
            for k, (offset, chunk_length) in enumerate(zip(offsets, chunk_lengths)):
                padded = input_length(member, chunk_length, segment)
                calls.append(Call(k, start + offset, chunk_length,
                                  start + offset - (padded - chunk_length) // 2, padded,
                                  draws[k]))
            passes.append(Pass(index, shift if shifts else None, member, start, window, split,
                               calls, weight, skipped))
    return passes


def run_call(one: Pass, call: Call, read: Callable[[int, int], np.ndarray]):
    """``read(start, stop) -> (batch, channels, stop - start)`` in, the kept
    ``(batch, sources, channels, call.length)`` out."""
    mix = read(call.input_start, call.input_start + call.input_length)
    with trace.call_context(**one.context(call)):
        out = one.model(mix, call.draw)
    return center_trim(out, call.length)


class Accumulator:
    """The weighted overlap-add of one pass's calls, kept from track position ``origin`` on.

    ``capacity`` allocates the whole window at once (in memory); without it the buffer grows
    as calls arrive and ``take`` forgets what it hands out (streaming)."""

    def __init__(self, one: Pass, leading_shape: tuple, capacity: int | None = None):
        self.weight = one.weight
        self.origin = one.start
        self.next_call = 0
        self.calls = one.calls
        self.window_end = one.start + one.length
        self.whole = capacity is not None
        size = capacity or 0
        self.out = np.zeros(leading_shape + (size,), dtype=one.model.dtype)
        # In memory the weight sums are rebuilt block by block in ``take`` (the same float32
        # additions in the same order): a whole-window array would be half a stereo copy
        # of the track more.
        self.weight_sum = None if self.whole else np.zeros(0, dtype=one.model.dtype)

    def add(self, call: Call, chunk) -> None:
        """Add ``chunk (..., call.length)``; calls must come in their pass's order."""
        first, last = call.start - self.origin, call.start - self.origin + call.length
        if self.whole:
            self.out[..., first:last] += self.weight[:call.length] * chunk
            self.next_call = call.index + 1
            return
        if last > self.out.shape[-1]:
            grow = last - self.out.shape[-1]
            self.out = np.concatenate(
                [self.out, np.zeros(self.out.shape[:-1] + (grow,), self.out.dtype)], axis=-1)
            self.weight_sum = np.concatenate([self.weight_sum,
                                              np.zeros(grow, self.weight_sum.dtype)])
        weight = self.weight[:call.length]
        self.out[..., first:last] += weight * chunk
        self.weight_sum[first:last] += weight
        self.next_call = call.index + 1

    def final_until(self) -> int:
        """Track position before which no remaining call adds anything."""
        if self.next_call >= len(self.calls):
            return self.window_end
        return self.calls[self.next_call].start

    def take(self, start: int, stop: int):
        """The finished estimate for track positions ``[start, stop)``; what lies before
        ``stop`` is forgotten."""
        first, last = start - self.origin, stop - self.origin
        estimate = self.out[..., first:last]
        if self.whole:
            # in place, one block at a time: the stems are the only track-long buffer
            for block in range(first, last, WEIGHT_BLOCK):
                end = min(block + WEIGHT_BLOCK, last)
                estimate[..., block - first:end - first] /= self._weight_sum(block, end)
            return estimate
        estimate /= self.weight_sum[first:last]
        self.out = self.out[..., last:].copy() if last < self.out.shape[-1] else self.out[..., :0]
        self.weight_sum = self.weight_sum[last:].copy()
        self.origin = stop
        return estimate

    def _weight_sum(self, first: int, last: int):
        """The sum of the weights every call adds to window positions ``[first, last)``, added
        call by call in the pass's order from zero, as ``add`` adds them when streaming."""
        total = np.zeros(last - first, dtype=self.weight.dtype)
        for call in self.calls:
            begin = call.start - self.origin
            a, b = max(begin, first), min(begin + call.length, last)
            if b > a:
                total[a - first:b - first] += self.weight[a - begin:b - begin]
        return total


def combine(model, shifts: int, member_estimates: Iterable) -> np.ndarray:
    """Stems from ``(member, shift_estimates)`` pairs (``member`` None for a single model):
    the shifts averaged, then the bag members weighted per source, as demucs does."""
    estimates, totals = None, np.zeros(len(model.sources))
    for member, shift_estimates in member_estimates:
        # In place, into the first estimate (each estimate is its pass's own buffer, which
        # the accumulator no longer uses): the same float32 operations, in the same order,
        # as demucs' ``out = 0; out += estimate; out /= shifts``, without a track-long copy
        # per step.
        out = None
        for estimate in shift_estimates:
            if out is None:
                out = estimate
                if shifts:
                    out += model.dtype.type(0.0)  # 0.0 + x: turns -0.0 into +0.0 as demucs
            else:
                out += estimate
        if shifts:
            out /= model.dtype.type(shifts)
        if member is None:
            return out
        for k, weight in enumerate(model.weights[member]):
            out[:, k] *= model.dtype.type(weight)
            totals[k] += weight
        if estimates is None:
            estimates = out
        else:
            estimates += out
    for k in range(len(model.sources)):
        if totals[k] != 0:
            estimates[:, k] /= model.dtype.type(totals[k])
    return estimates


def single_threaded_blas(passes, jobs: int | None) -> bool:
    """Whether every call of a separation runs on single-threaded BLAS.

    It depends on the whole plan only, never on which calls happen to run together, so the
    in-memory, streamed and traced paths give the same bits: a multi-threaded GEMM may
    round differently from a single-threaded one (measured with OpenBLAS 0.3.31's Haswell
    kernels: a (512, 2048) x (2048, 336) sgemm differs by 9e-5 between 1 and 2 threads).
    A separation of a single call keeps BLAS threaded; ``jobs=1`` leaves BLAS as configured.
    """
    calls = sum(len(one.calls) for one in passes if not one.skipped)
    return calls > 1 and (jobs is None or jobs > 1)


def run_calls(tasks: list, run: Callable, consume: Callable, jobs: int | None, *,
              single_blas: bool, keep_heap: bool = True) -> None:
    """``consume(task, run(task))`` for every task, ``consume`` in task order on this thread.

    ``jobs=None``: one task per core (measured faster than one at a time on threaded BLAS,
    docs/benchmarks.md); under a trace capture one by one, so records come in demucs'
    order. At most ``2 * jobs`` results are in flight, so memory holds a few calls'
    outputs, not all of them.
    """
    if not tasks:
        return
    if jobs is None:
        jobs = 1 if trace.enabled() else default_jobs()
    jobs = min(jobs, len(tasks))
    tune_malloc(threads=jobs > 1, heap=keep_heap)
    if single_blas:
        # counted while it runs: a call that finds a core without a segment hands
        # independent pieces of its work to it (_threads.pair/share; the same bits)
        bare_run = run

        def run(task):
            with segment_running():
                return bare_run(task)
    with blas_threads(1) if single_blas else contextlib.nullcontext():
        if jobs == 1:
            for task in tasks:
                consume(task, run(task))
            return
        state = trace.snapshot()

        def carried_run(task):
            with trace.carried(state):
                return run(task)

        pool = ThreadPoolExecutor(jobs)
        try:
            futures, submitted, consumed = {}, 0, 0
            while consumed < len(tasks):
                while submitted < len(tasks) and submitted - consumed < 2 * jobs:
                    futures[submitted] = pool.submit(carried_run, tasks[submitted])
                    submitted += 1
                wait([futures[consumed]])
                while consumed in futures and futures[consumed].done():
                    # consumed in order; its output is then dropped
                    consume(tasks[consumed], futures.pop(consumed).result())
                    consumed += 1
        finally:
            # On Ctrl-C or an error, drop the queued calls instead of running them.
            pool.shutdown(wait=True, cancel_futures=True)


def progress_event(one: Pass, call: Call, total: int) -> dict:
    """What a progress callback receives for a finished call."""
    return {**one.context(call), "segment_offset": call.start - one.start,
            "segments": len(one.calls), "segments_total": total}
