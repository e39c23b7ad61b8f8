"""The PyTorch side for Open-Unmix: openunmix 1.3.0's Separator, perturbed, saved as its files.

openunmix imports torchaudio at module level (transforms.py, utils.py), and no torchaudio
release loads its native library against the torch this project tests with. The model, the
STFT and the Wiener filter never call torchaudio, so ``import_openunmix`` puts an empty
stand-in module under ``sys.modules["torchaudio"]`` (only when the real one cannot be
imported) before importing openunmix. That stand-in lives here, in reference code only.

Like ``reference.py`` this module imports torch; nothing in the separation path imports it.
"""
from __future__ import annotations

import hashlib
import io
import sys
import types
from pathlib import Path

import numpy as np

TARGETS = ["vocals", "drums", "bass", "other"]

# What openunmix's umxl()/umxhq()/umx() pass to OpenUnmix (max_bin: a 16 kHz bandwidth).
ARCHITECTURES = {"umxl": dict(hidden_size=1024), "umxhq": dict(hidden_size=512),
                 "umx": dict(hidden_size=512)}
# Toy width for the fast tests: every layer and trace point of umxl, hidden 32 (16 per direction).
TINY = dict(hidden_size=32)


def import_openunmix():
    """``openunmix`` imported with a torchaudio stand-in when torchaudio cannot load."""
    if "openunmix" in sys.modules:
        return sys.modules["openunmix"]
    try:
        import torchaudio  # noqa: F401
    except Exception:  # absent, or its native library does not load against this torch
        stand_in = types.ModuleType("torchaudio")
        stand_in.__doc__ = "numba-demucs stand-in: openunmix's model, STFT and Wiener filter do not use it"
        sys.modules["torchaudio"] = stand_in
    import openunmix
    import openunmix.model  # noqa: F401
    return openunmix


def max_bin(rate=44100.0, n_fft=4096, bandwidth=16000.0):
    return int(import_openunmix().utils.bandwidth_to_max_bin(rate, n_fft, bandwidth))


def build_target(architecture="umxl", seed=0, perturb=True, **overrides):
    """One randomly initialised ``openunmix.model.OpenUnmix`` of the named architecture, eval mode."""
    import torch

    openunmix = import_openunmix()
    kwargs = dict(nb_bins=2049, nb_channels=2, max_bin=max_bin())
    kwargs.update(ARCHITECTURES[architecture])
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = openunmix.model.OpenUnmix(**kwargs)
    if perturb:
        perturb_parameters(model, seed)
    return model.eval()


def perturb_parameters(model, seed=0):
    """Make every parameter matter.

    BatchNorm running means from N(0, 0.3^2) and variances from U(0.5, 2), affines from
    U(0.5, 1.5) / N(0, 0.3^2); input mean/scale per bin, as the stored -mean and 1/std of
    real magnitude spectrograms would be (scale 1/U(3, 10): music at a peak of about 1 has
    magnitudes of a few units), so that bn1's output mostly stays in tanh's linear range
    instead of saturating it (a saturated tanh would hide fc1 and bn1); output scale from U(0.5, 1.5) and mean from N(0.3, 0.3^2),
    so the final ReLU clips some bins and passes others; LSTM biases N(0, 0.3^2) and the
    weights left at PyTorch's init (gates stay mostly in their linear range).
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed + 1)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    def normal(shape, mean, std):
        return mean + std * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.copy_(normal(module.running_mean.shape, 0.0, 0.3))
                module.running_var.copy_(uniform(module.running_var.shape, 0.5, 2.0))
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
                module.bias.copy_(normal(module.bias.shape, 0.0, 0.3))
            elif isinstance(module, nn.LSTM):
                for name, parameter in module.named_parameters():
                    if name.startswith("bias"):
                        parameter.copy_(normal(parameter.shape, 0.0, 0.3))
        bins = model.input_mean.shape[0]
        model.input_mean.copy_(-uniform((bins,), 0.0, 2.0))
        model.input_scale.copy_(1.0 / uniform((bins,), 3.0, 10.0))
        outputs = model.output_scale.shape[0]
        model.output_scale.copy_(uniform((outputs,), 0.5, 1.5))
        model.output_mean.copy_(normal((outputs,), 0.3, 0.3))
    return model


def build_separator(architecture="umxl", seed=0, targets=TARGETS, niter=1, softmask=False,
                    residual=False, wiener_win_len=300, **overrides):
    """openunmix's Separator around one perturbed model per target (seeds seed, seed+1, ...)."""
    openunmix = import_openunmix()
    models = {target: build_target(architecture, seed + index, **overrides)
              for index, target in enumerate(targets)}
    separator = openunmix.model.Separator(
        target_models=models, niter=niter, softmask=softmask, residual=residual,
        n_fft=4096, n_hop=1024, nb_channels=2, sample_rate=44100.0,
        wiener_win_len=wiener_win_len, filterbank="torch")
    return separator.eval()


