"""The cross-domain transformer, mirroring demucs' ``transformer.py``.

Tokens are ``(tokens, channels)`` for one item: the frequency branch flattened as
``(frames * freqs)`` with frames outer (demucs' ``"b c fr t1 -> b (t1 fr) c"``), the time
branch ``(frames, channels)``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import trace
from .._threads import pair
from ..kernels import activations
from ..kernels.attention import multi_head_attention
from .base import GroupNorm, LayerNorm, Layer, Linear, StateReader, fused, gelu
from .hdemucs import LayerScale


def sin_embedding(length, dim, shift=0, max_period=10000.0, dtype=np.float32):
    """demucs' ``create_sin_embedding`` as ``(length, dim)``: cos then sin of pos / period^(i/(d/2-1)).

    demucs builds it with torch's default dtype; the float32 steps (exponent, power,
    division) are reproduced one rounding at a time so that the result is the float32
    tensor demucs adds, not a more exact one that would differ from it.
    """
    half = dim // 2
    exponent = (np.arange(half, dtype=dtype) / dtype(half - 1)).astype(dtype)
    period = np.power(dtype(max_period), exponent, dtype=np.float64).astype(dtype)
    positions = (shift + np.arange(length)).astype(dtype)[:, None]
    phase = (positions / period[None, :]).astype(dtype)
    wide = phase.astype(np.float64)
    return np.concatenate([np.cos(wide), np.sin(wide)], axis=1).astype(dtype)


def sin_embedding_2d(dim, height, width, max_period=10000.0, dtype=np.float32):
    """demucs' ``create_2d_sin_embedding`` as ``(dim, height, width)``, same float32 care."""
    if dim % 4:
        raise ValueError(f"2-D sin/cos embedding needs a dimension divisible by 4, got {dim}")
    half = dim // 2
    div_term = np.exp((np.arange(0.0, half, 2, dtype=dtype) * dtype(-(math.log(max_period) / half)))
                      .astype(dtype).astype(np.float64)).astype(dtype)
    pos_w = (np.arange(width, dtype=dtype)[:, None] * div_term[None, :]).astype(np.float64)
    pos_h = (np.arange(height, dtype=dtype)[:, None] * div_term[None, :]).astype(np.float64)
    out = np.zeros((dim, height, width), dtype=dtype)
    out[0:half:2] = np.sin(pos_w).T[:, None, :]
    out[1:half:2] = np.cos(pos_w).T[:, None, :]
    out[half::2] = np.sin(pos_h).T[:, :, None]
    out[half + 1::2] = np.cos(pos_h).T[:, :, None]
    return out


class MultiheadAttention(Layer):
    """nn.MultiheadAttention(batch_first=True), no masks, key used as value."""

    def __init__(self, name, reader: StateReader, heads):
        super().__init__(name)
        self.in_proj_weight = reader.take(f"{name}.in_proj_weight")
        self.in_proj_bias = reader.take(f"{name}.in_proj_bias")
        self.out_proj = Linear(f"{name}.out_proj", reader)
        self.heads = heads

    def __call__(self, query, key):
        return self.emit(multi_head_attention(
            query, key, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight,
            self.out_proj.bias, self.heads))


class TokenGroupNorm(GroupNorm):
    """demucs' MyGroupNorm: GroupNorm over ``(tokens, channels)`` after moving channels first."""

    def __call__(self, x):
        normed = self.normalize(np.ascontiguousarray(x.T)[None])
        return self.emit(np.ascontiguousarray(normed[0].T))


class _TransformerLayerBase(Layer):
    def __init__(self, name, reader, *, heads, norm_first, norm_out, layer_scale, gelu_activation):
        super().__init__(name)
        self.norm_first = norm_first
        self.linear1 = Linear(f"{name}.linear1", reader)
        self.linear2 = Linear(f"{name}.linear2", reader)
        self.gelu_activation = gelu_activation
        identity = (lambda x: x)
        self.gamma_1 = LayerScale(f"{name}.gamma_1", reader, channel_last=True) if layer_scale else identity
        self.gamma_2 = LayerScale(f"{name}.gamma_2", reader, channel_last=True) if layer_scale else identity
        self.norm_out = None
        if norm_first and norm_out:
            self.norm_out = TokenGroupNorm(f"{name}.norm_out", reader, groups=int(norm_out), batched=True)

    def feed_forward(self, x):
        if self.gelu_activation and fused(x):
            # linear1's bias and the GELU in one pass over the (tokens, 4 * dim) hidden array
            hidden = self.linear1.product(x)
            activations.bias_gelu_rows_f32(hidden, self.linear1.bias)
        else:
            hidden = self.linear1(x)
            hidden = gelu(hidden) if self.gelu_activation else np.maximum(hidden, 0)
        return self.linear2(hidden)

    def finish(self, x):
        if self.norm_out is not None:
            x = self.norm_out(x)
        return self.emit(x)


