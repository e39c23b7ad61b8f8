"""Audio in and out: read any format libsndfile reads, match the model's channels and rate,
write stems atomically.

Reading goes through soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3, aiff, ...).
mp3 is decoded gapless: libsndfile drops the encoder delay that the LAME header
declares, so a decoded mp3 lines up with the audio that was encoded. (demucs 4.1 reads
through sphn, which keeps the delay, so its stems of an mp3 come out late by the encoder delay, over a thousand samples.)

Resampling defaults to the windowed-sinc resampler demucs uses (``julius.resample_frac``:
a Hann-windowed sinc with 24 zero crossings, cut-off at 0.945 of the lower Nyquist
frequency), computed in float32 the same way, so a 48 kHz file reaches the model with
the samples demucs would give it. ``resampler="soxr"`` uses libsoxr's very-high-quality
mode instead.

Writing: 16-bit and 24-bit integers are produced exactly as demucs produces them
(clamp to [-1, 1], scale by 2**15 - 1 or 2**23 - 1, truncate toward zero), float32 as is;
mp3 goes through libsndfile's LAME encoder at a constant bitrate, which writes the
LAME header, so decoders drop the encoder delay (demucs' lameenc files carry no such
header, so they decode late by the encoder delay). Every file is written under a temporary name
in the destination folder and renamed when complete.
"""
from __future__ import annotations

import dataclasses
import errno
import math
import os
from pathlib import Path

import numpy as np
import soundfile

from ._files import atomic_path, temporary_beside
from .errors import AudioError

OUTPUT_FORMATS = ("wav", "flac", "mp3")
RESAMPLERS = ("sinc", "soxr")
# Extensions picked up when a folder is given as a track: what libsndfile reads.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".caf", ".w64", ".rf64"})
# Beyond this, sinc tables (one row per output phase) grow too large; such pairs of
# rates (e.g. 44100 and 44101 Hz) go through soxr, which handles any ratio.
_MAX_SINC_PHASES = 2000
# What a header may claim: below 1 kHz (a forged "1 Hz" makes a small file resample into
# gigabytes at 44.1 kHz) or above 768 kHz no music file is recorded; refused before anything
# is allocated for it.
MIN_SAMPLERATE = 1000
MAX_SAMPLERATE = 768000


def check_samplerate(rate: int, what) -> int:
    """``rate`` if a file or option may have it, else an AudioError naming ``what``."""
    if not MIN_SAMPLERATE <= rate <= MAX_SAMPLERATE:
        raise AudioError(f"{what}: sample rate {rate} Hz is outside {MIN_SAMPLERATE}-"
                         f"{MAX_SAMPLERATE} Hz; refused before resampling")
    return rate


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    path: Path
    samplerate: int
    channels: int
    frames: int
    format: str


def _open_error(path, error) -> AudioError:
    if not os.path.exists(path):
        return AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        return AudioError(f"{path}: is a folder, not an audio file")
    if not os.access(path, os.R_OK):
        return AudioError(f"{path}: permission denied")
    detail = str(error).split(":")[-1].strip() or "unknown format"
    return AudioError(f"{path}: not an audio file that libsndfile can read ({detail})")


def info(path) -> AudioInfo:
    """Sample rate, channels and length of ``path``, with errors naming the file."""
    path = Path(path)
    try:
        details = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise _open_error(path, error) from None
    return AudioInfo(path, check_samplerate(int(details.samplerate), path), int(details.channels),
                     int(details.frames), details.format)


def read(path) -> tuple[np.ndarray, int]:
    """``(channels, samples)`` float32 and the sample rate of ``path``.

    Refuses empty files and files holding NaN or infinite samples (float wav can).
    """
    path = Path(path)
    info(path)  # the header's rate is checked before the samples are read
    try:
        data, samplerate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise _open_error(path, error) from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(f"{path}: {bad} samples are NaN or infinite")
    return np.ascontiguousarray(data.T), int(samplerate)


def to_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """demucs' channel rules: mono is duplicated, extra channels are dropped (first kept)."""
    have = wav.shape[0]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(wav, channels, axis=0)
    if have > channels:
        return wav[:channels]
    raise AudioError(f"cannot make {channels} channels out of {have}")


# --------------------------------------------------------------------------- resampling

