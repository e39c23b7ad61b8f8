"""A real dask cluster on loopback for the kill tests (``test_dask_cluster.py``,
``test_dask_separate.py``).

The scheduler and the workers are separate programs of this interpreter (one thread each,
no nanny, so the process a test kills is the worker itself). Every process started here is
killed when the ``cluster`` block ends, whatever happened inside it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, until: float, what: str) -> None:
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _dask(program, *args, log):
    # ``dask scheduler`` / ``dask worker`` run as modules of this interpreter: the ``dask``
    # on the PATH may belong to another Python that imports another numba_demucs.
    return subprocess.Popen([sys.executable, "-m", f"distributed.cli.dask_{program}", *args],
                            stdout=log, stderr=subprocess.STDOUT)


class Cluster:
    """The running cluster: its ``address``, its ``workers`` (Popen) and every process
    to kill at the end (``processes``, commands started by the test included)."""

    def __init__(self, address, workers, processes):
        self.address = address
        self.workers = workers
        self.processes = processes


@contextlib.contextmanager
def cluster(folder, workers: int = 2):
    """A scheduler and ``workers`` workers, their output in ``folder / cluster.log``."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = []
    with open(folder / "cluster.log", "w") as log:
        try:
            processes.append(_dask("scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard", log=log))
            started = [_dask("worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                             "--no-nanny", "--no-dashboard", "--name", f"w{index}",
                             "--local-directory", str(folder / f"w{index}"), log=log)
                       for index in range(workers)]
            processes.extend(started)
            yield Cluster(address, started, processes)
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=10)


def worker_addresses(client, workers, until):
    """``{pid: address}`` of the workers, once all of them have joined."""
    wait_for(lambda: len(client.scheduler_info()["workers"]) == len(workers), until,
             f"{len(workers)} workers")
    # the address that serves each pid: ours, no nanny in between
    pids = {pid: address for address, pid in client.run(os.getpid).items()}
    assert sorted(pids) == sorted(worker.pid for worker in workers)
    return pids


def kill_a_busy_worker(client, workers, pids, until):
    """SIGKILL a worker that holds a task (assigned, not finished); its task keys."""
    def busy_worker():
        processing = client.processing()
        for worker in workers:
            if processing.get(pids[worker.pid]):
                return worker
        return None

    wait_for(lambda: busy_worker() is not None, until, "a busy worker")
    victim = busy_worker()
    in_hand = list(client.processing()[pids[victim.pid]])
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    return in_hand


def task_stories(client, keys):
    """The scheduler's transition log of each key: ``[(start, finish), ...]``."""
    return client.run_on_scheduler(
        lambda dask_scheduler, keys: {key: [(t[1], t[2]) for t in dask_scheduler.story(key)]
                                      for key in keys}, keys=keys)


def assert_rescheduled(stories) -> None:
    """Each killed task went back to processing after the kill and was computed there."""
    assert stories
    for key, story in stories.items():
        into_processing = [index for index, (_, finish) in enumerate(story)
                           if finish == "processing"]
        assert len(into_processing) >= 2, (key, story)  # assigned again after the kill
        assert ("processing", "memory") in story[into_processing[-1]:], (key, story)
