"""`numba-demucs debug trace|reference|diff|parity`: the layer-by-layer debugging loop.

``trace`` and ``reference`` run our model and demucs' PyTorch model on the same input and
save their traces as dumps (one record per trace point); ``diff`` loads two dumps and names
the first point where they part ways; ``parity`` does all three in one go in memory, offline,
building seeded random official-architecture weights and a synthetic input when none are given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from numba_demucs.errors import AudioError, NumbaDemucsError


def _input_arguments(parser, checkpoint_required):
    if checkpoint_required:
        parser.add_argument("--checkpoint", type=Path, required=True,
                            help=".th or .safetensors model file, or a folder of Open-Unmix "
                                 "TARGET-HASH8.pth files")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="44.1 kHz audio file")
    source.add_argument("--seconds", type=float, default=10.0,
                        help="length of the synthesised input when no --input (default: 10)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--segment-only", action="store_true",
                        help="one model segment, no apply_model splitting")


def _diff_arguments(parser):
    parser.add_argument("--rtol", type=float, help="relative tolerance (default by dtype, see docs)")
    parser.add_argument("--atol", type=float, help="absolute tolerance per element")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the diff as JSON")
    parser.add_argument("--plot", type=Path, help="write the error per point as a PNG")
    parser.add_argument("--all", action="store_true", help="list every point, not only divergent ones")


def register(subparsers) -> None:
    parser = subparsers.add_parser("debug", help="compare our model with the PyTorch reference",
                                   description=__doc__)
    commands = parser.add_subparsers(dest="debug_command", required=True)

    for name, helptext in (("trace", "dump our model's trace points"),
                           ("reference", "dump the PyTorch demucs model's trace points")):
        sub = commands.add_parser(name, help=helptext)
        _input_arguments(sub, checkpoint_required=True)
        sub.add_argument("--save-tensors", action="store_true",
                         help="also save every tensor (sibling .npz; large)")
        sub.add_argument("-o", "--output", type=Path, required=True, help="dump file (.jsonl)")
        sub.set_defaults(func=run_dump, side=name)

    diff = commands.add_parser("diff", help="compare two dumps point by point")
    diff.add_argument("reference", type=Path)
    diff.add_argument("ours", type=Path)
    _diff_arguments(diff)
    diff.set_defaults(func=run_diff)

    show = commands.add_parser("print", help="print a dump's records as demucs.cpp prints tensors")
    show.add_argument("dump", type=Path)
    show.add_argument("--name", help="only points whose name starts with this")
    show.set_defaults(func=run_print)

    parity = commands.add_parser("parity", help="trace both sides and diff them in one go")
    weights = parity.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path,
                         help=".th or .safetensors model file, or a folder of Open-Unmix "
                              "TARGET-HASH8.pth files")
    weights.add_argument("--model-args", default="htdemucs",
                         choices=["htdemucs", "htdemucs_6s", "defaults", "hdemucs_mmi",
                                  "hdemucs_c511e2ab", "hdemucs_7d865c68", "hdemucs_5d2d6c55",
                                  "demucs_0d19c1c6", "demucs_9a6b4851", "umxl", "umxhq", "umx"],
                         help="official architecture for random weights (default: htdemucs)")
    parity.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parity.add_argument("--floor", action="store_true",
                        help="with --plot: also run the reference in float64 and draw the float32 "
                             "rounding floor (PyTorch float32 against PyTorch float64) per point")
    parity.add_argument("--isolate", action="store_true",
                        help="also run each of our layers on the reference's input and report "
                             "local (own) versus total (inherited) error; use with --segment-only "
                             "on full-size models, it keeps every reference tensor in memory")
    _input_arguments(parity, checkpoint_required=False)
    _diff_arguments(parity)
    parity.set_defaults(func=run_parity)


def read_input(path: Path, samplerate=44100, channels=2):
    import soundfile

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from None
    if rate != samplerate:
        raise AudioError(f"{path}: sample rate {rate} Hz, the model needs {samplerate} Hz")
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    audio = audio.T
    if audio.shape[0] == 1 and channels == 2:
        audio = np.repeat(audio, 2, axis=0)
    if audio.shape[0] != channels:
        raise AudioError(f"{path}: {audio.shape[0]} channels, the model takes {channels}")
    return np.ascontiguousarray(audio)


def _mix(args):
    from .reference import music_like_signal

    if args.input is not None:
        return read_input(args.input)
    return music_like_signal(args.seconds)


def _collect(side, checkpoint, mix, args, save_tensors):
    from . import collect, collect_umx

    if collect_umx.is_openunmix_folder(checkpoint):
        if side == "reference":
            try:
                return collect_umx.trace_reference(checkpoint, mix, args.dtype, save_tensors)
            except ImportError as error:
                raise NumbaDemucsError(f"the reference side needs torch and openunmix "
                                       f"(pip install openunmix --no-deps): {error}") from None
        return collect_umx.trace_ours(checkpoint, mix, args.dtype, save_tensors)
    if side == "reference":
        try:
            return collect.trace_reference(checkpoint, mix, args.dtype, args.segment_only,
                                           save_tensors)
        except ImportError as error:
            raise NumbaDemucsError(
                f"the reference side needs the reference extra (torch, demucs): {error}") from None
    return collect.trace_ours(checkpoint, mix, args.dtype, args.segment_only, save_tensors)


def run_dump(args) -> int:
    from rich.console import Console

    mix = _mix(args)
    trace = _collect(args.side, args.checkpoint, mix, args, args.save_tensors)
    path = trace.save(args.output)
    Console(stderr=True).print(f"{len(trace)} trace points written to {path}")
    return 0


def _show_diff(result, args, console, floor=None):
    from .render import plot, render_table

    if args.all or not result.ok or result.only_reference or result.only_ours:
        render_table(result, console, only_diverged=not args.all)
    if args.json_path is not None:
        args.json_path.write_text(result.to_json())
    if args.plot is not None:
        plot(result, args.plot, floor=floor)
    if result.first_divergence is None:
        console.print(f"[green]no divergence[/] over {len(result.points)} points")
    else:
        console.print(f"[red]first divergence: {result.first_divergence}[/] "
                      f"{result.first_divergence_context or ''}")


def run_print(args) -> int:
    from .printer import print_demucs_cpp
    from .traces import Trace

    for record in Trace.load(args.dump).records:
        if args.name is None or record["name"].startswith(args.name):
            print_demucs_cpp(record)
    return 0


def run_diff(args) -> int:
    from rich.console import Console

    from .diff import diff
    from .traces import Trace

    with Trace.load(args.reference) as reference, Trace.load(args.ours) as ours:
        result = diff(reference, ours, rtol=args.rtol, atol=args.atol)
        _show_diff(result, args, Console())
    return 0 if result.ok else 1


def run_parity(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .parity import parity, require_reference

    console = Console()
    mix = _mix(args)
    checkpoint = args.checkpoint
    if checkpoint is None:
        require_reference()
        checkpoint = args.model_args
        console.print(f"random [bold]{args.model_args}[/] weights, seed {args.seed}")
    report = parity(checkpoint, mix, dtype=args.dtype, segment_only=args.segment_only,
                    isolate=args.isolate, floor=args.floor, rtol=args.rtol, atol=args.atol,
                    seed=args.seed)
    result = report.diff
    _show_diff(result, args, console, report.floor)
    if report.isolation is not None:
        _print_isolation(console, report.isolation, result.tolerance["rtol"])

    table = Table(title=f"end-to-end, {report.dtype}, {report.seconds:.1f} s")
    table.add_column("source")
    table.add_column("SNR (dB)", justify="right")
    table.add_column("max |error|", justify="right")
    for name, value, worst in zip(report.sources, report.snr_db, report.max_abs_error):
        style = "green" if value >= report.threshold_db else "red"
        table.add_row(name, f"[{style}]{value:.1f}[/]", f"{worst:.3g}")
    console.print(table)
    console.print(("[green]parity holds" if report.passed else "[red]parity fails")
                  + f" (end-to-end threshold {report.threshold_db:.0f} dB, "
                    f"per-point rtol {result.tolerance['rtol']:g})")
    return 0 if report.passed else 1


def _print_isolation(console, rows, rtol):
    """Table of the points whose own (local) error exceeds ``rtol``, next to their total error."""
    from rich.table import Table

    flagged = [row for row in rows if row["local"] > rtol]
    table = Table(title=f"local vs total error (relative L2), {len(flagged)} of {len(rows)} "
                        f"points with local error > {rtol:g}")
    for column in ("point", "context", "local", "total"):
        table.add_column(column, justify="left" if column in ("point", "context") else "right")
    for row in flagged[:40]:
        table.add_row(row["name"], str(row["context"] or ""), f"[red]{row['local']:.2e}[/]",
                      f"{row['total']:.2e}")
    if flagged:
        console.print(table)
    worst = max(rows, key=lambda row: row["local"])
    console.print(f"largest local error: {worst['name']} {worst['context'] or ''} "
                  f"({worst['local']:.2e}); largest total: "
                  f"{max(row['total'] for row in rows):.2e}")
