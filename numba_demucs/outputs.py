"""How stems are written: one validated value shared by the in-memory and streaming writers.

The options are demucs 4.1's ``separate`` flags (``--filename``, ``--two-stems``,
``--other-method``, ``--flac``/``--mp3``, ``--int24``/``--float32``, ``--mp3-bitrate``,
``--clip-mode``) plus ``samplerate`` (the stems' rate; the input's when None).
"""
from __future__ import annotations

import dataclasses
import string
from pathlib import Path

from . import audio
from .errors import NumbaDemucsError

_TEMPLATE_FIELDS = {"track", "trackext", "stem", "ext"}
OTHER_METHODS = ("add", "minus", "none")
CLIP_MODES = ("rescale", "clamp", "none")


def check_filename_template(template: str) -> str:
    """Refuse a ``--filename`` template with fields demucs does not define, before any work."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise NumbaDemucsError(
            f"--filename {template!r}: unknown field(s) {', '.join(sorted(unknown))}; "
            "use {track}, {trackext}, {stem} and {ext}")
    return template


@dataclasses.dataclass(frozen=True)
class StemOutput:
    """Which stems are written, where, in which format; checked when made."""

    filename: str = "{track}/{stem}.{ext}"
    two_stems: str | None = None
    other_method: str = "add"
    format: str = "wav"
    bits: int = 16
    as_float: bool = False
    bitrate: int = 320
    clip_mode: str = "rescale"
    samplerate: int | None = None

    def __post_init__(self):
        if self.format not in audio.OUTPUT_FORMATS:
            raise NumbaDemucsError(f"unknown output format {self.format!r}; choose wav, flac or mp3")
        if self.other_method not in OTHER_METHODS:
            raise NumbaDemucsError(f"unknown --other-method {self.other_method!r}")
        if self.clip_mode not in CLIP_MODES:
            raise NumbaDemucsError(
                f"unknown clip mode {self.clip_mode!r}; choose rescale, clamp or none")
        check_filename_template(self.filename)

    def check_model(self, sources, model_name: str) -> None:
        if self.two_stems is not None and self.two_stems not in sources:
            raise NumbaDemucsError(f"--two-stems {self.two_stems}: model {model_name} has no "
                                   f"such stem; choose one of {', '.join(sources)}")

    @property
    def minus_name(self) -> str | None:
        """The stem computed as the mix minus the chosen one, if any."""
        if self.two_stems is not None and self.other_method == "minus":
            return f"minus_{self.two_stems}"
        return None

    def names(self, sources) -> list:
        """The stems written, in order."""
        if self.two_stems is None:
            return list(sources)
        if self.other_method == "add":
            return [self.two_stems, f"no_{self.two_stems}"]
        return [self.two_stems] + ([self.minus_name] if self.minus_name else [])

    def targets(self, out, model_name: str, track_path, sources) -> dict:
        """``{stem: path}`` under ``out/model_name`` (demucs' layout)."""
        for name in sources:
            # stem names come from the checkpoint: they must not steer files out of `out`
            if not isinstance(name, str) or not name or name in (".", "..") \
                    or any(c in name for c in "/\\\0"):
                raise NumbaDemucsError(f"model {model_name}: source name {name!r} cannot be "
                                       "a file name; refusing to write its stems")
        track, extension = audio.track_name(Path(track_path))
        folder = Path(out) / model_name
        return {name: folder / self.filename.format(track=track, trackext=extension,
                                                    stem=name, ext=self.format)
                for name in self.names(sources)}

    def select(self, by_name: dict) -> dict:
        """The stems (or blocks of them) to write, from ``{source: array}``, except the
        ``minus_`` stem, which needs the mix: the chosen stem and, with ``add``, the sum of
        the others (in the model's order, as demucs sums them)."""
        if self.two_stems is None:
            return by_name
        others = dict(by_name)
        chosen = others.pop(self.two_stems)
        selected = {self.two_stems: chosen}
        if self.other_method == "add":
            selected[f"no_{self.two_stems}"] = sum(others.values())
        return selected

    def write(self, target: Path, blocks, length: int, channels: int, samplerate: int) -> Path:
        """One stem given as ``blocks(start, stop)``, clipping strategy applied, written
        atomically block by block (``audio.write_blocks``)."""
        return audio.write_blocks(target, blocks, length, channels, samplerate,
                                  clip_mode=self.clip_mode, bits=self.bits,
                                  as_float=self.as_float, bitrate=self.bitrate)
