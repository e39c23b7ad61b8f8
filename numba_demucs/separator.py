"""Separate arrays and files: demucs' ``Separator`` and ``separate`` on the Numba model.

    >>> from numba_demucs import Separator
    >>> separator = Separator("htdemucs")              # or a .th / .safetensors / .yaml path
    >>> stems = separator.separate_array(mix, 48000)   # {"drums": (channels, samples), ...}
    >>> paths = separator.separate_file("song.flac", out="separated")

What happens to a mix is what demucs 4.1's ``Separator.separate_tensor`` does: channels
made to the model's (mono duplicated, extra channels dropped), resampled to the model's
rate, normalised by the mean and standard deviation of its mono downmix, separated with
``apply_model``, and the normalisation undone. Then, unlike demucs, the stems go back to the
input's layout: its channel count (a mono mix gives mono stems) and its sample rate
(unless ``samplerate`` asks for another), with the input's exact length.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from . import audio
from .apply import apply_standardised
from .errors import AudioError, NumbaDemucsError
from .loading import load_model
from .outputs import StemOutput, check_filename_template  # noqa: F401  (re-exported)
from .segments import longest_segment
from .standardise import Standardisation

_SIGNED_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{8}")


def _load(model, repo, dtype, progress, options=None):
    """A loaded model and its name, from a model object, a checkpoint path (a folder for
    Open-Unmix's TARGET-HASH8.pth files) or a pretrained name, all through load_model."""
    if hasattr(model, "sources") and hasattr(model, "samplerate"):
        if options:
            raise NumbaDemucsError("model options apply when loading; give a name or a path")
        return model, getattr(model, "name", type(model).__name__)
    text = str(model)
    path = Path(text)
    is_file = repo is None and (isinstance(model, os.PathLike) or path.suffix in
                                (".th", ".safetensors", ".yaml", ".yml") or path.is_file())
    loaded = load_model(path if is_file else text, repo=repo, dtype=dtype, progress=progress,
                        options=options)
    if not is_file:
        return loaded, text
    if path.is_dir():
        return loaded, path.name
    # demucs names outputs by signature: SIG-CHECKSUM.th separates into OUT/SIG/.
    return loaded, path.stem.split("-")[0] if _SIGNED_NAME.fullmatch(path.stem) else path.stem


class Separator:
    """A model loaded once, with the separation options, for many arrays or files.

    ``model``: a pretrained name (``htdemucs``, ``htdemucs_ft``, ``htdemucs_6s``, ... looked up
    in ``repo`` when given, else downloaded once into the cache), a checkpoint path (``.th``,
    ``.safetensors``, bag ``.yaml``) or an already loaded model. ``shifts``, ``overlap``,
    ``split``, ``segment`` and ``seed`` mean what they mean for ``apply_model``; ``jobs`` is the
    number of segments run at once in threads (0: one per core). ``callback`` receives one
    dict per finished segment (``segment_offset``, ``segments``, and ``model``/``shift``
    indices when they apply); raising ``KeyboardInterrupt`` from it stops the separation.
    ``options``: an Open-Unmix model's Wiener filter settings, as openunmix's ``Separator``
    takes them (``niter``, ``softmask``, ``residual``, ``wiener_win_len``); a Demucs model
    refuses them.
    """

    def __init__(self, model="htdemucs", repo=None, *, shifts: int = 1, overlap: float = 0.25,
                 split: bool = True, segment: float | None = None, jobs: int = 0,
                 seed: int | None = None, resampler: str = "sinc", progress: bool = False,
                 callback: Callable[[dict], None] | None = None, dtype=np.float32,
                 options: dict | None = None):
        self.model, self.name = _load(model, repo, dtype, progress, options)
        if resampler not in audio.RESAMPLERS:
            raise NumbaDemucsError(
                f"unknown resampler {resampler!r}; choose one of {', '.join(audio.RESAMPLERS)}")
        if segment is not None and self.whole_track:
            raise NumbaDemucsError(f"--segment: model {self.name} separates the whole track "
                                   "at once (its LSTM runs over all of it); it has no segments")
        if segment is not None and segment > longest_segment(self.model):
            raise NumbaDemucsError(
                f"--segment {segment} is longer than the {longest_segment(self.model):.2f} s "
                f"model {self.name} was trained on; a transformer model cannot run on longer "
                "segments")
        self.shifts = shifts
        self.overlap = overlap
        self.split = split
        self.segment = segment
        # 0: apply_model's default, one segment per core with single-threaded BLAS.
        self.jobs = jobs if jobs > 0 else None
        self.seed = seed
        self.resampler = resampler
        self.callback = callback

    @property
    def whole_track(self) -> bool:
        """Whether the model separates a whole track in one ``separate(mix)`` call (Open-Unmix)
        instead of through apply_model's segments, shifts and bags (Demucs)."""
        return hasattr(self.model, "separate")

    @property
    def samplerate(self) -> int:
        return int(self.model.samplerate)

    @property
    def audio_channels(self) -> int:
        return int(self.model.audio_channels)

    @property
    def sources(self) -> list[str]:
        return list(self.model.sources)

    def separate_model_rate(self, wav: np.ndarray, callback=None) -> np.ndarray:
        """``(sources, channels, samples)`` for a mix already at the model's rate and channels.

        The normalisation is demucs' (``standardise.py``). A silent mix gives silent stems
        without running the model.
        """
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        standard = Standardisation.of_blocks([wav])
        if standard.silent:
            return np.zeros((len(self.sources),) + wav.shape, dtype=np.float32)
        if self.whole_track:
            # Open-Unmix: no normalisation, no segments (openunmix's Separator on the mix).
            out = self.model.separate(wav).astype(np.float32, copy=False)
            if callback or self.callback:
                (callback or self.callback)({"segment_offset": 0, "segments": 1,
                                            "segments_total": 1})
            return out
        # each segment's input is standardised as it is read: no standardised copy of the
        # track (same bits as apply_model on ``standard.apply(wav.copy())``)
        out = apply_standardised(self.model, wav[None], standard, shifts=self.shifts,
                                 split=self.split, overlap=self.overlap, segment=self.segment,
                                 seed=self.seed, jobs=self.jobs,
                                 callback=callback or self.callback)[0]
        return standard.undo(out)

    def separate_array(self, mix: np.ndarray, samplerate: int | None = None, *,
                       output_samplerate: int | None = None,
                       callback=None) -> dict[str, np.ndarray]:
        """Stems of ``mix (channels, samples)`` (or ``(samples,)``), shaped like the input.

        ``samplerate`` is the mix's rate (the model's when omitted); the stems come back at
        ``output_samplerate`` (the mix's when omitted) with the mix's channel count.
        """
        mix = np.asarray(mix, dtype=np.float32)
        if mix.ndim == 1:
            mix = mix[None]
        if mix.ndim != 2:
            raise AudioError(f"a mix is (channels, samples); got an array of shape {mix.shape}")
        if mix.shape[1] == 0:
            raise AudioError("the mix holds no samples")
        if not np.isfinite(mix).all():
            raise AudioError("the mix holds NaN or infinite samples")
        stems = self._separate(mix, samplerate or self.samplerate, output_samplerate, callback)
        return dict(zip(self.sources, stems))

    def _separate(self, mix, rate, output_rate, callback):
        output_rate = output_rate or rate
        stems = self._model_rate_stems(mix, rate, callback)
        return [self._at_rate(stem, rate, output_rate, mix.shape[1]) for stem in stems]

    def _model_rate_stems(self, mix, rate, callback):
        """``(sources, channels, samples)`` at the model's rate, in the mix's channel count."""
        channels = mix.shape[0]
        model_input = audio.resample(audio.to_channels(mix, self.audio_channels), rate,
                                     self.samplerate, self.resampler)
        stems = self.separate_model_rate(model_input, callback)
        del model_input
        if channels != self.audio_channels:
            stems = stems.mean(axis=1, keepdims=True) if channels == 1 else stems
        return stems

    def _at_rate(self, stem, rate, output_rate, length):
        """One ``(channels, samples)`` stem at ``output_rate``, the mix's ``length`` when that
        is the mix's rate. Stem by stem: every channel is resampled on its own, so these are
        the samples of resampling all stems at once, with one stem's copy at a time."""
        stem = audio.resample(stem, self.samplerate, output_rate, self.resampler)
        if output_rate == rate:
            stem = audio.fit_length(stem, length)
        return stem

    def separate_file(self, path, out="separated", output: StemOutput | None = None, *,
                      stream: bool = False, callback=None, **options) -> dict[str, Path]:
        """Separate the audio file ``path`` and write its stems; returns ``{stem: path}``.

        Files go to ``out/<model name>/<filename>`` as in demucs. ``output`` (or the same
        fields as keywords: filename, two_stems, other_method, format, bits, as_float,
        bitrate, clip_mode, samplerate) says what is written: ``two_stems="vocals"`` writes
        ``vocals`` and, with ``other_method="add"``, ``no_vocals`` (the sum of the other
        stems) or, with ``"minus"``, ``minus_vocals`` (the mix minus vocals), as demucs 4.1.
        ``stream=True`` separates block by block in bounded memory (``stream.py``).
        """
        if output is None:
            output = StemOutput(**options)
        elif options:
            raise NumbaDemucsError("give the output options either as `output` or as keywords")
        output.check_model(self.sources, self.name)
        path = Path(path)
        if stream:
            if self.whole_track:
                raise NumbaDemucsError(f"--stream: model {self.name} separates the whole track "
                                       "at once (bidirectional LSTM); run it without --stream")
            if self.resampler != "sinc":
                raise NumbaDemucsError("--stream resamples with the sinc resampler only")
            from . import stream as streaming

            return streaming.separate_file(self, path, out, output, callback=callback)
        mix, rate = audio.read(path)
        output_rate = output.samplerate or rate
        targets = output.targets(out, self.name, path, self.sources)
        frames = mix.shape[1]
        stems = self._model_rate_stems(mix, rate, callback)
        if output.minus_name is None:
            mix = None  # only ``minus_STEM`` needs the input: freed before the stems are written
        return self._write_stems(stems, mix, frames, rate, output_rate, output, targets)

    def _write_stems(self, stems, mix, frames, rate, output_rate, output, targets):
        """Write the model-rate ``stems`` as ``output`` says, one stem at a time and each
        converted block by block (``audio.write_blocks``): besides the stems themselves,
        memory holds at most one stem at the output rate when that rate differs, and the
        ``no_STEM`` sum only when it must be resampled."""
        by_index = {name: k for k, name in enumerate(self.sources)}

        def at_rate(name):
            return self._at_rate(stems[by_index[name]], rate, output_rate, frames)

        resampled = output_rate != self.samplerate
        written = {}
        for name in output.names(self.sources):
            if name == output.minus_name:
                chosen = at_rate(output.two_stems)
                origin = audio.to_channels(mix, chosen.shape[0])
                if output_rate != rate:
                    origin = audio.fit_length(audio.resample(origin, rate, output_rate,
                                                             self.resampler), chosen.shape[-1])

                def blocks(start, stop, origin=origin, chosen=chosen):
                    return origin[:, start:stop] - chosen[:, start:stop]
                size, channels = chosen.shape[-1], chosen.shape[0]
            elif name == f"no_{output.two_stems}" and output.other_method == "add":
                others = [source for source in self.sources if source != output.two_stems]
                if resampled:
                    # the sum as select makes it, one resampled stem at a time
                    total = None
                    for source in others:
                        part = at_rate(source)
                        if total is None:
                            total = 0 + part
                        else:
                            total += part
                        del part

                    def blocks(start, stop, total=total):
                        return total[:, start:stop]
                    size, channels = total.shape[-1], total.shape[0]
                else:
                    views = [at_rate(source) for source in others]

                    def blocks(start, stop, views=views):
                        return sum(view[:, start:stop] for view in views)
                    size, channels = views[0].shape[-1], views[0].shape[0]
            else:
                data = at_rate(name)

                def blocks(start, stop, data=data):
                    return data[:, start:stop]
                size, channels = data.shape[-1], data.shape[0]
            written[name] = output.write(targets[name], blocks, size, channels, output_rate)
            blocks = data = None  # a resampled stem is freed before the next one is made
        return written


def separate_file(path, model="htdemucs", out="separated", *, repo=None, **options):
    """One file, one call: ``Separator(model, repo, ...)`` then ``separate_file``.

    ``options`` are ``Separator``'s (shifts, overlap, split, segment, jobs, seed, resampler)
    and ``Separator.separate_file``'s (filename, two_stems, other_method, format, bits,
    as_float, bitrate, clip_mode, samplerate).
    """
    separator_keys = {"shifts", "overlap", "split", "segment", "jobs", "seed", "resampler",
                      "progress", "callback", "dtype", "options"}
    separator = Separator(model, repo, **{k: v for k, v in options.items() if k in separator_keys})
    return separator.separate_file(path, out, **{k: v for k, v in options.items()
                                                 if k not in separator_keys})
