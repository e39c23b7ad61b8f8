"""Encoder/decoder layers of the hybrid model, mirroring demucs' ``hdemucs.py`` and ``demucs.py``.

Shapes are for one item (no batch axis): the frequency branch is ``(channels, freqs, frames)``,
the time branch ``(channels, samples)``.
"""
from __future__ import annotations

import numpy as np

from .. import trace
from .._threads import share
from ..kernels import activations, conv, norm
from .base import (GELU, GLU, Conv, GroupNorm, Identity, Layer, StateReader, fused, gelu,
                   glu_channels)
from .local_state import LocalState
from .lstm import BLSTM


# Elements of a DConv branch's 1x1-conv output made at once (4 MB of float32)
GATE_BLOCK = 1 << 20


class LayerScale(Layer):
    """Per-channel scale of a residual branch; channel axis 1 (``(batch, C, T)``) or last."""

    def __init__(self, name, reader: StateReader, channel_last=False):
        super().__init__(name)
        self.scale = reader.take(f"{name}.scale")
        self.channel_last = channel_last

    def __call__(self, x):
        if self.channel_last:
            return self.emit(self.scale * x)
        return self.emit(self.scale[:, None] * x)


def _emit_rows(layer, x):
    """Trace point for a ``(channels, rows, n)`` array in PyTorch's ``(rows, channels, n)``.

    The point sees a transposed view (no copy when tracing is off); a replacement handed
    back by the capture is brought to our layout.
    """
    seen = x.transpose(1, 0, 2)
    replaced = layer.emit(seen)
    if replaced is seen:
        return x
    # a copy in every case: the branch below works in place on what this returns
    return np.array(np.asarray(replaced).transpose(1, 0, 2), order="C", copy=True)


