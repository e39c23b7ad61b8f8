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
