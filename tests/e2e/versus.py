"""Running our `separate` and demucs' own on the same files, and reading both sides' stems
(the `*_vs_demucs` tests)."""
from __future__ import annotations

import os
import subprocess
import sys

import soundfile
import yaml

from numba_demucs.debug import reference

STEMS = ("drums", "bass", "other", "vocals")


def run_command(*command):
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def separate_both(folder, tracks, ours, theirs, options=(), more_for_theirs=()):
    """``numba-demucs separate OURS`` into ``folder/ours`` and ``demucs.separate THEIRS`` into
    ``folder/theirs`` on the same ``tracks``, both with ``--shifts 0 --float32 OPTIONS``;
    demucs also separates ``more_for_theirs``."""
    run_command(sys.executable, "-m", "numba_demucs.cli", "separate", *ours, "--shifts", "0",
                "--float32", *options, "-o", str(folder / "ours"), *map(str, tracks))
    run_command(sys.executable, "-m", "demucs.separate", *theirs, "--shifts", "0", "--float32",
                *options, "-d", "cpu", "-o", str(folder / "theirs"), *map(str, tracks),
                *map(str, more_for_theirs))


def read_stem(folder, side, name, track, stem):
    """A stem written by one side, ``(channels, samples)`` float32 at 44.1 kHz."""
    data, rate = soundfile.read(folder / side / name / track / f"{stem}.wav",
                                dtype="float32", always_2d=True)
    assert rate == 44100
    return data.T


def write_bag(repo, name, members, weights, quantized_min_size=None):
    """A bag in demucs' repo layout: one ``SIG.th`` per ``(signature, architecture)`` member
    (small width, seeded by its position; DiffQ-quantized with that seed when
    ``quantized_min_size`` is given) and ``name.yaml`` with mdx's ``segment: 44``."""
    for seed, (signature, architecture) in enumerate(members):
        model = reference.build_model(architecture, seed=seed, channels=8)
        if quantized_min_size is None:
            reference.save_th(model, repo, signature=signature)
        else:
            reference.save_quantized_th(model, repo, signature=signature,
                                        min_size=quantized_min_size, seed=seed)
    (repo / f"{name}.yaml").write_text(yaml.safe_dump(
        {"models": [signature for signature, _ in members], "weights": weights, "segment": 44}))
