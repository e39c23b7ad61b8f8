"""Hybrid Demucs (demucs v3, ``demucs.hdemucs.HDemucs``), composed under the PyTorch module names.

What HTDemucs never reaches and this model does: depth 6 with the last frequency layer
(kernel = the remaining 8 bins, 8 -> 1) and a time-only layer on the merged branches, the
time branch injected into that last frequency layer, a zero bottleneck (the signal reaches
the decoders only through the skips), DConv branches with BLSTM and LocalState, GroupNorm
from ``norm_starts`` on, the magnitude-and-phase output of ``cac=False`` and the shifted
spectrogram of ``hybrid_old``. HDemucs has no training-length padding: a chunk is used as
it is.
"""
from __future__ import annotations

import math

import numpy as np

from .. import trace
from ..errors import CheckpointError
from ..kernels import spectral
from .common import bind_model
from ..layers.hdemucs import HDecLayer, HEncLayer, ScaledEmbedding
from ..layers.multiwrap import MultiWrapDecoder, MultiWrapEncoder
from .config import HDemucsConfig
from .htdemucs import HTDemucs, pad1d_reflect


def layer_plan(config: HDemucsConfig):
    """Constructor arguments of every encoder/decoder layer, in demucs' order and naming."""
    encoders, tencoders, decoders, tdecoders = [], [], [], []
    chin = config.audio_channels
    chin_z = chin * 2 if config.cac else chin
    chout = config.channels_time or config.channels
    chout_z = config.channels
    freqs = config.nfft // 2
    freq_emb = None
    for index in range(config.depth):
        freq = freqs > 1
        kernel, stride = config.kernel_size, config.stride
        if not freq:
            kernel, stride = config.time_stride * 2, config.time_stride
        pad, last_freq = True, False
        if freq and freqs <= config.kernel_size:
            kernel, pad, last_freq = freqs, False, True
        common = dict(kernel_size=kernel, stride=stride, freq=freq, pad=pad,
                      norm=index >= config.norm_starts, norm_groups=config.norm_groups,
                      rewrite=config.rewrite, dconv_depth=config.dconv_depth,
                      dconv_lstm=index >= config.dconv_lstm, dconv_attn=index >= config.dconv_attn)
        common_t = dict(common, freq=False, kernel_size=config.kernel_size,
                        stride=config.stride, pad=True)
        if last_freq:
            chout_z = max(chout, chout_z)
            chout = chout_z
        multi = bool(config.multi_freqs) and index < config.multi_freqs_depth
        encoders.append(dict(common, dconv=bool(config.dconv_mode & 1), context=config.context_enc,
                             multi=multi))
        if freq:
            tencoders.append(dict(common_t, dconv=bool(config.dconv_mode & 1),
                                  context=config.context_enc, empty=last_freq))
        if index == 0:
            chin = config.audio_channels * len(config.sources)
            chin_z = chin * 2 if config.cac else chin
        decoders.insert(0, dict(common, chin=chout_z, dconv=bool(config.dconv_mode & 2),
                                last=index == 0, context=config.context, multi=multi,
                                context_freq=not multi))
        if freq:
            tdecoders.insert(0, dict(common_t, chin=chout, dconv=bool(config.dconv_mode & 2),
                                     empty=last_freq, last=index == 0, context=config.context))
        chin, chin_z = chout, chout_z
        chout, chout_z = int(config.growth * chout), int(config.growth * chout_z)
        if freq:
            freqs = 1 if freqs <= config.kernel_size else freqs // config.stride
        if index == 0 and config.freq_emb:
            freq_emb = freqs
    return encoders, tencoders, decoders, tdecoders, freq_emb


