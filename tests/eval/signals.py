"""Generated references and estimates for the evaluation tests (no stored audio).

The tone stems and degradations live in the package (``numba_demucs.eval.synthetic``), where
the notebooks use them too; white noise is only needed here.
"""
from __future__ import annotations

from numba_demucs.eval.synthetic import SAMPLERATE as SR, degrade, lowpass, tones  # noqa: F401


def noise(rng, sources, seconds, channels=2):
    return rng.standard_normal((sources, int(round(seconds * SR)), channels))