class MyTransformerEncoderLayer(_TransformerLayerBase):
    """Self-attention layer (demucs' MyTransformerEncoderLayer on nn.TransformerEncoderLayer)."""

    def __init__(self, name, reader, *, heads, **options):
        super().__init__(name, reader, heads=heads, **options)
        self.self_attn = MultiheadAttention(f"{name}.self_attn", reader, heads)
        self.norm1 = LayerNorm(f"{name}.norm1", reader)
        self.norm2 = LayerNorm(f"{name}.norm2", reader)

    def __call__(self, x):
        if self.norm_first:
            normed = self.norm1(x)
            x = x + self.gamma_1(self.self_attn(normed, normed))
            x = x + self.gamma_2(self.feed_forward(self.norm2(x)))
        else:
            x = self.norm1(x + self.gamma_1(self.self_attn(x, x)))
            x = self.norm2(x + self.gamma_2(self.feed_forward(x)))
        return self.finish(x)


class CrossTransformerEncoderLayer(_TransformerLayerBase):
    """Cross-attention layer: queries from one branch, keys/values from the other."""

    def __init__(self, name, reader, *, heads, **options):
        super().__init__(name, reader, heads=heads, **options)
        self.cross_attn = MultiheadAttention(f"{name}.cross_attn", reader, heads)
        self.norm1 = LayerNorm(f"{name}.norm1", reader)
        self.norm2 = LayerNorm(f"{name}.norm2", reader)
        self.norm3 = LayerNorm(f"{name}.norm3", reader)

    def __call__(self, q, k):
        if self.norm_first:
            x = q + self.gamma_1(self.cross_attn(self.norm1(q), self.norm2(k)))
            x = x + self.gamma_2(self.feed_forward(self.norm3(x)))
        else:
            x = self.norm1(q + self.gamma_1(self.cross_attn(q, k)))
            x = self.norm2(x + self.gamma_2(self.feed_forward(x)))
        return self.finish(x)


class CrossTransformerEncoder(Layer):
    """Alternating self- and cross-attention layers over the two branches."""

    def __init__(self, name, reader: StateReader, *, dim, num_heads, num_layers, cross_first,
                 norm_in, norm_first, norm_out, max_period, layer_scale, gelu_activation,
                 weight_pos_embed, sin_random_shift):
        super().__init__(name)
        self.dim = dim
        self.max_period = max_period
        self.weight_pos_embed = weight_pos_embed
        self.sin_random_shift = sin_random_shift
        self.classic_parity = 1 if cross_first else 0
        if norm_in:
            self.norm_in = LayerNorm(f"{name}.norm_in", reader)
            self.norm_in_t = LayerNorm(f"{name}.norm_in_t", reader)
        else:
            self.norm_in = self.norm_in_t = (lambda x: x)
        options = dict(heads=num_heads, norm_first=norm_first, norm_out=norm_out,
                       layer_scale=layer_scale, gelu_activation=gelu_activation)
        self.layers, self.layers_t = [], []
        for index in range(num_layers):
            klass = (MyTransformerEncoderLayer if index % 2 == self.classic_parity
                     else CrossTransformerEncoderLayer)
            self.layers.append(klass(f"{name}.layers.{index}", reader, **options))
            self.layers_t.append(klass(f"{name}.layers_t.{index}", reader, **options))

    def __call__(self, x, xt, sin_shift=0):
        """``x (C, Fr, T1)``, ``xt (C, T2)`` -> same shapes. ``sin_shift``: demucs' random shift."""
        dtype = x.dtype.type
        channels, freqs, frames = x.shape
        pos_2d = sin_embedding_2d(channels, freqs, frames, self.max_period, dtype)
        tokens = np.ascontiguousarray(x.transpose(2, 1, 0).reshape(frames * freqs, channels))
        pos_2d = pos_2d.transpose(2, 1, 0).reshape(frames * freqs, channels)
        tokens = self.norm_in(tokens) + dtype(self.weight_pos_embed) * pos_2d

        tokens_t = np.ascontiguousarray(xt.T)
        pos_1d = sin_embedding(tokens_t.shape[0], channels, sin_shift, self.max_period, dtype)
        tokens_t = self.norm_in_t(tokens_t) + dtype(self.weight_pos_embed) * pos_1d

        for index, (layer, layer_t) in enumerate(zip(self.layers, self.layers_t)):
            # The branch inputs are traced where PyTorch sees them: as the first layers' inputs.
            if index == 0:
                tokens = trace.point(f"{self.name}.input.freq", tokens)
            # The two branches' layers read only the other's previous output: independent,
            # the time layer on a spare core if there is one (_threads.pair).
            def time_layer(index=index, layer_t=layer_t, q=tokens_t, k=tokens):
                if index == 0:
                    q = trace.point(f"{self.name}.input.time", q)
                return layer_t(q) if index % 2 == self.classic_parity else layer_t(q, k)

            if index % 2 == self.classic_parity:
                tokens, tokens_t = pair(lambda: layer(tokens), time_layer)
            else:
                tokens, tokens_t = pair(lambda: layer(tokens, tokens_t), time_layer)
        x = np.ascontiguousarray(tokens.reshape(frames, freqs, channels).transpose(2, 1, 0))
        xt = np.ascontiguousarray(tokens_t.T)
        return self.emit(x), xt

