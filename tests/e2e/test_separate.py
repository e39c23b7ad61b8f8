"""`numba-demucs separate` and the Separator API on a tiny generated model: formats, layouts,
two stems, and every kind of bad input."""
import os
import resource
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
import soundfile

from numba_demucs import Separator, separate_file
from numba_demucs.debug import reference

from ..conftest import snr_db

TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2, bottom_channels=16,
            dconv_mode=3)
SIGNATURE = "7e57ab1e"
STEMS = ["drums", "bass", "other", "vocals"]


def separate(*args, **kwargs):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "numba_demucs.cli", "separate", *map(str, args)],
                          capture_output=True, text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def torch_model():
    return reference.build_model("htdemucs", seed=4, **TINY)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, torch_model):
    folder = tmp_path_factory.mktemp("repo")
    reference.save_th(torch_model, folder, signature=SIGNATURE)
    return folder


@pytest.fixture(scope="module")
def checkpoint(repo):
    return next(repo.glob("*.th"))


@pytest.fixture(scope="module")
def song():
    return (0.5 * reference.music_like_signal(1.6, seed=9)).astype(np.float32)


def write_wav(path, data, rate=44100, subtype="FLOAT"):
    soundfile.write(path, np.asarray(data).T, rate, subtype=subtype)
    return path


def read(path):
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return data.T, rate


def demucs_separate_tensor(repo, mix, rate):
    """demucs 4.1's own Separator on the same checkpoint: stems at 44.1 kHz, stereo."""
    import torch
    from demucs.api import Separator as DemucsSeparator

    separator = DemucsSeparator(model=SIGNATURE, repo=repo, shifts=0, device="cpu")
    _, stems = separator.separate_tensor(torch.from_numpy(mix), rate)
    return {name: stem.numpy() for name, stem in stems.items()}


def test_api_matches_demucs_separator(repo, checkpoint, song):
    ours = Separator(checkpoint, shifts=0).separate_array(song, 44100)
    theirs = demucs_separate_tensor(repo, song, 44100)
    assert list(ours) == STEMS
    for name in STEMS:
        assert ours[name].shape == song.shape
        assert snr_db(theirs[name][None], ours[name][None])[0] > 90, name


def test_mono_22k_input_gives_mono_22k_stems_from_demucs_samples(repo, checkpoint, song):
    import julius
    import torch

    mono = song[:1, ::2].copy()
    ours = Separator(checkpoint, shifts=0).separate_array(mono, 22050)
    theirs = demucs_separate_tensor(repo, mono, 22050)
    for name in STEMS:
        back = julius.resample_frac(torch.from_numpy(theirs[name].mean(0, keepdims=True)),
                                    44100, 22050).numpy()
        assert ours[name].shape == mono.shape
        n = min(back.shape[-1], mono.shape[-1])
        assert snr_db(back[None, :, :n], ours[name][None, :, :n])[0] > 90, name


