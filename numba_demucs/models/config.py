"""HTDemucs, HDemucs and Demucs constructor arguments: demucs 4.1's defaults, and which values we implement."""
from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from fractions import Fraction

from ..errors import CheckpointError, UnsupportedModelError


def bind_arguments(cls, class_name, args, kwargs, origin="checkpoint"):
    """Bind a checkpoint's ``args``/``kwargs`` as demucs would, dropping unknown names.

    demucs' ``load_model`` drops arguments the class does not take with a warning; we
    do the same so any file demucs loads, we load. The config then refuses, by name,
    the arguments whose computation is not implemented.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = dict(kwargs)
    for key in list(kwargs):
        if key not in names:
            warnings.warn(f"{origin}: dropping unknown {class_name} argument {key}")
            del kwargs[key]
    try:
        bound = inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as error:
        raise UnsupportedModelError(f"{origin}: cannot bind {class_name} arguments ({error})") from None
    config = cls(*bound.args, **bound.kwargs)
    check_arguments(config, class_name, origin)
    config.check_supported(origin)
    return config


# -- argument types and ranges -------------------------------------------------------------
# A checkpoint's arguments come from the file, so each is checked for the type demucs'
# constructor uses it as (bool is not an int here, a float is not an int) and for a range
# that bounds what building and running the model may allocate or loop over. The maxima
# sit well above every published model (docs/pretrained.md, "Security") and far below
# what would hang or exhaust memory.

MAX_WIDTH = 1 << 15  # widest layer's channels (published models: 1536 to 4096)


class _Check:
    """One argument's rule: ``problem(value)`` is None or what is wrong with it."""

    def __init__(self, problem, text):
        self.problem, self.text = problem, text


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, (int, float, Fraction)) and not isinstance(value, bool)


def Int(low, high):
    def problem(value):
        if not _is_int(value):
            return "must be an integer"
        return None if low <= value <= high else f"must be in [{low}, {high}]"
    return _Check(problem, f"int in [{low}, {high}]")


def Real(low, high, *, open_low=False):
    def problem(value):
        if not _is_real(value):
            return "must be a number"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be finite"  # (ints and fractions always are; float() may overflow)
        if (value <= low if open_low else value < low) or value > high:
            return f"must be in {'(' if open_low else '['}{low}, {high}]"
        return None
    return _Check(problem, f"number in {'(' if open_low else '['}{low}, {high}]")


def PowerOfTwo(low, high):
    def problem(value):
        if not _is_int(value):
            return "must be an integer"
        if value < low or value > high or value & (value - 1):
            return f"must be a power of two in [{low}, {high}]"
        return None
    return _Check(problem, f"power of two in [{low}, {high}]")


def Flag():
    return _Check(lambda value: None if isinstance(value, bool) else "must be True or False", "bool")


def Text(longest=64):
    def problem(value):
        return None if isinstance(value, str) and len(value) <= longest else \
            f"must be a string of at most {longest} characters"
    return _Check(problem, "str")


def Reals(low, high, *, shortest=0, longest=16):
    """A list of numbers in [low, high]."""
    item = Real(low, high)

    def problem(value):
        if not isinstance(value, (list, tuple)) or not shortest <= len(value) <= longest:
            count = shortest if shortest == longest else f"{shortest} to {longest}"
            return f"must be a list of {count} numbers"
        for element in value:
            if item.problem(element):
                return f"must hold numbers in [{low}, {high}]"
        return None
    return _Check(problem, f"list of numbers in [{low}, {high}]")


def Names(longest=32):
    """Source names: a non-empty list of unique plain names (each one a stem's file name)."""
    def problem(value):
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= longest:
            return f"must be a list of 1 to {longest} names"
        for name in value:
            if (not isinstance(name, str) or not name or len(name) > 64 or name in (".", "..")
                    or any(c in name for c in "/\\\0") or not name.isprintable()):
                return f"must hold plain names (not {name!r})"
        if len(set(value)) != len(value):
            return "must not repeat a name"
        return None
    return _Check(problem, f"list of 1 to {longest} unique plain names")


