"""One direction of one LSTM layer over a stretch of frames (torch.nn.LSTM's cell).

PyTorch's step is ``gates = (W_hh h + b_hh) + (W_ih x_t + b_ih)``, gates in the order
input, forget, cell, output; ``c = f * c + i * g``; ``h = o * tanh(c)``. The input
projections ``W_ih x_t + b_ih`` are one GEMM per stretch of frames (done by the layer); the
recurrence is here. ``W_hh h`` is accumulated over the hidden units in order, one
vectorisable row update per unit (``w_hh_t`` is ``W_hh`` transposed, ``(hidden, 4 hidden)``),
so the result does not depend on a BLAS and no fastmath is needed to vectorise it.

Note: demucs' BLSTM (helper branch v3) has its own recurrence kernel; the two could be one.
"""
from __future__ import annotations

import numpy as np

from ._config import kernel


@kernel
def lstm_direction(projected, w_hh_t, b_hh, h, c, out, reverse):
    """Run the cell over ``projected (frames, 4 hidden)`` (``W_ih x_t + b_ih`` per frame).

    ``h`` and ``c`` ``(hidden,)`` hold the state on entry and are updated in place, so
    consecutive stretches continue one sequence; ``out (frames, hidden)`` receives h per
    frame. With ``reverse`` the frames are visited last to first (the backward direction).
    """
    frames = projected.shape[0]
    hidden = h.shape[0]
    gates = np.empty(4 * hidden, dtype=projected.dtype)
    one = projected.dtype.type(1.0)
    for step in range(frames):
        t = frames - 1 - step if reverse else step
        gates[:] = 0
        for k in range(hidden):
            weight = w_hh_t[k]
            value = h[k]
            for r in range(4 * hidden):
                gates[r] += weight[r] * value
        row = projected[t]
        for r in range(4 * hidden):
            gates[r] = (gates[r] + b_hh[r]) + row[r]
        for j in range(hidden):
            i = one / (one + np.exp(-gates[j]))
            f = one / (one + np.exp(-gates[hidden + j]))
            g = np.tanh(gates[2 * hidden + j])
            o = one / (one + np.exp(-gates[3 * hidden + j]))
            c[j] = f * c[j] + i * g
            h[j] = o * np.tanh(c[j])
            out[t, j] = h[j]
