"""Trace an ONNX export of Demucs' HTDemucs core in ONNX Runtime, its values named by PyTorch module path.

Ports to ONNX (demucs-onnx, demucs.onnx) export the STFT-free core of HTDemucs: the normalised
spectrogram channels and the normalised waveform in, the two branches' raw outputs out; the
STFT, iSTFT and the mixing of the branches stay outside. ``trace_onnx`` runs such a model with
every module's output exposed as a graph output and records each one under its PyTorch
module path, so the trace compares with the reference's (``debug conform``).

Module paths come from the node names the TorchScript exporter writes: a node of module
``encoder.0.dconv.layers.0.6`` is named ``/encoder.0/dconv/layers.0/layers.0.6/Mul``: one
scope per called module, each relative to the module that called it, which repeats the
prefix of a Sequential's items (``layers.0`` then ``layers.0.6``). A module's output is the
value produced inside its scope and used outside it (or a graph output); a scope with
several such values (a ModuleList that is never called itself, the cross-transformer's pair
of outputs) is left out rather than guessed, and is then listed as a reference-only point.

This module needs the ``reference`` extra (onnx, onnxruntime; torch and demucs for
``export_core`` and for the STFT front end, which is demucs' own).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from numba_demucs.errors import NumbaDemucsError

from .traces import Trace

FREQ_INPUT, TIME_INPUT = "input.freq", "input.time"


class OnnxTraceError(NumbaDemucsError):
    """An ONNX model cannot be traced: unreadable, not an HTDemucs core, no module scopes."""


def _require():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise OnnxTraceError(f"tracing an ONNX model needs the reference extra (onnx, onnxruntime): "
                             f"{error}") from None


def module_path(node_name: str) -> str:
    """The PyTorch module path of an exported node (``""`` for a top-level node)."""
    path: list[str] = []
    for part in node_name.split("/")[1:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part  # an item of a Sequential, named relative to its caller
        else:
            path.append(part)
    return ".".join(path)


def module_outputs(model) -> list[tuple[str, str]]:
    """``(module path, value name)`` of every module with one output value, in graph order."""
    from onnx import TensorProto, shape_inference

    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - types are a filter here, not a requirement
        inferred = model
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    nodes = model.graph.node
    paths = [module_path(node.name) for node in nodes]
    users: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for value in node.input:
            users.setdefault(value, []).append(i)
    graph_outputs = {o.name for o in model.graph.output}
    escaping: dict[str, dict[str, int]] = {}
    for i, node in enumerate(nodes):
        if not paths[i] or node.op_type == "Constant":
            continue
        parts = paths[i].split(".")
        for value in node.output:
            if types.get(value, TensorProto.FLOAT) not in (TensorProto.FLOAT, TensorProto.DOUBLE):
                continue
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                inside = prefix + "."
                if value in graph_outputs or any(not (paths[u] + ".").startswith(inside)
                                                 for u in users.get(value, [])):
                    escaping.setdefault(prefix, {})[value] = i
    single = [(next(iter(values.items()))[1], prefix, next(iter(values)))
              for prefix, values in escaping.items() if len(values) == 1]
    return [(prefix, value) for _, prefix, value in sorted(single)]


def core_inputs(mix: np.ndarray, freq_shape, time_shape) -> tuple[np.ndarray, np.ndarray]:
    """The core's two inputs for ``mix (channels, samples)``: its first ``time_shape[-1]``
    samples (zero-padded as HTDemucs pads a short segment), demucs' own STFT front end
    (``HTDemucs._spec``, ``_magnitude``, complex as channels) and normalisation."""
    import torch
    from demucs.htdemucs import HTDemucs

    length = int(time_shape[-1])
    nfft = 2 * int(freq_shape[-2])
    if int(freq_shape[1]) != 2 * mix.shape[0]:
        raise OnnxTraceError(f"the model's frequency input has {freq_shape[1]} channels; a "
                             f"complex-as-channels HTDemucs core of {mix.shape[0]}-channel audio has "
                             f"{2 * mix.shape[0]}")
    segment = np.zeros((mix.shape[0], length), dtype=np.float32)
    segment[:, : min(length, mix.shape[-1])] = mix[:, :length]
    stft = SimpleNamespace(hop_length=nfft // 4, nfft=nfft, cac=True)
    with torch.no_grad():
        x = torch.from_numpy(segment)[None]
        mag = HTDemucs._magnitude(stft, HTDemucs._spec(stft, x))
        freq = (mag - mag.mean(dim=(1, 2, 3), keepdim=True)) / (1e-5 + mag.std(dim=(1, 2, 3), keepdim=True))
        time = (x - x.mean(dim=(1, 2), keepdim=True)) / (1e-5 + x.std(dim=(1, 2), keepdim=True))
    if tuple(freq.shape[1:]) != tuple(int(n) for n in freq_shape[1:]):
        raise OnnxTraceError(f"the STFT of {length} samples gives {tuple(freq.shape)}, the model "
                             f"takes {tuple(freq_shape)}")
    return freq.numpy(), time.numpy()


def trace_onnx(path, mix: np.ndarray) -> Trace:
    """The ``Trace`` of the ONNX core ``path`` run on ``mix`` in ONNX Runtime (CPU, float32)."""
    _require()
    import onnx
    import onnxruntime

    from . import reference
    from .dumpfile import sha256_of_array, sha256_of_file
    from .stats import tensor_stats

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf raises several kinds
        raise OnnxTraceError(f"{path}: cannot read the ONNX model: {error}") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    shapes = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs]
    ranks = sorted(len(s) for s in shapes)
    if ranks != [3, 4] or any(0 in s for s in shapes):
        raise OnnxTraceError(f"{path}: expected an HTDemucs core with a (1, C, F, T) spectrogram "
                             f"input and a (1, C, L) waveform input of fixed sizes, got "
                             f"{[(i.name, s) for i, s in zip(inputs, shapes)]}")
    freq_index = 0 if len(shapes[0]) == 4 else 1
    freq, time = core_inputs(mix, shapes[freq_index], shapes[1 - freq_index])
    points = module_outputs(model)
    if not points:
        raise OnnxTraceError(f"{path}: no node carries a module scope (export with "
                             "torch.onnx.export(..., dynamo=False) keeps them)")
    known = {o.name for o in model.graph.output}
    for _, value in points:
        if value not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
            known.add(value)
    options = onnxruntime.SessionOptions()
    # ORT's graph fusions would rename or remove the very values we read
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {inputs[freq_index].name: freq, inputs[1 - freq_index].name: time}
    names = [value for _, value in points]
    values = dict(zip(names, session.run(names, feeds)))
    records = [tensor_stats(FREQ_INPUT, reference.leading_squeezed(freq), index=0),
               tensor_stats(TIME_INPUT, reference.leading_squeezed(time), index=1)]
    for module, value in points:
        records.append(tensor_stats(module, reference.leading_squeezed(values[value]), index=len(records)))
    header = {"producer": f"onnxruntime {onnxruntime.__version__} ({path.name})", "model": None,
              "checkpoint_sha256": None, "onnx_sha256": sha256_of_file(path),
              "input_sha256": sha256_of_array(np.asarray(mix, dtype=np.float32)), "dtype": "float32",
              "mode": "segment"}
    return Trace(header, records, origin=str(path))


def export_core(model, path, opset: int = 17) -> Path:
    """Export ``model`` (a demucs HTDemucs) between its STFT and iSTFT to ONNX ``path``, with
    the TorchScript exporter (its node names carry the module scopes ``trace_onnx`` reads)."""
    import torch
    from torch import nn

    class Core(nn.Module):
        """HTDemucs' encoders, cross-transformer and decoders; the submodules keep HTDemucs'
        attribute names, so the exported scopes are the PyTorch module paths."""

        def __init__(self, htdemucs):
            super().__init__()
            for name in ("encoder", "tencoder", "decoder", "tdecoder", "freq_emb", "crosstransformer",
                         "channel_upsampler", "channel_downsampler", "channel_upsampler_t",
                         "channel_downsampler_t"):
                if getattr(htdemucs, name, None) is not None:
                    setattr(self, name, getattr(htdemucs, name))
            self.freq_emb_scale = htdemucs.freq_emb_scale
            self.depth = htdemucs.depth
            self.bottom_channels = htdemucs.bottom_channels
            self.has_freq_emb = getattr(htdemucs, "freq_emb", None) is not None

        def forward(self, x, xt):
            # x (1, 2C, F, T): normalised spectrogram channels; xt (1, C, L): normalised waveform
            skips, tskips, lengths, tlengths = [], [], [], []
            for i, encode in enumerate(self.encoder):
                lengths.append(x.shape[-1])
                inject = None
                if i < len(self.tencoder):
                    tlengths.append(xt.shape[-1])
                    xt = self.tencoder[i](xt)
                    if self.tencoder[i].empty:
                        inject = xt  # the branches merge here
                    else:
                        tskips.append(xt)
                x = encode(x, inject)
                if i == 0 and self.has_freq_emb:
                    rows = torch.arange(x.shape[-2])
                    x = x + self.freq_emb_scale * self.freq_emb(rows).t()[None, :, :, None].expand_as(x)
                skips.append(x)
            if self.bottom_channels:
                b, c, f, t = x.shape
                x = self.channel_upsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = self.channel_upsampler_t(xt)
            x, xt = self.crosstransformer(x, xt)
            if self.bottom_channels:
                b, c, f, t = x.shape
                x = self.channel_downsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = self.channel_downsampler_t(xt)
            offset = self.depth - len(self.tdecoder)
            for i, decode in enumerate(self.decoder):
                x, pre = decode(x, skips.pop(), lengths.pop())
                if i >= offset:
                    tdecode = self.tdecoder[i - offset]
                    if tdecode.empty:
                        xt, _ = tdecode(pre[:, :, 0], None, tlengths.pop())
                    else:
                        xt, _ = tdecode(xt, tskips.pop(), tlengths.pop())
            return x, xt  # (1, S*2C, F, T), (1, S*C, L)

    core = Core(model).eval()
    length = int(model.segment * model.samplerate)
    stft = SimpleNamespace(hop_length=model.hop_length, nfft=model.nfft, cac=True)
    from demucs.htdemucs import HTDemucs

    with torch.no_grad():
        xt = torch.zeros(1, model.audio_channels, length)
        x = HTDemucs._magnitude(stft, HTDemucs._spec(stft, xt))
    # outside no_grad: there nn.MultiheadAttention takes a fused fast path the exporter refuses
    torch.onnx.export(core, (x, xt), str(path), dynamo=False, opset_version=opset,
                      input_names=["freq", "time"], output_names=["out_freq", "out_time"])
    return Path(path)