def Optional(check):
    return _Check(lambda value: None if value is None else check.problem(value),
                  f"None or {check.text}")


def check_arguments(config, class_name, origin):
    """Every argument of ``config`` against its class' ``ARGUMENTS``; a CheckpointError
    naming the file, the argument and the value for the first that fails."""
    for name, check in config.ARGUMENTS.items():
        value = getattr(config, name)
        problem = check.problem(value)
        if problem:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise CheckpointError(f"{origin}: {class_name} argument {name}={shown} {problem}")
    # the widest layer (its weights are read from the file, but its size drives loops and
    # buffers before any weight is compared with the file)
    width = max(config.channels, getattr(config, "channels_time", None) or 0)
    growth = config.growth ** (config.depth - 1)
    if width * growth > MAX_WIDTH or getattr(config, "bottom_channels", 0) > MAX_WIDTH:
        raise CheckpointError(
            f"{origin}: {class_name} arguments channels={config.channels}, growth={config.growth}, "
            f"depth={config.depth} make layers wider than {MAX_WIDTH} channels")
    length = config.segment * config.samplerate
    if length > MAX_SEGMENT_SAMPLES:
        raise CheckpointError(
            f"{origin}: {class_name} arguments segment={config.segment}, samplerate="
            f"{config.samplerate} make segments longer than {MAX_SEGMENT_SAMPLES} samples")


MAX_SEGMENT_SAMPLES = 1 << 27  # about 50 min at 44.1 kHz (published models: 7.8 s to 40 s)

# What every family shares (same meaning in demucs' three constructors).
_COMMON = dict(
    sources=Names(), audio_channels=Int(1, 16), channels=Int(1, 4096), depth=Int(1, 12),
    rewrite=Flag(), kernel_size=Int(1, 64), stride=Int(1, 64), context=Int(0, 64),
    norm_starts=Int(0, 1 << 20), norm_groups=Int(1, 256), dconv_mode=Int(0, 3),
    dconv_depth=Int(1, 16), dconv_comp=Int(1, 1024), dconv_init=Real(-1e6, 1e6),
    rescale=Real(0, 1e6), samplerate=Int(1, 768000), segment=Real(0, 3600, open_low=True),
)
# HDemucs and HTDemucs (the hybrid spectrogram branch)
_HYBRID = dict(
    _COMMON, channels_time=Optional(Int(1, 4096)), growth=Int(1, 16), nfft=PowerOfTwo(4, 1 << 16),
    wiener_iters=Int(0, 100), end_iters=Int(0, 100), wiener_residual=Flag(), cac=Flag(),
    multi_freqs=Optional(Reals(0, 1)), multi_freqs_depth=Int(0, 12),
    freq_emb=Real(0, 1e6), emb_scale=Real(-1e6, 1e6), emb_smooth=Flag(), time_stride=Int(1, 64),
    context_enc=Int(0, 64),
)


