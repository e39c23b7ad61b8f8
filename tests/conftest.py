"""Shared by the test modules: the per-source SNR the parity tests assert on, and the sign
flips of the mutation tests."""
from __future__ import annotations

from numba_demucs.debug.stats import snr_db  # noqa: F401  (imported by the test modules)


def sign_flips_left_unnoticed(model, run, expected, threshold_db, ignore=()):
    """Flip the sign of each of ``model``'s parameter tensors in turn (restored after) and
    run ``run(model)``; ``(names, unnoticed)``: every tensor's name, and ``{name: SNR}`` of
    the flips whose worst-source SNR against ``expected`` stayed at or above
    ``threshold_db``, except names ending with one of ``ignore``."""
    names, unnoticed = [], {}
    for name, array in model.parameters():
        names.append(name)
        original = array.copy()
        array *= -1
        try:
            snr = snr_db(expected, run(model)).min()
        finally:
            array[...] = original
        if snr >= threshold_db and not name.endswith(tuple(ignore)):
            unnoticed[name] = snr
    return names, unnoticed
