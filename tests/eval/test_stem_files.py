"""The compressed MUSDB18 layout: ROOT/test/TRACK.stem.mp4, five AAC streams.

The file is written here with stempeg (ffmpeg's AAC encoder). AAC is lossy and pads the
start and end, so everything is compared with the decoded streams, never with what was
encoded. Each source is a different tone, so a stream read as the wrong source would not
match.
"""
from __future__ import annotations

import numpy as np
import pytest

stempeg = pytest.importorskip("stempeg")
museval = pytest.importorskip("museval")
import soundfile  # noqa: E402

from numba_demucs.eval import cli, musdb, report  # noqa: E402

import signals  # noqa: E402

SR = signals.SR
NAME = "Eta - Seven"
# Stream order of a MUSDB18 .stem.mp4 (musdb's setup.yaml stem_ids).
STREAMS = ("mixture", "drums", "bass", "other", "vocals")


@pytest.fixture(scope="module")
def stem_dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("musdb18")
    root = base / "musdb18"
    (root / "test").mkdir(parents=True)
    rng = np.random.default_rng(31)
    sources = signals.tones(rng, 4, 2.4, floor=0.05) * 0.15  # drums, bass, other, vocals
    streams = np.concatenate([sources.sum(axis=0)[None], sources]).astype(np.float32)
    path = root / "test" / f"{NAME}.stem.mp4"
    try:
        stempeg.write_stems(str(path), streams, sample_rate=SR,
                            writer=stempeg.StreamsWriter(codec="aac"))
    except Exception as error:  # ffmpeg without an AAC encoder
        pytest.skip(f"stempeg cannot write AAC stems here: {error}")
    decoded, rate = stempeg.read_stems(str(path), dtype=np.float32)
    assert rate == SR and decoded.shape[0] == 5
    return root, path, decoded


def musdb_track(root):
    import musdb as musdb_package

    database = musdb_package.DB(root=str(root), subsets="test", is_wav=False)
    track, = database.tracks
    return track


def test_streams_are_decoded_as_musdb_decodes_them(stem_dataset):
    """Sample for sample what the musdb package reads (16-bit PCM from ffmpeg, / 32768)."""
    root, path, decoded = stem_dataset
    track, = musdb.find_tracks(root)
    assert track.name == NAME and track.is_stem_file
    loaded, rate = musdb.load_stems(track, musdb.SOURCES)
    assert rate == SR and loaded.dtype == np.float32
    theirs = musdb_track(root)
    for source, audio in zip(musdb.SOURCES, loaded):
        np.testing.assert_array_equal(audio, theirs.targets[source].audio, err_msg=source)
        # not a float decode: every sample is a multiple of 2**-15
        np.testing.assert_array_equal(audio * 32768, np.round(audio * 32768))
        for other, other_audio in zip(musdb.SOURCES, loaded):
            if other != source:  # a swapped pair of streams would fail the line above
                assert np.max(np.abs(other_audio - audio)) > 0.01
    mixture, _ = musdb.load_mixture(track)
    np.testing.assert_array_equal(mixture, theirs.audio.T)
    # The float decode (what the reader did before) is not that: it keeps sub-LSB detail.
    assert np.max(np.abs(decoded[STREAMS.index("vocals")] - loaded[0])) > 1e-6


def test_stem_file_track_is_scored_like_museval_on_musdb(stem_dataset, tmp_path):
    """Our command on the .stem.mp4 against ``museval.eval_mus_track`` on the musdb package's
    track, with the same estimates."""
    root, path, _ = stem_dataset
    theirs_track = musdb_track(root)
    references = np.stack([theirs_track.targets[s].audio for s in musdb.SOURCES])
    rng = np.random.default_rng(32)
    # float32 estimates, so the wav files hold exactly what museval is given
    estimated = signals.degrade(rng, references, leak=0.2, noise_level=0.01,
                                filtered=True).astype(np.float32)
    estimates = tmp_path / "estimates"
    (estimates / NAME).mkdir(parents=True)
    for source, audio in zip(musdb.SOURCES, estimated):
        soundfile.write(estimates / NAME / f"{source}.wav", audio, SR, subtype="FLOAT")
    output = tmp_path / "results"
    assert cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(output), "--no-progress"]) == 0
    ours = report.read_track(output / "test" / f"{NAME}.json")
    store = museval.eval_mus_track(
        theirs_track, {s: e.astype(np.float64) for s, e in zip(musdb.SOURCES, estimated)})
    theirs = {t["name"]: t["frames"] for t in store.scores["targets"]}
    # ISR, SIR and SAR only where museval's solve is well conditioned (as in test_bsseval);
    # the 16-bit decode is what makes it so on these tones (the float decode was not).
    condition = signals.museval_condition(references)
    assert condition < signals.WELL_CONDITIONED
    for source in musdb.SOURCES:
        for metric in ("SDR", "SIR", "ISR", "SAR"):
            expected = np.array([f["metrics"][metric] for f in theirs[source]], dtype=float)
            # Both rounded to 1e-5 dB; the rest is the 1e-6 / 1e-3 dB bound.
            np.testing.assert_allclose(ours[source][metric], expected, rtol=0,
                                       atol=1e-5 + (1e-6 if metric == "SDR" else 1e-3),
                                       err_msg=(source, metric))


def test_silent_reference_stream_is_named_by_file_and_stem(tmp_path, capsys):
    root = tmp_path / "musdb18"
    (root / "test").mkdir(parents=True)
    rng = np.random.default_rng(33)
    sources = signals.tones(rng, 4, 1.5, floor=0.05) * 0.15
    sources[1] = 0.0  # bass, stream 2
    streams = np.concatenate([sources.sum(axis=0)[None], sources]).astype(np.float32)
    path = root / "test" / f"{NAME}.stem.mp4"
    stempeg.write_stems(str(path), streams, sample_rate=SR,
                        writer=stempeg.StreamsWriter(codec="aac"))
    estimates = tmp_path / "estimates"
    (estimates / NAME).mkdir(parents=True)
    decoded, _ = stempeg.read_stems(str(path), dtype=np.float32, ffmpeg_format="s16le")
    for source in musdb.SOURCES:
        soundfile.write(estimates / NAME / f"{source}.wav",
                        decoded[1] + 0.01 * rng.standard_normal(decoded[1].shape), SR)
    code = cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(tmp_path / "out"), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and f"{path}:bass" in error and "silent" in error, error
