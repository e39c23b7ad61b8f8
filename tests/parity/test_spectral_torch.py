"""Our STFT/iSTFT against demucs' spectro/ispectro (torch.stft/istft) on the same signal."""
import numpy as np
import pytest
import torch
from demucs.spec import ispectro, spectro

from numba_demucs.kernels import spectral


@pytest.mark.parametrize("n_fft,length", [(4096, 44100), (512, 3001)])
def test_stft_and_istft_match_torch(n_fft, length):
    x = np.random.default_rng(0).standard_normal((2, length))
    hop = n_fft // 4
    previous = torch.get_default_dtype()
    # demucs makes its Hann window with torch's default dtype even for float64 input
    torch.set_default_dtype(torch.float64)
    try:
        expected = spectro(torch.from_numpy(x), n_fft, hop).numpy()
        back = ispectro(torch.from_numpy(expected), hop, length).numpy()
    finally:
        torch.set_default_dtype(previous)
    ours = spectral.stft(x, n_fft, hop)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(spectral.istft(expected, hop, length), back, atol=1e-12)
