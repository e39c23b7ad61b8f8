"""Who uses the cores: segments in threads, or BLAS inside each matrix product.

With ``jobs`` segments in flight each GEMM runs single-threaded, so the cores are not
oversubscribed (OpenBLAS would otherwise start its own threads from every worker, and its
idle threads spin). The limit is set through threadpoolctl for the duration of the
parallel section and restored afterwards, whatever BLAS NumPy was built with.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    return cpu_count()


@contextlib.contextmanager
def blas_threads(count: int):
    """Limit NumPy's BLAS to ``count`` threads inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=count, user_api="blas"):
        yield


# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks up to this size come from the heap instead of a fresh mmap: the frequency branch's
# tensors are 33 MB (48 x 512 x 336 float32), just above glibc's largest dynamic threshold
# (32 MiB), so each one was a new mapping whose every 4 KiB page faulted on first write.
_MMAP_THRESHOLD = 256 << 20
# Freed heap is kept up to this much (instead of 128 KiB) so that the next segment's
# temporaries reuse pages already mapped; apply_model hands it back when it finishes.
_TRIM_THRESHOLD = 1 << 30


def _libc():
    global _libc_handle
    if _libc_handle is None:
        try:
            import ctypes

            _libc_handle = ctypes.CDLL("libc.so.6")
            _libc_handle.mallopt  # noqa: B018 -- glibc only
            _libc_handle.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            _libc_handle = False
    return _libc_handle


def tune_malloc(threads: bool, heap: bool = True):
    """Set glibc's allocator up for a separation: large temporaries from a reused heap and,
    with ``threads``, one arena for every thread.

    Without this, every tensor above 32 MiB is a fresh mapping that page-faults on first
    touch (measured: about 7 % of a segment's time, the GLU and GELU outputs costing 3-6x
    their arithmetic), and with segments in threads glibc gives each thread its own arena
    that keeps the temporaries freed into it for that thread alone, so the peak resident
    memory grew with the number of threads beyond the data in use (one arena: no measurable
    lock contention for a process that allocates few, large blocks). Each setting is left
    alone when the user set its ``MALLOC_*`` environment variable; a no-op where the C
    library is not glibc. ``heap=False`` sets only the arena: ``--stream``, whose memory
    must not grow with the track, measured +90 MiB from 15 s to 135 s with the heap kept
    (fragmentation over many segments) and none without.
    """
    global _heap_tuned, _arena_shared
    libc = _libc()
    if not libc:
        return
    if heap and not _heap_tuned:
        _heap_tuned = True
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    if threads and not _arena_shared:
        _arena_shared = True
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(_M_ARENA_MAX, 1)


def release_free_memory():
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``)."""
    libc = _libc()
    if libc and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        libc.malloc_trim(0)


_libc_handle = None
_heap_tuned = False
_arena_shared = False


# -- a spare core for a segment that runs alone --------------------------------------------
#
# With segments in threads on single-threaded BLAS, a separation whose number of segments
# is not a multiple of the cores ends with a segment running alone while the other cores
# idle (60 s: the 11th of 11 segments; 20 s is 4 and 240 s is 42, which pair up). Such a
# segment hands independent pieces of its work to a helper thread: the frequency and time
# branches of a layer, attention heads, STFT rows. Every piece is exactly the same sequence of calls (same shapes, same
# single-threaded BLAS, same kernels) whichever thread runs it, so the output does not
# depend on whether a helper was used: it may be decided at run time, from how many
# segments are running at that moment.

_spare_lock = threading.Lock()
_segments_running = 0  # segment calls in flight in run_calls, on single-threaded BLAS
_helper_pool = None  # (pid, ThreadPoolExecutor)
_helper_thread = threading.local()
_helpers_busy = 0  # helper tasks running now
handed_off = 0  # pieces of work given to a helper so far (what tests check was exercised)


@contextlib.contextmanager
def segment_running():
    """Count a segment call (on single-threaded BLAS) as running for its duration."""
    global _segments_running
    with _spare_lock:
        _segments_running += 1
    try:
        yield
    finally:
        with _spare_lock:
            _segments_running -= 1


def _spare_helper():
    """The helper pool when a core has no segment and this thread may hand work off, else None.

    Only segment threads counted by ``segment_running`` hand work off (never a helper:
    a helper that waited for a task queued behind itself would deadlock), and never under
    a trace capture (its records must come in PyTorch's order, from the segment's thread).
    """
    global _helper_pool
    if _segments_running == 0 or getattr(_helper_thread, "active", False):
        return None
    from . import trace

    if trace.enabled():
        return None
    cores = cpu_count()
    if _segments_running >= cores or _runnable_elsewhere() + _segments_running >= cores:
        return None
    with _spare_lock:
        # a forked child inherits the pool but not its thread: it needs its own
        if _helper_pool is None or _helper_pool[0] != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            _helper_pool = (os.getpid(), ThreadPoolExecutor(
                cores - 1, thread_name_prefix="numba-demucs-helper", initializer=_mark_helper))
    return _helper_pool[1]


def _runnable_elsewhere() -> int:
    """Threads on the machine ready to run now besides this process's segment calls and
    busy helpers (``/proc/loadavg``'s running count; 0 where it cannot be read).

    A core is only spare if nothing else wants it: on a machine loaded by other processes
    (load 9-15 on 2 cores) a 60 s separation measured slower with the helper than without
    (docs/benchmarks.md, issue 16): each hand-off ends waiting for a thread that the
    scheduler may not run for a while."""
    try:
        with open("/proc/loadavg") as file:
            running = int(file.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - _segments_running - _helpers_busy)


def _count_hand_off():
    global handed_off
    with _spare_lock:
        handed_off += 1


def _as_helper(work):
    global _helpers_busy
    with _spare_lock:
        _helpers_busy += 1
    try:
        return work()
    finally:
        with _spare_lock:
            _helpers_busy -= 1


def _mark_helper():
    _helper_thread.active = True


def pair(first, second, aside=1):
    """``(first(), second())``, the one of index ``aside`` on a helper thread when a core is
    spare (give it the smaller: the larger then shares its own pieces with the helper once
    it is free). The two must be independent (neither reads what the other writes). Run in
    turn otherwise, ``first`` then ``second``: the order of the untouched code."""
    pool = _spare_helper()
    if pool is None:
        a = first()
        return a, second()
    _count_hand_off()
    here, there = (second, first) if aside == 0 else (first, second)
    future = pool.submit(_as_helper, there)
    try:
        mine = here()
    finally:
        theirs = future.result()
    return (theirs, mine) if aside == 0 else (mine, theirs)


def share(work, count: int) -> None:
    """``work(i)`` for ``i`` in ``range(count)`` (independent items), a spare core taking
    items from the same queue as this thread; in order on this thread when none is spare."""
    pool = _spare_helper() if count > 1 else None
    if pool is None:
        for i in range(count):
            work(i)
        return
    counter = itertools.count()
    lock = threading.Lock()

    def take():
        with lock:
            return next(counter)

    def drain():
        i = take()
        while i < count:
            work(i)
            i = take()

    _count_hand_off()
    future = pool.submit(_as_helper, drain)
    try:
        drain()
    finally:
        # a helper still busy elsewhere (queued) has nothing left to take: drop it
        if not future.cancel():
            future.result()
