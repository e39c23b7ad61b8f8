"""demucs' MultiWrap: one frequency layer replaced by independently weighted copies, each on a
band of frequencies (``demucs.hdemucs.MultiWrap``; mdx's 7d865c68 wraps its two outer layers).

Encoder bands are cut so that every copy's unpadded strided conv lands on whole output rows,
the first band padded on top and the last at the bottom as the wrapped layer's padding would
have done. Decoder bands overlap-add ``stride`` rows at each border (counting the transposed
conv's bias once) and drop ``stride // 2`` rows at the outer edges. Band limits use Python's
``round`` (half to even), as demucs does.
"""
from __future__ import annotations

import numpy as np

from .base import Layer, StateReader, gelu
from .hdemucs import HDecLayer, HEncLayer


class MultiWrapEncoder(Layer):
    def __init__(self, name, reader: StateReader, split_ratios, **layer_kwargs):
        super().__init__(name)
        if layer_kwargs["norm"]:
            raise ValueError(f"{name}: MultiWrap needs a layer without GroupNorm")
        self.split_ratios = list(split_ratios)
        self.kernel_size = layer_kwargs["kernel_size"]
        self.stride = layer_kwargs["stride"]
        sub = dict(layer_kwargs, pad=False)  # demucs zeroes the copies' conv padding
        self.layers = [HEncLayer(f"{name}.layers.{k}", reader, **sub)
                       for k in range(len(self.split_ratios) + 1)]

    def __call__(self, x, inject=None):
        """``x (C, Fr, T)`` -> ``(C', Fr / stride, T)``; ``inject`` is ignored, as in demucs."""
        freqs = x.shape[1]
        kernel, stride = self.kernel_size, self.stride
        pad = kernel // 4
        start, outs = 0, []
        for ratio, layer in zip(self.split_ratios + [1], self.layers):
            if ratio == 1:
                limit = freqs
            else:
                limit = int(round(freqs * ratio))
                span = limit - start + (pad if start == 0 else 0)
                frames = round((span - kernel) / stride + 1)
                limit = start + (frames - 1) * stride + kernel - (pad if start == 0 else 0)
            if not 0 < limit - start or limit > freqs:
                raise ValueError(f"{self.name}: band [{start}, {limit}) of {freqs} rows")
            y = x[:, start:limit]
            y = np.pad(y, ((0, 0), (pad if start == 0 else 0, pad if ratio == 1 else 0), (0, 0)))
            outs.append(layer(np.ascontiguousarray(y)))
            start = limit - kernel + stride
        return self.emit(np.concatenate(outs, axis=1))


class MultiWrapDecoder(Layer):
    def __init__(self, name, reader: StateReader, split_ratios, **layer_kwargs):
        super().__init__(name)
        if layer_kwargs["norm"]:
            raise ValueError(f"{name}: MultiWrap needs a layer without GroupNorm")
        self.split_ratios = list(split_ratios)
        self.stride = layer_kwargs["stride"]
        self.last = layer_kwargs["last"]
        # the copies skip the crop (pad False) and the GELU (demucs sets last=True around them)
        sub = dict(layer_kwargs, pad=False, last=True, context_freq=False)
        self.layers = [HDecLayer(f"{name}.layers.{k}", reader, **sub)
                       for k in range(len(self.split_ratios) + 1)]

    def __call__(self, x, skip, length):
        """``x, skip (C, Fr, T)`` -> ``((C', Fr * stride, T), None)``."""
        if x.ndim == 2:
            x = x.reshape(self.layers[0].chin, -1, x.shape[-1])
        freqs = x.shape[1]
        stride = self.stride
        start, outs = 0, []
        for ratio, layer in zip(self.split_ratios + [1], self.layers):
            limit = freqs if ratio == 1 else int(round(freqs * ratio))
            out, _ = layer(np.ascontiguousarray(x[:, start:limit]),
                           np.ascontiguousarray(skip[:, start:limit]), None)
            out = np.array(out)  # the next band adds into its last rows
            if outs:
                outs[-1][:, -stride:] += out[:, :stride] - layer.conv_tr.bias[:, None, None]
                out = out[:, stride:]
            if ratio == 1:
                out = out[:, :-stride // 2]
            if start == 0:
                out = out[:, stride // 2:]
            outs.append(out)
            start = limit
        out = np.ascontiguousarray(np.concatenate(outs, axis=1))
        if not self.last:
            out = gelu(out)
        return self.emit(out), None