@dataclasses.dataclass
class HTDemucsConfig:
    """Every argument of ``demucs.htdemucs.HTDemucs.__init__`` with the same default."""

    sources: list
    audio_channels: int = 2
    channels: int = 48
    channels_time: int | None = None
    growth: int = 2
    nfft: int = 4096
    wiener_iters: int = 0
    end_iters: int = 0
    wiener_residual: bool = False
    cac: bool = True
    depth: int = 4
    rewrite: bool = True
    multi_freqs: list | None = None
    multi_freqs_depth: int = 3
    freq_emb: float = 0.2
    emb_scale: float = 10
    emb_smooth: bool = True
    kernel_size: int = 8
    time_stride: int = 2
    stride: int = 4
    context: int = 1
    context_enc: int = 0
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: int = 8
    dconv_init: float = 1e-3
    bottom_channels: int = 0
    t_layers: int = 5
    t_emb: str = "sin"
    t_hidden_scale: float = 4.0
    t_heads: int = 8
    t_dropout: float = 0.0
    t_max_positions: int = 10000
    t_norm_in: bool = True
    t_norm_in_group: bool = False
    t_group_norm: bool = False
    t_norm_first: bool = True
    t_norm_out: bool = True
    t_max_period: float = 10000.0
    t_weight_decay: float = 0.0
    t_lr: float | None = None
    t_layer_scale: bool = True
    t_gelu: bool = True
    t_weight_pos_embed: float = 1.0
    t_sin_random_shift: int = 0
    t_cape_mean_normalize: bool = True
    t_cape_augment: bool = True
    t_cape_glob_loc_scale: list = dataclasses.field(default_factory=lambda: [5000.0, 1.0, 1.4])
    t_sparse_self_attn: bool = False
    t_sparse_cross_attn: bool = False
    t_mask_type: str = "diag"
    t_mask_random_seed: int = 42
    t_sparse_attn_window: int = 500
    t_global_window: int = 100
    t_sparsity: float = 0.95
    t_auto_sparsity: bool = False
    t_cross_first: bool = False
    rescale: float = 0.1
    samplerate: int = 44100
    segment: float | Fraction = 10
    use_train_segment: bool = True

    @classmethod
    def from_arguments(cls, args, kwargs, origin="checkpoint"):
        return bind_arguments(cls, "HTDemucs", args, kwargs, origin)

    ARGUMENTS = dict(
        _HYBRID, bottom_channels=Int(0, 4096), t_layers=Int(0, 32), t_emb=Text(),
        t_hidden_scale=Real(0, 64, open_low=True), t_heads=Int(1, 256), t_dropout=Real(0, 1),
        t_max_positions=Int(1, 1 << 24), t_norm_in=Flag(), t_norm_in_group=Flag(),
        t_group_norm=Flag(), t_norm_first=Flag(), t_norm_out=Flag(),
        t_max_period=Real(0, 1e12, open_low=True), t_weight_decay=Real(-1e6, 1e6),
        t_lr=Optional(Real(-1e6, 1e6)), t_layer_scale=Flag(), t_gelu=Flag(),
        t_weight_pos_embed=Real(-1e6, 1e6), t_sin_random_shift=Int(0, 1 << 24),
        t_cape_mean_normalize=Flag(), t_cape_augment=Flag(),
        t_cape_glob_loc_scale=Reals(-1e12, 1e12, shortest=3, longest=3),
        t_sparse_self_attn=Flag(), t_sparse_cross_attn=Flag(), t_mask_type=Text(),
        t_mask_random_seed=Int(-(1 << 63), 1 << 64), t_sparse_attn_window=Int(0, 1 << 24),
        t_global_window=Int(0, 1 << 24), t_sparsity=Real(0, 1), t_auto_sparsity=Flag(),
        t_cross_first=Flag(), use_train_segment=Flag())

    def check_supported(self, origin="HTDemucs"):
        """Refuse arguments whose computation we do not implement, naming them."""
        refused = []
        if not self.cac:
            refused.append("cac=False")
        if self.multi_freqs:
            refused.append(f"multi_freqs={self.multi_freqs}")
        if self.t_layers > 0 and self.t_emb != "sin":
            refused.append(f"t_emb={self.t_emb!r}")
        if self.t_layers > 0 and self.t_sparse_self_attn:
            refused.append("t_sparse_self_attn=True")
        if self.t_layers > 0 and self.t_sparse_cross_attn:
            refused.append("t_sparse_cross_attn=True")
        if self.t_layers > 0 and self.t_auto_sparsity:
            refused.append("t_auto_sparsity=True")
        if self.t_layers > 0 and not self.t_norm_in and self.t_norm_in_group:
            refused.append(f"t_norm_in_group={self.t_norm_in_group}")
        if self.t_layers > 0 and self.t_group_norm:
            refused.append(f"t_group_norm={self.t_group_norm}")
        if self.wiener_iters != self.end_iters:
            refused.append(f"wiener_iters={self.wiener_iters} != end_iters={self.end_iters}")
        if refused:
            raise UnsupportedModelError(
                f"{origin}: HTDemucs({', '.join(refused)}) is not supported")

    @property
    def segment_length(self) -> int:
        return int(self.segment * self.samplerate)


