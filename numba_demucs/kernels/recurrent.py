"""The LSTM recurrence and LocalState's banded-decay softmax.

PyTorch's LSTM computes every step's input projection up front (one GEMM over all steps)
and then, step by step, ``gates = h W_hhᵀ + input_gates``, ``i, f, g, o`` = sigmoid, sigmoid,
tanh, sigmoid of the four chunks, ``c = f c + i g``, ``h = o tanh(c)``. The kernels here take
the precomputed input gates and do the recurrence with the gate arithmetic fused into one
pass per step; the nonlinearities are evaluated in float64 and rounded once to the array's
dtype, so float32 results sit within PyTorch's own float32 rounding.
"""
from __future__ import annotations

import math

import numpy as np

from ._config import kernel
from .activations import _logistic  # the sigmoid PyTorch's float64 LSTM gates match


@kernel
def lstm_recurrence(input_gates, w_hh, reverse, out):
    """One direction of one LSTM layer, from a zero state.

    ``input_gates (steps, batch, 4H)``: ``x W_ihᵀ + b_ih + b_hh`` for every step, gate order
    i, f, g, o as PyTorch stores them; ``w_hh (4H, H)``; ``out (steps, batch, H)`` receives
    every step's ``h``. ``reverse`` runs the steps from last to first (the backward direction
    of a bidirectional layer; its outputs stay at their own step).
    """
    steps, batch, four_hidden = input_gates.shape
    hidden = four_hidden // 4
    w_t = np.ascontiguousarray(w_hh.T)  # (H, 4H): h (batch, H) @ w_t is h W_hhᵀ
    h = np.zeros((batch, hidden), dtype=input_gates.dtype)
    c = np.zeros((batch, hidden), dtype=input_gates.dtype)
    for k in range(steps):
        t = steps - 1 - k if reverse else k
        recurrent = np.dot(h, w_t)  # (batch, 4H)
        for b in range(batch):
            row = input_gates[t, b]
            rec = recurrent[b]
            for j in range(hidden):
                # each pre-activation is rounded to the dtype first, as PyTorch adds them
                gi = row[j] + rec[j]
                gf = row[hidden + j] + rec[hidden + j]
                gg = row[2 * hidden + j] + rec[2 * hidden + j]
                go = row[3 * hidden + j] + rec[3 * hidden + j]
                i = _logistic(float(gi))
                f = _logistic(float(gf))
                g = math.tanh(float(gg))
                o = _logistic(float(go))
                cell = f * float(c[b, j]) + i * g
                c[b, j] = cell
                h[b, j] = o * math.tanh(float(c[b, j]))
                out[t, b, j] = h[b, j]
    return out


@kernel
def local_decay_softmax(scores, first_query, decay_q, decay_scale):
    """LocalState's attention weights, in place, for a block of queries.

    ``scores (queries, keys)``: the scaled dot products of queries ``first_query ...`` with
    every key; ``decay_q (ndecay, all queries)``: ``sigmoid(query_decay(x)) / 2`` of the
    head. Adds ``sum_f -(f + 1) |t - s| / decay_scale * decay_q[f, s]`` to the score of key
    ``t`` for query ``s``, replaces the score of the query's own step by -100, and turns each
    row into its softmax over the keys (accumulated in float64).
    """
    queries, keys = scores.shape
    ndecay = decay_q.shape[0]
    row = np.empty(keys, dtype=np.float64)
    for r in range(queries):
        s = first_query + r
        rate = 0.0
        for f in range(ndecay):
            rate += (f + 1) * float(decay_q[f, s])
        rate /= decay_scale
        peak = -np.inf
        for t in range(keys):
            if t == s:
                v = -100.0
            else:
                v = float(scores[r, t]) - abs(t - s) * rate
            row[t] = v
            if v > peak:
                peak = v
        total = 0.0
        for t in range(keys):
            e = math.exp(row[t] - peak)
            row[t] = e
            total += e
        inv = 1.0 / total
        for t in range(keys):
            scores[r, t] = row[t] * inv
    return scores
