"""Open-Unmix's layers: bias-free Linear, eval-mode BatchNorm1d, the stacked bidirectional LSTM.

Each works on a stretch of frames, so the model can run a long track in blocks: the LSTM
keeps its state between consecutive stretches of one direction, and only its per-layer
output (``(frames, hidden)``, the whole track) is ever held, never the ``4 hidden`` gate
projections of the whole track.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..kernels import lstm_umx
from .base import Layer, StateReader

# Frames per input-projection GEMM inside the LSTM: the gate projections of this many
# frames exist at once (the whole track's would be 4x the layer's output).
LSTM_BLOCK = 512


class Linear(Layer):
    """nn.Linear(bias=False) on ``(rows, in_features)`` -> ``(rows, out_features)``."""

    def __init__(self, name, reader: StateReader, in_features=None):
        super().__init__(name)
        self.weight = reader.take(f"{name}.weight")
        if in_features is not None and self.weight.shape[1] != in_features:
            raise ValueError(f"{name} takes {self.weight.shape[1]} features, expected {in_features}")

    def __call__(self, x):
        if x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"{self.name} takes {self.weight.shape[1]} features, "
                             f"got an input of shape {x.shape}")
        return x @ self.weight.T


class BatchNorm1d(Layer):
    """nn.BatchNorm1d in eval mode on ``(rows, features)``: running statistics.

    PyTorch folds the statistics into one scale and shift per feature
    (``w / sqrt(var + eps)`` and ``b - mean * scale``) and applies ``x * scale + shift``;
    so does this layer, in the model dtype.
    """

    def __init__(self, name, reader: StateReader, features, eps=1e-5):
        super().__init__(name)
        shape = (features,)
        self.weight = reader.take(f"{name}.weight", shape)
        self.bias = reader.take(f"{name}.bias", shape)
        self.running_mean = reader.take(f"{name}.running_mean", shape)
        self.running_var = reader.take(f"{name}.running_var", shape)
        self.eps = eps

    def folded(self):
        dt = self.weight.dtype.type
        scale = self.weight * (dt(1.0) / np.sqrt(self.running_var + dt(self.eps)))
        return scale, self.bias - self.running_mean * scale

    def __call__(self, x, out=None):
        scale, shift = self.folded()
        out = np.multiply(x, scale, out=out)
        out += shift
        return out


class LSTM(Layer):
    """nn.LSTM(batch_first=False, bidirectional) for one item: ``(frames, input)`` ->
    ``(frames, 2 * hidden)``, forward and backward directions side by side per layer."""

    def __init__(self, name, reader: StateReader, input_size, hidden_size, num_layers):
        super().__init__(name)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.weights = []  # per layer, per direction: (w_ih, w_hh_t, b_ih, b_hh)
        gates = 4 * hidden_size
        for layer in range(num_layers):
            size = input_size if layer == 0 else 2 * hidden_size
            directions = []
            for suffix in ("", "_reverse"):
                w_ih = reader.take(f"{name}.weight_ih_l{layer}{suffix}", (gates, size))
                w_hh = reader.take(f"{name}.weight_hh_l{layer}{suffix}", (gates, hidden_size))
                b_ih = reader.take(f"{name}.bias_ih_l{layer}{suffix}", (gates,))
                b_hh = reader.take(f"{name}.bias_hh_l{layer}{suffix}", (gates,))
                directions.append((w_ih, np.ascontiguousarray(w_hh.T), b_ih, b_hh))
            self.weights.append(directions)

    def parameters(self):
        for layer, directions in enumerate(self.weights):
            for suffix, (w_ih, w_hh_t, b_ih, b_hh) in zip(("", "_reverse"), directions):
                yield f"{self.name}.weight_ih_l{layer}{suffix}", w_ih
                # transposed copy of weight_hh: edit in place as weight_hh.T
                yield f"{self.name}.weight_hh_l{layer}{suffix}", w_hh_t.T
                yield f"{self.name}.bias_ih_l{layer}{suffix}", b_ih
                yield f"{self.name}.bias_hh_l{layer}{suffix}", b_hh

    def _direction(self, x, weights, out, reverse):
        """One direction over all of ``x (frames, input)`` into ``out (frames, hidden)``,
        projecting the inputs ``LSTM_BLOCK`` frames at a time."""
        w_ih, w_hh_t, b_ih, b_hh = weights
        frames = x.shape[0]
        h = np.zeros(self.hidden_size, dtype=x.dtype)
        c = np.zeros(self.hidden_size, dtype=x.dtype)
        starts = range(0, frames, LSTM_BLOCK)
        for start in (reversed(starts) if reverse else starts):
            stop = min(frames, start + LSTM_BLOCK)
            projected = x[start:stop] @ w_ih.T  # (block, 4 hidden)
            projected += b_ih
            lstm_umx.lstm_direction(projected, w_hh_t, b_hh, h, c, out[start:stop], reverse)

    def __call__(self, x, out=None):
        """``x (frames, input)`` -> ``(frames, 2 hidden)``; the last layer writes into ``out``
        when given (a view such as the right half of the skip-connection buffer)."""
        frames = x.shape[0]
        hidden = self.hidden_size
        for layer, directions in enumerate(self.weights):
            last = layer == self.num_layers - 1
            target = out if last and out is not None else np.empty((frames, 2 * hidden), x.dtype)
            # The two directions are independent: one thread each (the kernel drops the GIL).
            with ThreadPoolExecutor(max_workers=1) as pool:
                backward = pool.submit(self._direction, x, directions[1], target[:, hidden:], True)
                self._direction(x, directions[0], target[:, :hidden], False)
                backward.result()
            x = target
        return x