def test_cli_layout_two_stems_and_int_formats(tmp_path, checkpoint, song):
    track = write_wav(tmp_path / "My Song.wav", song)
    out = tmp_path / "out"
    result = separate(track, "--checkpoint", checkpoint, "--shifts", "0", "--float32", "-o", out)
    assert result.returncode == 0, result.stderr
    folder = out / SIGNATURE / "My Song"
    full = {name: read(folder / f"{name}.wav")[0] for name in STEMS}

    assert separate(track, "--checkpoint", checkpoint, "--shifts", "0", "--float32", "-o", out,
                    "--two-stems", "vocals", "--filename", "{track}-2/{stem}.{ext}").returncode == 0
    two = tmp_path / "out" / SIGNATURE / "My Song-2"
    assert sorted(p.name for p in two.iterdir()) == ["no_vocals.wav", "vocals.wav"]
    no_vocals = full["drums"] + full["bass"] + full["other"]
    np.testing.assert_allclose(read(two / "no_vocals.wav")[0], np.clip(no_vocals, -1, 1),
                               atol=2e-6)

    assert separate(track, "--checkpoint", checkpoint, "--shifts", "0", "--float32", "-o", out,
                    "--two-stems", "vocals", "--other-method", "minus",
                    "--filename", "{track}-3/{stem}.{ext}").returncode == 0
    minus = read(out / SIGNATURE / "My Song-3" / "minus_vocals.wav")[0]
    np.testing.assert_allclose(minus, song - full["vocals"], atol=2e-6)

    # 16 and 24 bits as demucs writes them: rescale if the stem would clip, then truncate.
    assert separate(track, "--checkpoint", checkpoint, "--shifts", "0", "-o", out,
                    "--filename", "{track}-16/{stem}.{ext}").returncode == 0
    assert separate(track, "--checkpoint", checkpoint, "--shifts", "0", "-o", out, "--int24",
                    "--flac", "--filename", "{track}-24/{stem}.{ext}").returncode == 0
    for name in STEMS:
        stem = full[name]
        scaled = stem / np.float32(max(1.01 * np.abs(stem).max(), 1))
        pcm16, _ = soundfile.read(out / SIGNATURE / "My Song-16" / f"{name}.wav", dtype="int16")
        expected16 = (np.clip(scaled, -1, 1) * np.float32(32767)).astype(np.int16)
        assert np.abs(pcm16.T.astype(int) - expected16).max() <= 1
        pcm24, _ = soundfile.read(out / SIGNATURE / "My Song-24" / f"{name}.flac", dtype="int32")
        expected24 = (np.clip(scaled, -1, 1) * np.float32(2 ** 23 - 1)).astype(np.int32)
        assert np.abs((pcm24.T >> 8) - expected24).max() <= 1


def test_mp3_output_and_48k_input_written_at_48k(tmp_path, checkpoint, song):
    import soxr

    song48 = soxr.resample(song.T, 44100, 48000).T.astype(np.float32)
    track = write_wav(tmp_path / "hi.wav", song48, rate=48000)
    out = tmp_path / "out"
    assert separate(track, "--checkpoint", checkpoint, "--shifts", "0", "--float32",
                    "-o", out).returncode == 0
    vocals, rate = read(out / SIGNATURE / "hi" / "vocals.wav")
    assert rate == 48000 and vocals.shape == song48.shape
    assert separate(track, "--checkpoint", checkpoint, "--shifts", "0", "--mp3",
                    "--mp3-bitrate", "192", "-o", out, "--filename", "{track}/{stem}.{ext}"
                    ).returncode == 0
    mp3 = out / SIGNATURE / "hi" / "vocals.mp3"
    decoded, rate = read(mp3)
    assert rate == 48000 and abs(decoded.shape[1] - vocals.shape[1]) < 2000
    seconds = song48.shape[1] / 48000
    assert 150 < mp3.stat().st_size * 8 / seconds / 1000 < 240  # about 192 kbit/s
    n = min(decoded.shape[1], vocals.shape[1])
    # Lossy, but aligned (the LAME header lets the decoder drop the encoder delay) and
    # at the right scale: a delayed or mis-scaled file scores below 3 dB here.
    lags = [np.dot(decoded[0, lag:n - 3000 + lag], vocals[0, :n - 3000]) for lag in range(3000)]
    assert int(np.argmax(lags)) == 0
    assert snr_db(vocals[None, :, :n], decoded[None, :, :n])[0] > 8


