"""A MUSDB run goes on past a bad track: one line naming the file, the others scored, exit 2.

The case of issue 20: three tracks, the middle one's estimate folder lacks ``bass.wav``.
Every kind of bad input (missing, unreadable, other length or channel count, NaN) is
reported the same way and leaves no JSON (so the next run tries the track again).
"""
from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
import soundfile

from numba_demucs.errors import NumbaDemucsError
from numba_demucs.eval import cli, musdb, report, runner
from numba_demucs.eval.synthetic import write_track

import signals  # noqa: E402

SR = signals.SR
TRACKS = ("Alpha - One", "Beta - Two", "Gamma - Three")
BAD = "Beta - Two"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """ROOT/test/TRACK/*.wav for three 1.5 s tracks and ESTIMATES/TRACK/SOURCE.wav."""
    base = tmp_path_factory.mktemp("batch")
    root, estimates = base / "musdb18hq", base / "estimates"
    rng = np.random.default_rng(5)
    for name in TRACKS:
        write_track(root, name, 1.5, rng)
        references, _ = musdb.load_stems(musdb.Track(name, "test", str(root / "test" / name)),
                                         musdb.SOURCES)
        estimated = signals.degrade(rng, references.astype(np.float64), leak=0.2,
                                    noise_level=0.02)
        (estimates / name).mkdir(parents=True)
        for source, audio in zip(musdb.SOURCES, estimated):
            soundfile.write(estimates / name / f"{source}.wav", audio, SR, subtype="FLOAT")
    return root, estimates


@pytest.fixture
def data(pristine, tmp_path):
    """A private copy to damage."""
    root, estimates = pristine
    shutil.copytree(root, tmp_path / "root")
    shutil.copytree(estimates, tmp_path / "est")
    return tmp_path / "root", tmp_path / "est", tmp_path / "out"


def run_cli(root, estimates, output, capsys, *extra):
    code = cli.main(["eval", "musdb", "--root", str(root), "--estimates", str(estimates),
                     "-o", str(output), "--no-progress", *extra])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert not any("Traceback" in line for line in lines)
    return code, lines, captured.out


def scored_names(output):
    return sorted(p.stem for p in (output / "test").iterdir())


def test_three_tracks_one_missing_estimate(data, capsys):
    root, estimates, output = data
    missing = estimates / BAD / "bass.wav"
    missing.unlink()
    code, lines, out = run_cli(root, estimates, output, capsys)
    assert code == 2
    assert lines == [f"numba-demucs: error: {missing}: missing estimate for source 'bass'",
                     f"2 scored, 1 failed: {BAD}"]
    # The track after the bad one is scored too; nothing else is in the folder.
    assert sorted(p.name for p in (output / "test").iterdir()) == [
        "Alpha - One.json", "Gamma - Three.json"]
    for name in ("Alpha - One", "Gamma - Three"):
        assert list(report.read_track(output / "test" / f"{name}.json")) == list(musdb.SOURCES)
    assert "SiSEC 2018 aggregate" in out  # the aggregate of the two good tracks is still printed

    # Resume: once the file is back, only the failed track is scored.
    shutil.copy(estimates / "Alpha - One" / "bass.wav", missing)
    code, lines, _ = run_cli(root, estimates, output, capsys)
    assert code == 0 and lines == [f"1 scored, 2 skipped (already in {output})"]
    assert scored_names(output) == sorted(TRACKS)


def damage(kind, root, estimates):
    """Damage one file of BAD as ``kind`` says; returns (the file, words the error must say)."""
    track = root / "test" / BAD
    if kind == "unreadable estimate":
        path = estimates / BAD / "vocals.wav"
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        return path, "not a readable audio file"
    if kind == "short estimate":
        path = estimates / BAD / "drums.wav"
        audio, rate = soundfile.read(path)
        soundfile.write(path, audio[:-7], rate, subtype="FLOAT")
        return path, f"{audio.shape[0] - 7} samples, the references have {audio.shape[0]}"
    if kind == "long reference":
        path = track / "other.wav"
        audio, rate = soundfile.read(path)
        soundfile.write(path, np.concatenate([audio, audio[:3]]), rate, subtype="PCM_16")
        return path, f"{audio.shape[0] + 3} samples"
    if kind == "mono estimate":
        path = estimates / BAD / "bass.wav"
        audio, rate = soundfile.read(path)
        soundfile.write(path, audio[:, 0], rate, subtype="FLOAT")
        return path, "1 channels, the references have 2"
    if kind == "NaN estimate":
        path = estimates / BAD / "other.wav"
        audio, rate = soundfile.read(path)
        audio[100, 1] = audio[2000, 0] = np.nan
        soundfile.write(path, audio, rate, subtype="FLOAT")
        return path, "2 NaN or infinite samples (the first at sample 100, channel 1)"
    if kind == "infinite reference":
        path = track / "vocals.wav"
        audio, rate = soundfile.read(path)
        audio[50, 0] = np.inf
        soundfile.write(path, audio, rate, subtype="FLOAT")
        return path, "1 NaN or infinite samples (the first at sample 50, channel 0)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["unreadable estimate", "short estimate", "long reference",
                                  "mono estimate", "NaN estimate", "infinite reference"])
