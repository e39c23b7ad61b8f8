"""Every Open-Unmix parameter tensor matters: flipping the sign of any one breaks parity
(the float64 output falls below 100 dB, the float32 bar, against PyTorch)."""
import numpy as np

from numba_demucs.debug import reference_umx
from numba_demucs.debug.reference import music_like_signal

from ..conftest import snr_db
from .test_openunmix import ours


def test_flipping_any_parameter_breaks_parity():
    separator = reference_umx.build_separator("umxl", seed=7, hidden_size=8)
    mix = music_like_signal(1.0, seed=4)
    exact = reference_umx.run_reference(separator, mix, dtype=np.float64)
    model = ours(separator, np.float64)
    assert np.all(snr_db(exact, model.separate(mix)) >= 200.0)
    names = [name for name, _ in model.parameters()]
    # every tensor of every target: 4 scalings, 3 Linear, 3 x 4 BatchNorm, 3 x 2 x 4 LSTM
    assert len(names) == 4 * (4 + 3 + 12 + 24) and len(set(names)) == len(names)
    # the targets share one code path: all tensors of the first and the last target
    for name, array in model.parameters():
        if not name.startswith(("target_models.vocals.", "target_models.other.")):
            continue
        array *= -1
        with np.errstate(invalid="ignore"):  # a negative running_var: NaN, as in PyTorch
            snr = snr_db(exact, model.separate(mix))
        array *= -1
        assert not np.all(snr >= 100.0), f"flipping {name} leaves SNR {snr}"
