"""Who uses the cores: segments in threads, or BLAS inside each matrix product.

With ``jobs`` segments in flight each GEMM runs single-threaded, so the cores are not
oversubscribed (OpenBLAS would otherwise start its own threads from every worker, and its
idle threads spin). The limit is set through threadpoolctl for the duration of the
parallel section and restored afterwards, whatever BLAS NumPy was built with.
"""
from __future__ import annotations

import contextlib
import os


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
