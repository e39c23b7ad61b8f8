"""`numba-demucs separate --repo DIR -n NAME` against `demucs --repo DIR -n NAME` for a bag of
mdx's shape: two time-domain Demucs and two HDemucs (one with the magnitude spectrogram, the
MDX padding bug and no GroupNorm as c511e2ab, one with MultiWrap bands as 7d865c68), mdx's
weight matrix and ``segment: 44``, which demucs sets on every member that is not an HTDemucs.
Small widths; both command lines run here on the same files; the stems must agree to 90 dB.
A second run with ``--segment 2`` (demucs allows any segment when no member is an HTDemucs)
cuts the 6 s track into four chunks: the Demucs members get chunks padded to their
valid_length with the track's own neighbouring audio, the HDemucs members a shorter last
chunk; ours runs it with ``--stream``.
"""
import numpy as np
import pytest
import soundfile

from numba_demucs.debug import reference

from ..conftest import snr_db
from .versus import STEMS, read_stem, separate_both, write_bag

NAME = "mdx_small"
MEMBERS = [("d0000001", "demucs_0d19c1c6"), ("d0000002", "demucs_0d19c1c6"),
           ("d0000003", "hdemucs_c511e2ab"), ("d0000004", "hdemucs_7d865c68")]
WEIGHTS = [[1., 1., 0., 0.], [0., 1., 0., 0.], [1., 0., 1., 1.], [1., 0., 1., 1.]]


@pytest.fixture(scope="module", params=[(), ("--segment", "2")], ids=["bag-segment", "segment-2"])
def separated(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bag-versus")
    options = list(request.param)
    repo = folder / "repo"
    repo.mkdir()
    write_bag(repo, NAME, MEMBERS, WEIGHTS)
    song = (0.5 * reference.music_like_signal(6.0, seed=5)).astype(np.float32)
    soundfile.write(folder / "song.wav", song.T, 44100, subtype="FLOAT")
    model = ["--repo", str(repo), "-n", NAME]
    stream = ["--stream"] if options else []
    separate_both(folder, [folder / "song.wav"], ours=model + stream, theirs=model,
                  options=options)
    return folder


def test_bag_stems_match_demucs(separated):
    for stem in STEMS:
        ours = read_stem(separated, "ours", NAME, "song", stem)
        theirs = read_stem(separated, "theirs", NAME, "song", stem)
        assert ours.shape == theirs.shape
        snr = snr_db(theirs[None], ours[None])[0]
        assert snr > 90, (stem, snr)
