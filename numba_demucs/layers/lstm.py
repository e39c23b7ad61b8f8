"""demucs' BLSTM: a bidirectional ``nn.LSTM`` and a ``Linear`` back to the input width, run on
overlapping windows of at most ``max_steps`` steps (``demucs.demucs.BLSTM``).

The windowing is part of the model's numbers, not an optimisation: each window starts from a
zero state, so a port that runs the LSTM over the whole sequence gives different output.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import recurrent
from .base import Layer, Linear, StateReader


class LSTM(Layer):
    """nn.LSTM(bidirectional=True) with ``num_layers`` layers, zero initial state.

    Input and output are time-major as PyTorch's: ``(steps, batch, features)`` ->
    ``(steps, batch, 2 * hidden)``.
    """

    def __init__(self, name, reader: StateReader, num_layers):
        super().__init__(name)
        self.num_layers = num_layers
        for layer in range(num_layers):
            for suffix in ("", "_reverse"):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    key = f"{kind}_l{layer}{suffix}"
                    setattr(self, key, reader.take(f"{name}.{key}"))

    def __call__(self, x):
        steps, batch, _ = x.shape
        for layer in range(self.num_layers):
            outputs = []
            flat = np.ascontiguousarray(x).reshape(steps * batch, -1)
            for suffix, reverse in (("", False), ("_reverse", True)):
                w_ih = getattr(self, f"weight_ih_l{layer}{suffix}")
                if flat.shape[1] != w_ih.shape[1]:
                    raise ValueError(f"{self.name} layer {layer} takes {w_ih.shape[1]} features, "
                                     f"got an input of shape {x.shape}")
                # all steps of all windows in one GEMM, then both biases as PyTorch adds them
                gates = flat @ w_ih.T
                gates += getattr(self, f"bias_ih_l{layer}{suffix}")
                gates += getattr(self, f"bias_hh_l{layer}{suffix}")
                w_hh = getattr(self, f"weight_hh_l{layer}{suffix}")
                hidden = w_hh.shape[1]
                out = np.empty((steps, batch, hidden), dtype=x.dtype)
                recurrent.lstm_recurrence(gates.reshape(steps, batch, 4 * hidden), w_hh,
                                          reverse, out)
                outputs.append(out)
            x = np.concatenate(outputs, axis=2)
        return self.emit(x)


def frame_count(length, stride):
    return math.ceil(length / stride)


class BLSTM(Layer):
    """``x (batch, C, T)`` -> ``x + linear(lstm(x))`` (skip=True, as DConv builds it)."""

    def __init__(self, name, reader: StateReader, num_layers=2, max_steps=200, skip=True):
        super().__init__(name)
        if max_steps is not None and max_steps % 4:
            raise ValueError(f"{name}: max_steps must be a multiple of 4")
        self.lstm = LSTM(f"{name}.lstm", reader, num_layers)
        self.linear = Linear(f"{name}.linear", reader)
        self.max_steps = max_steps
        self.skip = skip

    def __call__(self, x):
        batch, channels, length = x.shape
        framed = self.max_steps is not None and length > self.max_steps
        if framed:
            width = self.max_steps
            stride = width // 2
            frames = frame_count(length, stride)
            padded = np.zeros((batch, channels, (frames - 1) * stride + width), dtype=x.dtype)
            padded[..., :length] = x
            windows = np.lib.stride_tricks.as_strided(
                padded, (batch, frames, channels, width),
                (padded.strides[0], stride * padded.strides[2], padded.strides[1],
                 padded.strides[2]))
            # (batch * frames, C, width), window k of item b at b * frames + k
            seq = windows.reshape(batch * frames, channels, width)
        else:
            seq = x
        steps = seq.shape[-1]
        y = self.lstm(np.ascontiguousarray(seq.transpose(2, 0, 1)))  # (steps, batch', 2C)
        y = self.linear(y)                                          # (steps, batch', C)
        y = y.transpose(1, 2, 0)                                    # (batch', C, steps)
        if framed:
            y = y.reshape(batch, frames, channels, steps)
            limit = stride // 2
            pieces = [y[:, 0, :, :-limit]]
            pieces += [y[:, k, :, limit:-limit] for k in range(1, frames - 1)]
            pieces.append(y[:, frames - 1, :, limit:])
            y = np.concatenate(pieces, axis=-1)[..., :length]
        y = np.ascontiguousarray(y)
        if self.skip:
            y += x
        return self.emit(y)
