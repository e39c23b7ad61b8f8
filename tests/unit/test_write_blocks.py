"""`audio.write_blocks` (issue 16): a stem converted and written block by block gives the
samples demucs' conversion gives and the bytes of the whole-array writer."""
import numpy as np
import pytest
import soundfile

from numba_demucs import audio
from numba_demucs.errors import AudioError


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(audio, "WRITE_BLOCK", 1000)  # several blocks and a partial last one


def _stem(scale=1.7, n=4500):
    return (scale * np.random.default_rng(3).standard_normal((2, n))).astype(np.float32)


def test_rescaled_int16_samples_are_demucs_formula(tmp_path, small_blocks):
    wav = _stem()
    path = audio.write_blocks(tmp_path / "a.wav", lambda a, b: wav[:, a:b], wav.shape[1], 2,
                              44100, clip_mode="rescale")
    # demucs: wav / max(1.01 * peak, 1), clamp to [-1, 1], * (2**15 - 1), truncate
    peak = np.float32(max(1.01 * float(np.abs(wav).max()), 1.0))
    expected = (np.clip(wav / peak, -1, 1) * np.float32(32767)).astype(np.int16)
    got, rate = soundfile.read(path, dtype="int16")
    assert rate == 44100
    np.testing.assert_array_equal(got.T, expected)


@pytest.mark.parametrize("name,options", [
    ("a.wav", {}), ("a.wav", dict(bits=24)), ("a.flac", {}), ("a.flac", dict(bits=24)),
    ("a.mp3", {}), ("a.mp3", dict(bitrate=128))])
@pytest.mark.parametrize("clip_mode", ["rescale", "clamp", "none"])
def test_the_same_bytes_as_the_whole_stem_writer(tmp_path, small_blocks, name, options,
                                                 clip_mode):
    wav = _stem()
    whole = audio.write(tmp_path / f"whole-{name}",
                        audio.prevent_clip(wav, clip_mode), 44100, **options)
    blocks = audio.write_blocks(tmp_path / f"blocks-{name}", lambda a, b: wav[:, a:b],
                                wav.shape[1], 2, 44100, clip_mode=clip_mode, **options)
    assert whole.read_bytes() == blocks.read_bytes()


def test_float_wav_keeps_the_samples(tmp_path, small_blocks):
    # (a float wav's PEAK chunk carries a timestamp, so its bytes differ from second to second)
    wav = _stem()
    path = audio.write_blocks(tmp_path / "a.wav", lambda a, b: wav[:, a:b], wav.shape[1], 2,
                              44100, clip_mode="clamp", as_float=True)
    got, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(got.T, np.clip(wav, -0.99, 0.99))


@pytest.mark.parametrize("name, options, message", [
    ("out.ogg", {}, "cannot write .ogg files; use wav, flac or mp3"),
    ("out.wav", {"bits": 20}, "bits must be 16 or 24, got 20"),
    ("out.flac", {"as_float": True}, "float32 samples can only be written to wav"),
])
def test_both_writers_refuse_what_cannot_be_written(tmp_path, name, options, message):
    stem = np.zeros((2, 100), dtype=np.float32)
    writers = [lambda path: audio.write(path, stem, 44100, **options),
               lambda path: audio.write_blocks(path, lambda a, b: stem[:, a:b], 100, 2, 44100,
                                               **options)]
    for write in writers:
        with pytest.raises(AudioError) as refused:
            write(tmp_path / name)
        assert str(refused.value) == f"{tmp_path / name}: {message}"
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_both_writers_name_a_folder_they_cannot_create_files_in(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"")
    stem = np.zeros((2, 100), dtype=np.float32)
    for write in (lambda path: audio.write(path, stem, 44100),
                  lambda path: audio.write_blocks(path, lambda a, b: stem[:, a:b], 100, 2, 44100)):
        with pytest.raises(AudioError, match="cannot create files in this folder"):
            write(blocker / "out.wav")
