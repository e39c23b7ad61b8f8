"""DiffQ-quantized demucs states (mdx_q, mdx_extra_q) read without torch or diffq.

demucs saves a quantized model's ``state`` as diffq's ``get_quantized_state()`` plus
``'__quantized': True``. That state holds no parameter names: ``'quantized'`` (one entry per
large parameter), ``'float16'`` and ``'others'`` (small parameters, kept as they are) are
matched by position against the model's parameters in ``named_modules()`` order, a parameter
going to ``others`` when it has at most ``min_size * 2**20 // 4`` values. So the reader needs
the architecture's parameter layout, ``[(name, shape), ...]`` in PyTorch order (see
:func:`demucs_layout`), to turn the state back into a name -> array dict.

A quantized entry (diffq ``DiffQuantizer``, group size G, N = numel / G groups) is
``(levels, (mn, mx), bits)``: bits[g] is the bit width of group g, levels the integer level
of each value; the value is ``level / (2**bits - 1) * (mx - mn) + mn`` in float32 (mn, mx
are the whole tensor's min and max). Packed (the default), levels of the groups with b bits
are bit-packed together for b = 1..14 and ``bits - min_bits`` is bit-packed too; numpy
(``bitpack``, uint64 words) or ``torch_pack`` (int16/uint8 words) packing. Every count and
width is checked against the buffers before any is read.
"""
from __future__ import annotations

import numpy as np

from .errors import UnsupportedModelError

DIFFQ_CLASS = "diffq.diffq.DiffQuantizer"
# DiffQuantizer's defaults for the arguments a state may omit (diffq 0.2.x __init__).
_DEFAULTS = {"min_size": 0.01, "float16": False, "group_size": 1, "min_bits": 2,
             "max_bits": 15, "param": "bits", "noise": "gaussian", "init_bits": 8,
             "extra_bits": 0, "suffix": "_diffq", "exclude": [], "detect_bound": True}
_BITPACK_LINE = 2048  # values per line of diffq's bitpack (64 bit positions x 32 words)


class QuantizedStateError(ValueError):
    """A quantized state that does not decode; the caller names the file."""


def _unsupported(path, what):
    return UnsupportedModelError(f"{path}: diffq layout {what} is not supported")