def test_folders_are_walked_and_three_channels_keep_the_first_two(tmp_path, checkpoint, song):
    tracks = tmp_path / "in"
    (tracks / "sub").mkdir(parents=True)
    write_wav(tracks / "a.wav", song)
    soundfile.write(tracks / "sub" / "b.flac", song.T, 44100)
    (tracks / "notes.txt").write_text("not audio, not picked up")
    three = np.concatenate([song, song[:1] * 0.3])
    write_wav(tracks / "c.wav", three)
    out = tmp_path / "out"
    result = separate(tracks, "--checkpoint", checkpoint, "--shifts", "0", "--float32", "-o", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / SIGNATURE).iterdir()) == ["a", "b", "c"]
    assert "3 channels; as demucs does, only the first 2 are separated" in result.stdout
    assert "3 of 3 tracks separated" in result.stdout
    np.testing.assert_array_equal(read(out / SIGNATURE / "c" / "bass.wav")[0],
                                  read(out / SIGNATURE / "a" / "bass.wav")[0])


def test_bad_tracks_are_reported_and_the_batch_goes_on(tmp_path, checkpoint, song):
    good = write_wav(tmp_path / "good.wav", song)
    silent = write_wav(tmp_path / "silent.wav", np.zeros_like(song), subtype="PCM_16")
    with_nan = song.copy()
    with_nan[1, 100] = np.nan
    nan = write_wav(tmp_path / "nan.wav", with_nan)
    empty = write_wav(tmp_path / "empty.wav", np.zeros((2, 0), np.float32))
    text = tmp_path / "text.wav"
    text.write_text("this is not a wav file")
    missing = tmp_path / "missing.flac"
    out = tmp_path / "out"
    result = separate(missing, text, empty, nan, silent, good, "--checkpoint", checkpoint,
                      "--shifts", "0", "-o", out)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert errors == [
        f"numba-demucs: error: {missing}: no such file",
        f"numba-demucs: error: {text}: not an audio file that libsndfile can read "
        "(Format not recognised.)",
        f"numba-demucs: error: {empty}: the file holds no samples",
        f"numba-demucs: error: {nan}: 1 samples are NaN or infinite",
    ], result.stderr
    assert "2 of 6 tracks separated; failed:" in result.stdout
    for name in STEMS:
        stem, _ = read(out / SIGNATURE / "silent" / f"{name}.wav")
        assert stem.shape == song.shape and not stem.any()
        assert (out / SIGNATURE / "good" / f"{name}.wav").exists()
    assert not (out / SIGNATURE / "nan").exists()


def test_model_and_option_errors_are_one_line(tmp_path, checkpoint, song):
    track = write_wav(tmp_path / "t.wav", song)
    mislabelled = tmp_path / f"{SIGNATURE}-00000000.th"
    mislabelled.write_bytes(checkpoint.read_bytes())
    cases = {
        ("--checkpoint", mislabelled): f"{SIGNATURE}-00000000.th: checksum mismatch",
        ("--checkpoint", tmp_path / "none.th"): "none.th: no such checkpoint file",
        ("--checkpoint", checkpoint, "--two-stems", "kazoo"): "--two-stems kazoo: model",
        ("--checkpoint", checkpoint, "--segment", "9"): "--segment 9.0 is longer than",
        ("--checkpoint", checkpoint, "--filename", "{track}/{song}.{ext}"): "unknown field(s) song",
        ("--checkpoint", checkpoint, "--flac", "--float32"): "--float32 applies to wav",
        ("-n", "no_such_model"): "unknown model name 'no_such_model'; known names: htdemucs",
        ("--checkpoint", checkpoint, "-o", track / "sub"): "cannot create the output folder",
    }
    for args, message in cases.items():
        result = separate(track, *args)
        assert result.returncode == 2, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_failing_write_leaves_no_file(tmp_path, checkpoint, song):
    """The file-size limit makes writes fail as a full disk does: nothing under the final
    name, no temporary left behind, one clear line."""
    track = write_wav(tmp_path / "t.wav", song)
    out = tmp_path / "out"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))

    result = separate(track, "--checkpoint", checkpoint, "--shifts", "0", "--float32",
                      "-o", out, preexec_fn=limit_file_size)
    assert result.returncode == 2
    assert "drums.wav: could not write the file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in (out / SIGNATURE / "t").iterdir()] == []


