"""Separate a file in bounded memory: read, separate and write block by block.

The result is ``apply_model``'s, sample for sample: the same segment grid, the same random
draws made in the same order (all of them up front), the same float32 accumulation order.
What changes is when work happens. Every segment of every pass (one pass per bag member and
per shift) is run in order of its position in the track; as soon as no pass can touch a
stretch of output any more, that stretch is normalised by its weights, combined across
shifts and bag members, and appended to one temporary float32 file per stem. The input is
read from the file twice (once for the mean and deviation of the mono downmix, once to
separate it) and never held whole; the stems are held only as the accumulators of the
segments in flight.

The stems are then converted in a second, also blockwise, sweep to the output rate and
format, because ``--clip-mode rescale`` needs each stem's peak before its first sample is
written. Each final file is written under a temporary name and renamed at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile

from . import audio
from ._files import temporary_beside
from ._threads import blas_threads, default_jobs, set_blas_threads, tune_malloc
from .apply import center_trim, transition_weights
from .errors import AudioError, NumbaDemucsError
from .models.bag import BagOfModels

BLOCK = 1 << 18  # samples per read / write block


class _Input:
    """The input file seen as model-rate, model-channel samples, unnormalised."""

    def __init__(self, path: Path, model_channels: int, model_rate: int):
        self.path = path
        details = audio.info(path)
        if details.frames == 0:
            raise AudioError(f"{path}: the file holds no samples")
        self.rate, self.channels, self.frames = details.samplerate, details.channels, details.frames
        self.model_channels = model_channels
        try:
            self.file = soundfile.SoundFile(str(path))
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise audio._open_error(path, error) from None
        self.lock = threading.Lock()
        self.resampler = (audio.SincResampler(self.rate, model_rate)
                          if self.rate != model_rate else None)
        self.length = (self.resampler.output_length(self.frames) if self.resampler
                       else self.frames)

    def close(self):
        self.file.close()

    def read_clamped(self, start: int, stop: int, channels: int | None = None) -> np.ndarray:
        """Input-rate samples ``[start, stop)``, indices clamped into the file."""
        first, last = max(start, 0), min(stop, self.frames)
        with self.lock:  # segments read from worker threads; seek + read must not interleave
            self.file.seek(first)
            data = self.file.read(last - first, dtype="float32", always_2d=True).T
        if data.shape[1] != last - first:
            raise AudioError(f"{self.path}: the file ends early (read {data.shape[1]} of "
                             f"{last - first} samples at {first})")
        if not np.isfinite(data).all():
            raise AudioError(f"{self.path}: samples near {first} are NaN or infinite")
        data = audio.to_channels(data, channels or self.model_channels)
        data = audio.extend_edges(data, start, stop, self.frames)
        return np.ascontiguousarray(data, dtype=np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Model-rate samples ``[start, stop)``, zero outside the track."""
        out = np.zeros((self.model_channels, stop - start), dtype=np.float32)
        first, last = max(start, 0), min(stop, self.length)
        if last > first:
            if self.resampler is None:
                out[:, first - start:last - start] = self.read_clamped(first, last)
            else:
                out[:, first - start:last - start] = self.resampler.range(
                    self.read_clamped, first, last)
        return out

    def statistics(self) -> tuple[float, float, bool]:
        """Mean, unbiased deviation of the mono downmix, and whether any sample is non-zero."""
        count, mean, m2, nonzero = 0, 0.0, 0.0, False
        for start in range(0, self.length, BLOCK):
            block = self.read(start, min(start + BLOCK, self.length))
            nonzero = nonzero or bool(block.any())
            downmix = block.mean(axis=0, dtype=np.float64)
            n, block_mean = downmix.size, downmix.mean()
            block_m2 = ((downmix - block_mean) ** 2).sum()
            delta = block_mean - mean
            total = count + n
            mean += delta * n / total
            m2 += block_m2 + delta * delta * count * n / total
            count = total
        spread = (m2 / (count - 1)) ** 0.5 if count > 1 else 0.0
        return mean, spread, nonzero


