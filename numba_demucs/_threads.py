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


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def share_malloc_arena():
    """Make threads created from now on allocate from glibc's main arena.

    By default every thread that allocates gets its own arena (up to 8 per core), and each
    arena keeps the memory freed into it for that thread alone: with segments in threads
    the per-segment temporaries (tens of MB each) were held once per arena, and the peak
    resident memory grew with the number of threads beyond the data in use. This process
    allocates few, large blocks, so sharing one arena costs no measurable lock contention.
    A no-op where the C library is not glibc, or when MALLOC_ARENA_MAX is set by the user.
    """
    global _arena_shared
    if _arena_shared or "MALLOC_ARENA_MAX" in os.environ:
        return
    _arena_shared = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


_arena_shared = False
