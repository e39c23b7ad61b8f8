"""Generated references and estimates for the evaluation tests (no stored audio).

The tone stems and degradations live in the package (``numba_demucs.eval.synthetic``), where
the notebooks use them too; white noise is only needed here.
"""
from __future__ import annotations

import numpy as np

from numba_demucs.eval.synthetic import SAMPLERATE as SR, degrade, lowpass, tones  # noqa: F401


def noise(rng, sources, seconds, channels=2):
    return rng.standard_normal((sources, int(round(seconds * SR)), channels))


# Above this 1-norm condition number of museval's regularised Gram matrix its ISR, SIR and
# SAR are dominated by rounding (they move between BLAS builds and CPUs): the tests then
# compare SDR and the NaN pattern only (see test_bsseval.py).
WELL_CONDITIONED = 1e12


def museval_condition(references):
    """Condition number of museval's ``G + eps I`` for ``references (sources, samples, channels)``."""
    import math

    import scipy.linalg
    from museval import metrics as museval_metrics
    from scipy.linalg import lapack

    gram, _ = museval_metrics._compute_reference_correlations(references, 512)
    gram = museval_metrics._reshape_G(gram)
    gram.flat[:: gram.shape[0] + 1] += np.finfo(float).eps
    norm = np.linalg.norm(gram, 1)
    lu, _ = scipy.linalg.lu_factor(gram, overwrite_a=True, check_finite=False)
    rcond, info = lapack.dgecon(lu, norm, norm="1")
    assert info == 0
    return math.inf if rcond == 0 else 1.0 / rcond