@dataclasses.dataclass
class _Pass:
    """One bag member under one shift: a grid of segments over a window of the track."""

    member: int
    shift: int
    model: object
    base: int  # track position of the window's first sample (negative under a shift)
    window: int
    offsets: list
    sin_shifts: list
    segment_length: int
    weight: np.ndarray
    next_segment: int = 0
    origin: int = 0  # window position of the accumulators' first sample
    out: np.ndarray | None = None
    total_weight: np.ndarray | None = None

    def final_until(self) -> int:
        """Track position before which no remaining segment of this pass adds anything."""
        if self.next_segment >= len(self.offsets):
            return self.base + self.window
        return self.base + self.offsets[self.next_segment]

    def accumulate(self, offset: int, chunk: np.ndarray) -> None:
        end = offset + chunk.shape[-1]
        if self.out is None:
            self.out = np.zeros(chunk.shape[:-1] + (0,), dtype=chunk.dtype)
            self.total_weight = np.zeros(0, dtype=chunk.dtype)
        have = self.origin + self.out.shape[-1]
        if end > have:
            grow = end - have
            self.out = np.concatenate(
                [self.out, np.zeros(self.out.shape[:-1] + (grow,), self.out.dtype)], axis=-1)
            self.total_weight = np.concatenate([self.total_weight,
                                                np.zeros(grow, self.total_weight.dtype)])
        weight = self.weight[:chunk.shape[-1]]
        self.out[..., offset - self.origin:end - self.origin] += weight * chunk
        self.total_weight[offset - self.origin:end - self.origin] += weight

    def take(self, start: int, stop: int) -> np.ndarray:
        """This pass's finished estimate for track positions ``[start, stop)``, then forget it."""
        first, last = start - self.base - self.origin, stop - self.base - self.origin
        estimate = self.out[..., first:last] / self.total_weight[first:last]
        self.out = self.out[..., last:].copy()
        self.total_weight = self.total_weight[last:].copy()
        self.origin += last
        return estimate


def _sin_shift(model, rng) -> int:
    transformer = getattr(model, "crosstransformer", None)
    return 0 if transformer is None else rng.randrange(transformer.sin_random_shift + 1)


def _plan(separator, length: int) -> list[_Pass]:
    """Every pass with its random draws, drawn in the order ``apply_model`` draws them."""
    model = separator.model
    rng = random if separator.seed is None else random.Random(separator.seed)
    members = model.models if isinstance(model, BagOfModels) else [model]
    passes = []
    for index, member in enumerate(members):
        segment = separator.segment if separator.segment is not None else member.segment
        segment_length = int(member.samplerate * segment)
        stride = int((1 - separator.overlap) * segment_length)
        weight = transition_weights(segment_length, 1.0, member.dtype)
        max_shift = int(0.5 * member.samplerate)
        for shift in range(max(separator.shifts, 1)):
            if separator.shifts:
                offset = rng.randint(0, max_shift)
                base, window = offset - max_shift, length + max_shift - offset
            else:
                base, window = 0, length
            offsets = list(range(0, window, stride))
            sin_shifts = [_sin_shift(member, rng) for _ in offsets]
            passes.append(_Pass(index, shift, member, base, window, offsets, sin_shifts,
                                segment_length, weight))
    return passes


class _StemFiles:
    """One temporary float32 file per stem, appended in order, read back by ranges."""

    def __init__(self, folder: Path, names, channels: int):
        self.channels = channels
        self.paths = {}
        self.files = {}
        for name in names:
            handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".f32", dir=folder)
            self.paths[name] = Path(path)
            self.files[name] = os.fdopen(handle, "w+b")
        self.length = 0

    def append(self, stems: dict) -> None:
        for name, data in stems.items():
            self.files[name].write(np.ascontiguousarray(data.T, dtype=np.float32).tobytes())
        self.length += next(iter(stems.values())).shape[-1]

    def reader(self, name: str):
        """``read(a, b)`` with indices clamped to the stem's ends (for the resampler)."""
        handle = self.files[name]
        handle.flush()

        def read(start, stop):
            first, last = max(start, 0), min(stop, self.length)
            handle.seek(first * self.channels * 4)
            data = np.frombuffer(handle.read((last - first) * self.channels * 4),
                                 dtype=np.float32).reshape(-1, self.channels).T
            return audio.extend_edges(data, start, stop, self.length)
        return read

    def close(self) -> None:
        for name, handle in self.files.items():
            handle.close()
            self.paths[name].unlink(missing_ok=True)


