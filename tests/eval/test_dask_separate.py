"""``separate --dask-scheduler`` on a real dask cluster on loopback, one worker killed mid-run.

The same cluster as ``test_dask_cluster.py`` (a ``dask scheduler`` and two ``dask worker``
processes of this interpreter, one thread each, no nanny): ``numba-demucs separate`` runs in
a third process with a small random htdemucs, and once one track's stems are all in place a
worker holding an unfinished track is SIGKILLed. The scheduler must run that track on the
other worker: the command exits 0 with the local summary, every stem equals the one of a
local ``separate`` run byte for byte, and no temporary file is left. Bounded in time; every
process started here is killed at the end (``dask_loopback.cluster``).
"""
from __future__ import annotations

import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
import soundfile

distributed = pytest.importorskip("distributed")
pytest.importorskip("demucs")

from numba_demucs import cli as package_cli  # noqa: E402

from dask_loopback import (assert_rescheduled, cluster, kill_a_busy_worker,  # noqa: E402
                           task_stories, wait_for, worker_addresses)

TRACKS = [f"song{index}" for index in range(6)]
SECONDS = 5.0
SR = 44100
DEADLINE = 120.0  # seconds for the cluster part (26 s seen under load; a hang must not stall CI)
STEMS = ("drums", "bass", "other", "vocals")


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    from numba_demucs.debug import reference as torch_reference

    base = tmp_path_factory.mktemp("dask_separate")
    model = torch_reference.build_model(
        "htdemucs", seed=1, channels=8, dconv_comp=4, segment=Fraction(1, 2), t_layers=2,
        bottom_channels=16)
    checkpoint = torch_reference.save_th(model, base)
    inputs = base / "in"
    inputs.mkdir()
    rng = np.random.default_rng(8)
    for name in TRACKS:
        audio = 0.1 * rng.standard_normal((int(SECONDS * SR), 2))
        soundfile.write(inputs / f"{name}.wav", audio, SR, subtype="PCM_16")
    return checkpoint, sorted(str(p) for p in inputs.iterdir())


def test_killed_worker_track_is_separated_again(material, tmp_path, capsys):
    checkpoint, files = material
    local = tmp_path / "local"
    assert package_cli.main(["separate", "--checkpoint", str(checkpoint), "-o", str(local),
                             "--shifts", "1", "--seed", "2", *files]) == 0
    local_out = capsys.readouterr().out
    label = checkpoint.stem.split("-")[0]

    output = tmp_path / "dask"
    folder = output / label
    until = time.monotonic() + DEADLINE
    with cluster(tmp_path) as running, \
            distributed.Client(running.address, timeout="30s") as client:
        pids = worker_addresses(client, running.workers, until)
        command = subprocess.Popen(
            [sys.executable, "-m", "numba_demucs.cli", "separate", "--checkpoint",
             str(checkpoint), "-o", str(output), "--shifts", "1", "--seed", "2",
             "--dask-scheduler", running.address, *files],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running.processes.append(command)

        def complete_tracks():
            return [name for name in TRACKS
                    if all((folder / name / f"{stem}.wav").is_file() for stem in STEMS)]

        wait_for(lambda: command.poll() is not None or complete_tracks(), until,
                 "a first separated track")
        assert command.poll() is None, "the run ended before a worker could be killed"

        in_hand = kill_a_busy_worker(client, running.workers, pids, until)
        assert len(complete_tracks()) < len(TRACKS)

        out, err = command.communicate(timeout=max(1.0, until - time.monotonic()))
        assert command.returncode == 0, err
        stories = task_stories(client, in_hand)

    assert_rescheduled(stories)
    # the local summary line, and the same layout
    assert f"{len(TRACKS)} of {len(TRACKS)} tracks separated" in local_out
    assert f"{len(TRACKS)} of {len(TRACKS)} tracks separated" in out
    assert sorted(p.name for p in folder.iterdir()) == sorted(TRACKS)
    for name in TRACKS:
        assert sorted(p.name for p in (folder / name).iterdir()) == sorted(
            f"{stem}.wav" for stem in STEMS)
        for stem in STEMS:
            ours = (folder / name / f"{stem}.wav").read_bytes()
            theirs = (local / label / name / f"{stem}.wav").read_bytes()
            assert ours == theirs, (name, stem)
        data, _ = soundfile.read(folder / name / "vocals.wav")
        assert data.shape == (int(SECONDS * SR), 2) and np.abs(data).max() > 0
    assert not [p for p in output.rglob("*") if p.name.endswith(".tmp")]


def test_a_bad_track_fails_alone_on_the_cluster(material, tmp_path):
    """A file that is not audio: one line naming it, the others separated, exit 2."""
    checkpoint, files = material
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    until = time.monotonic() + DEADLINE
    with cluster(tmp_path, workers=1) as running:
        command = subprocess.run(
            [sys.executable, "-m", "numba_demucs.cli", "separate", "--checkpoint",
             str(checkpoint), "-o", str(tmp_path / "out"), "--dask-scheduler", running.address,
             files[0], str(bad)],
            capture_output=True, text=True, timeout=max(1.0, until - time.monotonic()))
    assert command.returncode == 2, command.stderr
    assert str(bad) in command.stderr and "Traceback" not in command.stderr
    assert "1 of 2 tracks separated; failed: " + str(bad) in command.stdout
    label = checkpoint.stem.split("-")[0]
    assert sorted(p.name for p in (tmp_path / "out" / label / "song0").iterdir()) == sorted(
        f"{stem}.wav" for stem in STEMS)
