"""Pictures of a separation: waveform and spectrogram of the mix and of every stem.

matplotlib is imported only when drawing (it comes with the ``eval`` and ``notebooks``
extras). Drawing goes to a Figure the caller passes (in a notebook, one from pyplot, so it
shows inline) or to a new one made without pyplot, so no backend is switched.
"""
from __future__ import annotations

import numpy as np


def spectrogram_db(signal, n_fft: int = 2048, hop: int = 512, floor_db: float = -100.0):
    """Magnitude of the short-time Fourier transform of a 1-D signal, in dB, ``(bins, frames)``.

    Hann window, no padding at the ends; a full-scale sine on a bin reads about 0 dB (the
    magnitude is divided by half the window's sum). Values below ``floor_db`` are raised to
    it, so silence does not stretch the colour scale to -inf.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {signal.shape}")
    if signal.size < n_fft:
        signal = np.pad(signal, (0, n_fft - signal.size))
    window = np.hanning(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop]
    magnitude = np.abs(np.fft.rfft(frames * window, axis=-1)).T / (window.sum() / 2)
    with np.errstate(divide="ignore"):
        return np.maximum(20 * np.log10(magnitude), floor_db)


def plot_stems(mix, stems, names, samplerate: int = 44100, figure=None, n_fft: int = 2048,
               hop: int = 512, max_frequency: float | None = None):
    """Waveform (left) and spectrogram (right) of ``mix`` and each stem, one row each.

    ``mix`` is ``(channels, samples)``, ``stems`` ``(sources, channels, samples)``, ``names``
    the sources' names. Channels are averaged for the spectrogram; every spectrogram shares
    the mix's colour scale, so a quiet stem looks quiet. Returns the figure.
    """
    if figure is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(12, 2.2 * (1 + len(stems))), layout="constrained")
    signals = [("mix", np.asarray(mix))] + list(zip(names, np.asarray(stems)))
    axes = figure.subplots(len(signals), 2, squeeze=False, sharex="col")
    spectra = [spectrogram_db(audio.mean(axis=0), n_fft, hop) for _, audio in signals]
    top = spectra[0].max()
    seconds = signals[0][1].shape[-1] / samplerate
    nyquist = samplerate / 2
    for (name, audio), spectrum, (wave_ax, spec_ax) in zip(signals, spectra, axes):
        time = np.arange(audio.shape[-1]) / samplerate
        for channel, samples in enumerate(audio):
            wave_ax.plot(time, samples, linewidth=0.5, alpha=0.8, label=f"channel {channel}")
        wave_ax.set_ylabel(name)
        wave_ax.set_xlim(0, seconds)
        image = spec_ax.imshow(spectrum, origin="lower", aspect="auto", cmap="magma",
                               extent=(0, seconds, 0, nyquist), vmin=top - 80, vmax=top)
        spec_ax.set_ylim(0, max_frequency or nyquist)
        spec_ax.set_ylabel("Hz")
    axes[0, 0].set_title("waveform")
    axes[0, 1].set_title("spectrogram (dB)")
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 1].set_xlabel("seconds")
    figure.colorbar(image, ax=axes[:, 1].tolist(), shrink=0.6)
    return figure
