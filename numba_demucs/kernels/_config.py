"""One place for the flags every Numba kernel is compiled with.

`cache=True` so a second process starts without recompiling; `nogil=True` so
segments can run in threads; no `fastmath`, because parity with PyTorch depends on
IEEE semantics (no reassociation, no flush-to-zero). ``error_model="numpy"`` makes a
division by zero give inf/nan as IEEE (and NumPy) do instead of raising: the check that
raises is a branch in every division, which keeps LLVM from vectorising any loop that
divides.
"""
from numba import njit

JIT_FLAGS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def kernel(function):
    """Compile `function` with the project's flags."""
    return njit(**JIT_FLAGS)(function)
