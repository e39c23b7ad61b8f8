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


# Sums whose order the compiler may choose: only LLVM's ``reassoc`` flag, which lets it keep a
# float64 sum in vector lanes (a single running sum is a serial chain of dependent additions;
# measured 6x slower for a GroupNorm's moments). The order changes a float64 sum in its last
# bits, below what a float32 or float64 result shows but in rare roundings; no other fast-math
# flag (no contraction into FMAs, no assumptions about NaN, infinities or signed zeros).
# Inlined callees keep their own (strict) flags, so arithmetic a reduction calls, such as
# exp1_f32, rounds as everywhere else.
REDUCTION_FLAGS = dict(JIT_FLAGS, fastmath={"reassoc"})


def reduction_kernel(function):
    """Compile a summing `function` with the project's flags plus ``reassoc`` (above)."""
    return njit(**REDUCTION_FLAGS)(function)
