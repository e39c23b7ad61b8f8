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

# demucs v3 (HDemucs) and its time-only Demucs, with the arguments that differ from demucs'
# conf defaults in each published file (see docs/architecture.md, "Supported models").
HDEMUCS_ARCHITECTURES = {
    # 75fc33f5 (hdemucs_mmi), mdx_extra's e51eebcc / cfa93e08, repro_mdx_a's hybrids
    "hdemucs_mmi": dict(sources=FOUR_SOURCES, segment=40),
    # mdx c511e2ab: magnitude spectrogram + phase of the mix, MDX padding bug, no GroupNorm
    "hdemucs_c511e2ab": dict(sources=FOUR_SOURCES, cac=False, hybrid_old=True, norm_starts=999,
                             segment=40),
    # mdx 7d865c68: frequency bands (MultiWrap) in the two outer layers, no GroupNorm
    "hdemucs_7d865c68": dict(sources=FOUR_SOURCES, norm_starts=999, multi_freqs=[0.1, 0.3],
                             multi_freqs_depth=2, segment=40),
    # mdx_extra 5d2d6c55: magnitude spectrogram, GroupNorm from layer 4
    "hdemucs_5d2d6c55": dict(sources=FOUR_SOURCES, cac=False, segment=40),
}
DEMUCS_ARCHITECTURES = {
    # mdx 0d19c1c6 / 7ecf8ec1
    "demucs_0d19c1c6": dict(sources=FOUR_SOURCES, channels=64, rewrite=False, normalize=True),
    # repro_mdx_a 9a6b4851 / 1ef250f1
    "demucs_9a6b4851": dict(sources=FOUR_SOURCES, channels=64, normalize=True),
}

# Overrides for build_model: an architecture's layers and trace points at toy width with a
# 0.5 s segment, so both sides trace a second of audio in seconds (tests, notebooks).
# dconv_comp=4 keeps two channels in the outer DConv branches (one would make their conv bias
# vanish under the one-group GroupNorm that follows, for any implementation).
TINY = dict(channels=8, dconv_comp=4, segment=Fraction(1, 2), bottom_channels=32)


LSTM_GAIN = 8.0
PROJ_GAIN = 8.0
DEEP_SCALE = (1.0, 2.0)


def build_model(architecture="htdemucs", seed=0, perturb=True, **overrides):
    """A randomly initialised demucs model with the named architecture, in eval mode:
    HTDemucs (``ARCHITECTURES``), HDemucs (``HDEMUCS_ARCHITECTURES``) or Demucs
    (``DEMUCS_ARCHITECTURES``)."""
    import torch
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    if architecture in HDEMUCS_ARCHITECTURES:
        klass, kwargs = HDemucs, dict(HDEMUCS_ARCHITECTURES[architecture])
    elif architecture in DEMUCS_ARCHITECTURES:
        klass, kwargs = Demucs, dict(DEMUCS_ARCHITECTURES[architecture])
    else:
        klass, kwargs = HTDemucs, dict(ARCHITECTURES[architecture])
    kwargs.update(overrides)
    sources = kwargs.pop("sources")
    torch.manual_seed(seed)
    model = klass(sources, **kwargs)
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
    LSTM weights and biases keep PyTorch's U(-1/sqrt(H), 1/sqrt(H)) init, which leaves
    the gates unsaturated and every gate's bias distinct.
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed + 1)

    def draw(shape, low=None, high=None, std=None):
        if std is not None:
            return std * torch.randn(shape, generator=generator)
        return low + (high - low) * torch.rand(shape, generator=generator)

    from demucs.demucs import BLSTM, LocalState

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BLSTM):
                # the LSTM's output next to its skip connection would be a small correction
                module.linear.weight *= LSTM_GAIN
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
        for module in model.modules():
            if isinstance(module, nn.Sequential) and any(
                    isinstance(m, (BLSTM, LocalState)) for m in module):
                # the branches with a BLSTM or LocalState sit deepest in the U-Net, where a
                # small LayerScale would make everything inside them a small correction
                module[-1].scale.copy_(draw(module[-1].scale.shape, *DEEP_SCALE))
            if isinstance(module, LocalState):
                # demucs starts the decay projection near zero (x0.01, bias -2): the window
                # would hardly depend on the query. A wider, query-dependent window, sharper
                # queries and keys, and a larger output projection, so that the attention
                # is not lost in its residual.
                module.query_decay.weight *= 50.0
                module.query_decay.bias.copy_(draw(module.query_decay.bias.shape, std=0.5) - 3.0)
                module.query.weight *= 4.0
                module.query.bias.copy_(draw(module.query.bias.shape, std=1.0))
                module.key.weight *= 4.0
                module.proj.weight *= PROJ_GAIN
    return model


