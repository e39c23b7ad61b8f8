"""demucs' LocalState: attention over time without positional embedding, penalised by the
distance between steps through learned per-query decay rates (``demucs.demucs.LocalState``).

Score of key ``t`` for query ``s`` in a head of ``d`` channels:
``k_t · q_s / sqrt(d) - |t - s| / sqrt(ndecay) * sum_f (f + 1) sigmoid(decay_f(s)) / 2``,
the step's own score replaced by -100; softmax over the keys; ``x + proj(weights · content)``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedModelError
from ..kernels import activations, recurrent
from .base import Conv, Layer, StateReader

# Queries whose (queries, keys) score block is formed at once
QUERY_BLOCK = 256


class LocalState(Layer):
    """``x (batch, C, T)`` -> same shape."""

    def __init__(self, name, reader: StateReader, heads=4, ndecay=4, nfreqs=0):
        super().__init__(name)
        if nfreqs:
            raise UnsupportedModelError(f"{name}: LocalState with nfreqs={nfreqs} is not supported")
        self.heads = heads
        self.ndecay = ndecay
        self.query = Conv(f"{name}.query", reader)
        self.key = Conv(f"{name}.key", reader)
        self.query_decay = Conv(f"{name}.query_decay", reader) if ndecay else None
        self.content = Conv(f"{name}.content", reader)
        self.proj = Conv(f"{name}.proj", reader)

    def __call__(self, x):
        batch, channels, length = x.shape
        heads = self.heads
        if channels % heads:
            raise ValueError(f"{self.name}: {channels} channels do not split into {heads} heads")
        dim = channels // heads
        # hook order of demucs' forward: query, key, query_decay, content, proj
        queries = self.query(x).reshape(batch, heads, dim, length)
        keys = self.key(x).reshape(batch, heads, dim, length)
        if self.query_decay is not None:
            decay = activations.sigmoid(self.query_decay(x))
            decay = (decay / decay.dtype.type(2)).reshape(batch, heads, self.ndecay, length)
        else:
            decay = np.zeros((batch, heads, 1, length), dtype=x.dtype)
        content = self.content(x).reshape(batch, heads, dim, length)
        scale = x.dtype.type(dim ** 0.5)
        decay_scale = math.sqrt(max(self.ndecay, 1))
        result = np.empty((batch, heads, dim, length), dtype=x.dtype)
        for b in range(batch):
            for h in range(heads):
                q_t = np.ascontiguousarray(queries[b, h].T)  # (T, d)
                k = np.ascontiguousarray(keys[b, h])         # (d, T)
                c_t = np.ascontiguousarray(content[b, h].T)  # (T, d)
                rates = np.ascontiguousarray(decay[b, h])
                for start in range(0, length, QUERY_BLOCK):
                    stop = min(length, start + QUERY_BLOCK)
                    scores = q_t[start:stop] @ k             # (queries, keys)
                    scores /= scale
                    recurrent.local_decay_softmax(scores, start, rates, decay_scale)
                    result[b, h, :, start:stop] = (scores @ c_t).T
        out = self.proj(result.reshape(batch, channels, length))
        out += x
        return self.emit(out)
