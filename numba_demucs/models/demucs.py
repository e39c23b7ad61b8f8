"""Time-domain Demucs (``demucs.demucs.Demucs``, the v3 "improved" one of the mdx and repro
bags), composed under the PyTorch module names.

Normalise by the mono mix's mean and std, pad to ``valid_length`` (centred zeros), upsample
x2 with julius' windowed sinc, a U-Net of strided convolutions (skips centre-trimmed), down
x2, de-normalise, centre-trim to the input length.
"""
from __future__ import annotations

import math

import numpy as np

from .. import trace
from ..audio import sinc_kernels
from ..errors import CheckpointError
from .common import bind_model
from ..layers.demucs import DemucsDecoderLayer, DemucsEncoderLayer
from .config import DemucsConfig


def resample_frac(x, old, new):
    """``julius.resample_frac(x, old, new)`` (zeros 24, rolloff 0.945) on ``x (C, T)`` in
    x's dtype: julius' float32 filters, replicate padding, one strided convolution per
    phase, phases interleaved, ``floor(T * new / old)`` samples."""
    kernels, width = sinc_kernels(old, new)
    kernels = kernels.astype(x.dtype)
    channels, length = x.shape
    padded = np.concatenate([np.repeat(x[:, :1], width, axis=1), x,
                             np.repeat(x[:, -1:], width + old, axis=1)], axis=1)
    padded = np.ascontiguousarray(padded)
    taps = kernels.shape[1]
    frames = (padded.shape[1] - taps) // old + 1
    out = np.empty((channels, frames * new), dtype=x.dtype)
    for c in range(channels):
        row = padded[c]
        windows = np.lib.stride_tricks.as_strided(row, (frames, taps), (old * row.itemsize,
                                                                         row.itemsize))
        out[c] = (windows @ kernels.T).ravel()
    return out[:, :(new * length) // old]


def center_trim(x, length):
    delta = x.shape[-1] - length
    if delta < 0:
        raise ValueError(f"cannot trim {x.shape[-1]} samples to {length}")
    return x[..., delta // 2: x.shape[-1] - (delta - delta // 2)]


class Demucs:
    """Inference-only Demucs with numpy weights in ``dtype`` (float32 or float64)."""

    # apply_model pads a chunk to valid_length(chunk) with the track's own neighbouring audio
    segment_fixes_input_length = False

    def __init__(self, config: DemucsConfig, state: dict, dtype=np.float32, origin="Demucs"):
        reader = bind_model(self, config, state, dtype, origin)
        self.encoder, self.decoder = [], []
        channels = config.channels
        for index in range(config.depth):
            common = dict(stride=config.stride, norm=index >= config.norm_starts,
                          norm_groups=config.norm_groups, dconv_depth=config.dconv_depth,
                          lstm=index >= config.dconv_lstm, attn=index >= config.dconv_attn,
                          rewrite=config.rewrite)
            self.encoder.append(DemucsEncoderLayer(f"encoder.{index}", reader,
                                                   dconv=bool(config.dconv_mode & 1), **common))
            # decoder.0 is the last one run; demucs builds them in reverse
            self.decoder.insert(0, dict(common, dconv=bool(config.dconv_mode & 2),
                                        context=config.context, last=index == 0))
            channels = int(config.growth * channels)
        self.decoder = [DemucsDecoderLayer(f"decoder.{i}", reader, **kw)
                        for i, kw in enumerate(self.decoder)]
        if config.rewrite:
            # demucs builds one nn.GLU and puts that module in every layer: its hook reports
            # every use under the path named_modules() gives it, the first encoder's
            shared = self.encoder[0].gate.name
            for layer in self.layers():
                layer.gate.name = shared
        reader.check_all_used()

    # -- the model protocol --------------------------------------------------------------
    def layers(self):
        return [*self.encoder, *self.decoder]

    def parameters(self):
        for layer in self.layers():
            yield from layer.parameters()

    def valid_length(self, length: int) -> int:
        """demucs' Demucs.valid_length: the nearest length the strided layers use whole."""
        c = self.config
        if c.resample:
            length *= 2
        for _ in range(c.depth):
            length = max(1, math.ceil((length - c.kernel_size) / c.stride) + 1)
        for _ in range(c.depth):
            length = (length - 1) * c.stride + c.kernel_size
        if c.resample:
            length = math.ceil(length / 2)
        return int(length)

    def draw_randomness(self, rng):
        return 0

    # -- forward ------------------------------------------------------------------------
    def forward(self, mix, draw=0):
        """``mix (channels, samples)`` -> ``(sources, channels, samples)`` for one item."""
        try:
            return self._forward(mix)
        except (ValueError, IndexError) as error:
            raise CheckpointError(f"{self.origin}: weights do not fit the architecture: {error}") from None

    def _forward(self, mix):
        dt = self.dtype.type
        x = trace.point("input.mix", np.ascontiguousarray(mix, dtype=self.dtype))
        length = x.shape[-1]
        mean, std = dt(0), dt(1)
        if self.config.normalize:
            mono = x.mean(axis=0, dtype=self.dtype)
            mean = dt(mono.mean(dtype=np.float64))
            std = dt(mono.std(dtype=np.float64, ddof=1))
            x = (x - mean) / (dt(1e-5) + std)
        delta = self.valid_length(length) - length
        x = np.pad(x, ((0, 0), (delta // 2, delta - delta // 2)))
        if self.config.resample:
            x = resample_frac(x, 1, 2)
        saved = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        for decode in self.decoder:
            x = decode(x + center_trim(saved.pop(-1), x.shape[-1]))
        if self.config.resample:
            x = resample_frac(np.ascontiguousarray(x), 2, 1)
        x = center_trim(x * std + mean, length)
        out = x.reshape(len(self.sources), self.audio_channels, length)
        return trace.point("output.sources", np.ascontiguousarray(out))

    def __call__(self, mix, draw=0):
        return np.stack([self.forward(item, draw) for item in mix])