def _bitpack_unpack(packed, length, path, what):
    """diffq ``bitpack.unpack``: int64 [lines, nbits, 32] words; value v = line*2048 + j*32 + i
    has bit k at bit j of word (line, k, i)."""
    if not (isinstance(packed, np.ndarray) and packed.ndim == 3 and packed.shape[2] == 32
            and packed.dtype in (np.int64, np.uint64)):
        raise QuantizedStateError(f"{what}: packed buffer of shape "
                                  f"{getattr(packed, 'shape', None)} is not [lines, nbits, 32] int64")
    lines, nbits, _ = packed.shape
    if not 1 <= nbits <= 16:
        raise QuantizedStateError(f"{what}: packed with {nbits} bits per value")
    if length > lines * _BITPACK_LINE:
        raise QuantizedStateError(f"{what}: needs {length} values, the packed buffer holds "
                                  f"{lines * _BITPACK_LINE}")
    # Only the lines that hold the wanted values; bit j of word (line, k, i) is value
    # (line, j, i) in row-major order, so a [lines, 64, 32] array flattens to value order.
    used = -(-length // _BITPACK_LINE)
    words = packed[:used].view(np.uint64)
    shifts = np.arange(64, dtype=np.uint64)[None, :, None]
    out = np.zeros((used, 64, 32), np.int64)
    for k in range(nbits):
        out |= ((words[:, k, None, :] >> shifts) & np.uint64(1)).astype(np.int64) << k
    return out.reshape(-1)[:length]


def _torch_pack_unpack(packed, length, path, what):
    """diffq ``torch_pack.unpack``: words [nbits, G] of 16 (int16) or 8 (uint8) bits; value
    v = s*G + g has bit k at bit s of word (k, g)."""
    storage = {np.dtype(np.int16): 16, np.dtype(np.uint8): 8}.get(getattr(packed, "dtype", None))
    if storage is None or packed.ndim != 2:
        raise QuantizedStateError(f"{what}: torch_pack buffer is not [nbits, G] int16/uint8")
    nbits, groups = packed.shape
    if nbits > 16:
        raise QuantizedStateError(f"{what}: packed with {nbits} bits per value")
    if length > storage * groups:
        raise QuantizedStateError(f"{what}: needs {length} values, the packed buffer holds "
                                  f"{storage * groups}")
    words = packed.view(np.uint16 if storage == 16 else np.uint8).astype(np.int64)
    shifts = np.arange(storage, dtype=np.int64)[:, None]
    out = np.zeros((storage, groups), np.int64)  # [s, g] is value s * G + g
    for k in range(nbits):
        out |= ((words[k][None, :] >> shifts) & 1) << k
    return out.reshape(-1)[:length]


def _meta(state, path):
    for key in ("quantized", "float16", "others"):
        if not isinstance(state.get(key), list):
            raise _unsupported(path, f"without a '{key}' list")
    meta = state.get("meta")
    if meta is None:
        # Before diffq 0.2.0's meta (2021-10): unpacked entries, kwargs unknown.
        raise _unsupported(path, "without 'meta' (pre-0.2 diffq)")
    if not isinstance(meta, dict) or not isinstance(meta.get("init_kwargs"), dict):
        raise _unsupported(path, "with a malformed 'meta'")
    klass = getattr(meta.get("klass"), "qualified_name", meta.get("klass"))
    if klass != DIFFQ_CLASS:
        raise _unsupported(path, f"of quantizer {klass!r} (only {DIFFQ_CLASS})")
    unknown = set(meta["init_kwargs"]) - set(_DEFAULTS)
    if unknown:
        raise _unsupported(path, f"with quantizer arguments {sorted(unknown)}")
    kwargs = {**_DEFAULTS, **meta["init_kwargs"]}
    if kwargs["exclude"]:
        raise _unsupported(path, f"with excluded parameters {kwargs['exclude']!r}")
    group_size, min_bits = kwargs["group_size"], kwargs["min_bits"]
    if not (isinstance(group_size, int) and group_size >= 0
            and isinstance(min_bits, (int, float)) and float(min_bits).is_integer()
            and 0 <= min_bits <= 15 and isinstance(kwargs["min_size"], (int, float))):
        raise _unsupported(path, f"with group_size {group_size!r}, min_bits {min_bits!r}")
    return kwargs, bool(meta.get("packed", False)), bool(meta.get("torch_pack", False))


def dequantize(state: dict, layout, path) -> dict[str, np.ndarray]:
    """The plain ``name -> array`` state of a diffq quantized ``state`` for a model whose
    parameters are ``layout`` (``[(name, shape)]`` in ``named_modules()`` order).

    Raises UnsupportedModelError for a layout diffq does not write as we read it, and
    QuantizedStateError (a ValueError) for entries that do not fit their parameters.
    """
    kwargs, packed, torch_pack = _meta(state, path)
    min_params = kwargs["min_size"] * 2 ** 20 // 4
    group_size = kwargs["group_size"]
    min_bits = int(kwargs["min_bits"])
    unpack = _torch_pack_unpack if torch_pack else _bitpack_unpack
    small = [(n, s) for n, s in layout if int(np.prod(s)) <= min_params]
    large = [(n, s) for n, s in layout if int(np.prod(s)) > min_params]
    small_values = state["float16"] if kwargs["float16"] else state["others"]
    unused = state["others"] if kwargs["float16"] else state["float16"]
    if len(small_values) != len(small) or unused or len(state["quantized"]) != len(large):
        raise QuantizedStateError(
            f"the quantized state holds {len(state['quantized'])} quantized and "
            f"{len(state['others']) + len(state['float16'])} plain parameters; this architecture "
            f"has {len(large)} and {len(small)}")
    result = {}
    for (name, shape), value in zip(small, small_values):
        if not isinstance(value, np.ndarray) or value.shape != tuple(shape) \
                or value.dtype.kind != "f":
            raise QuantizedStateError(
                f"{name}: stored as {getattr(value, 'shape', type(value).__name__)}, "
                f"expected a float tensor of shape {tuple(shape)}")
        result[name] = value.astype(np.float32)
    for (name, shape), entry in zip(large, state["quantized"]):
        result[name] = _dequantize_param(entry, name, tuple(shape), group_size, min_bits,
                                         packed, unpack, path)
    return {name: result[name] for name, _ in layout}


def _dequantize_param(entry, name, shape, group_size, min_bits, packed, unpack, path):
    numel = int(np.prod(shape))
    size = group_size or numel
    if numel % size:
        raise QuantizedStateError(f"{name}: {numel} values do not split into groups of {size}")
    groups = numel // size
    if not (isinstance(entry, tuple) and len(entry) == 3):
        raise QuantizedStateError(f"{name}: a quantized entry is not (levels, scales, bits)")
    levels_entry, scales, bits_entry = entry
    if not (isinstance(scales, tuple) and len(scales) == 2
            and all(isinstance(v, float) for v in scales)):
        raise QuantizedStateError(f"{name}: scales {str(scales)[:40]} are not (min, max)")
    if packed:
        if not (isinstance(levels_entry, list) and len(levels_entry) == 14):
            raise _unsupported(path, f"with {name}'s packed levels not a list of 14 bit widths")
        bits = unpack(bits_entry, groups, path, f"{name} bit widths") + min_bits
    else:
        bits = bits_entry
        if not isinstance(bits, np.ndarray) or bits.dtype.kind not in "ui":
            raise QuantizedStateError(f"{name}: bit widths are not an integer tensor")
        if bits.ndim == 2 and bits.shape[1] == 1:  # diffq before 0.2.3 kept [N, 1]
            bits = bits[:, 0]
        if bits.shape != (groups,):
            raise QuantizedStateError(f"{name}: {bits.shape} bit widths for {groups} groups")
        bits = bits.astype(np.int64)
    if bits.min() < 1 or bits.max() > 14:
        # diffq packs widths 1..14 only; a 15-bit group would restore as uninitialised memory.
        raise QuantizedStateError(f"{name}: bit width {int(bits.min() if bits.min() < 1 else bits.max())} "
                                  "outside 1..14")
    if packed:
        levels = np.zeros((groups, size), np.int64)
        for index, sub in enumerate(levels_entry):
            selected = bits == index + 1
            count = int(selected.sum())
            if sub is None:
                if count:
                    raise QuantizedStateError(f"{name}: {count} groups of {index + 1} bits "
                                              "have no packed levels")
                continue
            values = unpack(sub, count * size, path, f"{name} {index + 1}-bit levels")
            levels[selected] = values.reshape(count, size)
    else:
        levels = levels_entry
        if not (isinstance(levels, np.ndarray) and levels.dtype.kind in "ui"
                and levels.shape == (groups, size)):
            raise QuantizedStateError(f"{name}: levels of shape {getattr(levels, 'shape', None)}, "
                                      f"expected {(groups, size)}")
        levels = levels.astype(np.int64)
    if (levels >= (1 << bits)[:, None]).any() or (levels < 0).any():
        raise QuantizedStateError(f"{name}: a level does not fit its group's bit width")
    mn, mx = scales
    # As torch computes it: unit = 1 / (2**bits - 1) and the product in float32, the Python
    # floats (mx - mn) and mn rounded to float32 as scalar operands.
    unit = np.float32(1) / (np.float32(2) ** bits.astype(np.float32) - np.float32(1))
    value = levels.astype(np.float32) * unit[:, None]
    value = value * np.float32(mx - mn) + np.float32(mn)
    return value.reshape(shape)


# -- parameter layouts, in the order nn.Module.named_modules() visits them ------------------

def _conv(prefix, cout, cin, *kernel):
    return [(f"{prefix}.weight", (cout, cin, *kernel)), (f"{prefix}.bias", (cout,))]


def _conv_tr(prefix, cin, cout, *kernel):
    return [(f"{prefix}.weight", (cin, cout, *kernel)), (f"{prefix}.bias", (cout,))]


def _norm(prefix, channels):
    return [(f"{prefix}.weight", (channels,)), (f"{prefix}.bias", (channels,))]


def _blstm(prefix, dim, layers=2):
    out = []
    for layer in range(layers):
        width = dim if layer == 0 else 2 * dim
        for suffix in ("", "_reverse"):
            out += [(f"{prefix}.lstm.weight_ih_l{layer}{suffix}", (4 * dim, width)),
                    (f"{prefix}.lstm.weight_hh_l{layer}{suffix}", (4 * dim, dim)),
                    (f"{prefix}.lstm.bias_ih_l{layer}{suffix}", (4 * dim,)),
                    (f"{prefix}.lstm.bias_hh_l{layer}{suffix}", (4 * dim,))]
    return out + _conv(f"{prefix}.linear", dim, 2 * dim)[:1] + [(f"{prefix}.linear.bias", (dim,))]


def _local_state(prefix, channels, heads=4, ndecay=4):
    return (_conv(f"{prefix}.content", channels, channels, 1)
            + _conv(f"{prefix}.query", channels, channels, 1)
            + _conv(f"{prefix}.key", channels, channels, 1)
            + _conv(f"{prefix}.query_decay", heads * ndecay, channels, 1)
            + _conv(f"{prefix}.proj", channels, channels, 1))


def _dconv(prefix, channels, depth, compress, attn, lstm):
    """demucs.demucs.DConv: per layer conv k3, GN(1), GELU, [BLSTM], [LocalState], 1x1, GN(1),
    GLU, LayerScale."""
    hidden = int(channels / compress)
    out = []
    for d in range(depth):
        p = f"{prefix}.layers.{d}"
        out += _conv(f"{p}.0", hidden, channels, 3) + _norm(f"{p}.1", hidden)
        index = 3
        if lstm:
            out += _blstm(f"{p}.{index}", hidden)
            index += 1
        if attn:
            out += _local_state(f"{p}.{index}", hidden)
            index += 1
        out += _conv(f"{p}.{index}", 2 * channels, hidden, 1) + _norm(f"{p}.{index + 1}", 2 * channels)
        out += [(f"{p}.{index + 3}.scale", (channels,))]
    return out


def demucs_layout(config) -> list[tuple[str, tuple]]:
    """The parameters of demucs.demucs.Demucs(**config) in named_modules() order."""
    c = config
    ch_scale = 2 if c.glu else 1
    encoder, decoder = [], []
    in_channels, channels = c.audio_channels, c.channels
    for index in range(c.depth):
        norm = index >= c.norm_starts
        attn, lstm = index >= c.dconv_attn, index >= c.dconv_lstm
        p = f"encoder.{index}"
        enc = _conv(f"{p}.0", channels, in_channels, c.kernel_size)
        if norm:
            enc += _norm(f"{p}.1", channels)
        position = 3
        if c.dconv_mode & 1:
            enc += _dconv(f"{p}.{position}", channels, c.dconv_depth, c.dconv_comp, attn, lstm)
            position += 1
        if c.rewrite:
            enc += _conv(f"{p}.{position}", ch_scale * channels, channels, 1)
            if norm:
                enc += _norm(f"{p}.{position + 1}", ch_scale * channels)
        encoder += enc
        out_channels = in_channels if index > 0 else len(c.sources) * c.audio_channels
        # decoder.insert(0, ...): its final position is depth - 1 - index.
        p = f"decoder.{c.depth - 1 - index}"
        dec, position = [], 0
        if c.rewrite:
            dec += _conv(f"{p}.0", ch_scale * channels, channels, 2 * c.context + 1)
            if norm:
                dec += _norm(f"{p}.1", ch_scale * channels)
            position = 3
        if c.dconv_mode & 2:
            dec += _dconv(f"{p}.{position}", channels, c.dconv_depth, c.dconv_comp, attn, lstm)
            position += 1
        dec += _conv_tr(f"{p}.{position}", channels, out_channels, c.kernel_size)
        if index > 0 and norm:
            dec += _norm(f"{p}.{position + 1}", out_channels)
        decoder.insert(0, dec)
        in_channels = channels
        channels = int(c.growth * channels)
    out = encoder + [item for dec in decoder for item in dec]
    if c.lstm_layers:
        out += _blstm("lstm", in_channels, c.lstm_layers)
    return out


def _norm_if(prefix, channels, norm):
    return _norm(prefix, channels) if norm else []


def _henc(prefix, chin, chout, kernel, stride, freq, norm, rewrite, context, dconv, dkw, empty):
    """demucs.hdemucs.HEncLayer: conv, norm1, rewrite, norm2, dconv (conv only when empty)."""
    tail = (1,) if freq else ()
    out = _conv(f"{prefix}.conv", chout, chin, kernel, *tail)
    if empty:
        return out
    out += _norm_if(f"{prefix}.norm1", chout, norm)
    if rewrite:
        k = 1 + 2 * context
        out += _conv(f"{prefix}.rewrite", 2 * chout, chout, *((k, k) if freq else (k,)))
        out += _norm_if(f"{prefix}.norm2", 2 * chout, norm)
    if dconv:
        out += _dconv(f"{prefix}.dconv", chout, **dkw)
    return out


def _hdec(prefix, chin, chout, kernel, stride, freq, norm, rewrite, context, dconv, dkw, empty,
          context_freq=True):
    """demucs.hdemucs.HDecLayer: conv_tr, norm2, rewrite, norm1, dconv."""
    out = _conv_tr(f"{prefix}.conv_tr", chin, chout, kernel, *((1,) if freq else ()))
    out += _norm_if(f"{prefix}.norm2", chout, norm)
    if empty:
        return out
    if rewrite:
        k = 1 + 2 * context
        if not freq:
            kernel_shape = (k,)
        elif context_freq:
            kernel_shape = (k, k)
        else:
            kernel_shape = (1, k)
        out += _conv(f"{prefix}.rewrite", 2 * chin, chin, *kernel_shape)
        out += _norm_if(f"{prefix}.norm1", 2 * chin, norm)
    if dconv:
        out += _dconv(f"{prefix}.dconv", chin, **dkw)
    return out


def _multi(layout_of, prefix, bands):
    """demucs.hdemucs.MultiWrap: one copy of the layer per band, ``layers.{k}``."""
    return [item for k in range(bands) for item in layout_of(f"{prefix}.layers.{k}")]


def hdemucs_layout(config) -> list[tuple[str, tuple]]:
    """The parameters of demucs.hdemucs.HDemucs(**config) in named_modules() order: encoder,
    decoder, tencoder, tdecoder, then freq_emb (registered last, see HDemucs.__init__)."""
    c = config
    encoder, decoder, tencoder, tdecoder, freq_emb = [], [], [], [], []
    chin = c.audio_channels
    chin_z = chin * (2 if c.cac else 1)
    chout = c.channels_time or c.channels
    chout_z = c.channels
    freqs = c.nfft // 2
    bands = len(c.multi_freqs or []) + 1
    for index in range(c.depth):
        freq = freqs > 1
        ker, stri = (c.kernel_size, c.stride) if freq else (c.time_stride * 2, c.time_stride)
        last_freq = freq and freqs <= c.kernel_size
        if last_freq:
            ker = freqs
            chout_z = max(chout, chout_z)
            chout = chout_z
        norm = index >= c.norm_starts
        dkw = dict(depth=c.dconv_depth, compress=c.dconv_comp, attn=index >= c.dconv_attn,
                   lstm=index >= c.dconv_lstm)
        multi = bool(c.multi_freqs) and index < c.multi_freqs_depth
        common = dict(norm=norm, rewrite=c.rewrite, dkw=dkw)

        # Default arguments freeze this layer's values (the decoder is built after the loop).
        def enc(prefix, chin_z=chin_z, chout_z=chout_z, ker=ker, stri=stri, freq=freq,
                common=common):
            return _henc(prefix, chin_z, chout_z, ker, stri, freq, context=c.context_enc,
                         dconv=c.dconv_mode & 1, empty=False, **common)

        p = f"encoder.{index}"
        encoder.append(_multi(enc, p, bands) if multi else enc(p))
        if c.hybrid and freq:
            tencoder.append(_henc(f"tencoder.{index}", chin, chout, c.kernel_size, c.stride, False,
                                  context=c.context_enc, dconv=c.dconv_mode & 1,
                                  empty=last_freq, **common))
        if index == 0:
            chin = c.audio_channels * len(c.sources)
            chin_z = chin * (2 if c.cac else 1)

        def dec(prefix, chin_z=chin_z, chout_z=chout_z, ker=ker, stri=stri, freq=freq,
                common=common, multi=multi):
            return _hdec(prefix, chout_z, chin_z, ker, stri, freq, context=c.context,
                         dconv=c.dconv_mode & 2, empty=False, context_freq=not multi, **common)

        decoder.insert(0, dec if not multi else (lambda p, dec=dec: _multi(dec, p, bands)))
        if c.hybrid and freq:
            tdecoder.insert(0, (chout, chin, last_freq, common))
        chin, chin_z = chout, chout_z
        chout, chout_z = int(c.growth * chout), int(c.growth * chout_z)
        if freq:
            freqs = 1 if freqs <= c.kernel_size else freqs // c.stride
        if index == 0 and c.freq_emb:
            freq_emb = [("freq_emb.embedding.weight", (freqs, chin_z))]
    out = [item for layer in encoder for item in layer]
    for position, make in enumerate(decoder):
        out += make(f"decoder.{position}")
    out += [item for layer in tencoder for item in layer]
    for position, (t_chout, t_chin, empty, common) in enumerate(tdecoder):
        out += _hdec(f"tdecoder.{position}", t_chout, t_chin, c.kernel_size, c.stride, False,
                     context=c.context, dconv=c.dconv_mode & 2, empty=empty, **common)
    return out + freq_emb
