"""One place for the flags every Numba kernel is compiled with.

`cache=True` so a second process starts without recompiling; `nogil=True` so
segments can run in threads; no `fastmath`, because parity with PyTorch depends on
IEEE semantics (no reassociation, no flush-to-zero).
"""
from numba import njit

JIT_FLAGS = dict(cache=True, nogil=True, fastmath=False)


def kernel(function):
    """Compile `function` with the project's flags."""
    return njit(**JIT_FLAGS)(function)