def _combine(separator, passes, start, stop, mean, std):
    """Finished model-rate stems for ``[start, stop)``: shifts averaged, bag weighted."""
    model = separator.model
    estimates, totals = None, np.zeros(len(model.sources))
    by_member = {}
    for one in passes:
        by_member.setdefault(one.member, []).append(one)
    for member, member_passes in by_member.items():
        out = 0.0
        for one in member_passes:
            out = out + one.take(start, stop)
        dtype = member_passes[0].model.dtype
        if separator.shifts:
            out = out / dtype.type(separator.shifts)
        if not isinstance(model, BagOfModels):
            estimates = out
            break
        for k, weight in enumerate(model.weight_array(member)):
            out[k] *= dtype.type(weight)
            totals[k] += weight
        estimates = out if estimates is None else estimates + out
    if isinstance(model, BagOfModels):
        for k in range(len(model.sources)):
            if totals[k] != 0:
                estimates[k] /= model.dtype.type(totals[k])
    return estimates * std + mean


def separate_file(separator, path, out, *, filename, two_stems, other_method, format, bits,
                  as_float, bitrate, clip_mode, samplerate, callback=None) -> dict:
    """``Separator.separate_file`` in bounded memory; same arguments, same files."""
    if not separator.split:
        raise NumbaDemucsError("--stream needs the track split in segments (drop --no-split)")
    path = Path(path)
    source = _Input(path, separator.audio_channels, separator.samplerate)
    track, extension = audio.track_name(path)
    targets = {}
    names = list(separator.sources)
    if two_stems is not None:
        names = [two_stems] + ([f"no_{two_stems}"] if other_method == "add" else []) \
            + ([f"minus_{two_stems}"] if other_method == "minus" else [])
    for name in names:
        targets[name] = Path(out) / separator.name / filename.format(
            track=track, trackext=extension, stem=name, ext=format)
        targets[name].parent.mkdir(parents=True, exist_ok=True)
    stem_channels = 1 if source.channels == 1 else separator.audio_channels
    scratch = _StemFiles(next(iter(targets.values())).parent, names, stem_channels)
    finals = []
    try:
        mean, spread, nonzero = source.statistics()
        length = source.length
        mean32 = np.float32(mean)
        std = np.float32(spread) + np.float32(1e-8)
        if nonzero:
            _separate_into(separator, source, scratch, names, two_stems, length, mean32, std,
                           stem_channels, callback)
        else:
            for start in range(0, length, BLOCK):
                n = min(BLOCK, length - start)
                scratch.append({name: np.zeros((stem_channels, n), np.float32)
                                for name in names if not name.startswith("minus_")})
        output_rate = samplerate or source.rate
        for name in names:
            finals.append(_write_stem(scratch, name, targets[name], source, separator,
                                      output_rate, two_stems, format, bits, as_float,
                                      bitrate, clip_mode))
        for temporary, target in finals:
            os.replace(temporary, target)
        return targets
    except BaseException:
        for temporary, _ in finals:
            temporary.unlink(missing_ok=True)
        raise
    finally:
        scratch.close()
        source.close()


