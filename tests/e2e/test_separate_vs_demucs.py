"""`numba-demucs separate` against `demucs` itself, both run as a user runs them.

One generated official-architecture htdemucs checkpoint, one generated song in four
forms (float wav, 16-bit flac, mp3, 48 kHz wav). Both command lines run in this test on
the same files; the stems must agree to 90 dB.
"""
import numpy as np
import pytest
import soundfile

from numba_demucs.debug import reference

from ..conftest import snr_db
from .versus import STEMS, read_stem, separate_both

SIGNATURE = "5ca1ab1e"
SECONDS = 3.0
THRESHOLD_DB = 90.0

@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("versus")
    repo = folder / "repo"
    repo.mkdir()
    checkpoint = reference.save_th(reference.build_model("htdemucs", seed=11), repo,
                                   signature=SIGNATURE)
    song = (0.5 * reference.music_like_signal(SECONDS, seed=5)).astype(np.float32)
    tracks = folder / "tracks"
    tracks.mkdir()
    soundfile.write(tracks / "as_wav.wav", song.T, 44100, subtype="FLOAT")
    soundfile.write(tracks / "as_flac.flac", song.T, 44100, subtype="PCM_16")
    soundfile.write(tracks / "as_mp3.mp3", song.T, 44100, format="MP3")
    import soxr

    song48 = soxr.resample(song.T, 44100, 48000, quality="VHQ")
    soundfile.write(tracks / "at_48k.wav", song48, 48000, subtype="FLOAT")
    # What libsndfile decodes from the mp3 (gapless), for demucs to separate as a wav.
    decoded, _ = soundfile.read(tracks / "as_mp3.mp3", dtype="float32")
    soundfile.write(folder / "mp3_decoded.wav", decoded, 44100, subtype="FLOAT")
    names = ["as_wav.wav", "as_flac.flac", "as_mp3.mp3", "at_48k.wav"]
    separate_both(folder, [tracks / name for name in names],
                  ours=["--checkpoint", str(checkpoint), "--sample-rate", "44100"],
                  theirs=["--repo", str(repo), "-n", SIGNATURE],
                  more_for_theirs=[folder / "mp3_decoded.wav"])
    return folder


def _stem(folder, side, track, stem):
    return read_stem(folder, side, SIGNATURE, track, stem)


@pytest.mark.parametrize("track", ["as_wav", "as_flac", "at_48k"])
def test_stems_match_demucs(separated, track):
    for stem in STEMS:
        ours = _stem(separated, "ours", track, stem)
        theirs = _stem(separated, "theirs", track, stem)
        assert ours.shape == theirs.shape
        assert snr_db(theirs[None], ours[None])[0] > THRESHOLD_DB, (track, stem)


def _best_lag(late, early, length, max_lag=4000):
    scores = [np.dot(late[lag:lag + length], early[:length]) for lag in range(max_lag)]
    return int(np.argmax(scores))


def test_mp3_is_decoded_gapless_and_otherwise_matches_demucs(separated):
    """demucs reads mp3 through sphn, which keeps the encoder delay; libsndfile drops it.

    So: ours on the mp3 equals demucs on the gapless decode, while demucs separates sphn's
    decode, which is the gapless one delayed by the encoder delay and padded at the end.
    """
    import sphn

    length = int(SECONDS * 44100)
    for stem in STEMS:
        ours = _stem(separated, "ours", "as_mp3", stem)
        assert ours.shape[-1] == length
        theirs = _stem(separated, "theirs", "mp3_decoded", stem)
        assert snr_db(theirs[None], ours[None])[0] > THRESHOLD_DB
    mp3 = separated / "tracks" / "as_mp3.mp3"
    gapless, _ = soundfile.read(mp3, dtype="float32")
    with_delay, _ = sphn.read(str(mp3))
    delay = _best_lag(with_delay[0], gapless[:, 0], length - 4000)
    assert delay > 500  # the encoder delay is over a thousand samples
    assert snr_db(gapless[None, :length - delay, 0],
                  with_delay[None, 0, delay:length]) > 60
    assert _stem(separated, "theirs", "as_mp3", "vocals").shape[-1] == with_delay.shape[-1]
