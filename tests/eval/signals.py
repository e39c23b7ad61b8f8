"""Generated references and estimates for the evaluation tests (no stored audio)."""
from __future__ import annotations

import numpy as np

SR = 44100


def noise(rng, sources, seconds, channels=2):
    return rng.standard_normal((sources, int(round(seconds * SR)), channels))


def tones(rng, sources, seconds, floor=1e-2, channels=2):
    """Harmonic notes with a slow amplitude envelope, one pitch per source, plus a noise floor.

    Pure tones make museval's Gram matrix numerically singular; ``floor`` sets how far from
    singular it is.
    """
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
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
