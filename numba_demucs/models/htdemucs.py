"""Hybrid Transformer Demucs (demucs v4), composed under the PyTorch module names.

``HTDemucs.forward`` follows ``demucs.htdemucs.HTDemucs.forward`` step by step for one
item; every float32 step that PyTorch rounds separately (normalisation, de-normalisation,
embeddings) is rounded separately here too, so differences stay at the level of
accumulation order inside GEMMs and reductions.
"""
from __future__ import annotations

import math

import numpy as np

from .. import trace
from .._threads import pair, share
from ..errors import CheckpointError, NumbaDemucsError
from ..kernels import spectral
from ..layers.base import Conv, fused
from .common import bind_model
from ..layers.hdemucs import HDecLayer, HEncLayer, ScaledEmbedding
from ..layers.transformer import CrossTransformerEncoder
from .config import HTDemucsConfig


def pad1d_reflect(x, left, right):
    """demucs' ``pad1d(..., mode='reflect')``: zero-extends inputs too short to reflect."""
    length = x.shape[-1]
    largest = max(left, right)
    if length <= largest:
        extra = largest - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        left, right = left - extra_left, right - extra_right
        x = np.pad(x, ((0, 0), (extra_left, extra_right)))
    return spectral.reflect_pad(np.ascontiguousarray(x), left, right)


def _layer_plan(config: HTDemucsConfig):
    """Constructor arguments of every encoder/decoder layer, in demucs' order and naming."""
    encoders, tencoders, decoders, tdecoders = [], [], [], []
    chin = config.audio_channels
    chin_z = chin * 2
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
                      rewrite=config.rewrite, dconv_depth=config.dconv_depth)
        common_t = dict(common, freq=False, kernel_size=config.kernel_size,
                        stride=config.stride, pad=True)
        if last_freq:
            chout_z = max(chout, chout_z)
            chout = chout_z
        encoders.append(dict(common, dconv=bool(config.dconv_mode & 1), context=config.context_enc))
        if freq:
            tencoders.append(dict(common_t, dconv=bool(config.dconv_mode & 1),
                                  context=config.context_enc, empty=last_freq))
        if index == 0:
            chin = config.audio_channels * len(config.sources)
            chin_z = chin * 2
        decoders.insert(0, dict(common, chin=chout_z, dconv=bool(config.dconv_mode & 2),
                                last=index == 0, context=config.context))
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


