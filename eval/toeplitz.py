"""Solving museval's regularised filter systems by their block-Toeplitz structure.

museval's Gram matrix ``G`` (``_reshape_G`` order: reference channel ``p``, delay ``a``)
holds ``G[(p, a), (q, b)] = R[p, q](b - a)``: with the rows and columns reordered as
(delay, channel) it is a block-Toeplitz matrix of ``L = filters_len`` block rows whose
``(a, b)`` block is the ``m x m`` lag matrix ``Gamma(b - a)``, ``Gamma(k)[p, q] = R[p,
q](k)``, and ``Gamma(-k) = Gamma(k)^T`` exactly (the Gram matrix is exactly symmetric).
Adding ``eps`` to the diagonal adds it to ``Gamma(0)``'s diagonal, so ``G + eps I`` is
block Toeplitz too.

A block Levinson recursion (Whittle / Wiggins-Robinson: forward and backward matrix
predictors grown one block at a time) solves such a system in ``O(m^3 L^2)`` operations
without forming the matrix: about 0.3 GFLOP for 4 stereo sources (``m = 8``, ``L = 512``)
where an LU of the explicit 4096 x 4096 matrix costs 46 GFLOP and 128 MiB. The recursion
is only weakly stable, so :func:`solve_block_toeplitz` follows it by iterative refinement
in float64 with the residual computed exactly from the lags (direct block sums), and
reports failure (the caller then falls back to the LU of the explicit matrix) when a
prediction-error matrix is not positive definite, a value is not finite, or the
refinement does not bring the backward error down to ``BACKWARD_ERROR``.
"""
from __future__ import annotations

import numpy as np
from numba_demucs.kernels._config import kernel

BACKWARD_ERROR = 1e-14
"""Largest normwise backward error (max-norms) a solution is accepted with: about 45
float64 epsilons, what LU with partial pivoting achieves on these systems."""

_MAX_REFINEMENTS = 3


@kernel
def block_lags(first, second, values, n_refs, low, high, filters_len):
    """``gamma[k + L - 1, p, q] = Gamma(k)[p, q]``, ``|k| < L``, for reference channels
    ``low <= p, q < high``, from :func:`~.correlations.lag_correlations`' pairs.

    The numbers are exactly those ``bsseval._fill_gram`` writes into the explicit matrix:
    ``R[p, q](k)`` for ``p < q``, ``R[q, p](-k)`` for ``p > q``, ``R[p, p](-|k|)`` inside an
    autocorrelation.
    """
    centre = filters_len - 1
    m = high - low
    gamma = np.empty((2 * filters_len - 1, m, m))
    for pair in range(first.shape[0]):
        p = first[pair]
        q = second[pair]
        if p < low or q >= high:
            continue
        for k in range(-centre, centre + 1):
            if p == q:
                gamma[k + centre, p - low, p - low] = values[pair, centre - abs(k)]
            else:
                gamma[k + centre, p - low, q - low] = values[pair, k + centre]
                gamma[k + centre, q - low, p - low] = values[pair, -k + centre]
    return gamma


@kernel
def _small_solve(matrix, rhs, out):
    """``out = matrix^-1 rhs`` by Gaussian elimination without pivoting, for a small
    (near-)symmetric positive definite ``matrix``. Returns False when a pivot is not
    positive and finite, i.e. ``matrix`` is not (numerically) positive definite."""
    m = matrix.shape[0]
    r = rhs.shape[1]
    a = matrix.copy()
    b = rhs.copy()
    for k in range(m):
        pivot = a[k, k]
        if not (pivot > 0.0) or not np.isfinite(pivot):
            return False
        for i in range(k + 1, m):
            factor = a[i, k] / pivot
            for j in range(k + 1, m):
                a[i, j] -= factor * a[k, j]
            for j in range(r):
                b[i, j] -= factor * b[k, j]
    for k in range(m - 1, -1, -1):
        for j in range(r):
            total = b[k, j]
            for i in range(k + 1, m):
                total -= a[k, i] * out[i, j]
            out[k, j] = total / a[k, k]
    return True


