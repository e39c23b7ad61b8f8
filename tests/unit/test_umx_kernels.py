"""Open-Unmix kernels (LSTM recurrence, Wiener filter) against their NumPy twins in tests/naive_umx.py."""
import numpy as np
import pytest

from numba_demucs.kernels import lstm_umx, wiener
from numba_demucs.layers.umx import LSTM
from numba_demucs.layers.base import StateReader
from tests import naive_umx


def _lstm_case(rng, frames=37, hidden=5, dtype=np.float64):
    projected = rng.standard_normal((frames, 4 * hidden)).astype(dtype)
    w_hh = (0.5 * rng.standard_normal((4 * hidden, hidden))).astype(dtype)
    b_hh = (0.3 * rng.standard_normal(4 * hidden)).astype(dtype)
    return projected, w_hh, b_hh


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_direction_matches_naive(reverse):
    rng = np.random.default_rng(0)
    projected, w_hh, b_hh = _lstm_case(rng)
    hidden = w_hh.shape[1]
    h, c = np.zeros(hidden), np.zeros(hidden)
    out = np.zeros((projected.shape[0], 2 * hidden))  # written through a strided view
    lstm_umx.lstm_direction(projected, np.ascontiguousarray(w_hh.T), b_hh, h, c,
                            out[:, hidden:], reverse)
    expected = naive_umx.lstm_direction(projected, w_hh, b_hh, reverse)
    np.testing.assert_allclose(out[:, hidden:], expected, rtol=1e-12, atol=1e-14)
    assert not out[:, :hidden].any()
    np.testing.assert_allclose(h, expected[0 if reverse else -1], rtol=1e-12)


def test_lstm_direction_continues_across_stretches():
    rng = np.random.default_rng(1)
    projected, w_hh, b_hh = _lstm_case(rng, frames=20, dtype=np.float32)
    w_t = np.ascontiguousarray(w_hh.T)
    hidden = w_hh.shape[1]
    whole = np.zeros((20, hidden), np.float32)
    lstm_umx.lstm_direction(projected, w_t, b_hh, np.zeros(hidden, np.float32),
                            np.zeros(hidden, np.float32), whole, True)
    pieces = np.zeros((20, hidden), np.float32)
    h, c = np.zeros(hidden, np.float32), np.zeros(hidden, np.float32)
    for start in (13, 6, 0):  # last stretch first, as the backward direction runs
        stop = {13: 20, 6: 13, 0: 6}[start]
        lstm_umx.lstm_direction(projected[start:stop], w_t, b_hh, h, c, pieces[start:stop], True)
    np.testing.assert_array_equal(pieces, whole)


def test_lstm_layer_blocks_match_naive(monkeypatch):
    from numba_demucs.layers import umx

    rng = np.random.default_rng(2)
    size, hidden, layers, frames = 6, 4, 2, 23
    state, weights = {}, []
    for layer in range(layers):
        directions = []
        for suffix in ("", "_reverse"):
            inputs = size if layer == 0 else 2 * hidden
            tensors = (rng.standard_normal((4 * hidden, inputs)), rng.standard_normal((4 * hidden, hidden)),
                       rng.standard_normal(4 * hidden), rng.standard_normal(4 * hidden))
            for key, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), tensors):
                state[f"lstm.{key}_l{layer}{suffix}"] = value
            directions.append(tensors)
        weights.append(directions)
    monkeypatch.setattr(umx, "LSTM_BLOCK", 5)  # several input-projection blocks per direction
    layer = LSTM("lstm", StateReader(state, np.float64, "test"), size, hidden, layers)
    x = rng.standard_normal((frames, size))
    np.testing.assert_allclose(layer(x), naive_umx.lstm(x, weights), rtol=1e-11, atol=1e-13)


def _wiener_case(rng, frames=9, bins=6, sources=4, dtype=np.float64):
    x = rng.standard_normal((frames, bins, 2, 2)).astype(dtype)
    x[0, 0] = 0  # an all-zero bin: openunmix's atan2 quirk
    x[1, 2, 1] = 0
    x[2, 3, :, 0] = 0  # real part zero, imaginary non-zero: the +-pi/2 branches
    x[3, 1, :, 1] = 0
    x[3, 1, 0, 0] = -1.5  # negative real, zero imaginary: angle pi
    spectrograms = np.abs(rng.standard_normal((frames, bins, 2, sources))).astype(dtype)
    return spectrograms, 30 * x  # peaks above the scale factor: max_abs > 1


@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_wiener_matches_naive(softmask, residual, iterations):
    rng = np.random.default_rng(3)
    spectrograms, x = _wiener_case(rng)
    ours = wiener.wiener(spectrograms, x.copy(), iterations, softmask=softmask, residual=residual)
    expected = naive_umx.wiener(spectrograms, x, iterations, softmask=softmask, residual=residual)
    assert ours.shape == expected.shape == (9, 6, 2, 2, 5 if residual else 4)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def test_wiener_float32_close_to_float64():
    rng = np.random.default_rng(4)
    spectrograms, x = _wiener_case(rng, dtype=np.float32)
    ours = wiener.wiener(spectrograms, x.copy(), 1)
    assert ours.dtype == np.float32
    expected = naive_umx.wiener(spectrograms, x, 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_wiener_writes_the_atan2_quirk_into_the_mixture():
    rng = np.random.default_rng(5)
    spectrograms, x = _wiener_case(rng)
    mixture = x.copy()
    wiener.wiener(spectrograms, mixture, 0)
    assert mixture[0, 0, 0, 0] == 1.0 and mixture[0, 0, 1, 0] == 1.0 and mixture[1, 2, 1, 0] == 1.0
    assert mixture[2, 3, 0, 0] == 0.0  # not all zero: left alone
