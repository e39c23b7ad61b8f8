"""Golden reference traces and the conformance check of another port's trace against PyTorch.

``make_golden`` writes, into one folder, everything a port needs to test itself without
torch: the seeded random official-architecture weights (a demucs ``.th``), a fixed generated
input (``input.wav``, float32), and PyTorch's trace of one model call on it (stats only) with
the float32 rounding floor on every record (``diff.with_floor``), plus a ``manifest.json``.
Every file is a function of (architecture, seed, seconds, width) and the installed demucs and
torch: two runs write the same bytes.

``conform`` compares a port's trace with the reference side for the same weights and input,
either computed here with PyTorch (float32 and float64, for the floor) or read from a golden
folder, and says whether it conforms.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numba_demucs._files import atomic_write
from numba_demucs.errors import NumbaDemucsError

from .diff import DiffResult, diff, with_floor
from .traces import Trace

MANIFEST = "manifest.json"
TRACE = "reference.jsonl"
INPUT = "input.wav"
SAMPLERATE = 44100


class GoldenError(NumbaDemucsError):
    """A golden folder is incomplete or inconsistent, or a trace cannot be conformed."""


def _sha256(path) -> str:
    from .dumpfile import sha256_of_file

    return sha256_of_file(path)


def _content_id(trace: Trace) -> str:
    """A dump id that depends only on the trace's content, so the file is reproducible."""
    text = json.dumps([trace.header, trace.records], sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _wav_bytes(mix: np.ndarray) -> bytes:
    """A 32-bit float WAV of ``mix (channels, samples)``, written by hand: libsndfile adds a
    PEAK chunk holding the current time to float files, which would make two runs differ."""
    import struct

    channels = mix.shape[0]
    data = np.ascontiguousarray(mix.T, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, channels, SAMPLERATE, SAMPLERATE * 4 * channels, 4 * channels, 32)
    fact = struct.pack("<I", mix.shape[1])
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"fact" + struct.pack("<I", len(fact)) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def reference_with_floor(checkpoint, mix, segment_only: bool) -> Trace:
    """PyTorch's float32 trace of ``mix``, each record carrying its float32 rounding floor
    (the same run in float64)."""
    from . import collect

    trace32 = collect.trace_reference(checkpoint, mix, "float32", segment_only)
    trace64 = collect.trace_reference(checkpoint, mix, "float64", segment_only)
    return with_floor(trace32, trace64)


def make_golden(architecture: str, folder, *, seed: int = 0, seconds: float | None = None,
                tiny: bool = False) -> dict:
    """Write a golden folder for ``architecture`` (``reference.ARCHITECTURES``); returns the manifest.

    ``seconds`` is the length of the generated input (default: one model segment); the trace
    is of one model call on it (``mode`` "segment"; a shorter input is padded by the model as
    PyTorch pads it). ``tiny`` uses ``reference.TINY`` widths (same module tree and point
    names, toy channel counts: for tests).
    """
    from .parity import require_reference

    require_reference()
    from . import reference

    if architecture not in reference.ARCHITECTURES:
        raise GoldenError(f"unknown architecture {architecture!r}; known: "
                          f"{', '.join(reference.ARCHITECTURES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    overrides = dict(reference.TINY) if tiny else {}
    model = reference.build_model(architecture, seed=seed, **overrides)
    if seconds is None:
        seconds = float(model.segment)
    mix = reference.music_like_signal(seconds, seed=seed)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        written = reference.save_th(model, scratch, signature=architecture)
        checkpoint = folder / written.name
        os.replace(written, checkpoint)
    atomic_write(folder / INPUT, _wav_bytes(mix))
    trace = reference_with_floor(checkpoint, mix, segment_only=True)
    trace.header.update(golden={"architecture": architecture, "seed": seed, "seconds": seconds,
                                "tiny": tiny})
    trace = Trace(trace.header, trace.records)  # checked again, without the output
    trace.save(folder / TRACE, dump_id=_content_id(trace))
    manifest = {
        "architecture": architecture, "seed": seed, "seconds": seconds, "tiny": tiny,
        "mode": "segment", "samplerate": SAMPLERATE, "points": len(trace),
        "checkpoint": checkpoint.name, "input": INPUT, "trace": TRACE,
        "producer": trace.header["producer"],
        "sha256": {name: _sha256(folder / name) for name in (checkpoint.name, INPUT, TRACE)},
        "commands": {
            "our model": f"numba-demucs debug trace --checkpoint {checkpoint.name} --input {INPUT} "
                         "--segment-only -o ours.jsonl",
            "conform": "numba-demucs debug conform THEIRS.jsonl --golden .",
        },
    }
    atomic_write(folder / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


@dataclass
class Golden:
    folder: Path
    manifest: dict
    trace: Trace

    @property
    def checkpoint(self) -> Path:
        return self.folder / self.manifest["checkpoint"]

    @property
    def input(self) -> Path:
        return self.folder / self.manifest["input"]


def read_golden(folder) -> Golden:
    """A golden folder's manifest and trace; refuses a missing file or one whose hash changed."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise GoldenError(f"{folder}: not a golden folder ({MANIFEST}: {error})") from None
    for name, expected in manifest.get("sha256", {}).items():
        path = folder / name
        if not path.exists():
            raise GoldenError(f"{path}: missing from the golden folder")
        if _sha256(path) != expected:
            raise GoldenError(f"{path}: changed since the golden folder was written (SHA-256)")
    return Golden(folder, manifest, Trace.load(folder / manifest["trace"]))


def load_theirs(path, names=None, std="population") -> Trace:
    """A port's trace: a dump, or (anything that is not JSON) a demucs.cpp-format printout."""
    from .importers import read_demucs_cpp, read_name_map

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(256).lstrip()
    except OSError as error:
        raise GoldenError(f"{path}: cannot read: {error.strerror or error}") from None
    if head.startswith(b"{"):
        if names is not None:
            raise GoldenError(f"{path}: --names applies to printouts; this is a dump")
        return Trace.load(path)
    return read_demucs_cpp(path, read_name_map(names) if names is not None else None, std=std)


def mode_of(trace: Trace) -> bool:
    """True (one model call) unless the trace's records carry apply_model's segment indices."""
    return not any("segment" in r["context"] for r in trace.records)


def conform(theirs: Trace, reference: Trace, rtol=None, bands: Trace | None = None,
            k: float | None = None) -> DiffResult:
    """Diff ``theirs`` against ``reference`` (floor rules when the reference carries floors).

    Raises ``GoldenError`` when no point of theirs matches one of the reference: nothing
    could be judged (wrong names, a missing --names map, another mode).
    """
    from .diff import BAND_K

    result = diff(reference, theirs, rtol=rtol, bands=bands, k=BAND_K if k is None else k)
    if not result.points:
        sample = ", ".join(sorted({r["name"] for r in theirs.records})[:5])
        where = theirs.origin or "their trace"
        raise GoldenError(f"{where}: none of its {len(theirs)} points matches a reference point "
                          f"(theirs: {sample}, ...); map the port's names to PyTorch module paths "
                          "with --names, and trace the same mode (one model call or apply_model)")
    return result