def _package(model):
    import torch

    args, kwargs = model._init_args_kwargs
    state = {k: v.detach().to("cpu", torch.half) for k, v in model.state_dict().items()}
    return args, kwargs, state


def save_th(model, folder, signature="0123abcd"):
    """Write ``SIG-CHECKSUM.th`` as demucs' ``save_with_checksum(serialize_model(...))`` does."""
    args, kwargs, state = _package(model)
    return _write_package(model, args, kwargs, state, folder, signature,
                          "numba-demucs test fixture")


def _write_package(model, args, kwargs, state, folder, signature, note):
    """demucs' package dict saved by torch, named ``SIG-`` + the first 8 hex digits of its
    SHA-256 as ``save_with_checksum`` names it."""
    import torch

    content = {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": state,
               "training_args": {"note": note}}
    buffer = io.BytesIO()
    torch.save(content, buffer)
    checksum = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    path = Path(folder) / f"{signature}-{checksum}.th"
    path.write_bytes(buffer.getvalue())
    return path


def quantize(model, min_size=0.2, group_size=8, seed=0, **state_options):
    """A diffq ``DiffQuantizer`` over ``model`` as demucs' training sets one up
    (``states.get_quantizer``: min_size, group_size), with every group's bit-width logit
    drawn at random (as training leaves them) so widths 2..14 all occur, and its
    ``get_quantized_state(**state_options)`` marked ``__quantized`` as ``states.get_state``
    does. Returns (quantizer, state)."""
    import torch
    from diffq import DiffQuantizer

    quantizer = DiffQuantizer(model, min_size=min_size, group_size=group_size)
    generator = torch.Generator().manual_seed(seed + 7)
    for qparam in quantizer._qparams:
        # sigmoid(2.8) * 13 + 2 < 14.5: no 15-bit group, which diffq packs nowhere.
        qparam.logit.data[:] = torch.empty(qparam.logit.shape).uniform_(-4.0, 2.8,
                                                                        generator=generator)
    state = quantizer.get_quantized_state(**state_options)
    state["__quantized"] = True
    return quantizer, state


def save_quantized_th(model, folder, signature="0123abcd", state=None, **quantize_options):
    """Write a DiffQ-quantized ``SIG-CHECKSUM.th`` as demucs' ``save_with_checksum(
    serialize_model(model, args, quantizer))`` does; ``state`` (default: :func:`quantize`'s)
    may be given altered. Returns the path."""
    if state is None:
        _, state = quantize(model, **quantize_options)
    args, kwargs = model._init_args_kwargs
    return _write_package(model, args, kwargs, state, folder, signature,
                          "numba-demucs test fixture (diffq)")


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


def leading_squeezed(array):
    """Drop leading axes of size 1, so a PyTorch ``(1, C, T)`` compares with our ``(C, T)``."""
    array = np.asarray(array)
    while array.ndim > 1 and array.shape[0] == 1:
        array = array[0]
    return array


