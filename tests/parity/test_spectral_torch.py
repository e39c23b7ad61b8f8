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


def test_float32_stft_and_istft_are_as_accurate_as_torchs():
    """In float32 both sides transform in single precision: against the float64 transform,
    our error is of the size of torch's own (within a factor of two), on demucs' sizes."""
    n_fft, hop, length = 4096, 1024, 3 * 44100
    x64 = np.random.default_rng(1).standard_normal((2, length))
    x32 = x64.astype(np.float32)
    exact = spectral.stft(x32.astype(np.float64), n_fft, hop)
    ours = spectral.stft(x32, n_fft, hop)
    theirs = spectro(torch.from_numpy(x32), n_fft, hop).numpy()
    assert ours.dtype == np.complex64 and theirs.dtype == np.complex64
    scale = np.abs(exact).max()
    ours_error = np.abs(ours - exact).max() / scale
    theirs_error = np.abs(theirs - exact).max() / scale
    assert 1e-9 < theirs_error < 1e-5
    assert ours_error < 2 * theirs_error

    z32 = exact.astype(np.complex64)
    exact_back = spectral.istft(z32.astype(np.complex128), hop, length)
    ours_back = spectral.istft(z32, hop, length)
    theirs_back = ispectro(torch.from_numpy(z32), hop, length).numpy()
    assert ours_back.dtype == np.float32 and theirs_back.dtype == np.float32
    ours_error = np.abs(ours_back - exact_back).max()
    theirs_error = np.abs(theirs_back - exact_back).max()
    assert 1e-9 < theirs_error < 1e-4
    assert ours_error < 2 * theirs_error