class HTDemucs:
    """Inference-only HTDemucs with numpy weights in ``dtype`` (float32 or float64)."""

    # demucs.apply pads a chunk to the requested segment, not to valid_length, for HTDemucs
    segment_fixes_input_length = True

    def __init__(self, config: HTDemucsConfig, state: dict, dtype=np.float32, origin="HTDemucs"):
        reader = bind_model(self, config, state, dtype, origin)
        encoders, tencoders, decoders, tdecoders, freq_emb_size = _layer_plan(config)
        self.encoder = [HEncLayer(f"encoder.{i}", reader, **kw) for i, kw in enumerate(encoders)]
        self.tencoder = [HEncLayer(f"tencoder.{i}", reader, **kw) for i, kw in enumerate(tencoders)]
        self.decoder = [HDecLayer(f"decoder.{i}", reader, **kw) for i, kw in enumerate(decoders)]
        self.tdecoder = [HDecLayer(f"tdecoder.{i}", reader, **kw) for i, kw in enumerate(tdecoders)]
        self.freq_emb = None
        if freq_emb_size is not None:
            self.freq_emb = ScaledEmbedding("freq_emb", reader, config.emb_scale)
            self.freq_emb_scale = config.freq_emb
        self.bottom_channels = config.bottom_channels
        if config.bottom_channels:
            for name in ("channel_upsampler", "channel_downsampler",
                         "channel_upsampler_t", "channel_downsampler_t"):
                setattr(self, name, Conv(name, reader))
        self.crosstransformer = None
        if config.t_layers > 0:
            dim = config.channels * config.growth ** (config.depth - 1)
            if config.bottom_channels:
                dim = config.bottom_channels
            self.crosstransformer = CrossTransformerEncoder(
                "crosstransformer", reader, dim=dim, num_heads=config.t_heads,
                num_layers=config.t_layers, cross_first=config.t_cross_first,
                norm_in=config.t_norm_in, norm_first=config.t_norm_first,
                norm_out=config.t_norm_out, max_period=config.t_max_period,
                layer_scale=config.t_layer_scale, gelu_activation=config.t_gelu,
                weight_pos_embed=config.t_weight_pos_embed,
                sin_random_shift=config.t_sin_random_shift)
        reader.check_all_used()

    # -- parameters -------------------------------------------------------------------
    def layers(self):
        named = [*self.encoder, *self.tencoder, *self.decoder, *self.tdecoder]
        for name in ("freq_emb", "channel_upsampler", "channel_downsampler",
                     "channel_upsampler_t", "channel_downsampler_t", "crosstransformer"):
            layer = getattr(self, name, None)
            if layer is not None:
                named.append(layer)
        return named

    def parameters(self):
        """(PyTorch state-dict key, array) for every weight; arrays are live, edit in place."""
        for layer in self.layers():
            yield from layer.parameters()

    def draw_randomness(self, rng) -> int:
        """The draw demucs' transformer makes on every forward, ``randrange(shift + 1)``:
        the offset of the time branch's positional embedding (0 for the official models)."""
        if self.crosstransformer is None:
            return 0
        return rng.randrange(self.crosstransformer.sin_random_shift + 1)

    def valid_length(self, length: int) -> int:
        if not self.config.use_train_segment:
            return length
        training_length = int(self.segment * self.samplerate)
        if training_length < length:
            raise NumbaDemucsError(
                f"{self.origin}: a {length}-sample input is longer than the model's "
                f"{training_length}-sample training segment; use apply_model(split=True)")
        return training_length

    # -- spectrogram helpers (demucs' HTDemucs._spec, _ispec, _magnitude, _mask) ---------
    def _spec(self, x):
        hop = self.config.nfft // 4
        frames = int(math.ceil(x.shape[-1] / hop))
        pad = hop // 2 * 3
        padded = pad1d_reflect(x, pad, pad + frames * hop - x.shape[-1])
        z = spectral.stft(padded, self.config.nfft, hop)[:, :-1, :]
        return z[:, :, 2:2 + frames]

    def _ispec_of_mask(self, m, length):
        """demucs' ``_ispec(_mask(m), length)`` for ``m (S, 2C, Fr, T)``, one source channel
        at a time: its complex spectrum is written straight into the zero-padded array the
        iSTFT reads, so neither the whole complex mask nor its padded copy (44 MB each per
        segment) is made. The iSTFT works row by row anyway: the same values, the same bits."""
        sources, channels2, freqs, frames = m.shape
        pairs = m.reshape(sources * (channels2 // 2), 2, freqs, frames)
        hop = self.config.nfft // 4
        pad = hop // 2 * 3
        padded_length = hop * int(math.ceil(length / hop)) + 2 * pad
        out = np.empty((pairs.shape[0], length), dtype=m.dtype)

        def row(r):
            # complex64 for float32 (torch.view_as_complex), as _mask; padded as demucs'
            # _ispec pads: one frequency row above, two frames on each side
            z = np.zeros((1, freqs + 1, frames + 4), dtype=np.result_type(m.dtype, np.complex64))
            z.real[0, :freqs, 2:2 + frames] = pairs[r, 0]
            z.imag[0, :freqs, 2:2 + frames] = pairs[r, 1]
            out[r] = spectral.istft(z, hop, padded_length)[0, pad:pad + length]

        share(row, pairs.shape[0])  # rows are independent: a spare core may take some
        return out.reshape(sources, channels2 // 2, length)

    @staticmethod
    def _magnitude(z):
        """Complex as channels: ``(C, Fr, T)`` complex -> ``(2C, Fr, T)`` real, re/im interleaved."""
        channels, freqs, frames = z.shape
        stacked = np.stack([z.real, z.imag], axis=1)
        return np.ascontiguousarray(stacked.reshape(channels * 2, freqs, frames))

    @staticmethod
    def _mask(m):
        """``(S, 2C, Fr, T)`` real -> ``(S, C, Fr, T)`` complex (the cac inverse of _magnitude)."""
        sources, channels2, freqs, frames = m.shape
        pairs = m.reshape(sources, channels2 // 2, 2, freqs, frames)
        # complex64 for float32 (torch.view_as_complex), not the complex128 of ``re + 1j * im``
        z = np.empty(pairs[:, :, 0].shape, dtype=np.result_type(m.dtype, np.complex64))
        z.real = pairs[:, :, 0]
        z.imag = pairs[:, :, 1]
        return z

    # -- forward ------------------------------------------------------------------------
    def forward(self, mix, sin_shift: int = 0):
        """``mix (channels, samples)`` -> ``(sources, channels, samples)`` for one item.

        ``sin_shift`` is the offset demucs draws with ``random.randrange(t_sin_random_shift + 1)``
        for the time-branch positional embedding (always 0 for the official models).
        """
        try:
            return self._forward(mix, sin_shift)
        except (ValueError, IndexError) as error:
            # Layers check that their weights fit what reaches them; a checkpoint whose
            # tensors have the right names but wrong sizes ends here, not in a kernel.
            raise CheckpointError(f"{self.origin}: weights do not fit the architecture: {error}") from None

    def _forward(self, mix, sin_shift):
        dt = self.dtype.type
        mix = np.ascontiguousarray(mix, dtype=self.dtype)
        mix = trace.point("input.mix", mix)  # (C, L)
        length = mix.shape[-1]
        length_pre_pad = None
        training_length = length
        if self.config.use_train_segment:
            training_length = self.valid_length(length)
            if length < training_length:
                length_pre_pad = length
                mix = np.pad(mix, ((0, 0), (0, training_length - length)))  # (C, Lt)

        z = self._spec(mix)  # (C, Fr, T) complex, Fr = nfft / 2, T = ceil(Lt / hop)
        mag = trace.point("spec.magnitude", self._magnitude(z))  # (2C, Fr, T)
        mean = dt(mag.mean(dtype=np.float64))
        std = dt(mag.std(dtype=np.float64, ddof=1))
        x = (mag - mean) / (dt(1e-5) + std)
        del z, mag  # not used again: not held through the whole forward (16.5 MB)
        x = trace.point("input.freq", x)

        meant = dt(mix.mean(dtype=np.float64))
        stdt = dt(mix.std(dtype=np.float64, ddof=1))
        xt = (mix - meant) / (dt(1e-5) + stdt)
        xt = trace.point("input.time", xt)

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            # each layer divides freqs by its stride, the time layer samples by theirs:
            # x (channels, freqs / stride, T); xt (channels, frames / stride)
            if idx < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = self.tencoder[idx]
                if not tenc.empty:
                    # independent branches: the time layer on a spare core if there is one
                    xt, x = pair(lambda: tenc(xt), lambda: encode(x, None), aside=0)
                    saved_t.append(xt)
                else:
                    xt = inject = tenc(xt)
                    x = encode(x, inject)
            else:
                x = encode(x, inject)
            if idx == 0 and self.freq_emb is not None:
                emb = self.freq_emb(np.arange(x.shape[-2])).T[:, :, None]  # (channels, freqs, 1)
                if fused(x):
                    x += dt(self.freq_emb_scale) * emb  # x is the encoder's own output
                else:
                    x = x + dt(self.freq_emb_scale) * emb
            saved.append(x)

        if self.crosstransformer is not None:
            if self.bottom_channels:
                channels, freqs, frames = x.shape
                x = self.channel_upsampler(x.reshape(channels, freqs * frames))  # (bottom, freqs * frames)
                x = x.reshape(-1, freqs, frames)  # (bottom, freqs, frames)
                xt = self.channel_upsampler_t(xt)  # (bottom, time frames)
            x, xt = self.crosstransformer(x, xt, sin_shift)
            if self.bottom_channels:
                channels, freqs, frames = x.shape
                x = self.channel_downsampler(x.reshape(channels, freqs * frames))  # (channels, freqs * frames)
                x = x.reshape(-1, freqs, frames)  # (channels, freqs, frames)
                xt = self.channel_downsampler_t(xt)  # (channels, time frames)

        offset = self.config.depth - len(self.tdecoder)
        for idx, decode in enumerate(self.decoder):
            # the skips are handed over in lists, which the layers empty: each skip sum is
            # freed once the layer's rewrite has read it, before its transposed convolution
            skip, length = [saved.pop(-1)], lengths.pop(-1)
            tdec = self.tdecoder[idx - offset] if idx >= offset else None
            if tdec is not None and not tdec.empty:
                skip_t, length_t = [saved_t.pop(-1)], lengths_t.pop(-1)
                # independent branches: the time layer on a spare core if there is one
                def freq_layer():
                    # x rebound as the layer returns: its input, which holds its ``pre``
                    # (the rewrite's output), is not kept while the time layer runs
                    nonlocal x
                    x = decode(x, skip, length)[0]
                    return x

                x, xt = pair(freq_layer, lambda: tdec(xt, skip_t, length_t)[0])
                del skip_t
                pre = None
            else:
                x, pre = decode(x, skip, length)
                if tdec is not None:
                    # pre (channels, 1, T): the frequency axis is down to one row here
                    xt, _ = tdec(pre[:, 0], None, lengths_t.pop(-1))
            del pre, skip  # the largest decoders' inputs: not kept while the next layers run

        sources = len(self.sources)
        freqs, frames = x.shape[-2:]  # x (S * 2C, Fr, T)
        owned = fused(x)  # untraced, x and xt are the last decoders' own outputs
        x = x.reshape(sources, -1, freqs, frames)  # (S, 2C, Fr, T)
        if owned:
            x *= std  # (x * std) + mean in place, the same float32 operations
        else:
            x = x * std  # with one temporary, not two
        x += mean
        zout = self._ispec_of_mask(x, training_length)  # (S, C, Lt), via the complex mask
        del x
        x = trace.point("output.freq_branch", zout.astype(self.dtype, copy=False))  # (S, C, Lt)
        del zout
        xt = xt.reshape(sources, -1, training_length)  # (S * C, Lt) -> (S, C, Lt)
        if owned:
            xt *= stdt
            xt += meant
        else:
            xt = xt * stdt + meant
        xt = trace.point("output.time_branch", xt)
        if owned:
            xt += x  # xt + x in place (xt is contiguous, the iSTFT's x a view)
            out = xt
        else:
            out = xt + x
        if length_pre_pad:
            out = out[..., :length_pre_pad]  # (S, C, L)
        return trace.point("output.sources", np.ascontiguousarray(out))

    def __call__(self, mix, sin_shift: int = 0):
        """``mix (batch, channels, samples)`` -> ``(batch, sources, channels, samples)``."""
        return np.stack([self.forward(item, sin_shift) for item in mix])