class ReferenceTracer:
    """Forward hooks on a demucs HTDemucs (or a bag's members) that emit our trace points.

    Module points are the outputs of every module in ``named_modules()`` (first element of a
    tuple output), except Dropout, which is inert in eval mode and absent on our side. The
    points that are not module outputs are computed with the same torch operations demucs
    uses inline: ``input.mix``, ``spec.magnitude``, ``input.freq``, ``input.time``, the
    transformer inputs, ``output.freq_branch``, ``output.time_branch``, ``output.sources``.
    Each point goes to ``sink(name, context, array)`` with the current call indices.
    """

    def __init__(self, model, sink):
        self.sink = sink
        self.context = {}
        self._handles = []
        self._patched = []
        models = list(model.models) if hasattr(model, "models") else [model]
        for index, member in enumerate(models):
            self._instrument(member, index if len(models) > 1 else None)

    def _emit(self, name, tensor):
        # a copy: demucs may change a module's output in place after its hook ran
        # (MultiWrap's decoder bands overlap-add into the previous band's output)
        self.sink(name, dict(self.context),
                  leading_squeezed(tensor.detach().cpu().numpy().copy()))

    def _instrument(self, model, model_index):
        from torch import nn

        def module_hook(name):
            def hook(_module, _inputs, output):
                if isinstance(output, tuple):
                    output = output[0]
                self._emit(name, output)
            return hook

        def input_hook(name):
            def hook(_module, inputs):
                self._emit(name, inputs[0])
            return hook

        def root_pre_hook(_module, inputs):
            if model_index is not None:
                self.context["model"] = model_index
            self._emit("input.mix", inputs[0])

        def root_hook(_module, _inputs, output):
            sources = len(model.sources)
            last_time = self._last_time_output
            length = self._training_length
            time_branch = last_time.view(last_time.shape[0], sources, -1, length) \
                * self._stdt[:, None] + self._meant[:, None]
            self._emit("output.time_branch", time_branch)
            self._emit("output.sources", output)

        self._handles.append(model.register_forward_pre_hook(root_pre_hook))
        def plain_root_hook(_module, _inputs, output):
            self._emit("output.sources", output)

        self._handles.append(model.register_forward_hook(
            root_hook if hasattr(model, "tdecoder") else plain_root_hook))
        for name, module in model.named_modules():
            if not name or isinstance(module, nn.Dropout):
                continue
            self._handles.append(module.register_forward_hook(module_hook(name)))
        transformer = getattr(model, "crosstransformer", None)
        if transformer is not None:
            self._handles.append(transformer.layers[0].register_forward_pre_hook(
                input_hook("crosstransformer.input.freq")))
            self._handles.append(transformer.layers_t[0].register_forward_pre_hook(
                input_hook("crosstransformer.input.time")))
        if not hasattr(model, "tdecoder"):
            return  # time-domain Demucs: module points, the input and the output only
        last_tdecoder = model.tdecoder[-1]

        def keep_time_output(_module, _inputs, output):
            self._last_time_output = output[0]
        self._handles.append(last_tdecoder.register_forward_hook(keep_time_output))

        original_spec, original_magnitude, original_ispec = model._spec, model._magnitude, model._ispec

        def spec(x):
            # x is the mix padded to the training length; demucs normalises it for the time branch.
            self._training_length = x.shape[-1]
            self._meant = x.mean(dim=(1, 2), keepdim=True)
            self._stdt = x.std(dim=(1, 2), keepdim=True)
            self._time_input = (x - self._meant) / (1e-5 + self._stdt)
            return original_spec(x)

        def magnitude(z):
            mag = original_magnitude(z)
            self._emit("spec.magnitude", mag)
            mean = mag.mean(dim=(1, 2, 3), keepdim=True)
            std = mag.std(dim=(1, 2, 3), keepdim=True)
            self._emit("input.freq", (mag - mean) / (1e-5 + std))
            self._emit("input.time", self._time_input)
            return mag

        def ispec(z, length=None, scale=0):
            out = original_ispec(z, length, scale)
            self._emit("output.freq_branch", out)
            return out

        model._spec, model._magnitude, model._ispec = spec, magnitude, ispec
        self._patched.append(model)

    def close(self):
        for handle in self._handles:
            handle.remove()
        for model in self._patched:
            for attribute in ("_spec", "_magnitude", "_ispec"):
                model.__dict__.pop(attribute, None)
        self._handles, self._patched = [], []


def run_reference(model, mix, sink, *, split=True, shifts=0, overlap=0.25, segment_only=False):
    """Run demucs on ``mix (channels, samples)`` numpy, sending every trace point to ``sink``.

    The apply_model callback supplies the call indices (segment, shift, model) that our
    ``apply_model`` attaches to its points; returns the separated ``(sources, channels, samples)``.
    """
    import torch
    from demucs.apply import apply_model

    tracer = ReferenceTracer(model, sink)
    dtype = next(model.parameters()).dtype
    batch = torch.from_numpy(np.ascontiguousarray(mix)).to(dtype)[None]
    try:
        with torch.no_grad():
            if segment_only:
                out = model(batch)
            else:
                first = model.models[0] if hasattr(model, "models") else model
                stride = int((1 - overlap) * int(first.segment * first.samplerate))

                def on_call(info):
                    if info.get("state") != "start":
                        return
                    tracer.context = {"segment": info["segment_offset"] // stride}
                    if shifts:
                        tracer.context["shift"] = info["shift_idx"]
                    if hasattr(model, "models"):
                        tracer.context["model"] = info["model_idx_in_bag"]
                out = apply_model(model, batch, shifts=shifts, split=split, overlap=overlap,
                                  callback=on_call)
    finally:
        tracer.close()
    return out[0].numpy()