def test_ctrl_c_stops_cleanly(tmp_path, checkpoint):
    long_song = (0.5 * reference.music_like_signal(240, seed=1)).astype(np.float32)
    track = write_wav(tmp_path / "long.wav", long_song)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "numba_demucs.cli", "separate", str(track), "--checkpoint",
         str(checkpoint), "--shifts", "0", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job starts with SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: give the child the default disposition a terminal has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # The first progress line comes after the first segments are done.
    line = process.stdout.readline()
    while line and "%" not in line:
        line = process.stdout.readline()
    assert "%" in line, process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert leftovers == []


def test_separate_file_api(tmp_path, checkpoint, song):
    track = write_wav(tmp_path / "api.wav", song)
    written = separate_file(track, model=checkpoint, out=tmp_path / "sep", shifts=0,
                            as_float=True, two_stems="drums")
    assert sorted(written) == ["drums", "no_drums"]
    drums, _ = read(written["drums"])
    expected = Separator(checkpoint, shifts=0).separate_array(song, 44100)["drums"]
    np.testing.assert_array_equal(drums, np.clip(expected, -1, 1))
    assert written["drums"] == tmp_path / "sep" / SIGNATURE / "api" / "drums.wav"


def _limit_memory():
    # a forged header must be refused before anything is allocated for it: 4 GiB of
    # address space is far below what the 1 Hz file or the 44101 Hz sinc table would take
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("stream", [False, True])
def test_hostile_headers_between_good_tracks(tmp_path, checkpoint, song, stream):
    """A 1 Hz header (1.6 s of samples would resample into ~20 GB at 44.1 kHz), a 44101 Hz
    file (with --stream: a sinc table of 44100 phases, GBs), a 3 MHz header and a text file,
    each between good tracks: one line per bad file, the good ones separated, exit 2."""
    tracks = [write_wav(tmp_path / "good1.wav", song)]
    one_hz = write_wav(tmp_path / "one_hz.wav", song, rate=1)
    tracks += [one_hz, write_wav(tmp_path / "good2.wav", song)]
    odd = write_wav(tmp_path / "odd_rate.wav", song, rate=44101)
    tracks += [odd, write_wav(tmp_path / "good3.wav", song)]
    fast = write_wav(tmp_path / "fast.wav", song[:, :1000], rate=3_000_000)
    text = tmp_path / "text.wav"
    text.write_text("RIFF but not really")
    tracks += [fast, write_wav(tmp_path / "good4.wav", song), text,
               write_wav(tmp_path / "good5.wav", song)]
    out = tmp_path / "out"
    result = separate(*tracks, "--checkpoint", checkpoint, "--shifts", "0", "-o", out,
                      *(["--stream"] if stream else []), preexec_fn=_limit_memory, timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    expected = [f"numba-demucs: error: {one_hz}: sample rate 1 Hz is outside 1000-768000 Hz; "
                "refused before resampling"]
    if stream:
        expected.append(f"numba-demucs: error: {odd}: 44101 -> 44100 Hz reduces to 44101:44100, "
                        "beyond the sinc resampler's 2000 phases; separate without --stream "
                        "(soxr then resamples) or resample the file first")
    expected += [f"numba-demucs: error: {fast}: sample rate 3000000 Hz is outside 1000-768000 "
                 "Hz; refused before resampling",
                 f"numba-demucs: error: {text}: not an audio file that libsndfile can read "
                 "(Format not recognised.)"]
    assert result.stderr.strip().splitlines() == expected
    separated = 6 if not stream else 5
    assert f"{separated} of 9 tracks separated; failed:" in result.stdout
    for index in range(1, 6):
        for name in STEMS:
            stem, rate = read(out / SIGNATURE / f"good{index}" / f"{name}.wav")
            assert rate == 44100 and stem.shape == song.shape
    assert (out / SIGNATURE / "odd_rate").exists() != stream
    for bad in ("one_hz", "fast", "text"):
        assert not (out / SIGNATURE / bad).exists()
