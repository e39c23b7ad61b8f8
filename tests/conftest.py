"""Shared by the test modules: the per-source SNR the parity tests assert on."""
from __future__ import annotations

from numba_demucs.debug.stats import snr_db  # noqa: F401  (imported by the test modules)