def _separate_into(separator, source, scratch, names, two_stems, length, mean, std,
                   stem_channels, callback):
    passes = _plan(separator, length)
    queue = sorted(((one.base + offset, p, k) for p, one in enumerate(passes)
                    for k, offset in enumerate(one.offsets)))
    written = 0

    def run(item):
        _, p, k = item
        one = passes[p]
        chunk_length = min(one.segment_length, one.window - one.offsets[k])
        if separator.segment is not None:
            valid = int(separator.segment * one.model.samplerate)
        else:
            valid = one.model.valid_length(chunk_length)
        begin = one.base + one.offsets[k] - (valid - chunk_length) // 2
        # Normalised inside the track, zero outside it: demucs pads the normalised mix.
        mix = source.read(begin, begin + valid)
        inside = slice(max(0, -begin), max(0, min(valid, length - begin)))
        mix[:, inside] = (mix[:, inside] - mean) / std
        mix[:, :inside.start] = 0
        mix[:, inside.stop:] = 0
        result = one.model(mix[None], one.sin_shifts[k])[0]
        return center_trim(result, chunk_length)

    jobs = separator.jobs or default_jobs()
    with blas_threads(1) if jobs > 1 else contextlib.nullcontext(), \
            ThreadPoolExecutor(jobs) as pool:
        tune_malloc(threads=jobs > 1, heap=False)
        try:
            for first in range(0, len(queue), jobs):
                batch = queue[first:first + jobs]
                if len(batch) == 1 and jobs > 1:
                    # a lone last segment: its GEMMs may use the idle cores (same bits, see
                    # apply.py)
                    set_blas_threads(jobs)
                for (position, p, k), chunk in zip(batch, pool.map(run, batch)):
                    one = passes[p]
                    one.accumulate(one.offsets[k], chunk)
                    one.next_segment = k + 1
                    if callback is not None:
                        callback({"model": one.member, "shift": one.shift,
                                  "segment_offset": one.offsets[k],
                                  "segments": len(one.offsets),
                                  "segments_total": len(queue)})
                ready = min(length, min(one.final_until() for one in passes))
                while written < ready:
                    stop = min(ready, written + BLOCK)
                    stems = _combine(separator, passes, written, stop, mean, std)
                    scratch.append(_named_stems(separator, stems, names, two_stems,
                                                stem_channels))
                    written = stop
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _named_stems(separator, stems, names, two_stems, stem_channels):
    if stem_channels == 1:
        stems = stems.mean(axis=1, keepdims=True)
    by_name = dict(zip(separator.sources, stems))
    if two_stems is None:
        return by_name
    chosen = by_name.pop(two_stems)
    block = {two_stems: chosen}
    if f"no_{two_stems}" in names:
        block[f"no_{two_stems}"] = sum(by_name.values())
    return block


def _write_stem(scratch, name, target, source, separator, output_rate, two_stems, format,
                bits, as_float, bitrate, clip_mode):
    """Second sweep: output rate, clipping strategy and format; returns (temporary, target)."""
    model_rate = separator.samplerate
    if name.startswith("minus_"):
        chosen = _stem_at_rate(scratch, two_stems, source, model_rate, output_rate)
        blocks = _minus(source, chosen, output_rate, scratch.channels)
    else:
        blocks = _stem_at_rate(scratch, name, source, model_rate, output_rate)
    peak = 0.0
    if clip_mode == "rescale":
        for block in blocks():
            peak = max(peak, float(np.abs(block).max()))
    temporary = temporary_beside(target)
    try:
        subtype, options = audio.format_options(format, bits, as_float, bitrate)
        with soundfile.SoundFile(str(temporary), "w", output_rate, scratch.channels,
                                 subtype=subtype, format=format.upper(), **options) as handle:
            for block in blocks():
                block = audio.prevent_clip(block, clip_mode, peak)
                handle.write(audio.encode_block(block, format, bits, as_float).T)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, (OSError, RuntimeError, soundfile.LibsndfileError)):
            raise audio._write_error(target, error) from None
        raise
    return temporary, target


def _stem_at_rate(scratch, name, source, model_rate, output_rate):
    """A function giving the stem's blocks at ``output_rate``, with the length the in-memory
    path gives (the input's exact length when the rate is the input's)."""
    if output_rate == model_rate:
        length = scratch.length
        resampler = None
    else:
        resampler = audio.SincResampler(model_rate, output_rate)
        length = resampler.output_length(scratch.length)
    if output_rate == source.rate:
        length = source.frames
    available = scratch.length if resampler is None else resampler.output_length(scratch.length)
    read = scratch.reader(name)

    def blocks():
        for start in range(0, length, BLOCK):
            stop = min(start + BLOCK, length)
            end = min(stop, available)
            if end > start:
                data = read(start, end) if resampler is None else resampler.range(read, start, end)
            else:
                data = np.zeros((scratch.channels, 0), np.float32)
            yield audio.fit_length(np.ascontiguousarray(data, dtype=np.float32), stop - start)
    return blocks


def _minus(source, chosen_blocks, output_rate, channels):
    """The input (in the stems' channels) at the output rate minus the chosen stem, by blocks."""
    resampler = (audio.SincResampler(source.rate, output_rate)
                 if output_rate != source.rate else None)

    def read(start, stop):
        return source.read_clamped(start, stop, channels=channels)

    def blocks():
        start = 0
        for stem in chosen_blocks():
            stop = start + stem.shape[-1]
            end = min(stop, source.frames if resampler is None
                      else resampler.output_length(source.frames))
            mix = read(start, end) if resampler is None else resampler.range(read, start, end)
            yield audio.fit_length(mix, stop - start) - stem
            start = stop
    return blocks
