"""`numba-demucs separate --repo DIR -n NAME` against `demucs --repo DIR -n NAME` for a bag of
DiffQ-quantized members shaped as mdx_q's: two time-domain Demucs and two HDemucs (c511e2ab's
magnitude spectrogram + MDX padding bug, 7d865c68's MultiWrap bands), mdx's weight matrix,
``segment: 44``. Each member is a perturbed small model quantized by diffq's DiffQuantizer
(random per-group widths 2..14) and saved in demucs' package format; demucs reads them with
diffq's restore_quantized_state, we with our torch-free reader. Stems must agree to 90 dB.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import yaml

from numba_demucs.debug import reference

from ..conftest import snr_db

pytest.importorskip("diffq")

NAME = "mdx_q_small"
MEMBERS = [("e0000001", "demucs_0d19c1c6"), ("e0000002", "demucs_0d19c1c6"),
           ("e0000003", "hdemucs_c511e2ab"), ("e0000004", "hdemucs_7d865c68")]
WEIGHTS = [[1., 1., 0., 0.], [0., 1., 0., 0.], [1., 0., 1., 1.], [1., 0., 1., 1.]]
STEMS = ("drums", "bass", "other", "vocals")


def _run(*command):
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized-versus")
    repo = folder / "repo"
    repo.mkdir()
    for seed, (signature, architecture) in enumerate(MEMBERS):
        model = reference.build_model(architecture, seed=seed, channels=8)
        # min_size lowered from demucs' 0.2 MB so that these small models' convolutions and
        # LSTMs are quantized (at 0.2 MB every weight of an 8-channel model stays float).
        reference.save_quantized_th(model, repo, signature=signature, min_size=0.002,
                                    seed=seed)
    (repo / f"{NAME}.yaml").write_text(yaml.safe_dump(
        {"models": [sig for sig, _ in MEMBERS], "weights": WEIGHTS, "segment": 44}))
    song = (0.5 * reference.music_like_signal(4.0, seed=6)).astype(np.float32)
    soundfile.write(folder / "song.wav", song.T, 44100, subtype="FLOAT")
    _run(sys.executable, "-m", "numba_demucs.cli", "separate", "--repo", str(repo), "-n", NAME,
         "--shifts", "0", "--float32", "-o", str(folder / "ours"), str(folder / "song.wav"))
    _run(sys.executable, "-m", "demucs.separate", "--repo", str(repo), "-n", NAME,
         "--shifts", "0", "--float32", "-d", "cpu", "-o", str(folder / "theirs"),
         str(folder / "song.wav"))
    return folder


def test_quantized_bag_stems_match_demucs(separated):
    snrs = {}
    for stem in STEMS:
        ours, _ = soundfile.read(separated / "ours" / NAME / "song" / f"{stem}.wav",
                                 dtype="float32", always_2d=True)
        theirs, _ = soundfile.read(separated / "theirs" / NAME / "song" / f"{stem}.wav",
                                   dtype="float32", always_2d=True)
        assert ours.shape == theirs.shape
        assert np.abs(theirs).max() > 1e-3  # the stem carries signal
        snrs[stem] = snr_db(theirs.T[None], ours.T[None])[0]
    print("quantized bag SNR (dB):", {k: round(float(v), 1) for k, v in snrs.items()})
    assert min(snrs.values()) > 90, snrs
