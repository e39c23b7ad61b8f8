"""Shared helpers: SNR, the reference package (skipped nowhere: the test extra requires it)."""
from __future__ import annotations

import numpy as np
import pytest


def snr_db(reference, estimate):
    """Per-source SNR in dB, ``10 log10(sum ref^2 / sum (ref - est)^2)`` over all but axis 0."""
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(estimate, dtype=np.float64)
    axes = tuple(range(1, reference.ndim))
    noise = (error ** 2).sum(axis=axes)
    signal = (reference ** 2).sum(axis=axes)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(signal / noise)


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")