def phase_angle(z):
    """demucs.wiener.atan2 of ``(imag, real)``: angle 0 for 0 + 0j, in the dtype of ``z.real``."""
    y, x = z.imag, z.real.copy()
    dt = x.dtype.type
    pi = dt(2) * np.arcsin(dt(1.0))
    x += ((x == 0) & (y == 0)).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.arctan((y / x).astype(np.float64)).astype(x.dtype)
    out += ((y >= 0) & (x < 0)) * pi
    out -= ((y < 0) & (x < 0)) * pi
    on_axis = x == 0
    out = np.where(on_axis & (y > 0), pi / dt(2), out)
    out = np.where(on_axis & (y < 0), -pi / dt(2), out)
    return out.astype(x.dtype)


class HDemucs:
    """Inference-only HDemucs with numpy weights in ``dtype`` (float32 or float64)."""

    # apply_model pads a chunk to valid_length(chunk), which is the chunk itself
    segment_fixes_input_length = False

    def __init__(self, config: HDemucsConfig, state: dict, dtype=np.float32, origin="HDemucs"):
        reader = bind_model(self, config, state, dtype, origin)
        encoders, tencoders, decoders, tdecoders, freq_emb_size = layer_plan(config)
        ratios = config.multi_freqs
        self.encoder = [
            MultiWrapEncoder(f"encoder.{i}", reader, ratios, **kw) if kw.pop("multi")
            else HEncLayer(f"encoder.{i}", reader, **kw) for i, kw in enumerate(encoders)]
        self.tencoder = [HEncLayer(f"tencoder.{i}", reader, **kw) for i, kw in enumerate(tencoders)]
        self.decoder = [
            MultiWrapDecoder(f"decoder.{i}", reader, ratios, **kw) if kw.pop("multi")
            else HDecLayer(f"decoder.{i}", reader, **kw) for i, kw in enumerate(decoders)]
        self.tdecoder = [HDecLayer(f"tdecoder.{i}", reader, **kw) for i, kw in enumerate(tdecoders)]
        self.freq_emb = None
        if freq_emb_size is not None:
            self.freq_emb = ScaledEmbedding("freq_emb", reader, config.emb_scale)
            self.freq_emb_scale = config.freq_emb
        reader.check_all_used()

    # -- the model protocol --------------------------------------------------------------
    def layers(self):
        named = [*self.encoder, *self.tencoder, *self.decoder, *self.tdecoder]
        if self.freq_emb is not None:
            named.append(self.freq_emb)
        return named

    def parameters(self):
        """(PyTorch state-dict key, array) for every weight; arrays are live, edit in place."""
        for layer in self.layers():
            yield from layer.parameters()

    def valid_length(self, length: int) -> int:
        """HDemucs takes any length (demucs' class defines no valid_length; apply_model
        then uses the chunk as it is)."""
        return length

    def draw_randomness(self, rng):
        """HDemucs' forward draws nothing."""
        return 0

    # -- spectrogram helpers (HDemucs._spec, _ispec, _magnitude, _mask) -----------------
    def _spec(self, x):
        hop = self.config.nfft // 4
        frames = int(math.ceil(x.shape[-1] / hop))
        pad = hop // 2 * 3
        right = pad + frames * hop - x.shape[-1]
        if self.config.hybrid_old:
            padded = np.pad(x, ((0, 0), (pad, right)))
        else:
            padded = pad1d_reflect(x, pad, right)
        z = spectral.stft(np.ascontiguousarray(padded), self.config.nfft, hop)[:, :-1, :]
        return z[:, :, 2:2 + frames]

    def _ispec(self, z, length):
        hop = self.config.nfft // 4
        channels_shape = z.shape[:-2]
        z = z.reshape((-1,) + z.shape[-2:])
        z = np.pad(z, ((0, 0), (0, 1), (2, 2)))
        pad = hop // 2 * 3
        if self.config.hybrid_old:
            # demucs' MDX-era padding bug, kept so those weights give their numbers: the
            # frequency branch comes out ``pad`` samples early
            x = spectral.istft(z, hop, hop * int(math.ceil(length / hop)))[:, :length]
        else:
            padded_length = hop * int(math.ceil(length / hop)) + 2 * pad
            x = spectral.istft(z, hop, padded_length)[:, pad:pad + length]
        return x.reshape(channels_shape + (length,))

    def _magnitude(self, z):
        if self.config.cac:
            return HTDemucs._magnitude(z)
        return np.abs(z).astype(self.dtype)

    def _mask(self, z, m):
        """``m (S, C', Fr, T)`` -> complex ``(S, C, Fr, T)``: CaC, or for ``cac=False`` the
        magnitudes with the mixture's phase (demucs' Wiener filter with 0 iterations)."""
        if self.config.cac:
            return HTDemucs._mask(m)
        angle = phase_angle(z)[None]
        # cos and sin correctly rounded to the dtype (numpy's float32 ones are less exact
        # than PyTorch's)
        cos = np.cos(angle.astype(np.float64)).astype(m.dtype)
        sin = np.sin(angle.astype(np.float64)).astype(m.dtype)
        out = np.empty(m.shape, dtype=np.result_type(m.dtype, np.complex64))
        out.real = m * cos
        out.imag = m * sin
        return out

    # -- forward ------------------------------------------------------------------------
    def forward(self, mix, draw=0):
        """``mix (channels, samples)`` -> ``(sources, channels, samples)`` for one item."""
        try:
            return self._forward(mix)
        except (ValueError, IndexError) as error:
            raise CheckpointError(f"{self.origin}: weights do not fit the architecture: {error}") from None

    def _forward(self, mix):
        dt = self.dtype.type
        mix = np.ascontiguousarray(mix, dtype=self.dtype)
        mix = trace.point("input.mix", mix)
        length = mix.shape[-1]

        z = self._spec(mix)
        mag = trace.point("spec.magnitude", self._magnitude(z))
        mean = dt(mag.mean(dtype=np.float64))
        std = dt(mag.std(dtype=np.float64, ddof=1))
        x = trace.point("input.freq", (mag - mean) / (dt(1e-5) + std))

        meant = dt(mix.mean(dtype=np.float64))
        stdt = dt(mix.std(dtype=np.float64, ddof=1))
        xt = trace.point("input.time", (mix - meant) / (dt(1e-5) + stdt))

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = self.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and self.freq_emb is not None:
                emb = self.freq_emb(np.arange(x.shape[-2])).T[:, :, None]
                x = x + dt(self.freq_emb_scale) * emb
            saved.append(x)

        # the bottleneck is zeros: the signal reaches the decoders through the skips only
        x = np.zeros_like(x)
        offset = self.config.depth - len(self.tdecoder)
        for idx, decode in enumerate(self.decoder):
            x, pre = decode(x, saved.pop(-1), lengths.pop(-1))
            if idx >= offset:
                tdec = self.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    # (a MultiWrap decoder gives no ``pre``; demucs never wraps this one)
                    if pre.shape[1] != 1:
                        raise ValueError(f"{tdec.name}: expected one frequency bin, got {pre.shape}")
                    xt, _ = tdec(np.ascontiguousarray(pre[:, 0]), None, length_t)
                else:
                    xt, _ = tdec(xt, saved_t.pop(-1), length_t)
            del pre

        sources = len(self.sources)
        freqs, frames = x.shape[-2:]
        x = x.reshape(sources, -1, freqs, frames) * std
        x += mean
        zout = self._mask(z, x)
        del x
        x = trace.point("output.freq_branch", self._ispec(zout, length).astype(self.dtype))
        xt = xt.reshape(sources, -1, length)
        xt = trace.point("output.time_branch", xt * stdt + meant)
        return trace.point("output.sources", np.ascontiguousarray(xt + x))

    def __call__(self, mix, draw=0):
        """``mix (batch, channels, samples)`` -> ``(batch, sources, channels, samples)``."""
        return np.stack([self.forward(item, draw) for item in mix])
