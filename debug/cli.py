"""`numba-demucs debug parity`: run our model and the official PyTorch one on the same input.

With no checkpoint it builds seeded random weights of an official architecture (perturbed
so every branch matters, see ``debug.reference``); with no input it synthesises a stereo
music-like signal. Works offline; needs the ``reference`` extra (torch, demucs).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from numba_demucs.errors import AudioError, NumbaDemucsError

THRESHOLD_DB = {"float32": 90.0, "float64": 200.0}


def register(subparsers) -> None:
    parser = subparsers.add_parser("debug", help="compare our model with the PyTorch reference")
    commands = parser.add_subparsers(dest="debug_command", required=True)
    parity = commands.add_parser(
        "parity", help="separate one input with both implementations and compare",
        description=__doc__)
    weights = parity.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, help=".th or .safetensors model file")
    weights.add_argument("--model-args", default="htdemucs",
                         choices=["htdemucs", "htdemucs_6s", "defaults"],
                         help="official architecture for random weights (default: htdemucs)")
    source = parity.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="44.1 kHz audio file")
    source.add_argument("--seconds", type=float, default=10.0,
                        help="length of the synthesised input (default: 10)")
    parity.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parity.add_argument("--segment-only", action="store_true",
                        help="one model segment, no apply_model splitting")
    parity.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parity.set_defaults(func=run_parity)


def _read_input(path: Path, samplerate: int, channels: int):
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from None
    if rate != samplerate:
        raise AudioError(f"{path}: sample rate {rate} Hz, the model needs {samplerate} Hz")
    audio = audio.T
    if audio.shape[0] == 1 and channels == 2:
        audio = np.repeat(audio, 2, axis=0)
    if audio.shape[0] != channels:
        raise AudioError(f"{path}: {audio.shape[0]} channels, the model takes {channels}")
    return np.ascontiguousarray(audio)


def run_parity(args) -> int:
    from rich.console import Console
    from rich.table import Table

    import numba_demucs

    try:
        import torch
        from demucs.apply import apply_model as demucs_apply_model

        from . import reference
    except ImportError as error:
        raise NumbaDemucsError(
            f"debug parity needs the reference extra (torch and demucs): {error}") from None

    console = Console()
    dtype = np.dtype(args.dtype)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            console.print(f"random [bold]{args.model_args}[/] weights, seed {args.seed}")
            checkpoint = reference.save_th(reference.build_model(args.model_args, seed=args.seed),
                                           folder)
        ours_model = numba_demucs.load_model(checkpoint, dtype=dtype)
        torch_model = reference.load_reference(checkpoint)
        if args.input is not None:
            mix = _read_input(args.input, ours_model.samplerate, ours_model.audio_channels)
        else:
            mix = reference.music_like_signal(args.seconds, ours_model.samplerate,
                                              ours_model.audio_channels)
        if args.segment_only:
            mix = mix[:, : int(ours_model.segment * ours_model.samplerate)]
        mix = mix.astype(dtype)[None]

        previous = torch.get_default_dtype()
        if dtype == np.float64:
            # demucs builds windows, embeddings and accumulators in torch's default dtype
            torch.set_default_dtype(torch.float64)
            torch_model = torch_model.double()
        try:
            started = time.perf_counter()
            with torch.no_grad():
                if args.segment_only:
                    expected = torch_model(torch.from_numpy(mix)).numpy()
                else:
                    expected = demucs_apply_model(torch_model, torch.from_numpy(mix), shifts=0).numpy()
            torch_seconds = time.perf_counter() - started
        finally:
            torch.set_default_dtype(previous)
        started = time.perf_counter()
        if args.segment_only:
            ours = ours_model(mix)
        else:
            ours = numba_demucs.apply_model(ours_model, mix, shifts=0)
        ours_seconds = time.perf_counter() - started

    error = expected[0].astype(np.float64) - ours[0]
    signal = (expected[0].astype(np.float64) ** 2).sum(axis=(1, 2))
    with np.errstate(divide="ignore"):
        snr = 10 * np.log10(signal / (error ** 2).sum(axis=(1, 2)))
    threshold = THRESHOLD_DB[args.dtype]
    table = Table(title=f"end-to-end parity, {args.dtype}, {mix.shape[-1] / ours_model.samplerate:.1f} s")
    table.add_column("source")
    table.add_column("SNR (dB)", justify="right")
    table.add_column("max |error|", justify="right")
    for name, value, worst in zip(ours_model.sources, snr, np.abs(error).max(axis=(1, 2))):
        style = "green" if value >= threshold else "red"
        table.add_row(name, f"[{style}]{value:.1f}[/]", f"{worst:.3g}")
    console.print(table)
    console.print(f"PyTorch {torch_seconds:.1f} s, numba-demucs {ours_seconds:.1f} s "
                  f"(ratio {ours_seconds / torch_seconds:.2f}; the first numba run includes compilation)")
    passed = bool(np.all(snr >= threshold))
    console.print(("[green]parity holds" if passed else "[red]parity fails")
                  + f" (threshold {threshold:.0f} dB)")
    return 0 if passed else 1
