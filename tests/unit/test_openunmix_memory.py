"""Open-Unmix in bounded memory: a longer track costs only its samples (input copy, stems)
and its LSTM features, never a whole-track spectrogram, gate buffer or complex estimate."""
import tracemalloc

import numpy as np

from numba_demucs.debug import reference_umx
from numba_demucs.debug.reference import music_like_signal

from ..parity.test_openunmix import ours


def _peak(model, seconds):
    mix = music_like_signal(seconds)
    tracemalloc.start()
    try:
        model.separate(mix)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_with_the_samples_not_the_spectrogram():
    model = ours(reference_umx.build_separator("umxl", seed=0, hidden_size=16), np.float32)
    model.separate(music_like_signal(2.0))  # compiled, caches warm
    short, long = 10.0, 40.0
    growth = _peak(model, long) - _peak(model, short)
    samples = (long - short) * 44100
    frames = samples / 1024
    # float32: the padded mix (2 channels) and the four stems (2 channels each)
    sample_arrays = samples * 2 * 4 * (1 + 4)
    # per target: the LSTM's input, two layer outputs and the skip buffer at most (hidden 16)
    lstm = frames * 16 * 4 * 5
    spectrogram = frames * 2 * 2049 * 4  # one whole-track magnitude spectrogram, float32
    assert growth < sample_arrays + lstm + 0.25 * spectrogram, (growth, sample_arrays, spectrogram)
