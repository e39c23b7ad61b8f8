"""The MUSDB runner, its JSON, resuming, the report, and bad input, on a generated MUSDB18-HQ folder."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile

museval = pytest.importorskip("museval")

from numba_demucs.errors import AudioError, EvaluationError  # noqa: E402
from numba_demucs.eval import cli, musdb, report, runner  # noqa: E402
from numba_demucs.eval.synthetic import write_track  # noqa: E402

import signals  # noqa: E402

TRACKS = {"Alpha - One": 2.3, "Beta - Two": 2.0, "Gamma - Three": 1.6}
SR = signals.SR


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """ROOT/test/TRACK/*.wav for three short tracks and ESTIMATES/TRACK/SOURCE.wav."""
    base = tmp_path_factory.mktemp("musdb")
    root, estimates = base / "musdb18hq", base / "estimates"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(11)
    for name, seconds in TRACKS.items():
        write_track(root, name, seconds, rng)
        references, _ = musdb.load_stems(musdb.Track(name, "test", str(root / "test" / name)),
                                         musdb.SOURCES)
        estimated = signals.degrade(rng, references.astype(np.float64), leak=0.15,
                                    noise_level=0.01, filtered=True)
        (estimates / name).mkdir(parents=True)
        for source, audio in zip(musdb.SOURCES, estimated):
            soundfile.write(estimates / name / f"{source}.wav", audio, SR, subtype="FLOAT")
    return root, estimates


@pytest.fixture(scope="module")
def scored(dataset, tmp_path_factory):
    """One full CLI run; returns the results folder."""
    root, estimates = dataset
    output = tmp_path_factory.mktemp("results") / "ours"
    assert cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(output), "--no-progress"]) == 0
    return output


def tasks_for(dataset):
    root, estimates = dataset
    return [runner.TrackTask(track, estimates_dir=str(estimates))
            for track in musdb.find_tracks(root, "test")]


def test_json_layout_matches_museval_trackstore(scored):
    files = sorted((scored / "test").glob("*.json"))
    assert [f.stem for f in files] == sorted(TRACKS)
    document = json.loads(files[0].read_text())
    assert [t["name"] for t in document["targets"]] == list(musdb.SOURCES)
    frame = document["targets"][0]["frames"][1]
    assert frame["time"] == 1.0 and frame["duration"] == 1.0
    assert set(frame["metrics"]) == {"SDR", "SIR", "ISR", "SAR"}
    # museval validates its own output against this schema; ours must pass it too.
    store = museval.TrackStore(track_name=files[0].stem)
    store.scores = document
    store.validate()


def test_track_scores_equal_museval_evaluate(dataset, scored):
    root, estimates = dataset
    name = "Beta - Two"
    references = np.stack([soundfile.read(root / "test" / name / f"{s}.wav")[0]
                           for s in musdb.SOURCES])
    estimated = np.stack([soundfile.read(estimates / name / f"{s}.wav")[0]
                          for s in musdb.SOURCES])
    theirs = dict(zip(("SDR", "ISR", "SIR", "SAR"), museval.evaluate(references, estimated)))
    ours = report.read_track(scored / "test" / f"{name}.json")
    for index, source in enumerate(musdb.SOURCES):
        for metric in ("SDR", "SIR", "ISR", "SAR"):
            # The JSON is rounded to 1e-5 dB like museval's; the rest is the 1e-3 dB bound.
            np.testing.assert_allclose(ours[source][metric], theirs[metric][index],
                                       rtol=0, atol=1e-3 if metric != "SDR" else 1e-5 + 1e-6)


def test_museval_aggregation_reads_our_json_and_agrees(scored):
    store = museval.MethodStore()
    store.add_eval_dir(str(scored))
    theirs = store.agg_frames_tracks_scores()
    ours = report.aggregate(report.read_results(scored))
    assert len(theirs) == 4 * 4
    for (method, target, metric), value in theirs.items():
        assert method == "ours"
        assert ours[target][metric] == pytest.approx(value, abs=1e-9)


def test_report_reads_museval_json_and_writes_csv_and_plot(scored, tmp_path, capsys):
    # museval's own JSON for the same tracks, written by its TrackStore.
    museval_dir = tmp_path / "museval_run"
    (museval_dir / "test").mkdir(parents=True)
    for file in (scored / "test").glob("*.json"):
        scores = report.read_track(file)
        store = museval.TrackStore(track_name=file.stem)
        for target, metrics in scores.items():
            store.add_target(target, {m: list(metrics[m]) for m in report.METRICS})
        (museval_dir / "test" / file.name).write_text(store.json)
    table, plot_file = tmp_path / "table.csv", tmp_path / "box.png"
    assert cli.main(["eval", "report", str(scored), "--compare", str(museval_dir),
                     "--csv", str(table), "--plot", str(plot_file)]) == 0
    printed = capsys.readouterr().out
    assert "Gamma - Three" in printed and "museval_run" in printed
    rows = list(csv.DictReader(table.open()))
    aggregate_rows = {(r["method"], r["target"]): r for r in rows
                      if r["track"] == "*" and r["statistic"] == report.SISEC_STATISTIC}
    store = museval.MethodStore()
    store.add_eval_dir(str(museval_dir))
    for (method, target, metric), value in store.agg_frames_tracks_scores().items():
        assert float(aggregate_rows[("museval_run", target)][metric]) == pytest.approx(value)
        assert float(aggregate_rows[("ours", target)][metric]) == pytest.approx(value, abs=1e-9)
    assert plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Crash(Exception):
    pass


def test_crash_after_one_track_then_resume_scores_only_the_rest(dataset, tmp_path):
    tasks = tasks_for(dataset)
    output = tmp_path / "run"

    def crash(track, path):
        raise Crash(track.name)

    with pytest.raises(Crash):
        runner.run(tasks, output, progress=False, on_track_done=crash)
    first = [p.stem for p in (output / "test").iterdir()]
    assert first == [tasks[0].track.name]
    assert not list((output / "test").glob(".*"))  # no temporary file left behind

    scored_now = []
    runner.run(tasks, output, progress=False,
               on_track_done=lambda track, path: scored_now.append(track.name))
    assert scored_now == [t.track.name for t in tasks[1:]]
    again = runner.run(tasks, output, progress=False)
    assert again.scored == [] and again.failed == [] and len(again.skipped) == 3
    assert len(runner.run(tasks, output, progress=False, force=True).scored) == 3


def test_process_pool_gives_the_same_json(dataset, scored, tmp_path):
    output = tmp_path / "pool"
    finished = runner.run(tasks_for(dataset), output, jobs=2, progress=False).scored
    assert sorted(t.name for t in finished) == sorted(TRACKS)
    for file in (scored / "test").glob("*.json"):
        assert _same_scores(output / "test" / file.name, file)


def _same_scores(a, b):
    left, right = report.read_track(a), report.read_track(b)
    return all(np.array_equal(left[t][m], right[t][m], equal_nan=True)
               for t in left for m in left[t])


def test_dask_local_cluster_on_loopback(dataset, scored, tmp_path):
    distributed = pytest.importorskip("distributed")
    output = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        finished = runner.run(tasks_for(dataset), output, progress=False,
                              dask_scheduler=cluster.scheduler_address).scored
    assert sorted(t.name for t in finished) == sorted(TRACKS)
    for file in (scored / "test").glob("*.json"):
        assert _same_scores(output / "test" / file.name, file)


def test_unreachable_dask_scheduler_is_a_clear_error(dataset, tmp_path):
    pytest.importorskip("distributed")
    with pytest.raises(EvaluationError, match="dask scheduler at tcp://127.0.0.1:9"):
        runner.run(tasks_for(dataset)[:1], tmp_path / "x", progress=False,
                   dask_scheduler="tcp://127.0.0.1:9")


# ----------------------------------------------------------------------------------------
# Bad input: one line naming the file, exit code 2
# ----------------------------------------------------------------------------------------


@pytest.fixture
def broken(dataset, tmp_path):
    """A private copy of one track and its estimates, to damage."""
    import shutil

    root, estimates = dataset
    name = "Gamma - Three"
    shutil.copytree(root / "test" / name, tmp_path / "root" / "test" / name)
    shutil.copytree(estimates / name, tmp_path / "est" / name)
    return tmp_path / "root", tmp_path / "est", name


def run_cli(root, estimates, tmp_path, capsys):
    code = cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(tmp_path / "out"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines)
    # The track's error on one line, then the summary naming the track.
    assert len(lines) == 2 and lines[1] == "0 scored, 1 failed: Gamma - Three", lines
    return code, lines[0]


def test_estimate_of_other_length(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = estimates / name / "drums.wav"
    audio, rate = soundfile.read(path)
    soundfile.write(path, audio[:-100], rate, subtype="FLOAT")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "samples" in error


def test_estimate_with_other_channel_count(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = estimates / name / "bass.wav"
    audio, rate = soundfile.read(path)
    soundfile.write(path, audio[:, 0], rate, subtype="FLOAT")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "channels" in error


def test_missing_reference_stem(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = root / "test" / name / "other.wav"
    path.unlink()
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "missing stem" in error


def test_missing_estimate(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = estimates / name / "vocals.wav"
    path.unlink()
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "missing estimate" in error


def test_non_audio_file(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = estimates / name / "vocals.wav"
    path.write_text("this is not audio\n")
    task = runner.TrackTask(musdb.find_tracks(root)[0], estimates_dir=str(estimates))
    with pytest.raises(AudioError, match="not a readable audio file") as error:
        runner.score_track(task)
    assert str(path) in str(error.value)
    code, message = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in message and "not a readable audio file" in message


def test_non_audio_reference_stem(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = root / "test" / name / "drums.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "not a readable audio file" in error


def test_reference_stems_of_different_lengths(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = root / "test" / name / "bass.wav"
    audio, rate = soundfile.read(path)
    soundfile.write(path, audio[:-1], rate, subtype="PCM_16")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "samples" in error
    assert str(root / "test" / name / "vocals.wav") in error  # the stem it was compared with


def test_reference_stem_with_other_sample_rate(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = root / "test" / name / "other.wav"
    audio, _ = soundfile.read(path)
    soundfile.write(path, audio, 48000, subtype="PCM_16")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "48000 Hz" in error


def test_all_zero_reference(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = root / "test" / name / "vocals.wav"
    audio, rate = soundfile.read(path)
    soundfile.write(path, np.zeros_like(audio), rate, subtype="PCM_16")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "reference is silent" in error


def test_all_zero_estimate(broken, tmp_path, capsys):
    root, estimates, name = broken
    path = estimates / name / "other.wav"
    audio, rate = soundfile.read(path)
    soundfile.write(path, np.zeros_like(audio), rate, subtype="FLOAT")
    code, error = run_cli(root, estimates, tmp_path, capsys)
    assert code == 2 and str(path) in error and "silent" in error


def test_single_track_bsseval_command(dataset, tmp_path, capsys):
    root, estimates = dataset
    name = "Alpha - One"
    out = tmp_path / "one.json"
    assert cli.main(["eval", "bsseval", "--reference", str(root / "test" / name),
                     "--estimates", str(estimates / name), "-o", str(out)]) == 0
    assert "vocals" in capsys.readouterr().out
    mine = report.read_track(out)
    references = np.stack([soundfile.read(root / "test" / name / f"{s}.wav")[0]
                           for s in musdb.SOURCES])
    estimated = np.stack([soundfile.read(estimates / name / f"{s}.wav")[0]
                          for s in musdb.SOURCES])
    sdr = museval.evaluate(references, estimated)[0]
    for index, source in enumerate(musdb.SOURCES):
        np.testing.assert_allclose(mine[source]["SDR"], sdr[index], atol=1e-5 + 1e-6)


def test_report_on_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["eval", "report", str(tmp_path / "nope")]) == 2
    assert "results folder not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A small random htdemucs written as demucs writes its .th files."""
    from fractions import Fraction

    from numba_demucs.debug import reference as torch_reference

    torch_model = torch_reference.build_model(
        "htdemucs", seed=1, channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2,
        bottom_channels=16)
    return torch_reference.save_th(torch_model, tmp_path_factory.mktemp("checkpoint"))


def separated_by_hand(model, mixture, shifts, seed):
    """demucs.api.Separator's recipe, written out: standardise by the mono downmix's mean
    and unbiased std (+1e-8), apply the model, undo the standardisation."""
    import numba_demucs

    mono = mixture.astype(np.float64).mean(axis=0)
    mean = np.float32(mono.mean())
    std = np.float32(np.std(mono, ddof=1)) + np.float32(1e-8)  # float32, as torch adds it
    out = numba_demucs.apply_model(model, ((mixture - mean) / std)[None], shifts=shifts,
                                   split=True, overlap=0.25, seed=seed)[0]
    return out * std + mean


def test_checkpoint_run_scores_what_apply_model_separates(dataset, tiny_checkpoint, tmp_path):
    """--checkpoint end to end: each JSON equals bss_eval (itself checked against museval
    above) on estimates made directly with apply_model (same standardisation, same seeded
    shift), so the runner neither skips the standardisation nor reorders or mislabels
    sources."""
    import numba_demucs
    from numba_demucs.eval import bss_eval

    root, _ = dataset
    output = tmp_path / "model-results"
    assert cli.main(["eval", "musdb", "--root", str(root), "--checkpoint", str(tiny_checkpoint),
                     "--shifts", "1", "--seed", "3", "-o", str(output), "--no-progress"]) == 0
    model = numba_demucs.load_model(tiny_checkpoint)
    for name, seconds in TRACKS.items():
        folder = root / "test" / name
        mixture = soundfile.read(folder / "mixture.wav", dtype="float32")[0].T
        separated = separated_by_hand(model, mixture, shifts=1, seed=3)
        estimates = np.stack([separated[model.sources.index(s)].T for s in musdb.SOURCES])
        references = np.stack([soundfile.read(folder / f"{s}.wav", dtype="float32")[0]
                               for s in musdb.SOURCES])
        theirs = dict(zip(("SDR", "ISR", "SIR", "SAR"), bss_eval(references, estimates)))
        ours = report.read_track(output / "test" / f"{name}.json")
        assert list(ours) == list(musdb.SOURCES)
        for index, source in enumerate(musdb.SOURCES):
            assert len(ours[source]["SDR"]) == int(seconds)
            for metric in ("SDR", "SIR", "ISR", "SAR"):
                # Equal up to the JSON's rounding to 1e-5 dB.
                np.testing.assert_allclose(ours[source][metric], theirs[metric][index],
                                           rtol=0, atol=5e-6 + 1e-9, err_msg=(name, metric))
        # A different seed moves the shift, and the scores see it: the check can fail.
        other = separated_by_hand(model, mixture, shifts=1, seed=4)
        assert np.max(np.abs(other - separated)) > 1e-4


def test_standardisation_makes_separation_follow_gain_and_offset(tiny_checkpoint):
    """The model sees the same standardised input for ``a * mix + b``, so the stems are
    ``a * stems + b``; without the standardisation a nonlinear model breaks this."""
    import numba_demucs

    model = numba_demucs.load_model(tiny_checkpoint)
    rng = np.random.default_rng(4)
    mixture = (0.1 * rng.standard_normal((2, SR))).astype(np.float32)
    options = runner.SeparationOptions(shifts=0)
    base = runner.normalised_apply(model, mixture, options)
    scaled = runner.normalised_apply(model, 7.0 * mixture + 0.25, options)
    np.testing.assert_allclose(scaled, 7.0 * base + 0.25, rtol=0, atol=2e-5 * 7)
    raw = numba_demucs.apply_model(model, (7.0 * mixture + 0.25)[None], shifts=0)[0]
    assert np.max(np.abs(raw - (7.0 * base + 0.25))) > 1e-2  # the check can fail

    constant = np.full((2, SR // 2), 0.3, dtype=np.float32)  # std 0: no division by zero
    silent_out = runner.normalised_apply(model, constant, options)
    assert np.all(np.isfinite(silent_out))
    np.testing.assert_allclose(silent_out, 0.3, atol=1e-5)


def test_unknown_model_name_is_a_clear_error_before_any_track(dataset, tmp_path, capsys):
    root, _ = dataset
    output = tmp_path / "named"
    assert cli.main(["eval", "musdb", "--root", str(root), "-n", "htdemucs_xl", "-o",
                     str(output), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "unknown model name 'htdemucs_xl'; known names: htdemucs, htdemucs_ft" in error
    assert "Traceback" not in error
    assert not any(output.rglob("*.json"))  # failed before any track


def test_report_frames_put_methods_side_by_side(scored, tmp_path):
    pytest.importorskip("pandas")
    methods = {"ours": report.read_results(scored), "again": report.read_results(scored)}
    per_track = report.per_track_frame(methods)
    medians = report.track_medians(methods["ours"])
    assert list(per_track.index.get_level_values("track").unique()) == sorted(TRACKS)
    assert per_track.loc[("Beta - Two", "bass"), ("ours", "SDR")] == \
        medians["Beta - Two"]["bass"]["SDR"]
    assert per_track["ours"].equals(per_track["again"])
    aggregate = report.aggregate_frame(methods)
    assert list(aggregate.index) == [*musdb.SOURCES, "mean of vocals, drums, bass, other"]
    sisec = report.aggregate(methods["ours"])
    assert aggregate.loc["vocals", ("ours", "SIR")] == sisec["vocals"]["SIR"]
    assert aggregate.loc[report.MEAN_LABEL, ("ours", "SDR")] == pytest.approx(
        np.mean([sisec[t]["SDR"] for t in musdb.SOURCES]))
    figure = report.sdr_boxplots(methods)
    assert [axis.get_title() for axis in figure.axes] == list(musdb.SOURCES)
