"""The block-Toeplitz solver of the distortion filters against ``np.linalg.solve`` on the
explicit matrix, built here in plain NumPy from the lags."""
from __future__ import annotations

import numpy as np
import pytest

from numba_demucs.eval.bsseval import _fill_gram
from numba_demucs.eval.correlations import lag_correlations
from numba_demucs.eval.toeplitz import (block_lags, block_levinson, block_toeplitz_residual,
                                        solve_block_toeplitz)

EPS = np.finfo(np.float64).eps


def naive_lags(signals, length):
    """``gamma[k + L - 1][p, q] = sum_n x_p[n + k] x_q[n]`` by direct sums, ``signals (m, n)``."""
    m, n = signals.shape
    gamma = np.zeros((2 * length - 1, m, m))
    for k in range(-(length - 1), length):
        if k >= 0:
            gamma[k + length - 1] = signals[:, k:] @ signals[:, : n - k].T
        else:
            gamma[k + length - 1] = signals[:, : n + k] @ signals[:, -k:].T
    return gamma


def explicit(gamma):
    """``A[(a, p), (b, q)] = gamma[b - a + L - 1][p, q]``: the block-Toeplitz matrix."""
    length = (gamma.shape[0] + 1) // 2
    m = gamma.shape[1]
    matrix = np.empty((length * m, length * m))
    for a in range(length):
        for b in range(length):
            matrix[a * m:(a + 1) * m, b * m:(b + 1) * m] = gamma[b - a + length - 1]
    return matrix


def reference_solve(gamma, rhs):
    length, m, r = rhs.shape
    matrix = explicit(gamma) + EPS * np.eye(length * m)
    return np.linalg.solve(matrix, rhs.reshape(length * m, r)).reshape(length, m, r)


@pytest.mark.parametrize("m, length, r", [(1, 40, 1), (2, 64, 2), (3, 50, 4), (8, 32, 8)])
def test_random_spd_block_toeplitz(m, length, r):
    rng = np.random.default_rng(m * 100 + length)
    mixing = rng.standard_normal((m, m))
    signals = mixing @ rng.standard_normal((m, 4000))  # correlated channels
    gamma = naive_lags(signals, length)
    rhs = rng.standard_normal((length, m, r))
    expected = reference_solve(gamma, rhs)
    scale = np.abs(expected).max()

    plain = np.empty_like(rhs)
    assert block_levinson(gamma, rhs, EPS, plain)
    np.testing.assert_allclose(plain, expected, rtol=0, atol=1e-9 * scale)
    refined = solve_block_toeplitz(gamma, rhs, EPS)
    assert refined is not None
    np.testing.assert_allclose(refined, expected, rtol=0, atol=1e-11 * scale)

    residual = np.empty_like(rhs)
    block_toeplitz_residual(gamma, rhs, EPS, refined, residual)
    matrix = explicit(gamma) + EPS * np.eye(length * m)
    twin = rhs.reshape(-1, r) - matrix @ refined.reshape(-1, r)
    np.testing.assert_allclose(residual.reshape(-1, r), twin, rtol=0,
                               atol=1e-12 * np.abs(rhs).max())


def test_badly_conditioned_falls_back():
    """Two sinusoids in three channels: the matrix is singular but for ``eps``. The
    recursion breaks down or cannot be refined to LU accuracy, so the solver says so."""
    n = np.arange(3000)
    tone = np.sin(0.05 * n)
    signals = np.stack([tone, 0.5 * tone, np.cos(0.05 * n)])
    gamma = naive_lags(signals, 48)
    assert np.linalg.cond(explicit(gamma) + EPS * np.eye(144)) > 1e15
    rhs = np.random.default_rng(1).standard_normal((48, 3, 2))
    assert solve_block_toeplitz(gamma, rhs, EPS) is None


def test_not_positive_definite_is_a_breakdown():
    gamma = naive_lags(np.random.default_rng(2).standard_normal((2, 500)), 16)
    gamma[15] = -gamma[15]  # negative lag-0 block: no longer positive definite
    rhs = np.ones((16, 2, 1))
    out = np.empty_like(rhs)
    assert not block_levinson(gamma, rhs, EPS, out)
    assert solve_block_toeplitz(gamma, rhs, EPS) is None


def test_block_lags_are_the_gram_matrix_permuted():
    """``block_lags`` holds exactly the numbers ``_fill_gram`` lays out, reordered from
    (channel, delay) to (delay, channel)."""
    rng = np.random.default_rng(5)
    refs = rng.standard_normal((3, 8000, 2))
    ests = refs + 0.1 * rng.standard_normal(refs.shape)
    first, second, values = lag_correlations(refs, ests, 64)
    for low, high in ((0, 6), (2, 4)):
        m = high - low
        gram = np.empty((m * 64, m * 64))
        _fill_gram(first, second, values, 6, low, high, 64, gram)
        permuted = gram.reshape(m, 64, m, 64).transpose(1, 0, 3, 2).reshape(m * 64, m * 64)
        gamma = block_lags(first, second, values, 6, low, high, 64)
        np.testing.assert_array_equal(explicit(gamma), permuted)
