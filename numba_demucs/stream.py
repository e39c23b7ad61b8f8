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

import os
import random
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile

from . import audio, segments
from ._files import temporary_beside
from .errors import AudioError, NumbaDemucsError
from .outputs import StemOutput
from .standardise import Standardisation

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
        self.resampler = (audio.SincResampler(self.rate, model_rate, origin=path)
                          if self.rate != model_rate else None)
        try:
            self.file = soundfile.SoundFile(str(path))
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise audio._open_error(path, error) from None
        self.lock = threading.Lock()
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

    def blocks(self):
        """The whole input at model rate, block by block."""
        for start in range(0, self.length, BLOCK):
            yield self.read(start, min(start + BLOCK, self.length))


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


def separate_file(separator, path, out, output: StemOutput, callback=None) -> dict:
    """``Separator.separate_file`` in bounded memory: the same files."""
    if not separator.split:
        raise NumbaDemucsError("--stream needs the track split in segments (drop --no-split)")
    path = Path(path)
    source = _Input(path, separator.audio_channels, separator.samplerate)
    targets = output.targets(out, separator.name, path, separator.sources)
    for target in targets.values():
        target.parent.mkdir(parents=True, exist_ok=True)
    names = list(targets)
    stem_channels = 1 if source.channels == 1 else separator.audio_channels
    scratch = _StemFiles(next(iter(targets.values())).parent, names, stem_channels)
    finals = []
    try:
        standard = Standardisation.of_blocks(source.blocks())
        if not standard.silent:
            _separate_into(separator, source, scratch, output, standard, stem_channels,
                           callback)
        else:
            for start in range(0, source.length, BLOCK):
                n = min(BLOCK, source.length - start)
                scratch.append({name: np.zeros((stem_channels, n), np.float32)
                                for name in names if name != output.minus_name})
        output_rate = output.samplerate or source.rate
        for name in names:
            finals.append(_write_stem(scratch, name, targets[name], source, separator,
                                      output_rate, output))
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


def _separate_into(separator, source, scratch, output, standard, stem_channels, callback):
    """Every call of the plan in track order; each stretch that no call can touch any more
    is combined across shifts and bag members and appended to the scratch files."""
    model, length = separator.model, source.length
    rng = random if separator.seed is None else random.Random(separator.seed)
    passes = segments.plan(model, length, shifts=separator.shifts, split=True,
                           overlap=separator.overlap, transition_power=1.0,
                           segment=separator.segment, rng=rng)
    accumulators = [segments.Accumulator(one, (1, len(one.model.sources), source.model_channels))
                    for one in passes]
    by_member = {}
    for p, one in enumerate(passes):
        by_member.setdefault(one.member, []).append(p)
    tasks = sorted((call.start, p, call.index) for p, one in enumerate(passes)
                   for call in one.calls)
    written = 0

    def read(start, stop):
        """Standardised inside the track, zero outside it: demucs pads the standardised mix."""
        mix = source.read(start, stop)
        standard.apply(mix[:, max(0, -start):max(0, min(stop - start, length - start))])
        return mix[None]

    def run(task):
        _, p, k = task
        return segments.run_call(passes[p], passes[p].calls[k], read)

    def consume(task, chunk):
        nonlocal written
        _, p, k = task
        call = passes[p].calls[k]
        accumulators[p].add(call, chunk)
        if callback is not None:
            callback(segments.progress_event(passes[p], call, len(tasks)))
        ready = min(length, min(accumulator.final_until() for accumulator in accumulators))
        while written < ready:
            stop = min(ready, written + BLOCK)
            stems = segments.combine(model, separator.shifts, (
                (member, [accumulators[p].take(written, stop) for p in indices])
                for member, indices in by_member.items()))[0]
            stems = standard.undo(stems)
            if stem_channels == 1:
                stems = stems.mean(axis=1, keepdims=True)
            scratch.append(output.select(dict(zip(separator.sources, stems))))
            written = stop

    segments.run_calls(tasks, run, consume, separator.jobs, keep_heap=False,
                       single_blas=segments.single_threaded_blas(passes, separator.jobs))


def _write_stem(scratch, name, target, source, separator, output_rate, output):
    """Second sweep: output rate, clipping strategy and format; returns (temporary, target)."""
    model_rate = separator.samplerate
    if name == output.minus_name:
        chosen = _stem_at_rate(scratch, output.two_stems, source, model_rate, output_rate)
        blocks = _minus(source, chosen, output_rate, scratch.channels)
    else:
        blocks = _stem_at_rate(scratch, name, source, model_rate, output_rate)
    temporary = temporary_beside(target)
    try:
        audio.encode_blocks(temporary, blocks, scratch.channels, output_rate, output.format,
                            clip_mode=output.clip_mode, bits=output.bits,
                            as_float=output.as_float, bitrate=output.bitrate)
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
        resampler = audio.SincResampler(model_rate, output_rate, origin=f"{source.path}: "
                                        "--sample-rate")
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
    resampler = (audio.SincResampler(source.rate, output_rate, origin=source.path)
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