def save_targets(separator, folder):
    """One ``torch.save`` state dict per target, named ``TARGET-HASH8.pth`` as the official files.

    HASH8 is the first 8 hex digits of the file's sha256 (torch.hub's check_hash rule).
    Returns ``{target: path}``.
    """
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for target, model in separator.target_models.items():
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
        path = folder / f"{target}-{digest}.pth"
        path.write_bytes(buffer.getvalue())
        paths[target] = path
    return paths


def load_separator(folder, architecture="umxl", niter=1, softmask=False, residual=False,
                   wiener_win_len=300, targets=TARGETS):
    """openunmix's Separator from a folder of ``TARGET-HASH8.pth`` files, as a PyTorch user loads them."""
    import torch

    openunmix = import_openunmix()
    models = {}
    for target in targets:
        (path,) = sorted(Path(folder).glob(f"{target}-*.pth"))
        state = torch.load(path, map_location="cpu", weights_only=True)
        hidden = state["fc1.weight"].shape[0]
        model = openunmix.model.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=hidden,
                                          max_bin=max_bin())
        model.load_state_dict(state, strict=False)
        models[target] = model.eval()
    return openunmix.model.Separator(
        target_models=models, niter=niter, softmask=softmask, residual=residual,
        n_fft=4096, n_hop=1024, nb_channels=2, sample_rate=44100.0,
        wiener_win_len=wiener_win_len, filterbank="torch").eval()


class ReferenceTracer:
    """Forward hooks on openunmix's Separator that emit our trace points.

    Module points are the outputs of every called module (``stft``, ``complexnorm``,
    ``target_models.<target>`` and its ``fc1 bn1 lstm fc2 bn2 fc3 bn3``, ``istft``; the
    LSTM's first output). The Wiener step is not a module: ``wiener`` is emitted for each
    call of ``openunmix.filtering.wiener`` (one per block of ``wiener_win_len`` frames,
    context ``{"block": k}``), as ``(frames, bins, channels, 2, sources)``.
    """

    def __init__(self, separator, sink):
        import openunmix.model as umx_model

        self.sink = sink
        self._handles = []
        self._module = umx_model
        self._original_wiener = umx_model.wiener
        for name, module in separator.named_modules():
            if not name or name == "target_models":
                continue
            self._handles.append(module.register_forward_hook(self._hook(name)))
        block = [0]

        def wiener(*args, **kwargs):
            out = self._original_wiener(*args, **kwargs)
            self._emit("wiener", out, {"block": block[0]})
            block[0] += 1
            return out
        umx_model.wiener = wiener

    def _emit(self, name, tensor, context=None):
        from .reference import leading_squeezed

        self.sink(name, dict(context or {}), leading_squeezed(tensor.detach().cpu().numpy()))

    def _hook(self, name):
        def hook(_module, _inputs, output):
            if isinstance(output, tuple):
                output = output[0]
            self._emit(name, output)
        return hook

    def close(self):
        for handle in self._handles:
            handle.remove()
        self._module.wiener = self._original_wiener
        self._handles = []


def run_reference(separator, mix, sink=None, dtype=np.float32):
    """openunmix's Separator on ``mix (channels, samples)``; ``(targets, channels, samples)`` numpy.

    With ``sink``, every trace point goes to ``sink(name, context, array)``. float64 runs a
    double copy of the separator on a float64 input, with its Hann window and the Wiener
    filter's constants made in float64 (torch's default dtype set to float64 for the call).
    """
    import copy

    import torch

    wide = np.dtype(dtype) == np.float64
    model = separator
    if wide:
        model = copy.deepcopy(separator).double()
        # The window was built in float32 and .double() only widens its rounded values.
        model.stft.window.data = torch.hann_window(model.stft.n_fft, dtype=torch.float64)
    tracer = ReferenceTracer(model, sink) if sink is not None else None
    batch = torch.from_numpy(np.ascontiguousarray(mix, dtype=dtype))[None]
    previous = torch.get_default_dtype()
    if wide:
        # The Wiener filter makes its constants (pi, sqrt(eps), eps) in the default dtype.
        torch.set_default_dtype(torch.float64)
    try:
        with torch.no_grad():
            out = model(batch)
    finally:
        torch.set_default_dtype(previous)
        if tracer is not None:
            tracer.close()
    return out[0].numpy()


def golden_names(separator, seconds=1.0):
    """The ordered trace-point names (first occurrence) the PyTorch side emits."""
    from .reference import music_like_signal

    names = []
    run_reference(separator, music_like_signal(seconds),
                  lambda name, context, array: names.append(name) if name not in names else None)
    return names
