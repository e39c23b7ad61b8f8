"""In-memory `separate` (issue 16): what its track-long buffers add up to, counted.

The peak of the memory NumPy allocates (tracemalloc sees every array's data) while
``Separator.separate_file`` runs, for a short and a longer track: the difference, divided
by the bytes of one float32 stereo copy of the extra audio, is how many track-long copies
the path holds at once. The four stems cannot be fewer than four copies while they are all
held (docs/benchmarks.md, "Issue 16, memory"); the input is the fifth. Before issue 16 the
path held about seven (a standardised copy of the input, a weight-sum array, and the whole
converted stem being written on top of the stems); that count fails this test.
"""
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
import soundfile

from numba_demucs import Separator, load_model
from numba_demucs.debug import reference

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=1, bottom_channels=16,
            nfft=1024)
RATE = 44100


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    return load_model(reference.save_th(reference.build_model("htdemucs", seed=4, **TINY),
                                        folder))


def _peak_bytes(model, track, out, **options):
    separator = Separator(model, shifts=1, seed=0, jobs=1)
    separator.separate_file(track, out, **options)  # warm: kernels loaded, caches filled
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        separator.separate_file(track, out, **options)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("options", [{}, dict(two_stems="vocals", other_method="minus",
                                              clip_mode="clamp", bits=24)])
def test_in_memory_separate_holds_at_most_the_input_and_the_stems(tmp_path, model, options):
    seconds = {"short": 4.0, "long": 16.0}
    peaks = {}
    for name, length in seconds.items():
        track = tmp_path / f"{name}.wav"
        noise = np.random.default_rng(1).standard_normal((int(length * RATE), 2))
        soundfile.write(track, (0.1 * noise).astype(np.float32), RATE, subtype="PCM_16")
        peaks[name] = _peak_bytes(model, track, tmp_path / "out", **options)
    copy = 2 * 4 * (seconds["long"] - seconds["short"]) * RATE  # float32 stereo bytes
    copies = (peaks["long"] - peaks["short"]) / copy
    # the input and the four stems, plus the model's segment-sized buffers' share (none:
    # they do not grow with the track); before issue 16, about 7
    assert 4.0 <= copies <= 5.3, (copies, peaks)
