"""HTDemucs, HDemucs and Demucs constructor arguments: demucs 4.1's defaults, and which values we implement."""
from __future__ import annotations

import dataclasses
import inspect
import warnings
from fractions import Fraction

from ..errors import UnsupportedModelError


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
    config.check_supported(origin)
    return config


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
