"""Resuming a MUSDB run after the process is really killed (SIGKILL) or interrupted (SIGINT).

The run is the installed command line in a subprocess, stopped as soon as the first
track's JSON appears. The tracks are long enough (20 s, several tenths of a second of
scoring each) that the signal lands while a later track is being scored; the test
nevertheless accepts any number of finished tracks between one and two, and what it
asserts does not depend on where the signal lands: every JSON left behind is complete and
correct, no temporary file survives, and the next run scores exactly the missing tracks
and leaves the finished ones untouched.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from numba_demucs.eval import musdb, runner

import signals  # noqa: E402

SR = signals.SR
TRACKS = {"Delta - Four": 20.0, "Epsilon - Five": 20.0, "Zeta - Six": 20.0}


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("musdb_long")
    root, estimates = base / "musdb18hq", base / "estimates"
    rng = np.random.default_rng(23)
    for name, seconds in TRACKS.items():
        references = signals.tones(rng, 4, seconds, floor=0.05) * 0.2
        (root / "test" / name).mkdir(parents=True)
        (estimates / name).mkdir(parents=True)
        estimated = signals.degrade(rng, references, leak=0.1, noise_level=0.01)
        for source, reference, estimate in zip(musdb.SOURCES, references, estimated):
            soundfile.write(root / "test" / name / f"{source}.wav", reference, SR,
                            subtype="FLOAT")
            soundfile.write(estimates / name / f"{source}.wav", estimate, SR, subtype="FLOAT")
    return root, estimates


def command(root, estimates, output):
    return [sys.executable, "-m", "numba_demucs.cli", "eval", "musdb", "--root", str(root),
            "--estimates", str(estimates), "-o", str(output), "--jobs", "1", "--no-progress"]


def start_and_stop_after_first_track(root, estimates, output, signal_number, log):
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal would.
    process = subprocess.Popen(command(root, estimates, output), stdout=log,
                               stderr=subprocess.STDOUT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    folder = output / "test"
    while process.poll() is None:
        if folder.is_dir() and any(folder.glob("*.json")):
            process.send_signal(signal_number)
            break
        time.sleep(0.002)
    return process.wait(timeout=120)


def snapshot(folder):
    """Every final JSON: identity (inode, mtime) and content."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
            for path in folder.glob("*.json")}


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT],
                         ids=["SIGKILL", "SIGINT"])
def test_stopped_run_resumes_with_only_the_missing_tracks(long_dataset, tmp_path,
                                                          signal_number):
    root, estimates = long_dataset
    output = tmp_path / "results"
    with open(tmp_path / "first.log", "w") as log:
        code = start_and_stop_after_first_track(root, estimates, output, signal_number, log)
    first_log = (tmp_path / "first.log").read_text()
    if signal_number == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, first_log
        assert "interrupted" in first_log and "Traceback" not in first_log
        # Ctrl-C is handled: nothing half-written may remain, not even a temporary file.
        assert not list((output / "test").glob(".*")), first_log

    done = snapshot(output / "test")
    assert 1 <= len(done) < len(TRACKS), (sorted(done), first_log)
    tracks = {track.name: track for track in musdb.find_tracks(root)}
    for name, (_, _, content) in done.items():
        # Complete and correct: the same document as scoring the track here and now.
        track = tracks[name[: -len(".json")]]
        expected = runner.score_track(runner.TrackTask(track, estimates_dir=str(estimates)))
        assert json.loads(content) == expected

    again = subprocess.run(command(root, estimates, output), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    missing = len(TRACKS) - len(done)
    assert f"{missing} scored, {len(done)} skipped" in again.stderr
    after = snapshot(output / "test")
    assert sorted(after) == sorted(f"{name}.json" for name in TRACKS)
    for name, identity in done.items():
        assert after[name] == identity  # not rewritten: same inode, mtime and bytes
    assert not list((output / "test").glob(".*"))  # a killed writer's temporary is cleaned


def test_only_temporaries_of_dead_writers_are_removed(long_dataset, tmp_path):
    root, estimates = long_dataset
    tracks = musdb.find_tracks(root)
    output = tmp_path / "results"
    folder = output / "test"
    folder.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)  # that process has exited
    assert dead_pid != os.getpid()
    name = f"{tracks[0].name}.json"
    dead = folder / f".{name}.{dead_pid}-k1ll3d.tmp"
    live = folder / f".{name}.{os.getpid()}-w0rk1n.tmp"
    dead.write_text('{"targets": [')
    live.write_text('{"targets": [')
    removed = runner.remove_stale_temporaries(output, tracks)
    assert removed == [dead]
    assert not dead.exists() and live.exists()
