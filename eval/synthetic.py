"""Generated stand-ins for MUSDB18-HQ: tone stems in the dataset's layout and degraded estimates.

For trying the evaluation tools (tests, notebooks) without the dataset. The stems are
harmonic notes with a slow envelope over a noise floor, one pitch per source; estimates are
the stems filtered, leaked into by another source and noisy, so their scores are finite and
ordered by how much they were degraded. None of this is music, and no score on it says
anything about a separator.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .musdb import SOURCES, find_tracks, load_stems

SAMPLERATE = 44100


def tones(rng, sources, seconds, floor=1e-2, channels=2, samplerate=SAMPLERATE):
    """``(sources, samples, channels)`` harmonic notes, one pitch per source, plus a noise floor.

    Pure tones make BSS Eval's Gram matrix numerically singular; ``floor`` sets how far from
    singular it is.
    """
    n = int(round(seconds * samplerate))
    t = np.arange(n) / samplerate
    out = np.empty((sources, n, channels))
    for source in range(sources):
        f0 = 110.0 * 1.5 ** source
        note = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
                   for h in range(1, 8))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (0.7 + 0.4 * source) * t) ** 2
        for channel in range(channels):
            out[source, :, channel] = (0.6 + 0.4 * channel) * note * envelope
    return out + floor * rng.standard_normal(out.shape)


def lowpass(signals, taps=31):
    """A short FIR filter along time (spatial/filtering distortion in BSS Eval terms)."""
    kernel = np.hanning(taps + 2)[1:-1]
    kernel /= kernel.sum()
    out = np.empty_like(signals)
    for source in range(signals.shape[0]):
        for channel in range(signals.shape[2]):
            out[source, :, channel] = np.convolve(signals[source, :, channel], kernel)[
                : signals.shape[1]]
    return out


def degrade(rng, references, leak=0.1, noise_level=0.05, filtered=False):
    """Estimates: the references (optionally filtered), leaked into by the next source, plus noise."""
    base = lowpass(references) if filtered else references
    leaked = np.roll(references, 1, axis=0)
    return base + leak * leaked + noise_level * rng.standard_normal(references.shape)


def write_track(root, name, seconds, rng, subset="test") -> Path:
    """``ROOT/SUBSET/NAME/{vocals,drums,bass,other,mixture}.wav``, 16-bit as MUSDB18-HQ; returns the folder."""
    import soundfile

    # 0.12 keeps the sum of the four stems below full scale: a 16-bit mixture would clip.
    references = tones(rng, len(SOURCES), seconds, floor=0.05) * 0.12
    folder = Path(root) / subset / name
    folder.mkdir(parents=True)
    for source, audio in zip(SOURCES, references):
        soundfile.write(folder / f"{source}.wav", audio, SAMPLERATE, subtype="PCM_16")
    soundfile.write(folder / "mixture.wav", references.sum(axis=0), SAMPLERATE, subtype="PCM_16")
    return folder


def write_musdb(root, tracks, seed=0) -> Path:
    """A MUSDB18-HQ-layout folder: ``tracks`` (``{name: seconds}``) in ``test``, an empty ``train``."""
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, seconds in tracks.items():
        write_track(root, name, seconds, rng)
    return root


def write_degraded_estimates(root, output, seed=0, subset="test", **degradation) -> Path:
    """``OUTPUT/TRACK/SOURCE.wav`` for every track of ``ROOT/SUBSET``: ``degrade``d copies of its stems.

    ``degradation`` goes to ``degrade`` (``leak``, ``noise_level``, ``filtered``). The layout
    is the one ``numba-demucs eval musdb --estimates`` reads.
    """
    import soundfile

    output = Path(output)
    rng = np.random.default_rng(seed)
    for track in find_tracks(root, subset):
        references, rate = load_stems(track, SOURCES)
        estimates = degrade(rng, references.astype(np.float64), **degradation)
        (output / track.name).mkdir(parents=True, exist_ok=True)
        for source, audio in zip(SOURCES, estimates):
            soundfile.write(output / track.name / f"{source}.wav", audio, rate, subtype="FLOAT")
    return output
