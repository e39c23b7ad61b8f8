"""The encoder and decoder layers of the time-domain Demucs (``demucs.demucs.Demucs``, the v3
"improved" one with DConv branches), each an ``nn.Sequential`` whose items are named by
their index. Shapes are for one item: ``(channels, samples)``.
"""
from __future__ import annotations

import numpy as np

from .base import GELU, GLU, Conv, GroupNorm, Identity, Layer, StateReader
from .hdemucs import DConv


def _norm(name, reader, groups, enabled):
    return GroupNorm(name, reader, groups) if enabled else Identity(name)


def _glu(layer: GLU, x):
    return layer(x[None])[0]


def _dconv(dconv: DConv, x):
    """DConv on ``(C, T)`` as one row (it may overwrite its input: give it its own array)."""
    return dconv(np.array(x)[:, None, :])[:, 0, :]


class DemucsEncoderLayer(Layer):
    """Conv1d(k, stride) -> norm -> GELU -> [DConv] -> [1x1 conv -> norm -> GLU]."""

    def __init__(self, name, reader: StateReader, *, stride, norm, norm_groups, dconv,
                 dconv_depth, lstm, attn, rewrite):
        super().__init__(name)
        index = iter(range(16))
        self.conv = Conv(f"{name}.{next(index)}", reader, stride=stride)
        self.norm1 = _norm(f"{name}.{next(index)}", reader, norm_groups, norm)
        self.activation = GELU(f"{name}.{next(index)}")
        self.dconv = DConv(f"{name}.{next(index)}", reader, dconv_depth, lstm=lstm,
                           attn=attn) if dconv else None
        self.rewrite = None
        if rewrite:
            self.rewrite = Conv(f"{name}.{next(index)}", reader)
            self.norm2 = _norm(f"{name}.{next(index)}", reader, norm_groups, norm)
            self.gate = GLU(f"{name}.{next(index)}")

    def __call__(self, x):
        y = self.activation(self.norm1(self.conv(x)))
        if self.dconv is not None:
            y = _dconv(self.dconv, y)
        if self.rewrite is not None:
            y = _glu(self.gate, self.norm2(self.rewrite(y)))
        return self.emit(y)


class DemucsDecoderLayer(Layer):
    """[conv(2 context + 1) -> norm -> GLU] -> [DConv] -> ConvTranspose1d(k, stride) [-> norm -> GELU]."""

    def __init__(self, name, reader: StateReader, *, stride, norm, norm_groups, dconv,
                 dconv_depth, lstm, attn, rewrite, context, last):
        super().__init__(name)
        index = iter(range(16))
        self.rewrite = None
        if rewrite:
            self.rewrite = Conv(f"{name}.{next(index)}", reader, padding=context)
            self.norm1 = _norm(f"{name}.{next(index)}", reader, norm_groups, norm)
            self.gate = GLU(f"{name}.{next(index)}")
        self.dconv = DConv(f"{name}.{next(index)}", reader, dconv_depth, lstm=lstm,
                           attn=attn) if dconv else None
        self.conv_tr = Conv(f"{name}.{next(index)}", reader, transposed=True, stride=stride)
        self.last = last
        if not last:
            self.norm2 = _norm(f"{name}.{next(index)}", reader, norm_groups, norm)
            self.activation = GELU(f"{name}.{next(index)}")

    def __call__(self, x):
        y = x
        if self.rewrite is not None:
            y = _glu(self.gate, self.norm1(self.rewrite(y)))
        if self.dconv is not None:
            y = _dconv(self.dconv, y)
        y = self.conv_tr(y)
        if not self.last:
            y = self.activation(self.norm2(y))
        return self.emit(y)
