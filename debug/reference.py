"""The PyTorch side: official-architecture demucs models, perturbed, saved in the official formats.

This is the only module of the package that imports torch and demucs (the ``reference``
extra). It builds ``demucs.htdemucs.HTDemucs`` with the arguments of the published
checkpoints, perturbs every parameter so that no branch is negligible, and writes the
model exactly as demucs' own files are written: a ``torch.save`` package with a float16
state (``.th``) and the Hugging Face layout (``.safetensors`` with the class and
arguments as JSON metadata).
"""
from __future__ import annotations

import hashlib
import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

FOUR_SOURCES = ["drums", "bass", "other", "vocals"]
SIX_SOURCES = ["drums", "bass", "other", "vocals", "guitar", "piano"]

# Constructor arguments of the published checkpoints (955717e8 for htdemucs, 5c90dfd2 for
# htdemucs_6s); everything else is demucs' default. "defaults" is the bare library default.
ARCHITECTURES = {
    "htdemucs": dict(sources=FOUR_SOURCES, bottom_channels=512, dconv_mode=3,
                     segment=Fraction(39, 5), t_dropout=0.02, multi_freqs=[],
                     t_sparse_attn_window=400),
    "htdemucs_6s": dict(sources=SIX_SOURCES, bottom_channels=0, dconv_mode=3,
                        segment=Fraction(39, 5), t_dropout=0.02, multi_freqs=[],
                        t_sparse_attn_window=400),
    "defaults": dict(sources=FOUR_SOURCES),
}


def build_model(architecture="htdemucs", seed=0, perturb=True, **overrides):
    """A randomly initialised demucs HTDemucs with the named architecture, in eval mode."""
    import torch
    from demucs.htdemucs import HTDemucs

    kwargs = dict(ARCHITECTURES[architecture])
    kwargs.update(overrides)
    sources = kwargs.pop("sources")
    torch.manual_seed(seed)
    model = HTDemucs(sources, **kwargs)
    if perturb:
        perturb_parameters(model, seed)
    return model.eval()


def perturb_parameters(model, seed=0):
    """Make every parameter matter: LayerScale scales from U(0.05, 0.5), norm weights from
    U(0.5, 1.5) and biases from N(0, 0.5^2), every other bias from N(0, 0.1^2).

    The init values of LayerScale (1e-3 / 1e-4), of norms (weight 1, bias 0) and the tiny
    rescaled conv biases would let a broken DConv, norm or transformer branch hide under
    rounding. Query and key projections are doubled so attention is far from uniform.
    Modules are recognised by type, since DConv's norms are unnamed Sequential items.
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed + 1)

    def draw(shape, low=None, high=None, std=None):
        if std is not None:
            return std * torch.randn(shape, generator=generator)
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                # Random projections leave attention close to uniform, where the queries
                # hardly matter; sharper scores make every projection count.
                module.in_proj_weight[: 2 * module.embed_dim] *= 2.0
            norm = isinstance(module, (nn.GroupNorm, nn.LayerNorm))
            if norm:
                module.weight.copy_(draw(module.weight.shape, 0.5, 1.5))
            for name, parameter in module.named_parameters(recurse=False):
                if name == "scale":
                    parameter.copy_(draw(parameter.shape, 0.05, 0.5))
                elif name.endswith("bias"):
                    parameter.copy_(draw(parameter.shape, std=0.5 if norm else 0.1))
    return model


def _package(model):
    import torch

    args, kwargs = model._init_args_kwargs
    state = {k: v.detach().to("cpu", torch.half) for k, v in model.state_dict().items()}
    return args, kwargs, state


def save_th(model, folder, signature="0123abcd"):
    """Write ``SIG-CHECKSUM.th`` as demucs' ``save_with_checksum(serialize_model(...))`` does."""
    import torch

    args, kwargs, state = _package(model)
    content = {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": state,
               "training_args": {"note": "numba-demucs test fixture"}}
    buffer = io.BytesIO()
    torch.save(content, buffer)
    checksum = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    path = Path(folder) / f"{signature}-{checksum}.th"
    path.write_bytes(buffer.getvalue())
    return path


def _encode_json(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(v) for v in value]
    return value


def save_safetensors(model, folder, signature="0123abcd"):
    """Write ``SIG.safetensors`` in the layout demucs 4.1's ``hf.load_safetensors_model`` reads."""
    from safetensors.torch import save_file

    args, kwargs, state = _package(model)
    metadata = {
        "klass": f"{model.__class__.__module__}.{model.__class__.__name__}",
        "args": json.dumps(_encode_json(list(args))),
        "kwargs": json.dumps(_encode_json(kwargs)),
    }
    path = Path(folder) / f"{signature}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def load_reference(path):
    """Load a checkpoint with demucs' own loaders (what a PyTorch user gets)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from demucs.hf import load_safetensors_model

        return load_safetensors_model(path).eval()
    from demucs.states import load_model

    return load_model(path).eval()


def music_like_signal(seconds, samplerate=44100, channels=2, seed=0):
    """A deterministic stereo test signal with pitched notes, a bass line, noise bursts and silence gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * samplerate)
    t = np.arange(n) / samplerate
    out = np.zeros((channels, n))
    beat = 0.5
    for start in np.arange(0, seconds, beat):
        note = 110 * 2 ** (rng.integers(0, 24) / 12)
        begin, end = int(start * samplerate), min(n, int((start + beat) * samplerate))
        envelope = np.exp(-3 * (t[begin:end] - start))
        for c in range(channels):
            pan = 0.6 + 0.4 * rng.random()
            out[c, begin:end] += pan * 0.3 * envelope * np.sin(2 * np.pi * note * t[begin:end])
            out[c, begin:end] += 0.2 * envelope * np.sign(np.sin(2 * np.pi * note / 4 * t[begin:end]))
        burst = min(end, begin + samplerate // 20)
        out[:, begin:burst] += 0.3 * rng.standard_normal((channels, burst - begin))
    out += 0.01 * rng.standard_normal(out.shape)
    return out.astype(np.float32)
