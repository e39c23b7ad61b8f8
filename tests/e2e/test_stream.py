"""`--stream` writes the files the in-memory path writes, sample for sample, and its memory
does not grow with the track."""
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import soundfile

from numba_demucs import Separator, load_model
from numba_demucs.debug import reference
from numba_demucs.models.bag import BagOfModels

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2, bottom_channels=16,
            dconv_mode=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    first = load_model(reference.save_th(reference.build_model("htdemucs", seed=6, **TINY),
                                         folder, signature="aaaaaaaa"))
    second = load_model(reference.save_th(reference.build_model("htdemucs", seed=7, **TINY),
                                          folder, signature="bbbbbbbb"))
    bag = BagOfModels([first, second], [[1, 0.5, 1, 0], [0.5, 1, 0, 1]], None, "bag")
    return {"single": first, "bag": bag}


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracks")
    song = (0.4 * reference.music_like_signal(3.3, seed=2)).astype(np.float32)
    soundfile.write(folder / "stereo.wav", song.T, 44100, subtype="FLOAT")
    import soxr

    soundfile.write(folder / "mono48.wav", soxr.resample(song[0], 44100, 48000), 48000,
                    subtype="FLOAT")
    return folder


CASES = [
    ("single", dict(shifts=0), "stereo.wav", {}),
    ("single", dict(shifts=2, seed=3), "stereo.wav", dict(two_stems="bass", other_method="minus")),
    ("single", dict(shifts=1, seed=5, jobs=2), "mono48.wav", dict(two_stems="vocals")),
    ("bag", dict(shifts=1, seed=2), "stereo.wav", dict(format="flac", bits=24)),
    ("single", dict(shifts=0, overlap=0.5), "mono48.wav",
     dict(two_stems="drums", other_method="minus", samplerate=44100)),
]


@pytest.mark.parametrize("model,options,track,output", CASES)
def test_stream_writes_the_in_memory_files(tmp_path, models, tracks, model, options, track,
                                           output):
    output = {"as_float": output.get("format", "wav") == "wav", **output}
    in_memory = Separator(models[model], **options).separate_file(
        tracks / track, tmp_path / "memory", **output)
    streamed = Separator(models[model], **options).separate_file(
        tracks / track, tmp_path / "stream", stream=True, **output)
    assert sorted(in_memory) == sorted(streamed)
    for name in in_memory:
        expected, rate = soundfile.read(in_memory[name], dtype="float32")
        got, stream_rate = soundfile.read(streamed[name], dtype="float32")
        assert rate == stream_rate and got.shape == expected.shape
        if tracks.joinpath(track).name.startswith("mono"):
            # Resampled in blocks: the GEMMs differ from the whole-array ones by an ulp or so.
            np.testing.assert_allclose(got, expected, atol=2e-6)
        else:
            np.testing.assert_array_equal(got, expected)
    leftovers = [p.name for p in (tmp_path / "stream").rglob(".*")]
    assert leftovers == []


def _peak_rss_mib(checkpoint, track, out, stream):
    code = (
        "import sys\n"
        "from numba_demucs import Separator\n"
        f"Separator({str(checkpoint)!r}, shifts=0, jobs=1).separate_file("
        f"{str(track)!r}, {str(out)!r}, stream={stream})\n"
        # VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across exec.
        "print(next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "           if line.startswith('VmHWM')) / 1024)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip())


def test_stream_memory_does_not_grow_with_the_track(tmp_path):
    """Peak RSS for 15 s and 135 s of audio: the in-memory path grows by the track's buffers
    (tens of bytes per stereo sample), the streaming path by far less. (A tiny model with
    8 s segments and a 1024-point STFT keeps this quick.)"""
    checkpoint = reference.save_th(reference.build_model(
        "htdemucs", seed=8, **{**TINY, "segment": Fraction(8), "nfft": 1024}), tmp_path)
    rss = {}
    for seconds in (15, 135):
        track = tmp_path / f"{seconds}.wav"
        noise = np.random.default_rng(seconds).standard_normal((int(seconds * 44100), 2))
        soundfile.write(track, (0.1 * noise).astype(np.float32), 44100, subtype="FLOAT")
        for stream in (False, True):
            rss[seconds, stream] = _peak_rss_mib(checkpoint, track, tmp_path / "out", stream)
    extra_samples = 120 * 44100
    growth_memory = rss[135, False] - rss[15, False]
    growth_stream = rss[135, True] - rss[15, True]
    assert growth_memory > 4 * 2 * 4 * extra_samples / 2**20  # at least the float32 stems
    assert growth_stream < 0.25 * growth_memory, rss
    assert growth_stream < 8 * extra_samples / 2**20, rss  # under one float32 stereo copy
