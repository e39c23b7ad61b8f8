"""``eval musdb --dask-scheduler`` on a real dask cluster on loopback, one worker killed mid-run.

A ``dask scheduler`` and two ``dask worker`` processes (one thread each, no nanny, so the
process killed is the worker itself) are started as separate programs, the command runs in
a third process, and as soon as one track's JSON is written a worker holding an unfinished
track is killed with SIGKILL. The scheduler must give that track to the other worker: the
command ends normally, every track has its JSON, each equal to the one of a run without
dask, and no temporary file is left. Everything runs under a time limit and every process
started here is killed in ``finally``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("museval")

from numba_demucs.eval import musdb, report, runner  # noqa: E402
from numba_demucs.eval.synthetic import write_degraded_estimates, write_musdb  # noqa: E402

# Four tracks of 6 s: a few seconds of scoring each, so a worker is busy when killed.
TRACKS = {f"Track {index} - Dask": 6.0 for index in range(4)}
DEADLINE = 120.0  # seconds for the whole cluster part (about 35 s idle; 51 s was seen under load 12)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dask(program, *args, log):
    # ``dask scheduler`` / ``dask worker`` run as modules of this interpreter: the ``dask``
    # on the PATH may belong to another Python that imports another numba_demucs.
    return subprocess.Popen([sys.executable, "-m", f"distributed.cli.dask_{program}", *args],
                            stdout=log, stderr=subprocess.STDOUT)


def _wait(condition, until, what):
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("dask_musdb")
    root = write_musdb(base / "musdb18hq", TRACKS, seed=31)
    estimates = write_degraded_estimates(root, base / "estimates", seed=32, leak=0.1,
                                         noise_level=0.02, filtered=True)
    return root, estimates


def test_killed_worker_track_is_rescheduled(dataset, tmp_path):
    root, estimates = dataset
    local = tmp_path / "local"
    tasks = [runner.TrackTask(track, estimates_dir=str(estimates))
             for track in musdb.find_tracks(root, "test")]
    assert len(runner.run(tasks, local, progress=False).scored) == len(TRACKS)

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    output = tmp_path / "dask"
    log = open(tmp_path / "cluster.log", "w")
    processes = []
    until = time.monotonic() + DEADLINE
    try:
        processes.append(_dask("scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard", log=log))
        workers = [_dask("worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                         "--no-nanny", "--no-dashboard", "--name", f"w{index}",
                         "--local-directory", str(tmp_path / f"w{index}"), log=log)
                   for index in range(2)]
        processes.extend(workers)
        with distributed.Client(address, timeout="30s") as client:
            _wait(lambda: len(client.scheduler_info()["workers"]) == 2, until, "two workers")
            # worker address by the pid of the process that serves it: ours, no nanny between
            pids = {pid: addr for addr, pid in client.run(os.getpid).items()}
            assert sorted(pids) == sorted(worker.pid for worker in workers)

            command = subprocess.Popen(
                [sys.executable, "-m", "numba_demucs.cli", "eval", "musdb", "--root", str(root),
                 "--estimates", str(estimates), "-o", str(output), "--no-progress",
                 "--dask-scheduler", address],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            processes.append(command)
            folder = output / "test"
            _wait(lambda: command.poll() is not None
                  or (folder.is_dir() and any(folder.glob("*.json"))), until, "a first JSON")
            assert command.poll() is None, "the run ended before a worker could be killed"

            # a worker with a track in hand (assigned, not finished) is killed
            def busy_worker():
                processing = client.processing()
                for worker in workers:
                    if processing.get(pids[worker.pid]):
                        return worker
                return None

            _wait(lambda: busy_worker() is not None, until, "a busy worker")
            victim = busy_worker()
            in_hand = list(client.processing()[pids[victim.pid]])
            done_before = len(list(folder.glob("*.json")))
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            assert done_before < len(TRACKS)

            out, err = command.communicate(timeout=max(1.0, until - time.monotonic()))
            assert command.returncode == 0, err
            _wait(lambda: len(client.scheduler_info()["workers"]) == 1, until,
                  "the scheduler to drop the killed worker")
            # the scheduler's transition log: each track the killed worker had in hand went
            # back to processing, on the other worker, and its result was computed there
            stories = client.run_on_scheduler(
                lambda dask_scheduler, keys: {key: [(t[1], t[2]) for t in
                                                    dask_scheduler.story(key)]
                                              for key in keys}, keys=in_hand)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        log.close()

    assert in_hand
    for key, story in stories.items():
        into_processing = [index for index, (_, finish) in enumerate(story)
                           if finish == "processing"]
        assert len(into_processing) >= 2, (key, story)  # assigned again after the kill
        assert ("processing", "memory") in story[into_processing[-1]:], (key, story)
    assert f"{len(TRACKS)} scored" in err
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.json" for name in TRACKS)
    for name in TRACKS:
        document = json.loads((folder / f"{name}.json").read_text())  # complete JSON
        assert [target["name"] for target in document["targets"]] == list(musdb.SOURCES)
        ours, reference = (report.read_track(folder / f"{name}.json"),
                           report.read_track(local / "test" / f"{name}.json"))
        for target in reference:
            assert set(reference[target]) >= {"SDR", "SIR", "ISR", "SAR", "uSDR", "SI-SDR"}
            for metric in reference[target]:
                values = np.atleast_1d(reference[target][metric])
                assert len(values) in (1, 6) and np.isfinite(values).all()  # 6 frames or 1
                np.testing.assert_array_equal(ours[target][metric], reference[target][metric])
    assert not [p for p in output.rglob("*") if p.name.endswith(".tmp")]
    assert os.listdir(output) == ["test"]
