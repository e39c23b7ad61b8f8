"""Plain-NumPy twins of numba_demucs.kernels.recurrent, written from PyTorch's definitions
(nn.LSTM's equations, demucs' LocalState forward), float64 throughout. Tests only."""
from __future__ import annotations

import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_direction(x, w_ih, w_hh, b_ih, b_hh, reverse=False):
    """One direction of nn.LSTM from a zero state: ``x (steps, batch, in)`` -> ``(steps, batch, H)``."""
    x = np.asarray(x, dtype=np.float64)
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))
    out = np.zeros((steps, batch, hidden))
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        gates = x[t] @ np.asarray(w_ih, np.float64).T + b_ih + h @ np.asarray(w_hh, np.float64).T + b_hh
        i, f, g, o = np.split(gates, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out[t] = h
    return out


def local_state_weights(keys, queries, decay_q):
    """LocalState's softmax weights of one head: ``keys, queries (d, T)``,
    ``decay_q (ndecay, T)`` = sigmoid(query_decay)/2 -> ``(T queries, T keys)``."""
    dim, length = keys.shape
    ndecay = decay_q.shape[0]
    index = np.arange(length, dtype=np.float64)
    delta = index[:, None] - index[None, :]                       # (t keys, s queries)
    dots = np.einsum("ct,cs->ts", keys.astype(np.float64), queries.astype(np.float64))
    dots /= dim ** 0.5
    decays = np.arange(1, ndecay + 1, dtype=np.float64)
    kernel = -decays[:, None, None] * np.abs(delta) / ndecay ** 0.5  # (f, t, s)
    dots += np.einsum("fts,fs->ts", kernel, decay_q.astype(np.float64))
    dots[np.eye(length, dtype=bool)] = -100
    dots -= dots.max(axis=0, keepdims=True)
    weights = np.exp(dots)
    weights /= weights.sum(axis=0, keepdims=True)
    return weights.T