def test_every_kind_of_bad_file_is_one_line_and_the_batch_goes_on(kind, data, capsys):
    root, estimates, output = data
    path, words = damage(kind, root, estimates)
    code, lines, _ = run_cli(root, estimates, output, capsys)
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(f"numba-demucs: error: {path}: ") and words in lines[0], lines
    assert lines[1] == f"2 scored, 1 failed: {BAD}"
    assert scored_names(output) == ["Alpha - One", "Gamma - Three"]
    assert not list((output / "test").glob(".*"))  # no temporary file


def test_bad_mixture_is_named_before_the_model_runs(data):
    """With a model (here a checkpoint that is never reached), the mixture is checked against
    the stems first: channels, then NaN."""
    root, _, _ = data
    path = root / "test" / BAD / "mixture.wav"
    audio, rate = soundfile.read(path)
    soundfile.write(path, audio[:, 0], rate, subtype="FLOAT")
    track = musdb.find_tracks(root, names=[BAD])[0]
    task = runner.TrackTask(track, checkpoint="/nonexistent/model.th")
    with pytest.raises(NumbaDemucsError, match=re.escape(f"{path}: 1 channels, the stems have 2")):
        runner.score_track(task)
    audio[10, 0] = np.nan
    soundfile.write(path, audio, rate, subtype="FLOAT")
    with pytest.raises(NumbaDemucsError, match=re.escape(f"{path}: 1 NaN or infinite samples")):
        runner.score_track(task)


@pytest.mark.parametrize("kind", ["rate", "channels", "length"])
def test_one_check_for_stems_estimates_and_mixture(kind, data):
    """musdb.check_matches serves the reference stems, the estimates and the mixture: the
    same sentence names the file, what differs, and what it was compared with."""
    root, estimates, _ = data
    folder = root / "test" / BAD

    def damaged(path):
        audio, rate = soundfile.read(path)
        if kind == "rate":
            soundfile.write(path, audio, 48000, subtype="FLOAT")
            return "sample rate 48000 Hz, {} 44100 Hz"
        if kind == "channels":
            soundfile.write(path, audio[:, 0], rate, subtype="FLOAT")
            return "1 channels, {} 2"
        soundfile.write(path, audio[:-3], rate, subtype="FLOAT")
        return f"{len(audio) - 3} samples, {{}} {len(audio)}"

    track = musdb.find_tracks(root, names=[BAD])[0]
    cases = [
        (folder / "mixture.wav", "the stems have",
         runner.TrackTask(track, checkpoint="/nonexistent/model.th")),
        (estimates / BAD / "drums.wav", "the references have",
         runner.TrackTask(track, estimates_dir=str(estimates))),
        (folder / "other.wav", f"{folder / 'vocals.wav'} has",
         runner.TrackTask(track, estimates_dir=str(estimates))),
    ]
    for path, against, task in cases:
        backup = path.read_bytes()
        message = f"{path}: " + damaged(path).format(against)
        with pytest.raises(NumbaDemucsError, match=f"^{re.escape(message)}$"):
            runner.score_track(task)
        path.write_bytes(backup)


def test_process_pool_reports_the_failure_and_scores_the_rest(data):
    root, estimates, output = data
    (estimates / BAD / "bass.wav").unlink()
    tasks = [runner.TrackTask(t, estimates_dir=str(estimates))
             for t in musdb.find_tracks(root)]
    summary = runner.run(tasks, output, jobs=2, progress=False)
    assert sorted(t.name for t in summary.scored) == ["Alpha - One", "Gamma - Three"]
    failure, = summary.failed
    assert failure.track.name == BAD and str(estimates / BAD / "bass.wav") in failure.message
    assert scored_names(output) == ["Alpha - One", "Gamma - Three"]


def test_error_line_is_printed_above_the_progress_bar(data):
    """On a terminal the bar is redrawn below the message: after removing the terminal's
    control sequences, the message is a line of its own."""
    from rich.console import Console

    root, estimates, output = data
    missing = estimates / BAD / "bass.wav"
    missing.unlink()
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=60, color_system=None)
    tasks = [runner.TrackTask(t, estimates_dir=str(estimates))
             for t in musdb.find_tracks(root)]
    summary = runner.run(tasks, output, console=console)
    assert [f.track.name for f in summary.failed] == [BAD]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", screen.getvalue()).replace("\r", "\n")
    lines = [line.strip() for line in text.splitlines()]
    # Longer than the 60-column console, and still not wrapped.
    assert f"numba-demucs: error: {missing}: missing estimate for source 'bass'" in lines


def test_each_json_holds_the_whole_track_metrics_of_its_files(pristine, tmp_path, capsys):
    """uSDR by the MDX formula on the files as soundfile reads them, to the JSON's 1e-5 dB."""
    root, estimates = pristine
    output = tmp_path / "out"
    code, _, printed = run_cli(root, estimates, output, capsys)
    assert code == 0 and "MDX 2021 aggregate" in printed
    for name in TRACKS:
        scores = report.read_track(output / "test" / f"{name}.json")
        for source in musdb.SOURCES:
            s = soundfile.read(root / "test" / name / f"{source}.wav")[0]
            e = soundfile.read(estimates / name / f"{source}.wav")[0]
            usdr = 10 * np.log10((np.sum(s ** 2) + 1e-7) / (np.sum((s - e) ** 2) + 1e-7))
            assert abs(scores[source]["uSDR"] - usdr) <= 5e-6 + 1e-9, (name, source)
            assert np.isfinite(scores[source]["SI-SDR"])
