"""The LSTM recurrence and LocalState softmax kernels against their naive NumPy twins."""
import numpy as np
import pytest

from numba_demucs.kernels import recurrent

from .. import naive_recurrent as naive


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_recurrence_matches_naive(dtype, tolerance, reverse):
    rng = np.random.default_rng(0)
    steps, batch, features, hidden = 37, 3, 6, 5
    x = rng.standard_normal((steps, batch, features))
    w_ih, w_hh = rng.uniform(-0.6, 0.6, (4 * hidden, features)), rng.uniform(-0.6, 0.6, (4 * hidden, hidden))
    b_ih, b_hh = rng.uniform(-0.5, 0.5, 4 * hidden), rng.uniform(-0.5, 0.5, 4 * hidden)
    expected = naive.lstm_direction(x, w_ih, w_hh, b_ih, b_hh, reverse)
    gates = (x.reshape(-1, features) @ w_ih.T + b_ih + b_hh).reshape(steps, batch, -1)
    out = np.empty((steps, batch, hidden), dtype=dtype)
    recurrent.lstm_recurrence(gates.astype(dtype), w_hh.astype(dtype), reverse, out)
    assert np.abs(out - expected).max() < tolerance
    # the gates are far from saturation: the test would see a wrong gate order
    assert 0.05 < np.abs(expected).mean() < 0.6


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_local_decay_softmax_matches_naive(dtype, tolerance):
    rng = np.random.default_rng(1)
    dim, length, ndecay = 4, 50, 4
    keys, queries = rng.standard_normal((dim, length)), rng.standard_normal((dim, length))
    decay_q = 0.5 / (1 + np.exp(-2 * rng.standard_normal((ndecay, length))))
    expected = naive.local_state_weights(keys, queries, decay_q)
    first = 20
    scores = ((queries.T[first:first + 17] @ keys) / dim ** 0.5).astype(dtype)
    recurrent.local_decay_softmax(scores, first, decay_q.astype(dtype), ndecay ** 0.5)
    assert np.abs(scores - expected[first:first + 17]).max() < tolerance
    # the decay really localises: weights fall off with distance, the own step is ~0
    assert expected[30, 30] < 1e-30 and expected[30, 31] > expected[30, 45]
