"""What every layer shares: its PyTorch module path, its weights, a way to emit trace points."""
from __future__ import annotations

import numpy as np

from .. import trace
from ..errors import CheckpointError
from ..kernels import activations, conv, norm


def fused(x) -> bool:
    """Whether layers may run their fused float32 kernels on ``x``: float32, and no trace
    capture active (under one every module runs on its own, so its output is seen and can
    be replaced). The fused kernels give the same bits as the separate ones."""
    return x.dtype == np.float32 and not trace.enabled()


class StateReader:
    """Hands out a checkpoint's tensors by module path, converted to the model dtype.

    Keeps track of what was taken so the model can refuse a state with unused or
    missing entries, as ``load_state_dict(strict=True)`` does.
    """

    def __init__(self, state: dict, dtype, origin: str):
        self._state = state
        self.dtype = np.dtype(dtype)
        self.origin = origin
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple | None = None) -> np.ndarray:
        if key not in self._state:
            raise CheckpointError(f"{self.origin}: missing weight {key}")
        value = np.ascontiguousarray(np.asarray(self._state[key]), dtype=self.dtype)
        if shape is not None and value.shape != tuple(shape):
            raise CheckpointError(
                f"{self.origin}: weight {key} has shape {value.shape}, expected {tuple(shape)}")
        self.used.add(key)
        return value

    def check_all_used(self):
        unused = sorted(set(self._state) - self.used)
        if unused:
            shown = ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "")
            raise CheckpointError(
                f"{self.origin}: {len(unused)} weights do not belong to this architecture: {shown}")


class Layer:
    """A module of the PyTorch tree: ``name`` is its dotted path (``encoder.0.dconv``)."""

    def __init__(self, name: str):
        self.name = name

    def emit(self, array):
        return trace.point(self.name, array)

    def parameters(self):
        """(name, array) for every weight this layer owns directly or through sublayers."""
        for attribute, value in vars(self).items():
            if isinstance(value, np.ndarray):
                yield f"{self.name}.{attribute}", value
            elif isinstance(value, Layer):
                yield from value.parameters()
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, Layer):
                        yield from item.parameters()


class Conv(Layer):
    """nn.Conv1d / nn.Conv2d / nn.ConvTranspose1d / nn.ConvTranspose2d with its geometry.

    The kind follows the weight's rank and ``transposed``; ``stride``/``padding``/``dilation``
    are per spatial axis as PyTorch stores them.
    """

    def __init__(self, name, reader: StateReader, transposed=False, stride=1, padding=0,
                 dilation=1):
        super().__init__(name)
        self.weight = reader.take(f"{name}.weight")
        out_channels = self.weight.shape[1] if transposed else self.weight.shape[0]
        self.bias = reader.take(f"{name}.bias", (out_channels,))
        self.transposed = transposed
        self.two_d = self.weight.ndim == 4
        pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
        self.stride = pair(stride) if self.two_d else stride
        self.padding = pair(padding) if self.two_d else padding
        self.dilation = dilation

    def __call__(self, x):
        in_channels = self.weight.shape[0] if self.transposed else self.weight.shape[1]
        channel_axis = x.ndim - (3 if self.two_d else 2)
        if x.shape[channel_axis] != in_channels:
            raise ValueError(f"{self.name} takes {in_channels} channels, got an input of shape {x.shape}")
        if self.transposed:
            if self.two_d:
                out = conv.conv_transpose2d(x, self.weight, self.bias, self.stride)
            else:
                out = conv.conv_transpose1d(x, self.weight, self.bias, self.stride)
        elif self.two_d:
            out = conv.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        elif x.ndim == 2:
            out = conv.conv1d(x[None], self.weight, self.bias, self.stride, self.padding,
                              self.dilation)[0]
        else:
            out = conv.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return self.emit(out)


class Linear(Layer):
    """nn.Linear on ``(..., features)``."""

    def __init__(self, name, reader: StateReader):
        super().__init__(name)
        self.weight = reader.take(f"{name}.weight")
        self.bias = reader.take(f"{name}.bias")

    def __call__(self, x):
        out = self.product(x)
        out += self.bias
        return self.emit(out)

    def product(self, x):
        """``x @ weightᵀ``, without the bias."""
        return x @ self.weight.T


class GroupNorm(Layer):
    """nn.GroupNorm; input ``(channels, ...)`` for one item or ``(batch, channels, ...)``."""

    def __init__(self, name, reader: StateReader, groups, eps=1e-5, batched=False):
        super().__init__(name)
        self.weight = reader.take(f"{name}.weight")
        self.bias = reader.take(f"{name}.bias", self.weight.shape)
        self.groups = groups
        self.eps = eps
        self.batched = batched

    def __call__(self, x):
        return self.emit(self.normalize(x))

    def normalize(self, x):
        items = x if self.batched else x[None]
        if items.shape[1] != self.weight.shape[0] or items.shape[1] % self.groups:
            raise ValueError(f"{self.name} normalises {self.weight.shape[0]} channels in "
                             f"{self.groups} groups, got an input of shape {x.shape}")
        flat = np.ascontiguousarray(items).reshape(items.shape[0], items.shape[1], -1)
        out = norm.group_norm(flat, self.groups, self.weight, self.bias, self.eps)
        out = out.reshape(items.shape)
        return out if self.batched else out[0]


class LayerNorm(Layer):
    """nn.LayerNorm over the last axis of ``(tokens, features)``."""

    def __init__(self, name, reader: StateReader, eps=1e-5):
        super().__init__(name)
        self.weight = reader.take(f"{name}.weight")
        self.bias = reader.take(f"{name}.bias", self.weight.shape)
        self.eps = eps

    def __call__(self, x):
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"{self.name} normalises {self.weight.shape[0]} features, "
                             f"got an input of shape {x.shape}")
        return self.emit(norm.layer_norm(np.ascontiguousarray(x), self.weight, self.bias, self.eps))


class Identity(Layer):
    """nn.Identity (a norm that is switched off); still a trace point, as its hook is in PyTorch."""

    def __call__(self, x):
        return self.emit(x)


class GELU(Layer):
    def __call__(self, x):
        return self.emit(activations.gelu(x))


class GLU(Layer):
    """nn.GLU(dim=1) on ``(batch, 2 * channels, ...)``."""

    def __call__(self, x):
        flat = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
        out = activations.glu(flat).reshape((x.shape[0], x.shape[1] // 2) + x.shape[2:])
        return self.emit(out)


def glu_channels(x):
    """F.glu(dim=1) for one item ``(2 * channels, ...)``."""
    flat = np.ascontiguousarray(x).reshape(1, x.shape[0], -1)
    return activations.glu(flat).reshape((x.shape[0] // 2,) + x.shape[1:])


def gelu(x, out=None):
    return activations.gelu(x, out=out)
