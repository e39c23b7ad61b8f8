"""The generated MUSDB18-HQ stand-in reads back through the MUSDB loaders."""
import numpy as np
import pytest

from numba_demucs.eval import musdb, synthetic


def test_musdb_folder_and_estimates_have_the_dataset_layout(tmp_path):
    root = synthetic.write_musdb(tmp_path / "musdb", {"A - One": 1.5, "B - Two": 1.0}, seed=3)
    tracks = musdb.find_tracks(root, "test")
    assert [t.name for t in tracks] == ["A - One", "B - Two"]
    assert (root / "train").is_dir()
    stems, rate = musdb.load_stems(tracks[0], musdb.SOURCES)
    mixture, _ = musdb.load_mixture(tracks[0])
    assert rate == 44100 and stems.shape == (4, 66150, 2)
    # 16-bit files: the mixture is the sum of the stems up to one quantisation step per stem
    assert np.abs(mixture.T - stems.sum(axis=0)).max() < 5 / 2 ** 15

    estimates = synthetic.write_degraded_estimates(root, tmp_path / "estimates", seed=1,
                                                   leak=0.2, noise_level=0.01)
    for track in tracks:
        assert sorted(p.stem for p in (estimates / track.name).iterdir()) == sorted(musdb.SOURCES)
    vocals, _ = musdb.read_audio(estimates / "A - One" / "vocals.wav")
    leaked = stems[0] + 0.2 * stems[-1]          # vocals + 0.2 * other (the previous source)
    assert (vocals - leaked).std() == pytest.approx(0.01, rel=0.05)