@dataclasses.dataclass
class HDemucsConfig:
    """Every argument of ``demucs.hdemucs.HDemucs.__init__`` (demucs 4.1) with the same default."""

    sources: list
    audio_channels: int = 2
    channels: int = 48
    channels_time: int | None = None
    growth: int = 2
    nfft: int = 4096
    wiener_iters: int = 0
    end_iters: int = 0
    wiener_residual: bool = False
    cac: bool = True
    depth: int = 6
    rewrite: bool = True
    hybrid: bool = True
    hybrid_old: bool = False
    multi_freqs: list | None = None
    multi_freqs_depth: int = 2
    freq_emb: float = 0.2
    emb_scale: float = 10
    emb_smooth: bool = True
    kernel_size: int = 8
    time_stride: int = 2
    stride: int = 4
    context: int = 1
    context_enc: int = 0
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: int = 4
    dconv_attn: int = 4
    dconv_lstm: int = 4
    dconv_init: float = 1e-4
    rescale: float = 0.1
    samplerate: int = 44100
    segment: float | Fraction = 4 * 10

    @classmethod
    def from_arguments(cls, args, kwargs, origin="checkpoint"):
        return bind_arguments(cls, "HDemucs", args, kwargs, origin)

    ARGUMENTS = dict(_HYBRID, hybrid=Flag(), hybrid_old=Flag(), dconv_attn=Int(0, 1 << 20),
                     dconv_lstm=Int(0, 1 << 20))

    def check_supported(self, origin="HDemucs"):
        """Refuse arguments whose computation we do not implement, naming them."""
        refused = []
        if not self.hybrid:
            refused.append("hybrid=False")
        if self.multi_freqs and self.norm_starts < self.multi_freqs_depth:
            # demucs itself asserts that a wrapped layer has no GroupNorm
            refused.append(f"multi_freqs with norm_starts={self.norm_starts}")
        if self.wiener_iters != self.end_iters:
            refused.append(f"wiener_iters={self.wiener_iters} != end_iters={self.end_iters}")
        if not self.cac and self.wiener_iters != 0:
            # an EM Wiener filter (no official model uses one)
            refused.append(f"cac=False with wiener_iters={self.wiener_iters}")
        if self.wiener_residual and not self.cac:
            refused.append("wiener_residual=True")
        if refused:
            raise UnsupportedModelError(
                f"{origin}: HDemucs({', '.join(refused)}) is not supported")


@dataclasses.dataclass
class DemucsConfig:
    """Every argument of ``demucs.demucs.Demucs.__init__`` (demucs 4.1) with the same default."""

    sources: list
    audio_channels: int = 2
    channels: int = 64
    growth: float = 2.
    depth: int = 6
    rewrite: bool = True
    lstm_layers: int = 0
    kernel_size: int = 8
    stride: int = 4
    context: int = 1
    gelu: bool = True
    glu: bool = True
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: int = 4
    dconv_attn: int = 4
    dconv_lstm: int = 4
    dconv_init: float = 1e-4
    normalize: bool = True
    resample: bool = True
    rescale: float = 0.1
    samplerate: int = 44100
    segment: float | Fraction = 4 * 10

    @classmethod
    def from_arguments(cls, args, kwargs, origin="checkpoint"):
        return bind_arguments(cls, "Demucs", args, kwargs, origin)

    ARGUMENTS = dict(_COMMON, growth=Real(0, 16, open_low=True), lstm_layers=Int(0, 16),
                     gelu=Flag(), glu=Flag(), dconv_attn=Int(0, 1 << 20),
                     dconv_lstm=Int(0, 1 << 20), normalize=Flag(), resample=Flag())

    def check_supported(self, origin="Demucs"):
        """Refuse arguments whose computation we do not implement, naming them (no
        published file uses any of them)."""
        refused = []
        if self.lstm_layers:
            refused.append(f"lstm_layers={self.lstm_layers}")
        if not self.gelu:
            refused.append("gelu=False")
        if not self.glu:
            refused.append("glu=False")
        if refused:
            raise UnsupportedModelError(
                f"{origin}: Demucs({', '.join(refused)}) is not supported")
