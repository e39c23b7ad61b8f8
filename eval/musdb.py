"""MUSDB18-HQ on disk: ``ROOT/{train,test}/TRACK/{mixture,drums,bass,other,vocals}.wav``.

The compressed MUSDB18 layout (``ROOT/{train,test}/TRACK.stem.mp4``) is read through the
optional ``stempeg`` package when it is installed, decoded to 16-bit integers as the
``musdb`` package decodes it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numba_demucs.errors import AudioError, EvaluationError

SOURCES = ("vocals", "drums", "bass", "other")
"""The scored sources, in the order musdb lists its targets (and museval scores them)."""

SUBSETS = ("train", "test")
_STEM_SUFFIX = ".stem.mp4"
# Stream order inside a MUSDB18 .stem.mp4 file (musdb's ``stem_ids``).
_STEM_STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}


@dataclass(frozen=True)
class Track:
    """One MUSDB track: a folder of wav stems, or one ``.stem.mp4`` file."""

    name: str
    subset: str
    path: str

    @property
    def is_stem_file(self) -> bool:
        return self.path.endswith(_STEM_SUFFIX)


def find_tracks(root, subset="test", names=None) -> list[Track]:
    """Tracks of ``ROOT/SUBSET`` sorted by name, optionally only those named in ``names``."""
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"{root}: MUSDB root folder not found")
    if subset not in SUBSETS:
        raise EvaluationError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}")
    folder = root / subset
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no '{subset}' folder under the MUSDB root")
    tracks = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            tracks.append(Track(entry.name, subset, str(entry)))
        elif entry.name.endswith(_STEM_SUFFIX):
            tracks.append(Track(entry.name[: -len(_STEM_SUFFIX)], subset, str(entry)))
    if names:
        by_name = {track.name: track for track in tracks}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise EvaluationError(f"{folder}: no track named {', '.join(map(repr, missing))}")
        tracks = [by_name[name] for name in names]
    if not tracks:
        raise EvaluationError(f"{folder}: no tracks found")
    return tracks


def read_audio(path) -> tuple[np.ndarray, int]:
    """A sound file as float32 ``(samples, channels)`` and its sample rate."""
    import soundfile

    path = str(path)
    if not os.path.isfile(path):
        raise EvaluationError(f"{path}: file not found")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for unreadable content
        raise AudioError(f"{path}: not a readable audio file ({error})") from None
    check_finite(path, data)
    return data, int(rate)


def check_finite(location, audio) -> None:
    """A clear error naming the first NaN or infinite sample of ``audio (samples, channels)``.

    BSS Eval would turn a single NaN into NaN scores for every frame and source of the track.
    """
    bad = ~np.isfinite(audio)
    if bad.any():
        sample, channel = np.argwhere(bad)[0]
        raise AudioError(f"{location}: {int(bad.sum())} NaN or infinite samples (the first "
                         f"at sample {int(sample)}, channel {int(channel)})")


def _read_stem_file(track: Track, stems):
    try:
        import stempeg
    except ImportError:
        raise EvaluationError(
            f"{track.path}: reading .stem.mp4 needs the optional 'stempeg' package "
            "(or use the MUSDB18-HQ wav release)") from None
    try:
        # 16-bit PCM from ffmpeg, scaled by 2**-15, as musdb reads the same file: decoded
        # to float, the AAC streams keep sub-LSB detail that changes the conditioning of
        # BSS Eval's Gram matrix, and ISR/SIR/SAR then move by up to tens of dB against
        # museval + musdb on the same estimates. int16 / 32768 is exact in float32.
        audio, rate = stempeg.read_stems(track.path, stem_id=[_STEM_STREAMS[s] for s in stems],
                                         ffmpeg_format="s16le", dtype=np.float32)
    except Exception as error:
        raise AudioError(f"{track.path}: cannot decode stems ({error})") from None
    if len(stems) == 1 and audio.ndim == 2:  # stempeg drops the stem axis for one stem
        audio = audio[None]
    if audio.ndim != 3 or audio.shape[0] != len(stems):
        raise AudioError(f"{track.path}: expected {len(stems)} stereo streams, decoded an "
                         f"array of shape {audio.shape}")
    decoded = [(np.ascontiguousarray(a), int(rate)) for a in audio]
    for stem, (samples, _) in zip(stems, decoded):
        check_finite(stem_location(track, stem), samples)
    return decoded


def stem_location(track: Track, stem: str) -> str:
    """How errors name one stem: its wav file, or ``FILE.stem.mp4:STEM``."""
    if track.is_stem_file:
        return f"{track.path}:{stem}"
    return os.path.join(track.path, f"{stem}.wav")


def load_stems(track: Track, stems) -> tuple[np.ndarray, int]:
    """The named stems of a track as float32 ``(stems, samples, channels)``.

    All stems must share sample rate, length and channel count; the first one that does not
    is named in the error.
    """
    if track.is_stem_file:
        loaded = list(zip([stem_location(track, s) for s in stems],
                          _read_stem_file(track, stems)))
    else:
        loaded = []
        for stem in stems:
            path = os.path.join(track.path, f"{stem}.wav")
            if not os.path.isfile(path):
                raise EvaluationError(f"{path}: missing stem '{stem}' of track {track.name}")
            loaded.append((path, read_audio(path)))
    return stack_stems(loaded)


def check_matches(location, rate, shape, expected_rate, expected_shape, against) -> None:
    """The one check every pairing of audio makes: ``location``'s sample rate and
    ``(samples, channels)`` ``shape`` against what ``against`` has, in that order (rate,
    then channels, then length), the first difference named in an error.

    ``against`` completes the sentence "..., AGAINST 2": "the stems have", "the references
    have", or "FILE has".
    """
    if rate != expected_rate:
        raise EvaluationError(f"{location}: sample rate {rate} Hz, {against} {expected_rate} Hz")
    if shape[1] != expected_shape[1]:
        raise EvaluationError(f"{location}: {shape[1]} channels, {against} {expected_shape[1]}")
    if shape[0] != expected_shape[0]:
        raise EvaluationError(f"{location}: {shape[0]} samples, {against} {expected_shape[0]}")


def stack_stems(loaded) -> tuple[np.ndarray, int]:
    """Stack ``[(path, (audio, rate)), ...]`` after checking they agree in rate and shape."""
    first_path, (first, rate) = loaded[0]
    for path, (audio, other_rate) in loaded[1:]:
        check_matches(path, other_rate, audio.shape, rate, first.shape, f"{first_path} has")
    return np.stack([audio for _, (audio, _) in loaded]), rate


def load_mixture(track: Track) -> tuple[np.ndarray, int]:
    """The mixture as float32 ``(channels, samples)``, the layout the separator takes."""
    if track.is_stem_file:
        (audio, rate), = _read_stem_file(track, ["mixture"])
    else:
        audio, rate = read_audio(os.path.join(track.path, "mixture.wav"))
    return np.ascontiguousarray(audio.T), rate