@kernel
def block_levinson(gamma, rhs, eps, out):
    """Solve ``(T + eps I) x = rhs`` for the block-Toeplitz ``T[a, b] = gamma[b - a + L - 1]``.

    ``gamma`` is ``(2L - 1, m, m)``, ``rhs`` and ``out`` ``(L, m, r)``. Returns False (and
    ``out`` undefined) when the recursion breaks down.

    With ``T_n`` the leading ``n`` block rows: the forward predictor ``F`` (``F_0 = I``)
    has ``T_n F = [Ef, 0, ..., 0]``, the backward one ``B`` (``B_{n-1} = I``, stored
    reversed as ``Br_j = B_{n-1-j}``) has ``T_n B = [0, ..., 0, Eb]``. Growing ``n`` by
    one block: ``F' = [F; 0] + [0; B] alpha`` and ``B' = [0; B] + [F; 0] beta`` with the
    mismatches ``Df = sum_i Gamma(i - n) F_i`` and ``Db = sum_i Gamma(i + 1) B_i``,
    ``alpha = -Eb^-1 Df``, ``beta = -Ef^-1 Db``; the solution grows by ``B' gamma_n`` with
    ``gamma_n = Eb'^-1 (rhs_n - sum_i Gamma(i - n) x_i)``.
    """
    two_l, m, _ = gamma.shape
    length = (two_l + 1) // 2
    centre = length - 1
    r = rhs.shape[2]
    forward = np.zeros((length, m, m))
    backward = np.zeros((length, m, m))  # reversed: backward[j] = B_{n-1-j}
    for p in range(m):
        forward[0, p, p] = 1.0
        backward[0, p, p] = 1.0
    e_forward = gamma[centre].copy()
    for p in range(m):
        e_forward[p, p] += eps
    e_backward = e_forward.copy()
    for i in range(length):
        for p in range(m):
            for j in range(r):
                out[i, p, j] = 0.0
    if not _small_solve(e_backward, rhs[0], out[0]):
        return False
    d_forward = np.empty((m, m))
    d_backward = np.empty((m, m))
    alpha = np.empty((m, m))
    beta = np.empty((m, m))
    mismatch = np.empty((m, r))
    step = np.empty((m, r))
    old_f = np.empty((m, m))
    old_b = np.empty((m, m))
    for n in range(1, length):
        d_forward[:] = 0.0
        d_backward[:] = 0.0
        for i in range(n):
            lag_f = gamma[i - n + centre]  # Gamma(i - n)
            lag_b = gamma[n - i + centre]  # Gamma(n - i), against Br_i = B_{n-1-i}
            for p in range(m):
                for k in range(m):
                    gf = lag_f[p, k]
                    gb = lag_b[p, k]
                    for q in range(m):
                        d_forward[p, q] += gf * forward[i, k, q]
                        d_backward[p, q] += gb * backward[i, k, q]
        if not _small_solve(e_backward, d_forward, alpha):
            return False
        if not _small_solve(e_forward, d_backward, beta):
            return False
        # Ef' = Ef - Db Eb^-1 Df, Eb' = Eb - Df Ef^-1 Db (alpha, beta are still unsigned)
        for p in range(m):
            for q in range(m):
                tf = 0.0
                tb = 0.0
                for k in range(m):
                    tf += d_backward[p, k] * alpha[k, q]
                    tb += d_forward[p, k] * beta[k, q]
                e_forward[p, q] -= tf
                e_backward[p, q] -= tb
        # F'_i = F_i - B_{i-1} alpha and Br'_{n-i} = Br_{n-i} - F_i beta: F_i pairs with
        # Br_{n-i} = B_{i-1} only, so each pair is updated in place from its old values.
        for i in range(n + 1):
            j = n - i
            for p in range(m):
                for q in range(m):
                    old_f[p, q] = forward[i, p, q] if i < n else 0.0
                    old_b[p, q] = backward[j, p, q] if j < n else 0.0
            # q innermost (it vectorises); the sums over k keep their order
            for p in range(m):
                for q in range(m):
                    forward[i, p, q] = old_f[p, q]
                    backward[j, p, q] = old_b[p, q]
                for k in range(m):
                    gb = old_b[p, k]
                    gf = old_f[p, k]
                    for q in range(m):
                        forward[i, p, q] -= gb * alpha[k, q]
                        backward[j, p, q] -= gf * beta[k, q]
        # the solution: x' = [x; 0] + B' Eb'^-1 (rhs_n - sum_i Gamma(i - n) x_i)
        for p in range(m):
            for j in range(r):
                mismatch[p, j] = rhs[n, p, j]
        for i in range(n):
            lag_f = gamma[i - n + centre]
            for p in range(m):
                for k in range(m):
                    g = lag_f[p, k]
                    for j in range(r):
                        mismatch[p, j] -= g * out[i, k, j]
        if not _small_solve(e_backward, mismatch, step):
            return False
        for i in range(n + 1):
            b_i = backward[n - i]  # B'_i
            for p in range(m):
                for k in range(m):
                    g = b_i[p, k]
                    for j in range(r):
                        out[i, p, j] += g * step[k, j]
    for i in range(length):
        for p in range(m):
            for j in range(r):
                if not np.isfinite(out[i, p, j]):
                    return False
    return True


