"""Separation pictures: the spectrogram puts a tone at its frequency; one row per signal."""
import numpy as np
import pytest

from numba_demucs.plots import plot_stems, spectrogram_db


def test_full_scale_tone_peaks_at_its_bin_near_zero_db():
    samplerate, n_fft = 44100, 2048
    frequency = 40 * samplerate / n_fft       # exactly on bin 40
    t = np.arange(samplerate) / samplerate
    spectrum = spectrogram_db(np.sin(2 * np.pi * frequency * t), n_fft=n_fft, hop=512)
    assert spectrum.shape == (n_fft // 2 + 1, 1 + (samplerate - n_fft) // 512)
    assert np.all(spectrum.argmax(axis=0) == 40)
    assert spectrum[40].mean() == pytest.approx(0.0, abs=0.01)


def test_silence_sits_at_the_floor():
    assert np.all(spectrogram_db(np.zeros(4096), floor_db=-90.0) == -90.0)


def test_plot_stems_draws_a_row_per_signal():
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((2, 8000)) * 0.1
    figure = plot_stems(mix, np.stack([mix / 2, mix / 2]), ["drums", "bass"], samplerate=8000)
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel() not in ("Hz", "")]
    assert labels == ["mix", "drums", "bass"]
