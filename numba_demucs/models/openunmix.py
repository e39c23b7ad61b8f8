"""Open-Unmix (openunmix 1.3.0): the per-target ``OpenUnmix`` and the ``Separator`` around them.

Names follow openunmix's module tree: the separator's points are ``stft``, ``complexnorm``,
``target_models.<target>`` (a target's masked magnitude) with its ``fc1 bn1 lstm fc2 bn2 fc3
bn3``, ``wiener`` (the post-filter, one point per block of ``wiener_win_len`` frames,
context ``{"block": k}``) and ``istft``.

A long track runs in bounded memory: the STFT is computed block by block whenever it is
needed (twice per target pass is cheaper than keeping the whole spectrogram), each target
keeps only its LSTM features ``(frames, hidden)`` between its LSTM pass and the Wiener
blocks, and the iSTFT finishes output samples block by block. Under a trace capture the
whole track is one block, so every module's output is one tensor as in PyTorch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import trace
from ..errors import AudioError, CheckpointError, UnsupportedModelError
from ..kernels import spectral, wiener as wiener_kernels
from ..layers.base import StateReader
from ..layers.umx import LSTM, BatchNorm1d, Linear


@dataclasses.dataclass(frozen=True)
class OpenUnmixConfig:
    """What openunmix's ``umxl()`` / ``umxhq()`` / ``umx()`` build (the Separator's arguments)."""

    targets: tuple = ("vocals", "drums", "bass", "other")
    hidden_size: int = 1024
    nb_layers: int = 3
    nb_bins: int = 2049
    max_bin: int = 1487  # bandwidth_to_max_bin(44100, 4096, 16000)
    nb_channels: int = 2
    n_fft: int = 4096
    n_hop: int = 1024
    samplerate: int = 44100
    niter: int = 1
    softmask: bool = False
    residual: bool = False
    wiener_win_len: int | None = 300

    #: what a user may choose at run time (openunmix's Separator arguments, its CLI's flags)
    OPTIONS = ("niter", "softmask", "residual", "wiener_win_len")

    @classmethod
    def from_arguments(cls, args, kwargs, origin="openunmix"):
        """The registry's config reader: ``targets`` and ``hidden_size`` (from the model name
        or the files) and the run-time options, each checked for type and range."""
        if args:
            raise UnsupportedModelError(f"{origin}: Open-Unmix takes keyword arguments only")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise UnsupportedModelError(f"{origin}: unknown Open-Unmix arguments: "
                                        f"{', '.join(unknown)}")
        config = cls(**kwargs)
        config.check(origin)
        return config

    def check(self, origin="openunmix"):
        def integer(value):
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        problems = []
        if not integer(self.niter) or self.niter < 0:
            problems.append(f"niter must be an integer >= 0, got {self.niter!r}")
        if self.wiener_win_len is not None and (not integer(self.wiener_win_len)
                                                or self.wiener_win_len < 0):
            problems.append("wiener_win_len must be an integer >= 0 (0 or None: the whole "
                            f"track in one block), got {self.wiener_win_len!r}")
        for flag in ("softmask", "residual"):
            if not isinstance(getattr(self, flag), bool):
                problems.append(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if not integer(self.hidden_size) or self.hidden_size < 1:
            problems.append(f"hidden_size must be a positive integer, got {self.hidden_size!r}")
        if not self.targets:
            problems.append("no targets")
        elif len(self.targets) + int(self.residual is True) == 1 and integer(self.niter) \
                and self.niter > 0:
            # openunmix raises the same: the EM step needs two sources
            problems.append("the Wiener EM step (niter > 0) needs two sources: give more "
                            "targets, residual=True or niter=0")
        if problems:
            raise UnsupportedModelError(f"{origin}: " + "; ".join(problems))


class OpenUnmix:
    """One target's model, named ``target_models.<target>``; weights from its state dict."""

    def __init__(self, name, state: dict, config: OpenUnmixConfig, dtype, origin):
        # A target's file holds ``fc1.weight``; its layers are named ``target_models.<t>.fc1``.
        reader = StateReader({f"{name}.{key}": value for key, value in state.items()}, dtype,
                             origin)
        hidden, channels = config.hidden_size, config.nb_channels
        self.name = name
        self.nb_bins = config.max_bin
        self.nb_output_bins = config.nb_bins
        self.hidden_size = hidden
        self.input_mean = reader.take(f"{name}.input_mean", (self.nb_bins,))
        self.input_scale = reader.take(f"{name}.input_scale", (self.nb_bins,))
        self.output_scale = reader.take(f"{name}.output_scale", (self.nb_output_bins,))
        self.output_mean = reader.take(f"{name}.output_mean", (self.nb_output_bins,))
        self.fc1 = Linear(f"{name}.fc1", reader, channels * self.nb_bins)
        self.bn1 = BatchNorm1d(f"{name}.bn1", reader, hidden)
        self.lstm = LSTM(f"{name}.lstm", reader, hidden, hidden // 2, config.nb_layers)
        self.fc2 = Linear(f"{name}.fc2", reader, 2 * hidden)
        self.bn2 = BatchNorm1d(f"{name}.bn2", reader, hidden)
        self.fc3 = Linear(f"{name}.fc3", reader, hidden)
        self.bn3 = BatchNorm1d(f"{name}.bn3", reader, channels * self.nb_output_bins)
        if self.fc3.weight.shape[0] != channels * self.nb_output_bins:
            raise CheckpointError(f"{origin}: fc3.weight has shape {self.fc3.weight.shape}, "
                                  f"expected ({channels * self.nb_output_bins}, {hidden})")
        for key in state:
            # BatchNorm's training counters; and the Hann window that openunmix before 1.1
            # kept inside the model (``stft.window``, ``transform.0.window``), which its
            # load_state_dict(strict=False) skips. Any other extra entry is refused.
            if key.endswith("num_batches_tracked") or key.endswith("window"):
                reader.used.add(f"{name}.{key}")
        reader.check_all_used()

    def parameters(self):
        for attribute in ("input_mean", "input_scale", "output_scale", "output_mean"):
            yield f"{self.name}.{attribute}", getattr(self, attribute)
        for layer in (self.fc1, self.bn1, self.lstm, self.fc2, self.bn2, self.fc3, self.bn3):
            yield from layer.parameters()

    def encode(self, magnitude):
        """``magnitude (frames, channels, bins)`` -> tanh(bn1(fc1(...))) ``(frames, hidden)``."""
        frames, channels, _ = magnitude.shape
        x = magnitude[..., : self.nb_bins] + self.input_mean
        x *= self.input_scale
        x = trace.point(self.fc1.name, self.fc1(x.reshape(frames, channels * self.nb_bins)))
        x = trace.point(self.bn1.name, self.bn1(x, out=x if not trace.enabled() else None))
        return np.tanh(x, out=x)

    def features(self, encoded, block):
        """``encoded (frames, hidden)`` -> relu(bn2(fc2([x, lstm(x)]))) ``(frames, hidden)``.

        The skip buffer ``[x, lstm(x)]`` is the only whole-track LSTM state; fc2 runs on
        ``block`` frames of it at a time, into a buffer that replaces it.
        """
        frames, hidden = encoded.shape
        skip = np.empty((frames, 2 * hidden), dtype=encoded.dtype)
        skip[:, :hidden] = encoded
        del encoded
        lstm_out = self.lstm(skip[:, :hidden], out=skip[:, hidden:])
        seen = trace.point(self.lstm.name, lstm_out.reshape(frames, 1, hidden))
        if seen is not lstm_out:
            skip[:, hidden:] = seen.reshape(frames, hidden)
        out = np.empty((frames, hidden), dtype=skip.dtype)
        for start in range(0, frames, block):
            stop = min(frames, start + block)
            x = trace.point(self.fc2.name, self.fc2(skip[start:stop]))
            x = trace.point(self.bn2.name, self.bn2(x, out=x if not trace.enabled() else None))
            out[start:stop] = np.maximum(x, 0)
        return out

    def decode(self, features, magnitude):
        """``features (frames, hidden)`` and the mixture ``magnitude (frames, channels, 2049)``
        -> the target's magnitude ``(frames, channels, 2049)``."""
        frames, channels, bins = magnitude.shape
        x = trace.point(self.fc3.name, self.fc3(features))
        x = trace.point(self.bn3.name, self.bn3(x, out=x if not trace.enabled() else None))
        x = x.reshape(frames, channels, bins)
        x *= self.output_scale
        x += self.output_mean
        np.maximum(x, 0, out=x)
        x *= magnitude
        # openunmix returns (channels, bins, frames)
        return trace.point(self.name, x.transpose(1, 2, 0)).transpose(2, 0, 1)


class OpenUnmixSeparator:
    """openunmix's ``Separator``: the STFT, one ``OpenUnmix`` per target, the Wiener filter
    and the iSTFT, for one item ``(channels, samples)`` at 44.1 kHz.

    It runs the whole track at once (no segments, no shifts): ``separate(mix)``.
    """

    segment_fixes_input_length = False

    def __init__(self, config: OpenUnmixConfig, states: dict, dtype=np.float32, origin="umx",
                 origins: dict | None = None):
        # ``states``: {target: that target's state dict}; ``origin`` names the model in
        # messages: a string, or {target: file} when each target has its own file (the
        # official TARGET-HASH8.pth), as the registry passes it.
        if isinstance(origin, dict):
            origin, origins = str(Path(next(iter(origin.values()))).parent), origin
        self.config = config
        self.dtype = np.dtype(dtype)
        self.origin = origin  # for messages; ``origins`` names each target's file
        origins = {target: str(path) for target, path in (origins or {}).items()}
        self.targets = [OpenUnmix(f"target_models.{target}", states[target], config, dtype,
                                  origins.get(target, f"{origin} ({target})"))
                        for target in config.targets]
        self.sources = list(config.targets) + (["residual"] if config.residual else [])
        self.samplerate = config.samplerate
        self.audio_channels = config.nb_channels
        self.window = spectral.hann_window(config.n_fft, self.dtype)

    def parameters(self):
        for target in self.targets:
            yield from target.parameters()

    # -- spectra ------------------------------------------------------------------------
    def _spectrum(self, padded, start, stop):
        """torch.stft (center, reflect, unnormalised) frames ``[start, stop)`` of the padded
        mix: complex ``(channels, 2049, stop - start)``."""
        n_fft, hop = self.config.n_fft, self.config.n_hop
        piece = np.ascontiguousarray(padded[:, start * hop: (stop - 1) * hop + n_fft])
        frames = spectral.frame_signal(piece, n_fft, hop, self.window)
        complex_dtype = np.complex64 if self.dtype == np.float32 else np.complex128
        return np.fft.rfft(frames, axis=-1).astype(complex_dtype).transpose(0, 2, 1)

    def _magnitude(self, z):
        """complex ``(channels, bins, frames)`` -> ``(frames, channels, bins)`` magnitudes."""
        return np.ascontiguousarray(np.abs(z).transpose(2, 0, 1))

    # -- forward ------------------------------------------------------------------------
    def separate(self, mix):
        """``mix (channels, samples)`` -> ``(sources, channels, samples)`` in the model dtype."""
        config = self.config
        mix = np.ascontiguousarray(mix, dtype=self.dtype)
        channels, length = mix.shape
        if channels != config.nb_channels:
            raise AudioError(f"{self.origin}: takes {config.nb_channels} channels, got {channels}")
        if length <= config.n_fft // 2:
            raise AudioError(f"{self.origin}: a mix of {length} samples is too short for the "
                             f"{config.n_fft}-point STFT (more than {config.n_fft // 2} needed)")
        padded = spectral.reflect_pad(mix, config.n_fft // 2, config.n_fft // 2)
        frames = 1 + length // config.n_hop
        window_frames = config.wiener_win_len or frames
        traced = trace.enabled()
        block = frames if traced else window_frames

        whole = whole_magnitude = None
        if traced:
            whole = self._spectrum(padded, 0, frames)
            pairs = trace.point("stft", np.stack([whole.real, whole.imag], axis=-1))
            whole = (pairs[..., 0] + 1j * pairs[..., 1]).astype(whole.dtype)
            whole_magnitude = trace.point("complexnorm", np.abs(whole))  # (channels, bins, frames)
            whole_magnitude = np.ascontiguousarray(whole_magnitude.transpose(2, 0, 1))

        def spectra():
            for start in range(0, frames, block):
                stop = min(frames, start + block)
                z = whole if whole is not None else self._spectrum(padded, start, stop)
                yield start, stop, z

        features, decoded = [], []
        for target in self.targets:
            encoded = np.empty((frames, target.hidden_size), dtype=self.dtype)
            for start, stop, z in spectra():
                magnitude = whole_magnitude if traced else self._magnitude(z)
                encoded[start:stop] = target.encode(magnitude)
            features.append(target.features(encoded, block))
            del encoded
            if traced:
                decoded.append(target.decode(features[-1], whole_magnitude))

        out = np.empty((len(self.sources), channels, length), dtype=self.dtype)
        synthesis = _OverlapAdd(out, self.window, config.n_fft, config.n_hop)
        for k, start in enumerate(range(0, frames, window_frames)):
            stop = min(frames, start + window_frames)
            z = self._spectrum(padded, start, stop) if whole is None else whole[..., start:stop]
            if traced:
                spectrograms = np.stack([d[start:stop] for d in decoded], axis=-1)
            else:
                magnitude = self._magnitude(z)
                spectrograms = np.stack(
                    [target.decode(f[start:stop], magnitude) for target, f in
                     zip(self.targets, features)], axis=-1)
            # (frames, channels, bins, sources) -> (frames, bins, channels, sources)
            spectrograms = np.ascontiguousarray(spectrograms.transpose(0, 2, 1, 3))
            x = np.empty(z.shape[::-1] + (2,), dtype=self.dtype)  # (frames, bins, channels, 2)
            zt = z.transpose(2, 1, 0)
            x[..., 0] = zt.real
            x[..., 1] = zt.imag
            with trace.call_context(block=k):
                y = trace.point("wiener", wiener_kernels.wiener(
                    spectrograms, x, config.niter, softmask=config.softmask,
                    residual=config.residual))
            synthesis.add(y, start)
        synthesis.finish()
        return trace.point("istft", out)

    def __call__(self, mix):
        """``mix (batch, channels, samples)`` -> ``(batch, sources, channels, samples)``."""
        return np.stack([self.separate(item) for item in mix])


class _OverlapAdd:
    """torch.istft (center, unnormalised, ``length``) fed one block of frames at a time.

    Output samples are final once no later frame reaches them: each block finishes the
    samples up to its last frame's start, and carries the overlap into the next block.
    """

    def __init__(self, out, window, n_fft, hop):
        self.out = out  # (sources, channels, length)
        self.window = window
        self.n_fft, self.hop = n_fft, hop
        rows = out.shape[0] * out.shape[1]
        self.carry = np.zeros((rows, n_fft - hop))
        self.carry_envelope = np.zeros(n_fft - hop)
        self.done = 0  # padded samples finished so far

    def add(self, y, start):
        """``y (frames, bins, channels, 2, sources)`` of frames ``start, start + 1, ...``."""
        frames_count, bins, channels, _, sources = y.shape
        # (sources, channels, frames, bins) complex, one row per (source, channel)
        spectrum = (y[..., 0, :] + 1j * y[..., 1, :].astype(np.float64)).transpose(3, 2, 0, 1)
        frames = np.fft.irfft(spectrum.reshape(sources * channels, frames_count, bins),
                              n=self.n_fft, axis=-1)
        summed, envelope = spectral.overlap_add(frames, self.hop, self.window)
        overlap = self.n_fft - self.hop
        summed[:, :overlap] += self.carry
        envelope[:overlap] += self.carry_envelope
        finished = frames_count * self.hop
        self.carry = summed[:, finished:].copy()
        self.carry_envelope = envelope[finished:].copy()
        self._write(summed[:, :finished], envelope[:finished])

    def finish(self):
        self._write(self.carry, self.carry_envelope)

    def _write(self, summed, envelope):
        """Padded samples ``[done, done + n)`` are final: divide, crop the centre padding."""
        offset = self.n_fft // 2
        sources, channels, length = self.out.shape
        begin = max(self.done, offset)
        end = min(self.done + summed.shape[1], offset + length)
        if end > begin:
            piece = slice(begin - self.done, end - self.done)
            if np.any(envelope[piece] < 1e-11):
                raise ValueError("istft: window overlap-add is zero somewhere")
            values = summed[:, piece] / envelope[piece]
            self.out.reshape(sources * channels, length)[:, begin - offset:end - offset] = values
        self.done += summed.shape[1]