@kernel
def block_toeplitz_residual(gamma, rhs, eps, x, out):
    """``out = rhs - (T + eps I) x`` by direct block sums over the lags (no FFT: the
    residual of a refinement must be accurate to the last bits)."""
    two_l, m, _ = gamma.shape
    length = (two_l + 1) // 2
    centre = length - 1
    r = rhs.shape[2]
    for a in range(length):
        for p in range(m):
            for j in range(r):
                out[a, p, j] = rhs[a, p, j] - eps * x[a, p, j]
        for b in range(length):
            lag = gamma[b - a + centre]
            for p in range(m):
                for q in range(m):
                    g = lag[p, q]
                    for j in range(r):
                        out[a, p, j] -= g * x[b, q, j]


def _norm_inf(gamma, eps):
    """``||T + eps I||_inf``: the largest absolute row sum, block row by block row (block
    row ``a`` holds the lags ``-a .. L - 1 - a``)."""
    length = (gamma.shape[0] + 1) // 2
    lag_rows = np.abs(gamma).sum(axis=2)  # (2L - 1, m): one lag's share of each row
    lag_rows[length - 1] += eps  # |Gamma(0) + eps I| row sums differ from this by < eps
    cumulative = np.concatenate([np.zeros((1, lag_rows.shape[1])), np.cumsum(lag_rows, 0)])
    a = np.arange(length)
    rows = cumulative[2 * length - 1 - a] - cumulative[length - 1 - a]  # (L, m)
    return rows.max()


def solve_block_toeplitz(gamma, rhs, eps):
    """``(T + eps I)^-1 rhs`` by block Levinson plus iterative refinement, or None.

    ``gamma`` ``(2L - 1, m, m)``, ``rhs`` ``(L, m, r)``. The solution is accepted once its
    normwise backward error ``||rhs - A x|| / (||A|| ||x|| + ||rhs||)`` (max-norms, the
    residual summed exactly from the lags) is at most ``BACKWARD_ERROR``, which is what
    LU with partial pivoting guarantees in practice; until then it is refined, ``x +=
    solve(rhs - A x)``, while the backward error shrinks, at most ``_MAX_REFINEMENTS``
    times. None means breakdown or no convergence: the caller solves the explicit matrix.
    """
    gamma = np.ascontiguousarray(gamma, dtype=np.float64)
    rhs = np.ascontiguousarray(rhs, dtype=np.float64)
    solution = np.empty_like(rhs)
    if not block_levinson(gamma, rhs, eps, solution):
        return None
    norm = _norm_inf(gamma, eps)
    rhs_norm = np.abs(rhs).max()
    residual = np.empty_like(rhs)
    correction = np.empty_like(rhs)
    previous = np.inf
    for refinement in range(_MAX_REFINEMENTS + 1):
        block_toeplitz_residual(gamma, rhs, eps, solution, residual)
        error = np.abs(residual).max() / (norm * np.abs(solution).max() + rhs_norm)
        if not np.isfinite(error):
            return None
        if error <= BACKWARD_ERROR:
            return solution
        if not error < previous or refinement == _MAX_REFINEMENTS:
            return None
        previous = error
        if not block_levinson(gamma, residual, eps, correction):
            return None
        solution += correction
    return None
