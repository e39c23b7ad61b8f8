"""`numba-demucs separate --repo DIR -n umxl` against openunmix's PyTorch Separator.

One generated full-size umxl (four TARGET-HASH8.pth files, perturbed random weights), one
generated song as a float wav, a 16-bit flac and a 48 kHz wav. Four stems each; on the
44.1 kHz wav they equal openunmix's Separator (niter=1, same weights, float64) to 100 dB.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from numba_demucs import Separator
from numba_demucs.debug import reference_umx
from numba_demucs.debug.reference import music_like_signal
from numba_demucs.errors import NumbaDemucsError

from ..conftest import snr_db

SECONDS = 3.0
TARGETS = ("vocals", "drums", "bass", "other")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("umx")
    separator = reference_umx.build_separator("umxl", seed=21)
    reference_umx.save_targets(separator, folder / "repo")
    song = (0.5 * music_like_signal(SECONDS, seed=6)).astype(np.float32)
    tracks = folder / "tracks"
    tracks.mkdir()
    soundfile.write(tracks / "as_wav.wav", song.T, 44100, subtype="FLOAT")
    soundfile.write(tracks / "as_flac.flac", song.T, 44100, subtype="PCM_16")
    import soxr

    soundfile.write(tracks / "at_48k.wav", soxr.resample(song.T, 44100, 48000, quality="VHQ"),
                    48000, subtype="FLOAT")
    result = subprocess.run(
        [sys.executable, "-m", "numba_demucs.cli", "separate", "--repo", str(folder / "repo"),
         "-n", "umxl", "--float32", "--clip-mode", "none", "-o", str(folder / "out"),
         *[str(tracks / name) for name in ("as_wav.wav", "as_flac.flac", "at_48k.wav")]],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, separator, song


def test_four_stems_per_input(setup):
    folder, _, song = setup
    for track, rate in (("as_wav", 44100), ("as_flac", 44100), ("at_48k", 48000)):
        for target in TARGETS:
            data, file_rate = soundfile.read(folder / "out" / "umxl" / track / f"{target}.wav",
                                             always_2d=True)
            assert file_rate == rate and data.shape[1] == 2
            assert abs(data.shape[0] - song.shape[1] * rate / 44100) < 2
            assert np.abs(data).max() > 1e-3


def test_equal_to_openunmix_on_44k(setup):
    folder, separator, song = setup
    exact = reference_umx.run_reference(separator, song, dtype=np.float64)
    # float wavs hold [-1, 1] (audio.encode_block clamps); random weights overshoot a little
    assert (np.abs(exact) > 1).mean() < 1e-4
    exact = np.clip(exact, -1.0, 1.0)
    ours = np.stack([soundfile.read(folder / "out" / "umxl" / "as_wav" / f"{t}.wav",
                                    dtype="float32")[0].T for t in TARGETS])
    snr = snr_db(exact, ours)
    print(f"separate -n umxl vs openunmix float64: {snr}")
    assert np.all(snr >= 100.0), snr


def test_python_separator_and_refusals(setup):
    folder, _, song = setup
    separator = Separator("umxl", repo=folder / "repo")
    assert separator.sources == list(TARGETS) and separator.whole_track
    stems = separator.separate_array(song[:, : 44100 * 2], 44100)
    assert set(stems) == set(TARGETS) and stems["vocals"].shape == (2, 44100 * 2)
    with pytest.raises(NumbaDemucsError, match="whole track"):
        separator.separate_file(folder / "tracks" / "as_wav.wav", folder / "x", stream=True)
    with pytest.raises(NumbaDemucsError, match="no segments"):
        Separator("umxl", repo=folder / "repo", segment=5.0)


def test_wiener_options_on_the_command_line_equal_openunmix(setup):
    """--niter 2 --softmask --residual --wiener-win-len 50 against openunmix's Separator
    built with the same options on the same files (float64 reference)."""
    folder, _, song = setup
    result = subprocess.run(
        [sys.executable, "-m", "numba_demucs.cli", "separate", "--repo", str(folder / "repo"),
         "-n", "umxl", "--float32", "--clip-mode", "none", "-o", str(folder / "options"),
         "--niter", "2", "--softmask", "--residual", "--wiener-win-len", "50", "-q",
         str(folder / "tracks" / "as_wav.wav")],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    reference = reference_umx.load_separator(folder / "repo", niter=2, softmask=True,
                                             residual=True, wiener_win_len=50)
    exact = np.clip(reference_umx.run_reference(reference, song, dtype=np.float64), -1.0, 1.0)
    stems = (*TARGETS, "residual")
    ours = np.stack([soundfile.read(folder / "options" / "umxl" / "as_wav" / f"{t}.wav",
                                    dtype="float32")[0].T for t in stems])
    assert ours.shape == exact.shape
    snr = snr_db(exact, ours)
    print(f"separate -n umxl --niter 2 --softmask --residual --wiener-win-len 50: {snr}")
    if not np.all(snr >= 100.0):
        # the EM's 2x2 inversions amplify float32 rounding: PyTorch float32's own distance
        # to float64 is the floor (as in tests/parity/test_openunmix.py)
        floor = snr_db(exact, np.clip(reference_umx.run_reference(reference, song), -1, 1))
        assert np.all(snr >= np.minimum(100.0, floor - 3.0)), (snr, floor)
    # the default (niter=1, no softmask) differs: the options did reach the model
    default = soundfile.read(folder / "out" / "umxl" / "as_wav" / "vocals.wav", dtype="float32")[0].T
    assert snr_db(default[None], ours[:1])[0] < 60.0


def test_wiener_options_refused_for_demucs(tmp_path):
    from fractions import Fraction

    from numba_demucs.debug import reference

    tiny = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2, bottom_channels=16,
                dconv_mode=3)
    checkpoint = reference.save_safetensors(reference.build_model("htdemucs", seed=2, **tiny),
                                            tmp_path)
    track = tmp_path / "x.wav"
    soundfile.write(track, np.zeros((4410, 2), dtype=np.float32), 44100)
    result = subprocess.run(
        [sys.executable, "-m", "numba_demucs.cli", "separate", "--checkpoint", str(checkpoint),
         "--niter", "2", "--wiener-win-len", "10", "-o", str(tmp_path / "out"), str(track)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"numba-demucs: error: --niter, --wiener-win-len: only for Open-Unmix models (umxl, "
        f"umxhq, umx); {checkpoint}: niter, wiener_win_len: only Open-Unmix models take these "
        "options, not HTDemucs")
    assert not (tmp_path / "out").exists()
