"""Numba kernels: small pure functions on contiguous float32/float64 arrays."""