class DConvBranch(Layer):
    """One ``nn.Sequential`` of DConv: dilated conv, GroupNorm, GELU, 1x1 conv, GroupNorm, GLU, LayerScale.

    Works channels first, ``(channels, rows, frames)``, where demucs has ``(rows, channels,
    frames)``: a frequency branch's ``(C, Fr, T)`` is then used as it is, the convolutions'
    GEMM output ``(out, rows * frames)`` is already the next input, and the 1x1 conv needs
    no column copy. Trace points still see PyTorch's layout.
    """

    def __init__(self, name, reader: StateReader, dilation, kernel=3, lstm=False, attn=False):
        super().__init__(name)
        self.conv_in = Conv(f"{name}.0", reader, padding=dilation * (kernel // 2), dilation=dilation)
        self.norm_in = GroupNorm(f"{name}.1", reader, groups=1, batched=True)
        self.activation = GELU(f"{name}.2")
        # demucs inserts the BLSTM, then LocalState, after the GELU (Sequential indices 3, 4)
        index = 3
        self.lstm = self.attn = None
        if lstm:
            self.lstm = BLSTM(f"{name}.{index}", reader, num_layers=2, max_steps=200, skip=True)
            index += 1
        if attn:
            self.attn = LocalState(f"{name}.{index}", reader, heads=4, ndecay=4)
            index += 1
        self.conv_out = Conv(f"{name}.{index}", reader)
        self.norm_out = GroupNorm(f"{name}.{index + 1}", reader, groups=1, batched=True)
        self.gate = GLU(f"{name}.{index + 2}")
        self.layer_scale = LayerScale(f"{name}.{index + 3}", reader)

    def _recurrent(self, y):
        """The BLSTM and LocalState on ``(hidden, rows, frames)``, in PyTorch's ``(rows,
        hidden, frames)`` for them (their trace points see that layout as it is)."""
        if self.lstm is None and self.attn is None:
            return y
        z = np.ascontiguousarray(y.transpose(1, 0, 2))
        if self.lstm is not None:
            z = self.lstm(z)
        if self.attn is not None:
            z = self.attn(z)
        return np.ascontiguousarray(z.transpose(1, 0, 2))

    def _conv(self, layer, x):
        if x.shape[0] != layer.weight.shape[1]:
            raise ValueError(f"{layer.name} takes {layer.weight.shape[1]} channels, got an input "
                             f"of shape {x.transpose(1, 0, 2).shape}")
        return _emit_rows(layer, conv.conv1d_rows(x, layer.weight, layer.bias, layer.padding,
                                                  layer.dilation))

    def _norm(self, layer, x):
        # in place: x is this branch's own array (see _emit_rows) and is not needed again
        norm.group_norm_channels_first(x, 1, layer.weight, layer.bias, layer.eps, x)
        return _emit_rows(layer, x)

    def add_into(self, x):
        """``x += branch(x)`` for float32 ``x (channels, rows, frames)``, untraced, in three
        kernels: the dilated conv; GroupNorm + GELU; the 1x1 conv's GEMM, then its bias,
        GroupNorm, GLU, LayerScale and the residual sum in one pass. Same bits as
        ``x += self(x)``: each fused kernel rounds where the separate layers do. A branch
        with a BLSTM or LocalState runs its layers one by one."""
        if self.lstm is not None or self.attn is not None:
            x += self(x)
            return x
        hidden = self.conv_in.weight.shape[0]
        channels, rows, frames = x.shape
        if channels != self.conv_in.weight.shape[1]:
            raise ValueError(f"{self.conv_in.name} takes {self.conv_in.weight.shape[1]} channels, "
                             f"got an input of shape {x.transpose(1, 0, 2).shape}")
        h = conv.conv1d_rows(x, self.conv_in.weight, self.conv_in.bias, self.conv_in.padding,
                             self.conv_in.dilation)
        norm.group_norm_gelu_f32(h, 1, self.norm_in.weight, self.norm_in.bias,
                                 self.norm_in.eps, h)
        # A few rows at a time: GroupNorm is per row here (PyTorch's batch axis), so the 1x1
        # conv's output need not exist whole (66 MB in the first frequency layer), and a
        # block of it is still in cache when the gating pass reads it back.
        w_out = self.conv_out.weight.reshape(2 * channels, hidden)
        step = max(1, GATE_BLOCK // (2 * channels * frames))

        def gate_block(block):
            # blocks write disjoint rows of x: a spare core may take some (share)
            r0 = block * step
            r1 = min(rows, r0 + step)
            gates = w_out @ h[:, r0:r1].reshape(hidden, -1)
            norm.gated_residual_f32(gates.reshape(2 * channels, r1 - r0, frames),
                                    self.conv_out.bias, self.norm_out.weight, self.norm_out.bias,
                                    self.norm_out.eps, self.layer_scale.scale, x, r0)

        share(gate_block, -(-rows // step))
        return x

    def __call__(self, x):
        """``x (channels, rows, frames)`` -> the branch's output, same layout, a new array."""
        y = self._norm(self.norm_in, self._conv(self.conv_in, x))
        y = _emit_rows(self.activation, activations.gelu(y, out=y))
        y = self._recurrent(y)
        y = self._norm(self.norm_out, self._conv(self.conv_out, y))
        channels, rows, frames = y.shape
        y = activations.glu(y.reshape(1, channels, rows * frames)).reshape(channels // 2, rows, frames)
        y = _emit_rows(self.gate, y)
        y *= self.layer_scale.scale[:, None, None]
        y = _emit_rows(self.layer_scale, y)
        return _emit_rows(self, y)


class DConv(Layer):
    """Residual branches of dilated convolutions on ``(channels, rows, frames)`` (see DConvBranch)."""

    def __init__(self, name, reader: StateReader, depth, lstm=False, attn=False):
        super().__init__(name)
        self.layers = [DConvBranch(f"{name}.layers.{d}", reader, dilation=2 ** d, lstm=lstm,
                                   attn=attn)
                       for d in range(depth)]

    def __call__(self, x):
        """May overwrite ``x`` (the callers pass an array of their own)."""
        if fused(x):
            for branch in self.layers:
                x = branch.add_into(x)
            return x
        for branch in self.layers:
            y = branch(x)
            y += x  # the branch's output is its own: x + y without another array
            x = y
        return _emit_rows(self, x)


def _rewrite_glu(rewrite: Conv, norm_layer, y, out=None):
    """``glu(norm(rewrite(y)))``; for a frequency layer without a norm, untraced, in float32,
    the conv's output rows are gated block by block (conv.conv2d_glu, same bits), into
    ``out`` if it is given and fits."""
    if rewrite.two_d and isinstance(norm_layer, Identity) and fused(y):
        if y.shape[0] != rewrite.weight.shape[1]:
            raise ValueError(f"{rewrite.name} takes {rewrite.weight.shape[1]} channels, got an "
                             f"input of shape {y.shape}")
        return conv.conv2d_glu(y, rewrite.weight, rewrite.bias, rewrite.padding, out=out)
    return glu_channels(norm_layer(rewrite(y)))


def _compact_target(z):
    """Where a C-contiguous array of crop view ``z``'s shape can lie inside ``z``'s own
    buffer, at its start (or ``z`` itself when it is contiguous), or None.

    ``z`` must be a crop of an array nothing else uses (a transposed convolution's output).
    Every element's place in the target is at or before its place in ``z`` (``z``'s strides
    are no smaller), so a pass that reads ``z`` in memory order and writes each element at
    its target place never overwrites an element it has not read yet."""
    if z.flags.c_contiguous:
        return z
    base = z.base
    if base is None or not base.flags.c_contiguous or not base.flags.writeable \
            or base.dtype != z.dtype:
        return None
    out = base.reshape(-1)[:z.size].reshape(z.shape)
    if any(a < b for a, b in zip(z.strides, out.strides)):
        return None
    return out


def _compact(z):
    """A C-contiguous array of crop view ``z``'s values, made inside ``z``'s own buffer
    (``_compact_target``), channel by channel in memory order, so the last decoders'
    outputs (44 MB and 11 MB per segment) are not copied once more. Only values are moved:
    the same bits."""
    out = _compact_target(z)
    if out is None:
        return np.ascontiguousarray(z)
    if out is not z:
        for c in range(z.shape[0]):
            out[c] = z[c]  # numpy buffers the source where the two ranges overlap
    return out


def _dconv_on_freq_rows(dconv: DConv, y):
    """Run DConv on every frequency row of ``(C, Fr, T)`` as a batch, as demucs does."""
    return dconv(np.ascontiguousarray(y))


def _dconv_on_time(dconv: DConv, y):
    """Run DConv on a time branch's ``(C, T)``: one row."""
    return dconv(np.ascontiguousarray(y)[:, None, :])[:, 0, :]


class HEncLayer(Layer):
    """Strided conv (+ injected time branch) -> norm -> GELU -> DConv -> 1x1 rewrite -> GLU."""

    def __init__(self, name, reader: StateReader, *, kernel_size, stride, freq, pad, norm,
                 norm_groups, rewrite, dconv, dconv_depth, context=0, empty=False,
                 dconv_lstm=False, dconv_attn=False):
        super().__init__(name)
        self.freq = freq
        self.stride = stride
        self.empty = empty
        padding = kernel_size // 4 if pad else 0
        if freq:
            self.conv = Conv(f"{name}.conv", reader, stride=(stride, 1), padding=(padding, 0))
        else:
            self.conv = Conv(f"{name}.conv", reader, stride=stride, padding=padding)
        if empty:
            return
        make_norm = (lambda n: GroupNorm(n, reader, norm_groups)) if norm else (lambda n: Identity(n))
        self.norm1 = make_norm(f"{name}.norm1")
        self.rewrite = None
        if rewrite:
            self.rewrite = Conv(f"{name}.rewrite", reader, padding=context)
            self.norm2 = make_norm(f"{name}.norm2")
        self.dconv = DConv(f"{name}.dconv", reader, dconv_depth, lstm=dconv_lstm,
                           attn=dconv_attn) if dconv else None

    def __call__(self, x, inject=None):
        if not self.freq:
            if x.ndim == 3:
                x = x.reshape(-1, x.shape[-1])
            remainder = x.shape[-1] % self.stride
            if remainder:
                x = np.pad(x, ((0, 0), (0, self.stride - remainder)))
        y = self.conv(x)
        if self.empty:
            return self.emit(y)
        if inject is not None:
            if inject.shape[-1] != y.shape[-1]:
                raise ValueError(f"{self.name}: injected time branch has {inject.shape[-1]} "
                                 f"frames, frequency branch {y.shape[-1]}")
            y = y + (inject[:, None, :] if inject.ndim == 2 and y.ndim == 3 else inject)
        y = self.norm1(y)
        # untraced, y is this layer's own array from here on: GELU in place, and a
        # pointwise rewrite writes its gated rows over the rows it has read (conv2d_glu)
        own = fused(y) and y.flags.c_contiguous
        y = gelu(y, out=y if own else None)
        if self.dconv is not None:
            y = _dconv_on_freq_rows(self.dconv, y) if self.freq else _dconv_on_time(self.dconv, y)
        if self.rewrite is not None:
            y = _rewrite_glu(self.rewrite, self.norm2, y, out=y if own else None)
        return self.emit(y)


class HDecLayer(Layer):
    """Skip add -> rewrite -> GLU -> DConv -> transposed conv -> norm -> crop (-> GELU)."""

    def __init__(self, name, reader: StateReader, *, chin, kernel_size, stride, freq, pad, norm,
                 norm_groups, rewrite, dconv, dconv_depth, context=1, last=False, empty=False,
                 dconv_lstm=False, dconv_attn=False, context_freq=True):
        super().__init__(name)
        self.freq = freq
        self.chin = chin
        self.last = last
        self.empty = empty
        self.pad = kernel_size // 4 if pad else 0
        make_norm = (lambda n: GroupNorm(n, reader, norm_groups)) if norm else (lambda n: Identity(n))
        stride_arg = (stride, 1) if freq else stride
        self.conv_tr = Conv(f"{name}.conv_tr", reader, transposed=True, stride=stride_arg)
        self.norm2 = make_norm(f"{name}.norm2")
        if empty:
            return
        self.rewrite = None
        if rewrite:
            # context_freq=False (MultiWrap's decoders): a (1, 1 + 2 context) kernel
            padding = context if context_freq or not freq else (0, context)
            self.rewrite = Conv(f"{name}.rewrite", reader, padding=padding)
            self.norm1 = make_norm(f"{name}.norm1")
        self.dconv = DConv(f"{name}.dconv", reader, dconv_depth, lstm=dconv_lstm,
                           attn=dconv_attn) if dconv else None

    def __call__(self, x, skip, length):
        """Returns ``(output, pre)``, ``pre`` being the input of the transposed convolution.

        Untraced, ``x`` and ``skip`` are overwritten (the model's own arrays, not needed
        again): the skip sum is made in ``skip`` and the rewrite's output written into
        ``x``. ``skip`` may be handed over as a one-element list, which is emptied, so that
        the sum is freed as soon as the rewrite has read it."""
        if isinstance(skip, list):
            skip = skip.pop()
        if self.freq and x.ndim == 2:
            x = x.reshape(self.chin, -1, x.shape[-1])
        if not self.empty:
            spare = None
            if trace.enabled() or skip.shape != x.shape:
                x = x + skip
            else:
                skip += x  # the skip is this call's own (popped by the model): no new array
                x, spare = skip, x  # x is dead now: the rewrite may write into it
            del skip
            y = _rewrite_glu(self.rewrite, self.norm1, x, spare) if self.rewrite is not None else x
            del x, spare  # the skip sum, once read (freed here when it was handed over)
            if self.dconv is not None:
                y = _dconv_on_freq_rows(self.dconv, y) if self.freq else _dconv_on_time(self.dconv, y)
        else:
            if skip is not None:
                raise ValueError(f"{self.name}: an empty decoder layer takes no skip connection")
            y = x
        if not self.last and isinstance(self.norm2, Identity) and fused(y):
            return self._transposed_gelu(y, length), y
        z = self._crop(self.norm2(self.conv_tr(y)), length)
        if not self.last:
            z = gelu(np.ascontiguousarray(z))
        elif not trace.enabled():
            z = _compact(z)  # the output's own buffer: no second copy of the largest tensor
        return self.emit(np.ascontiguousarray(z)), y

    def _crop(self, z, length):
        """The transposed convolution's output without its padding (a view)."""
        if self.freq:
            return z[:, self.pad:-self.pad, :] if self.pad else z
        z = z[:, self.pad:self.pad + length]
        if z.shape[-1] != length:
            raise ValueError(f"{self.name}: output has {z.shape[-1]} samples, expected {length}")
        return z

    def _transposed_gelu(self, y, length):
        """Untraced ``gelu(crop(conv_tr(y)))`` without a norm: the transposed convolution's
        bias, the crop and the GELU in one pass (same bits as the separate steps)."""
        layer = self.conv_tr
        transposed = conv.conv_transpose2d if self.freq else conv.conv_transpose1d
        z = self._crop(transposed(y, layer.weight, None, layer.stride), length)
        # into the transposed output's own buffer (the kernel reads each chunk before it
        # writes it, in memory order): no second array of the layer's largest tensor
        out = _compact_target(z)
        if out is None:
            out = np.empty(z.shape, dtype=z.dtype)
        rows = (lambda a: a if a.ndim == 3 else a[:, None, :])
        activations.bias_gelu_channels_f32(rows(z), layer.bias, rows(out))
        return self.emit(out)


class ScaledEmbedding(Layer):
    """demucs.hdemucs.ScaledEmbedding: an embedding table multiplied by ``scale`` on lookup."""

    def __init__(self, name, reader: StateReader, scale):
        super().__init__(name)
        self.embedding = Embedding(f"{name}.embedding", reader)
        self.scale = scale

    def __call__(self, indices):
        looked_up = self.embedding.emit(self.embedding.weight[indices])
        return self.emit(looked_up * looked_up.dtype.type(self.scale))


class Embedding(Layer):
    """nn.Embedding's table (looked up by the owner)."""

    def __init__(self, name, reader: StateReader):
        super().__init__(name)
        self.weight = reader.take(f"{name}.weight")
