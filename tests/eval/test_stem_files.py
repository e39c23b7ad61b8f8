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


def test_streams_are_read_in_musdb_order(stem_dataset):
    root, path, decoded = stem_dataset
    track, = musdb.find_tracks(root)
    assert track.name == NAME and track.is_stem_file
    loaded, rate = musdb.load_stems(track, musdb.SOURCES)
    assert rate == SR
    for source, audio in zip(musdb.SOURCES, loaded):
        np.testing.assert_array_equal(audio, decoded[STREAMS.index(source)], err_msg=source)
    mixture, _ = musdb.load_mixture(track)
    np.testing.assert_array_equal(mixture, decoded[0].T)
    # The musdb package's own reader agrees on which stream is which source.
    import musdb as musdb_package

    database = musdb_package.DB(root=str(root), subsets="test", is_wav=False)
    their_track, = database.tracks
    sixteen_bit_step = 2.0 ** -15  # musdb has ffmpeg decode to 16-bit PCM, we to float
    for source, audio in zip(musdb.SOURCES, loaded):
        np.testing.assert_allclose(their_track.targets[source].audio, audio, rtol=0,
                                   atol=sixteen_bit_step, err_msg=source)
        for other, other_audio in zip(musdb.SOURCES, loaded):
            if other != source:  # so a swapped pair of streams would fail the line above
                assert np.max(np.abs(other_audio - audio)) > 100 * sixteen_bit_step


def test_stem_file_track_is_scored_like_museval(stem_dataset, tmp_path):
    root, path, decoded = stem_dataset
    references = np.stack([decoded[STREAMS.index(s)] for s in musdb.SOURCES]).astype(np.float64)
    rng = np.random.default_rng(32)
    estimated = signals.degrade(rng, references, leak=0.2, noise_level=0.01, filtered=True)
    estimates = tmp_path / "estimates"
    (estimates / NAME).mkdir(parents=True)
    for source, audio in zip(musdb.SOURCES, estimated):
        soundfile.write(estimates / NAME / f"{source}.wav", audio, SR, subtype="DOUBLE")
    output = tmp_path / "results"
    assert cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(output), "--no-progress"]) == 0
    ours = report.read_track(output / "test" / f"{NAME}.json")
    theirs = dict(zip(("SDR", "ISR", "SIR", "SAR"), museval.evaluate(references, estimated)))
    # ISR, SIR and SAR only where museval's solve is well conditioned (as in test_bsseval):
    # AAC-coded tones can make it ill conditioned, and then those figures move with the
    # BLAS build and CPU (seen here: SIR 1.1e-3 dB apart on an AVX-512 machine).
    compared = ("SDR", "SIR", "ISR", "SAR")
    if signals.museval_condition(references) >= signals.WELL_CONDITIONED:
        compared = ("SDR",)
    for index, source in enumerate(musdb.SOURCES):
        for metric in compared:
            np.testing.assert_allclose(ours[source][metric], theirs[metric][index], rtol=0,
                                       atol=1e-5 + 1e-6 if metric == "SDR" else 1e-3,
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
    decoded, _ = stempeg.read_stems(str(path), dtype=np.float32)
    for source in musdb.SOURCES:
        soundfile.write(estimates / NAME / f"{source}.wav",
                        decoded[1] + 0.01 * rng.standard_normal(decoded[1].shape), SR)
    code = cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(tmp_path / "out"), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and f"{path}:bass" in error and "silent" in error, error
