"""``eval compare``: per-track side-by-side values, the median of per-track differences and its
paired bootstrap interval, box plots; on folders of known values and on museval's own files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from numba_demucs.errors import EvaluationError
from numba_demucs.eval import cli, compare, report

TRACKS = ("t1", "t2", "t3", "t4", "t5")
BASE_SDR = {"vocals": [4.0, 6.0, 1.0, 8.0, 3.0], "drums": [5.0, 5.5, 6.0, 2.0, 7.0],
            "bass": [3.0, 1.0, 2.0, 4.0, 0.5], "other": [2.0, 2.5, 3.0, 1.0, 4.0]}
# Per-track differences (system B - baseline A) of the median over frames, by hand:
# vocals: sorted 0.5 1 2 3 10, median 2 (the mean, 3.3, and the difference of the
# medians over tracks, 7 - 4 = 3, are other statistics); drums all -1;
# bass: sorted 0 0.25 0.5 0.75 1, median 0.5; other all 0.
DELTA = {"vocals": [3.0, 2.0, 0.5, 10.0, 1.0], "drums": [-1.0] * 5,
         "bass": [0.0, 0.25, 0.5, 1.0, 0.75], "other": [0.0] * 5}
EXPECTED_MEDIAN = {"vocals": 2.0, "drums": -1.0, "bass": 0.5, "other": 0.0}


def frames_around(value):
    """Three frames whose median is ``value`` (and a NaN frame, which museval's median skips)."""
    return [value - 3.0, value, value + 0.5, math.nan]


def write_folder(folder, sdr_of, nan_track=None):
    """museval-format files: SIR, ISR, SAR are SDR + 1, + 2, + 3 per frame."""
    (folder / "test").mkdir(parents=True)
    for index, track in enumerate(TRACKS):
        targets = []
        for target in BASE_SDR:
            frames = frames_around(sdr_of(target, index))
            if track == nan_track and target == "bass":
                frames = [math.nan] * 4  # every frame silent: no value for this track
            targets.append({"name": target, "frames": [
                {"time": float(i), "duration": 1.0,
                 "metrics": {"SDR": v, "SIR": v + 1, "ISR": v + 2, "SAR": v + 3}}
                for i, v in enumerate(frames)]})
        (folder / "test" / f"{track}.json").write_text(json.dumps({"targets": targets}))
    return folder


@pytest.fixture
def two_systems(tmp_path):
    a = write_folder(tmp_path / "A", lambda t, i: BASE_SDR[t][i])
    b = write_folder(tmp_path / "B", lambda t, i: BASE_SDR[t][i] + DELTA[t][i])
    return a, b


def test_known_differences_are_reproduced(two_systems):
    a, b = two_systems
    methods = {"A": report.read_results(a), "B": report.read_results(b)}
    rows = compare.differences(methods, resamples=2000, seed=1)
    by_key = {(r.target, r.metric): r for r in rows}
    assert len(rows) == 4 * 4 and all(r.system == "B" and r.baseline == "A" for r in rows)
    for target, expected in EXPECTED_MEDIAN.items():
        for metric in report.METRICS:  # SIR, ISR, SAR move with SDR here
            row = by_key[(target, metric)]
            assert row.tracks == 5
            assert row.median == pytest.approx(expected, abs=1e-12)
            assert row.low <= expected <= row.high
    # Not the difference of the SiSEC aggregates (median over tracks of each system): 3 dB.
    sisec = {name: report.aggregate(results) for name, results in methods.items()}
    assert sisec["B"]["vocals"]["SDR"] - sisec["A"]["vocals"]["SDR"] == 3.0
    # A constant difference has a zero-width interval; the others do not.
    assert by_key[("drums", "SDR")].low == by_key[("drums", "SDR")].high == -1.0
    vocals = by_key[("vocals", "SDR")]
    # A bootstrap median of five values is one of the five: the interval's ends are values
    # of the differences.
    assert vocals.low in DELTA["vocals"] and vocals.high in DELTA["vocals"]
    assert vocals.low < 2.0 < vocals.high


def test_track_without_a_value_is_left_out_of_the_pairs(tmp_path):
    a = write_folder(tmp_path / "A", lambda t, i: BASE_SDR[t][i])
    b = write_folder(tmp_path / "B", lambda t, i: BASE_SDR[t][i] + DELTA[t][i], nan_track="t5")
    methods = {"A": report.read_results(a), "B": report.read_results(b)}
    bass = {(r.target, r.metric): r for r in compare.differences(methods, resamples=100)}[
        ("bass", "SDR")]
    # t5 (difference 0.75) has no bass value in B: the median of 0, 0.25, 0.5, 1 is 0.375
    assert bass.tracks == 4 and bass.median == pytest.approx(0.375)


def test_bootstrap_is_seeded_and_matches_a_plain_loop():
    rng = np.random.default_rng(5)
    values = rng.normal(0.3, 1.0, size=23)
    first = compare.bootstrap_median(values, resamples=500, confidence=0.9, seed=11)
    assert compare.bootstrap_median(values, resamples=500, confidence=0.9, seed=11) == first
    assert compare.bootstrap_median(values, resamples=500, confidence=0.9, seed=12) != first
    # The same draws, one resample at a time, by the textbook recipe.
    draws = np.random.default_rng(11)
    medians = [np.median(values[draws.integers(0, 23, size=23)]) for _ in range(500)]
    low, high = np.quantile(medians, [0.05, 0.95])
    # (equal draws; the quantile's interpolation may round differently in the last bit)
    assert first == pytest.approx((float(np.median(values)), low, high), rel=0, abs=1e-12)
    assert all(math.isnan(v) for v in compare.bootstrap_median([], seed=0))


def test_bootstrap_interval_covers_the_true_difference():
    """Simulated systems: per-track scores of A vary from song to song, B is A plus a true
    shift of 0.4 dB plus symmetric per-track noise, so the true median difference is 0.4."""
    true_difference = 0.4
    rng = np.random.default_rng(2026)
    songs = rng.normal(6.0, 3.0, size=50)  # song difficulty: shared by both systems
    a = songs + rng.normal(0.0, 0.2, size=50)
    b = songs + true_difference + rng.normal(0.0, 0.5, size=50)
    median, low, high = compare.bootstrap_median(b - a, resamples=4000, seed=0)
    assert low < true_difference < high
    assert high - low < 0.6  # the song-to-song spread (3 dB) cancels in the pairs
    # Unpaired, the same data would give an interval wider than the spread between songs.
    assert np.percentile(b, 75) - np.percentile(a, 25) > 2.0
    # And over many seeded data sets the 90% interval covers the truth about 90% of the time.
    covered = 0
    trials = 200
    for trial in range(trials):
        noise = rng.normal(0.0, 0.5, size=30)
        _, low, high = compare.bootstrap_median(true_difference + noise, resamples=1000,
                                                confidence=0.9, seed=trial)
        covered += low <= true_difference <= high
    # binomial(200, 0.9): mean 180, sd 4.2; the percentile bootstrap of a median runs a bit
    # narrow on 30 values, so the band is wider below than above
    assert 160 <= covered <= 195, covered


def test_compare_command_prints_both_tables_and_plots(two_systems, tmp_path, capsys):
    a, b = two_systems
    figure = tmp_path / "plots" / "box.png"
    figure.parent.mkdir()
    assert cli.main(["eval", "compare", str(a), str(b), "--metrics", "SDR", "SAR",
                     "--resamples", "500", "--plot", str(figure)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # per-track table: t4 vocals SDR 8.000 for A and 18.000 for B, side by side
    row = next(line for line in lines if "t4" in line and "vocals" in line and "SDR" in line)
    assert [cell.strip() for cell in row.split("│")][-3:-1] == ["8.000", "18.000"], row
    assert not any("ISR" in line.split() for line in lines)  # only the metrics asked for
    summary = [line for line in lines if line.lstrip("│ ").startswith("B ")]
    assert len(summary) == 4 * 2, out
    vocals_sar = next(line for line in summary if "vocals" in line and "SAR" in line)
    assert "2.000" in vocals_sar
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in figure.parent.iterdir()] == ["box.png"]  # no temporary left


def test_compare_errors(two_systems, tmp_path, capsys):
    a, _ = two_systems
    with pytest.raises(EvaluationError, match="at least two"):
        compare.differences({"A": report.read_results(a)})
    other = tmp_path / "C" / "test"
    other.mkdir(parents=True)
    (other / "elsewhere.json").write_text((a / "test" / "t1.json").read_text())
    code = cli.main(["eval", "compare", str(a), str(tmp_path / "C")])
    assert code != 0
    assert "no track in common" in capsys.readouterr().err
    code = cli.main(["eval", "compare", str(a), str(tmp_path / "missing")])
    assert code != 0 and f"{tmp_path / 'missing'}: results folder not found" in \
        capsys.readouterr().err


def test_folder_written_by_museval_itself(tmp_path, capsys):
    """museval.eval_mus_track writes the folder (through the musdb package's reader of the
    same MUSDB18-HQ-layout tracks); ours is written by eval musdb from the same estimates.
    compare reads museval's files as museval's own store aggregates them, and the two
    scorers' SDR differences are zero to the rounding of the files. One short track: museval
    takes about 15 s for it on a busy 2-core machine."""
    museval = pytest.importorskip("museval")
    musdb_package = pytest.importorskip("musdb")
    import soundfile

    from numba_demucs.eval import synthetic

    root = synthetic.write_musdb(tmp_path / "musdb", {"One": 1.2}, seed=4)
    estimates = synthetic.write_degraded_estimates(root, tmp_path / "estimates", seed=5,
                                                   leak=0.2, noise_level=0.02)
    theirs = tmp_path / "museval_out"
    stores = {}
    for track in musdb_package.DB(root=str(root), subsets="test", is_wav=True).tracks:
        user = {s: soundfile.read(estimates / track.name / f"{s}.wav")[0]
                for s in ("vocals", "drums", "bass", "other")}
        stores[track.name] = museval.eval_mus_track(track, user, output_dir=str(theirs))
    assert sorted(p.name for p in (theirs / "test").iterdir()) == ["One.json"]
    ours = tmp_path / "ours"
    assert cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(ours), "--no-progress"]) == 0
    capsys.readouterr()
    methods = {"museval_out": report.read_results(theirs), "ours": report.read_results(ours)}
    medians = report.track_medians(methods["museval_out"])
    for name, store in stores.items():
        frame = store.df  # museval's own DataFrame of its frames
        for target in ("vocals", "drums", "bass", "other"):
            for metric in report.METRICS:
                values = frame[(frame.target == target) & (frame.metric == metric)].score
                assert medians[name][target][metric] == float(np.nanmedian(values))
    rows = compare.differences(methods, metrics=("SDR",), resamples=200)
    assert len(rows) == 4
    for row in rows:
        assert row.tracks == 1
        # both files rounded to 1e-5 dB, the scorers equal to 1e-6 dB
        assert abs(row.median) <= 2e-5 and abs(row.low) <= 2e-5 and abs(row.high) <= 2e-5
    assert cli.main(["eval", "compare", str(theirs), str(ours), "--resamples", "100"]) == 0
    out = capsys.readouterr().out
    assert "museval_out" in out and "One" in out