def _reduced(old_rate: int, new_rate: int) -> tuple[int, int]:
    gcd = math.gcd(old_rate, new_rate)
    return old_rate // gcd, new_rate // gcd


def sinc_kernels(old: int, new: int, zeros: int = 24, rolloff: float = 0.945):
    """``(new, taps)`` float32 filters for the reduced ratio ``old -> new``, and the padding.

    Row ``i`` produces output phase ``i``; the arithmetic is float32 in julius' order.
    """
    cutoff = min(old, new) * rolloff
    width = math.ceil(zeros * old / cutoff)
    index = np.arange(-width, width + old, dtype=np.float32)
    kernels = np.empty((new, index.size), dtype=np.float32)
    pi, zeros32 = np.float32(math.pi), np.float32(zeros)
    for phase in range(new):
        t = (np.float32(-phase / new) + index / np.float32(old)) * np.float32(cutoff)
        t = np.clip(t, -zeros32, zeros32) * pi
        window = np.cos(t / zeros32 / np.float32(2)) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            sinc = np.where(t == 0, np.float32(1), np.sin(t) / t).astype(np.float32)
        kernel = sinc * window
        kernels[phase] = kernel / kernel.sum(dtype=np.float32)
    return kernels, width


class SincResampler:
    """demucs' resampler for one pair of rates, able to produce any range of the output.

    Output sample ``j`` belongs to frame ``j // new`` (``new`` phases per frame), which reads
    ``taps`` input samples from ``(j // new) * old - width``. Indices before the start or past
    the end read the first or last sample: that is julius' replicate padding. A range
    therefore needs only its own input span, which is what streaming relies on; the
    whole-array result is the range ``[0, floor(length * new_rate / old_rate))``.
    """

    def __init__(self, old_rate: int, new_rate: int, origin=None):
        self.old, self.new = _reduced(old_rate, new_rate)
        if max(self.old, self.new) > _MAX_SINC_PHASES:
            # the table is new x (about 2 * 24 * old / new + old) floats: 44101 -> 44100 Hz
            # would be gigabytes; checked before a byte of it is allocated
            raise AudioError(
                f"{origin or 'resampling'}: {old_rate} -> {new_rate} Hz reduces to "
                f"{self.old}:{self.new}, beyond the sinc resampler's {_MAX_SINC_PHASES} phases; "
                "separate without --stream (soxr then resamples) or resample the file first")
        self.kernels, self.width = sinc_kernels(self.old, self.new)
        self.taps = self.kernels.shape[1]

    def output_length(self, input_length: int) -> int:
        return (self.new * input_length) // self.old

    def input_span(self, start: int, stop: int) -> tuple[int, int]:
        """Input indices (possibly outside the signal) that output ``[start, stop)`` reads."""
        first, last = start // self.new, -(-stop // self.new)
        return first * self.old - self.width, (last - 1) * self.old - self.width + self.taps

    def range(self, read_clamped, start: int, stop: int, block_frames: int = 8192):
        """Output samples ``[start, stop)``; ``read_clamped(a, b)`` gives input ``[a, b)``
        with out-of-range indices clamped to the signal's ends."""
        span_start, span_stop = self.input_span(start, stop)
        span = np.ascontiguousarray(read_clamped(span_start, span_stop), dtype=np.float32)
        channels = span.shape[0]
        frames = (span.shape[1] - self.taps) // self.old + 1
        out = np.empty((channels, frames * self.new), dtype=np.float32)
        for channel in range(channels):
            row = span[channel]
            windows = np.lib.stride_tricks.as_strided(
                row, (frames, self.taps), (self.old * row.itemsize, row.itemsize),
                writeable=False)
            for first in range(0, frames, block_frames):
                block = np.ascontiguousarray(windows[first:first + block_frames])
                out[channel, first * self.new:(first + block.shape[0]) * self.new] = \
                    (block @ self.kernels.T).ravel()
        offset = start - (start // self.new) * self.new
        return out[:, offset:offset + stop - start]


def extend_edges(data: np.ndarray, start: int, stop: int, length: int) -> np.ndarray:
    """``data`` (samples ``[max(start, 0), min(stop, length))``) extended to ``[start, stop)``
    by repeating its first and last samples: julius' replicate padding."""
    if start >= 0 and stop <= length:
        return data
    return np.concatenate([np.repeat(data[:, :1], max(0, -start), axis=1), data,
                           np.repeat(data[:, -1:], max(0, stop - length), axis=1)], axis=1)


def clamped_reader(wav: np.ndarray):
    """``read(a, b)`` on an in-memory signal, indices clamped to its ends."""
    def read(start, stop):
        return wav[:, np.clip(np.arange(start, stop), 0, wav.shape[1] - 1)]
    return read


def resample(wav: np.ndarray, old_rate: int, new_rate: int, method: str = "sinc") -> np.ndarray:
    """``(channels, samples)`` float32 from ``old_rate`` to ``new_rate``.

    The output has ``floor(samples * new_rate / old_rate)`` samples, as demucs' resampler.
    """
    if old_rate == new_rate:
        return wav
    if method not in RESAMPLERS:
        raise AudioError(f"unknown resampler {method!r}; choose one of {', '.join(RESAMPLERS)}")
    old, new = _reduced(old_rate, new_rate)
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if method == "sinc" and max(old, new) <= _MAX_SINC_PHASES:
        resampler = SincResampler(old_rate, new_rate)
        return resampler.range(clamped_reader(wav), 0, resampler.output_length(wav.shape[1]))
    import soxr

    out = soxr.resample(wav.T, old_rate, new_rate, quality="VHQ").T
    return fit_length(np.ascontiguousarray(out, dtype=np.float32), (new * wav.shape[1]) // old)


def fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad the last axis to ``length``."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, length - wav.shape[-1])]
    return np.pad(wav, pad)


# --------------------------------------------------------------------------- writing

def prevent_clip(wav: np.ndarray, mode: str = "rescale", peak: float | None = None) -> np.ndarray:
    """demucs' clipping strategies: rescale the whole stem, clamp at ±0.99, or nothing.

    ``peak`` is the whole stem's when ``wav`` is one block of it (streaming)."""
    if mode in (None, "none"):
        return wav
    if mode == "rescale":
        if peak is None:
            peak = float(np.abs(wav).max()) if wav.size else 0.0
        return wav / np.float32(max(1.01 * peak, 1.0))
    if mode == "clamp":
        return np.clip(wav, -0.99, 0.99)
    raise AudioError(f"unknown clip mode {mode!r}; choose rescale, clamp or none")


def _as_pcm(wav: np.ndarray, bits: int) -> np.ndarray:
    """Integers as demucs makes them: clamp, scale by 2**(bits-1) - 1, truncate toward zero."""
    clamped = np.clip(wav, -1.0, 1.0)
    if bits == 16:
        return (clamped * np.float32(2 ** 15 - 1)).astype(np.int16)
    # soundfile takes the top 24 bits of int32 samples for PCM_24.
    return (clamped * np.float32(2 ** 23 - 1)).astype(np.int32) << 8


def _mp3_compression_level(bitrate: int) -> float:
    """libsndfile's constant-bitrate mp3 maps compression 0..1 onto 320..32 kbit/s linearly
    (LAME then takes the nearest valid rate)."""
    return min(max((320 - bitrate) / 288, 0.0), 0.99)


def format_options(extension: str, bits: int, as_float: bool, bitrate: int):
    """soundfile subtype and options for an output file."""
    if extension == "mp3":
        return "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT",
                                  "compression_level": _mp3_compression_level(bitrate)}
    return ("FLOAT" if as_float else f"PCM_{bits}"), {}


def encode_block(wav: np.ndarray, extension: str, bits: int, as_float: bool) -> np.ndarray:
    """Samples as they go into the file: demucs' integers, or clamped floats."""
    if extension == "mp3":
        # Floats: libsndfile scales int16 input to its mp3 encoder wrongly (1.0.x-1.2.2).
        return np.clip(wav, -1.0, 1.0).astype(np.float32)
    if as_float:
        return np.clip(wav, -1.0, 1.0).astype(np.float32)
    return _as_pcm(wav, bits)


def _write_error(path: Path, error: BaseException) -> AudioError:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return AudioError(f"{path}: could not write the file: {os.strerror(error.errno)}")
    return AudioError(f"{path}: could not write the file ({error})")


def _output_extension(path: Path, bits: int, as_float: bool) -> str:
    """The output format of ``path`` (its extension), refused with the reason when the
    options cannot be written to it."""
    extension = path.suffix.lower().lstrip(".")
    if extension not in OUTPUT_FORMATS:
        raise AudioError(f"{path}: cannot write .{extension} files; use wav, flac or mp3")
    if bits not in (16, 24):
        raise AudioError(f"{path}: bits must be 16 or 24, got {bits}")
    if as_float and extension != "wav":
        raise AudioError(f"{path}: float32 samples can only be written to wav")
    return extension


def _temporary_for(path: Path) -> Path:
    """A temporary file name beside ``path``, or an error naming a folder we cannot write."""
    try:
        return temporary_beside(path)
    except OSError as error:
        raise AudioError(f"{path.parent}: cannot create files in this folder "
                         f"({os.strerror(error.errno) if error.errno else error})") from None


def write(path, wav: np.ndarray, samplerate: int, *, bits: int = 16, as_float: bool = False,
          bitrate: int = 320) -> Path:
    """Write ``(channels, samples)`` to ``path`` (format from its extension), atomically.

    Clipping is the caller's business (see ``prevent_clip``), as in demucs' ``save_audio``.
    """
    path = Path(path)
    extension = _output_extension(path, bits, as_float)
    temporary = _temporary_for(path)
    try:
        with atomic_path(path, temporary):
            subtype, options = format_options(extension, bits, as_float, bitrate)
            soundfile.write(str(temporary), encode_block(wav, extension, bits, as_float).T,
                            samplerate, subtype=subtype, format=extension.upper(), **options)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        raise _write_error(path, error) from None
    return path


WRITE_BLOCK = 1 << 18  # samples per block when a stem is converted and written


def encode_blocks(file, sweep, channels: int, samplerate: int, extension: str, *,
                  clip_mode: str, bits: int, as_float: bool, bitrate: int) -> None:
    """Write a stem given block by block into ``file``, clipping strategy and format applied.

    ``sweep()`` returns a fresh iterable of the stem's ``(channels, n)`` blocks each time it
    is called: ``--clip-mode rescale`` needs the whole stem's peak, taken in a first sweep,
    before the first sample is written. Every later step is per sample, so the samples are
    those of converting the whole stem at once.
    """
    peak = None
    if clip_mode == "rescale":
        peak = 0.0
        for block in sweep():
            if block.size:
                peak = max(peak, float(np.abs(block).max()))
    subtype, options = format_options(extension, bits, as_float, bitrate)
    with soundfile.SoundFile(str(file), "w", samplerate, channels, subtype=subtype,
                             format=extension.upper(), **options) as handle:
        for block in sweep():
            block = prevent_clip(block, clip_mode, peak)
            handle.write(encode_block(block, extension, bits, as_float).T)


def write_blocks(path, blocks, length: int, channels: int, samplerate: int, *,
                 clip_mode: str = "rescale", bits: int = 16, as_float: bool = False,
                 bitrate: int = 320) -> Path:
    """``write(path, prevent_clip(stem, clip_mode), ...)`` for a stem given as
    ``blocks(start, stop) -> (channels, stop - start)``, converted one block at a time.

    The same samples and the same file bytes as the whole-array write (libsndfile's
    encoders buffer their own frames), without the whole-stem float and integer copies the
    conversion would make.
    """
    path = Path(path)
    extension = _output_extension(path, bits, as_float)
    temporary = _temporary_for(path)

    def sweep():
        return (blocks(start, min(start + WRITE_BLOCK, length))
                for start in range(0, length, WRITE_BLOCK))

    try:
        with atomic_path(path, temporary):
            encode_blocks(temporary, sweep, channels, samplerate, extension,
                          clip_mode=clip_mode, bits=bits, as_float=as_float, bitrate=bitrate)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as error:
        raise _write_error(path, error) from None
    return path


def track_name(path: Path) -> tuple[str, str]:
    """demucs' ``{track}`` and ``{trackext}``: the name split at its last dot."""
    track, _, extension = path.name.rpartition(".")
    return (track, extension) if track else (extension, "")


def find_tracks(arguments) -> list[Path]:
    """The files named, and the audio files (by extension) found under folders named."""
    tracks = []
    for argument in arguments:
        argument = Path(argument)
        if argument.is_dir():
            found = sorted(p for p in argument.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                           and not p.name.startswith("."))
            tracks.extend(found)
        else:
            tracks.append(argument)
    return tracks
