"""`numba-demucs separate --repo DIR -n NAME` against `demucs --repo DIR -n NAME` for a bag of
DiffQ-quantized members shaped as mdx_q's: two time-domain Demucs and two HDemucs (c511e2ab's
magnitude spectrogram + MDX padding bug, 7d865c68's MultiWrap bands), mdx's weight matrix,
``segment: 44``. Each member is a perturbed small model quantized by diffq's DiffQuantizer
(random per-group widths 2..14) and saved in demucs' package format; demucs reads them with
diffq's restore_quantized_state, we with our torch-free reader. Stems must agree to 90 dB.
"""
import numpy as np
import pytest
import soundfile

from numba_demucs.debug import reference

from ..conftest import snr_db
from .versus import STEMS, read_stem, separate_both, write_bag

pytest.importorskip("diffq")

NAME = "mdx_q_small"
MEMBERS = [("e0000001", "demucs_0d19c1c6"), ("e0000002", "demucs_0d19c1c6"),
           ("e0000003", "hdemucs_c511e2ab"), ("e0000004", "hdemucs_7d865c68")]
WEIGHTS = [[1., 1., 0., 0.], [0., 1., 0., 0.], [1., 0., 1., 1.], [1., 0., 1., 1.]]


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized-versus")
    repo = folder / "repo"
    repo.mkdir()
    # min_size lowered from demucs' 0.2 MB so that these small models' convolutions and
    # LSTMs are quantized (at 0.2 MB every weight of an 8-channel model stays float).
    write_bag(repo, NAME, MEMBERS, WEIGHTS, quantized_min_size=0.002)
    song = (0.5 * reference.music_like_signal(4.0, seed=6)).astype(np.float32)
    soundfile.write(folder / "song.wav", song.T, 44100, subtype="FLOAT")
    model = ["--repo", str(repo), "-n", NAME]
    separate_both(folder, [folder / "song.wav"], ours=model, theirs=model)
    return folder


def test_quantized_bag_stems_match_demucs(separated):
    snrs = {}
    for stem in STEMS:
        ours = read_stem(separated, "ours", NAME, "song", stem)
        theirs = read_stem(separated, "theirs", NAME, "song", stem)
        assert ours.shape == theirs.shape
        assert np.abs(theirs).max() > 1e-3  # the stem carries signal
        snrs[stem] = snr_db(theirs[None], ours[None])[0]
    print("quantized bag SNR (dB):", {k: round(float(v), 1) for k, v in snrs.items()})
    assert min(snrs.values()) > 90, snrs
